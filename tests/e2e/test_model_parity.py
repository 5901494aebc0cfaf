"""forge model check: each built-in model and its Python twin. Python builds the twin, gives
it non-trivial BatchNorm statistics, saves its state dict and its eval-mode outputs for a
batch; `forge model check` loads the state dict strictly into the configured model and
compares. A twin that differs (a wrong layer order, another activation) must fail, and a
state dict that does not fit must be refused by name. The tolerance is model check's
default for every model: |forge - python| <= 1e-5 + 1e-4 |python| for each element.
The resnet and gpt twins are in model_twins.py."""
import os
import sys

import torch
import torch.nn as nn

from harness import Harness
from model_twins import GPT, ResNet

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


def check_passes(name, cfg, sd, x, y, outputs):
    p = h.run(["model", "check", cfg, "--state-dict", sd, "--inputs", x, "--outputs", y], expect_rc=None)
    h.check(p.returncode == 0 and "loads strictly into model " in p.stdout,
            f"{name}: the state dict loads strictly and forge's outputs equal the Python twin's (exit 0)",
            p.stdout + p.stderr)
    h.check(f"all {outputs} output(s) match Python's within atol 1e-05 + rtol 0.0001" in p.stdout,
            f"{name}: every output is within the stated tolerance", p.stdout)


def check_refused(name, cfg, sd, problem):
    p = h.run(["model", "check", cfg, "--state-dict", sd], expect_rc=None)
    h.check(p.returncode == 4 and problem in p.stderr, f"{name}: refused (exit 4) with \"{problem}\"", p.stderr)


def check_differs(name, cfg, sd, x, y):
    p = h.run(["model", "check", cfg, "--state-dict", sd, "--inputs", x, "--outputs", y], expect_rc=None)
    h.check(p.returncode == 1 and "outputs differ from Python's" in p.stderr and "NO" in p.stdout,
            f"{name}: a twin with another forward fails with exit 1", p.stdout + p.stderr)


def renamed(sd_path, old, new, name):
    """A copy of a saved state dict with one key renamed."""
    sd = torch.load(sd_path, weights_only=True)
    torch.save({(new if k == old else k): v for k, v in sd.items()}, h.path(name))
    return h.path(name)


# resnet: depth 8 (one basic block a stage), width 8, on Fashion-MNIST's shape and on small
# RGB images; both take flat samples and images.
resnets = [("resnet", ResNet((1, 28, 28), 8, 8, 10), "[1, 28, 28]", 10,
            {"batch0": torch.randn(32, 784), "batch1": torch.rand(5, 1, 28, 28)}),
           ("resnet_rgb", ResNet((3, 16, 16), 8, 8, 7), "[3, 16, 16]", 7,
            {"batch0": torch.randn(32, 768), "batch1": torch.rand(5, 3, 16, 16), "one": torch.randn(1, 3, 16, 16)})]
for name, model, shape, classes, batches in resnets:
    cfg = config(name, f"  name: resnet\n  input_shape: {shape}\n  depth: 8\n  width: 8\n  num_classes: {classes}\n")
    sd, x, y = twin_files(name, model, batches)
    bn = torch.load(sd, weights_only=True)
    h.check(bn["layer2.0.shortcut.1.running_var"].sub(1).abs().max() > 0.01 and bn["bn1.num_batches_tracked"] == 3,
            f"{name}: the twin's BatchNorm statistics are not the initial ones")
    check_passes(name, cfg, sd, x, y, len(batches))
resnet_cfg = h.path("resnet.yaml")
# Wrong twins: ReLU on the residual branch before the addition (same parameters, another
# forward); no BatchNorm on the shortcut (its parameters are missing); a renamed key.
sd, x, y = twin_files("resnet_relu_before_add", ResNet((1, 28, 28), 8, 8, 10, relu_before_add=True), inputs)
check_differs("resnet with ReLU before the addition", resnet_cfg, sd, x, y)
sd, _, _ = twin_files("resnet_no_shortcut_bn", ResNet((1, 28, 28), 8, 8, 10, shortcut_bn=False), inputs)
check_refused("resnet without the shortcut's BatchNorm", resnet_cfg, sd, "missing key 'layer2.0.shortcut.1.weight'")
sd, _, _ = twin_files("resnet_ok", ResNet((1, 28, 28), 8, 8, 10), inputs)
check_refused("resnet with a renamed key", resnet_cfg,
              renamed(sd, "layer1.0.bn2.running_mean", "layer1.0.bn2.mean", "resnet_renamed.pt"),
              "missing key 'layer1.0.bn2.running_mean'")
check_refused("resnet with a renamed key", resnet_cfg, h.path("resnet_renamed.pt"),
              "unexpected key 'layer1.0.bn2.mean'")
check_refused("resnet of another depth", resnet_cfg, twin_files("resnet14", ResNet((1, 28, 28), 14, 8, 10), inputs)[0],
              "unexpected key 'layer1.1.conv1.weight'")


def gpt_files(name, model, batches):
    """As twin_files for a model of token ids: LayerNorms other than the identity (there is
    no BatchNorm), the state dict, the int64 inputs and the eval-mode outputs."""
    torch.manual_seed(2)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if ".ln" in key or key.startswith("ln_f"):
                p.add_(0.2 * torch.randn_like(p))
    model.eval()
    sd, x, y = h.path(f"{name}.pt"), h.path(f"{name}_x.pt"), h.path(f"{name}_y.pt")
    torch.save(model.state_dict(), sd)
    torch.save(batches, x)
    with torch.no_grad():
        torch.save({k: model(v) for k, v in batches.items()}, y)
    return sd, x, y


# gpt: vocab 50, context 16, 2 layers of 2 heads, dim 32; sequences of the full context and
# shorter ones. Dropout 0.1 is configured (eval mode leaves it out on both sides).
gpt_cfg = config("gpt", "  name: gpt\n  vocab_size: 50\n  context: 16\n  layers: 2\n  heads: 2\n  dim: 32\n"
                        "  dropout: 0.1\n")
torch.manual_seed(3)
tokens = {"full": torch.randint(0, 50, (4, 16)), "short": torch.randint(0, 50, (3, 7)),
          "edges": torch.tensor([[0, 49, 0, 49, 1, 48, 2]])}


def gpt_twin(**kw):
    return GPT(vocab_size=50, context=16, layers=2, heads=2, dim=32, dropout=0.1, **kw)


torch.manual_seed(4)
sd, x, y = gpt_files("gpt", gpt_twin(), tokens)
got = torch.load(sd, weights_only=True)
h.check(not any("head" in k for k in got) and len(got) == 2 + 2 * 12 + 2,
        "gpt: the twin's state dict has no output head (tied to tok_emb) and 28 tensors", sorted(got))
h.check(torch.load(x, weights_only=True)["full"].dtype == torch.int64, "gpt: the inputs are int64 token ids")
check_passes("gpt", gpt_cfg, sd, x, y, len(tokens))
# Wrong twins: the tanh approximation of GELU (same parameters); a renamed key; an untied
# output head (nanoGPT's lm_head.weight, an unexpected key); a wider model.
torch.manual_seed(4)
sd_tanh, x, y = gpt_files("gpt_tanh", gpt_twin(gelu="tanh"), tokens)
check_differs("gpt with tanh-approximated GELU", gpt_cfg, sd_tanh, x, y)
check_refused("gpt with a renamed key", gpt_cfg,
              renamed(sd, "blocks.1.attn.qkv.weight", "blocks.1.attn.c_attn.weight", "gpt_renamed.pt"),
              "missing key 'blocks.1.attn.qkv.weight'")
check_refused("gpt with a renamed key", gpt_cfg, h.path("gpt_renamed.pt"),
              "unexpected key 'blocks.1.attn.c_attn.weight'")
untied = dict(got)
untied["lm_head.weight"] = got["tok_emb.weight"].clone()
torch.save(untied, h.path("gpt_untied.pt"))
check_refused("gpt with a separate output head", gpt_cfg, h.path("gpt_untied.pt"), "unexpected key 'lm_head.weight'")
check_refused("gpt of another width", gpt_cfg,
              gpt_files("gpt_wide", GPT(vocab_size=50, context=16, layers=2, heads=2, dim=64), tokens)[0],
              "shape mismatch for 'tok_emb.weight'")
# A sequence longer than the context: exit 2, naming the input.
torch.save({"long": torch.zeros(2, 17, dtype=torch.int64)}, h.path("gpt_long_x.pt"))
torch.save({"long": torch.zeros(2, 17, 50)}, h.path("gpt_long_y.pt"))
p = h.run(["model", "check", gpt_cfg, "--state-dict", sd, "--inputs", h.path("gpt_long_x.pt"), "--outputs",
           h.path("gpt_long_y.pt")], expect_rc=None)
h.check(p.returncode == 2 and "input 'long' of shape [2, 17] is not what model gpt takes" in p.stderr,
        "gpt: a sequence longer than the context is refused naming the input (exit 2)", p.stderr)

h.finish()
