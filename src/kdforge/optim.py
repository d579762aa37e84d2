"""Optimisers, parameter groups and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kdforge import distributed
from kdforge.config import OptimConfig
from kdforge.errors import KdforgeError
from kdforge.taps import block_names, unwrap


def build_optimizer(params: list[nn.Parameter] | list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params`` (a list of parameters or of param groups;
    a group's own ``lr`` / ``weight_decay`` override the recipe's)."""
    if cfg.name == "sgd":
        momentum = 0.9 if cfg.momentum is None else cfg.momentum
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay, nesterov=momentum > 0
        )
    if cfg.name == "dot":
        if cfg.momentum is None or cfg.dot_delta is None:  # the recipe's check fills both for dot
            raise KdforgeError("optim.name dot needs optim.momentum and optim.dot_delta")
        return DistillationOrientedTrainer(
            params, lr=cfg.lr, momentum=cfg.momentum, delta=cfg.dot_delta, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=_fusable(params))


def _fusable(params: list[nn.Parameter] | list[dict[str, Any]]) -> bool:
    """Whether AdamW can update all of ``params`` in one fused kernel per group (CPU or CUDA floating tensors,
    one process): about twice as fast as its loop over tensors on a small model's CPU step, same update."""
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    return not distributed.active() and all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
        for p in tensors
    )


class DistillationOrientedTrainer(torch.optim.Optimizer):
    """DOT (Zhao et al., "DOT: A Distillation-Oriented Trainer", ICCV 2023): SGD whose task and
    distillation gradients keep separate momentum buffers, the distillation one with the larger
    momentum (``momentum + delta``) and the task one the smaller (``momentum − delta``), so that
    the distillation loss, whose gradient is the more consistent, steers more.

    Use: backward the distillation loss, :meth:`stash_distillation_grads` (several times with
    gradient accumulation: they add up), backward the task loss, :meth:`step`. A parameter that
    only one of the two reaches (a projector, a classifier the teacher never sees) uses plain
    ``momentum``. L2 weight decay joins the task gradient (the distillation one when there is
    no task gradient), so it is applied once.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.9, delta: float = 0.075, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "delta": delta, "weight_decay": weight_decay})

    @torch.no_grad()
    def stash_distillation_grads(self) -> None:
        """Move the gradients present now (the distillation loss's) aside, and clear them."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    state["distill_grad"] = (
                        state["distill_grad"].add_(p.grad) if "distill_grad" in state else p.grad.clone()
                    )
                    p.grad = None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update from the stashed distillation gradients and the present (task) ones;
        ``closure``, as for any optimiser, recomputes and returns the loss first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            base, delta, decay, lr = group["momentum"], group["delta"], group["weight_decay"], group["lr"]
            for p in group["params"]:
                state = self.state[p]
                task, distill = p.grad, state.pop("distill_grad", None)
                both = task is not None and distill is not None
                if decay and task is not None:
                    task = task.add(p, alpha=decay)
                elif decay and distill is not None:
                    distill = distill.add(p, alpha=decay)
                for key, grad, momentum in (
                    ("task_momentum", task, base - delta if both else base),
                    ("distill_momentum", distill, base + delta if both else base),
                ):
                    if grad is None:
                        continue
                    if key in state:
                        state[key].mul_(momentum).add_(grad)
                    else:
                        state[key] = grad.clone()
                    p.add_(state[key], alpha=-lr)
        return loss


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each parameter for layer-wise LR decay, and the deepest id: parameters
    before the first block (embeddings) are 0, block i's are i + 1, those after the last
    block (final norm, head) are L + 1. Blocks come from the model's block list."""
    model = unwrap(model)
    try:
        blocks = block_names(model, "auto")
    except KdforgeError as error:
        raise KdforgeError(f"optim.layer_decay needs the student's block list: {error}") from None
    ids, seen_block = {}, False
    for name, _ in model.named_parameters():
        block = next((i for i, b in enumerate(blocks) if name.startswith(b + ".")), None)
        if block is not None:
            seen_block = True
        ids[name] = block + 1 if block is not None else (len(blocks) + 1 if seen_block else 0)
    return ids, len(blocks) + 1


def no_decay(model: nn.Module, name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights (≤1-dim) and the names a model lists in ``no_weight_decay()``
    (timm's convention: position embeddings, class tokens)."""
    listed: set[str] = set(getattr(unwrap(model), "no_weight_decay", lambda: set())())
    return param.ndim <= 1 or name in listed


def student_groups(student: nn.Module, params: list[nn.Parameter], cfg: OptimConfig) -> list[dict[str, Any]]:
    """Split the main parameter group: the student's parameters by layer (``layer_decay``:
    its own LR) and by whether they decay (``filter_bias_and_bn``); other parameters
    (projectors, heads of loss terms) stay in one group at the recipe's settings."""
    names = {id(p): n for n, p in unwrap(student).named_parameters()}
    ids, deepest = layer_ids(student) if cfg.layer_decay is not None else ({}, 0)
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for p in params:
        name = names.get(id(p))
        layer = ids.get(name, deepest) if name is not None else deepest  # not the student's, or not layered: full LR
        decays = not (cfg.filter_bias_and_bn and name is not None and no_decay(student, name, p))
        groups.setdefault((layer, decays), []).append(p)
    result = []
    for (layer, decays), group in groups.items():
        settings: dict[str, Any] = {} if decays else {"weight_decay": 0.0}
        if cfg.layer_decay is not None:
            settings["lr"] = cfg.lr * cfg.layer_decay ** (deepest - layer)
        result.append({"params": group, **settings})
    return result


def centralize_gradients(params: list[nn.Parameter]) -> None:
    """Gradient centralisation: remove each weight gradient's mean over all dims but the
    first (per output unit); vectors (biases, norms) are left alone."""
    for p in params:
        if p.grad is not None and p.grad.dim() > 1:
            p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.dim())), keepdim=True))


def lr_factor(
    start: float, end: float, epochs: float, cfg: OptimConfig, step: int = 0, steps_per_epoch: int = 1
) -> float:
    """Multiplier of the base LR for an optimiser step that takes training from ``start`` to
    ``end`` (positions in epochs, fractional): linear warm-up over ``warmup_epochs`` (the
    first step already moves), then constant or cosine decay down to ``min_lr`` — over the
    rest of training, or in cycles (``lr_cycle_steps``, counted in optimiser steps: this
    is step ``step`` of ``steps_per_epoch`` per epoch) that restart at a peak
    ``lr_cycle_decay`` times the last and last ``lr_cycle_mul`` times longer.

    Positions rather than step counts keep the schedule right when an epoch's length
    changes (a curriculum stage that trains on part of the data).
    """
    if cfg.warmup_epochs > 0 and start < cfg.warmup_epochs:
        return min(1.0, end / cfg.warmup_epochs)
    if cfg.schedule == "constant":
        return 1.0
    min_ratio = cfg.min_lr / cfg.lr
    if cfg.lr_cycle_steps is None:
        t, peak = min(1.0, (start - cfg.warmup_epochs) / max(1e-12, epochs - cfg.warmup_epochs)), 1.0
    else:
        t, peak = _in_cycle(step - cfg.warmup_epochs * steps_per_epoch, cfg.lr_cycle_steps, cfg)
    return min_ratio + (peak - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _in_cycle(steps: float, first: int, cfg: OptimConfig) -> tuple[float, float]:
    """(position in the current cycle in [0, 1), its peak) after ``steps`` post-warm-up steps;
    the first cycle is ``first`` steps long."""
    length, cycle = float(first), 0
    while steps >= length:
        steps, length, cycle = steps - length, length * cfg.lr_cycle_mul, cycle + 1
    return steps / length, cfg.lr_cycle_decay**cycle
