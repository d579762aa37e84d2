"""Batch augmentation on tensors, applied on the device to training batches only.

The augmented batch is what the Distiller receives, so teacher and student always see
the same view of each sample (consistent targets: the teacher is not asked about an
image the student never saw).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift(x: torch.Tensor, offsets: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each sample of [B, C, L] or [B, C, H, W] by ``offsets`` [B, spatial dims]
    (each in 0..2·max_shift, centred at max_shift), edges replicated."""
    spatial = x.shape[2:]
    padded = F.pad(x, [max_shift] * 2 * len(spatial), mode="replicate")
    batch = torch.arange(len(x), device=x.device)
    channels = torch.arange(x.shape[1], device=x.device)
    if len(spatial) == 1:
        cols = offsets[:, 0, None] + torch.arange(spatial[0], device=x.device)  # [B, L]
        return padded[batch[:, None, None], channels[None, :, None], cols[:, None, :]]
    rows = offsets[:, 0, None] + torch.arange(spatial[0], device=x.device)  # [B, H]
    cols = offsets[:, 1, None] + torch.arange(spatial[1], device=x.device)  # [B, W]
    return padded[batch[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each sample by up to ``max_shift`` steps per spatial axis, independently."""
    if max_shift <= 0:
        return x
    return shift(x, torch.randint(0, 2 * max_shift + 1, (len(x), x.dim() - 2), device=x.device), max_shift)


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


class FixedViews:
    """``views`` fixed augmented versions of every training sample: view v of sample i is
    always the same (its shift and noise are drawn once, from the seed and v). A teacher
    cache stores its outputs on exactly these inputs; training then shows the student view
    ``epoch % views`` of each sample, so teacher and student always see the same input."""

    def __init__(self, augment: BatchAugment, samples: int, sample_shape: tuple[int, ...], views: int, seed: int):
        self.augment, self.views = augment, views
        self.offsets, self.noise = [], []
        for v in range(views):
            g = torch.Generator().manual_seed(seed * 1_000_003 + v)
            spatial = len(sample_shape) - 1
            self.offsets.append(torch.randint(0, 2 * augment.shift + 1, (samples, spatial), generator=g) if augment.shift else None)
            self.noise.append(augment.noise * torch.randn(samples, *sample_shape, generator=g) if augment.noise else None)

    def __call__(self, x: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """The inputs ``x`` of samples ``index`` as seen in view ``epoch % views``."""
        v = epoch % self.views
        rows = index.cpu()
        if self.offsets[v] is not None:
            x = shift(x, self.offsets[v][rows].to(x.device), self.augment.shift)
        if self.noise[v] is not None:
            x = x + self.noise[v][rows].to(x.device)
        return x
