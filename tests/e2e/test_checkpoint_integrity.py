"""Nothing silently wrong with checkpoints:
- a fresh `forge train` refused because the run dir holds checkpoints changes nothing in it
  (every file's bytes and mtime, and the list of files, equal before and after);
- checkpoint.keep_last counts checkpoints that verify: an empty file named like a newer
  checkpoint pushes no valid one out, and is moved aside, not deleted;
- every zip entry carries its real CRC-32: Python's zipfile.testzip() (and unzip -t) find
  nothing wrong, and torch.load(weights_only=True) still reads the file (sync, async, best.pt);
- a bit-flipped checkpoint (in a tensor, or in the pickle) is the same error at every entry
  point: ckpt inspect, eval, model.init_from, --resume PATH, model check: "fails its
  checksum (the file is corrupt)", exit 4; --resume auto moves it aside and resumes the
  previous one;
- so is damage to the zip's bookkeeping or small records, which Python's torch.load or
  zipfile would trip over: the byteorder record ("little" -> ",ittle"), the version record,
  a CRC-32 in the central directory, a name in a local header or in the central directory;
- a file's progress is its contents': a copy under a more advanced name, a second name for
  the same progress and a name whose number overflows go to unverified/ (saying name vs
  contents), and --resume auto takes the real newest;
- an earlier run's best.pt and files set aside are never trained over: once every periodic
  checkpoint failed to verify, a second --resume auto (a requeue) and a fresh start are
  refused, and nothing in the run dir changes."""
import glob
import os
import re
import shutil
import subprocess
import zipfile

import torch

from harness import Harness, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "1200", "--features", "16", "--classes", "4"])
cfg = small_config(h, "small.yaml", "syn.h5", "run", epochs=2)
h.run(["train", cfg], ranks=2)
ckdir = h.path("run", "checkpoints")


def snapshot(root):
    """Every file and folder under root: (kind, bytes, mtime in ns); not the run dir's lock
    file, which names the last job that opened the run dir (a refused one included)."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs:
            out[os.path.join(d, n)] = ("dir", None, os.stat(os.path.join(d, n)).st_mtime_ns)
        for n in files:
            if n == ".forge.lock" and d == root:
                continue
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[p] = ("file", f.read(), os.stat(p).st_mtime_ns)
    return out


# 1. A refused fresh start changes nothing (a leftover temporary file included).
with open(os.path.join(ckdir, ".ckpt-e0009-n0000000000.pt.tmp.4242"), "w") as f:
    f.write("half a save")
before = snapshot(h.path("run"))
for ranks in (0, 2):
    p = h.run(["train", cfg, "--set", "optimizer.lr=0.01"], ranks=ranks, expect_rc=None)
    h.check(p.returncode == 2 and "already holds checkpoints of an earlier run" in p.stderr,
            f"{ranks or 1} rank(s): a fresh start into a run dir with checkpoints is refused", p.stderr[-1500:])
    after = snapshot(h.path("run"))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    h.check(not changed, f"{ranks or 1} rank(s): the refusal changes no file of the run dir (bytes, mtime, list)",
            changed)
os.remove(os.path.join(ckdir, ".ckpt-e0009-n0000000000.pt.tmp.4242"))

# 2. Real CRC-32s in every entry; torch.load still reads the files.
h.run(["train", cfg, "--set", "run.dir=arun", "--set", "run.epochs=1", "--set", "checkpoint.async=true"])
files = sorted(glob.glob(os.path.join(ckdir, "*.pt"))) + sorted(glob.glob(h.path("arun", "checkpoints", "*.pt")))
for path in files:
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        zero = [i.filename for i in z.infolist() if i.CRC == 0]
    h.check(bad is None and not zero, f"zipfile.testzip() finds no bad entry in {os.path.basename(path)}, "
            "no CRC-32 is 0", (bad, zero))
    ck = torch.load(path, weights_only=True)
    h.check(isinstance(ck, dict) and "model_state_dict" in ck, f"torch.load(weights_only=True) reads it")
    if shutil.which("unzip"):
        t = subprocess.run(["unzip", "-t", path], capture_output=True, text=True)
        h.check(t.returncode == 0 and "No errors detected" in t.stdout, "unzip -t tests it clean", t.stdout[-800:])

# 3. A bit flip, in a tensor's bytes or in the pickle: one message everywhere, exit 4.
newest = sorted(glob.glob(os.path.join(ckdir, "ckpt-*.pt")))[-1]
raw = open(newest, "rb").read()
weight = torch.load(newest, weights_only=True)["model_state_dict"]["fc1.weight"].numpy().tobytes()
with zipfile.ZipFile(newest) as z:
    pkl = z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])
flips = {"tensor": raw.index(weight) + 5, "pickle": raw.index(pkl) + len(pkl) // 2}
for where, at in flips.items():
    name = f"flip_{where}.pt"
    damaged = bytearray(raw)
    damaged[at] ^= 0x10
    with open(h.path(name), "wb") as f:
        f.write(damaged)
    want = f"checkpoint '{name}' fails its checksum (the file is corrupt)"
    entry_points = {
        "ckpt inspect": (["ckpt", "inspect", name], 0),
        "eval": (["eval", cfg, "--checkpoint", name], 0),
        "eval on 2 ranks": (["eval", cfg, "--checkpoint", name], 2),
        "model.init_from": (["train", cfg, "--set", "run.dir=init", "--set", f"model.init_from={name}"], 0),
        "--resume PATH": (["train", cfg, "--set", "run.dir=res", "--resume", name], 0),
        "model check": (["model", "check", cfg, "--state-dict", name], 0),
    }
    for what, (args, ranks) in entry_points.items():
        p = h.run(args, ranks=ranks, expect_rc=None)
        h.check(p.returncode == 4 and want in p.stderr,
                f"flip in the {where}: {what} exits 4 saying \"{want}\"", f"exit {p.returncode}: {p.stderr[-1500:]}")



def zip_layout(path):
    """{name: (local header offset, data offset, central directory entry offset)}."""
    raw = open(path, "rb").read()
    out = {}
    with zipfile.ZipFile(path) as z:
        at = z.start_dir
        for i in z.infolist():
            local = i.header_offset
            data = local + 30 + int.from_bytes(raw[local + 26:local + 28], "little") + \
                int.from_bytes(raw[local + 28:local + 30], "little")
            out[i.filename.split("/", 1)[1]] = (local, data, at)
            at += 46 + len(i.filename.encode()) + len(i.extra) + len(i.comment)
    return out


# Damage to the zip's bookkeeping and small records: Python's torch.load or zipfile trips
# over each; forge says the one message at every entry point.
lay = zip_layout(newest)
damages = {
    "byteorder": (lay["byteorder"][1], 0x40),                  # "little" -> ",ittle"
    "version": (lay["version"][1], 0x04),                      # "3" -> "7": still a number
    "central_crc": (lay["data.pkl"][2] + 16, 0x01),           # the pickle's CRC-32 in the directory
    "local_name": (lay["data/0"][0] + 30 + len("archive/data/"), 0x01),  # data/0 -> data/1
    "central_name_case": (lay["data.pkl"][2] + 46, 0x20),     # "archive" -> "Archive"
}
for where, (at, bit) in damages.items():
    name = f"zip_{where}.pt"
    damaged = bytearray(raw)
    damaged[at] ^= bit
    with open(h.path(name), "wb") as f:
        f.write(damaged)
    try:
        with zipfile.ZipFile(h.path(name)) as z:
            bad = z.testzip()
        torch.load(h.path(name), weights_only=True)
        python = f"zipfile.testzip() names {bad}" if bad else None
    except Exception as e:  # noqa: BLE001 (whatever Python raises is the point)
        python = f"{type(e).__name__}: {e}"
    want = f"checkpoint '{name}' fails its checksum (the file is corrupt)"
    entry_points = {"ckpt inspect": ["ckpt", "inspect", name]}
    if where == "byteorder":
        entry_points.update({"eval": ["eval", cfg, "--checkpoint", name],
                             "--resume PATH": ["train", cfg, "--set", "run.dir=res", "--resume", name],
                             "model.init_from": ["train", cfg, "--set", "run.dir=init",
                                                 "--set", f"model.init_from={name}"]})
    for what, args in entry_points.items():
        p = h.run(args, expect_rc=None)
        h.check(p.returncode == 4 and want in p.stderr,
                f"zip damage ({where}; Python: {python}): {what} exits 4 saying \"{want}\"",
                f"exit {p.returncode}: {p.stderr[-1500:]}")

# --resume auto moves the damaged newest aside (saying so) and resumes the previous one.
shutil.copy(h.path("flip_tensor.pt"), newest)
p = h.run(["train", cfg, "--set", "run.epochs=3", "--resume", "auto"])
h.check("fails its checksum" in p.stderr and "moved to" in p.stderr and
        os.path.exists(os.path.join(ckdir, "unverified", os.path.basename(newest))) and "resumed from" in p.stdout,
        "--resume auto moves the damaged checkpoint to unverified/ and resumes the one before", p.stderr[-1500:])

# 4. keep_last counts checkpoints that verify: an empty file named like a newer checkpoint.
empty = os.path.join(ckdir, "ckpt-e0099-n0000000000.pt")
open(empty, "w").close()
valid = sorted(os.path.basename(f) for f in glob.glob(os.path.join(ckdir, "ckpt-*.pt")) if f != empty)
p = h.run(["train", cfg, "--set", "run.epochs=4", "--set", "checkpoint.keep_last=2", "--resume", "auto"])
kept = sorted(os.path.basename(f) for f in glob.glob(os.path.join(ckdir, "ckpt-*.pt")))
h.check(kept == ["ckpt-e0003-n0000000000.pt", "ckpt-e0004-n0000000000.pt"],
        "keep_last 2 keeps the 2 most advanced valid checkpoints", (valid, kept))
h.check(os.path.exists(os.path.join(ckdir, "unverified", "ckpt-e0099-n0000000000.pt")) and "is empty" in p.stderr,
        "the empty file is not counted, but moved to unverified/ with a warning", p.stderr[-1500:])

# 5. A file's progress is its contents'. Copies under a more advanced name, under a second
# name for the same progress, and under a name whose number overflows an int64.
e3, e4 = (os.path.join(ckdir, f"ckpt-e000{e}-n0000000000.pt") for e in (3, 4))
fakes = {"ckpt-e0009-n0000000000.pt": e3, "ckpt-e4-n0.pt": e4, "ckpt-e99999999999999999999-n0.pt": e4}
for fake, real in fakes.items():
    shutil.copy(real, os.path.join(ckdir, fake))
p = h.run(["train", cfg, "--set", "run.epochs=5", "--set", "checkpoint.keep_last=2", "--resume", "auto"])
h.check(re.search(r"resumed from \S*ckpt-e0004-n0000000000\.pt at epoch 5", p.stdout),
        "--resume auto takes the real newest, not the copy named for epoch 9", p.stdout[-1500:])
h.check("ckpt-e0009-n0000000000.pt' is named for 9 epoch(s) + 0 samples but holds 3 epoch(s) + 0 samples" in p.stderr,
        "the warning says what the name claims and what the file holds", p.stderr[-2000:])
kept = sorted(os.path.basename(f) for f in glob.glob(os.path.join(ckdir, "ckpt-*.pt")))
h.check(kept == ["ckpt-e0004-n0000000000.pt", "ckpt-e0005-n0000000000.pt"],
        "keep_last 2 keeps the 2 most advanced valid checkpoints (no copy took a place)", kept)
h.check(all(os.path.exists(os.path.join(ckdir, "unverified", f)) for f in fakes),
        "the three misnamed copies are in unverified/", os.listdir(os.path.join(ckdir, "unverified")))

# 6. A requeue loop whose periodic checkpoints are all damaged: the first --resume auto moves
# them aside (exit 4); after that neither a second --resume auto nor a fresh start trains
# over the earlier run's best.pt, metrics and set-aside files (exit 4, exit 2; nothing changes).
shutil.copytree(h.path("run"), h.path("req"))
shutil.rmtree(h.path("req", "checkpoints", "unverified"))
for f in glob.glob(h.path("req", "checkpoints", "ckpt-*.pt")):
    damaged = bytearray(open(f, "rb").read())
    damaged[len(damaged) // 3] ^= 0x08
    open(f, "wb").write(damaged)
req = ["--set", "run.dir=req", "--set", "run.epochs=6"]
results = {f: open(h.path("req", *f.split("/")), "rb").read() for f in ("checkpoints/best.pt", "metrics.jsonl")}
p = h.run(["train", cfg, *req, "--resume", "auto"], expect_rc=None)
h.check(p.returncode == 4 and "no checkpoint in" in p.stderr and "verifies" in p.stderr
        and not glob.glob(h.path("req", "checkpoints", "ckpt-*.pt"))
        and len(os.listdir(h.path("req", "checkpoints", "unverified"))) == 2,
        "first --resume auto: exit 4, every periodic checkpoint moved to unverified/", p.stderr[-1500:])
h.check(all(open(h.path("req", *f.split("/")), "rb").read() == b for f, b in results.items()),
        "best.pt and metrics.jsonl are as the earlier run left them")
before = snapshot(h.path("req"))
for args, rc, says in (([*req, "--resume", "auto"], 4, "--resume auto: no checkpoint in"),
                       (req, 2, "holds files of an earlier run")):
    p = h.run(["train", cfg, *args], expect_rc=None)
    h.check(p.returncode == rc and says in p.stderr and "best.pt" in p.stderr and "--resume PATH" in p.stderr,
            f"then {'--resume auto' if rc == 4 else 'a fresh start'}: exit {rc}, naming best.pt and "
            "--resume PATH", f"exit {p.returncode}: {p.stderr[-1500:]}")
    after = snapshot(h.path("req"))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    h.check(not changed, "and nothing in the run dir changes (best.pt, metrics.jsonl, unverified/)", changed)

h.finish()
