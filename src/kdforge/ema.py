"""Exponential moving averages of a model's weights (the EMA teacher; the EMA student)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target ← decay · target + (1 − decay) · source for parameters; buffers (batch-norm
    statistics, counters) are copied, so the average sees the source's current statistics."""
    targets, sources = list(target.parameters()), [p.detach() for p in source.parameters()]
    if len(targets) != len(sources):
        raise ValueError("EMA target and source have different parameter lists")
    torch._foreach_lerp_(targets, sources, 1.0 - decay)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)
