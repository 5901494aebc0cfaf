"""Python PyTorch (the same wheel) reads a forge checkpoint of the default MLP with
torch.load(weights_only=True), loads it into the Python class with the same layers, and
predicts exactly what `forge eval` reports."""
import glob
import os
import re
import sys

import h5py
import torch

from harness import Harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from reference_mlp import MLP  # noqa: E402  the reference classifier, as the tutorial writes it

h = Harness()

model = MLP()
h.check(sum(p.numel() for p in model.parameters() if p.requires_grad) == 204042,
        "Python counts 204,042 trainable parameters for these layers")
h.check(sum(b.numel() for b in model.buffers()) == 513, "and 513 buffer elements")

# The default config on a 784-feature synthetic file (Fashion-MNIST's shape), 2 epochs.
h.run(["data", "synthetic", "--out", "syn784.h5", "--samples", "6000", "--features", "784", "--classes", "10"])
cfg = f"{h.repo}/configs/fashion_mnist_mlp.yaml"
sets = ["--set", "data.path=syn784.h5", "--set", "run.dir=run", "--set", "run.epochs=2",
        "--set", "data.normalize.scale=1", "--set", "data.normalize.mean=0", "--set", "data.normalize.std=1"]
h.run(["train", cfg] + sets, ranks=2)
path = sorted(glob.glob(h.path("run", "checkpoints", "ckpt-*.pt")))[-1]

ck = torch.load(path, weights_only=True)
h.check(isinstance(ck, dict), "torch.load(weights_only=True) returns a dict")
for key in ["model_state_dict", "optimizer_state_dict", "epoch", "best_metric"]:
    h.check(key in ck, f"the checkpoint has '{key}'")
h.check(ck["epoch"] == 2 and ck["world_size"] == 2, "epoch and world size", {k: ck[k] for k in ("epoch", "world_size")})
h.check(ck["lr_schedule"]["name"] == "cosine" and ck["lr_schedule"]["global_step"] == ck["global_step"]
        and ck["sampler"]["world_size"] == 2 and ck["sampler"]["seed"] == 42 and ck["sampler"]["position"] == 0,
        "the LR schedule's and the sampler's state are in the file", {k: ck.get(k) for k in ("lr_schedule", "sampler")})
# The synchronizer's bucket order (rebuilt from the gradients' arrival at 2 ranks) is a plain
# list of ints: a permutation of the trainable parameters (model.parameters() order).
order = ck.get("bucket_order")
h.check(isinstance(order, list) and sorted(order) == list(range(len(list(model.parameters())))),
        "the bucket order is a list of parameter indices", order)
expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
got = {k: tuple(v.shape) for k, v in ck["model_state_dict"].items()}
h.check(got == expected, "state dict keys and shapes equal the Python class's", (got, expected))

model.load_state_dict(ck["model_state_dict"], strict=True)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
try:
    opt.load_state_dict(ck["optimizer_state_dict"])
    h.check(all("momentum_buffer" in s for s in opt.state.values()) and len(opt.state) == 6,
            "torch.optim.SGD loads the optimizer state (a momentum buffer per parameter)")
except Exception as e:  # reported, not raised: the remaining checks still run
    h.check(False, "torch.optim.SGD loads the optimizer state", repr(e))

model.eval()
with h5py.File(h.path("syn784.h5")) as f:
    x = torch.from_numpy(f["test/features"][:]).float()
    y = torch.from_numpy(f["test/labels"][:])
with torch.no_grad():
    correct = (model(x).argmax(1) == y).sum().item()
py_acc = 100.0 * correct / len(y)

ev = h.run(["eval", cfg, "--checkpoint", path] + sets).stdout
m = re.search(r"accuracy\s+([0-9.]+)%", ev)
h.check(py_acc > 50.0, f"the model learned something ({py_acc:.2f}%), so agreement means something")
h.check(m is not None and abs(float(m.group(1)) - py_acc) < 0.005,
        f"Python's accuracy {py_acc:.2f}% equals forge eval's", ev)

# The reverse: a state dict saved by Python (an OrderedDict with _metadata) loads into forge.
torch.manual_seed(11)
python_model = MLP()
with torch.no_grad():  # give BatchNorm statistics that matter
    python_model.bn1.running_mean.uniform_(-0.5, 0.5)
    python_model.bn1.running_var.uniform_(0.5, 2.0)
    python_model.bn1.num_batches_tracked.fill_(7)
torch.save(python_model.state_dict(), h.path("python.pt"))
python_model.eval()
with torch.no_grad():
    logits = python_model(x)
    py2 = 100.0 * (logits.argmax(1) == y).sum().item() / len(y)
    py_loss = torch.nn.functional.cross_entropy(logits, y).item()
ev = h.run(["eval", cfg, "--checkpoint", "python.pt"] + sets).stdout
m = re.search(r"accuracy\s+([0-9.]+)%", ev)
lm = re.search(r"loss\s+([0-9.]+)", ev)
h.check(m is not None and abs(float(m.group(1)) - py2) < 0.005 and lm is not None and
        abs(float(lm.group(1)) - py_loss) < 1e-3,
        f"forge eval of a Python-saved state dict gives Python's accuracy {py2:.2f}% and loss {py_loss:.4f}", ev)
p = h.run(["train", cfg] + sets + ["--set", "run.dir=init", "--set", "model.init_from=python.pt"])
h.check("model initialized from python.pt" in p.stdout, "model.init_from takes a Python state dict", p.stdout)
torch.save({k: v for k, v in python_model.state_dict().items() if k != "fc2.bias"}, h.path("short.pt"))
p = h.run(["train", cfg] + sets + ["--set", "run.dir=short", "--set", "model.init_from=short.pt"], expect_rc=None)
h.check(p.returncode == 4 and "missing key 'fc2.bias'" in p.stderr, "a state dict that does not fit is refused by name",
        p.stderr)
# ckpt inspect still says what a plain state dict is not.
p = h.run(["ckpt", "inspect", "python.pt"], expect_rc=4)
h.check("is a torch archive but not a forge checkpoint" in p.stderr, "a Python state_dict is named for what it is",
        p.stderr)

h.finish()
