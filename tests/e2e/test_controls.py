"""Training controls as resumable state (issue 16), on the real forge binary, lean: one
uninterrupted 2-rank reference run with gradient clipping, an injected Inf gradient on one
rank (the step is skipped on every rank) and an EMA of the weights (evaluated each epoch)
is compared with the same run preempted mid-epoch by SIGUSR1 (after clipping, a skipped step
and EMA updates) and resumed: the final checkpoints are equal tensor for tensor, model,
optimizer, generators, EMA weights and the guard's counters included, all read by Python
with weights_only=True. Then: the limit of consecutive skipped steps stops the run with a
named error; clipping by the global norm makes 1-rank and 2-rank runs of the same global
batch agree; `forge eval --ema` evaluates the averaged weights; the checkpoint policy (top-k
copies, last.pt) and the stopping rules (early stopping, run.max_steps, run.max_time) survive
SIGUSR1 and their own stops bit for bit; bad values are named."""
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
# With the dynamic loss scale on (as fp16 has it on CUDA; here the same code on the CPU): it
# starts at 1024 and doubles after 4 finite steps in a row.
controls = ["--set", "optimizer.clip_grad_norm=0.5", "--set", "ema.decay=0.9", "--set", "ema.every_steps=2",
            "--set", "ema.evaluate=true", "--set", "log.every_steps=1", "--set", "log.progress=off",
            "--set", "loss_scale.mode=dynamic", "--set", "loss_scale.init=1024", "--set", "loss_scale.growth_interval=4"]
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
# Steps 1-3 finite, 4 skipped (1024 -> 512), 5-16 finite (three doublings): 4096, where 16
# finite steps would have grown it to 16384.
h.check(ck["loss_scaler"] == {"scale": 4096.0, "growth_tracker": 0},
        "the loss scale backed off at the skipped step and grew since: 4096 at step 16", ck.get("loss_scaler"))
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
h.check(final["loss_scaler"] == {"scale": 16384.0, "growth_tracker": 0},
        "step 18 halved the scale again (2048), 12 finite steps since grew it to 16384: training went on",
        final.get("loss_scaler"))

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

# 7. Checkpoint policy and stopping. 6 epochs of 10 steps; eval_loss monitored (min); the top 2
# epochs kept in top/; early stopping with a min_delta no epoch beats, so patience 3 ends the
# run after epoch 4 (40 steps). Reference, then two interrupted chains: SIGUSR1 at step 20
# (stops at step 32: top-2 full, patience counting 2 of 3) and run.max_steps 12 then
# run.max_time (a slowed rank runs out of a 2 s budget, exit 75), each resumed to the end.
# The same runs carry the per-parameter-group options: weight decay but none on biases and
# BatchNorm weights, and a linear decay after a 5-step warmup.
policy = ["--set", "run.epochs=6", "--set", "checkpoint.monitor=eval_loss", "--set", "checkpoint.save_top_k=2",
          "--set", "early_stopping.patience=3", "--set", "early_stopping.min_delta=10",
          "--set", "optimizer.weight_decay=0.01", "--set", "optimizer.no_decay=[bias, norm]",
          "--set", "schedule.name=linear", "--set", "schedule.warmup_steps=5", "--set", "schedule.min_lr=0.005",
          "--set", "run.precision=bf16"]  # bf16 autocast on the CPU
p = train("pol", {}, extra=policy)
h.check("stopped: early stopping: eval_loss has not improved" in p.stdout, "early stopping ends the run, named",
        p.stdout[-2000:])
h.check("with bf16 autocast" in p.stdout, "run.precision bf16 runs on the CPU", p.stdout[-2000:])
ref = final_checkpoint(h, "pol")
ck = torch.load(ref, weights_only=True)
h.check(all(t.dtype == torch.float32 for k, t in ck["model_state_dict"].items() if t.is_floating_point()),
        "bf16 autocast keeps fp32 weights")
h.check(ck["epoch"] == 4 and ck["global_step"] == 40 and ck["early_stopping"]["stopped"]
        and ck["early_stopping"]["bad_epochs"] == 3, "stopped after epoch 4 with a checkpoint", ck.get("early_stopping"))
top = ck["checkpoint_policy"]
h.check(top["monitor"] == "eval_loss" and not top["higher_is_better"] and len(top["top_k_epochs"]) == 2
        and top["top_k_values"][0] <= top["top_k_values"][1], "checkpoint_policy: the 2 best epochs, best first", top)
names = sorted(os.path.basename(f) for f in glob.glob(h.path("pol", "checkpoints", "top", "*.pt")))
want = sorted(f"ckpt-e{e:04d}-n{0:010d}.pt" for e in top["top_k_epochs"])
h.check(names == want, f"top/ holds exactly the top-k epochs' copies ({names})", want)
link = h.path("pol", "checkpoints", "last.pt")
h.check(os.path.islink(link) and os.readlink(link) == os.path.basename(ref)
        and torch.load(link, weights_only=True)["global_step"] == 40, "last.pt links to the newest checkpoint",
        os.readlink(link) if os.path.islink(link) else "no link")
groups = ck["optimizer_state_dict"]["param_groups"]
buffers = ("running_mean", "running_var", "num_batches_tracked")
params = [k for k in ck["model_state_dict"] if not k.endswith(buffers)]
exempt = sorted(params[i] for i in groups[1]["params"]) if len(groups) == 2 else None
h.check(len(groups) == 2 and groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0
        and exempt == sorted(k for k in params if k.endswith("bias") or k.startswith("bn"))
        and sorted(groups[0]["params"] + groups[1]["params"]) == list(range(len(params))),
        f"optimizer.no_decay: a second param group, weight_decay 0, of the biases and BatchNorm weights ({exempt})",
        groups)
lrs = {r["global_step"]: r["lr"] for r in read_jsonl(h.path("pol", "metrics.jsonl")) if r["type"] == "step"}
h.check(math.isclose(lrs[1], 0.01) and math.isclose(lrs[5], 0.05) and math.isclose(lrs[6], 0.05)
        and lrs[7] < lrs[6] and math.isclose(lrs[6] - lrs[7], lrs[20] - lrs[21])
        and math.isclose(lrs[6] - lrs[7], (0.05 - 0.005) / 55),
        "warmup rises to optimizer.lr over 5 steps, then the linear decay starts there and falls by step to min_lr "
        "at step 60", [lrs[g] for g in (1, 5, 6, 7, 20, 21)])
p = train("pol", {}, extra=[*policy, "--resume", "auto"])
h.check("early stopping had already stopped this run" in p.stdout and final_checkpoint(h, "pol") == ref,
        "a stopped run resumed stays stopped", p.stdout[-1500:])

p = train("pcut", {"FORGE_FAULT_SIGNAL_STEP": "20"}, extra=policy, expect_rc=75)
ck = torch.load(final_checkpoint(h, "pcut"), weights_only=True)
h.check(ck["global_step"] == 32 and ck["step"] == 2 and len(ck["checkpoint_policy"]["top_k_epochs"]) == 2
        and ck["early_stopping"]["bad_epochs"] == 2, "preempted mid-epoch 4 with top-2 full and patience at 2 of 3",
        (ck["global_step"], ck["checkpoint_policy"], ck["early_stopping"]))
train("pcut", {}, extra=[*policy, "--resume", "auto"])
ok, diff = same_checkpoint(ref, final_checkpoint(h, "pcut"))
h.check(ok, "top-k + early stopping, SIGUSR1 and resume on 2 ranks: final checkpoints equal tensor for tensor "
        "(checkpoint_policy and early_stopping included)", diff)
h.check(sorted(os.path.basename(f) for f in glob.glob(h.path("pcut", "checkpoints", "top", "*.pt"))) == names,
        "the resumed run keeps and prunes the same top-k files")

p = train("pstep", {}, extra=[*policy, "--set", "run.max_steps=12"])
ck = torch.load(final_checkpoint(h, "pstep"), weights_only=True)
h.check(ck["global_step"] == 12 and "stopped: run.max_steps = 12 reached" in p.stdout,
        "run.max_steps 12: exit 0 with a checkpoint at step 12 (mid-epoch 2)", (ck["global_step"], p.stdout[-1000:]))
p = train("pstep", {"FORGE_FAULT_SLOW_RANK": "1", "FORGE_FAULT_SLOW_MS": "250"},
          extra=[*policy, "--set", "run.max_time=2", "--resume", "auto"], expect_rc=75)
ck = torch.load(final_checkpoint(h, "pstep"), weights_only=True)
h.check("run.max_time = 2 s is nearly spent" in p.stderr + p.stdout and 12 < ck["global_step"] < 40,
        f"run.max_time: saved and exit 75 at step {ck['global_step']}", (p.stdout + p.stderr)[-1500:])
train("pstep", {}, extra=[*policy, "--resume", "auto"])
ok, diff = same_checkpoint(ref, final_checkpoint(h, "pstep"))
h.check(ok, "stopped by run.max_steps, then by run.max_time, resumed: equal to the uninterrupted run", diff)

# 6. Bad values are named.
for key, value in [("optimizer.clip_grad_norm", "-1"), ("optimizer.max_skipped_steps", "-2"), ("ema.decay", "1.5"),
                   ("ema.every_steps", "0"), ("checkpoint.mode", "median"), ("checkpoint.save_top_k", "-1"),
                   ("checkpoint.monitor", "eval_nope"), ("run.max_steps", "-1"), ("run.max_time", "-5"),
                   ("early_stopping.patience", "-1"), ("early_stopping.min_delta", "-0.1"),
                   ("optimizer.no_decay", "[bias, gamma]"), ("loss_scale.mode", "static"),
                   ("loss_scale.init", "1000"), ("loss_scale.growth_interval", "0")]:
    p = h.run(["train", cfg, "--set", f"{key}={value}"], expect_rc=None)
    h.check(p.returncode != 0 and key in p.stderr, f"{key}={value} is refused, named", p.stderr[-500:])
p = h.run(["train", cfg, "--set", "run.precision=fp16", "--set", "run.device=cpu"], expect_rc=None)
h.check(p.returncode != 0 and "run.precision fp16" in p.stderr and "GPU-only" in p.stderr,
        "fp16 on the CPU is refused, named (bf16 is the CPU's low precision)", p.stderr[-500:])

h.finish()
