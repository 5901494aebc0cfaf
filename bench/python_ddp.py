"""The Python baseline: the same MLP, data, batch, optimizer and threads per rank as
forge's main job, trained by PyTorch DistributedDataParallel (gloo). Start it with one
process per rank under mpirun (it reads Open MPI's rank variables) or torchrun (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Prints one JSON line from rank 0."""
import argparse
import json
import os
import time

import h5py
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from reference_mlp import MLP


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    os.environ.setdefault("RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    os.environ.setdefault("WORLD_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29571")
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(42)
    with h5py.File(a.data) as f:
        x = torch.from_numpy(f["train/features"][:]).float().div_(255).sub_(0.2860).div_(0.3530)
        y = torch.from_numpy(f["train/labels"][:])
    model = DDP(MLP())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    n = len(y)
    per_rank = (n + world - 1) // world
    rates = []
    for epoch in range(a.epochs):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(n, generator=g)
        order = torch.cat([order, order[: per_rank * world - n]])[rank::world]
        model.train()
        dist.barrier()
        start = time.perf_counter()
        for first in range(0, per_rank, a.batch):
            idx = order[first:first + a.batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        dist.barrier()
        rates.append(per_rank * world / (time.perf_counter() - start))
    if rank == 0:
        print(json.dumps({"epochs": a.epochs, "samples_per_s": rates, "mean": sum(rates) / len(rates)}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
