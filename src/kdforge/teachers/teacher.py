"""The frozen, eval-locked teacher."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from kdforge.ema import ema_update
from kdforge.taps import FeatureTap


class Teacher(nn.Module):
    """Wraps a model so that it cannot learn or change mode.

    Parameters get ``requires_grad=False``; :meth:`train` always leaves it in eval mode
    (dropout and batch-norm statistics stay fixed even when the Distiller is put in
    training mode); forward runs under ``torch.no_grad()`` (not ``inference_mode``, whose
    tensors cannot be saved for the student's backward pass in every case).
    ``taps`` maps alias -> module name; ``input_adapter`` transforms the student's batch
    into what the teacher expects. With ``ema_decay``, the teacher is the moving average of
    a source model (the student): :meth:`update` moves it after each optimiser step; no
    gradient ever changes it.
    """

    def __init__(
        self,
        module: nn.Module,
        taps: Mapping[str, str] | None = None,
        input_adapter: Callable[[torch.Tensor], torch.Tensor] | None = None,
        ema_decay: float | None = None,
    ):
        super().__init__()
        self.module = module.requires_grad_(False).eval()
        self.input_adapter = input_adapter
        self.ema_decay = ema_decay
        self.tap = FeatureTap(module, taps) if taps else None

    def update(self, source: nn.Module) -> None:
        """EMA teachers: one moving-average step towards ``source``."""
        if self.ema_decay is not None:
            ema_update(self.module, source, self.ema_decay)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_adapter is not None:
            x = self.input_adapter(x)
        return self.module(x)
