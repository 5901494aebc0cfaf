"""Preemption: on SIGUSR1 the ranks agree at a step boundary, rank 0 saves, every rank
exits 75 ("saved, please requeue"), and the run resumed with --resume auto ends with
weights bit-identical to a run that was never interrupted (mid-epoch, dropout and
BatchNorm included)."""
import glob
import json
import os
import re
import signal
import subprocess
import time

from harness import Harness, small_config

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
h.check(saved and saved[-1].endswith("ckpt-e0001-s000000088.pt"), "the checkpoint holds the step it stopped at", saved)
ins = json.loads(h.run(["ckpt", "inspect", saved[-1], "--json"]).stdout)
h.check(ins["epoch"] == 1 and ins["step"] == 25 and ins["global_step"] == 88, "epoch 1 done, step 25 of the next", ins)

p = h.run(["train", cfg, "--set", "run.dir=cut", "--resume", "auto"], ranks=2)
h.check("at epoch 1 step 25 (global step 88)" in p.stdout, "the resumed run starts at the saved step", p.stdout)
m = fp.search(p.stdout)
h.check(m is not None and m.group(1) == reference,
        f"resumed weights are bit-identical to the uninterrupted run ({m.group(1) if m else None} vs {reference})",
        p.stdout)

# 2. A real SIGUSR1 to mpirun, which forwards it to every rank.
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
