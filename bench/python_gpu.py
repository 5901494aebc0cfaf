"""The Python baseline on one GPU: the same MLP, data, batch, optimizer and per-batch input
pipeline as forge's main job on a GPU (batches gathered and normalized on the host, pinned,
copied to the GPU without blocking), trained by plain PyTorch. Also times a second Python
variant with the whole data set resident on the GPU (no host pipeline at all), as the
upper bound a hand-tuned Python script could reach. Prints one JSON line.

usage: python3 bench/python_gpu.py --data data/fashion_mnist.h5 [--epochs 3] [--batch 64] [--bf16]
"""
import argparse
import json
import time

import h5py
import torch
import torch.nn as nn

from reference_mlp import MLP  # the main job's model, forge's layer names


def train(x_u8, y, batch, epochs, bf16, resident):
    dev = torch.device("cuda")
    torch.manual_seed(42)
    model = MLP().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    if resident:
        x_src, y_src = x_u8.to(dev), y.to(dev)
    else:
        x_src, y_src = x_u8, y
    n = len(y)
    rates = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(n, generator=g)
        if resident:
            order = order.to(dev)
        model.train()
        loss_sum = torch.zeros((), device=dev)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for first in range(0, n, batch):
            idx = order[first:first + batch]
            xb = x_src.index_select(0, idx).float().mul_(1 / 255).sub_(0.2860).div_(0.3530)
            yb = y_src.index_select(0, idx)
            if not resident:
                xb = xb.pin_memory().to(dev, non_blocking=True)
                yb = yb.pin_memory().to(dev, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                logits = model(xb)
            loss = loss_fn(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
        torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
    return rates, float(loss_sum) / n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--bf16", action="store_true")
    a = p.parse_args()
    with h5py.File(a.data) as f:
        x = torch.from_numpy(f["train/features"][:]).reshape(-1, 784)
        y = torch.from_numpy(f["train/labels"][:]).long()
    host, host_loss = train(x, y, a.batch, a.epochs, a.bf16, resident=False)
    resident, _ = train(x, y, a.batch, a.epochs, a.bf16, resident=True)
    # The first epoch carries CUDA's warm-up; later ones are the steady state.
    steady = lambda r: sorted(r[1:])[len(r[1:]) // 2] if len(r) > 1 else r[0]
    print(json.dumps({
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": a.batch, "bf16": a.bf16,
        "host_pipeline_samples_per_s": steady(host), "resident_samples_per_s": steady(resident),
        "host_pipeline_per_epoch": host, "resident_per_epoch": resident, "last_epoch_loss": host_loss,
    }))


if __name__ == "__main__":
    main()
