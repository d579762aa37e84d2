"""Data-parallel training on torch.distributed (``torchrun --nproc-per-node N -m kdforge train``).

Every process holds the whole student, teacher and data; each optimiser step takes one
global batch, every rank computes on its share of it, and the gradients of everything
trainable (student, projectors, temperatures, a trainable teacher; never a frozen
teacher) are summed across ranks weighted by each rank's share, which is exactly the
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


def sync_gradients(params: list[torch.nn.Parameter], share: float) -> None:
    """Replace each rank's gradients (of its mean loss over its ``share`` of the global
    batch) by the gradient of the global mean: Σ_ranks share_r · grad_r, in one flat buffer."""
    if not active():
        return
    for p in params:  # every rank must send the same buffer: a parameter unused on this rank adds zeros
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) * share
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
