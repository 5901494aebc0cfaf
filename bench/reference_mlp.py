"""The reference classifier of forge's main job in Python PyTorch, as the widely copied
tutorial writes it: 784-256-10 with BatchNorm1d, ReLU and Dropout 0.3 (204,042 trainable
parameters, the same state-dict names as forge's `mlp`). Shared by the Python baselines in
bench/ and the tests that load forge checkpoints into Python."""
import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.bn1 = nn.BatchNorm1d(256)
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc2(self.dropout(torch.relu(self.bn1(self.fc1(x.flatten(1))))))
