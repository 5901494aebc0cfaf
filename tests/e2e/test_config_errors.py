"""Bad input gets a clear error from every rank, a non-zero exit and no stack dump."""
from harness import Harness, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "300", "--features", "16", "--classes", "4"])
good = small_config(h, "good.yaml", "syn.h5", "run", epochs=1)


def expect_error(args, needle, ranks=2, rc=2, what=""):
    p = h.run(args, ranks=ranks, expect_rc=None)
    err = p.stderr
    h.check(p.returncode == rc, f"{what}: exit code {rc} (got {p.returncode})", err)
    for r in range(max(ranks, 1)):
        h.check(f"[rank {r}] " in err and needle in err, f"{what}: rank {r} says \"{needle}\"", err)
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
             "model and data do not fit: layer 'fc1'", what="a model that does not fit the data")
expect_error(["train", good, "--set", "model.num_classes=3"], "label 3 at index",
             what="labels beyond the model's classes")
expect_error(["train", good, "--set", "data.batch_size=149"], "which BatchNorm cannot train on",
             what="a last batch of one sample with BatchNorm")
expect_error(["train", good, "--set", "run.dir=syn.h5/run"], "cannot create run dir 'syn.h5/run'", ranks=2,
             what="a run dir that cannot be created")
expect_error(["train", good, "--epochs", "3"], "unknown option --epochs", ranks=0, what="an unknown option")

h.finish()
