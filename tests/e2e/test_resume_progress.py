"""Resume order by training progress across a change of world size: a 2-rank run preempted
in epoch 3, resumed on 3 ranks (whose global steps count differently: 42 steps per epoch
instead of 63) and preempted further on, then `--resume auto` picks the 3-rank checkpoint,
the furthest in training, although its global step is the smaller. Checkpoint names,
retention (keep_last 2), metrics.jsonl and TensorBoard follow the same measure (epoch,
samples in it): every record up to each resumed position stays. A --resume PATH back to
the 2-rank checkpoint moves the 3-rank one aside."""
import glob
import os
import re
import shutil

from harness import Harness, read_jsonl, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "4000", "--features", "16", "--classes", "4"])
cfg = small_config(h, "small.yaml", "syn.h5", "run", epochs=4)
keep = ["--set", "checkpoint.keep_last=2", "--set", "log.every_steps=4"]


def names(run="run"):
    return sorted(os.path.basename(f) for f in glob.glob(h.path(run, "checkpoints", "ckpt-*.pt")))


def progress(r):
    """A record's place in training: (epochs complete before it, samples into the next)."""
    return (r["epoch"], 0) if r["type"] == "epoch" else (r["epoch"] - 1, r["epoch_samples"])


def ident(r):
    return (r["type"], r["global_step"], r["wall_time"])


def preempted(ranks, at, resume=()):
    os.environ["FORGE_FAULT_SIGNAL_STEP"] = str(at)
    p = h.run(["train", cfg, *keep, *resume], ranks=ranks, expect_rc=None,
              mpirun_args=["-x", "FORGE_FAULT_SIGNAL_STEP"])
    del os.environ["FORGE_FAULT_SIGNAL_STEP"]
    h.check(p.returncode == 75, f"{ranks} ranks: preempted (exit {p.returncode})", p.stdout[-2000:] + p.stderr[-2000:])
    return p


# A: 2 ranks, 63 steps per epoch of 64 samples. Signalled at global step 144, the ranks agree
# at 152: epoch 3, step 26 = 2 epochs + 1664 samples (42% of epoch 3).
a = preempted(2, 144)
h.check(names() == ["ckpt-e0002-n0000000000.pt", "ckpt-e0002-n0000001664.pt"],
        "2 ranks: checkpoints named by progress, the 2 most advanced kept", names())
rec_a = read_jsonl(h.path("run", "metrics.jsonl"))

# B: resumed on 3 ranks (42 steps per epoch of 96 samples) at exactly sample 1664 (no step
# boundary of 96): the 2336 samples left are 25 steps, so this is step 42 - 25 = 17, global
# step 2 * 42 + 17 = 101. Signalled at 112, stopped at 120: step 36 = 2 epochs + 1664 + 19 x
# 96 = 3488 samples (87%), a smaller global step (120) than A's (152).
b = preempted(3, 112, ["--resume", "auto"])
h.check(re.search(r"resumed from \S*ckpt-e0002-n0000001664\.pt at epoch 3 step 17 \(global step 101\)", b.stdout),
        "3 ranks resume the 2-rank checkpoint at the samples it had seen", b.stdout[-2000:])
h.check(names() == ["ckpt-e0002-n0000001664.pt", "ckpt-e0002-n0000003488.pt"],
        "retention keeps the 3-rank checkpoint (the most advanced) and the 2-rank one, by progress", names())
rec_b = read_jsonl(h.path("run", "metrics.jsonl"))
at_b = (2, 1664)
lost = [r for r in rec_a if progress(r) <= at_b and ident(r) not in {ident(x) for x in rec_b}]
h.check(not lost and [r["epoch"] for r in rec_b if r["type"] == "epoch"] == [1, 2],
        "the 3-rank resume keeps every record up to its position (the epoch-2 record too)", lost)
last_a = [r for r in rec_a if progress(r) == at_b]
h.check(last_a and all(ident(r) in {ident(x) for x in rec_b} for r in last_a),
        "and the 2-rank record at the resumed sample itself (nothing of it is trained again)", last_a)
shutil.copytree(h.path("run"), h.path("back"))

# C: --resume auto picks the 3-rank checkpoint, the furthest in training.
c = h.run(["train", cfg, *keep, "--resume", "auto"], ranks=3)
h.check(re.search(r"resumed from \S*ckpt-e0002-n0000003488\.pt at epoch 3 step 36 \(global step 120\)", c.stdout),
        "--resume auto picks the 3-rank checkpoint at 2 epochs + 3488 samples over the 2-rank one at + 1664 "
        "(global steps 120 vs 152)", c.stdout[-2000:])
rec_c = read_jsonl(h.path("run", "metrics.jsonl"))
lost = [r for r in rec_b if progress(r) <= (2, 3488) and ident(r) not in {ident(x) for x in rec_c}]
h.check(not lost, "metrics.jsonl keeps every record up to the resumed position", lost)
h.check([r["epoch"] for r in rec_c if r["type"] == "epoch"] == [1, 2, 3, 4], "one epoch record per epoch",
        [(r["epoch"], r["global_step"]) for r in rec_c if r["type"] == "epoch"])
order = [progress(r) for r in rec_c]
h.check(order == sorted(order), "the records follow each other in training progress", order)

# TensorBoard's files hold exactly the records of metrics.jsonl (its axis, the global step,
# repeats across the world sizes: points are told apart by wall time too).
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ea = EventAccumulator(h.path("run", "tb"), size_guidance={"scalars": 0}, purge_orphaned_data=False)
ea.Reload()
points = sorted((t.split("/")[0], e.step, round(e.wall_time, 3)) for t in ea.Tags()["scalars"]
                if t.endswith("/train_loss") for e in ea.Scalars(t))
want = sorted((r["type"], r["global_step"], round(r["wall_time"], 3)) for r in rec_c)
h.check(points == want, f"the event files hold the {len(want)} records' points and no other",
        sorted(set(points) ^ set(want))[:10])

# --resume PATH back to the 2-rank checkpoint: the 3-rank one, further on, goes aside.
p = h.run(["train", cfg, *keep, "--set", "run.dir=back", "--set", "run.epochs=3", "--resume",
           h.path("back", "checkpoints", "ckpt-e0002-n0000001664.pt")], ranks=2)
aside = h.path("back", "checkpoints", "abandoned-after-ckpt-e0002-n0000001664")
h.check(os.path.isdir(aside) and os.listdir(aside) == ["ckpt-e0002-n0000003488.pt"],
        "a resume from a less advanced checkpoint moves the further one aside, by progress",
        os.listdir(h.path("back", "checkpoints")))
rec = read_jsonl(h.path("back", "metrics.jsonl"))
h.check([r["epoch"] for r in rec if r["type"] == "epoch"] == [1, 2, 3]
        and not [r for r in rec_b if progress(r) > (2, 1664) and ident(r) in {ident(x) for x in rec}],
        "and metrics.jsonl drops the 3-rank records past the resumed position")

# The same --resume PATH again, with the 3-rank checkpoint copied back (a file of the same name
# as one in the first folder): what this resume abandons goes to a folder of its own.
first = {f: open(os.path.join(aside, f), "rb").read() for f in os.listdir(aside)}
shutil.copy(os.path.join(aside, "ckpt-e0002-n0000003488.pt"), h.path("back", "checkpoints"))
p = h.run(["train", cfg, *keep, "--set", "run.dir=back", "--set", "run.epochs=3", "--resume",
           h.path("back", "checkpoints", "ckpt-e0002-n0000001664.pt")], ranks=2)
h.check({f: open(os.path.join(aside, f), "rb").read() for f in os.listdir(aside)} == first,
        "a second resume from the same checkpoint leaves the first abandoned folder's files as they were",
        sorted(os.listdir(aside)))
second = sorted(os.listdir(aside + ".2")) if os.path.isdir(aside + ".2") else []
h.check({"ckpt-e0002-n0000003488.pt", "ckpt-e0003-n0000000000.pt"} <= set(second),
        "and moves what it abandons to abandoned-after-ckpt-e0002-n0000001664.2/", second)

h.finish()
