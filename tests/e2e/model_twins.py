"""forge's `resnet` and `gpt` as Python writes them: the same state-dict names and shapes as
trainer/models/resnet.cpp and trainer/models/gpt.cpp, and the same eval-mode forward, so a
forge checkpoint's model_state_dict loads strictly into them and the other way round.
Initial weights are PyTorch's defaults, not forge's: a twin is for loading state dicts.
forge's `mlp` is bench/reference_mlp.py's MLP (re-exported here); its `cnn` is in
test_model_parity.py."""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from reference_mlp import MLP  # noqa: E402,F401  forge's default `mlp`


class BasicBlock(nn.Module):
    """conv1 3x3 -> bn1 -> ReLU -> conv2 3x3 -> bn2, plus the input (through `shortcut`, a 1x1
    conv and BatchNorm, where the width or the resolution changes), then ReLU. Without a
    change the block has no `shortcut` attribute: the input is added as it is."""

    def __init__(self, cin, cout, stride, shortcut_bn=True, relu_before_add=False):
        super().__init__()
        self.relu_before_add = relu_before_add  # True: a wrong twin for the tests
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            # shortcut_bn=False: a wrong twin for the tests (no BatchNorm on the shortcut).
            parts = [nn.Conv2d(cin, cout, 1, stride=stride, bias=False)]
            if shortcut_bn:
                parts.append(nn.BatchNorm2d(cout))
            self.shortcut = nn.Sequential(*parts)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        if self.relu_before_add:
            y = torch.relu(y)
        return torch.relu(y + (self.shortcut(x) if hasattr(self, "shortcut") else x))


class ResNet(nn.Module):
    """forge's `resnet`: input_shape [C, H, W], depth 6n + 2, width w, num_classes."""

    def __init__(self, input_shape=(1, 28, 28), depth=20, width=16, num_classes=10, shortcut_bn=True,
                 relu_before_add=False):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth {depth} is not 6n + 2 with n >= 1")
        n = (depth - 2) // 6
        self.shape = tuple(input_shape)
        self.conv1 = nn.Conv2d(self.shape[0], width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)

        def stage(cin, cout, stride):
            return nn.Sequential(*[BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1, shortcut_bn,
                                              relu_before_add) for b in range(n)])

        self.layer1 = stage(width, width, 1)
        self.layer2 = stage(width, 2 * width, 2)
        self.layer3 = stage(2 * width, 4 * width, 2)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x.reshape(-1, *self.shape))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.heads, self.dropout = heads, dropout

    def forward(self, x):
        b, t, d = x.shape
        # [b, t, 3d] -> three [b, heads, t, d / heads]
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class GptMlp(nn.Module):
    def __init__(self, dim, dropout, gelu="none"):
        super().__init__()
        self.fc = nn.Linear(dim, 4 * dim)
        self.proj = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)
        self.gelu = gelu  # "none": exact (erf), as forge; "tanh": a wrong twin for the tests

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.gelu)))


class Block(nn.Module):
    def __init__(self, dim, heads, dropout, gelu="none"):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = GptMlp(dim, dropout, gelu)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """forge's `gpt`: int64 token ids [batch, positions <= context] -> logits [batch,
    positions, vocab_size]; the output weights are tok_emb.weight (no head parameter)."""

    def __init__(self, vocab_size=256, context=128, layers=4, heads=4, dim=128, dropout=0.1, gelu="none"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(context, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(dim, heads, dropout, gelu) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.context = context

    def forward(self, tokens):
        t = tokens.shape[1]
        if t > self.context:
            raise ValueError(f"a sequence of {t} tokens is longer than the context {self.context}")
        h = self.drop(self.tok_emb(tokens) + self.pos_emb(torch.arange(t, device=tokens.device)))
        for block in self.blocks:
            h = block(h)
        return F.linear(self.ln_f(h), self.tok_emb.weight)
