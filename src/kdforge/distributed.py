"""Data-parallel training on torch.distributed (``torchrun --nproc-per-node N -m kdforge train``).

Every process holds the whole student, teacher and data (unless sharded, below); each optimiser step takes one
global batch and every rank computes on its share of it. The trained model is wrapped in
torch's DistributedDataParallel (never a frozen teacher); the other trainable parts
(projectors, temperatures, a trainable teacher) are averaged after backward. Each rank's
loss is weighted by its share of the global batch, so the averaged gradient is exactly the
gradient of the global batch. So a run on N processes follows the single-process run with
the same global batch, and resumes on any number of processes (positions count global
batches). Only rank 0 logs and writes files. NCCL on GPUs, gloo on CPUs.

With ``train.fsdp`` the student is sharded instead of replicated (FSDP2 ``fully_shard``,
each block then the whole model): every rank holds 1/N of its parameters, gradients and
optimiser state. Checkpoints then hold the whole, gathered weights and optimiser state
(keyed by parameter name), so they resume on any world size, with or without FSDP. With
``teacher.shard`` the frozen teacher is sharded the same way (:func:`shard_teacher`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
import torch.distributed as dist

from kdforge.errors import KdforgeError
from kdforge.taps import block_names


def launched_world() -> int:
    """How many processes ``torchrun`` started with this one (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup() -> tuple[int, int]:
    """(rank, world size); joins the process group that ``torchrun`` describes, if any."""
    if launched_world() == 1:
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


def on_main(work: Callable[[], Any]) -> Any:
    """Run ``work`` on rank 0 alone (it writes shared files); the other ranks wait for it and
    get its result, or the same error."""
    if not active():
        return work()
    outcome: tuple[Any, str | None] | None = None
    if is_main():
        try:
            outcome = (work(), None)
        except KdforgeError as err:  # tell the waiting ranks instead of leaving them at the barrier
            outcome = (None, str(err))
    result, error = broadcast(outcome)
    if error is not None:
        raise KdforgeError(error)
    return result


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
    # every rank must send the same buffer: a parameter unused on this rank adds zeros
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) / dist.get_world_size()
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = g.copy_(flat[offset : offset + p.numel()].view_as(g))
        offset += p.numel()


# ----------------------------------------------------------------------------- FSDP


def shard(module: torch.nn.Module) -> None:
    """Shard ``module`` in place across the ranks (FSDP2): each block of its block list
    (found as for layer mappings), then the whole model. Build the optimiser afterwards:
    sharding replaces the parameters."""
    try:
        blocks = block_names(module, "auto")
    except KdforgeError:  # no block list (e.g. a plain MLP): one unit, the whole model
        blocks = []
    from torch.distributed.fsdp import fully_shard

    modules = dict(module.named_modules())
    for name in blocks:
        fully_shard(modules[name])
    fully_shard(module)


def shard_teacher(
    module: torch.nn.Module, device: torch.device, weights: Iterable[dict[str, torch.Tensor]] | None = None
) -> None:
    """Shard a frozen teacher in place across the ranks (FSDP2 on each block of its block list, then the whole
    model) and put it on ``device``: each rank holds 1/N of its weights; a forward gathers one block's at a time and
    frees them after it, the whole model's (embeddings, head) included, since no backward will need them. Every
    rank must run the teacher's forwards together. A module built with its parameters on the meta device (nothing
    allocated) takes its ``weights`` part by part (whole tensors, one weight file at a time): each rank keeps its
    own shard of each, so no rank ever holds the whole teacher."""
    try:
        blocks = block_names(module, "auto")
    except KdforgeError:
        raise KdforgeError(
            "teacher.shard shards a teacher block by block, but this one has no block list (a ModuleList of its "
            "layers); drop teacher.shard"
        ) from None
    from torch.distributed.fsdp import FSDPModule, fully_shard

    modules = dict(module.named_modules())
    for name in blocks:
        fully_shard(modules[name])
    fully_shard(module)  # each rank's shards go to the device; its buffers follow
    for part in module.modules():
        part._buffers = {name: None if b is None else b.to(device) for name, b in part._buffers.items()}
    if weights is not None:
        _load_shards(module, weights)
    module.register_forward_hook(lambda root, inputs, output: cast(FSDPModule, root).reshard())
    if hasattr(module, "sharded"):
        setattr(module, "sharded", True)  # noqa: B010 (its own flag: a teacher handing its head hands a copy)


def _load_shards(module: torch.nn.Module, weights: Iterable[dict[str, torch.Tensor]]) -> None:
    """Fill a sharded module's meta parameters from whole tensors, each rank keeping its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    for part in weights:
        set_model_state_dict(
            module, cast(dict[str, Any], part), options=StateDictOptions(full_state_dict=True, strict=False)
        )
    if missing := [name for name, parameter in module.named_parameters() if parameter.is_meta]:
        raise KdforgeError(
            f"the teacher's weight files hold no {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
        )


def sharded(module: torch.nn.Module) -> bool:
    if not active():  # FSDP shards across a process group: none, nothing sharded
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


# torch.distributed.checkpoint takes about a second to import: only what saves or loads checkpoints imports it, when it
# does.
# Sharded state is gathered whole onto rank 0's CPU to save, and broadcast from rank 0 to load.
def _gather() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _scatter() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


def model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s whole weights; for a sharded module, gathered on rank 0 ({} on the
    others): every rank must call it."""
    if not sharded(module):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return cast(dict[str, torch.Tensor], get_model_state_dict(module, options=_gather()))


def load_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole weights; a sharded module takes rank 0's and shards them (every rank calls)."""
    if not sharded(module):
        module.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    for part in module.modules():  # an eval forward leaves the root's parameters gathered: shard them first
        if isinstance(part, FSDPModule):
            part.reshard()
    set_model_state_dict(module, cast(dict[str, Any], state), options=_scatter())


def gathered(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A sharded module's whole weights on every rank (to rebuild it unsharded)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return cast(dict[str, torch.Tensor], get_model_state_dict(module, options=StateDictOptions(full_state_dict=True)))


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, is_sharded: bool) -> dict[str, Any]:
    """The optimiser's state keyed by parameter names in ``model`` (whole, on rank 0, when
    sharded), so it loads on any world size, sharded or not."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_gather() if is_sharded else None)


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], is_sharded: bool
) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_scatter() if is_sharded else None)


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """Scale gradients so that their global norm is at most ``max_norm``; the norm of a
    sharded parameter's gradient is taken over all its shards."""
    grads = [p.grad for p in params if p.grad is not None]
    if not active():  # only a sharded (FSDP) parameter's gradient is a DTensor
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    from torch.distributed.tensor import DTensor

    if not any(isinstance(g, DTensor) for g in grads):
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    norms = [torch.linalg.vector_norm(g.float()) for g in grads]
    total = torch.stack([n.full_tensor() if isinstance(n, DTensor) else n for n in norms]).norm()
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    for g in grads:
        g.mul_(scale)
