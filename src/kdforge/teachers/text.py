"""Teachers of text datasets: an encoder (or a stored table of its embeddings) that reads the
rows of a text dataset, whatever encoding the student reads them in.

:class:`TextTeacher` decodes each row back to its text, encodes only the texts it has not
seen (in batches, with the encoder's own tokenizer), and remembers every embedding: the
teacher is frozen, so a text's embedding never changes, and every text is encoded once per
process however many epochs, splits and evaluations read it. A stored table (the embedding
family's ``source: table``) is the same teacher with its memory filled from the file and no
encoder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from kdforge.errors import KdforgeError

Encode = Callable[[list[str]], torch.Tensor]


class TextTeacher(nn.Module):
    """Rows of a text dataset [B, L] -> teacher embeddings [B, D], each text encoded once.

    ``encode`` maps texts to embeddings (``None``: a table, every text must be in
    ``memory``); ``decode`` maps rows to texts; ``encoder`` is registered for ``.to()``."""

    def __init__(
        self,
        decode: Callable[[torch.Tensor], list[str]],
        encode: Encode | None = None,
        encoder: nn.Module | None = None,
        memory: dict[str, torch.Tensor] | None = None,
        batch_size: int = 128,
        remember: bool = True,
    ):
        super().__init__()
        self.decode, self.encode, self.encoder, self.batch_size = decode, encode, encoder, batch_size
        self.memory: dict[str, torch.Tensor] = dict(memory or {})
        self.remember = remember

    @contextlib.contextmanager
    def forgetting(self) -> Iterator[None]:
        """Encode every text from scratch inside (to time the encoder itself) and remember
        nothing new; a table (no encoder) only looks up, as always."""
        kept = self.memory, self.remember
        if self.encode is not None:
            self.memory, self.remember = {}, False
        try:
            yield
        finally:
            self.memory, self.remember = kept

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        texts = self.decode(x)
        new = sorted(set(texts) - self.memory.keys())
        fresh: dict[str, torch.Tensor] = {}
        for start in range(0, len(new), self.batch_size):
            if self.encode is None:
                raise KdforgeError(
                    f"{len(new)} texts are not in the teacher's table, e.g. {new[0]!r}; the table must hold every "
                    "text of the dataset"
                )
            chunk = new[start : start + self.batch_size]
            fresh.update(zip(chunk, self.encode(chunk).float().cpu()))
        if self.remember:
            self.memory.update(fresh)
        return torch.stack([fresh[t] if t in fresh else self.memory[t] for t in texts]).to(x.device)


def mean_pooled_encode(model: nn.Module, tokenizer: Any, max_length: int = 512) -> Encode:
    """texts -> the mean of a Hugging Face encoder's last hidden states over real tokens."""

    def encode(texts: list[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state
        keep = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    return encode
