"""The TM family's part of ``init_from_teacher``: after the matching tensors are copied
(:func:`kdforge.transfer.copy_matching`), each TM feed-forward block learns to do what the
teacher MLP it replaces did. Module-wise distillation: the teacher runs on training batches,
each of its MLPs' inputs and outputs is recorded, and the student's TM block in the same place
learns to map those inputs to those outputs (MSE over the output variance), for a set number
of steps, before end-to-end distillation starts.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.families.tm.blocks import TMFeedForward
from kdforge.families.tm.convert import is_mlp
from kdforge.transfer import counterparts


def feedforward_pairs(student: nn.Module, teacher: nn.Module) -> dict[str, tuple[TMFeedForward, str, nn.Module]]:
    """student TM block name -> (block, teacher MLP name, teacher MLP), matched by (renamed) name;
    empty for a student without TM blocks (then ``init_from_teacher`` only copies)."""
    lookup = counterparts(name for name, _ in teacher.named_modules())
    teacher_modules = dict(teacher.named_modules())
    pairs = {}
    for name, block in student.named_modules():
        if isinstance(block, TMFeedForward) and name in lookup and is_mlp(teacher_modules[lookup[name]]):
            origin = lookup[name]
            mlp = teacher_modules[origin]
            width = next(m for m in mlp.modules() if isinstance(m, nn.Linear)).in_features
            if width != block.proj_in.in_features:
                raise KdforgeError(
                    f"init_from_teacher: the student's {name} is {block.proj_in.in_features} wide but the teacher's "
                    f"{origin} is {width}; give the student the teacher's embed_dim"
                )
            pairs[name] = (block, origin, mlp)
    blocks = [n for n, m in student.named_modules() if isinstance(m, TMFeedForward)]
    if blocks and not pairs:
        mlps = [n for n, m in teacher.named_modules() if is_mlp(m)]
        raise KdforgeError(
            "init_from_teacher: no TM block of the student has a teacher MLP in the same place (student TM blocks "
            f"{blocks[:6]}, "
            f"teacher MLPs {mlps[:6]}); give the student the teacher's architecture (vit -> vit_tm, swin -> swin_tm, "
            "or mlp_to_tm with base: the teacher's model)"
        )
    teacher_tensors = counterparts(name for name, _ in teacher.named_parameters())
    if any(name.startswith("patch_norm.") and name not in teacher_tensors for name, _ in student.named_parameters()):
        raise KdforgeError(
            "init_from_teacher: the student normalises its patch embedding (patch_norm) but "
            "the teacher has no such norm, so the copied blocks would see other inputs; give the student "
            "patch_norm: false"
        )
    return pairs


def fit_feedforwards(
    pairs: dict[str, tuple[TMFeedForward, str, nn.Module]],
    teacher: Callable[[torch.Tensor], Any],
    train: Any,
    val: Any,
    steps: int,
    lr: float,
    track: Callable[[Any, str], Any] = lambda it, _: it,
) -> dict[str, dict[str, Any]]:
    """Train each TM block on its teacher MLP's recorded inputs -> outputs for ``steps`` steps
    of ``train`` batches (Adam, ``lr``); returns per block the relative MSE before and the R²
    on ``val`` after. ``teacher`` is called on inputs; hooks record its MLPs."""
    blocks = {name: block for name, (block, _, _) in pairs.items()}
    optimizer = torch.optim.Adam([p for block in blocks.values() for p in block.parameters()], lr=lr)
    first: dict[str, float] = {}
    with _recording(pairs) as seen:
        for block in blocks.values():
            block.train()
        batches = _forever(train)
        for _ in track(range(steps), "init_from_teacher: TM blocks learn the teacher MLPs"):
            x, *_ = next(batches)
            with torch.no_grad():
                teacher(x)
            errors = {name: _relative_mse(block(seen[name][0]), seen[name][1]) for name, block in blocks.items()}
            first = first or {name: float(e.detach()) for name, e in errors.items()}
            optimizer.zero_grad(set_to_none=True)
            torch.stack(
                list(errors.values())
            ).sum().backward()  # blocks are independent: one sum trains each on its own error
            optimizer.step()
        fit = _r2(blocks, seen, teacher, val)
    return {
        name: {"teacher_mlp": origin, "steps": steps, "relative_mse_start": first.get(name), "r2_val": fit[name]}
        for name, (_, origin, _) in pairs.items()
    }


def _forever(batches: Any) -> Iterator[Any]:
    for epoch in itertools.count():
        yield from batches.epoch(epoch)


def _relative_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction.float() - target.float()).square().mean() / target.float().var().clamp_min(1e-8)


@contextlib.contextmanager
def _recording(
    pairs: dict[str, tuple[TMFeedForward, str, nn.Module]],
) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Forward hooks on the teacher MLPs: ``seen[block] = (input, output)`` of their last call."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        mlp.register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(name, (args[0].detach(), out.detach()))
        )
        for name, (_, _, mlp) in pairs.items()
    ]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def _r2(
    blocks: dict[str, TMFeedForward], seen: dict[str, Any], teacher: Callable[[torch.Tensor], Any], val: Any
) -> dict[str, float]:
    """1 − Σ squared error / Σ squared deviation of the teacher MLP outputs, over ``val``."""
    error = {name: 0.0 for name in blocks}
    spread = {name: 0.0 for name in blocks}
    for block in blocks.values():
        block.eval()
    for x, *_ in val.epoch(0):
        teacher(x)
        for name, block in blocks.items():
            inputs, target = seen[name]
            target = target.float().flatten(0, -2)  # [samples · tokens, D]
            error[name] += float((block(inputs).float().flatten(0, -2) - target).square().sum())
            spread[name] += float((target - target.mean(0)).square().sum())
    return {name: 1.0 - error[name] / max(spread[name], 1e-12) for name in blocks}
