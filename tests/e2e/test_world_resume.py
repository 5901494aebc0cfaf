"""Resume on any number of ranks with exact sample accounting. One epoch trained as 2 ranks,
preempted, resumed as 3, preempted, resumed as 2 (and as 4 -> 1): a per-sample log
(FORGE_SAMPLE_LOG) proves every sample of the epoch was trained on exactly once, and that
each optimizer step used the same set of samples as the uninterrupted 2-rank run. With
data.global_batch_size set (and no dropout, whose masks are drawn per rank), the weights
after every step match the uninterrupted run's within float tolerance (the ranks' sums are
reduced in another order); at the same world size they stay bit-identical."""
import collections
import glob
import json
import os
import re

from harness import Harness, same_checkpoint, small_config

h = Harness()
N, G = 1000, 24
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", str(N), "--features", "16", "--classes", "4"])
# 24 samples a step: 12 a rank on 2, 8 on 3, 6 on 4, two micro-batches of 12 on 1. A small
# buffer makes several shuffle windows of the epoch (so steps straddle windows).
# The CNN (no BatchNorm, whose statistics are per rank's batch) without dropout (whose masks
# are drawn per rank): then the steps' gradients are the global batches' whatever the split.
cfg = h.write("gb.yaml", """\
    run:
      dir: run
      seed: 5
      epochs: 1
    model:
      name: cnn
      input_shape: [1, 4, 4]
      channels: [4, 8]
      hidden: 32
      num_classes: 4
      dropout: 0.0
    data:
      path: syn.h5
      eval_batch_size: 100
    optimizer:
      name: sgd
      lr: 0.05
      momentum: 0.9
    distributed:
      timeout_s: 60
    log:
      every_steps: 1
    """)
common = ["--set", f"data.global_batch_size={G}", "--set", "data.batch_size=12", "--set", "data.buffer_mb=0.02", "--set", "checkpoint.every_steps=1", "--set", "checkpoint.keep_last=100"]
steps_per_epoch = -(-N // G)  # 42


def train(run, ranks, resume=False, signal_at=None, extra=()):
    env = {"FORGE_SAMPLE_LOG": h.path(run + ".samples")}
    if signal_at is not None:
        env["FORGE_FAULT_SIGNAL_STEP"] = str(signal_at)
    os.environ.update(env)
    args = ["train", cfg, *common, "--set", f"run.dir={run}", *extra] + (["--resume", "auto"] if resume else [])
    p = h.run(args, ranks=ranks, expect_rc=None, mpirun_args=[a for k in env for a in ("-x", k)])
    for k in env:
        del os.environ[k]
    want = 75 if signal_at is not None else 0
    h.check(p.returncode == want, f"{run} on {ranks} rank(s): exit {p.returncode} (want {want})",
            p.stdout[-3000:] + p.stderr[-3000:])
    return p


def sample_log(run):
    """{global step: Counter of its samples}, over every rank and session."""
    steps = collections.defaultdict(collections.Counter)
    for f in glob.glob(h.path(run + ".samples.rank*")):
        for line in open(f):
            epoch, step, rank, *idx = map(int, line.split())
            steps[step].update(idx)
    return steps


def check_accounting(run, whole, what):
    steps = sample_log(run)
    used = collections.Counter()
    for c in steps.values():
        used.update(c)
    h.check(sorted(steps) == list(range(steps_per_epoch)), f"{what}: one record per step, {steps_per_epoch} steps",
            sorted(steps))
    # 1000 = 41 x 24 + 16: the last step's 16 split evenly on 2 (and 1) ranks, no padding.
    h.check(sorted(used) == list(range(N)) and set(used.values()) == {1},
            f"{what}: every sample of the epoch trained on exactly once",
            [(i, c) for i, c in used.items() if c != 1][:10] + [("missing", N - len(used))])
    differ = [s for s in steps if steps[s] != whole[s]]
    h.check(not differ, f"{what}: every step's samples are the same set as the uninterrupted 2-rank run's", differ[:10])


def weights(path):
    import torch
    return torch.load(path, weights_only=True)["model_state_dict"]


def compare_curves(run, what):
    """Largest difference of the weights after each step (checkpoints named by progress
    match by name across world sizes) against the uninterrupted run's."""
    import torch
    worst, count = 0.0, 0
    for f in sorted(glob.glob(h.path("whole", "checkpoints", "ckpt-*.pt"))):
        other = h.path(run, "checkpoints", os.path.basename(f))
        if not os.path.exists(other):
            continue
        a, b = weights(f), weights(other)
        for k in a:
            worst = max(worst, (a[k] - b[k]).abs().max().item())
        count += 1
    print(f"  {what}: {count} step checkpoints compared, largest weight difference {worst:.3g}")
    return worst, count


def check_run(run, what):
    """Exactly-once, the same step sets, and the weights after every step within 1e-6."""
    check_accounting(run, reference, what)
    worst, count = compare_curves(run, what)
    h.check(count >= 30 and worst < 1e-6,
            f"{what}: the weights after each of {count} steps match the uninterrupted run's within 1e-6 "
            f"(largest difference {worst:.3g})")


whole = train("whole", 2)
reference = sample_log("whole")
h.check(sum(sum(c.values()) for c in reference.values()) == N, "the uninterrupted run logs each sample once")

# 2 -> 3 -> 2. FORGE_FAULT_SIGNAL_STEP raises SIGUSR1 on rank 0 at that global step; the
# ranks agree on it at their next check (every 8 steps, one behind).
train("a", 2, signal_at=6)
b = train("a", 3, resume=True, signal_at=20)
h.check("resuming on 3 at global sample" in b.stdout and "order of the rest of the interrupted epoch" not in b.stdout,
        "3 ranks say where they continue (global sample), without the old 'order changes' warning", b.stdout[-3000:])
c = train("a", 2, resume=True)
check_run("a", "2 -> 3 -> 2 ranks")

# 4 -> 1.
train("d", 4, signal_at=10)
train("d", 1, resume=True)
check_run("d", "4 -> 1 ranks")

# The same world size stays bit-exact: 2 ranks preempted and resumed on 2.
train("e", 2, signal_at=12)
e = train("e", 2, resume=True)
fp = re.compile(r"fingerprint ([0-9a-f]{16})")
h.check(fp.search(e.stdout) and fp.search(e.stdout).group(1) == fp.search(whole.stdout).group(1),
        "2 -> 2 ranks: the final weights are bit-identical to the uninterrupted run's")
ok, diff = same_checkpoint(sorted(glob.glob(h.path("whole", "checkpoints", "ckpt-e0001*.pt")))[-1],
                           sorted(glob.glob(h.path("e", "checkpoints", "ckpt-e0001*.pt")))[-1])
h.check(ok, "2 -> 2 ranks: the final checkpoints are equal tensor for tensor", diff)

# forge ckpt inspect: the global position and the world sizes it resumes on.
mid = sorted(glob.glob(h.path("a", "checkpoints", "ckpt-e0000-n*.pt")))[3]
ins = h.run(["ckpt", "inspect", mid]).stdout
samples = int(re.search(r"-n(\d+)\.pt$", mid).group(1))
h.check(f"epoch 1, {samples} of {N} samples (global)" in ins, "ckpt inspect shows the position in global samples", ins)
h.check("world sizes 1, 2, 3, 4, 6, 8, 12, 24" in ins, "ckpt inspect names the world sizes it resumes on exactly", ins)
j = json.loads(h.run(["ckpt", "inspect", mid, "--json"]).stdout)
h.check(j["position"] == {"epoch": 0, "samples": samples, "of": N} and j["resumes_on"] == [1, 2, 3, 4, 6, 8, 12, 24],
        "and in --json", {k: j.get(k) for k in ("position", "resumes_on")})

# Setting data.global_batch_size on resume (as `ckpt inspect` suggests for a checkpoint
# written without it) rounds this config's shuffle window: the checkpoint's window is kept,
# and the interrupted epoch still sees every sample once.
train("w", 2, signal_at=6, extra=["--set", "data.global_batch_size=0"])
w = train("w", 3, resume=True)
used = collections.Counter()
for c in sample_log("w").values():
    used.update(c)
h.check("keeping the checkpoint's shuffle window" in w.stdout, "the resume keeps the checkpoint's window",
        w.stdout[-2000:])
# 1000 = 41 x 24 + 16: on 3 ranks the last step's 16 are padded to 18 from the order's start.
twice = [i for i, c in used.items() if c == 2]
h.check(sorted(used) == list(range(N)) and set(used.values()) <= {1, 2} and len(twice) == 2,
        "2 ranks without a global batch -> 3 ranks with one: every sample once (2 padding the last step)",
        [(i, c) for i, c in used.items() if c != 1][:10] + [("missing", N - len(used))])

# A resume whose last step leaves BatchNorm 1 sample per rank: 1 rank of batch 2 saves at
# every step; from sample 82 on 3 ranks of batch 5 the epoch's last step holds 918 mod 15 = 3
# samples.
# A named config error (exit 2), not a torch error; the checkpoints stay for another resume.
bn = small_config(h, "bn.yaml", "syn.h5", "bn", epochs=1)
os.environ["FORGE_FAULT_SIGNAL_STEP"] = "40"
h.run(["train", bn, "--set", "data.batch_size=2", "--set", "checkpoint.every_steps=1", "--set",
       "checkpoint.keep_last=100"], ranks=1, expect_rc=75, mpirun_args=["-x", "FORGE_FAULT_SIGNAL_STEP"])
del os.environ["FORGE_FAULT_SIGNAL_STEP"]
p = h.run(["train", bn, "--set", "data.batch_size=5", "--resume", h.path("bn", "checkpoints",
           "ckpt-e0000-n0000000082.pt")], ranks=3, expect_rc=None)
h.check(p.returncode == 2 and "holds 1 sample per rank, which BatchNorm cannot train on" in p.stdout + p.stderr,
        f"a 1-sample BatchNorm step after a resume is a named config error (exit {p.returncode})",
        p.stdout[-2000:] + p.stderr[-2000:])

# A global batch that does not split: a config error naming what would work.
p = h.run(["train", cfg, *common, "--set", "run.dir=bad", "--set", "data.global_batch_size=25"], ranks=2,
          expect_rc=None)
h.check(p.returncode != 0 and "does not split evenly among 2 ranks" in p.stdout + p.stderr
        and "world sizes 5, 25" in p.stdout + p.stderr, "an uneven global batch is refused, naming world sizes",
        p.stdout[-2000:] + p.stderr[-2000:])
p = h.run(["train", cfg, *common, "--set", "run.dir=bad2", "--set", "data.global_batch_size=28",
           "--set", "data.batch_size=5"], ranks=2, expect_rc=None)
h.check(p.returncode != 0 and "14 samples per rank per step" in p.stdout + p.stderr
        and "set data.batch_size to one of 2, 1" in p.stdout + p.stderr,
        "micro-batches that do not split the rank's share are refused, naming batch sizes",
        p.stdout[-2000:] + p.stderr[-2000:])
h.finish()
