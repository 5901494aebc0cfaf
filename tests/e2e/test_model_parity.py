"""forge model check: each built-in model and its Python twin. Python builds the twin, gives
it non-trivial BatchNorm statistics, saves its state dict and its eval-mode outputs for a
batch; `forge model check` loads the state dict strictly into the configured model and
compares. A twin that differs (a wrong layer order, another activation) must fail, and a
state dict that does not fit must be refused by name."""
import os
import sys

import torch
import torch.nn as nn

from harness import Harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from reference_mlp import MLP  # noqa: E402

h = Harness()


class CNN(nn.Module):
    """forge's `cnn`, as Python writes it (trainer/models/cnn.cpp)."""

    def __init__(self, c=1, hw=28, channels=(16, 32), hidden=256, classes=10, relu_after_fc1=True):
        super().__init__()
        self.shape = (c, hw, hw)
        self.conv1 = nn.Conv2d(c, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, padding=1)
        self.fc1 = nn.Linear(channels[1] * (hw // 4) * (hw // 4), hidden)
        self.dropout = nn.Dropout(0.25)
        self.fc2 = nn.Linear(hidden, classes)
        self.relu_after_fc1 = relu_after_fc1

    def forward(self, x):
        x = x.reshape(-1, *self.shape)
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = self.fc1(x.flatten(1))
        if self.relu_after_fc1:
            x = torch.relu(x)
        return self.fc2(self.dropout(x))


def twin_files(name, model, inputs):
    """Saves the twin's state dict, the inputs and its eval-mode outputs; returns the paths."""
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():  # BatchNorm statistics other than the initial 0 / 1
        for _ in range(3):
            model(inputs["batch0"] * 3 + 1)
    model.eval()
    sd, x, y = h.path(f"{name}.pt"), h.path(f"{name}_x.pt"), h.path(f"{name}_y.pt")
    torch.save(model.state_dict(), sd)
    torch.save(inputs, x)
    with torch.no_grad():
        torch.save({k: model(v) for k, v in inputs.items()}, y)
    return sd, x, y


def config(name, model_yaml):
    """A config of the model alone: model check reads no data, so data.path may be absent."""
    return h.write(f"{name}.yaml", f"model:\n{model_yaml}")


torch.manual_seed(0)
inputs = {"batch0": torch.randn(32, 784), "batch1": torch.rand(5, 1, 28, 28)}
mlp_cfg = config("mlp", "  name: mlp\n  dropout: 0.3\n")
cnn_cfg = config("cnn", "  name: cnn\n  dropout: 0.25\n")

for name, model, cfg in [("mlp", MLP(), mlp_cfg), ("cnn", CNN(), cnn_cfg)]:
    sd, x, y = twin_files(name, model, inputs)
    p = h.run(["model", "check", cfg, "--state-dict", sd, "--inputs", x, "--outputs", y], expect_rc=None)
    h.check(p.returncode == 0, f"{name}: forge's outputs equal the Python twin's (exit 0)", p.stdout + p.stderr)
    h.check("loads strictly into model " + name in p.stdout, f"{name}: the state dict loads strictly", p.stdout)
    h.check("batch0" in p.stdout and "batch1" in p.stdout and "max |diff|" in p.stdout,
            f"{name}: the largest difference of each output is printed", p.stdout)
    h.check("all 2 output(s) match Python's within atol 1e-05 + rtol 0.0001" in p.stdout,
            f"{name}: the tolerance is stated", p.stdout)
    # The state dict alone (no outputs): a strict load only.
    p = h.run(["model", "check", cfg, "--state-dict", sd])
    h.check("loads strictly" in p.stdout, f"{name}: --state-dict alone checks the load", p.stdout)

# A twin that is not the same network: same parameters, another forward (no ReLU after fc1).
sd, x, y = twin_files("cnn_wrong", CNN(relu_after_fc1=False), inputs)
p = h.run(["model", "check", cnn_cfg, "--state-dict", sd, "--inputs", x, "--outputs", y], expect_rc=None)
h.check(p.returncode == 1 and "outputs differ from Python's" in p.stderr and "NO" in p.stdout,
        "a twin with another forward fails with exit 1 and names the outputs that differ", p.stdout + p.stderr)

# A state dict of another shape: refused by name, exit 4 (checkpoint error).
sd, _, _ = twin_files("cnn_narrow", CNN(channels=(8, 32)), inputs)
p = h.run(["model", "check", cnn_cfg, "--state-dict", sd], expect_rc=None)
h.check(p.returncode == 4 and "shape mismatch for 'conv1.weight'" in p.stderr,
        "a state dict of other shapes is refused naming the tensor", p.stderr)
torch.save({k: v for k, v in MLP().state_dict().items() if k != "bn1.running_var"}, h.path("missing.pt"))
p = h.run(["model", "check", mlp_cfg, "--state-dict", h.path("missing.pt")], expect_rc=None)
h.check(p.returncode == 4 and "missing key 'bn1.running_var'" in p.stderr, "a missing key is named", p.stderr)
# Inputs and outputs that do not pair up.
torch.save({"other": torch.zeros(2, 10)}, h.path("other_y.pt"))
sd, x, _ = twin_files("mlp2", MLP(), inputs)
p = h.run(["model", "check", mlp_cfg, "--state-dict", sd, "--inputs", x, "--outputs", h.path("other_y.pt")],
          expect_rc=None)
h.check(p.returncode == 2 and "has no output 'batch0'" in p.stderr, "outputs without a matching input key", p.stderr)

# Inputs that are no dict of tensors, or that the model cannot take: exit 2, named.
torch.save(torch.zeros(2, 784), h.path("bare.pt"))
p = h.run(["model", "check", mlp_cfg, "--state-dict", sd, "--inputs", h.path("bare.pt"), "--outputs", y],
          expect_rc=None)
h.check(p.returncode == 2 and "is not a dict of tensors" in p.stderr, "a bare tensor as --inputs: exit 2, said why",
        p.stderr)
torch.save({"batch0": torch.zeros(3, 100)}, h.path("narrow_x.pt"))
torch.save({"batch0": torch.zeros(3, 10)}, h.path("narrow_y.pt"))
p = h.run(["model", "check", mlp_cfg, "--state-dict", sd, "--inputs", h.path("narrow_x.pt"), "--outputs",
           h.path("narrow_y.pt")], expect_rc=None)
h.check(p.returncode == 2 and "input 'batch0' of shape [3, 100] is not what model mlp takes" in p.stderr,
        "an input of the wrong shape: exit 2, naming the input", p.stderr)

h.finish()
