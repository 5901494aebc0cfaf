"""kill -9 at random moments of a run that saves a checkpoint every step, 20 times, each
time resuming with --resume auto: every checkpoint file present always verifies (saves are
atomic), the run always resumes from the newest, leftovers of interrupted saves are
cleaned up, and the run finally completes."""
import glob
import os
import random
import re
import signal
import subprocess
import time

from harness import Harness, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "20000", "--features", "64", "--classes", "4"])
cfg = small_config(h, "save.yaml", "syn.h5", "run", epochs=30, features=64)
sets = ["--set", "model.hidden=1024", "--set", "checkpoint.every_steps=1", "--set", "checkpoint.keep_last=2"]
ckdir = h.path("run", "checkpoints")
rng = random.Random(7)
killed_mid_save = 0
resumed_steps = []
for i in range(20):
    args = [h.forge, "train", cfg, *sets] + (["--resume", "auto"] if i else [])
    log_path = h.path(f"kill{i}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, cwd=h.work, stdout=log, stderr=subprocess.STDOUT, text=True)
        # Startup takes about a second, more on a loaded machine: the kill comes a random
        # time after the run said where it starts, so every restart has resumed first.
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            with open(log_path) as f:
                if re.search(r"resumed from|starting fresh", f.read()):
                    break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open(log_path) as f:
        out = f.read()
    m = re.search(r"at epoch \d+ step \d+ \(global step (\d+)\)", out)
    if i:
        resumed_steps.append(int(m.group(1)) if m else None)
    if glob.glob(os.path.join(ckdir, ".*.tmp.*")):
        killed_mid_save += 1
    files = sorted(glob.glob(os.path.join(ckdir, "ckpt-*.pt")))
    bad = [f for f in files if h.run(["ckpt", "inspect", f], expect_rc=None).returncode != 0]
    h.check(files and not bad, f"kill {i + 1}: all {len(files)} checkpoint files verify", bad or out[-1500:])

h.check(killed_mid_save >= 1, f"some kills landed in the middle of a save ({killed_mid_save} of 20)")
h.check(all(s is not None for s in resumed_steps) and resumed_steps == sorted(resumed_steps),
        "every restart resumed, each from at least as far as the one before", resumed_steps)
p = h.run(["train", cfg, *sets, "--set", "run.epochs=1", "--set", "checkpoint.every_steps=0", "--resume", "auto"])
h.check("resumed from" in p.stdout and "final test accuracy" in p.stdout, "the run resumes and completes", p.stdout)
h.check(not glob.glob(os.path.join(ckdir, ".*.tmp.*")), "no temporary file is left")

h.finish()
