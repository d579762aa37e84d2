"""Token-level distillation that never holds the whole vocabulary for every token.

A language model's KD loss is usually computed from logits [tokens, V] of teacher and student:
at a 128k vocabulary and 8k tokens that is 4 GB per copy in fp32, and autograd keeps several.
:func:`chunked_linear_losses` takes the student's last hidden states and its LM head instead (and the
teacher's, or a function giving the teacher's logits of a slice of tokens) and computes the
losses ``chunk`` tokens at a time: each chunk's logits are made once for every loss term, the losses
and the gradients of their weighted sum with respect to the chunk's hidden states and the head's
weights are taken at once, and the logits are dropped before the next chunk. Peak memory grows with
the chunk, not with the number of tokens; values and gradients equal the plain computation's (the
same maths, summed in another order). Compiled (``train.compile``), each loss's elementwise work and
its gradient run fused, as a hand-written kernel would.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from kdforge.losses.divergence import Direction, Tail, sparse_kd_loss
from kdforge.losses.functional import TopK, cross_entropy, kd_loss, topk_log_probs, uld_loss
from kdforge.machine import compiled
from kdforge.taps import unwrap

TeacherLogits = Callable[[slice], torch.Tensor]  # tokens a:b -> the teacher's logits [b - a, V]
# the default chunk: 2**22 logits (16 MB in fp32), but never under 128 tokens, whose matmuls stay efficient (32-token
# chunks at V = 128k cost 1.4x the plain time on a CPU; 128-token ones 1.0x, at under a quarter of its memory). On a
# GPU each chunk's kernel launches and autograd call cost more than its arithmetic: 2**25 logits (128 MB in fp32)
CHUNK_LOGITS, GPU_CHUNK_LOGITS, MIN_CHUNK_TOKENS = 2**22, 2**25, 128


def default_chunk(vocab: int, device: torch.device) -> int:
    """Tokens per chunk when none is given: the device's budget of logits, at least MIN_CHUNK_TOKENS tokens."""
    budget = GPU_CHUNK_LOGITS if device.type == "cuda" else CHUNK_LOGITS
    return max(MIN_CHUNK_TOKENS, budget // vocab)


@dataclass
class LMHead:
    """A language model's output before its head: the last hidden states [..., H] and the head (``weight``
    [V, H], ``bias``) that would make them logits. A model hands this instead of logits when a chunked
    term will make the logits a chunk at a time (see :func:`chunked_linear_loss`)."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        """The shape the logits would have."""
        return torch.Size([*self.hidden.shape[:-1], len(self.weight)])

    def rows(self, keep: torch.Tensor | None = None) -> LMHead:
        """Hidden states as rows [N, H], one per position (only the ``keep`` ones when given)."""
        hidden = self.hidden.flatten(0, -2)
        return LMHead(hidden if keep is None else hidden[keep], self.weight, self.bias)

    def logits(self, part: slice = slice(None)) -> torch.Tensor:
        """The logits of the rows ``part`` (all: every logit at once, what chunking avoids)."""
        return F.linear(self.hidden[part], self.weight, self.bias)


@contextlib.contextmanager
def handing_heads(*models: torch.nn.Module | None) -> Iterator[None]:
    """Inside, each of ``models`` that can (it has a ``returns_head`` attribute) returns an :class:`LMHead`
    from its forward instead of logits."""
    able = [m for m in (unwrap(m) for m in models if m is not None) if hasattr(m, "returns_head")]
    for model in able:
        setattr(model, "returns_head", True)  # noqa: B010 (a flag the module declares, not one of torch's)
    try:
        yield
    finally:
        for model in able:
            setattr(model, "returns_head", False)  # noqa: B010


def can_hand_head(model: torch.nn.Module) -> bool:
    return hasattr(unwrap(model), "returns_head")


class ChunkTerm(NamedTuple):
    """One loss of a chunk of a model's logits: ``loss(logits, *rows(part), **dict(options))`` is its mean over the
    chunk's tokens ``part`` (a slice); ``rows`` gives what else it reads of those tokens (the teacher's logits or
    top k, the targets)."""

    loss: Callable[..., torch.Tensor]
    rows: Callable[[slice], tuple[torch.Tensor, ...]]
    options: tuple[tuple[str, Any], ...] = ()


Losses = tuple[tuple[Callable[..., torch.Tensor], tuple[tuple[str, Any], ...]], ...]  # (loss, options) of each term


@functools.cache
def _chunk_step(losses: Losses, compile: bool) -> Callable[..., torch.Tensor]:
    """The losses of a chunk's logits, stacked: (logits, the rows of each term) -> [terms]. Compiled, the terms'
    elementwise work (the student's softmax shared among them) and its gradient are one graph, fused into a few
    kernels; made once per set of terms and kept for the process."""

    def step(logits: torch.Tensor, *rows: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack([loss(logits, *r, **dict(options)) for (loss, options), r in zip(losses, rows)]).float()

    return compiled(step) if compile else step


class _ChunkedLinearLosses(torch.autograd.Function):
    """Forward computes the losses and, chunk by chunk, the gradients of their weighted sum; backward scales them."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        terms: Sequence[ChunkTerm],
        weights: torch.Tensor,
        chunk: int,
        compiled: bool,
        gradients: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = len(hidden)
        # under autocast every matmul runs in its dtype, the weight cast once rather than at each chunk
        autocast = torch.is_autocast_enabled(hidden.device.type)
        compute = torch.get_autocast_dtype(hidden.device.type) if autocast else weight.dtype
        head = weight.detach().to(compute)
        head_bias = None if bias is None else bias.detach().to(compute)
        values = torch.zeros(len(terms), dtype=torch.float32, device=hidden.device)
        grads = _Gradients(hidden, weight, bias) if gradients else None
        step = _chunk_step(tuple((term.loss, term.options) for term in terms), compiled)
        for start in range(0, tokens, chunk):
            part = slice(start, min(start + chunk, tokens))
            h = hidden[part].detach().to(compute)
            with torch.set_grad_enabled(gradients):
                logits = F.linear(h, head, head_bias).requires_grad_(gradients)
                # each loss averages over the chunk's tokens: weigh it by the chunk's share of all tokens
                losses = step(logits, *(term.rows(part) for term in terms)) * (len(h) / tokens)
                if grads is not None:
                    (grad_logits,) = torch.autograd.grad((losses * weights).sum(), [logits])
                    grads.add(part, grad_logits.to(compute), h, head)
            values += losses.detach()
        if grads is not None:
            ctx.save_for_backward(grads.hidden, grads.weight)
            ctx.grad_bias = grads.bias
        ctx.mark_non_differentiable(values)
        return (values * weights).sum(), values

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_total: torch.Tensor, _: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        # the total scaled (by a gradient scaler, or accumulation): scale the gradients alike
        grads = [g * grad_total if g is not None else None for g in (*ctx.saved_tensors, ctx.grad_bias)]
        return *grads, None, None, None, None, None


class _Gradients:
    """The gradients of the hidden states, the head's weight and its bias, summed chunk by chunk."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        self.hidden = torch.empty_like(hidden)
        self.weight = torch.zeros_like(weight)
        self.bias = torch.zeros_like(bias) if bias is not None else None

    def add(self, part: slice, grad_logits: torch.Tensor, hidden: torch.Tensor, head: torch.Tensor) -> None:
        """A chunk's share, from the gradient of its logits ``grad_logits`` = ``hidden`` @ ``head``ᵀ (one dtype)."""
        self.hidden[part] = grad_logits @ head
        if self.weight.dtype == head.dtype:
            self.weight.addmm_(grad_logits.T, hidden)  # in place: no second [V, H] buffer per chunk
        else:  # float32 weights under autocast: the product in the autocast dtype, the sum in theirs
            self.weight += grad_logits.T @ hidden
        if self.bias is not None:
            self.bias += grad_logits.sum(0)


def chunked_linear_losses(
    head: LMHead,
    terms: Sequence[ChunkTerm],
    weights: Sequence[float] | None = None,
    chunk: int | None = None,
    compiled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses of the logits ``head.hidden`` [N, H] @ ``head.weight`` [V, H]ᵀ (+ ``bias``), each the mean over
    tokens of a per-token loss (a :class:`ChunkTerm`), made ``chunk`` tokens at a time (default:
    :func:`default_chunk`) in one pass for all of them: each chunk's logits are made once, whatever the number of
    terms. Returns Σ weightᵢ · lossᵢ (default weights 1), whose gradients reach the hidden states, the weight and
    the bias, and the losses themselves [len(terms)], detached. No more than one chunk's logits exist at once.
    ``compiled``: each term's loss runs compiled (``torch.compile``), its elementwise work fused."""
    hidden, weight = head.hidden, head.weight
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [N, H] and weight [V, H] expected, got {list(hidden.shape)} and {list(weight.shape)}")
    chunk = default_chunk(len(weight), hidden.device) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    scale = torch.tensor([1.0] * len(terms) if weights is None else list(weights), device=hidden.device)
    learning = any(t is not None and t.requires_grad for t in (hidden, weight, head.bias))
    gradients = torch.is_grad_enabled() and learning  # none to take in evaluation
    return _ChunkedLinearLosses.apply(hidden, weight, head.bias, list(terms), scale, chunk, compiled, gradients)


def chunked_linear_loss(
    head: LMHead, term: ChunkTerm, chunk: int | None = None, compiled: bool = False
) -> torch.Tensor:
    """One loss, as :func:`chunked_linear_losses` makes it."""
    return chunked_linear_losses(head, [term], chunk=chunk, compiled=compiled)[0]


def kd_chunks(
    teacher: TeacherLogits | torch.Tensor | TopK,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    beta: float = 0.5,
    alpha: float = 0.1,
    topk: int | None = None,
    tail: Tail = "bucket",
) -> ChunkTerm:
    """Token-level KD (:func:`~kdforge.losses.functional.kd_loss`: T² · the mean over tokens of the divergence)
    as a :class:`ChunkTerm`. ``teacher`` gives the teacher's logits of a slice of the tokens (a function, e.g.
    :meth:`LMHead.logits` of the teacher's own hidden states, so that its logits are never whole either), or is a
    [N, V] tensor of them, or a top-k teacher (:class:`TopK`, its tail handled as ``tail`` says:
    :func:`~kdforge.losses.divergence.sparse_rows`); ``topk`` keeps a dense teacher's top k tokens alike, chunk by
    chunk."""
    options = {"temperature": temperature, "direction": direction, "beta": beta, "alpha": alpha}
    if isinstance(teacher, TopK):
        top, indices = teacher
        return ChunkTerm(sparse_kd_loss, lambda part: (top[part], indices[part]), _sorted(options, tail=tail))
    logits_of = _teacher_rows(teacher)
    if topk is not None:  # the online teacher kept to its top k, a chunk at a time
        return ChunkTerm(
            sparse_kd_loss, lambda part: tuple(topk_log_probs(logits_of(part), topk)), _sorted(options, tail=tail)
        )
    return ChunkTerm(kd_loss, lambda part: (logits_of(part),), _sorted(options))


def uld_chunks(teacher: TeacherLogits | torch.Tensor, temperature: float = 1.0) -> ChunkTerm:
    """Universal logit distillation (:func:`~kdforge.losses.functional.uld_loss`) as a :class:`ChunkTerm`;
    ``teacher`` as in :func:`kd_chunks` (its vocabulary may differ from the student's)."""
    logits_of = _teacher_rows(teacher)
    return ChunkTerm(uld_loss, lambda part: (logits_of(part),), _sorted({"temperature": temperature}))


def ce_chunks(targets: torch.Tensor, label_smoothing: float = 0.0) -> ChunkTerm:
    """Mean next-token cross-entropy against ``targets`` [N] as a :class:`ChunkTerm`."""
    return ChunkTerm(cross_entropy, lambda part: (targets[part],), _sorted({"label_smoothing": label_smoothing}))


def chunked_linear_kd(
    head: LMHead, teacher: TeacherLogits | torch.Tensor | TopK, *, chunk: int | None = None, **options: Any
) -> torch.Tensor:
    """Token-level KD of the student whose logits ``head`` would make, a chunk of tokens at a time: ``teacher`` and
    ``options`` as :func:`kd_chunks` takes them."""
    return chunked_linear_loss(head, kd_chunks(teacher, **options), chunk)


def chunked_linear_uld(
    head: LMHead, teacher: TeacherLogits | torch.Tensor, temperature: float = 1.0, chunk: int | None = None
) -> torch.Tensor:
    """Universal logit distillation a chunk of tokens at a time (:func:`uld_chunks`)."""
    return chunked_linear_loss(head, uld_chunks(teacher, temperature), chunk)


def chunked_linear_ce(
    head: LMHead, targets: torch.Tensor, label_smoothing: float = 0.0, chunk: int | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy against ``targets`` [N], a chunk of tokens at a time (:func:`ce_chunks`)."""
    return chunked_linear_loss(head, ce_chunks(targets, label_smoothing), chunk)


def _teacher_rows(teacher: TeacherLogits | torch.Tensor) -> TeacherLogits:
    return teacher.__getitem__ if isinstance(teacher, torch.Tensor) else teacher


def _sorted(options: dict[str, Any], **more: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted({**options, **more}.items()))
