"""The forge CLI end to end on a small synthetic file: data, train (1 and 2 ranks),
metrics, checkpoints, eval, ckpt inspect, --resume auto."""
import glob
import json
import os
import re

import h5py

from harness import Harness, epoch_records, final_accuracy, small_config

h = Harness()

# --help everywhere.
out = h.run(["--help"]).stdout
h.check(all(c in out for c in ["data fashion-mnist", "data synthetic", "train CONFIG.yaml", "eval CONFIG.yaml",
                               "ckpt inspect"]), "forge --help lists every command", out)
out = h.run(["train", "--help"]).stdout
h.check("--set key=value" in out and "--resume auto" in out, "forge train --help describes --set and --resume", out)
h.check("--checkpoint PATH" in h.run(["eval", "--help"]).stdout, "forge eval --help describes --checkpoint")
h.check("--samples N" in h.run(["data", "--help"]).stdout, "forge data --help describes the converters")
h.check("--json" in h.run(["ckpt", "inspect", "--help"]).stdout, "forge ckpt inspect --help describes --json")

# Synthetic data in the documented layout.
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "2000", "--features", "16", "--classes", "4",
       "--seed", "1"])
with h5py.File(h.path("syn.h5")) as f:
    h.check(f["train/features"].shape == (2000, 16) and f["train/features"].dtype == "float32",
            "train/features is 2000 x 16 float32")
    h.check(f["train/labels"].shape == (2000,) and f["train/labels"].dtype == "int64", "train/labels is int64")
    h.check(f["test/features"].shape == (400, 16), "the test split holds samples / 5")
h.check(not glob.glob(h.path("*.tmp.*")), "no temporary file is left behind")

# Two ranks under mpirun.
cfg = small_config(h, "small.yaml", "syn.h5", "run")
p = h.run(["train", cfg], ranks=2)
out = p.stdout
h.check("epoch 1/2" in out and "epoch 2/2" in out, "one line per epoch", out)
h.check("2 rank(s) on 1 node(s)" in out, "the startup line reports the world", out)
h.check("replicas identical on all 2 ranks" in out, "replicas are checked identical at the end", out)
acc = final_accuracy(out)
h.check(acc is not None and acc > 60.0, f"the synthetic set is learned (final accuracy {acc}%)", out)
h.check(out.count("epoch 2/2  train loss") == 1, "progress comes from rank 0 only", out)

records = epoch_records(h.path("run", "metrics.jsonl"))
h.check([r["epoch"] for r in records] == [1, 2], "metrics.jsonl holds one record per epoch", records)
fields = {"train_loss", "train_accuracy", "eval_loss", "eval_accuracy", "lr", "samples_per_s", "global_step"}
h.check(all(fields <= set(r) for r in records), "each record has the documented fields", records)
h.check(abs(records[-1]["eval_accuracy"] * 100 - acc) < 0.01, "the last record's accuracy is the final accuracy")
ckpts = sorted(glob.glob(h.path("run", "checkpoints", "ckpt-*.pt")))
h.check([os.path.basename(c) for c in ckpts] == ["ckpt-e0001-n0000000000.pt", "ckpt-e0002-n0000000000.pt"],
        "a checkpoint per epoch, named by its progress (epochs complete, samples into the next)", ckpts)
h.check(os.path.exists(h.path("run", "checkpoints", "best.pt")), "best.pt is written")
h.check(os.path.exists(h.path("run", "config.yaml")), "the resolved config is saved in the run dir")

# eval reproduces the final accuracy, alone and on 2 ranks.
last = ckpts[-1]
for ranks in (0, 2):
    ev = h.run(["eval", cfg, "--checkpoint", last], ranks=ranks).stdout
    m = re.search(r"accuracy\s+([0-9.]+)%", ev)
    h.check(m is not None and abs(float(m.group(1)) - acc) < 0.005,
            f"forge eval ({ranks or 1} rank(s)) reports the training run's final accuracy {acc}%", ev)
    h.check(re.search(r"samples\s+400", ev) is not None, "eval counts every test sample once", ev)

# ckpt inspect, as a table and as JSON.
ins = h.run(["ckpt", "inspect", last]).stdout
h.check(re.search(r"epoch\s+2 complete\n", ins) and re.search(r"world size\s+2 ", ins), "inspect shows epoch and world size", ins)
h.check(re.search(r"model_state_dict\.fc1\.weight\s+\[32, 16\]\s+Float", ins) is not None,
        "inspect lists tensor names, shapes and types", ins)
h.check(re.search(r"best metric\s+eval_accuracy = 0\.\d+", ins) is not None, "inspect shows the best metric", ins)
js = json.loads(h.run(["ckpt", "inspect", last, "--json"]).stdout)
h.check(js["epoch"] == 2 and js["world_size"] == 2 and any(t["name"] == "model_state_dict.bn1.running_mean"
                                                             for t in js["tensors"]), "inspect --json parses", js)

# --resume auto continues at the next epoch.
p = h.run(["train", cfg, "--set", "run.epochs=3", "--resume", "auto"], ranks=2)
out = p.stdout
h.check(re.search(r"resumed from \S*ckpt-e0002-n0000000000\.pt at epoch 3 step 0 \(global step 64\): epoch 2 is "
                  r"complete", out) is not None,
        "--resume auto picks the newest checkpoint", out)
h.check("epoch 3/3" in out and "epoch 1/3" not in out and "epoch 2/3" not in out,
        "training continues at epoch 3 only", out)
h.check([r["epoch"] for r in epoch_records(h.path("run", "metrics.jsonl"))] == [1, 2, 3], "metrics continue")

# A fresh start never mixes with an earlier run's checkpoints.
p = h.run(["train", cfg], ranks=2, expect_rc=None)
h.check(p.returncode == 2 and "already holds checkpoints of an earlier run" in p.stderr and "--resume auto" in p.stderr,
        "a fresh start into a run dir with checkpoints is refused, pointing at --resume auto", p.stderr)

# Resuming from an older checkpoint moves the newer ones aside and trims the metrics.
older = h.path("run", "checkpoints", "ckpt-e0001-n0000000000.pt")
p = h.run(["train", cfg, "--set", "run.epochs=2", "--resume", older], ranks=2)
aside = h.path("run", "checkpoints", "abandoned-after-ckpt-e0001-n0000000000")
moved = sorted(os.listdir(aside)) if os.path.isdir(aside) else []
h.check(moved in (["ckpt-e0002-n0000000000.pt", "ckpt-e0003-n0000000000.pt"],
                  ["best.pt", "ckpt-e0002-n0000000000.pt", "ckpt-e0003-n0000000000.pt"]),
        "checkpoints newer than the resumed one (best.pt too, when it is one of them) are moved aside, not deleted",
        os.listdir(h.path("run", "checkpoints")))
h.check([r["epoch"] for r in epoch_records(h.path("run", "metrics.jsonl"))] == [1, 2],
        "metrics.jsonl holds no record of the abandoned epochs")

# Resuming at an epoch boundary continues exactly: the same final weights as one run.
fp = re.compile(r"fingerprint ([0-9a-f]{16})")
whole = h.run(["train", cfg, "--set", "run.dir=whole", "--set", "run.epochs=3"], ranks=2).stdout
h.run(["train", cfg, "--set", "run.dir=split", "--set", "run.epochs=2"], ranks=2)
split = h.run(["train", cfg, "--set", "run.dir=split", "--set", "run.epochs=3", "--resume", "auto"], ranks=2).stdout
h.check(fp.search(whole) and fp.search(split) and fp.search(whole).group(1) == fp.search(split).group(1),
        "2 epochs + resume for the 3rd give bit-identical weights to 3 epochs in one go",
        (fp.search(whole), fp.search(split)))

# Resuming on another number of ranks keeps the schedule on course.
cos = ["--set", "schedule.name=cosine", "--set", "run.dir=resize"]
h.run(["train", cfg, *cos, "--set", "run.epochs=1"], ranks=2)
p = h.run(["train", cfg, *cos, "--set", "run.epochs=2", "--resume", "auto"])
out = p.stdout + p.stderr
last = epoch_records(h.path("resize", "metrics.jsonl"))[-1]
h.check("written by 2 ranks, resuming on 1" in out and last["epoch"] == 2 and last["lr"] < 0.001,
        f"a 2-rank checkpoint resumed on 1 rank ends the cosine schedule near 0 (lr {last['lr']})", out)

# --resume auto with nothing to resume starts fresh; one rank without mpirun works.
p = h.run(["train", cfg, "--set", "run.dir=solo", "--set", "run.epochs=1", "--resume", "auto"])
h.check("starting fresh" in p.stdout and "epoch 1/1" in p.stdout, "a single process without mpirun trains", p.stdout)
h.check("1 rank(s) on 1 node(s)" in p.stdout, "and reports a world of one", p.stdout)

h.finish()
