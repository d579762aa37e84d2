"""Terms on intermediate features captured by taps."""

from __future__ import annotations

from typing import Literal

import torch

from kdforge.losses import functional as lf
from kdforge.losses.terms import LOSSES, LossTerm, Shapes, StepContext
from kdforge.taps import build_projector


@LOSSES.register("hint")
class Hint(LossTerm):
    """FitNets hint: MSE between a projected student feature and a teacher feature.

    ``student`` / ``teacher`` are module names (``blocks.1``, ``features.2``, or
    ``head:input`` for a module's input). ``projector`` maps the student feature to the
    teacher's shape: ``linear`` (last dim), ``conv1x1`` (channel dim), or ``none``.
    """

    def __init__(self, student: str, teacher: str, projector: Literal["linear", "conv1x1", "none"] = "linear"):
        super().__init__()
        self.student, self.teacher, self.projector_kind = student, teacher, projector
        self.projector: torch.nn.Module | None = None

    @property
    def student_taps(self) -> list[str]:
        return [self.student]

    @property
    def teacher_taps(self) -> list[str]:
        return [self.teacher]

    def setup(self, shapes: Shapes) -> None:
        self.projector = build_projector(self.projector_kind, shapes.student[self.student], shapes.teacher[self.teacher])

    def forward(self, ctx: StepContext) -> torch.Tensor:
        student = self.projector(ctx.student_features[self.student])
        return lf.feature_mse(student, ctx.teacher_features[self.teacher])
