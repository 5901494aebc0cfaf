"""`forge data fashion-mnist` turns Debian's idx files into the documented HDF5 layout,
byte for byte; a wrong source folder is a clear error."""
import gzip
import os

import h5py
import numpy as np

from harness import Harness

SOURCE = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist

h = Harness()
h.run(["data", "fashion-mnist", "--out", "fm.h5"])


def idx(name):
    with gzip.open(os.path.join(SOURCE, name + ".gz")) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


with h5py.File(h.path("fm.h5")) as f:
    for split, stem, n in [("train", "train", 60000), ("test", "t10k", 10000)]:
        x, y = f[f"{split}/features"], f[f"{split}/labels"]
        h.check(x.shape == (n, 784) and x.dtype == np.uint8, f"{split}/features is {n} x 784 uint8 ({x.shape}, {x.dtype})")
        h.check(y.shape == (n,) and y.dtype == np.int64, f"{split}/labels is {n} int64")
        h.check(x.chunks is not None and x.chunks[1] == 784, f"{split}/features is chunked by whole rows ({x.chunks})")
        images = idx(f"{stem}-images-idx3-ubyte").reshape(n, 784)
        labels = idx(f"{stem}-labels-idx1-ubyte")
        h.check(np.array_equal(x[:], images), f"{split} pixels equal the idx file's, byte for byte")
        h.check(np.array_equal(y[:], labels.astype(np.int64)), f"{split} labels equal the idx file's")
        h.check(set(np.unique(y[:])) == set(range(10)), f"{split} has the 10 classes")

p = h.run(["data", "fashion-mnist", "--out", "x.h5", "--source", "no/such/dir"], expect_rc=2)
h.check("no 'train-images-idx3-ubyte' or 'train-images-idx3-ubyte.gz' in 'no/such/dir'" in p.stderr,
        "a wrong --source names the missing file and the folder", p.stderr)
h.check(not os.path.exists(h.path("x.h5")), "and writes nothing")

h.finish()
