"""forge against PyTorch DistributedDataParallel (gloo) on the tasks beyond the MLP, side by
side in one invocation: the same model, data, per-rank batch, optimizer and threads, on 2
ranks x 1 thread each (mpirun --bind-to core --map-by slot:PE=1):

  resnet  forge's `resnet` depth 8, width 16 on Fashion-MNIST (data/fashion_mnist.h5, pixels
          normalized (x / 255 - 0.2860) / 0.3530), batch 128 per rank, SGD lr 0.05, Nesterov
          momentum 0.9, weight decay 1e-4.
  gpt     forge's `gpt` (2 layers, 4 heads, dim 128, context 128, dropout 0.1) on the bytes
          of Debian's fortunes (data/fortunes.h5 from `forge data text --context 128
          /usr/share/games/fortunes`; rows of 129 bytes: input row[:-1], target row[1:]),
          batch 32 per rank, AdamW lr 3e-4, weight decay 0.01.

Python runs the twins of tests/e2e/model_twins.py (the same layers, forge's initialization)
under DDP with its defaults (25 MiB buckets, buffers broadcast from rank 0), its samples in
memory (as bench/python_ddp.py does), the loss alone per step. forge runs `forge train` as a
user would, with run.max_steps, its train metrics and everything else it does in a step, and
its defaults: run.keep_freed_memory (glibc keeps freed memory in the process) and
distributed.wait: sleep (a rank waiting for a collective sleeps instead of spinning).
`--set run.keep_freed_memory=false --set distributed.wait=spin` measures forge without
them; `--env GLIBC_TUNABLES=glibc.malloc.trim_threshold=2147483647:glibc.malloc.mmap_threshold=33554432`
gives Python's ranks the same allocator setting.

Throughput is each side's own timing of the steady-state training loop: the steps after
the first WARMUP, on rank 0.
  forge   its step records in RUN_DIR/metrics.jsonl, one a step (log.every_steps: 1): each
          has rank 0's samples x world size and the seconds since the previous record. The
          first WARMUP are left out; the rate is the sum of samples over the sum of seconds.
  Python  both ranks meet at a barrier after WARMUP steps, rank 0 times the next STEPS steps
          to a barrier after them: STEPS x batch x world size / seconds; and each step.
Both exclude start-up, data loading before the loop, the first steps and the checkpoint
forge writes at run.max_steps. Two cross-checks are printed beside the mean rate:
  median step   each side's median step time (robust to another process taking a core a while);
  CPU per step  rank 0's CPU time (user + system, all its threads) over the timed steps,
                and its minor page faults (memory the allocator gave back and takes
                again): Python's time.process_time() and getrusage(); forge's from
                /proc/PID/stat, read as the step records appear (polled every 50 ms, so
                +-1 step at each end, divided by the steps actually between the two
                readings). On a machine that other work shares, this is the work each side
                does for a step, which wall time is not.
Pairs run alternately (forge, Python, forge, Python, ...; --rounds) so that a machine's
load changes hit both; each round's ratios are printed, and the medians of the rounds.

    source scripts/env.sh && $FORGE_PYTHON bench/tasks_vs_python_ddp.py [--only resnet|gpt]
        [--steps N] [--warmup W] [--rounds R] [--set KEY=VALUE ...] [--env NAME=VALUE ...]

--set overrides forge's config (e.g. distributed.overlap=false) and --env sets a variable
in both sides' ranks (e.g. OMPI_MCA_mpi_yield_when_idle=1, which only Open MPI reads), to
see what a setting changes against the same baseline.

Needs a build (scripts/build.sh) and data/fashion_mnist.h5 (scripts/main-job.sh makes it);
data/fortunes.h5 is made here when missing (apt-get install fortunes for the text).
"""
import argparse
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = os.path.join(ROOT, "data", "fashion_mnist.h5")
FORTUNES = os.path.join(ROOT, "data", "fortunes.h5")
FORTUNES_TEXT = "/usr/share/games/fortunes"
RANKS = 2
BIND = ["--bind-to", "core", "--map-by", "slot:PE=1"]

# The model, data and optimizer of each task: forge's config (YAML) and Python's settings.
TASKS = {
    "resnet": {
        "data": FASHION, "batch": 128, "steps": 60, "tokens": 0,
        "yaml": """\
task:
  name: classification
model:
  name: resnet
  input_shape: [1, 28, 28]
  depth: 8
  width: 16
  num_classes: 10
data:
  path: {data}
  batch_size: {batch}
  normalize:
    scale: 0.00392156862745098
    mean: 0.2860
    std: 0.3530
optimizer:
  name: sgd
  lr: 0.05
  momentum: 0.9
  nesterov: true
  weight_decay: 0.0001
""",
    },
    "gpt": {
        "data": FORTUNES, "batch": 32, "steps": 60, "tokens": 128,
        "yaml": """\
task:
  name: language_model
model:
  name: gpt
  vocab_size: 256
  context: 128
  layers: 2
  heads: 4
  dim: 128
  dropout: 0.1
data:
  path: {data}
  batch_size: {batch}
optimizer:
  name: adamw
  lr: 0.0003
  weight_decay: 0.01
""",
    },
}

COMMON_YAML = """\
run:
  dir: {run_dir}
  seed: 42
  epochs: 1
  threads: 1
  device: cpu
  max_steps: {max_steps}
schedule:
  name: constant
log:
  progress: lines
  every_steps: 1
"""


def forge_env():
    """As tests/e2e/harness.py: forge's own libraries back on the path where they are not the system's."""
    env = dict(os.environ)
    deps = env.get("FORGE_DEPS_LIBRARY_PATH")
    if deps:
        env["LD_LIBRARY_PATH"] = deps + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def forge_binary():
    return os.path.join(os.environ.get("FORGE_BUILD", os.path.join(ROOT, "build")), "forge")


def ensure_data(task):
    path = TASKS[task]["data"]
    if os.path.exists(path):
        return
    if task == "resnet":
        cmd = [forge_binary(), "data", "fashion-mnist", "--out", path]
    else:
        if not os.path.isdir(FORTUNES_TEXT):
            sys.exit(f"{FORTUNES_TEXT} is missing: apt-get install -y fortunes")
        cmd = [forge_binary(), "data", "text", "--out", path, "--context", "128", FORTUNES_TEXT]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=forge_env())


def cpu_and_faults(pid):
    """CPU seconds (user + system, all threads) and minor page faults of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def rank0_pid(launcher):
    """The pid of rank 0 among the children of an mpirun."""
    for _ in range(600):
        children = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout.split()
        for pid in children:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if b"OMPI_COMM_WORLD_RANK=0\0" in f.read():
                        return int(pid)
            except OSError:
                pass
        time.sleep(0.05)
    return None


def run_forge(task, steps, warmup, work, sets=(), env=None):
    """forge's steady-state samples/s, median step, data-wait and communication shares from
    the step records of one `forge train` run of warmup + steps steps; and rank 0's CPU
    seconds per step over the same steps (read from /proc as the records appear)."""
    t = TASKS[task]
    run_dir = os.path.join(work, f"forge_{task}_{time.monotonic_ns()}")
    cfg = os.path.join(work, f"{task}.yaml")
    with open(cfg, "w") as f:
        f.write(COMMON_YAML.format(run_dir=run_dir, max_steps=warmup + steps))
        f.write(t["yaml"].format(data=t["data"], batch=t["batch"]))
    cmd = ["mpirun", "-np", str(RANKS), *BIND, forge_binary(), "train", cfg, *(x for kv in sets for x in ("--set", kv))]
    metrics = os.path.join(run_dir, "metrics.jsonl")
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env={**forge_env(), **(env or {})})
        pid, marks = rank0_pid(p.pid), {}
        while p.poll() is None and len(marks) < 2:
            try:
                with open(metrics) as f:
                    done = sum(1 for line in f if '"type":"step"' in line.replace(" ", ""))
                for name, at in (("first", warmup), ("last", warmup + steps)):
                    if done >= at and name not in marks:
                        marks[name] = (*cpu_and_faults(pid), done)
            except OSError:  # no records yet, or rank 0 gone
                pass
            time.sleep(0.05)
        if p.wait() != 0:
            log.seek(0)
            sys.exit(f"forge failed (exit {p.returncode}): {' '.join(cmd)}\n{log.read()[-6000:]}")
    with open(metrics) as f:
        records = [r for r in map(json.loads, f) if r.get("type") == "step"]
    steady = records[warmup:]
    if len(records) != warmup + steps:
        sys.exit(f"forge wrote {len(records)} step records in {run_dir}, expected {warmup + steps}")
    seconds = sum(r["seconds"] for r in steady)
    samples = sum(r["samples_per_s"] * r["seconds"] for r in steady)
    cpu = faults = None
    if len(marks) == 2 and marks["last"][2] > marks["first"][2]:
        n = marks["last"][2] - marks["first"][2]
        cpu, faults = (marks["last"][0] - marks["first"][0]) / n, (marks["last"][1] - marks["first"][1]) / n
    return {"samples_per_s": samples / seconds, "step_s": seconds / steps,
            "median_step_s": statistics.median(r["seconds"] for r in steady), "cpu_step_s": cpu, "faults": faults,
            "data_wait_share": sum(r["data_wait_share"] * r["seconds"] for r in steady) / seconds,
            "comm_share": sum(r["comm_share"] * r["seconds"] for r in steady) / seconds}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(task, steps, warmup, env=None):
    cmd = ["mpirun", "-np", str(RANKS), *BIND, "-x", f"MASTER_PORT={free_port()}", "-x", "MASTER_ADDR=127.0.0.1",
           sys.executable, os.path.abspath(__file__), "--worker", task, "--steps", str(steps), "--warmup",
           str(warmup)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        sys.exit(f"Python DDP failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---- the Python side, one process per rank under mpirun ----

def forge_init_resnet(model):
    """forge's initialization of `resnet` (trainer/models/resnet.cpp)."""
    import torch.nn as nn
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def forge_init_gpt(model, layers):
    """forge's initialization of `gpt` (trainer/models/gpt.cpp): GPT-2's."""
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 2:
                p.normal_(0.0, 0.02 / math.sqrt(2 * layers) if "proj.weight" in name else 0.02)


def worker(task, steps, warmup):
    import h5py
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    from model_twins import GPT, ResNet

    os.environ.setdefault("RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    os.environ.setdefault("WORLD_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(42)
    t = TASKS[task]
    batch = t["batch"]
    with h5py.File(t["data"]) as f:
        raw = torch.from_numpy(f["train/features"][:])
        labels = torch.from_numpy(f["train/labels"][:]) if task == "resnet" else None
    if task == "resnet":
        x = raw.float().div_(255).sub_(0.2860).div_(0.3530)
        model = ResNet((1, 28, 28), depth=8, width=16, num_classes=10)
        forge_init_resnet(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)

        def loss_of(idx):
            return F.cross_entropy(ddp(x[idx]), labels[idx])
    else:
        model = GPT(vocab_size=256, context=128, layers=2, heads=4, dim=128, dropout=0.1)
        forge_init_gpt(model, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)

        def loss_of(idx):
            rows = raw[idx].long()
            logits = ddp(rows[:, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
    ddp = DDP(model)
    ddp.train()
    n = raw.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))[rank::world]
    per_rank = len(order) // batch
    step_times = []
    for step in range(warmup + steps):
        if step == warmup:
            dist.barrier()
            start, cpu_start = time.perf_counter(), time.process_time()
            faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        first = (step % per_rank) * batch
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_of(order[first:first + batch])
        loss.backward()
        opt.step()
        if step >= warmup:
            step_times.append(time.perf_counter() - t0)
    dist.barrier()
    seconds, cpu_used = time.perf_counter() - start, time.process_time() - cpu_start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start
    if rank == 0:
        print(json.dumps({"samples_per_s": steps * batch * world / seconds, "step_s": seconds / steps,
                          "median_step_s": statistics.median(step_times), "cpu_step_s": cpu_used / steps,
                          "faults": faults / steps,
                          "loss": loss.item()}))
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=sorted(TASKS))
    p.add_argument("--steps", type=int, help="timed steps after the warm-up; default: each task's")
    p.add_argument("--warmup", type=int, default=5, help="steps left out at the start")
    p.add_argument("--rounds", type=int, default=3, help="forge / Python pairs per task, alternately")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a forge config override for every forge run (repeatable), to measure what a setting costs")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for both sides' ranks (repeatable), e.g. GLIBC_TUNABLES=...")
    p.add_argument("--worker", choices=sorted(TASKS), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker, a.steps, a.warmup)
    tasks = [a.only] if a.only else list(TASKS)
    env = dict(kv.split("=", 1) for kv in a.env)
    if a.set or env:
        print(f"forge runs with {' '.join('--set ' + kv for kv in a.set) or 'no overrides'}; environment of both "
              f"sides: {' '.join(a.env) or 'as is'}")
    summary = []
    with tempfile.TemporaryDirectory(prefix="forge_tasks_bench_") as work:
        for task in tasks:
            ensure_data(task)
            t = TASKS[task]
            steps = a.steps or t["steps"]
            print(f"== {task}: {RANKS} ranks x 1 thread, batch {t['batch']} per rank, {a.warmup} warm-up + {steps} "
                  f"timed steps, {a.rounds} round(s)", flush=True)
            ratios, median_ratios, cpu_ratios = [], [], []
            for r in range(a.rounds):
                f = run_forge(task, steps, a.warmup, work, a.set, env)
                py = run_python(task, steps, a.warmup, env)
                ratios.append(f["samples_per_s"] / py["samples_per_s"])
                median_ratios.append(py["median_step_s"] / f["median_step_s"])
                cpu = "n/a"
                if f["cpu_step_s"]:
                    cpu_ratios.append(py["cpu_step_s"] / f["cpu_step_s"])
                    cpu = (f"{f['cpu_step_s'] * 1e3:.1f} ms / {py['cpu_step_s'] * 1e3:.1f} ms: "
                           f"{cpu_ratios[-1]:.3f}x, minor page faults per step {f['faults']:,.0f} / "
                           f"{py['faults']:,.0f}")
                tok = (f" = {f['samples_per_s'] * t['tokens']:,.0f} / {py['samples_per_s'] * t['tokens']:,.0f} "
                       "tokens/s" if t["tokens"] else "")
                print(f"round {r + 1}: samples/s forge {f['samples_per_s']:.1f} / Python DDP {py['samples_per_s']:.1f}"
                      f"{tok}: forge/Python {ratios[-1]:.3f}x; median step forge {f['median_step_s'] * 1e3:.1f} ms / "
                      f"Python {py['median_step_s'] * 1e3:.1f} ms: {median_ratios[-1]:.3f}x; rank 0's CPU per step "
                      f"forge / Python {cpu}; forge's data wait "
                      f"{100 * f['data_wait_share']:.2f}%, communication wait {100 * f['comm_share']:.2f}%",
                      flush=True)
            cpu = f", {statistics.median(cpu_ratios):.3f}x by CPU per step" if cpu_ratios else ""
            summary.append(f"forge / Python DDP ({task}): {statistics.median(ratios):.3f}x samples/s, "
                           f"{statistics.median(median_ratios):.3f}x by median step{cpu} (medians of {a.rounds} "
                           "rounds; target >= 1.0x)")
    print(f"\n== summary ({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores)")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
