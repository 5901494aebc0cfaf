"""A data file that changes under a run stops it with exit 2 naming the file, on the mapped
and on the copied read path (FORGE_NO_MAPPED_READS=1, the README's remedy for SIGBUS), under
mpirun -np 2: cut short, overwritten in place (same size, other bytes, a new modification
time), and replaced by another file under its path. Never exit 0 with a model trained on
zeros or on a mix of old and new data, never a SIGBUS, never an HDF5 error-stack dump, and
no checkpoint saved after the change (the run's checkpoints are those it had before).

The change lands at a known point: a test-only hook (FORGE_FAULT_PAUSE_STEP / _FILE) holds
every rank before a step until the test has changed the file."""
import glob
import os
import shutil
import subprocess
import time

import h5py

from harness import Harness, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "orig.h5", "--samples", "4000", "--features", "64", "--classes", "4"])
h.run(["data", "synthetic", "--out", "other.h5", "--samples", "4000", "--features", "64", "--classes", "4",
       "--seed", "9"])
with h5py.File(h.path("orig.h5")) as f:
    d = f["train/features"]
    # Where the training rows lie in the file (one ~1 MiB chunk here): the overwrite hits them.
    info = d.id.get_chunk_info(0)
    ROWS_AT, ROWS_BYTES = info.byte_offset, info.size
STEPS = 63  # an epoch: 2,000 samples per rank, batches of 32


def cut_short(path):
    os.truncate(path, os.path.getsize(path) // 2)


def overwrite(path):
    # Same size, other bytes where the rows are, a modification time that differs for sure.
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(ROWS_AT + ROWS_BYTES // 2)
        f.write(os.urandom(ROWS_BYTES // 4))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    assert os.path.getsize(path) == before.st_size


def replace(path):
    # What a converter (or h5py plus a rename) does: another file now has the name.
    shutil.copy(h.path("other.h5"), path + ".new")
    os.rename(path + ".new", path)


def checkpoints(run_dir):
    return sorted(glob.glob(h.path(run_dir, "checkpoints", "*.pt")))


def run_case(name, change, copied, every_steps, pause_step, expect_in_output, buffer_mb=0.25):
    data = f"{name}.h5"
    shutil.copy(h.path("orig.h5"), h.path(data))
    run_dir = f"run-{name}"
    cfg = small_config(h, f"{name}.yaml", data, run_dir, epochs=3, features=64)
    text = open(cfg).read()
    text = text.replace("every_epochs: 1\n", f"every_epochs: 1\n  every_steps: {every_steps}\n")
    # Small read windows (by default): the loader keeps reading (or mapping) rows all
    # through the epoch.
    text = text.replace("eval_batch_size: 100\n", f"eval_batch_size: 100\n  buffer_mb: {buffer_mb}\n")
    open(cfg, "w").write(text)
    go = h.path(f"go-{name}")
    env = dict(os.environ, FORGE_FAULT_PAUSE_STEP=str(pause_step), FORGE_FAULT_PAUSE_FILE=go)
    xs = ["-x", "FORGE_FAULT_PAUSE_STEP", "-x", "FORGE_FAULT_PAUSE_FILE"]
    if copied:
        env["FORGE_NO_MAPPED_READS"] = "1"
        xs += ["-x", "FORGE_NO_MAPPED_READS"]
    cmd = h.command(["train", cfg], ranks=2, mpirun_args=xs)
    print(f"$ {' '.join(cmd)}  ({'copied' if copied else 'mapped'} reads, the data file {change.__name__})")
    proc = subprocess.Popen(cmd, cwd=h.work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not all(os.path.exists(f"{go}.rank{r}") for r in range(2)) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    paused = all(os.path.exists(f"{go}.rank{r}") for r in range(2))
    before = checkpoints(run_dir)
    change(h.path(data))
    open(go, "w").close()
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    text = out + err
    what = f"{name} ({'copied' if copied else 'mapped'} reads)"
    h.check(paused, f"{what}: both ranks paused at step {pause_step}", text[-3000:])
    h.check(proc.returncode == 2, f"{what}: exit 2 (got {proc.returncode})", text[-3000:])
    h.check(f"data file '{data}' changed during the run: {expect_in_output}" in text,
            f"{what}: the message names the file and says \"{expect_in_output}\"", text[-3000:])
    h.check("SIGBUS" not in text and "HDF5-DIAG" not in text, f"{what}: no SIGBUS, no HDF5 dump", text[-3000:])
    after = checkpoints(run_dir)
    h.check(before and after == before, f"{what}: no checkpoint saved after the change ({len(before)} before, "
                                        f"{len(after)} after)", "\n".join(after))
    for line in text.splitlines():
        if "changed during the run" in line:
            print("    " + line[:400])
    return text


# Mid-epoch, after a step checkpoint (step 8), before the next one (step 16).
for copied in (True, False):
    mode = "copied" if copied else "mapped"
    run_case(f"cut-{mode}", cut_short, copied, every_steps=8, pause_step=10, expect_in_output="cut short from")
    run_case(f"overwritten-{mode}", overwrite, copied, every_steps=8, pause_step=10, expect_in_output="modified")

# Replaced under its path: the run still reads the old file, whole and consistent, so only
# the epoch boundary's check sees it; the ranks agree and each names the file.
# Every row of the epoch mapped before the cut (one window), and no step checkpoint to look
# at the file first: the loader's thread faults on rows past the new end (SIGBUS), which is
# caught and reported.
text = run_case("cut-held", cut_short, False, every_steps=0, pause_step=STEPS + 10, expect_in_output="cut short from",
                buffer_mb=8)
h.check("found reading sample" in text, "cut-held: found where the mapped rows were read, not as a SIGBUS",
        text[-3000:])

# In epoch 2, after epoch 1's checkpoint; epoch 2's must not be written.
text = run_case("replaced", replace, False, every_steps=0, pause_step=STEPS + 10, expect_in_output="replaced")
for r in range(2):
    h.check(any(f"[rank {r}]" in l and "changed during the run: replaced" in l for l in text.splitlines()),
            f"replaced: rank {r} names the file", text[-3000:])
h.check("epoch 1/3" in text and "epoch 2/3" not in text,
        "replaced: epoch 2's results are not reported as if they were good", text[-3000:])
h.finish()
