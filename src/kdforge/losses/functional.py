"""The maths of every loss, as pure functions of tensors.

Each function is tested against an independent reference formula. Conventions:
logits are [B, K]; a per-sample divergence is summed over classes and averaged over
the batch ("batchmean"), never averaged over classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of [B, K] logits against [B] class indices."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD: ``T² · KL(p_t ‖ p_s)`` with ``p = softmax(logits / T)``, batch-averaged.

    The T² factor keeps the gradient scale independent of T (soft-target gradients
    shrink as 1/T²), so the term's weight means the same at any temperature.
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def mse_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Regression-style logit matching (Ba & Caruana): mean over batch and classes of (z_s − z_t)²."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def feature_mse(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets hint: mean squared error between two same-shaped feature tensors."""
    return F.mse_loss(student_feature.float(), teacher_feature.float())
