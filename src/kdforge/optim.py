"""Optimisers and learning-rate schedules."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from kdforge.config import OptimConfig


def build_optimizer(params: list[nn.Parameter] | list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``params`` (a list of parameters or of param groups;
    a group's own ``lr`` / ``weight_decay`` override the recipe's)."""
    if cfg.name == "sgd":
        momentum = 0.9 if cfg.momentum is None else cfg.momentum
        return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay, nesterov=momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(start: float, end: float, epochs: int, cfg: OptimConfig) -> float:
    """Multiplier of the base LR for an optimiser step that takes training from ``start`` to
    ``end`` (positions in epochs, fractional): linear warm-up over ``warmup_epochs`` (the
    first step already moves), then constant or cosine decay down to ``min_lr``.

    Positions rather than step counts keep the schedule right when an epoch's length
    changes (a curriculum stage that trains on part of the data).
    """
    if cfg.warmup_epochs > 0 and start < cfg.warmup_epochs:
        return min(1.0, end / cfg.warmup_epochs)
    if cfg.schedule == "constant":
        return 1.0
    t = min(1.0, (start - cfg.warmup_epochs) / max(1e-12, epochs - cfg.warmup_epochs))
    min_ratio = cfg.min_lr / cfg.lr
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
