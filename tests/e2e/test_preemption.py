"""Preemption: on SIGUSR1 the ranks agree at a step boundary, rank 0 saves, every rank
exits 75 ("saved, please requeue"), and the run resumed with --resume auto ends with a
final checkpoint equal, tensor for tensor with zero tolerance (parameters, buffers,
optimizer state, generator states), to a run that was never interrupted (mid-epoch,
dropout and BatchNorm included); likewise after kill -9 and a resume from the last step
checkpoint, for the MLP and the CNN, on 2 ranks and on 1."""
import glob
import json
import os
import random
import re
import signal
import subprocess
import time

from harness import Harness, final_checkpoint, same_checkpoint, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "4000", "--features", "16", "--classes", "4"])
cfg = small_config(h, "small.yaml", "syn.h5", "run", epochs=3)
fp = re.compile(r"fingerprint ([0-9a-f]{16})")

whole = h.run(["train", cfg, "--set", "run.dir=whole"], ranks=2).stdout
reference = fp.search(whole).group(1)

# 1. A preemption mid-epoch, seen by rank 0 only: raised at global step 80 (63 steps per
# epoch); the ranks compare flags every 8 steps, one check behind, so the run stops after
# global step 88 = epoch 2, step 25.
os.environ["FORGE_FAULT_SIGNAL_STEP"] = "80"
p = h.run(["train", cfg, "--set", "run.dir=cut"], ranks=2, expect_rc=None, mpirun_args=["-x", "FORGE_FAULT_SIGNAL_STEP"])
del os.environ["FORGE_FAULT_SIGNAL_STEP"]
h.check(p.returncode == 75, f"the job exits 75 = saved, please requeue (got {p.returncode})", p.stdout + p.stderr)
h.check("preempted by signal 10 at epoch 2 step 25" in p.stdout, "rank 0 says where it stopped", p.stdout)
saved = sorted(glob.glob(h.path("cut", "checkpoints", "ckpt-*.pt")))
h.check(saved and saved[-1].endswith("ckpt-e0001-n0000001600.pt"),
        "the checkpoint is named by where it stopped: 1 epoch + 25 steps x 64 samples", saved)
ins = json.loads(h.run(["ckpt", "inspect", saved[-1], "--json"]).stdout)
h.check(ins["epoch"] == 1 and ins["step"] == 25 and ins["global_step"] == 88, "epoch 1 done, step 25 of the next", ins)

p = h.run(["train", cfg, "--set", "run.dir=cut", "--resume", "auto"], ranks=2)
h.check("at epoch 2 step 25 (global step 88)" in p.stdout, "the resumed run starts at the saved step", p.stdout)
h.check("gradient buckets as the interrupted run had them" in p.stdout,
        "the resumed run reduces in the checkpoint's gradient buckets from its first step", p.stdout)
m = fp.search(p.stdout)
h.check(m is not None and m.group(1) == reference,
        f"resumed weights are bit-identical to the uninterrupted run ({m.group(1) if m else None} vs {reference})",
        p.stdout)
ok, diff = same_checkpoint(final_checkpoint(h, "whole"), final_checkpoint(h, "cut"))
h.check(ok, "SIGUSR1, 2 ranks: the final checkpoints are equal tensor for tensor, optimizer state included", diff)

# 2. SIGKILL of a rank at a random moment, then --resume auto from the last step
# checkpoint: still bit-identical (step checkpoints carry every rank's generator state).
steps = ["--set", "checkpoint.every_steps=1", "--set", "checkpoint.keep_last=2"]
whole_k = fp.search(h.run(["train", cfg, "--set", "run.dir=whole_k", *steps], ranks=2).stdout).group(1)
h.check(whole_k == reference, "saving every step does not change the numbers")
proc = subprocess.Popen(h.command(["train", cfg, "--set", "run.dir=killed", *steps], ranks=2), cwd=h.work,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
# Kill once training is well under way: a step checkpoint past global step 20 (20 x 64
# samples) exists.
deadline = time.monotonic() + 60
while time.monotonic() < deadline and proc.poll() is None:
    done = [re.search(r"-e(\d+)-n(\d+)\.pt$", f).groups()
            for f in glob.glob(h.path("killed", "checkpoints", "ckpt-*.pt"))]
    if any(int(e) > 0 or int(n) >= 20 * 64 for e, n in done):
        break
    time.sleep(0.01)
time.sleep(random.Random(3).uniform(0, 0.05))
ranks = subprocess.run(["pgrep", "-f", "^[^ ]*forge train .*run.dir=killed"], capture_output=True, text=True).stdout.split()
if ranks:
    os.kill(int(ranks[-1]), signal.SIGKILL)
proc.communicate(timeout=60)
h.check(bool(ranks) and proc.returncode != 0, f"a rank was killed mid-run (job exit {proc.returncode})")
p = h.run(["train", cfg, "--set", "run.dir=killed", *steps, "--resume", "auto"], ranks=2)
m = fp.search(p.stdout)
h.check("resumed from" in p.stdout and m is not None and m.group(1) == reference,
        "after kill -9 and --resume auto the weights are bit-identical to the uninterrupted run", p.stdout[-1500:])
ok, diff = same_checkpoint(final_checkpoint(h, "whole_k"), final_checkpoint(h, "killed"))
h.check(ok, "kill -9, 2 ranks: the final checkpoints are equal tensor for tensor, optimizer state included", diff)

# 3. The CNN, preempted mid-epoch, resumed: bit-identical as well.
h.run(["data", "synthetic", "--out", "img.h5", "--samples", "1200", "--features", "784", "--classes", "10"])
cnn = [f"{h.repo}/configs/fashion_mnist_cnn.yaml", "--set", "data.path=img.h5", "--set", "run.epochs=2",
       "--set", "data.normalize.scale=1", "--set", "data.normalize.mean=0", "--set", "data.normalize.std=1"]
cnn_ref = fp.search(h.run(["train", *cnn, "--set", "run.dir=cnn_whole"], ranks=2).stdout).group(1)
os.environ["FORGE_FAULT_SIGNAL_STEP"] = "3"
p = h.run(["train", *cnn, "--set", "run.dir=cnn_cut"], ranks=2, expect_rc=None,
          mpirun_args=["-x", "FORGE_FAULT_SIGNAL_STEP"])
del os.environ["FORGE_FAULT_SIGNAL_STEP"]
h.check(p.returncode == 75, f"the CNN run is preempted (exit {p.returncode})", p.stdout[-1500:])
p = h.run(["train", *cnn, "--set", "run.dir=cnn_cut", "--resume", "auto"], ranks=2)
m = fp.search(p.stdout)
h.check(m is not None and m.group(1) == cnn_ref, "the resumed CNN ends bit-identical to the uninterrupted one",
        (m.group(1) if m else None, cnn_ref))
ok, diff = same_checkpoint(final_checkpoint(h, "cnn_whole"), final_checkpoint(h, "cnn_cut"))
h.check(ok, "CNN, SIGUSR1: the final checkpoints are equal tensor for tensor", diff)

# 4. One rank, no mpirun: preempted mid-epoch and resumed, bit-identical too.
solo_ref = fp.search(h.run(["train", cfg, "--set", "run.dir=solo_whole"]).stdout).group(1)
os.environ["FORGE_FAULT_SIGNAL_STEP"] = "150"
p = h.run(["train", cfg, "--set", "run.dir=solo_cut"], expect_rc=None)
del os.environ["FORGE_FAULT_SIGNAL_STEP"]
h.check(p.returncode == 75, f"one rank alone is preempted too (exit {p.returncode})", p.stdout[-1500:])
m = fp.search(h.run(["train", cfg, "--set", "run.dir=solo_cut", "--resume", "auto"]).stdout)
h.check(m is not None and m.group(1) == solo_ref, "and resumes bit-identical", (m.group(1) if m else None, solo_ref))
ok, diff = same_checkpoint(final_checkpoint(h, "solo_whole"), final_checkpoint(h, "solo_cut"))
h.check(ok, "1 rank, SIGUSR1: the final checkpoints are equal tensor for tensor", diff)

# 4b. The CNN on 1 rank, killed with SIGKILL at a step checkpoint and resumed from it.
cnn_steps = ["--set", "checkpoint.every_steps=1", "--set", "checkpoint.keep_last=2"]
h.run(["train", *cnn, "--set", "run.dir=cnn_solo_whole", *cnn_steps])
os.environ["FORGE_FAULT_CRASH_RANK"] = "0"
os.environ["FORGE_FAULT_CRASH_STEP"] = "13"
p = h.run(["train", *cnn, "--set", "run.dir=cnn_solo_killed", *cnn_steps], expect_rc=None)
del os.environ["FORGE_FAULT_CRASH_RANK"], os.environ["FORGE_FAULT_CRASH_STEP"]
h.check(p.returncode == -signal.SIGKILL, f"the 1-rank CNN run dies of SIGKILL at step 13 ({p.returncode})")
h.run(["train", *cnn, "--set", "run.dir=cnn_solo_killed", *cnn_steps, "--resume", "auto"])
ok, diff = same_checkpoint(final_checkpoint(h, "cnn_solo_whole"), final_checkpoint(h, "cnn_solo_killed"))
h.check(ok, "CNN, kill -9, 1 rank: resumed from the last step checkpoint, the final checkpoints are equal", diff)

# 5. A real SIGUSR1 to mpirun, which forwards it to every rank.
long_cfg = small_config(h, "long.yaml", "syn.h5", "long", epochs=500)
proc = subprocess.Popen(h.command(["train", long_cfg], ranks=2), cwd=h.work, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
time.sleep(4)
proc.send_signal(signal.SIGUSR1)
try:
    out, _ = proc.communicate(timeout=60)
except subprocess.TimeoutExpired:
    proc.kill()
    out = ""
h.check(proc.returncode == 75, f"SIGUSR1 through mpirun: exit 75 (got {proc.returncode})", out[-2000:])
h.check("preempted by signal 10" in out, "the ranks stopped on the signal", out[-2000:])
h.check(len(glob.glob(h.path("long", "checkpoints", "ckpt-*.pt"))) >= 1, "and a checkpoint was saved")

h.finish()
