"""Token-level distillation that never holds the whole vocabulary for every token.

A language model's KD loss is usually computed from logits [tokens, V] of teacher and student:
at a 128k vocabulary and 8k tokens that is 4 GB per copy in fp32, and autograd keeps several.
:func:`chunked_linear_kd` takes the student's last hidden states and its LM head instead (and the
teacher's, or a function giving the teacher's logits of a slice of tokens) and computes the
divergence ``chunk`` tokens at a time: each chunk's logits are made, the divergence and its
gradients with respect to the chunk's hidden states and the head's weights are taken at once,
and the logits are dropped before the next chunk. Peak memory grows with the chunk, not with the
number of tokens; value and gradients equal the plain computation's (the same maths, summed in
another order).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from kdforge.losses.divergence import Direction, Tail, sparse_kd_loss
from kdforge.losses.functional import TopK, kd_loss, topk_log_probs, uld_loss
from kdforge.taps import unwrap

TeacherLogits = Callable[[slice], torch.Tensor]  # tokens a:b -> the teacher's logits [b - a, V]
ChunkLoss = Callable[[torch.Tensor, slice], torch.Tensor]  # (a chunk's logits, its tokens a:b) -> its mean loss
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


class _ChunkedLinearLoss(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, its gradients; backward scales them."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        loss_of: ChunkLoss,
        chunk: int,
    ) -> torch.Tensor:
        tokens = len(hidden)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        grad_bias = torch.zeros_like(bias) if bias is not None else None
        for start in range(0, tokens, chunk):
            part = slice(start, min(start + chunk, tokens))
            h = hidden[part].detach()
            with torch.enable_grad():
                logits = F.linear(h, weight.detach(), None if bias is None else bias.detach()).requires_grad_(True)
                # the loss averages over the chunk's tokens: weight it by its share of all tokens
                loss = loss_of(logits, part) * (len(h) / tokens)
                (grad_logits,) = torch.autograd.grad(loss, [logits])
            total += loss.detach().float()
            grad_logits = grad_logits.to(weight.dtype)
            grad_hidden[part] = grad_logits @ weight.detach()
            grad_weight.addmm_(grad_logits.T, h.to(weight.dtype))  # in place: no second [V, H] buffer per chunk
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.grad_bias = grad_bias
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grads = [*ctx.saved_tensors, ctx.grad_bias]
        if not bool(grad_output == 1):  # the loss scaled (by its term's weight): scale the gradients alike
            grads = [g * grad_output if g is not None else None for g in grads]
        return *grads, None, None


def chunked_linear_loss(head: LMHead, loss_of: ChunkLoss, chunk: int | None = None) -> torch.Tensor:
    """The mean over tokens of a per-token loss of the logits ``head.hidden`` [N, H] @ ``head.weight`` [V, H]ᵀ
    (+ ``bias``), made ``chunk`` tokens at a time (default: :func:`default_chunk`):
    ``loss_of(logits, part)`` is the mean loss of the chunk of tokens ``part``. Gradients reach the hidden
    states, the weight and the bias; no more than one chunk's logits exist at once."""
    hidden, weight = head.hidden, head.weight
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [N, H] and weight [V, H] expected, got {list(hidden.shape)} and {list(weight.shape)}")
    chunk = default_chunk(len(weight), hidden.device) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    return _ChunkedLinearLoss.apply(hidden, weight, head.bias, loss_of, chunk)


def chunked_linear_kd(
    head: LMHead,
    teacher: TeacherLogits | torch.Tensor | TopK,
    *,
    temperature: float = 1.0,
    direction: Direction = "forward",
    beta: float = 0.5,
    alpha: float = 0.1,
    topk: int | None = None,
    tail: Tail = "bucket",
    chunk: int | None = None,
) -> torch.Tensor:
    """Token-level KD (:func:`~kdforge.losses.functional.kd_loss`: T² · the mean over tokens of the
    divergence) of the student whose logits ``head`` would make, a chunk of tokens at a time
    (:func:`chunked_linear_loss`). ``teacher`` gives the teacher's logits of a slice of the tokens (a
    function, e.g. :meth:`LMHead.logits` of the teacher's own hidden states, so that its logits are never
    whole either), or is a [N, V] tensor of them, or a top-k teacher (:class:`TopK`, its tail handled as
    ``tail`` says: :func:`~kdforge.losses.divergence.sparse_rows`); ``topk`` keeps a dense teacher's top k
    tokens alike, chunk by chunk."""
    options: dict[str, Any] = {"direction": direction, "beta": beta, "alpha": alpha}
    if isinstance(teacher, TopK):
        top, indices = teacher
        return chunked_linear_loss(
            head,
            lambda z, part: sparse_kd_loss(z, top[part], indices[part], temperature, tail=tail, **options),
            chunk,
        )
    logits_of = _teacher_rows(teacher)
    if topk is not None:  # the online teacher kept to its top k, a chunk at a time
        return chunked_linear_loss(
            head,
            lambda z, part: sparse_kd_loss(
                z, *topk_log_probs(logits_of(part), topk), temperature, tail=tail, **options
            ),
            chunk,
        )
    return chunked_linear_loss(head, lambda z, part: kd_loss(z, logits_of(part), temperature, **options), chunk)


def chunked_linear_uld(
    head: LMHead, teacher: TeacherLogits | torch.Tensor, temperature: float = 1.0, chunk: int | None = None
) -> torch.Tensor:
    """Universal logit distillation (:func:`~kdforge.losses.functional.uld_loss`) a chunk of tokens at a time;
    ``teacher`` as in :func:`chunked_linear_kd` (its vocabulary may differ from the student's)."""
    logits_of = _teacher_rows(teacher)
    return chunked_linear_loss(head, lambda z, part: uld_loss(z, logits_of(part), temperature), chunk)


def _teacher_rows(teacher: TeacherLogits | torch.Tensor) -> TeacherLogits:
    return teacher.__getitem__ if isinstance(teacher, torch.Tensor) else teacher


def chunked_linear_ce(
    head: LMHead, targets: torch.Tensor, label_smoothing: float = 0.0, chunk: int | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy against ``targets`` [N], a chunk of tokens at a time."""
    return chunked_linear_loss(
        head, lambda z, part: F.cross_entropy(z.float(), targets[part], label_smoothing=label_smoothing), chunk
    )
