"""Bad input gets a clear error from every rank, a non-zero exit and no stack dump."""
from harness import Harness, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "300", "--features", "16", "--classes", "4"])
good = small_config(h, "good.yaml", "syn.h5", "run", epochs=1)


def expect_error(args, needle, ranks=2, rc=2, what=""):
    p = h.run(args, ranks=ranks, expect_rc=None)
    err = p.stderr
    h.check(p.returncode == rc, f"{what}: exit code {rc} (got {p.returncode})", err)
    for r in range(ranks):
        h.check(f"[rank {r}] " in err and needle in err, f"{what}: rank {r} says \"{needle}\"", err)
    if ranks == 0:  # a lone process, before any MPI: no rank to name
        h.check(needle in err and "[rank" not in err, f"{what}: says \"{needle}\" without a rank prefix", err)
    h.check("frame #" not in err and "terminate called" not in err and "Traceback" not in err,
            f"{what}: no stack dump", err)
    h.check("MPI_ABORT" not in err, f"{what}: a clean stop, not an abort", err)


typo = h.write("typo.yaml", open(good).read().replace("optimizer:", "optimiser:"))
line = open(typo).read().splitlines().index("optimiser:") + 1
expect_error(["train", "typo.yaml"], f"config error in typo.yaml:{line}: unknown key 'optimiser' (did you mean 'optimizer'?)",
             what="a misspelt section")
expect_error(["train", good, "--set", "run.epochs=ten"],
             "config error in --set run.epochs: run.epochs must be an integer, got 'ten'", what="a wrong type")
expect_error(["train", good, "--set", "optimizer.lr=-1"], "optimizer.lr must be positive", what="an out-of-range value")
expect_error(["train", good, "--set", "data.path=missing.h5"], "cannot open data file 'missing.h5'",
             what="a missing data file")
expect_error(["train", "nowhere.yaml"], "cannot read config file 'nowhere.yaml'", what="a missing config file")
expect_error(["train", good, "--set", "model.in_features=784"],
             "data syn.h5:train: samples have shape [16] (16 features) but the model takes 784 (model.in_features)",
             what="a model that does not fit the data")
expect_error(["train", good, "--set", "model.num_classes=3"], "label 3 at index",
             what="labels beyond the model's classes")
expect_error(["train", good, "--set", "data.batch_size=149"], "which BatchNorm cannot train on",
             what="a last batch of one sample with BatchNorm")
expect_error(["train", good, "--set", "run.dir=syn.h5/run"], "cannot create run dir 'syn.h5/run'", ranks=2,
             what="a run dir that cannot be created")
expect_error(["train", good, "--epochs", "3"], "unknown option --epochs", ranks=0, what="an unknown option")


# Data problems found when the files are opened: named on every rank, exit 2.
import h5py
import numpy as np

with h5py.File(h.path("u64.h5"), "w") as f:
    f["train/features"] = np.zeros((40, 16), np.uint64)
    f["train/labels"] = np.zeros(40, np.int64)
    f["test/features"] = np.zeros((10, 16), np.uint64)
    f["test/labels"] = np.zeros(10, np.int64)
expect_error(["train", good, "--set", "data.path=u64.h5"],
             "data file 'u64.h5', dataset 'train/features': unsupported feature type uint64", what="an unsupported dtype")
# Integer features other than uint8 are token ids: a model that takes values is told so.
with h5py.File(h.path("i16.h5"), "w") as f:
    f["train/features"] = np.zeros((40, 16), np.int16)
    f["train/labels"] = np.zeros(40, np.int64)
    f["test/features"] = np.zeros((10, 16), np.int16)
    f["test/labels"] = np.zeros(10, np.int64)
expect_error(["train", good, "--set", "data.path=i16.h5"],
             "int16 token ids (integer features other than uint8 are ids, carried as int64 and never normalized), "
             "but model mlp takes values", what="token ids to a model of values")
with h5py.File(h.path("wide.h5"), "w") as f:
    f["train/features"] = np.zeros((40, 20), np.float32)
    f["train/labels"] = np.zeros(40, np.int64)
expect_error(["train", good, "--set", "data.path=[syn.h5, wide.h5]"],
             "data file 'wide.h5', dataset 'train/features': samples are Float [20] but 'syn.h5' holds Float [16]",
             what="files of one split with different shapes")
with h5py.File(h.path("nolabels.h5"), "w") as f:
    f["train/features"] = np.zeros((40, 16), np.float32)
expect_error(["train", good, "--set", "data.path=nolabels.h5"], "data file 'nolabels.h5' has no dataset 'train/labels'",
             what="a missing dataset")
with h5py.File(h.path("empty.h5"), "w") as f:
    f["train/features"] = np.zeros((0, 16), np.float32)
    f["train/labels"] = np.zeros(0, np.int64)
expect_error(["train", good, "--set", "data.path=empty.h5"], "data file 'empty.h5': split 'train' is empty",
             what="an empty split")
expect_error(["train", good, "--set", "data.path=shards/part-*.h5"], "data.path pattern 'shards/part-*.h5' matches no file",
             what="a glob that matches nothing")

# NaN found while streaming: the rank that reads it names the sample, file and dataset; exit 2.
with h5py.File(h.path("syn.h5")) as src, h5py.File(h.path("nan.h5"), "w") as f:
    x = src["train/features"][:]
    x[123, 5] = np.nan
    f["train/features"] = x
    f["train/labels"] = src["train/labels"][:]
    f["test/features"] = src["test/features"][:]
    f["test/labels"] = src["test/labels"][:]
p = h.run(["train", good, "--set", "data.path=nan.h5", "--set", "run.dir=nanrun"], ranks=2, expect_rc=None)
h.check(p.returncode == 2, f"NaN in the features: exit 2 (got {p.returncode})", p.stderr)
h.check("non-finite feature (NaN or Inf) at feature 5 of sample 123" in p.stderr and
        "file 'nan.h5', dataset 'train/features', row 123" in p.stderr,
        "the NaN is reported with its sample index, file and dataset", p.stderr)
p = h.run(["train", good, "--set", "data.path=nan.h5", "--set", "run.dir=nanskip", "--set", "data.non_finite=skip"],
          ranks=2)
h.check("left out 1 sample(s) with non-finite features" in p.stdout + p.stderr,
        "data.non_finite: skip trains on and says how many samples it left out", p.stdout[-2000:])

h.finish()
