"""The students made of clause layers alone: ``tm_flat``, the classic Tsetlin machine over the flattened input
(one clause layer, or :class:`DeepTM`'s stacked ones)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from kdforge.families.tm.clause import ClauseLayer, Clauses, straight_through, with_options
from kdforge.models import MODELS


class DeepTM(nn.Module):
    """Stacked clause layers: each hidden layer's votes, plus a linear residual projection of
    its input, are normalised and squashed back into [0, 1] for the next layer.

    ``[*, F] -> [*, out_features]``; ``depth`` clause layers, hidden width ``hidden``.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 64, depth: int = 2, **clause_options):
        super().__init__()
        if depth < 1:
            raise ValueError(f"DeepTM depth must be >= 1, got {depth}")
        widths = [in_features] + [hidden] * (depth - 1) + [out_features]
        self.layers = nn.ModuleList(ClauseLayer(a, b, **clause_options) for a, b in zip(widths, widths[1:]))
        self.residuals = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in widths[1:-1])

    def forward(self, u: torch.Tensor, modulate: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        for i, (layer, residual) in enumerate(zip(self.layers, self.residuals)):
            out = layer(u, modulate if i == len(self.layers) - 1 else None) + residual(u)
            if i < len(self.norms):
                u = torch.sigmoid(self.norms[i](out))
        return out


@MODELS.register("tm_flat")
@with_options(ClauseLayer)
class TMFlat(nn.Module):
    """One clause layer over the flattened input: the classic Tsetlin machine, trained by gradient.

    Each input feature x_i becomes the fuzzy literal σ(sharpness · (x_i − t_i)) with a learned
    threshold t_i (0 at start: standardised data, and ±1 booleanised data from
    ``data.booleanize``, are centred there); hard mode and the exported rules use x_i > t_i.
    ``backend: deeptm`` stacks ``depth`` clause layers (width ``hidden``) instead of one.
    Every :class:`ClauseLayer` option is an option here too.
    """

    reads_booleans = True  # its inputs are thresholded once, x > t: there are no levels to read them at

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        clauses: Clauses = 256,
        sharpness: float = 4.0,
        backend: Literal["ste", "deeptm"] = "ste",
        hidden: int = 128,
        depth: int = 2,
        **clause_options: Any,
    ):
        super().__init__()
        if clause_options.get("levels", 1) != 1:
            raise ValueError("tm_flat reads each input as one boolean, x > t, in hard mode: give it levels: 1")
        features = math.prod(input_shape)
        self.sharpness = sharpness
        self.threshold = nn.Parameter(torch.zeros(features))
        if backend == "ste":
            self.tm = ClauseLayer(features, num_classes, clauses, **clause_options)
        else:
            self.tm = DeepTM(features, num_classes, hidden, depth, clauses=clauses, **clause_options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, *input_shape] -> logits [B, num_classes]."""
        x = x.flatten(1) - self.threshold
        if self.hard:  # decide on x > t itself, as the exported rules do (σ rounds to 0.5 near t)
            return self.tm(straight_through((x > 0).to(x.dtype), lambda: torch.sigmoid(self.sharpness * x)))
        return self.tm(torch.sigmoid(self.sharpness * x))

    @property
    def hard(self) -> bool:  # as its clause layer (or the packed one in its place) is
        return next(m.hard for m in self.tm.modules() if hasattr(m, "hard"))
