"""The maths of the terms that compare representations rather than logits, as pure functions of tensors:
features (hints, CKA, attention maps, feature dynamics), the relations between a batch's samples (RKD, PKT, SP,
similarity structures) and contrastive objectives. Tested against reference formulas, with the conventions of
:mod:`kdforge.losses.functional` (features [B, ...], "flattened" one vector per sample, float32)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from kdforge.losses.divergence import kl_rows
from kdforge.losses.functional import Temperature, scaled_kl, standardize_logits


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.float().reshape(len(x), -1)


def feature_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kind: Literal["mse", "cosine", "smooth_l1"] = "mse",
    real: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distance between same-shaped features (FitNets hints).

    ``mse`` and ``smooth_l1``: mean over all elements; ``cosine``: mean over samples of
    1 − cos(student, teacher), each sample's feature flattened to one vector. ``real`` ([B, N] booleans, for token
    features [B, N, ...]): only those positions count, as if the padding were not there.
    """
    s, t = student.float(), teacher.float()
    if real is not None:  # padding zeroed on both sides adds nothing; the means count the real elements only
        keep = real.reshape(*real.shape, *[1] * (s.dim() - 2)).to(s.dtype)
        s, t = s * keep, t * keep
    share = 1.0 if real is None else s.numel() / (real.sum() * s[0, 0].numel()).clamp_min(1)
    if kind == "mse":
        return F.mse_loss(s, t) * share
    if kind == "smooth_l1":
        return F.smooth_l1_loss(s, t) * share
    if kind == "cosine":
        return (1 - F.cosine_similarity(_flat(s), _flat(t), dim=1)).mean()
    raise ValueError(f"unknown feature loss '{kind}' (valid: mse, cosine, smooth_l1)")


def linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Linear centred kernel alignment (Kornblith et al., 2019) between [B, ...] features.

    Dimensions may differ (no projector is needed). CKA is 1 for identical features and is
    invariant to orthogonal transforms and isotropic scaling of either side.
    ``debiased`` uses the unbiased HSIC estimator (Song et al., 2012; needs B > 3), which
    removes the upward bias of CKA on small batches.
    """
    kx, ky = _gram(_flat(x)), _gram(_flat(y))
    hsic = _hsic_unbiased if debiased else _hsic_biased
    return hsic(kx, ky) / (hsic(kx, kx) * hsic(ky, ky)).clamp_min(1e-12).sqrt()


def _gram(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(0, keepdim=True)
    return x @ x.T


def _hsic_biased(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum()  # kernels are already centred: tr(AB) up to a constant that cancels in CKA


def _hsic_unbiased(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = a.shape[0]
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples per batch, got {n}")
    a, b = a - torch.diag(torch.diag(a)), b - torch.diag(torch.diag(b))
    ab = a @ b
    return (torch.trace(ab) + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2 * ab.sum() / (n - 2)) / (n * (n - 3))


def cka_loss(student: torch.Tensor, teacher: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """1 − linear CKA."""
    return 1 - linear_cka(student, teacher, debiased)


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of a [B, C, ...] feature map: mean over channels of |f|^p, flattened
    and L2-normalised per sample (Zagoruyko & Komodakis, 2017)."""
    return F.normalize(feature.float().abs().pow(p).mean(1).reshape(len(feature), -1), dim=1)


def at_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer: mean squared difference of the two attention maps. A student map of
    another spatial size is resized to the teacher's first."""
    if student.shape[2:] != teacher.shape[2:]:
        mode = "linear" if student.dim() == 3 else "bilinear"
        student = F.interpolate(student.float(), size=teacher.shape[2:], mode=mode, align_corners=False)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


def relation_logits(a: torch.Tensor, b: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot products between tokens, per relation head: [B, N, D] x [B, N, D] -> [B, R, N, N].

    ``a = q, b = k`` gives attention scores; ``a = b = v`` the value relation of MiniLM.
    Splitting both models' D into the same number R of heads makes relations comparable
    when their widths or head counts differ (MiniLMv2).
    """
    bsz, n, d = a.shape
    if d % heads:
        raise ValueError(f"feature width {d} is not divisible by relation_heads {heads}")
    qa = a.float().reshape(bsz, n, heads, d // heads).transpose(1, 2)
    qb = b.float().reshape(bsz, n, heads, d // heads).transpose(1, 2)
    return qa @ qb.transpose(-1, -2) / math.sqrt(d // heads)


def relation_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, real: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(softmax(teacher) ‖ softmax(student)) over the last dim of [B, R, N, N] relation
    scores, summed over that dim and averaged over batch, heads and rows. ``real`` ([B, N] booleans): padded
    positions are neither rows nor columns, as the models' attention masks leave them out."""
    if real is None:
        return kl_rows(F.log_softmax(teacher_logits.float(), -1), F.log_softmax(student_logits.float(), -1)).mean()
    keys = real[:, None, None, :]
    log_ps = F.log_softmax(student_logits.float().masked_fill(~keys, -torch.inf), -1)
    log_pt = F.log_softmax(teacher_logits.float().masked_fill(~keys, -torch.inf), -1)
    rows = kl_rows(log_pt.masked_fill(~keys, 0), log_ps.masked_fill(~keys, 0))  # [B, R, N]
    return _mean_over(rows, real[:, None, :].expand_as(rows))


def relation_mse(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, real: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared difference of [B, R, N, N] relation scores (TinyBERT's attention term); ``real`` ([B, N]
    booleans): only pairs of real positions count."""
    if real is None:
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    pairs = (real[:, :, None] & real[:, None, :])[:, None].expand_as(student_logits)
    return _mean_over((student_logits.float() - teacher_logits.float()) ** 2, pairs)


def _mean_over(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return values[keep].sum() / keep.sum().clamp_min(1)


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(1e-12).sqrt() * (1 - torch.eye(len(x), device=x.device))


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance (Park et al., CVPR 2019): Huber loss between the pairwise distance matrices
    of the batch, each divided by its mean off-diagonal distance. The Huber loss is averaged over
    all B² entries, the zero diagonal included, as in the authors' code (so their weight of 25 means the
    same here)."""
    s, t = _flat(student), _flat(teacher)
    ds, dt = _pairwise_distances(s), _pairwise_distances(t)
    off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    return F.smooth_l1_loss(ds / ds[off].mean(), dt / dt[off].mean())


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle: Huber loss between cos ∠(x_i − x_j, x_k − x_j) of all triplets, with j the apex."""

    def angles(x: torch.Tensor) -> torch.Tensor:
        e = F.normalize(x[None, :, :] - x[:, None, :], dim=2)  # e[j, i] = unit(x_i - x_j)
        return (e @ e.transpose(1, 2)).reshape(-1)

    return F.smooth_l1_loss(angles(_flat(student)), angles(_flat(teacher)))


def _cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(_flat(x), dim=1)
    return x @ x.T


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): cosine similarities
    mapped to [0, 1], normalised per row into conditional distributions; the KL(teacher ‖ student) terms
    averaged over all B² entries, as in the authors' code (so a published weight means the same here; the mean
    of the rows' KL divergences is B times larger)."""
    ps = (_cosine_matrix(student) + 1) / 2
    pt = (_cosine_matrix(teacher) + 1) / 2
    ps, pt = ps / ps.sum(1, keepdim=True), pt / pt.sum(1, keepdim=True)
    return (pt * ((pt + eps).log() - (ps + eps).log())).mean()


def sp_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori, ICCV 2019): ‖G_s − G_t‖_F² / B², with G = F Fᵀ of
    the flattened features, each row L2-normalised."""
    gs = F.normalize(_flat(student) @ _flat(student).T, dim=1)
    gt = F.normalize(_flat(teacher) @ _flat(teacher).T, dim=1)
    return (gs - gt).pow(2).sum() / len(gs) ** 2


def relational_loss(
    student: torch.Tensor, teacher: torch.Tensor, compare: Literal["mse", "correlation"] = "mse"
) -> torch.Tensor:
    """How the batch cosine-similarity matrices differ. ``mse``: mean squared difference.
    ``correlation``: 1 − Pearson correlation of their off-diagonal entries, blind to any
    affine rescaling of the student's similarities. A 5-d space cannot reproduce the narrow
    range of a 384-d encoder's cosines, but it can order pairs the same way: this asks only
    for that (a differentiable stand-in for the Spearman ρ the evaluation measures)."""
    s, t = _cosine_matrix(student), _cosine_matrix(teacher)
    if compare == "mse":
        return F.mse_loss(s, t)
    s, t = _off_diagonal(s).flatten(), _off_diagonal(t).flatten()
    s, t = s - s.mean(), t - t.mean()
    return 1 - (s * t).sum() / (s.norm() * t.norm()).clamp_min(1e-12)


def feature_dynamics_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """FDD: match how features change from layer to layer. For consecutive mapped layers,
    Δ = h_{l+1} − h_l; loss = mean over layer pairs and samples of 1 − cos(Δ_student, Δ_teacher).

    Residual networks move their features by small steps (a discretised ODE); matching the
    direction of each step teaches the student the teacher's trajectory, not only its points.
    """
    if len(student) != len(teacher) or len(student) < 2:
        raise ValueError(
            f"feature dynamics needs the same number (>= 2) of student and teacher layers, got {len(student)} and "
            f"{len(teacher)}"
        )
    terms = []
    for (s0, s1), (t0, t1) in zip(zip(student, student[1:]), zip(teacher, teacher[1:])):
        terms.append(1 - F.cosine_similarity(_flat(s1 - s0), _flat(t1 - t0), dim=1))
    return torch.stack(terms).mean()


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020, L_out) on [B, D] embeddings: the
    other samples of each anchor's class are its positives (:func:`multi_positive_nce`)."""
    same = labels[:, None] == labels[None, :]
    return multi_positive_nce(features, same & ~torch.eye(len(same), dtype=torch.bool, device=same.device), temperature)


def multi_positive_nce(features: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """For each anchor with at least one positive (``positives`` [B, B], bool, no diagonal):
    minus the mean over its positives of log softmax of cosine similarity / τ over all other
    samples; averaged over those anchors."""
    z = F.normalize(_flat(features), dim=1)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, -math.inf)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = positives.sum(1)
    has = counts > 0
    if not has.any():
        return z.sum() * 0.0  # no positive pair in this batch: nothing to pull together
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1)[has] / counts[has]
    return per_anchor.mean()


# ----------------------------------------------------------------------------- embeddings


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """[B, B] -> [B, B − 1]: each row without its own entry."""
    n = len(m)
    return m.masked_select(~torch.eye(n, dtype=torch.bool, device=m.device)).view(n, n - 1)


def similarity_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: Temperature = 1.0, standardize: bool = False
) -> torch.Tensor:
    """sim_kl: each sample's distribution over the *other* samples of the batch,
    softmax_j(cos(x_i, x_j) / τ), for teacher and student; T²-scaled batch-mean
    KL(teacher ‖ student). Widths may differ (a 5-d student against a 384-d teacher).

    τ decides what is kept: a small τ concentrates each row on its nearest neighbours, a
    large one spreads it over the whole similarity profile (so a curriculum from high to
    low τ moves from global structure to neighbourhoods). ``standardize`` z-scores each row of
    cosines first (:func:`standardize_logits`), so the student need not reproduce the teacher's
    spread of cosines, only their order and relative gaps: a narrow space keeps its neighbours
    without squeezing every other pair to match the teacher's scale."""
    s, t = _off_diagonal(_cosine_matrix(student)), _off_diagonal(_cosine_matrix(teacher))
    if standardize:
        s, t = standardize_logits(s), standardize_logits(t)
    return scaled_kl(F.log_softmax(t / temperature, dim=1), F.log_softmax(s / temperature, dim=1), temperature)


def neighbour_infonce(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.1, neighbours: int = 1
) -> torch.Tensor:
    """InfoNCE with the teacher's neighbours as positives: for each sample, its ``neighbours``
    most similar other samples by the teacher's cosine similarity are pulled close in the
    student's space, against every other sample of the batch (:func:`multi_positive_nce`)."""
    n = len(student)
    if not 1 <= neighbours < n:
        raise ValueError(f"neighbours must be in [1, batch size − 1 = {n - 1}], got {neighbours}")
    similarity = _cosine_matrix(teacher.detach()).fill_diagonal_(-math.inf)
    nearest = similarity.topk(neighbours, dim=1).indices
    positives = torch.zeros(n, n, dtype=torch.bool, device=student.device).scatter_(1, nearest, True)
    return multi_positive_nce(student, positives, temperature)
