"""Batch augmentation on tensors, applied on the device to training batches only.

The augmented batch is what the Distiller receives, so teacher and student always see
the same view of each sample (consistent targets: the teacher is not asked about an
image the student never saw).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each sample of [B, C, L] or [B, C, H, W] by up to ``max_shift`` steps per
    spatial axis (edges replicated), independently per sample."""
    if max_shift <= 0:
        return x
    spatial = x.shape[2:]
    padded = F.pad(x, [max_shift] * 2 * len(spatial), mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), len(spatial)), device=x.device)
    batch = torch.arange(len(x), device=x.device)
    channels = torch.arange(x.shape[1], device=x.device)
    if len(spatial) == 1:
        cols = offsets[:, 0, None] + torch.arange(spatial[0], device=x.device)  # [B, L]
        return padded[batch[:, None, None], channels[None, :, None], cols[:, None, :]]
    rows = offsets[:, 0, None] + torch.arange(spatial[0], device=x.device)  # [B, H]
    cols = offsets[:, 1, None] + torch.arange(spatial[1], device=x.device)  # [B, W]
    return padded[batch[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


class BatchAugment:
    """Random shift, then additive Gaussian noise (std ``noise``, in standardised units)."""

    def __init__(self, shift: int = 0, noise: float = 0.0):
        self.shift, self.noise = shift, noise

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = random_shift(x, self.shift)
        if self.noise > 0:
            x = x + self.noise * torch.randn_like(x)
        return x

    def __bool__(self) -> bool:
        return self.shift > 0 or self.noise > 0
