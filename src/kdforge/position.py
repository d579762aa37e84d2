"""Where a fit is (epoch, batch, step, stage, best so far, early stopping's count: what resume restores besides
the weights and the optimiser) and what a fit returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from kdforge.config.training import EarlyStoppingConfig


@dataclass
class FitResult:
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict[str, Any]]
    interrupted: bool = False
    seconds: float = 0.0
    stopped_early: bool = False


@dataclass
class _Position:
    """Where training is: what resume restores besides weights and optimiser."""

    epoch: int = 0
    batch: int = 0  # micro-batches of the current epoch already consumed
    step: int = 0  # optimiser steps so far
    best_epoch: int = -1
    best_val: dict[str, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: torch.Tensor | None = None  # sums over this epoch's steps of [loss, *parts]
    stage: int = 0  # curriculum stage
    stage_start: int = 0  # the epoch it started at
    seconds: float = 0.0
    watched: float | None = None  # early stopping: the best value of its metric so far
    stale: float = 0.0  # epochs since it last improved
    validated_at: float = 0.0  # where (in epochs) and at which step the student was last validated
    validated_step: int = -1
    validations: list[dict[str, Any]] = field(default_factory=list)  # this epoch's, before its end (steps)
    stopped_early: bool = False
    snapshots: int = 0  # student snapshots written at stage ends (train.stage_checkpoints)

    def watch(self, value: float, since: float, rule: EarlyStoppingConfig, more_to_come: bool) -> None:
        """Early stopping: the watched metric's ``value`` (higher is better), ``since`` epochs after the last one.
        Counts the epochs without an improvement; stops when they reach the patience and training has more to
        come."""
        if self.watched is None or value > self.watched + rule.min_delta:
            self.watched, self.stale = value, 0.0
            return
        self.stale += since
        self.stopped_early = self.stale >= rule.patience - 1e-9 and more_to_come
