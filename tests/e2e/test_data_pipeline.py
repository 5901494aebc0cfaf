"""The data pipeline through the real forge binary: NumPy arrays converted with
`forge data from-npy` (images C x H x W, labels of any integer type), a split spread over
several files named by a glob, per-feature normalization statistics computed once and
stored beside the run, and the converter's own errors."""
import glob
import re

import h5py
import numpy as np

from harness import Harness, small_config, final_accuracy

h = Harness()
rng = np.random.default_rng(3)

# --- from-npy: 1 x 8 x 8 uint8 "images" of 4 classes, int32 labels ------------------------
def images(n):
    y = rng.integers(0, 4, n).astype(np.int32)
    x = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    for c in range(4):  # each class lights up its own quarter of the image
        x[y == c, 0, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 150
    return x, y

xtr, ytr = images(1600)
xte, yte = images(400)
for name, arr in [("xtr", xtr), ("ytr", ytr), ("xte", xte), ("yte", yte)]:
    np.save(h.path(name + ".npy"), arr)
h.run(["data", "from-npy", "--out", "img.h5", "--train-features", "xtr.npy", "--train-labels", "ytr.npy",
       "--test-features", "xte.npy", "--test-labels", "yte.npy"])
with h5py.File(h.path("img.h5")) as f:
    h.check(f["train/features"].shape == (1600, 1, 8, 8) and f["train/features"].dtype == np.uint8,
            "from-npy keeps the image shape and uint8")
    h.check(f["train/labels"].dtype == np.int64 and (f["train/labels"][:] == ytr).all(), "labels become int64, unchanged")
    h.check((f["test/features"][:] == xte).all(), "the test split's pixels are the NumPy array's")
    h.check(f["train/features"].chunks is not None, f"features are chunked for streaming ({f['train/features'].chunks})")

cfg = small_config(h, "img.yaml", "img.h5", "imgrun", epochs=3, features=64, classes=4)
cfg_text = open(cfg).read().replace("batch_size: 32", "batch_size: 32\n  normalize:\n    scale: 0.00392156862745098")
open(cfg, "w").write(cfg_text)
p = h.run(["train", cfg], ranks=2)
acc = final_accuracy(p.stdout + p.stderr)
h.check(acc is not None and acc > 90, f"an MLP learns the converted images (accuracy {acc}%)", p.stdout[-1500:])

# from-npy errors: a Fortran-ordered array, counts that differ, an unsupported dtype.
np.save(h.path("fortran.npy"), np.asfortranarray(xtr.reshape(1600, 64)))
p = h.run(["data", "from-npy", "--out", "bad.h5", "--train-features", "fortran.npy", "--train-labels", "ytr.npy"],
          expect_rc=2)
h.check("Fortran order" in p.stderr, "a Fortran-ordered array is refused with the fix", p.stderr)
np.save(h.path("short.npy"), ytr[:10])
p = h.run(["data", "from-npy", "--out", "bad.h5", "--train-features", "xtr.npy", "--train-labels", "short.npy"],
          expect_rc=2)
h.check("has 1600 samples but" in p.stderr and "has 10" in p.stderr, "counts that differ are named", p.stderr)
np.save(h.path("f16.npy"), xtr.astype(np.float16))
p = h.run(["data", "from-npy", "--out", "bad.h5", "--train-features", "f16.npy", "--train-labels", "ytr.npy"],
          expect_rc=2)
h.check("features must be uint8, float32 or float64" in p.stderr, "float16 features are refused", p.stderr)
h.check(not glob.glob(h.path("bad.h5*")), "a failed conversion leaves no file behind")

# --- a split in several files, named by a glob ---------------------------------------------
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "3000", "--features", "16", "--classes", "4"])
with h5py.File(h.path("syn.h5")) as src:
    x, y = src["train/features"][:], src["train/labels"][:]
    for i, (a, b) in enumerate([(0, 1000), (1000, 2200), (2200, 3000)]):
        with h5py.File(h.path(f"shard-{i}.h5"), "w") as f:
            f["train/features"] = x[a:b]
            f["train/labels"] = y[a:b]
            c, d = a // 5, b // 5  # every shard holds a share of the test split too
            f["test/features"] = src["test/features"][c:d]
            f["test/labels"] = src["test/labels"][c:d]
shards = small_config(h, "shards.yaml", "shard-*.h5", "shardrun", epochs=2)
p = h.run(["train", shards], ranks=2)
out = p.stdout + p.stderr
h.check(":train: 3,000 samples in 3 files" in out, "three files behave as one split of 3,000 samples", out[-1500:])
acc = final_accuracy(out)
h.check(acc is not None and acc > 70, f"and train (accuracy {acc}%)")

# --- per-feature statistics, computed once and kept in the run dir -------------------------
stats = small_config(h, "stats.yaml", "syn.h5", "statsrun", epochs=1)
text = open(stats).read().replace("batch_size: 32", "batch_size: 32\n  normalize:\n    stats: auto")
open(stats, "w").write(text)
p = h.run(["train", stats], ranks=2)
h.check("per-feature mean and std of syn.h5:train computed" in p.stdout + p.stderr, "the statistics are computed",
        p.stdout[-1500:])
with h5py.File(h.path("statsrun", "feature_stats.h5")) as f:
    mean, std = f["mean"][:], f["std"][:]
h.check(np.allclose(mean, x.mean(0), atol=1e-6) and np.allclose(std, x.std(0), atol=1e-5),
        "they are the training split's per-feature mean and std (NumPy agrees)")
text = open(stats).read().replace("epochs: 1", "epochs: 2")
open(stats, "w").write(text)
p = h.run(["train", stats, "--resume", "auto"], ranks=2)
h.check("per-feature mean and std from" in p.stdout + p.stderr and "computed" not in p.stdout,
        "a resumed run reuses the stored statistics", p.stdout[-1500:])
p = h.run(["eval", stats, "--checkpoint", sorted(glob.glob(h.path("statsrun", "checkpoints", "ckpt-*.pt")))[-1]])
h.check(re.search(r"accuracy\s+\d", p.stdout) is not None, "forge eval normalizes with the stored statistics",
        p.stdout + p.stderr)
h.finish()
