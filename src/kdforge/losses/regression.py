"""Terms for regression students (real or complex outputs): the task and distillation parts
of loss = α·task + β·distill (+ γ·feature, from the feature terms such as ``hint``).

``kind`` picks the distance (:func:`kdforge.losses.functional.regression_loss`): ``mse``,
``complex_mse`` or ``mag_phase`` (magnitude error plus the magnitude-weighted wrapped phase
error, ``phase_weight``). Weights may be schedules, e.g. a task-only warm-up then a ramp.
"""

from __future__ import annotations

import torch

from kdforge.bounds import NonNegative
from kdforge.errors import required
from kdforge.losses import functional as lf
from kdforge.losses.terms import LOSSES, LossTerm, StepContext


@LOSSES.register("reg_task")
class RegressionTask(LossTerm):
    """The student's output against the regression targets, over the samples that have them (a NaN
    target marks an unlabelled sample, which only the distillation terms learn from)."""

    uses_teacher = False

    def __init__(self, kind: lf.RegressionKind = "mse", phase_weight: NonNegative = 1.0):
        super().__init__()
        self.kind, self.phase_weight = kind, phase_weight

    def reference(self, ctx: StepContext) -> torch.Tensor:
        return ctx.targets

    def forward(self, ctx: StepContext) -> torch.Tensor:
        prediction, reference = required(ctx.student_logits, "the student's outputs"), self.reference(ctx)
        if self.uses_teacher:  # a teacher's outputs are all there (NaN in them is a failure the trainer reports)
            return lf.regression_loss(prediction, reference, self.kind, self.phase_weight)
        # unlabelled values (NaN targets) count as predicted exactly, and the mean is rescaled to the labelled
        # ones: the same loss as over the labelled values alone, with no host synchronisation to find them
        known = ~reference.isnan()
        reference = torch.where(known, reference, prediction.detach().to(reference.dtype))
        share = known.float().mean().clamp_min(1.0 / known.numel())
        return lf.regression_loss(prediction, reference, self.kind, self.phase_weight) / share


@LOSSES.register("reg_distill")
class RegressionDistill(RegressionTask):
    """The student's output against the teacher's output."""

    uses_teacher = True

    def reference(self, ctx: StepContext) -> torch.Tensor:
        return required(ctx.teacher_logits, "the teacher's outputs")
