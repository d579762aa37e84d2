"""Small convolutional network, 1-D ([C, L] inputs) or 2-D ([C, H, W] inputs)."""

from __future__ import annotations

import torch
from torch import nn

from kdforge.models import MODELS
from kdforge.models.layers import spatial_dims

_LAYERS = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
}


@MODELS.register("cnn")
class CNN(nn.Module):
    """``depth`` stages of conv3 -> BN -> ReLU (-> max-pool /2 while the input is large
    enough); channels double per stage from ``width``; global average pool; linear head.

    Taps: ``features.N`` (output of stage N), ``pool``, ``head``.
    """

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, width: int = 32, depth: int = 3, dropout: float = 0.0
    ):
        super().__init__()
        dims = spatial_dims(input_shape, "cnn")
        conv, norm, maxpool, avgpool = _LAYERS[dims]
        size, channels, stages = min(input_shape[1:]), input_shape[0], []
        for i in range(depth):
            out = width * 2**i
            stage = [conv(channels, out, 3, padding=1, bias=False), norm(out), nn.ReLU()]
            if size >= 4:
                stage.append(maxpool(2))
                size //= 2
            stages.append(nn.Sequential(*stage))
            channels = out
        self.features = nn.Sequential(*stages)
        self.pool = nn.Sequential(avgpool(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, L] or [B, C, H, W] -> logits [B, num_classes]."""
        return self.head(self.pool(self.features(x)))
