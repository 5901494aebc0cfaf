"""What a step costs a rank beyond its kernels, with the real binary on real files:
  1. run.keep_freed_memory (the default) keeps a ResNet's freed activations in the process:
     its steps fault in at least 5x fewer pages than with glibc's defaults
     (run.keep_freed_memory: false), as summary.json records per rank (measured: about 20x,
     90 against 1,900 minor page faults a step);
  2. the summary reports them per rank on 2 ranks, beside the time per step;
  3. a session stopped by run.max_steps within its first epoch writes its summary.json too,
     with its throughput;
  4. distributed.wait: with a peer 40 ms late every step (FORGE_FAULT_SLOW_RANK), the rank
     that waits spends at least 1.5x less CPU a step sleeping than spinning (measured: 20 ms
     against 56 ms a step, as summary.json's cpu_seconds_per_step records), and both ways
     train the same model (the same fingerprint); ranks given different values stop with
     exit 2 naming the difference, in forge train and forge eval; a value other than sleep
     or spin is a config error that names both."""
import json
import os
import subprocess

from harness import Harness, final_checkpoint

h = Harness()
h.run(["data", "synthetic", "--out", "img.h5", "--samples", "2400", "--features", "784", "--classes", "4",
       "--seed", "1"])
cfg = h.write("res.yaml", """\
    run: {dir: res, seed: 3, epochs: 1, threads: 1}
    model: {name: resnet, input_shape: [1, 28, 28], depth: 8, width: 8, num_classes: 4}
    data: {path: img.h5, batch_size: 32, eval_batch_size: 200}
    optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
    """)


def faults(run_dir, rank=0):
    with open(h.path(run_dir, "summary.json")) as f:
        ranks = json.load(f)["ranks"]
    return ranks[rank]["minor_page_faults_per_step"], ranks


# 1. With and without, alternately (each twice: the smaller of each pair counts).
seen = {"true": [], "false": []}
for keep in ("false", "true", "false", "true"):
    h.run(["train", cfg, "--set", f"run.dir=res_{keep}_{len(seen[keep])}", "--set", f"run.keep_freed_memory={keep}"])
    seen[keep].append(faults(f"res_{keep}_{len(seen[keep])}")[0])
kept, default = min(seen["true"]), min(seen["false"])
h.check(kept * 5 <= default, f"minor page faults a step: {kept:.0f} with run.keep_freed_memory, {default:.0f} "
        "without (at least 5x fewer)", seen)

# 2. Per rank on 2 ranks, in the log too.
p = h.run(["train", cfg, "--set", "run.dir=res2"], ranks=2)
f0, ranks = faults("res2")
h.check(len(ranks) == 2 and all(r["minor_page_faults_per_step"] * 5 <= default for r in ranks),
        "summary.json: each of 2 ranks' page faults a step", ranks)
h.check("page faults" in p.stdout + p.stderr, "the summary's rank lines name the page faults",
        (p.stdout + p.stderr)[-1500:])

# 3. A max_steps session within the first epoch.
h.run(["train", cfg, "--set", "run.dir=short", "--set", "run.max_steps=10"])
_, ranks = faults("short")
with open(h.path("short", "summary.json")) as f:
    short = json.load(f)
h.check(ranks[0]["steps"] == 10 and short["samples_per_s"] > 0 and short["global_step"] == 10,
        "a run stopped by run.max_steps mid-epoch writes summary.json (10 steps, its samples/s)", short)

# 4. Waiting for a late peer: sleeping against spinning.
late = {"FORGE_FAULT_SLOW_RANK": "1", "FORGE_FAULT_SLOW_MS": "40"}
os.environ.update(late)
cpu, prints = {}, {}
for wait in ("spin", "sleep"):
    h.run(["train", cfg, "--set", f"run.dir=wait_{wait}", "--set", f"distributed.wait={wait}",
           "--set", "run.max_steps=40"], ranks=2, mpirun_args=[x for k in late for x in ("-x", k)])
    with open(h.path(f"wait_{wait}", "summary.json")) as f:
        summary = json.load(f)
    cpu[wait], prints[wait] = summary["ranks"][0]["cpu_seconds_per_step"], summary["fingerprint"]
for k in late:
    del os.environ[k]
h.check(cpu["sleep"] * 1.5 <= cpu["spin"], f"rank 0, waiting 40 ms a step for rank 1, uses {1e3 * cpu['sleep']:.1f} ms "
        f"of CPU a step sleeping, {1e3 * cpu['spin']:.1f} ms spinning", cpu)
h.check(prints["sleep"] == prints["spin"], "sleeping and spinning train the same model", prints)
# Ranks that would wait differently are stopped before their collectives could mismatch,
# in forge eval as in forge train.
ck = final_checkpoint(h, "wait_sleep")
for command in (["train", cfg, "--set", "run.dir=mixed"], ["eval", cfg, "--checkpoint", ck]):
    mixed = [h.mpirun, "--oversubscribe", "-np", "1", h.forge, *command, "--set", "distributed.wait=spin", ":",
             "-np", "1", h.forge, *command, "--set", "distributed.wait=sleep"]
    p = subprocess.run(mixed, cwd=h.work, capture_output=True, text=True, timeout=120, env=h.env())
    out = p.stdout + p.stderr
    h.check(p.returncode == 2 and "disagree" in out and "wait: spin" in out,
            f"forge {command[0]}: ranks with distributed.wait spin and sleep stop with exit 2, naming it", out[-1500:])
p = h.run(["train", cfg, "--set", "distributed.wait=nap"], expect_rc=2)
h.check("distributed.wait" in p.stderr and "sleep" in p.stderr and "spin" in p.stderr,
        "distributed.wait: nap is refused, naming sleep and spin", p.stderr)
h.finish()
