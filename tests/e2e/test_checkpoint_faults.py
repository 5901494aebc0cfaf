"""A full disk during a save reports the error and leaves the previous checkpoint intact
(the run dir moves to a small tmpfs that the next checkpoint cannot fit in); a checkpoint
of another architecture is refused by name. Mounting needs root: without it the test
reports itself skipped (exit 77)."""
import glob
import os
import shutil
import subprocess
import sys

from harness import Harness, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "600", "--features", "16", "--classes", "4"])
cfg = small_config(h, "small.yaml", "syn.h5", "run", epochs=1)
h.run(["train", cfg])
first = h.path("run", "checkpoints", "ckpt-e0001-n0000000000.pt")
h.check(os.path.exists(first), "the first epoch's checkpoint exists", os.listdir(h.path("run", "checkpoints")))
size = os.path.getsize(first)


if os.geteuid() != 0:
    print("SKIPPED: mounting a small tmpfs needs root")
    sys.exit(77)
full = h.path("full")
os.makedirs(full)
used = sum(-(-os.path.getsize(f) // 4096) * 4096 for f in glob.glob(h.path("run", "**"), recursive=True)
           if os.path.isfile(f))
room = used + 8192  # the next checkpoint (over 16 KiB) cannot fit
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", full], check=True)
try:
    shutil.copytree(h.path("run"), os.path.join(full, "run"))
    p = subprocess.run([h.forge, "train", cfg, "--set", "run.dir=full/run", "--set", "run.epochs=2",
                        "--resume", "auto"], cwd=h.work, capture_output=True, text=True, timeout=120)
    left = glob.glob(os.path.join(full, "run", "checkpoints", ".*.tmp.*"))
    kept = h.run(["ckpt", "inspect", os.path.join(full, "run", "checkpoints", os.path.basename(first))],
                 expect_rc=None).returncode
finally:
    subprocess.run(["umount", full])
h.check(size > 8192, f"a checkpoint ({size} bytes) does not fit in the room left")
h.check(p.returncode == 4, f"the failed save exits 4 (got {p.returncode})", p.stderr)
h.check("cannot write" in p.stderr and "No space left on device" in p.stderr and ".tmp." in p.stderr,
        "the message names the file and the OS error", p.stderr)
h.check(not left, "the half-written temporary file is removed", left)
h.check(kept == 0, "the previous checkpoint still verifies")
p = h.run(["train", cfg, "--set", "run.epochs=2", "--resume", "auto"])
h.check("resumed from" in p.stdout and "ckpt-e0001" in p.stdout and "epoch 2/2" in p.stdout,
        "with space again, the run resumes from it and finishes", p.stdout)

# Another architecture: the strict load names every mismatch.
p = h.run(["train", cfg, "--set", "model.hidden=64", "--set", "run.epochs=3", "--resume", "auto"], expect_rc=None)
h.check(p.returncode == 4 and "does not fit the model" in p.stderr and
        "shape mismatch for 'fc1.weight': checkpoint has [32, 16], model has [64, 16]" in p.stderr,
        "resuming into another architecture is refused with each mismatch named", p.stderr)
h.finish()
