"""Training controls as resumable state (issue 16), on the real forge binary, lean: one
uninterrupted 2-rank reference run with gradient clipping, an injected Inf gradient on one
rank (the step is skipped on every rank) and an EMA of the weights (evaluated each epoch)
is compared with the same run preempted mid-epoch by SIGUSR1 (after clipping, a skipped step
and EMA updates) and resumed: the final checkpoints are equal tensor for tensor, model,
optimizer, generators, EMA weights and the guard's counters included, all read by Python
with weights_only=True. Then: the limit of consecutive skipped steps stops the run with a
named error; clipping by the global norm makes 1-rank and 2-rank runs of the same global
batch agree; `forge eval --ema` evaluates the averaged weights; bad values are named."""
import glob
import json
import math
import os

import torch

from harness import Harness, final_checkpoint, read_jsonl, same_checkpoint, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "600", "--features", "16", "--classes", "4"])
# 2 ranks x 32 = 64 samples a step: 10 steps an epoch, 30 in all.
cfg = small_config(h, "c.yaml", "syn.h5", "run", epochs=3)
controls = ["--set", "optimizer.clip_grad_norm=0.5", "--set", "ema.decay=0.9", "--set", "ema.every_steps=2",
            "--set", "ema.evaluate=true", "--set", "log.every_steps=1", "--set", "log.progress=off"]
# Rank 1's gradients are Inf at global steps 3 (before the preemption) and 17 (after the resume).
inf_env = {"FORGE_FAULT_INF_GRAD_RANK": "1", "FORGE_FAULT_INF_GRAD_STEPS": "3,17"}


def train(run_dir, env, extra=(), expect_rc=0, ranks=2):
    os.environ.update(env)
    try:
        return h.run(["train", cfg, "--set", f"run.dir={run_dir}", *controls, *extra], ranks=ranks, expect_rc=expect_rc,
                     mpirun_args=[a for k in env for a in ("-x", k)])
    finally:
        for k in env:
            del os.environ[k]


# 1. The reference, never interrupted.
p = train("whole", inf_env)
out = p.stdout + p.stderr
h.check("global step 4: the gradients are not finite" in out and "the step is skipped on every rank" in out,
        "the Inf gradient of rank 1 is reported by rank 0 as a skipped step", out[-3000:])
steps = [r for r in read_jsonl(h.path("whole", "metrics.jsonl")) if r["type"] == "step"]
by_step = {r["global_step"]: r for r in steps}
h.check(by_step[4]["grad_norm"] is None and by_step[4]["skipped_steps"] == 1 and by_step[3]["skipped_steps"] == 0,
        "step 4's record: no finite norm, 1 skipped step (rank 0 skipped rank 1's overflow)", by_step.get(4))
h.check(by_step[30]["skipped_steps"] == 2, "2 skipped steps over the run", by_step[30])
norms = [r["grad_norm"] for r in steps if r["grad_norm"] is not None]
h.check(len(norms) == 28 and all(n > 0.5 for n in norms[:5]),
        f"grad_norm recorded before clipping, above optimizer.clip_grad_norm 0.5 (first: {norms[:3]})", norms)
epochs = [r for r in read_jsonl(h.path("whole", "metrics.jsonl")) if r["type"] == "epoch"]
h.check(len(epochs) == 3 and all("eval_ema_loss" in r and "eval_ema_accuracy" in r for r in epochs),
        "each epoch record holds the EMA weights' evaluation", epochs[-1] if epochs else None)

# 2. Preempted mid-epoch (signal at step 4, agreed at step 16 = epoch 2 step 6), resumed.
p = train("cut", {**inf_env, "FORGE_FAULT_SIGNAL_STEP": "4"}, expect_rc=75)
saved = final_checkpoint(h, "cut")
ck = torch.load(saved, weights_only=True)
h.check(ck["epoch"] == 1 and ck["step"] == 6, f"preempted mid-epoch: epoch 2 step {ck['step']}", saved)
h.check(ck["grad_guard"]["skipped_steps"] == 1 and ck["grad_guard"]["consecutive_skipped"] == 0,
        "the preemption checkpoint counts the skipped step", ck.get("grad_guard"))
ema, model = ck["ema_state_dict"], ck["model_state_dict"]
h.check(ema.keys() == model.keys() and not torch.equal(ema["fc1.weight"], model["fc1.weight"])
        and torch.equal(ema["bn1.running_mean"], model["bn1.running_mean"]),
        "ema_state_dict: a full state dict, averaged weights unlike the model's, the model's buffers")
p = train("cut", inf_env, extra=["--resume", "auto"])
h.check("resumed from" in p.stdout and "global step 18: the gradients are not finite" in p.stdout + p.stderr,
        "the resumed run skips the second Inf step too", (p.stdout + p.stderr)[-2000:])
ok, diff = same_checkpoint(final_checkpoint(h, "whole"), final_checkpoint(h, "cut"))
h.check(ok, "clipping + skipped steps + EMA, SIGUSR1 and resume on 2 ranks: final checkpoints equal tensor for "
        "tensor (model, optimizer, generators, ema_state_dict, grad_guard)", diff)
final = torch.load(final_checkpoint(h, "whole"), weights_only=True)
h.check(final["grad_guard"]["skipped_steps"] == 2, "the final checkpoint counts both skipped steps", final["grad_guard"])

# 3. forge eval --ema: the averaged weights, as the last epoch's record evaluated them.
e = json.loads(h.run(["eval", cfg, "--checkpoint", final_checkpoint(h, "whole"), "--ema", "--json"]).stdout)
plain = json.loads(h.run(["eval", cfg, "--checkpoint", final_checkpoint(h, "whole"), "--json"]).stdout)
h.check(math.isclose(e["loss"], epochs[-1]["eval_ema_loss"], rel_tol=1e-5) and e["loss"] != plain["loss"],
        f"forge eval --ema gives the EMA loss of the last epoch ({e['loss']} vs {epochs[-1]['eval_ema_loss']}; "
        f"the model's {plain['loss']})")
h.run(["train", cfg, "--set", "run.dir=plain", "--set", "run.epochs=1"])
p = h.run(["eval", cfg, "--checkpoint", final_checkpoint(h, "plain"), "--ema"], expect_rc=None)
h.check(p.returncode != 0 and "holds no ema_state_dict" in p.stderr, "--ema on a checkpoint without EMA: named",
        p.stderr[-1000:])

# 4. The limit of consecutive skipped steps: a third in a row (limit 2) stops the run, named.
p = train("limit", {"FORGE_FAULT_INF_GRAD_RANK": "0", "FORGE_FAULT_INF_GRAD_STEPS": "2,3,4"},
          extra=["--set", "optimizer.max_skipped_steps=2"], expect_rc=5, ranks=0)
h.check("the gradients were not finite in 3 consecutive step(s) (more than optimizer.max_skipped_steps = 2)"
        in p.stderr, "the limit of skipped steps: exit 5, named", p.stderr[-2000:])
h.check(not glob.glob(h.path("limit", "checkpoints", "*.pt")), "and nothing was saved")

# 5. Clipping by the global norm: 1 and 2 ranks with the same global batch agree (the CNN,
# no BatchNorm, no dropout: the steps' gradients are the global batch's however split).
cnn = h.write("cnn.yaml", """\
    run: {dir: cnn, seed: 5, epochs: 1}
    model: {name: cnn, input_shape: [1, 4, 4], channels: [4, 8], hidden: 32, num_classes: 4, dropout: 0.0}
    data: {path: syn.h5, global_batch_size: 40, batch_size: 20, eval_batch_size: 100}
    optimizer: {name: sgd, lr: 0.05, momentum: 0.9, clip_grad_norm: 0.05}
    log: {every_steps: 1, progress: off}
    """)
h.run(["train", cnn, "--set", "run.dir=cnn1"])
h.run(["train", cnn, "--set", "run.dir=cnn2"], ranks=2)
a = torch.load(final_checkpoint(h, "cnn1"), weights_only=True)["model_state_dict"]
b = torch.load(final_checkpoint(h, "cnn2"), weights_only=True)["model_state_dict"]
worst = max((a[k] - b[k]).abs().max().item() for k in a)
n1 = [r["grad_norm"] for r in read_jsonl(h.path("cnn1", "metrics.jsonl")) if r["type"] == "step"]
n2 = [r["grad_norm"] for r in read_jsonl(h.path("cnn2", "metrics.jsonl")) if r["type"] == "step"]
h.check(len(n1) == 15 and all(n > 0.05 for n in n1), f"every step clipped (norms {n1[:3]}...)", n1)
h.check(len(n1) == len(n2) and all(math.isclose(x, y, rel_tol=1e-4) for x, y in zip(n1, n2)),
        "1 and 2 ranks measure the same global norm at every step", list(zip(n1, n2))[:5])
h.check(worst < 1e-5, f"1 and 2 ranks end with the same weights within float tolerance (worst {worst:.2e})")

# 6. Bad values are named.
for key, value in [("optimizer.clip_grad_norm", "-1"), ("optimizer.max_skipped_steps", "-2"), ("ema.decay", "1.5"),
                   ("ema.every_steps", "0")]:
    p = h.run(["train", cfg, "--set", f"{key}={value}"], expect_rc=None)
    h.check(p.returncode != 0 and key in p.stderr, f"{key}={value} is refused, named", p.stderr[-500:])

h.finish()
