"""The frozen, eval-locked teacher."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from kdforge.taps import FeatureTap


class Teacher(nn.Module):
    """Wraps a model so that it cannot learn or change mode.

    Parameters get ``requires_grad=False``; :meth:`train` always leaves it in eval mode
    (dropout and batch-norm statistics stay fixed even when the Distiller is put in
    training mode); forward runs under ``torch.no_grad()`` (not ``inference_mode``, whose
    tensors cannot be saved for the student's backward pass in every case).
    ``taps`` maps alias -> module name; ``input_adapter`` transforms the student's batch
    into what the teacher expects.
    """

    def __init__(self, module: nn.Module, taps: Mapping[str, str] | None = None, input_adapter: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.module = module.requires_grad_(False).eval()
        self.input_adapter = input_adapter
        self.tap = FeatureTap(module, taps) if taps else None

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_adapter is not None:
            x = self.input_adapter(x)
        return self.module(x)
