"""Data-parallel training on torch.distributed (``torchrun --nproc-per-node N -m kdforge train``).

Every process holds the whole student, teacher and data; each optimiser step takes one
global batch and every rank computes on its share of it. The trained model is wrapped in
torch's DistributedDataParallel (never a frozen teacher); the other trainable parts
(projectors, temperatures, a trainable teacher) are averaged after backward. Each rank's
loss is weighted by its share of the global batch, so the averaged gradient is exactly the
gradient of the global batch. So a run on N processes follows the single-process run with
the same global batch, and resumes on any number of processes (positions count global
batches). Only rank 0 logs and writes files. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def setup() -> tuple[int, int]:
    """(rank, world size); joins the process group that ``torchrun`` describes, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return not active() or dist.get_rank() == 0


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(tensor)
    return tensor


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """The trained model inside torch's DistributedDataParallel: its gradients are averaged
    across ranks during backward, overlapping the communication with the computation."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.cuda.current_device()] if next(module.parameters()).is_cuda else None
    return DistributedDataParallel(module, device_ids=device_ids)


def batch_share(local: int) -> float:
    """This rank's share of the global batch (shares differ when a batch does not split evenly)."""
    return local / float(all_reduce_sum(torch.tensor(float(local))))


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of parameters outside the DDP-wrapped model (projectors,
    temperatures, a trainable teacher) across ranks, in one flat buffer."""
    if not active() or not params:
        return
    for p in params:  # every rank must send the same buffer: a parameter unused on this rank adds zeros
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params]) / dist.get_world_size()
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()
