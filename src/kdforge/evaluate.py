"""Metrics of a model on a split, for classification and for regression.

The task is read from the targets: integer class indices make a classification (accuracy,
mean cross-entropy), real or complex targets a regression (``mse``: mean |prediction −
target|², ``psnr_db``: 10·log10(max|target|² / mse) over the split, ``loss`` = mse). An
``embedding`` task (named by the caller) compares the outputs' similarity structure with the
targets' (the teacher's embeddings): ``spearman`` and ``recall_at_10``. An ``lm`` task
(next-token targets [N, T]) scores every position: token ``accuracy``, mean ``loss`` per
token (nats) and ``perplexity`` = e^loss; a model that can hand over its LM head has its
logits made a chunk of tokens at a time, never for the whole batch at once.
Each task has one headline **score**, higher is better: accuracy, PSNR in dB, Spearman ρ,
or minus the perplexity.
Best-epoch selection, early stopping, reports and KD gains all read it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.data.bundle import PAD_TARGET, PER_TOKEN_TASKS
from kdforge.losses.chunked import LMHead, default_chunk, handing_heads
from kdforge.losses.divergence import kl_rows

Batches = Iterable[tuple[torch.Tensor, ...]]  # (x, y, ...)


def is_regression(targets: torch.Tensor) -> bool:
    return targets.is_floating_point() or targets.is_complex()


@torch.no_grad()
def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    batches: Batches,
    autocast: contextlib.AbstractContextManager | None = None,
    task: str | None = None,
) -> dict[str, float]:
    """The task's metrics over all batches (model in eval mode). ``task: embedding`` compares
    the outputs with the targets (the teacher's embeddings) by :func:`embedding_metrics`; else
    the task is read from the targets."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        if task == "embedding":
            pairs, rows = [], 0
            with autocast or contextlib.nullcontext():
                for x, y, *_ in batches:  # the metrics read the first EMBEDDING_ROWS rows: no more are encoded
                    pairs.append((model(x).float(), y.float()))
                    rows += len(y)
                    if rows >= EMBEDDING_ROWS:
                        break
            return embedding_metrics(torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs]))
        metrics = _label_metrics(model, batches, autocast, per_token=task in PER_TOKEN_TASKS)
        return {**metrics, "perplexity": math.exp(min(metrics["loss"], 50.0))} if task == "lm" else metrics
    finally:
        if was_training and isinstance(model, nn.Module):
            model.train()


def _label_metrics(
    model: Callable[[torch.Tensor], torch.Tensor],
    batches: Batches,
    autocast: contextlib.AbstractContextManager | None,
    per_token: bool = False,
) -> dict[str, float]:
    loss = hits = peak = None  # summed cross-entropy (or squared error), correct predictions, a regression's max |y|
    samples = elements = 0
    regression = False
    for x, y, *_ in batches:
        if per_token:  # language models: every real (unpadded) position is a sample
            logits_of, targets, chunk = token_logits(model, x, y, autocast)
            for part in _slices(len(targets), chunk):
                logits = logits_of(part)
                loss = _running_sum(loss, F.cross_entropy(logits, targets[part], reduction="sum"))
                hits = _running_sum(hits, (logits.argmax(-1) == targets[part]).sum())
            samples += len(targets)
            continue
        with autocast or contextlib.nullcontext():
            out = model(x)
        regression = is_regression(y)
        if regression:
            loss = _running_sum(loss, (out - y).abs().float().square().sum())
            largest = y.abs().max().float()
            peak = largest if peak is None else torch.maximum(peak, largest, out=peak)
            elements += y.numel()
        else:
            logits = out.float()
            loss = _running_sum(loss, F.cross_entropy(logits, y, reduction="sum"))
            hits = _running_sum(hits, (logits.argmax(-1) == y).sum())
        samples += len(y)
    summed = float(loss) if loss is not None else 0.0
    if regression and peak is not None:
        mse = summed / max(elements, 1)
        return {"mse": mse, "psnr_db": 10 * math.log10(float(peak) ** 2 / max(mse, 1e-20)), "loss": mse}
    return {"accuracy": (int(hits) if hits is not None else 0) / max(samples, 1), "loss": summed / max(samples, 1)}


def _running_sum(total: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """``total + value``, added in place in float64 (the sums can be large), on the device: read once at the end, so
    that no batch waits for an accelerator. In place, because a tensor kept per batch would pin the allocator's heap
    above each batch's freed logits: an evaluation's memory then grows with the split (1.3 GB over 7,800 windows of
    a 256-token vocabulary)."""
    return value.double() if total is None else total.add_(value)


def token_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    autocast: contextlib.AbstractContextManager | None,
) -> tuple[Callable[[slice], torch.Tensor], torch.Tensor, int]:
    """A language model's fp32 logits of a batch's real (unpadded) tokens, a slice of those tokens at a time, their
    targets, and the tokens a slice should hold. A model that can hand over its LM head makes each slice's logits
    alone (:func:`~kdforge.losses.chunked.default_chunk` tokens: never the whole [tokens, vocabulary] logits, which
    would set a chunked run's peak memory); another makes them all at once."""
    keep = y.flatten() != PAD_TARGET
    targets = y.flatten()[keep]
    with autocast or contextlib.nullcontext(), handing_heads(model if isinstance(model, nn.Module) else None):
        out = model(x)
    if not isinstance(out, LMHead):
        whole = out.flatten(0, -2)[keep].float()
        return whole.__getitem__, targets, max(len(targets), 1)
    rows = out.rows(keep)

    def logits_of(part: slice) -> torch.Tensor:
        with autocast or contextlib.nullcontext():  # the head's weight may be fp32 and the hidden states bf16
            return rows.logits(part).float()

    return logits_of, targets, default_chunk(len(rows.weight), rows.hidden.device)


def _slices(n: int, chunk: int) -> Iterator[slice]:
    return (slice(start, start + chunk) for start in range(0, n, chunk))


@torch.no_grad()
def teacher_agreement(
    student: nn.Module,
    teacher: Callable[[torch.Tensor], torch.Tensor],
    batches: Batches,
    autocast: contextlib.AbstractContextManager | None = None,
    per_token: bool = False,
) -> dict[str, float]:
    """How closely the student follows its teacher on held-out data (fidelity): ``top1_agreement``, the share
    of samples (tokens, for language models: the real ones) on which both predict the same class, and
    ``kl_from_teacher``, the mean KL(p_teacher ‖ p_student) at temperature 1."""
    was_training = student.training
    student.eval()
    sums = None  # [agreements, summed KL], read once at the end (as in evaluate)
    count = 0
    try:
        for x, y, *_ in batches:
            if per_token:  # a chunk of tokens at a time (see token_logits)
                student_of, targets, chunk = token_logits(student, x, y, autocast)
                teacher_of, _, teacher_chunk = token_logits(teacher, x, y, autocast)
                chunk = min(chunk, teacher_chunk)
                parts: Iterable[tuple[torch.Tensor, torch.Tensor]] = (
                    (student_of(part), teacher_of(part)) for part in _slices(len(targets), chunk)
                )
            else:
                with autocast or contextlib.nullcontext():
                    parts = [(student(x).float(), teacher(x).float())]
            for zs, zt in parts:
                same = (zs.argmax(-1) == zt.argmax(-1)).sum().float()
                sums = _running_sum(
                    sums, torch.stack([same, kl_rows(F.log_softmax(zt, -1), F.log_softmax(zs, -1)).sum()])
                )
                count += len(zs)
    finally:
        student.train(was_training)
    agree, kl = sums.tolist() if sums is not None else [0.0, 0.0]
    return {"top1_agreement": agree / max(count, 1), "kl_from_teacher": kl / max(count, 1)}


EMBEDDING_ROWS = 2000  # the rows whose pairwise similarities the embedding metrics compare


def embedding_metrics(
    student: torch.Tensor, teacher: torch.Tensor, neighbours: int = 10, max_rows: int = EMBEDDING_ROWS
) -> dict[str, float]:
    """How well student vectors [N, k] keep the teacher's [N, D] relations, over the first
    ``max_rows`` rows: ``spearman``, the rank correlation of all pairwise cosine
    similarities, and ``recall_at_10``, the mean share of each row's ``neighbours`` nearest
    rows (by cosine) that the student and the teacher agree on; ``loss`` = 1 − spearman."""
    s, t = _cosines(student[:max_rows]), _cosines(teacher[:max_rows])
    n = len(s)
    upper = torch.triu_indices(n, n, offset=1)
    rho = _pearson(_ranks(s[upper[0], upper[1]]), _ranks(t[upper[0], upper[1]]))
    k = min(neighbours, n - 1)
    eye = torch.eye(n, dtype=torch.bool)
    near_s = s.masked_fill(eye, -2.0).topk(k, dim=1).indices
    near_t = t.masked_fill(eye, -2.0).topk(k, dim=1).indices
    shared = (near_s.unsqueeze(2) == near_t.unsqueeze(1)).any(2).sum(1).double() / k
    return {"spearman": rho, "recall_at_10": float(shared.mean()), "loss": 1.0 - rho}


def _cosines(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x.double().flatten(1), dim=1)
    return x @ x.T


def _ranks(values: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(values)
    ranks[values.argsort()] = torch.arange(len(values), dtype=values.dtype)
    return ranks


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def score(metrics: dict[str, float]) -> float:
    """The headline metric, higher is better: accuracy, PSNR in dB for a regression, the
    Spearman correlation of similarities for an embedding, minus the perplexity for a language model."""
    key = _headline(metrics)
    return -metrics[key] if key == "perplexity" else metrics[key]


def _headline(metrics: dict[str, float]) -> str:
    return next(k for k in ("perplexity", "accuracy", "psnr_db", "spearman") if k in metrics)


def shown(metrics: dict[str, float]) -> str:
    """The headline metric for people: '97.41%', '23.52 dB', 'ρ 0.812, R@10 0.431' or 'PPL 4.21'; '-' when there
    is none (a teacher that predicts its own tokens is not scored on the data's)."""
    if not metrics:
        return "-"
    key = _headline(metrics)
    if key == "spearman":
        return f"ρ {metrics['spearman']:.3f}, R@10 {metrics['recall_at_10']:.3f}"
    if key == "perplexity":
        return f"PPL {metrics['perplexity']:.3f}"
    return f"{100 * metrics['accuracy']:.2f}%" if key == "accuracy" else f"{metrics['psnr_db']:.2f} dB"


def score_name(metrics: dict[str, float]) -> str:
    return {"accuracy": "acc", "psnr_db": "PSNR", "spearman": "ρ", "perplexity": "PPL"}[_headline(metrics)]


def score_gain(better: dict[str, float], worse: dict[str, float]) -> str:
    """How much ``better`` beats ``worse``: accuracy points, dB, Spearman ρ, or perplexity
    (lower is better, so a gain is the drop: positive when ``better`` is lower)."""
    key = _headline(better)
    if key == "perplexity":
        lower = worse["perplexity"] - better["perplexity"]
        return f"{lower:+.3f} PPL (perplexity {worse['perplexity']:.3f} → {better['perplexity']:.3f})"
    if key == "accuracy":
        return f"{100 * (better['accuracy'] - worse['accuracy']):+.2f} points"
    if key == "spearman":
        return f"{better['spearman'] - worse['spearman']:+.3f} ρ"
    return f"{better['psnr_db'] - worse['psnr_db']:+.2f} dB"


def selection_value(metrics: dict[str, float]) -> float:
    """The score as one number that breaks ties as :func:`is_better` does: minus a billionth of the validation loss,
    far below the smallest score step a validation split can show (1/N for accuracy on N samples). A tuner that
    sees many trials at the same accuracy (100% of a small validation split) then prefers the surest of them."""
    return score(metrics) - 1e-9 * metrics.get("loss", 0.0)


def is_better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    """A higher validation score wins; a tie goes to the lower validation loss."""
    if best is None:
        return True
    return (score(candidate), -candidate["loss"]) > (score(best), -best["loss"])
