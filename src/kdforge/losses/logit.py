"""Terms on the student's logits: ground-truth CE and logit distillation."""

from __future__ import annotations

import torch

from kdforge.losses import functional as lf
from kdforge.losses.terms import LOSSES, LossTerm, StepContext


@LOSSES.register("ce")
class CrossEntropy(LossTerm):
    """Cross-entropy with the ground-truth labels (optionally label-smoothed)."""

    uses_teacher = False

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return lf.cross_entropy(ctx.student_logits, ctx.targets, self.label_smoothing)


@LOSSES.register("kd")
class KD(LossTerm):
    """Hinton knowledge distillation: T² · KL(p_teacher ‖ p_student) at temperature T."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return lf.kd_loss(ctx.student_logits, ctx.teacher_logits, self.temperature)


@LOSSES.register("mse_logits")
class MSELogits(LossTerm):
    """Mean squared error between student and teacher logits."""

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return lf.mse_logits(ctx.student_logits, ctx.teacher_logits)
