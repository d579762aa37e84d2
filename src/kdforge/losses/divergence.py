"""Divergences between a teacher's and a student's distributions, row by row, and the same on a
teacher kept sparse (its top k classes).

Every divergence here reads log-probabilities ``log_pt`` (teacher) and ``log_ps`` (student) of
shape [N, C] and returns one value per row [N], over whatever C outcomes the rows hold: the whole
vocabulary, or the k kept classes and one bucket for the rest (:func:`sparse_rows`).

- ``forward``: KL(p_t ‖ p_s), Hinton's KD (mass-covering);
- ``reverse``: KL(p_s ‖ p_t) (mode-seeking, as in MiniLLM);
- ``jsd``: ½ KL(p_t ‖ m) + ½ KL(p_s ‖ m) with m = ½ (p_t + p_s);
- ``gjsd``: generalised JSD, [β KL(p_t ‖ m) + (1 − β) KL(p_s ‖ m)] / (β (1 − β)) with
  m = β p_t + (1 − β) p_s, normalised so that it tends to the forward KL as β → 0 and to the
  reverse KL as β → 1 (and is exactly those at β = 0 and 1); at β = ½ it is 4 · jsd;
- ``skew_forward``: KL(p_t ‖ α p_t + (1 − α) p_s), DistiLLM's skew KL: mixing a share α of the
  teacher into the student keeps the divergence and its gradient bounded where the student
  gives a teacher token almost no mass (α = 0: the forward KL);
- ``skew_reverse``: KL(p_s ‖ α p_s + (1 − α) p_t), the skew reverse KL (α = 0: the reverse KL);
- ``tvd``: total variation ½ Σ |p_t − p_s|, bounded in [0, 1] (DistiLLM's and GKD's alternative).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Direction = Literal["forward", "reverse", "jsd", "gjsd", "skew_forward", "skew_reverse", "tvd"]
DIRECTIONS: tuple[str, ...] = Direction.__args__  # type: ignore[attr-defined]
Tail = Literal["bucket", "renormalise"]


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) of each row, from log-probabilities: [N, C] -> [N]."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def _mixture(log_a: torch.Tensor, log_b: torch.Tensor, a: float) -> torch.Tensor:
    """log(a · p_a + (1 − a) · p_b), stably, for 0 < a < 1."""
    return torch.logaddexp(log_a + math.log(a), log_b + math.log(1 - a))


def divergence_rows(
    log_pt: torch.Tensor, log_ps: torch.Tensor, direction: Direction = "forward", beta: float = 0.5, alpha: float = 0.1
) -> torch.Tensor:
    """The ``direction`` divergence of each row (see the module docstring): [N, C] -> [N]."""
    if direction == "gjsd" and not 0.0 <= beta <= 1.0:
        raise ValueError(f"gjsd needs 0 <= beta <= 1, got {beta}")
    if direction.startswith("skew") and not 0.0 <= alpha < 1.0:
        raise ValueError(f"skew divergences need 0 <= alpha < 1, got {alpha}")
    if direction == "forward" or (direction == "gjsd" and beta == 0.0) or (direction == "skew_forward" and alpha == 0):
        return kl_rows(log_pt, log_ps)
    if direction == "reverse" or (direction == "gjsd" and beta == 1.0) or (direction == "skew_reverse" and alpha == 0):
        return kl_rows(log_ps, log_pt)
    if direction in ("jsd", "gjsd"):
        b = 0.5 if direction == "jsd" else beta
        log_m = _mixture(log_pt, log_ps, b)
        rows = b * kl_rows(log_pt, log_m) + (1 - b) * kl_rows(log_ps, log_m)
        return rows / (b * (1 - b)) if direction == "gjsd" else rows
    if direction == "skew_forward":
        return kl_rows(log_pt, _mixture(log_pt, log_ps, alpha))
    if direction == "skew_reverse":
        return kl_rows(log_ps, _mixture(log_ps, log_pt, alpha))
    if direction == "tvd":
        return 0.5 * (log_pt.exp() - log_ps.exp()).abs().sum(-1)
    raise ValueError(f"unknown direction '{direction}' (valid: {', '.join(DIRECTIONS)})")


def log1mexp(log_x: torch.Tensor) -> torch.Tensor:
    """log(1 − x) from log x ≤ 0, stably (Mächler's two branches), floored at log 1e-30 where x ≈ 1 (an empty
    tail: a mass float32 still holds, so that no log is −∞)."""
    tail = torch.where(log_x > -math.log(2), torch.log(-torch.expm1(log_x)), torch.log1p(-torch.exp(log_x)))
    return tail.clamp_min(math.log(1e-30))


def sparse_rows(
    log_ps: torch.Tensor, top_log_pt: torch.Tensor, indices: torch.Tensor, tail: Tail = "bucket"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) log-probabilities over the outcomes a top-k teacher knows, from the student's full
    log-probabilities ``log_ps`` [N, V] and the teacher's ``top_log_pt`` [N, k] at ``indices`` [N, k]:

    - ``bucket``: the k kept tokens and one more outcome, "any other token", holding the mass left
      over (1 − Σ kept) of each model: [N, k + 1]. No mass is dropped, so each divergence is a lower
      bound of the full-vocabulary one (it cannot tell tail tokens apart), and equal to it when the
      teacher's tail is empty (k = V, or a teacher sure of its top k);
    - ``renormalise``: the k kept tokens only, each model's probabilities rescaled to sum to one
      there: [N, k]. The student learns nothing about the mass it puts outside the teacher's top k.
    """
    kept = log_ps.gather(-1, indices)
    if tail == "renormalise":
        return top_log_pt - top_log_pt.logsumexp(-1, keepdim=True), kept - kept.logsumexp(-1, keepdim=True)
    if tail != "bucket":
        raise ValueError(f"tail must be 'bucket' or 'renormalise', got '{tail}'")
    teacher_rest = log1mexp(top_log_pt.logsumexp(-1, keepdim=True).clamp_max(0.0))
    student_rest = log1mexp(kept.logsumexp(-1, keepdim=True).clamp_max(0.0))
    return torch.cat([top_log_pt, teacher_rest], -1), torch.cat([kept, student_rest], -1)


def tempered(top_log_pt: torch.Tensor, temperature: float) -> torch.Tensor:
    """A top-k teacher's log-probabilities at ``temperature``: its kept tokens' log p / T renormalised with the
    tail bucket counted as one token of the remaining mass. Exact at T = 1; otherwise how the tail's mass splits
    among its tokens is unknown, and the bucket is tempered as if it were one token."""
    if temperature == 1.0:
        return top_log_pt
    rest = log1mexp(top_log_pt.logsumexp(-1, keepdim=True).clamp_max(0.0))
    scaled = torch.cat([top_log_pt, rest], -1) / temperature
    return (scaled - scaled.logsumexp(-1, keepdim=True))[..., :-1]


def sparse_kd_loss(
    student_logits: torch.Tensor,
    top_log_pt: torch.Tensor,
    indices: torch.Tensor,
    temperature: float = 1.0,
    direction: Direction = "forward",
    beta: float = 0.5,
    alpha: float = 0.1,
    tail: Tail = "bucket",
) -> torch.Tensor:
    """T² · the mean over rows of the ``direction`` divergence between a top-k teacher (log-probabilities
    ``top_log_pt`` [N, k] of its tokens ``indices`` [N, k], at temperature 1) and the student's [N, V] logits, at
    ``temperature``, with the teacher's tail handled as ``tail`` says (:func:`sparse_rows`). Equal to the dense
    :func:`~kdforge.losses.functional.kd_loss` when k = V."""
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if indices.shape[-1] >= log_ps.shape[-1]:  # every token kept: no tail, and tempering is exact
        whole = torch.full_like(log_ps, -math.inf).scatter(-1, indices, top_log_pt.float())
        log_pt = F.log_softmax(whole / temperature, dim=-1)
    else:
        log_pt, log_ps = sparse_rows(log_ps, tempered(top_log_pt.float(), temperature), indices, tail)
    return divergence_rows(log_pt, log_ps, direction, beta, alpha).mean() * temperature**2
