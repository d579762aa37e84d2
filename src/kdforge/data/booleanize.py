"""Booleanisation for Tsetlin-machine students: inputs become ±1 bits by per-feature thresholds
fitted on the training split (so that validation and test never shape them)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch

from kdforge.data.bundle import DataBundle, Split


def fit_thresholds(x: torch.Tensor, method: Literal["thresholds", "thermometer"], levels: int) -> torch.Tensor:
    """Per-feature thresholds [L, *shape] from training inputs [N, *shape]: the median
    (``thresholds``: L = 1) or the ``levels`` quantiles i / (levels + 1) (``thermometer``)."""
    count = 1 if method == "thresholds" else levels
    q = torch.arange(1, count + 1, dtype=torch.float32) / (count + 1)
    return torch.quantile(x.flatten(1).float(), q, dim=0).view(count, *x.shape[1:])


def booleanize(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """[N, C, *rest] -> [N, L·C, *rest] of ±1: bit l of feature i is x_i > t_{l,i}. Levels
    are stacked along the channel axis, so images stay images."""
    bits = (x.unsqueeze(1) > thresholds.unsqueeze(0)).float() * 2.0 - 1.0  # [N, L, C, *rest]
    return bits.flatten(1, 2)


def booleanize_bundle(data: DataBundle, method: Literal["thresholds", "thermometer"], levels: int) -> DataBundle:
    thresholds = fit_thresholds(data.train.x, method, levels)
    splits = {name: Split(booleanize(getattr(data, name).x, thresholds), getattr(data, name).y) for name in ("train", "val", "test")}
    shape = (thresholds.shape[0] * data.input_shape[0], *data.input_shape[1:])
    return replace(data, **splits, input_shape=shape, scaling=(0.0, 1.0))
