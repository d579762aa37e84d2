"""A causal LM teacher with its own tokenizer, read at the data's token positions.

When teacher and student tokenise text differently, no token id of one names a token of the other. The
teacher then reads the text of each row (the data's tokens decoded) in its own tokens, and each of the
data's positions is given the teacher's prediction at the same place in the text: student position i has
read the text up to the end of its token i, and reads the teacher position j whose token is the last to end
there or before (so the teacher has read no text the student has not). Where both tokenizers cut the text
at the same place, both predict what follows that place; elsewhere the teacher's position is the nearest
earlier one. Its logits are over its own vocabulary: a loss that compares distributions over different
vocabularies reads them (``uld``, :func:`~kdforge.losses.functional.uld_loss`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.losses.chunked import LMHead, handing_heads

TokenTexts = Callable[[torch.Tensor], list[list[str]]]  # token rows -> each token's share of the text


def aligned_positions(pieces: Sequence[str], teacher_ends: Sequence[int]) -> np.ndarray:
    """For each data token (``pieces``: its text), the teacher position to read: the last teacher token
    whose text ends (``teacher_ends``, character offsets in the joined text) where that data token ends or
    before; 0 when none does yet."""
    ends = np.cumsum([len(piece) for piece in pieces])
    teacher = np.asarray(teacher_ends, dtype=np.int64)
    # tokens the tokenizer adds hold no text (offsets 0, 0): those that open the text have read nothing yet, those
    # that close it (an end-of-text token) have read the whole text and a token the data has not: never chosen
    readable = np.flatnonzero((teacher > 0) | (np.maximum.accumulate(teacher) == 0))
    found = np.searchsorted(np.maximum.accumulate(teacher[readable]), ends, side="right") - 1
    return readable[np.clip(found, 0, None)]


class OwnTokens(nn.Module):
    """``teacher`` (a causal LM on token rows) reading the data's rows in ``tokenizer``'s tokens (a Hugging
    Face fast tokenizer, its special tokens added as the teacher was trained), its outputs [B, T, V_teacher]
    gathered at the data's positions (:func:`aligned_positions`). ``token_texts`` is the data's: token rows
    -> each token's text. Hands an :class:`LMHead` when its model can."""

    own_tokens = True  # its outputs are over another vocabulary: no perplexity or agreement on the data's tokens

    def __init__(self, teacher: nn.Module, tokenizer: Any, token_texts: TokenTexts, positions: int | None = None):
        super().__init__()
        self.teacher, self.tokenizer, self.token_texts = teacher, tokenizer, token_texts
        self.positions = positions  # the most tokens the teacher reads at once (None: no limit known)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if hasattr(teacher, "returns_head"):
            self.returns_head = False

    def forward(self, x: torch.Tensor) -> torch.Tensor | LMHead:
        if x.dim() != 2:
            raise KdforgeError(
                "a teacher with its own tokenizer reads plain token rows [B, T], not packed ones: set data.pack: false"
            )
        ids, where = self.retokenize(x)
        hands = getattr(self, "returns_head", False)
        with handing_heads(self.teacher) if hands else contextlib.nullcontext():
            out = self.teacher(ids)
        if isinstance(out, LMHead):
            return LMHead(_gather(out.hidden, where), out.weight, out.bias)
        return _gather(out, where)

    def retokenize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' texts in the teacher's tokens [B, T'] (right-padded: a causal model's earlier positions do
        not see the padding) and, for each data position, the teacher position it reads [B, T]."""
        pieces = self.token_texts(x)
        encoded = self.tokenizer(["".join(row) for row in pieces], return_offsets_mapping=True)
        rows, offsets = encoded["input_ids"], encoded["offset_mapping"]
        longest = max(map(len, rows))
        if self.positions is not None and longest > self.positions:
            raise KdforgeError(
                f"a row of the data is {longest} tokens in the teacher's tokenizer, beyond the {self.positions} "
                "positions the teacher reads: shorten data.length"
            )
        ids = torch.full((len(rows), longest), self.pad, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        where = np.stack([aligned_positions(row, [end for _, end in spans]) for row, spans in zip(pieces, offsets)])
        return ids.to(x.device), torch.from_numpy(where).to(x.device)


def _gather(out: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """out [B, T', ...] at positions ``where`` [B, T] -> [B, T, ...]."""
    index = where.view(*where.shape, *([1] * (out.dim() - 2))).expand(*where.shape, *out.shape[2:])
    return out.gather(1, index)
