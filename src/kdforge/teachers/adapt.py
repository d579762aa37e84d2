"""Input adaptation: give a teacher the inputs it was trained on when the student's data
differ (resolution, channel count, normalisation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.config import AdaptConfig
from kdforge.errors import KdforgeError

#: where the adapter's default comes from, and how to change it: the end of any message about it
DEFAULT_ADAPT = (
    "the default adaptation, from the teacher's pretrained config (input_size, mean, std); set teacher.adapt "
    "to change it, or teacher.adapt: {} for none"
)


def expected_input(module: nn.Module | None) -> Any:
    """What a model says it expects, as ``teacher.adapt`` would: a timm model's pretrained
    config (``input_size`` (C, H, W), ``mean``, ``std``); None when it says nothing. A model built
    with other input channels than its config's statistics (``in_chans: 1`` on ImageNet's three
    means) takes the statistics' average on every channel, as a grey image of them."""
    found = getattr(module, "pretrained_cfg", None)
    if not isinstance(found, dict) or len(found.get("input_size") or ()) != 3:
        return None
    channels, height, width = found["input_size"]
    return AdaptConfig(
        size=height if height == width else None,
        channels=channels,
        mean=_per_channel(found.get("mean"), channels),
        std=_per_channel(found.get("std"), channels),
    )


def _per_channel(values: Sequence[float] | None, channels: int) -> list[float] | None:
    if not values:
        return None
    return list(values) if len(values) == channels else [sum(values) / len(values)]


class InputAdapter(nn.Module):
    """[B, C, ...] student inputs -> the teacher's inputs, in this order:

    1. undo the dataset's standardisation (``scaling`` = (mean, std) of the data);
    2. repeat a single channel to ``channels`` (grey -> RGB);
    3. resize the spatial dims to ``size`` (bilinear for images, linear for sequences);
    4. normalise with the teacher's per-channel ``mean`` / ``std`` (e.g. ImageNet's).
    """

    mean: torch.Tensor  # buffers, when renormalising
    std: torch.Tensor

    def __init__(
        self,
        input_shape: Sequence[int],
        scaling: tuple[float, float] = (0.0, 1.0),
        size: int | None = None,
        channels: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        in_channels = input_shape[0]
        if channels is not None and channels != in_channels and in_channels != 1:
            raise KdforgeError(
                f"cannot adapt {in_channels} input channels to {channels}: only a single channel can be repeated"
            )
        self.channels = channels if channels is not None and channels != in_channels else None
        out_channels = self.channels or in_channels
        self.size = None if size is None or all(s == size for s in input_shape[1:]) else size
        self.renormalise = mean is not None or std is not None
        for name, values, default in (("mean", mean, 0.0), ("std", std, 1.0)):
            values = list(values) if values is not None else [default] * out_channels
            if len(values) not in (1, out_channels):
                raise KdforgeError(
                    f"adapt.{name} has {len(values)} values but the teacher gets {out_channels} channels"
                )
            self.register_buffer(
                name, torch.tensor(values, dtype=torch.float32).reshape(1, -1, *([1] * (len(input_shape) - 1)))
            )
        self.data_mean, self.data_std = scaling
        self.spatial_dims = len(input_shape) - 1

    def describe(self) -> str:
        steps = []
        if self.channels:
            steps.append(f"repeat channels to {self.channels}")
        if self.size:
            steps.append(f"resize to {self.size}")
        if self.renormalise:
            steps.append(f"renormalise to mean {self.mean.flatten().tolist()}, std {self.std.flatten().tolist()}")
        return ", ".join(steps) or "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.renormalise:
            x = x * self.data_std + self.data_mean
        if self.channels:
            x = x.expand(-1, self.channels, *x.shape[2:])
        if self.size:
            mode = "bilinear" if self.spatial_dims == 2 else "linear"
            x = F.interpolate(x, size=(self.size,) * self.spatial_dims, mode=mode, align_corners=False)
        if self.renormalise:
            x = (x - self.mean) / self.std
        return x
