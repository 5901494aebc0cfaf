"""A checkpoint forge trained loads into the Python twin of its model (model_twins.py) and
the twin computes what forge computes. For `resnet` (synthetic images, classification) and
`gpt` (token ids from .npy files, language modelling), forge trains one epoch on 2 ranks;
Python reads the newest checkpoint with torch.load(weights_only=True), loads its
model_state_dict into the twin with load_state_dict(strict=True) and saves the twin's
eval-mode outputs on test batches; `forge model check` runs forge's model from the same
checkpoint on the same batches and compares: every element within 1e-5 + 1e-4 |python|
(model check's default tolerance). `forge eval` of the checkpoint reports the loss Python
computes over the whole test split."""
import re

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from harness import Harness, final_checkpoint
from model_twins import GPT, ResNet

h = Harness()


def train(name, model_yaml, data, extra=""):
    cfg = h.write(f"{name}.yaml", f"""\
run:
  dir: {name}_run
  seed: 3
  epochs: 1
  threads: 1
model:
{model_yaml}data:
  path: {data}
  batch_size: 16
  eval_batch_size: 64
checkpoint:
  every_epochs: 1
log:
  progress: lines
{extra}""")
    h.run(["train", cfg], ranks=2)
    path = final_checkpoint(h, f"{name}_run")
    h.check(path is not None, f"{name}: the run wrote a checkpoint")
    return cfg, path


def load_into(name, twin, path):
    """The twin with the checkpoint's model_state_dict loaded strictly (None if it does not load)."""
    ck = torch.load(path, weights_only=True)
    h.check(ck["epoch"] == 1 and ck["global_step"] > 0, f"{name}: the checkpoint is after 1 epoch of training",
            {k: ck[k] for k in ("epoch", "global_step")})
    sd = ck["model_state_dict"]
    mine = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in sd.items()}
    h.check(mine == theirs, f"{name}: forge's parameter and buffer names and shapes equal the twin's",
            {"only forge": sorted(set(theirs) - set(mine)), "only python": sorted(set(mine) - set(theirs)),
             "shapes": sorted(k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k])})
    try:
        twin.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        h.check(False, f"{name}: load_state_dict(strict=True)", e)
        return None
    h.check(True, f"{name}: the checkpoint loads into the twin with load_state_dict(strict=True)")
    return twin.eval()


def same_outputs(name, cfg, path, twin, batches):
    """Python's outputs of the twin against forge's (model check) on the same batches."""
    with torch.no_grad():
        outputs = {k: twin(v) for k, v in batches.items()}
    torch.save(batches, h.path(f"{name}_x.pt"))
    torch.save(outputs, h.path(f"{name}_y.pt"))
    p = h.run(["model", "check", cfg, "--state-dict", path, "--inputs", h.path(f"{name}_x.pt"), "--outputs",
               h.path(f"{name}_y.pt")], expect_rc=None)
    h.check(p.returncode == 0 and f"all {len(batches)} output(s) match Python's within atol 1e-05 + rtol 0.0001"
            in p.stdout, f"{name}: forge's outputs from the checkpoint equal the twin's (1e-5 + 1e-4 |python|)",
            p.stdout + p.stderr)


def forge_eval_loss(cfg, path):
    out = h.run(["eval", cfg, "--checkpoint", path]).stdout
    m = re.search(r"loss\s+([0-9.]+)", out)
    return (float(m.group(1)) if m else None), out


# resnet on 8 x 8 single-channel images: 400 synthetic samples of 64 features, 4 classes.
h.run(["data", "synthetic", "--out", "s.h5", "--samples", "400", "--features", "64", "--classes", "4"])
cfg, path = train("resnet", "  name: resnet\n  input_shape: [1, 8, 8]\n  depth: 8\n  width: 4\n  num_classes: 4\n",
                  "s.h5", "optimizer:\n  name: sgd\n  lr: 0.05\n  momentum: 0.9\n")
twin = load_into("resnet", ResNet((1, 8, 8), depth=8, width=4, num_classes=4), path) if path else None
if twin is not None:
    h.check(twin.layer3[0].shortcut[1].num_batches_tracked.item() > 0
            and twin.layer3[0].shortcut[1].running_var.sub(1).abs().max() > 1e-3,
            "resnet: the loaded BatchNorm statistics are the trained ones, not the initial 0 / 1")
    with h5py.File(h.path("s.h5")) as f:
        x = torch.from_numpy(f["test/features"][:]).float()
        y = torch.from_numpy(f["test/labels"][:])
    same_outputs("resnet", cfg, path, twin, {"test_head": x[:50], "images": x[50:60].reshape(-1, 1, 8, 8)})
    with torch.no_grad():
        py_loss = F.cross_entropy(twin(x), y).item()
    loss, out = forge_eval_loss(cfg, path)
    h.check(loss is not None and abs(loss - py_loss) < 1e-3,
            f"resnet: forge eval's test loss equals the twin's ({py_loss:.4f})", out)

# gpt on token ids < 50: rows of 17 ids, each an arithmetic progression modulo 50 (learnable
# from the context), written as int64 .npy files.
rng = np.random.default_rng(0)


def progressions(n):
    start, step = rng.integers(0, 50, (n, 1)), rng.integers(1, 4, (n, 1))
    return ((start + step * np.arange(17)) % 50).astype(np.int64)


np.save(h.path("tr.npy"), progressions(320))
np.save(h.path("te.npy"), progressions(64))
h.run(["data", "from-npy", "--out", "t.h5", "--train-features", "tr.npy", "--test-features", "te.npy"])
cfg, path = train("gpt", "  name: gpt\n  vocab_size: 50\n  context: 16\n  layers: 2\n  heads: 2\n  dim: 32\n"
                         "  dropout: 0.1\n", "t.h5",
                  "task:\n  name: language_model\noptimizer:\n  name: adamw\n  lr: 0.003\n  weight_decay: 0.01\n")
twin = load_into("gpt", GPT(vocab_size=50, context=16, layers=2, heads=2, dim=32, dropout=0.1), path) if path else None
if twin is not None:
    test = torch.from_numpy(np.load(h.path("te.npy")))
    inputs, targets = test[:, :-1], test[:, 1:]
    same_outputs("gpt", cfg, path, twin, {"test_head": inputs[:8], "short": inputs[8:12, :7]})
    with torch.no_grad():
        py_loss = F.cross_entropy(twin(inputs).reshape(-1, 50), targets.reshape(-1)).item()
    loss, out = forge_eval_loss(cfg, path)
    h.check(py_loss < np.log(50) - 0.1, f"gpt: the model learned something (test loss {py_loss:.3f} < ln 50 - 0.1)")
    h.check(loss is not None and abs(loss - py_loss) < 1e-3,
            f"gpt: forge eval's test loss (mean over tokens) equals the twin's ({py_loss:.4f})", out)

h.finish()
