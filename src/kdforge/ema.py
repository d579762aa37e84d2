"""Exponential moving averages of a model's weights (the EMA teacher; the EMA student)."""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target ← decay · target + (1 − decay) · source, for parameters and floating-point
    buffers (batch-norm statistics); integer buffers (counters) are copied."""
    targets: list[torch.Tensor] = list(target.parameters())
    sources = [p.detach() for p in source.parameters()]
    if len(targets) != len(sources):
        raise ValueError("EMA target and source have different parameter lists")
    torch._foreach_lerp_(targets, sources, 1.0 - decay)
    for t, s in zip(target.buffers(), source.buffers()):
        if t.is_floating_point():
            t.lerp_(s, 1.0 - decay)
        else:
            t.copy_(s)


class ModelEMA(nn.Module):
    """A frozen copy of ``model`` that follows it as a moving average (``train.ema_decay``).

    With ``warmup``, the decay after ``step`` optimiser steps is min(decay, (1 + step) / (10 + step)):
    early averages forget the random initialisation quickly instead of dragging it along for
    ~1 / (1 − decay) steps.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        super().__init__()
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    def update(self, model: nn.Module, step: int) -> None:
        """Average in ``model`` after its ``step``-th optimiser step (counted from 0)."""
        ema_update(self.module, model, self.decay_at(step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
