"""Token rows as language models read them: plain ids [B, T], or packed rows [B, 2, T] that hold several
documents each — the ids, and under them each token's document number in its row (0, 0, 0, 1, 1, 2, ...).

A model reading a packed row restarts positions at each document and attends only within it (a
block-diagonal causal mask), so that packing short examples into full rows wastes no compute on padding
and lets no document see another.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class TokenInputs(NamedTuple):
    ids: torch.Tensor  # [B, T]
    positions: torch.Tensor | None  # [B, T], each token's place in its document (None: 0 .. T-1)
    mask: torch.Tensor | None  # [B, 1, T, T] bool, True where a query may attend a key (None: plain causal)


def token_inputs(x: torch.Tensor) -> TokenInputs:
    """The ids of ``x`` [B, T], or of packed rows [B, 2, T] with their positions and attention mask."""
    if x.dim() == 2:
        return TokenInputs(x.long(), None, None)
    if x.dim() != 3 or x.shape[1] != 2:
        raise ValueError(f"token rows are [B, T] ids or [B, 2, T] packed rows (ids, documents); got {list(x.shape)}")
    ids, documents = x[:, 0].long(), x[:, 1]
    return TokenInputs(ids, document_positions(documents), document_mask(documents))


def document_positions(documents: torch.Tensor) -> torch.Tensor:
    """[B, T] document numbers -> each token's position within its document."""
    steps = torch.arange(documents.shape[-1], device=documents.device).expand_as(documents)
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    first = torch.where(starts, steps, torch.zeros_like(steps)).cummax(-1).values  # where each token's document began
    return steps - first


def document_mask(documents: torch.Tensor) -> torch.Tensor:
    """[B, T] document numbers -> [B, 1, T, T]: query t may attend key s when s <= t in the same document."""
    length = documents.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=documents.device).tril()
    return ((documents[:, :, None] == documents[:, None, :]) & causal)[:, None]
