"""Measured model costs: parameters and inference latency (never estimated)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def latency_ms(model: nn.Module, example: torch.Tensor, batch_size: int = 1, warmup: int = 10, repeats: int = 50) -> float:
    """Median wall time of one forward pass on ``batch_size`` samples, in milliseconds."""
    was_training = model.training
    model.eval()
    x = example[:1].expand(batch_size, *example.shape[1:]).contiguous()
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - start)
    model.train(was_training)
    return statistics.median(times) * 1e3
