"""Terms for regression students (real or complex outputs): the task and distillation parts
of loss = α·task + β·distill (+ γ·feature, from the feature terms such as ``hint``).

``kind`` picks the distance (:func:`kdforge.losses.functional.regression_loss`): ``mse``,
``complex_mse`` or ``mag_phase`` (magnitude error plus the magnitude-weighted wrapped phase
error, ``phase_weight``). Weights may be schedules, e.g. a task-only warm-up then a ramp.
"""

from __future__ import annotations

import torch

from kdforge.errors import required
from kdforge.losses import functional as lf
from kdforge.losses.terms import LOSSES, LossTerm, StepContext


@LOSSES.register("reg_task")
class RegressionTask(LossTerm):
    """The student's output against the regression targets."""

    uses_teacher = False

    def __init__(self, kind: lf.RegressionKind = "mse", phase_weight: float = 1.0):
        super().__init__()
        if phase_weight < 0:
            raise ValueError(f"phase_weight must be >= 0, got {phase_weight}")
        self.kind, self.phase_weight = kind, phase_weight

    def reference(self, ctx: StepContext) -> torch.Tensor:
        return ctx.targets

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return lf.regression_loss(
            required(ctx.student_logits, "the student's outputs"), self.reference(ctx), self.kind, self.phase_weight
        )


@LOSSES.register("reg_distill")
class RegressionDistill(RegressionTask):
    """The student's output against the teacher's output."""

    uses_teacher = True

    def reference(self, ctx: StepContext) -> torch.Tensor:
        return required(ctx.teacher_logits, "the teacher's outputs")
