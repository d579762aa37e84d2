"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from kdforge.models import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] x len(hidden) -> Linear head.

    Taps: ``features.N`` (after block N), ``head``.
    """

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.0
    ):
        super().__init__()
        widths = [math.prod(input_shape), *hidden]
        self.features = nn.Sequential(
            *(nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)) for a, b in zip(widths, widths[1:]))
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, *input_shape] -> logits [B, num_classes]."""
        return self.head(self.features(x.flatten(1)))
