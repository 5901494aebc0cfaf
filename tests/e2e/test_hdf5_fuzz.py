"""Fuzzing forge's HDF5 opener through the real binary: crafted files (each a way HDF5 data
can be wrong) and files with random bits flipped or cut short (seeded: the same files every
run), each trained on by `forge train` (one rank, one tiny epoch). No input may end in exit 1
(an internal error), a signal (a crash), a hang, HDF5's own error-stack dump, or exit 0 with
a non-finite loss: every one either trains or is refused with exit 2 and a message.

Bits are flipped anywhere in files of uint8 features (any value is a valid pixel), and only
outside the stored values in files of float32 features (a flipped exponent is a legal,
huge number: a model diverging on it is not the opener's business)."""
import concurrent.futures
import json
import math
import os
import random
import shutil
import subprocess
import time

import h5py
import numpy as np

from harness import Harness, read_jsonl

SEED = 21
FLIPPED_PER_BASE = 8  # the first half in the files' metadata only, the rest anywhere
CUTS_PER_BASE = 1
h = Harness()
rng = np.random.default_rng(SEED)
pick = random.Random(SEED)
N, D, C = 256, 16, 4

x8 = rng.integers(0, 256, (N, D)).astype(np.uint8)
y = rng.integers(0, C, N).astype(np.int64)
xt8 = rng.integers(0, 256, (64, D)).astype(np.uint8)
yt = rng.integers(0, C, 64).astype(np.int64)


def write(name, train_x, train_y, test_x=None, test_y=None, **opts):
    with h5py.File(h.path(name), "w") as f:
        f.create_dataset("train/features", data=train_x, **opts)
        f["train/labels"] = train_y
        f.create_dataset("test/features", data=xt8 if test_x is None else test_x, **opts)
        f["test/labels"] = yt if test_y is None else test_y
    return name


# --- base files: the layouts forge meets --------------------------------------------------------
np.save(h.path("x.npy"), x8)
np.save(h.path("y.npy"), y)
np.save(h.path("xt.npy"), xt8)
np.save(h.path("yt.npy"), yt)
h.run(["data", "from-npy", "--out", "conv.h5", "--train-features", "x.npy", "--train-labels", "y.npy",
       "--test-features", "xt.npy", "--test-labels", "yt.npy"])
bases = ["conv.h5", write("contig.h5", x8, y.astype(np.int32)),
         write("gzip.h5", x8, y, chunks=(64, D), compression="gzip", shuffle=True),
         write("chunked.h5", x8, y, chunks=(32, D))]
xf = (x8 / 255.0).astype(np.float32)
bases.append(write("float.h5", xf, y, (xt8 / 255.0).astype(np.float32), yt))


def stored_values(name, keys=("train/features", "train/labels", "test/features", "test/labels")):
    """The byte ranges of a file that hold the datasets' values (the rest is metadata)."""
    ranges = []
    with h5py.File(h.path(name)) as f:
        for k in keys:
            d = f[k].id
            if d.get_create_plist().get_layout() == h5py.h5d.CHUNKED:
                for i in range(d.get_num_chunks()):
                    c = d.get_chunk_info(i)
                    ranges.append((c.byte_offset, c.byte_offset + c.size))
            else:
                ranges.append((d.get_offset(), d.get_offset() + d.get_storage_size()))
    return ranges


cases = []  # (name, file, what it is)
for base in bases:
    blob = open(h.path(base), "rb").read()
    values = stored_values(base)
    # A flipped exponent in float32 features is a legal, huge number: never flipped.
    floats = stored_values(base, ("train/features", "test/features")) if base == "float.h5" else []
    for i in range(FLIPPED_PER_BASE):
        keep = values if i < FLIPPED_PER_BASE // 2 else floats
        data = bytearray(blob)
        flips = []
        wanted = pick.randint(1, 8)
        while len(flips) < wanted:
            at = pick.randrange(len(data))
            if any(a <= at < b for a, b in keep):
                continue
            bit = pick.randrange(8)
            data[at] ^= 1 << bit
            flips.append((at, bit))
        name = f"flip-{i}-{base}"
        open(h.path(name), "wb").write(data)
        where = "metadata" if keep is values else "bytes"
        cases.append((name, name, f"{base} with {where} bits flipped at (byte, bit) {flips}"))
    for i in range(CUTS_PER_BASE):
        at = pick.randrange(1, len(blob))
        name = f"cut-{i}-{base}"
        open(h.path(name), "wb").write(blob[:at])
        cases.append((name, name, f"{base} cut to {at} of {len(blob)} bytes"))

# --- crafted files: one way of being wrong each -------------------------------------------------
def crafted(name, what, fn):
    with h5py.File(h.path(name), "w") as f:
        fn(f)
    cases.append((name, name, what))


def split(f, x, labels, prefix="train"):
    f[f"{prefix}/features"] = x
    f[f"{prefix}/labels"] = labels


def good_test(f):
    split(f, xt8, yt, "test")


def float_test(f):
    split(f, (xt8 / 255.0).astype(np.float32), yt, "test")


crafted("nan.h5", "NaN in float features", lambda f: (split(f, np.where(np.arange(N)[:, None] == 7, np.nan, xf)
                                                            .astype(np.float32), y), float_test(f)))
crafted("inf.h5", "Inf in the eval split", lambda f: (split(f, xf, y), split(f, np.full((64, D), np.inf, np.float32),
                                                                              yt, "test")))
crafted("labels-range.h5", "labels outside [0, classes)", lambda f: (split(f, x8, y + 7), good_test(f)))
crafted("labels-neg.h5", "negative labels", lambda f: (split(f, x8, -y - 1), good_test(f)))
crafted("labels-float.h5", "float labels", lambda f: (split(f, x8, y.astype(np.float32)), good_test(f)))
crafted("labels-2d.h5", "2-D labels", lambda f: (split(f, x8, np.stack([y, y], 1)), good_test(f)))
crafted("labels-str.h5", "string labels", lambda f: (split(f, x8, np.array([b"a"] * N)), good_test(f)))
crafted("f16.h5", "float16 features", lambda f: (split(f, xf.astype(np.float16), y), good_test(f)))
crafted("i64-x.h5", "int64 features", lambda f: (split(f, x8.astype(np.int64), y), good_test(f)))
crafted("x1d.h5", "1-D features", lambda f: (split(f, x8[:, 0], y), good_test(f)))
crafted("x0.h5", "samples of zero features", lambda f: (split(f, np.zeros((N, 0), np.uint8), y),
                                                       split(f, np.zeros((64, 0), np.uint8), yt, "test")))
crafted("xshape.h5", "samples of another shape than the model's", lambda f: (split(f, np.zeros((N, 4, 4, 2), np.uint8),
                                                                                   y),
                                                                             split(f, np.zeros((64, 4, 4, 2), np.uint8),
                                                                                   yt, "test")))
crafted("count.h5", "fewer labels than samples", lambda f: (split(f, x8, y[:100]), good_test(f)))
crafted("empty-split.h5", "an empty split", lambda f: (split(f, x8[:0], y[:0]), good_test(f)))
crafted("no-test.h5", "no eval split", lambda f: split(f, x8, y))
crafted("group.h5", "a group where the features should be",
        lambda f: (f.create_group("train/features"), f.create_dataset("train/labels", data=y), good_test(f)))
crafted("scalar.h5", "scalar datasets", lambda f: (f.create_dataset("train/features", data=1.0),
                                                   f.create_dataset("train/labels", data=1), good_test(f)))
crafted("lzf.h5", "lzf-compressed chunks", lambda f: (f.create_dataset("train/features", data=x8, chunks=(64, D),
                                                                        compression="lzf"),
                                                      f.create_dataset("train/labels", data=y), good_test(f)))


def partial(f):
    d = f.create_dataset("train/features", shape=(N, D), dtype=np.uint8, chunks=(32, D))
    d[:64] = x8[:64]
    f["train/labels"] = y
    good_test(f)


crafted("partial.h5", "chunks never written", partial)


def huge(f, fill):
    d = f.create_dataset("train/features", shape=(10**12, D), dtype=np.uint8, chunks=(4096, D),
                         fillvalue=fill)
    d[:N] = x8
    l = f.create_dataset("train/labels", shape=(10**12,), dtype=np.int64, chunks=(1 << 16,), fillvalue=fill)
    l[:N] = y
    good_test(f)


crafted("huge.h5", "10^12 rows declared", lambda f: huge(f, None))
crafted("huge-fill.h5", "10^12 rows declared, with fill values", lambda f: huge(f, 1))


def wide(f):
    for split_name, n, labels in (("train", N, y), ("test", 64, yt)):
        f.create_dataset(f"{split_name}/features", shape=(n, 1 << 40), dtype=np.uint8, chunks=(1, 1 << 20),
                         fillvalue=3)
        f[f"{split_name}/labels"] = labels


crafted("wide.h5", "2^40 features a sample, with a fill value", wide)


def vds(f):
    with h5py.File(h.path("vds-src.h5"), "w") as s:
        s["x"] = x8
    layout = h5py.VirtualLayout(shape=(N, D), dtype=np.uint8)
    layout[:] = h5py.VirtualSource("vds-src.h5", "x", shape=(N, D))
    f.create_virtual_dataset("train/features", layout)
    f["train/labels"] = y
    good_test(f)


crafted("vds.h5", "a virtual dataset whose source file is missing", vds)
os.remove(h.path("vds-src.h5"))
open(h.path("empty.h5"), "wb").close()
cases.append(("empty.h5", "empty.h5", "an empty file"))
open(h.path("noise.h5"), "wb").write(rng.integers(0, 256, 5000).astype(np.uint8).tobytes())
cases.append(("noise.h5", "noise.h5", "random bytes"))
open(h.path("superblock.h5"), "wb").write(open(h.path("conv.h5"), "rb").read()[:96])
cases.append(("superblock.h5", "superblock.h5", "a superblock and nothing else"))
cases.append(("missing", "missing.h5", "a file that does not exist"))


def config(name, data):
    return h.write(f"{name}.yaml", f"""\
        run:
          dir: run-{name}
          seed: 1
          epochs: 1
          threads: 1
        model:
          name: mlp
          in_features: {D}
          hidden: 8
          num_classes: {C}
        data:
          path: {data}
          batch_size: 64
          eval_batch_size: 64
          normalize:
            scale: 0.00392156862745098
        optimizer:
          name: sgd
          lr: 0.05
        checkpoint:
          every_epochs: 1
        log:
          progress: "off"
        """)


def losses_finite(run_dir):
    path = h.path(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return False, "no metrics.jsonl"
    epochs = [r for r in read_jsonl(path) if r["type"] == "epoch"]
    if not epochs:
        return False, "no epoch record"
    for r in epochs:
        for k in ("train_loss", "eval_loss"):
            v = r.get(k)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                return False, f"{k} = {v}"
    return True, ""


def run_case(case):
    name, data, what = case
    cmd = [h.forge, "train", config(name, data)]
    try:
        p = subprocess.run(cmd, cwd=h.work, capture_output=True, text=True, timeout=120)
        return case, p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        return case, "timeout", (e.stdout or b"").decode() + (e.stderr or b"").decode()


start = time.monotonic()
# Two at a time: the test machines have two cores, and each run is mostly start-up.
with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    results = list(pool.map(run_case, cases))
took = time.monotonic() - start
trained = refused = 0
for (name, data, what), rc, out in results:
    last = [l for l in out.strip().splitlines() if l.strip()][-1:] or [""]
    if rc == 0:
        ok, why = losses_finite(f"run-{name}")
        h.check(ok, f"{name} ({what}): trains with finite losses", why + "\n" + out[-2000:])
        trained += 1
    else:
        h.check(rc == 2, f"{name} ({what}): refused with exit 2 (got {rc}): {last[0][:200]}", out[-3000:])
        refused += 1
    h.check("HDF5-DIAG" not in out and "#000:" not in out, f"{name}: no HDF5 error-stack dump", out[-3000:])
print(f"{len(cases)} files (seed {SEED}): {trained} trained, {refused} refused, in {took:.0f} s")
h.check(trained > 0 and refused > 0, "the corpus holds files that train and files that are refused")
h.finish()
