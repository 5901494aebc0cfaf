"""checkpoint.async: true writes in the background, yet every checkpoint holds exactly
what a synchronous save writes at the same step (all but the config text, which names
another run dir), and the training result is the same."""
import glob
import os
import re

import torch

from harness import Harness, small_config


def same_contents(x, y):
    """Equal tensors, numbers, strings, lists and dicts, recursively."""
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same_contents(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(same_contents(a, b) for a, b in zip(x, y))
    return x == y


h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "3000", "--features", "16", "--classes", "4"])
cfg = small_config(h, "small.yaml", "syn.h5", "run", epochs=2)
steps = ["--set", "checkpoint.every_steps=7", "--set", "checkpoint.keep_last=0"]
fp = re.compile(r"fingerprint ([0-9a-f]{16})")
sync = h.run(["train", cfg, "--set", "run.dir=sync", *steps], ranks=2).stdout
background = h.run(["train", cfg, "--set", "run.dir=async", *steps, "--set", "checkpoint.async=true"], ranks=2).stdout
h.check(fp.search(sync).group(1) == fp.search(background).group(1), "the same final weights")
a = sorted(os.path.basename(f) for f in glob.glob(h.path("sync", "checkpoints", "*.pt")))
b = sorted(os.path.basename(f) for f in glob.glob(h.path("async", "checkpoints", "*.pt")))
h.check(a == b and len(a) >= 8, f"the same {len(a)} checkpoint files", (a, b))
differ = []
for n in a:
    x = torch.load(h.path("sync", "checkpoints", n), weights_only=True)
    y = torch.load(h.path("async", "checkpoints", n), weights_only=True)
    for d in (x, y):
        del d["config"], d["checksum"]  # the config names its own run dir
    if not same_contents(x, y):
        differ.append(n)
h.check(not differ, "each one holds exactly what its synchronous twin holds", differ)
h.check(not glob.glob(h.path("async", "checkpoints", ".*.tmp.*")), "no temporary file is left")
h.finish()
