"""The maths of every loss, as pure functions of tensors.

Each function is tested against an independent reference formula. Conventions:

- logits are [B, K]; a per-sample divergence is summed over classes and averaged over the
  batch ("batchmean"), never averaged over classes;
- every divergence between softened distributions is multiplied by T², so that its
  gradient keeps the same scale at any temperature (soft-target gradients shrink as 1/T²);
- a temperature is a number or a tensor of per-sample values ([B] or [B, 1]);
- features are [B, ...]; "flattened" means one vector per sample;
- everything is computed in float32, whatever autocast does around it.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from kdforge.losses.divergence import Direction, divergence_rows, kl_rows

Temperature = float | torch.Tensor


# ----------------------------------------------------------------------------- logits


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0, unlabelled: bool = False
) -> torch.Tensor:
    """Mean cross-entropy of [B, K] logits against [B] class indices or [B, K] class
    probabilities (mixed targets); smoothing mixes the targets with the uniform distribution.
    ``unlabelled``: some class indices are -100 (``PAD_TARGET``: samples without a label), and the mean is over
    the labelled samples, 0 in a batch that has none (not NaN; found with no host synchronisation)."""
    if not unlabelled:
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    labelled = (targets != -100).sum().clamp_min(1)  # -100 is F.cross_entropy's ignore_index too
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing, reduction="sum") / labelled


def _per_sample(temperature: Temperature) -> Temperature:
    """A per-sample temperature as [B, 1] so it broadcasts over classes."""
    if isinstance(temperature, torch.Tensor) and temperature.dim() > 0:
        return temperature.float().reshape(-1, 1)
    return temperature


def _t_squared_batchmean(per_sample: torch.Tensor, temperature: Temperature) -> torch.Tensor:
    """mean_b T_b² · d_b for per-sample divergences d [B]."""
    t = _per_sample(temperature)
    scale = t.reshape(-1) ** 2 if isinstance(t, torch.Tensor) else t**2
    return (per_sample * scale).mean()


def scaled_kl(log_p: torch.Tensor, log_q: torch.Tensor, temperature: Temperature) -> torch.Tensor:
    """T² · batch-mean KL(p ‖ q); one fused kernel when T is a number (the common, hot case)."""
    if isinstance(temperature, torch.Tensor) and temperature.dim() > 0:
        return _t_squared_batchmean(kl_rows(log_p, log_q), temperature)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * temperature**2


def teacher_importance(
    member_logits: torch.Tensor,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    by: str,
    tau: float,
    min_weight: float,
) -> torch.Tensor:
    """Per-sample weights [B, M] of M teachers (logits [M, B, K]), summing to one per sample:
    softmax over teachers of −d_m / τ, with d_m each teacher's cross-entropy on the label
    (``by="confidence"``: a teacher that is right about a sample counts more) or its KL from
    the student (``by="agreement"``: no labels; the teachers the student can follow count
    more). Weights below ``min_weight`` are set to zero and the rest renormalised (a teacher
    is filtered out of that sample; the best one always stays)."""
    members = member_logits.detach().float()
    if by == "confidence":
        distance = torch.stack([F.cross_entropy(z, labels, reduction="none") for z in members], 1)  # [B, M]
    else:
        log_ps = F.log_softmax(student_logits.detach().float(), -1)
        distance = torch.stack([kl_rows(F.log_softmax(z, -1), log_ps) for z in members], 1)
    weights = torch.softmax(-distance / tau, dim=1)
    kept = (weights >= min_weight) | (weights == weights.amax(1, keepdim=True))
    weights = weights * kept
    return weights / weights.sum(1, keepdim=True)


def multi_teacher_kd(
    student_logits: torch.Tensor, member_logits: torch.Tensor, weights: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² · mean_b Σ_m w_bm KL(p_m ‖ p_s): KD from M teachers (logits [M, B, K]) at once, each
    sample weighting them by ``weights`` [B, M]."""
    log_ps = F.log_softmax(student_logits.float() / temperature, -1)
    kl = torch.stack([kl_rows(F.log_softmax(z.float() / temperature, -1), log_ps) for z in member_logits], 1)  # [B, M]
    return (weights * kl).sum(1).mean() * temperature**2


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: Temperature = 4.0,
    direction: Direction = "forward",
    beta: float = 0.5,
    alpha: float = 0.1,
) -> torch.Tensor:
    """Logit distillation between ``p_t = softmax(z_t / T)`` and ``p_s = softmax(z_s / T)``:
    the ``direction`` divergence of :mod:`kdforge.losses.divergence` (forward or reverse KL,
    JSD, generalised JSD(β), skew KL or skew reverse KL (α), total variation).

    Always T²-scaled and batch-averaged.
    """
    t = _per_sample(temperature)
    log_ps = F.log_softmax(student_logits.float() / t, dim=-1)
    log_pt = F.log_softmax(teacher_logits.float() / t, dim=-1)
    if direction == "forward" and not isinstance(t, torch.Tensor):  # the hot path: one fused kernel
        return scaled_kl(log_pt, log_ps, temperature)
    return _t_squared_batchmean(divergence_rows(log_pt, log_ps, direction, beta, alpha), temperature)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: Temperature = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): α · TCKD + β · NCKD, each T²-scaled, batchmean.

    TCKD is the KL between the binary distributions [p_target, 1 − p_target] of teacher and
    student; NCKD is the KL between their distributions over the non-target classes only
    (softmax renormalised without the target).
    """
    t = _per_sample(temperature)
    zs, zt = student_logits.float() / t, teacher_logits.float() / t
    target = F.one_hot(targets, zs.shape[-1]).bool()

    def binary_log_probs(z: torch.Tensor) -> torch.Tensor:  # [B, 2]: log p_target, log(1 - p_target)
        total = torch.logsumexp(z, -1)
        return torch.stack([z[target] - total, torch.logsumexp(z.masked_fill(target, -math.inf), -1) - total], -1)

    tckd = kl_rows(binary_log_probs(zt), binary_log_probs(zs))
    log_qs = F.log_softmax(zs.masked_fill(target, -math.inf), -1)
    log_qt = F.log_softmax(zt.masked_fill(target, -math.inf), -1)
    nckd = (log_qt.exp() * (log_qt - log_qs)).masked_fill(target, 0.0).sum(-1)
    return _t_squared_batchmean(alpha * tckd + beta * nckd, temperature)


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardisation (Sun et al., CVPR 2024): per sample, (z − mean z) / std z.

    Removes the logits' shift and scale, so the student matches the teacher's logit
    *relations* rather than their magnitude. Use with a base temperature (about 2). The
    standard deviation is the sample one (1/(K − 1)), as in the authors' code, so that their
    temperatures mean the same here.
    """
    z = logits.float()
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + eps)


def _pearson(a: torch.Tensor, b: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: Temperature = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022): match relations instead of exact probabilities.

    inter = mean over samples of 1 − Pearson(p_s[b, :], p_t[b, :]);
    intra = mean over classes of 1 − Pearson(p_s[:, k], p_t[:, k]);
    loss = T² · (β · inter + γ · intra), with p = softmax(z / T).
    """
    t = _per_sample(temperature)
    ps, pt = F.softmax(student_logits.float() / t, -1), F.softmax(teacher_logits.float() / t, -1)
    inter = 1 - _pearson(ps, pt, dim=1)  # [B]
    intra = 1 - _pearson(ps, pt, dim=0)  # [K]
    return _t_squared_batchmean(beta * inter, temperature) + gamma * intra.mean() * _mean_t_squared(temperature)


def _mean_t_squared(temperature: Temperature) -> torch.Tensor | float:
    return (temperature.float() ** 2).mean() if isinstance(temperature, torch.Tensor) else temperature**2


def mse_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Regression-style logit matching (Ba & Caruana): mean over batch and classes of (z_s − z_t)²."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def uld_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Universal logit distillation (Boizard et al., 2024): the L1 distance between the two models'
    probabilities at temperature T, each sorted in decreasing order (the shorter vector padded with zeros),
    averaged over rows. It is the 1-Wasserstein distance between the distributions when every token is as far
    from every other; blind to which token is which, it compares models whose vocabularies differ."""
    p = F.softmax(student_logits.float() / temperature, -1).sort(-1, descending=True).values
    q = F.softmax(teacher_logits.float() / temperature, -1).sort(-1, descending=True).values
    size = max(p.shape[-1], q.shape[-1])
    p, q = F.pad(p, (0, size - p.shape[-1])), F.pad(q, (0, size - q.shape[-1]))
    return (p - q).abs().sum(-1).mean()


class TopK(NamedTuple):
    """A teacher's output kept sparse: log-probabilities [B, k] of its top k classes and
    their indices [B, k]. A teacher (or a cache) may return this instead of logits."""

    log_probs: torch.Tensor
    indices: torch.Tensor


def topk_log_probs(logits: torch.Tensor, k: int) -> TopK:
    """The sparse form of a teacher's output: log-probabilities and indices of its top k classes."""
    values, indices = F.log_softmax(logits.float(), -1).topk(k, dim=-1)
    return TopK(values, indices)


def dense_logits_from_topk(log_probs: torch.Tensor, indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rebuild [..., K] logits from a top-k form [..., k]: the k kept classes keep their log-probability;
    the mass left over, 1 − Σ top-k, is spread evenly over the other classes.

    Exact when k = K. The result is a valid logit vector (its softmax sums to one), so any
    logit term, at any temperature, can use it in place of the teacher's logits.
    """
    *lead, k = log_probs.shape
    if k >= num_classes:
        empty = torch.full((*lead, num_classes), -math.inf, device=log_probs.device)
        return empty.scatter(-1, indices, log_probs.float())
    rest = (-torch.logsumexp(log_probs.float(), -1).exp()).log1p().clamp_min(math.log(1e-12))  # log(1 - kept mass)
    fill = (rest - math.log(num_classes - k)).unsqueeze(-1).expand(*lead, num_classes).contiguous()
    return fill.scatter(-1, indices, log_probs.float())


# ----------------------------------------------------------------------------- regression


RegressionKind = Literal["mse", "complex_mse", "mag_phase"]


def wrapped_phase_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """arg(a) − arg(b) wrapped into (−π, π]: the angle of a · conj(b), so that phases near
    +π and −π count as close."""
    return torch.angle(a * b.conj())


def regression_loss(
    prediction: torch.Tensor, target: torch.Tensor, kind: RegressionKind = "mse", phase_weight: float = 1.0
) -> torch.Tensor:
    """Distance between a prediction and a target of the same shape (a task target, or a
    teacher's output), averaged over every element.

    * ``mse``: mean (p − t)² (real values);
    * ``complex_mse``: mean |p − t|² (complex values: real and imaginary errors together);
    * ``mag_phase``: mean (|p| − |t|)² + ``phase_weight`` · mean(|t| · Δφ²), Δφ the wrapped
      phase difference, weighted by the target's magnitude (a phase of noise-level values
      means nothing).
    """
    if kind == "mse":
        if prediction.is_complex() or target.is_complex():
            raise ValueError(
                "regression loss 'mse' is for real values; use complex_mse or mag_phase for complex outputs"
            )
        return F.mse_loss(prediction.float(), target.float())
    p, t = prediction.to(torch.cfloat), target.to(torch.cfloat)
    if kind == "complex_mse":
        return (p - t).abs().square().mean()
    if kind == "mag_phase":
        magnitude = (p.abs() - t.abs()).square().mean()
        return magnitude + phase_weight * (t.abs() * wrapped_phase_difference(p, t).square()).mean()
    raise ValueError(f"unknown regression loss '{kind}' (valid: mse, complex_mse, mag_phase)")


def psnr_db(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: 10·log10(max|target|² / mean |prediction − target|²)."""
    error = (prediction - target).abs().float().square().mean()
    return 10.0 * torch.log10(target.abs().float().amax().square() / error.clamp_min(1e-20))
