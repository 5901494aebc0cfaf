"""A diverged run stops with a named error and exit 5 on every rank, and nothing computed
from a non-finite state is saved: no checkpoint, no best.pt, no epoch record. A state dict
with non-finite values is refused naming the tensor. Ctrl-C saves like SIGTERM; a second
Ctrl-C quits at once."""
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import time

from harness import Harness, small_config, read_jsonl

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "600", "--features", "16", "--classes", "4"])
cfg = small_config(h, "c.yaml", "syn.h5", "run", epochs=2)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def files_of(run_dir):
    return sorted(os.path.basename(p) for p in glob.glob(h.path(run_dir, "checkpoints", "*.pt")))


def no_nan_records(run_dir):
    path = h.path(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return True
    return all(all(not (isinstance(v, float) and v != v) for v in r.values()) for r in read_jsonl(path))


# 1. Diverging from the first steps: every rank stops, nothing is saved.
p = h.run(["train", cfg, "--set", "run.dir=lr30", "--set", "optimizer.lr=1e30"], ranks=2, expect_rc=None)
h.check(p.returncode == 5, f"lr 1e30: exit 5 (got {p.returncode})", p.stderr[-3000:])
for r in range(2):
    h.check(re.search(rf"\[rank {r}\] training diverged by epoch 1 step \d+ \(global step \d+, learning rate "
                      r"[0-9.e+]+\): the training loss became NaN or Inf", p.stderr),
            f"lr 1e30: rank {r} names the divergence", p.stderr[-3000:])
h.check("learning rate" in p.stderr and "Lower optimizer.lr" in p.stderr, "the message says what to change", p.stderr)
h.check(files_of("lr30") == [], "lr 1e30: no checkpoint and no best.pt written", files_of("lr30"))
h.check("final test accuracy" not in p.stdout, "lr 1e30: no final result reported", p.stdout[-2000:])
h.check(no_nan_records("lr30"), "lr 1e30: no NaN record in metrics.jsonl")

# 2. With step checkpoints due before the collective check: still nothing saved.
p = h.run(["train", cfg, "--set", "run.dir=steps", "--set", "optimizer.lr=1e30", "--set", "checkpoint.every_steps=1"],
          ranks=2, expect_rc=None)
h.check(p.returncode == 5, f"lr 1e30 with every_steps 1: exit 5 (got {p.returncode})", p.stderr[-3000:])
h.check("(checked before saving a checkpoint)" in p.stderr, "the save itself found the divergence", p.stderr[-3000:])
import torch


def all_finite(path):
    ck = torch.load(path, weights_only=True)
    tensors = list(ck["model_state_dict"].values())
    for state in ck["optimizer_state_dict"]["state"].values():
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


saved = files_of("steps")
h.check(all(all_finite(h.path("steps", "checkpoints", f)) for f in saved),
        f"every_steps 1: the checkpoints written before the divergence hold finite values only ({saved})")
h.check("best.pt" not in saved, "every_steps 1: no best.pt", saved)

# 3. Extreme but finite inputs: the loss and weights stay finite, BatchNorm's running
# variance does not. A buffer counts as much as a parameter.
p = h.run(["train", cfg, "--set", "run.dir=bnbuf", "--set", "data.normalize.scale=1e30"], ranks=2, expect_rc=None)
h.check(p.returncode == 5 and "model tensor bn1.running_var" in p.stderr, "an infinite BatchNorm buffer: exit 5, named",
        p.stderr[-3000:])
h.check(files_of("bnbuf") == [], "an infinite BatchNorm buffer: nothing saved", files_of("bnbuf"))
# An eval split whose features overflow the model: a NaN eval loss is no result.
import h5py
import numpy as np

with h5py.File(h.path("syn.h5")) as src, h5py.File(h.path("hugetest.h5"), "w") as f:
    for k in ("train/features", "train/labels", "test/labels"):
        f[k] = src[k][:]
    f["test/features"] = np.where(np.arange(16) % 2 == 0, 3e38, -3e38).astype(np.float32)[None].repeat(
        len(src["test/labels"]), 0)
p = h.run(["train", cfg, "--set", "run.dir=hugetest", "--set", "data.path=hugetest.h5"], ranks=2, expect_rc=None)
h.check(p.returncode == 5 and "the loss on 'hugetest.h5:test' is" in p.stderr and "not reported as a result" in p.stderr,
        "a non-finite eval loss: exit 5, named", p.stderr[-3000:])
h.check("final test accuracy" not in p.stdout and "best.pt" not in files_of("hugetest"),
        "a non-finite eval loss: no result and no best.pt", p.stdout[-2000:])

# 4. Diverging after a good epoch: best.pt and the good checkpoints stay as they were.
h.run(["train", cfg, "--set", "run.dir=good", "--set", "run.epochs=1"], ranks=2)
before = {f: digest(h.path("good", "checkpoints", f)) for f in files_of("good")}
h.check("best.pt" in before, "the good epoch wrote best.pt", before)
p = h.run(["train", cfg, "--set", "run.dir=good", "--set", "run.epochs=3", "--set", "optimizer.lr=1e30",
           "--resume", "auto"], ranks=2, expect_rc=None)
h.check(p.returncode == 5, f"diverging after a resume: exit 5 (got {p.returncode})", p.stderr[-3000:])
after = {f: digest(h.path("good", "checkpoints", f)) for f in files_of("good")}
h.check(after == before, "best.pt and every good checkpoint are unchanged, none added", (before, after))
newest = sorted(f for f in before if f.startswith("ckpt-"))[-1]
h.check(f"newest checkpoint, written before: " in p.stderr and newest in p.stderr,
        "the message names the newest good checkpoint", p.stderr[-3000:])
h.check(no_nan_records("good"), "no NaN record appended to metrics.jsonl")

# 5. A state dict with NaN is refused by model.init_from, naming the tensor (exit 4).
ck = torch.load(h.path("good", "checkpoints", "best.pt"), weights_only=True)
sd = dict(ck["model_state_dict"])
sd["fc1.weight"] = sd["fc1.weight"].clone()
sd["fc1.weight"][0, :3] = float("nan")
sd["fc1.weight"][1, 0] = float("inf")
torch.save(sd, h.path("nan_sd.pt"))
p = h.run(["train", cfg, "--set", "run.dir=initnan", "--set", "model.init_from=nan_sd.pt"], ranks=2, expect_rc=None)
h.check(p.returncode == 4, f"init_from with NaN: exit 4 (got {p.returncode})", p.stderr[-3000:])
h.check("'fc1.weight' holds non-finite values (3 NaN, 1 Inf of" in p.stderr, "the tensor and its counts are named",
        p.stderr[-3000:])

# 6. Ctrl-C on a lone process: agree, save, exit 75; the resume finishes. A second Ctrl-C quits.
h.run(["data", "synthetic", "--out", "big.h5", "--samples", "40000", "--features", "16", "--classes", "4"])
long_cfg = small_config(h, "long.yaml", "big.h5", "sigint", epochs=30, extra="""\
    log:
      every_steps: 1
      progress: off
    """)


def started(run_dir, *sets):
    """Starts a lone training and waits until it is past its first steps."""
    args = [h.forge, "train", long_cfg, "--set", f"run.dir={run_dir}"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.Popen(args, cwd=h.work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = h.path(run_dir, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 20:
            return proc
        time.sleep(0.05)
    raise AssertionError("training did not start: " + proc.communicate()[1][-2000:])


proc = started("sigint")
proc.send_signal(signal.SIGINT)
out, err = proc.communicate(timeout=120)
h.check(proc.returncode == 75, f"Ctrl-C: exit 75 (got {proc.returncode})", err[-3000:])
m = re.search(r"preempted by signal 2 at epoch \d+ step \d+: saved (\S+);", out + err)
h.check("interrupt: saving a checkpoint" in err and m, "Ctrl-C says it saves, then that it saved", (out + err)[-3000:])
h.check(m and os.path.exists(h.path(m.group(1))), "the checkpoint it names is there", m and m.group(1))
p = h.run(["train", long_cfg, "--set", "run.dir=sigint", "--set", "run.epochs=1", "--resume", "auto"], expect_rc=None)
h.check(p.returncode == 0 and "resumed from" in p.stdout + p.stderr, "the interrupted run resumes and finishes",
        (p.stdout + p.stderr)[-3000:])

# Steps of a wide model take milliseconds, so the second Ctrl-C (sent once the first is
# acknowledged) lands before the ranks' next agreement.
proc = started("sigint2", "model.hidden=60000")
proc.send_signal(signal.SIGINT)
first = proc.stderr.readline() + proc.stderr.readline()
proc.send_signal(signal.SIGINT)
out, err = proc.communicate(timeout=120)
err = first + err
h.check(proc.returncode == 130, f"a second Ctrl-C: exit 130 at once (got {proc.returncode})", (out + err)[-3000:])
h.check("second interrupt: quitting now without saving" in err, "the second Ctrl-C says what it does", err[-3000:])
h.check(not [f for f in files_of("sigint2") if f.startswith("ckpt-")], "and saves nothing", files_of("sigint2"))

h.finish()
