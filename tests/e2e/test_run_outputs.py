"""What a person watching or inspecting a run gets, end to end with the real forge binary:
progress output (plain lines in log files, a live bar on a terminal), the startup and
end-of-run summaries, metrics.jsonl / metrics.csv, TensorBoard event files read by the real
tensorboard package, forge.log, forge plot PNGs, and the eval / ckpt inspect tables."""
import csv
import json
import os
import pty
import re
import select
import struct
import subprocess

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness import Harness, epoch_records, read_jsonl, small_config

h = Harness()
EPOCH_FIELDS = ["type", "epoch", "step", "epoch_samples", "global_step", "wall_time", "train_loss", "train_accuracy",
                "eval_loss", "eval_accuracy", "lr", "samples_per_s", "data_wait_share", "comm_share", "seconds"]
STEP_FIELDS = [f for f in EPOCH_FIELDS if f not in ("eval_loss", "eval_accuracy")] + ["grad_norm", "skipped_steps"]
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but \n


def check_tensorboard(run_dir, what):
    """Every value of every record in metrics.jsonl is a TensorBoard scalar "<type>/<field>"
    at the record's global step, exactly once, with the value (as float32)."""
    ea = EventAccumulator(h.path(run_dir, "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    records = read_jsonl(h.path(run_dir, "metrics.jsonl"))
    expected, problems = {}, []
    for r in records:
        for k, v in r.items():
            if k in ("type", "epoch", "step", "epoch_samples", "global_step", "wall_time"):
                continue
            expected.setdefault(f"{r['type']}/{k}", {})[r["global_step"]] = v
    for tag, points in expected.items():
        if tag not in tags:
            problems.append(f"missing tag {tag}")
            continue
        got = {}
        for e in ea.Scalars(tag):
            if e.step in got:
                problems.append(f"{tag} has step {e.step} twice")
            got[e.step] = e.value
        if set(got) != set(points):
            problems.append(f"{tag}: steps {sorted(got)} != {sorted(points)}")
        problems += [f"{tag}@{s}: {got.get(s)} != {v}" for s, v in points.items()
                     if s in got and got[s] != np.float32(v)]
    n = sum(len(p) for p in expected.values())
    h.check(not problems and n > 0 and tags == set(expected),
            f"{what}: tensorboard reads all {n} scalars of metrics.jsonl with their steps and values", problems[:10])


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "3000", "--features", "16", "--classes", "4",
       "--seed", "3"])
log_every = ["--set", "log.every_steps=10", "--set", "log.every_s=0.001"]
cfg = small_config(h, "small.yaml", "syn.h5", "run", epochs=3)

# --- Two ranks under mpirun, output to a pipe (as in a Slurm log file).
p = h.run(["train", cfg, *log_every], ranks=2)
out = p.stdout
h.check(not CONTROL.search(p.stdout) and not CONTROL.search(p.stderr),
        "output to a file or pipe holds no control characters (no \\r, no escape sequences)",
        repr(CONTROL.findall(p.stdout + p.stderr)[:5]))
h.check(re.search(r"\[train\] epoch 1/3 step \d+/47 \(\d+%\)  loss [0-9.]+  [0-9,]+ samples/s  data wait [0-9.]+%  "
                  r"epoch ETA \d+:\d\d", out), "plain progress lines give step / total, loss, samples/s, data wait, ETA",
        out)
# The startup summary.
h.check(re.search(r"config \S*small.yaml with --set log.every_steps=10, log.every_s=0.001; run dir run \(fresh start\)",
                  out),
        "the startup summary names the config, its overrides, the run dir and a fresh start", out)
h.check(re.search(r"layer +module +parameters", out) and re.search(r"fc1 +Linear\(in_features=16, out_features=32, "
                                                                   r"bias=true\) +544", out)
        and re.search(r"bn1 +BatchNorm1d\(32, .*\) +64", out) and re.search(r"fc2 +Linear\(.*\) +132", out)
        and "model mlp: 740 trainable parameters" in out,
        "the model is listed layer by layer, as print(model) shows it, with parameter counts", out)
h.check(re.search(r"syn.h5:train: 3,000 samples, 1,500 per rank, 47 steps of 32 per rank \(global batch 64\)", out)
        and re.search(r"syn.h5:test: 600 samples, up to 300 per rank", out),
        "data set sizes per split and per rank", out)
h.check("2 rank(s) on 1 node(s), 2 per node, backend mpi" in out, "world size and backend", out)
# The end-of-run summary.
m = re.search(r"best eval_accuracy +([0-9.]+)% after epoch (\d)\n.*final test +([0-9.]+)% accuracy, loss [0-9.]+ "
              r"\(600 samples\)\n.*time +[0-9.]+s this session \(3 epoch\(s\) trained\)\n.*throughput +[0-9,]+ samples/s "
              r"on average, 2 rank\(s\)\n.*time shares +compute ([0-9.]+)%, communication ([0-9.]+)%, data wait "
              r"([0-9.]+)%, checkpoint ([0-9.]+)%, evaluation ([0-9.]+)%, setup and other ([0-9.]+)%", out)
h.check(m and abs(sum(float(x) for x in m.groups()[3:]) - 100) < 0.5,
        "the end-of-run summary: best metric and epoch, final metric, time, samples/s, time shares adding to 100%",
        out[-1500:])

# metrics.jsonl and its CSV twin.
records = read_jsonl(h.path("run", "metrics.jsonl"))
epochs = [r for r in records if r["type"] == "epoch"]
steps = [r for r in records if r["type"] == "step"]
h.check([r["epoch"] for r in epochs] == [1, 2, 3] and all(list(r) == EPOCH_FIELDS for r in epochs),
        "metrics.jsonl: one epoch record per epoch with every documented field", epochs)
h.check([r["global_step"] for r in steps] == list(range(10, 142, 10)) and all(list(r) == STEP_FIELDS for r in steps),
        "metrics.jsonl: a step record every log.every_steps steps", [r["global_step"] for r in steps])
h.check(all(0 <= r["data_wait_share"] <= 1 and 0 <= r["comm_share"] <= 1 and r["samples_per_s"] > 0 for r in records),
        "shares are fractions and rates positive")
with open(h.path("run", "metrics.csv")) as f:
    rows = list(csv.DictReader(f))
same = len(rows) == len(records) and all(
    all((row[k] == "" if k not in r else (row[k] == r[k] if k == "type" else float(row[k]) == float(r[k])))
        for k in EPOCH_FIELDS + ["grad_norm", "skipped_steps"]) for row, r in zip(rows, records))
h.check(same, "metrics.csv holds the same records, value for value", rows[:2])
check_tensorboard("run", "fresh run")

# forge.log, config.yaml, summary.json.
with open(h.path("run", "forge.log")) as f:
    logged = f.read()
h.check([l for l in logged.splitlines() if not l.startswith("[rank ")] == out.splitlines(),
        "forge.log holds what rank 0 printed, from the first line (its warnings too)", logged[:300])
with open(h.path("run", "summary.json")) as f:
    summary = json.load(f)
h.check(summary["best_epoch"] == int(m.group(2)) if m else False, "summary.json agrees with the printed summary", summary)
h.check(summary["epochs"] == 3 and summary["world_size"] == 2 and abs(sum(summary["seconds"].values())
                                                                      - summary["session_seconds"]) < 1e-6,
        "summary.json: epochs, world size, time split adding up", summary)

# --- Resume: sessions continue the files; a resume from an older checkpoint drops the
# abandoned records from the metrics and from TensorBoard.
p = h.run(["train", cfg, *log_every, "--set", "run.epochs=4", "--resume", "auto"], ranks=2)
h.check("(resumed from run/checkpoints/ckpt-e0003-n0000000000.pt at epoch 4 step 0, global step 141)" in p.stdout
        and "warning: the learning-rate schedule" not in p.stderr,
        "the startup summary says resumed, from where",
        p.stdout)
h.check([r["epoch"] for r in read_jsonl(h.path("run", "metrics.jsonl")) if r["type"] == "epoch"] == [1, 2, 3, 4],
        "a resumed run appends its epoch records")
with open(h.path("run", "forge.log")) as f:
    logged = f.read()
h.check("\n".join(l for l in logged.splitlines() if not l.startswith("[rank ")) == (out + p.stdout).rstrip("\n"),
        "forge.log: the second session follows the first")
check_tensorboard("run", "resumed run")
old = h.path("run", "checkpoints", "ckpt-e0002-n0000000000.pt")
p = h.run(["train", cfg, *log_every, "--set", "run.epochs=3", "--set", "optimizer.lr=0.02", "--resume", old], ranks=2)
h.check("warning: the learning-rate schedule differs from the checkpoint's (base_lr 0.05 -> 0.02)" in p.stderr,
        "a resume whose config changes the schedule says so", p.stderr)
records = read_jsonl(h.path("run", "metrics.jsonl"))
h.check([r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3]
        and [r["global_step"] for r in records if r["type"] == "step"] == list(range(10, 142, 10)),
        "resumed from an older checkpoint: the abandoned epochs' records are gone, the new ones follow")
check_tensorboard("run", "run resumed from an older checkpoint")
ea = EventAccumulator(h.path("run", "tb"), size_guidance={"scalars": 0}, purge_orphaned_data=False)
ea.Reload()
dup = [(t, s) for t in ea.Tags()["scalars"] for s in
       {e.step for e in ea.Scalars(t) if [x.step for x in ea.Scalars(t)].count(e.step) > 1}]
h.check(not dup and max(e.step for e in ea.Scalars("epoch/eval_accuracy")) == 141,
        "the event files themselves hold no point of the abandoned run (for loaders that ignore session starts)",
        dup[:5])

# --- A terminal: a live bar redrawn in place (one process, stdout a pseudo-terminal).
def on_terminal(args, env_extra):
    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS="120", **env_extra)
    env.pop("FORGE_TERMINAL", None) if "FORGE_TERMINAL" not in env_extra else None
    proc = subprocess.Popen([h.forge, *args], cwd=h.work, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


bar_cfg = small_config(h, "bar.yaml", "syn.h5", "bar", epochs=2)
rc, text = on_terminal(["train", bar_cfg, "--set", "data.batch_size=4", "--set", "log.every_steps=0"],
                       {"TERM": "xterm", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "LC_CTYPE": "C.UTF-8"})
h.check(rc == 0 and re.search(r"\repoch 1/2 \|[\u2588\u2589\u258a\u258b\u258c\u258d\u258e\u258f ]+\| \d+/750  loss "
                              r"[0-9.]+  [0-9,]+ samples/s  data [0-9.]+%  ETA \d+:\d\d\x1b\[K", text),
        "on a terminal: a bar with step / total, loss, samples/s, data wait and ETA, redrawn in place", text[-2000:])
h.check(re.search(r"\r\x1b\[K\[train\] epoch 1/2  train loss", text) and "\r\x1b[K[train] epoch 2/2  train loss" in text,
        "the bar is cleared before each epoch's summary line, which stays", text[-2000:])
with open(h.path("bar", "forge.log")) as f:
    h.check(not CONTROL.search(f.read()), "forge.log never holds the bar")
rc, text = on_terminal(["train", bar_cfg, "--set", "run.dir=bar2", "--set", "log.progress=lines",
                        "--set", "log.every_s=0.05", "--set", "data.batch_size=4"], {"TERM": "xterm"})
h.check(rc == 0 and not CONTROL.search(text.replace("\r\n", "\n")) and "step " in text,
        "log.progress: lines gives plain lines on a terminal too", text[-1000:])

# --- forge plot: one run, two runs.
p = h.run(["plot", "run"])
size = png_size(h.path("run", "curves.png"))
h.check(size == (1600, 1000) and os.path.getsize(h.path("run", "curves.png")) > 30000,
        f"forge plot RUN_DIR writes RUN_DIR/curves.png, a 1600x1000 PNG of "
        f"{os.path.getsize(h.path('run', 'curves.png')) if size else 0} bytes", p.stdout)
p = h.run(["plot", "run", "bar", "--out", "both/compare.png", "--size", "1200x800", "--title", "two runs"])
size = png_size(h.path("both", "compare.png"))
h.check(size == (1200, 800) and os.path.getsize(h.path("both", "compare.png")) > 30000,
        "forge plot with two run dirs writes one PNG of the requested size", p.stdout)
os.makedirs(h.path("starting"))
with open(h.path("starting", "metrics.csv"), "w") as f:
    f.write(",".join(EPOCH_FIELDS) + "\nstep,1,10,10,1.7e9,0.5,0.8,,,0.1,100,0,0,0.1\n")
p = h.run(["plot", "run", "starting", "--out", "with_starting.png"])
h.check(png_size(h.path("with_starting.png")) == (1600, 1000) and "left out of the picture" in p.stderr,
        "beside other runs, a run without a finished epoch is left out with a warning", p.stderr)
p = h.run(["plot", "starting"], expect_rc=2)
h.check("holds no epoch record yet" in p.stderr, "alone, it is an error that says why", p.stderr)
p = h.run(["plot", "nowhere"], expect_rc=2)
h.check("nowhere/metrics.csv" in p.stderr, "forge plot on a folder without metrics says so", p.stderr)

# --- forge eval and forge ckpt inspect: tables and JSON.
ck = h.path("run", "checkpoints", "ckpt-e0003-n0000000000.pt")
p = h.run(["eval", cfg, "--checkpoint", ck])
h.check(re.search(r"^samples +600$", p.stdout, re.M) and re.search(r"^accuracy +[0-9.]+%$", p.stdout, re.M)
        and re.search(r"^class +samples +correct +accuracy$", p.stdout, re.M)
        and len(re.findall(r"^ +[0-3] +\d+ +\d+ +[0-9.]+%$", p.stdout, re.M)) == 4,
        "forge eval prints an aligned table, overall and per class", p.stdout)
ev = json.loads(h.run(["eval", cfg, "--checkpoint", ck, "--json"]).stdout)
h.check(ev["samples"] == 600 and sum(c["samples"] for c in ev["classes"]) == 600
        and sum(c["correct"] for c in ev["classes"]) == round(ev["accuracy"] * 600),
        "forge eval --json: per-class counts add up to the totals", ev)
p = h.run(["ckpt", "inspect", ck])
h.check(re.search(r"^tensor +shape +dtype +bytes$", p.stdout, re.M)
        and re.search(r"^model_state_dict\.fc1\.weight +\[32, 16\] +Float +2,048$", p.stdout, re.M)
        and re.search(r"^lr schedule +.*name constant", p.stdout, re.M) and re.search(r"^sampler +.*seed 5", p.stdout, re.M),
        "forge ckpt inspect prints an aligned table with the schedule and sampler", p.stdout)
info = json.loads(h.run(["ckpt", "inspect", ck, "--json"]).stdout)
best = h.path("run", "checkpoints", "best.pt")
h.check(not os.path.exists(best) or json.loads(h.run(["ckpt", "inspect", best, "--json"]).stdout)["global_step"] <= 141,
        "best.pt of the abandoned epochs was moved aside with them")
h.check(info["epoch"] == 3 and info["world_size"] == 2 and info["sampler"]["seed"] == 5
        and {"name": "model_state_dict.fc1.weight", "shape": [32, 16], "dtype": "Float", "bytes": 2048} in info["tensors"]
        and "dir: run" in info["config"], "forge ckpt inspect --json, for scripts", info)

# A task without metrics (the loss alone): its records have no accuracy columns, best.pt
# follows the eval loss, and forge plot draws what there is.
h.run(["train", cfg, "--set", "run.dir=lossonly", "--set", "run.epochs=2", "--set", "task.metrics=[]"], ranks=2)
recs = epoch_records(h.path("lossonly", "metrics.jsonl"))
h.check(all("eval_loss" in r and not any("accuracy" in k for k in r) for r in recs), "a loss-only task records no accuracy",
        recs)
info = json.loads(h.run(["ckpt", "inspect", h.path("lossonly", "checkpoints", "best.pt"), "--json"]).stdout)
lowest = min(recs, key=lambda r: r["eval_loss"])
h.check(info["best_metric_name"] == "eval_loss" and info["best_metric"] == lowest["eval_loss"]
        and info["epoch"] == lowest["epoch"], "best.pt is the epoch of the lowest eval loss when the task has no metric",
        (info["best_metric"], info["epoch"], [(r["epoch"], r["eval_loss"]) for r in recs]))
p = h.run(["plot", "lossonly"])
h.check(png_size(h.path("lossonly", "curves.png")) == (1600, 1000), "forge plot draws a loss-only run", p.stdout)

h.finish()
