"""Metrics of a model on a split."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], batches: Batches, autocast: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """Classification accuracy and mean cross-entropy over all batches (model in eval mode)."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    correct = total = 0
    loss_sum = torch.zeros(())
    for x, y in batches:
        with autocast or contextlib.nullcontext():
            logits = model(x)
        logits = logits.float()
        loss_sum = loss_sum.to(logits.device) + F.cross_entropy(logits, y, reduction="sum")
        correct += int((logits.argmax(-1) == y).sum())
        total += len(y)
    if was_training:
        model.train()
    return {"accuracy": correct / max(total, 1), "loss": float(loss_sum) / max(total, 1)}


def is_better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    """Higher validation accuracy wins; a tie goes to the lower validation loss."""
    if best is None:
        return True
    return (candidate["accuracy"], -candidate["loss"]) > (best["accuracy"], -best["loss"])
