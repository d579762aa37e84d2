"""Measured model costs: parameters, FLOPs, latency, throughput and peak memory (never estimated).

:func:`benchmark` is what ``kdforge bench`` prints: per batch size, the median and 90th
percentile latency of a forward pass, the throughput it implies, and the peak memory the
forward pass allocates (CUDA: ``max_memory_allocated`` above what was allocated before;
CPU: the peak of live tensor bytes recorded by the PyTorch profiler); and, per model, the
parameter count and the FLOPs of one sample's forward pass counted exactly by
``torch.utils.flop_counter`` (matrix products, convolutions and attention; element-wise
operations and FFTs are not counted).
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from typing import Any

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def forward_times(
    model: nn.Module, example: torch.Tensor, batch_size: int = 1, warmup: int = 10, repeats: int = 50
) -> list[float]:
    """Wall times (s) of ``repeats`` forward passes on ``batch_size`` copies of ``example[:1]``
    in eval mode, after ``warmup`` untimed ones; the model's mode is restored."""
    was_training = model.training
    model.eval()
    x = example[:1].expand(batch_size, *example.shape[1:]).contiguous()
    for _ in range(warmup):
        model(x)
    _sync(x.device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        _sync(x.device)
        times.append(time.perf_counter() - start)
    model.train(was_training)
    return times


def latency_ms(
    model: nn.Module, example: torch.Tensor, batch_size: int = 1, warmup: int = 10, repeats: int = 50
) -> float:
    """Median wall time of one forward pass on ``batch_size`` samples, in milliseconds."""
    return statistics.median(forward_times(model, example, batch_size, warmup, repeats)) * 1e3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (multiply and add count as two)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(example)
    return int(counter.get_total_flops())


@torch.no_grad()
def peak_memory_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak bytes a forward pass on ``x`` allocates beyond what was live before it."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        model(x)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - before
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # the profiler's C++ side would print start/stop lines
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    changes = []  # (time, bytes): allocations belong to the op that made them, frees are [memory] events
    for event in prof.events():
        if event.name == "[memory]":
            changes.append((event.time_range.start, event.cpu_memory_usage))
        elif event.self_cpu_memory_usage > 0:
            changes.append((event.time_range.start, event.self_cpu_memory_usage))
    changes.sort(key=lambda change: change[0])
    return max(itertools.accumulate((c for _, c in changes), initial=0))


def benchmark(
    model: nn.Module, example: torch.Tensor, batch_sizes: list[int], warmup: int = 5, iters: int = 20
) -> dict[str, Any]:
    """Measure ``model`` on copies of ``example[:1]`` at each batch size (eval mode, no grad)."""
    was_training = model.training
    result: dict[str, Any] = {
        "params": count_params(model),
        "flops_per_sample": count_flops(model.eval(), example[:1]),
        "batches": [],
    }
    for batch in batch_sizes:
        times = sorted(forward_times(model, example, batch, warmup, iters))
        median, p90 = statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]
        x = example[:1].expand(batch, *example.shape[1:]).contiguous()
        result["batches"].append(
            {
                "batch": batch,
                "latency_ms": median * 1e3,
                "latency_p90_ms": p90 * 1e3,
                "samples_per_s": batch / median,
                "peak_memory_mb": peak_memory_bytes(model.eval(), x) / 2**20,
            }
        )
    model.train(was_training)
    return result
