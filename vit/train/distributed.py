"""Data-parallel training through torchrun (PyTorch's own launcher and DDP; nothing home-made).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1 each process joins a process
group (gloo on CPU, nccl on GPU), trains on its own shard of every epoch (DistributedSampler) and
averages gradients with the others (DistributedDataParallel). Sums (loss, correct, seen, confusion
matrices) are all-reduced so every rank logs and selects on the same numbers; only rank 0 writes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[Dist, str]:
    """Join torchrun's process group if there is one; returns it and the device this rank uses."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    log.info("rank %d/%d (local %d) on %s", rank, world, local_rank, device)
    return Dist(rank, local_rank, world), device


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], d: Dist, device: str) -> list[float]:
    """Element-wise sum over ranks (float64, so counts stay exact)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def reduce_eval(m: dict, d: Dist, device: str) -> dict:
    """Combine per-rank `run_eval` results over disjoint shards into the whole split's metrics."""
    if not d.enabled:
        return m
    confusion = torch.tensor(m["confusion_matrix"], dtype=torch.float64, device=device)
    dist.all_reduce(confusion, op=dist.ReduceOp.SUM)
    loss_sum, n = all_sum([m["loss"] * m["n_images"], m["n_images"]], d, device)
    confusion = confusion.cpu().long()
    per_class = confusion.diag() / confusion.sum(1).clamp(min=1)
    return {**m, "accuracy": confusion.diag().sum().item() / max(n, 1), "n_images": int(n),
            "loss": loss_sum / max(n, 1), "per_class_accuracy": dict(zip(m["class_names"], per_class.tolist())),
            "confusion_matrix": confusion.tolist()}

