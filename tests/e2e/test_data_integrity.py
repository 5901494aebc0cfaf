"""Data HDF5 would make up or could not decode is refused when the file is opened, before
training, on every rank, with exit 2 and one line naming the file and the dataset (never
HDF5's own error-stack dump): values that live in other files (a virtual dataset, an
external link, external raw storage: forge could not watch them for changes), a FIFO, chunks never written without a fill value of the dataset's own, a
header declaring 10^12 rows, and chunks compressed with a filter this HDF5 lacks (lzf)."""
import os

import h5py
import numpy as np

from harness import Harness, small_config, final_accuracy

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "600", "--features", "16", "--classes", "4"])
good = small_config(h, "good.yaml", "syn.h5", "run", epochs=1)
with h5py.File(h.path("syn.h5")) as f:
    X, Y = f["train/features"][:], f["train/labels"][:]
    XT, YT = f["test/features"][:], f["test/labels"][:]


def expect_error(data, needle, what, ranks=2):
    p = h.run(["train", good, "--set", f"data.path={data}", "--set", f"run.dir=run-{what.replace(' ', '-')}"],
              ranks=ranks, expect_rc=None)
    err = p.stdout + p.stderr
    h.check(p.returncode == 2, f"{what}: exit 2 (got {p.returncode})", err[-3000:])
    for r in range(ranks):
        h.check(f"[rank {r}] " in err and needle in err, f"{what}: rank {r} says \"{needle}\"", err[-3000:])
    h.check("HDF5-DIAG" not in err and "#000:" not in err, f"{what}: no HDF5 error-stack dump", err[-3000:])
    h.check("epoch 1/1" not in err, f"{what}: refused before training", err[-3000:])
    lines = [l for l in err.splitlines() if needle in l]
    h.check(lines and all(len(l) < 700 for l in lines), f"{what}: said in one line", err[-3000:])


def write_test_split(f):
    f["test/features"] = XT
    f["test/labels"] = YT


# --- a virtual dataset over two source files --------------------------------------------------
def make_vds(name, sources):
    layout = h5py.VirtualLayout(shape=X.shape, dtype=X.dtype)
    half = len(X) // 2
    for i, src in enumerate(sources):
        with h5py.File(h.path(src), "w") as s:
            s["x"] = X[i * half:(i + 1) * half]
        layout[i * half:(i + 1) * half] = h5py.VirtualSource(src, "x", shape=(half, X.shape[1]))
    with h5py.File(h.path(name), "w") as f:
        f.create_virtual_dataset("train/features", layout)
        f["train/labels"] = Y
        write_test_split(f)


# Values that live in another file escape forge's watch for changes (a source cut short
# mid-run trained on zeros; chained or partial mappings read zeros): refused at open, with
# what to do, whether the sources are there or not.
make_vds("vds.h5", ["part-a.h5", "part-b.h5"])
expect_error("vds.h5", "dataset 'train/features': it is a virtual dataset (its values live in its source files). "
             "forge reads only values stored in the data file itself", "a virtual dataset")
make_vds("vds-missing.h5", ["part-c.h5", "part-d.h5"])
os.remove(h.path("part-d.h5"))
expect_error("vds-missing.h5", "it is a virtual dataset", "a virtual dataset whose source file is missing")
with h5py.File(h.path("target.h5"), "w") as f:
    f["train/features"] = X
    f["train/labels"] = Y
with h5py.File(h.path("extlink.h5"), "w") as f:
    f["train/features"] = h5py.ExternalLink("target.h5", "train/features")
    f["train/labels"] = Y
    write_test_split(f)
expect_error("extlink.h5", "it is reached through an external link (it lives in another file)", "an external link")
with open(h.path("raw.bin"), "wb") as raw:
    raw.write(X.astype(X.dtype).tobytes())
with h5py.File(h.path("external.h5"), "w") as f:
    f.create_dataset("train/features", shape=X.shape, dtype=X.dtype, external=[("raw.bin", 0, X.nbytes)])
    f["train/labels"] = Y
    write_test_split(f)
expect_error("external.h5", "its values are stored in external raw files", "external raw storage")
os.mkfifo(h.path("fifo.h5"))
expect_error("fifo.h5", "cannot open data file 'fifo.h5': not a regular file (a FIFO)", "a FIFO as data.path")

# --- chunks never written ---------------------------------------------------------------------
with h5py.File(h.path("partial.h5"), "w") as f:
    d = f.create_dataset("train/features", shape=X.shape, dtype=X.dtype, chunks=(100, 16))
    d[:300] = X[:300]  # 3 of 6 chunks
    f["train/labels"] = Y
    write_test_split(f)
expect_error("partial.h5", "data file 'partial.h5', dataset 'train/features': 3 of its 6 chunks were never written, "
             "and it has no fill value of its own", "chunks never written")
with h5py.File(h.path("filled.h5"), "w") as f:
    d = f.create_dataset("train/features", shape=X.shape, dtype=X.dtype, chunks=(100, 16), fillvalue=0.5)
    d[:300] = X[:300]
    f["train/labels"] = Y
    write_test_split(f)
p = h.run(["train", good, "--set", "data.path=filled.h5", "--set", "run.dir=filledrun"], ranks=2)
h.check(p.returncode == 0, "the same rows with a fill value the dataset chose are data, and train")

# --- 10^12 rows declared in a file of a few kilobytes -----------------------------------------
with h5py.File(h.path("huge.h5"), "w") as f:
    d = f.create_dataset("train/features", shape=(10**12, 16), dtype=np.float32, chunks=(1000, 16))
    d[:600] = X
    l = f.create_dataset("train/labels", shape=(10**12,), dtype=np.int64, chunks=(100000,))
    l[:600] = Y
    write_test_split(f)
expect_error("huge.h5", "data file 'huge.h5', dataset 'train/features': it declares 1,000,000,000,000 rows",
             "a header that declares 10^12 rows")

# --- a filter this HDF5 library lacks ---------------------------------------------------------
with h5py.File(h.path("lzf.h5"), "w") as f:
    f.create_dataset("train/features", data=X, chunks=(100, 16), compression="lzf")
    f["train/labels"] = Y
    write_test_split(f)
expect_error("lzf.h5", "data file 'lzf.h5', dataset 'train/features': its chunks are stored through HDF5 filter "
             "'lzf' (filter id 32000), which this HDF5 library cannot decode", "chunks compressed with lzf")
# In the eval split only (opened as well before training), and read by forge eval.
with h5py.File(h.path("lzf-test.h5"), "w") as f:
    f["train/features"] = X
    f["train/labels"] = Y
    f.create_dataset("test/features", data=XT, chunks=(40, 16), compression="lzf")
    f["test/labels"] = YT
expect_error("lzf-test.h5", "dataset 'test/features': its chunks are stored through HDF5 filter 'lzf'",
             "the eval split compressed with lzf")
# --- compressed chunks that do not decompress: found mid-run by the loader's thread ------------
with h5py.File(h.path("gzip.h5"), "w") as f:
    f.create_dataset("train/features", data=X, chunks=(100, 16), compression="gzip")
    f["train/labels"] = Y
    write_test_split(f)
    at = f["train/features"].id.get_chunk_info(3)
blob = bytearray(open(h.path("gzip.h5"), "rb").read())
blob[at.byte_offset + 4:at.byte_offset + at.size - 4] = bytes(at.size - 8)
open(h.path("gzip.h5"), "wb").write(blob)
p = h.run(["train", good, "--set", "data.path=gzip.h5", "--set", "run.dir=gziprun"], ranks=2, expect_rc=None)
err = p.stdout + p.stderr
h.check(p.returncode == 2, f"a compressed chunk that does not decompress: exit 2 (got {p.returncode})", err[-3000:])
h.check("data file 'gzip.h5', dataset 'train/features': cannot read rows" in err,
        "the message names the file and the dataset", err[-3000:])
h.check("HDF5-DIAG" not in err and "#000:" not in err,
        "and HDF5's error stack is not dumped from the loader's thread", err[-3000:])
h.finish()
