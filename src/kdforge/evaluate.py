"""Metrics of a model on a split, for classification and for regression.

The task is read from the targets: integer class indices make a classification (accuracy,
mean cross-entropy), real or complex targets a regression (``mse``: mean |prediction −
target|², ``psnr_db``: 10·log10(max|target|² / mse) over the split, ``loss`` = mse).
Each task has one headline **score**, higher is better: accuracy, or PSNR in dB. Best-epoch
selection, early stopping, reports and KD gains all read it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def is_regression(targets: torch.Tensor) -> bool:
    return targets.is_floating_point() or targets.is_complex()


@torch.no_grad()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], batches: Batches, autocast: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """The task's metrics over all batches (model in eval mode)."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    sums = {"correct": 0.0, "loss": 0.0, "samples": 0, "elements": 0, "peak": 0.0}
    regression = False
    for x, y, *_ in batches:
        with autocast or contextlib.nullcontext():
            out = model(x)
        regression = is_regression(y)
        if regression:
            sums["loss"] += float((out - y).abs().float().square().sum())
            sums["elements"] += y.numel()
            sums["peak"] = max(sums["peak"], float(y.abs().max()))
        else:
            logits = out.float()
            sums["loss"] += float(F.cross_entropy(logits, y, reduction="sum"))
            sums["correct"] += int((logits.argmax(-1) == y).sum())
        sums["samples"] += len(y)
    if was_training:
        model.train()
    if regression:
        mse = sums["loss"] / max(sums["elements"], 1)
        return {"mse": mse, "psnr_db": 10 * math.log10(sums["peak"] ** 2 / max(mse, 1e-20)), "loss": mse}
    return {"accuracy": sums["correct"] / max(sums["samples"], 1), "loss": sums["loss"] / max(sums["samples"], 1)}


def score(metrics: dict[str, float]) -> float:
    """The headline metric, higher is better: accuracy, or PSNR in dB for a regression."""
    return metrics["accuracy"] if "accuracy" in metrics else metrics["psnr_db"]


def shown(metrics: dict[str, float]) -> str:
    """The headline metric for people: '97.41%' or '23.52 dB'."""
    return f"{100 * metrics['accuracy']:.2f}%" if "accuracy" in metrics else f"{metrics['psnr_db']:.2f} dB"


def score_name(metrics: dict[str, float]) -> str:
    return "acc" if "accuracy" in metrics else "PSNR"


def score_gain(better: dict[str, float], worse: dict[str, float]) -> str:
    """How much ``better`` beats ``worse``: accuracy points, or dB."""
    if "accuracy" in better:
        return f"{100 * (better['accuracy'] - worse['accuracy']):+.2f} points"
    return f"{better['psnr_db'] - worse['psnr_db']:+.2f} dB"


def is_better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    """A higher validation score wins; a tie goes to the lower validation loss."""
    if best is None:
        return True
    return (score(candidate), -candidate["loss"]) > (score(best), -best["loss"])
