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

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from kdforge.losses.functional import Direction, kd_loss

TeacherLogits = Callable[[slice], torch.Tensor]  # tokens a:b -> the teacher's logits [b - a, V]
# the default chunk: 2**22 logits (16 MB in fp32), but never under 128 tokens, whose matmuls stay efficient (32-token
# chunks at V = 128k cost 1.4x the plain time on a CPU; 128-token ones 1.0x, at under a quarter of its memory)
CHUNK_LOGITS, MIN_CHUNK_TOKENS = 2**22, 128


class _ChunkedLinearKD(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, its gradients; backward scales them."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        teacher: TeacherLogits,
        temperature: float,
        direction: Direction,
        beta: float,
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
                with torch.no_grad():
                    target = teacher(part)
                # kd_loss averages over the chunk's tokens: weight it by its share of all tokens
                loss = kd_loss(logits, target, temperature, direction, beta) * (len(h) / tokens)
                (grad_logits,) = torch.autograd.grad(loss, [logits])
            total += loss.detach().float()
            grad_logits = grad_logits.to(weight.dtype)
            grad_hidden[part] = grad_logits @ weight.detach()
            grad_weight.addmm_(grad_logits.T, h)  # in place: no second [V, H] buffer per chunk
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
        return *grads, None, None, None, None, None


def chunked_linear_kd(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher: TeacherLogits | torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    direction: Direction = "forward",
    beta: float = 0.5,
    chunk: int | None = None,
) -> torch.Tensor:
    """Token-level KD (:func:`~kdforge.losses.functional.kd_loss`: T² · the mean over tokens of the
    divergence) of the student whose logits are ``hidden`` [N, H] @ ``weight`` [V, H]ᵀ (+ ``bias``),
    ``chunk`` tokens at a time (default: :data:`CHUNK_LOGITS` logits, at least 128 tokens). ``teacher`` gives the
    teacher's logits of a slice of the tokens (a function, e.g. the teacher's own hidden states through
    its head, so that its logits are never whole either) or is a [N, V] tensor of them. Gradients reach
    ``hidden``, ``weight`` and ``bias``."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [N, H] and weight [V, H] expected, got {list(hidden.shape)} and {list(weight.shape)}")
    chunk = max(MIN_CHUNK_TOKENS, CHUNK_LOGITS // len(weight)) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    lookup: TeacherLogits = teacher.__getitem__ if isinstance(teacher, torch.Tensor) else teacher
    return _ChunkedLinearKD.apply(hidden, weight, bias, lookup, temperature, direction, beta, chunk)


def linear_teacher(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> TeacherLogits:
    """The teacher's logits of a slice of tokens from its last hidden states [N, H] and LM head [V, H]."""
    return lambda part: F.linear(hidden[part], weight, bias)
