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


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base LR at optimiser step ``step``: linear warm-up from
    1/warmup to 1, then constant or cosine decay down to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    min_ratio = cfg.min_lr / cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, cfg.schedule, min_ratio))
