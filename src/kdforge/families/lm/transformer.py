"""A small GPT-style causal language model (``lm_transformer``): a teacher kdforge can train
from a recipe (``teacher.source: train``) on a local corpus, offline.

Token ids [B, T] -> token + learned position embeddings -> ``depth`` pre-norm blocks (causal
self-attention, GELU MLP) -> final norm -> logits [B, T, vocab] (head tied to the token
embedding; under a chunked term, the final hidden states and that head,
:class:`~kdforge.losses.chunked.LMHead`). Blocks are tapped as ``blocks.N`` for hidden-state alignment.

``step(token, state)`` reads one token per row from a key-value cache (:class:`KVCache`, from ``empty_state``):
the next-token logits at the cost of one position, as ``rwkv_spiking`` steps its recurrent state; ``generate``
and written sequences (``train.on_policy``) use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.losses.chunked import LMHead
from kdforge.models import MODELS
from kdforge.models.tokens import token_inputs


class CausalBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm_attn, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` [B, 1, T, T]: where each token may attend (packed rows); None: causal."""
        q, k, v = self.queries_keys_values(x)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=self.dropout if self.training else 0.0
        )
        return self.mix(x, attended)

    def step(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, position: int) -> torch.Tensor:
        """One token per row, ``x`` [B, 1, C] at ``position``: its key and value go into the cache ``keys``,
        ``values`` [B, heads, positions, C / heads], and it attends to every position up to its own."""
        q, k, v = self.queries_keys_values(x)
        keys[:, :, position : position + 1], values[:, :, position : position + 1] = k, v
        end = position + 1
        return self.mix(x, F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end]))

    def queries_keys_values(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [3, B, heads, T, C / heads]."""
        b, t, c = x.shape
        return self.qkv(self.norm_attn(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)

    def mix(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The residual stream after the attention's output [B, heads, T, C / heads] and the MLP."""
        b, t, c = x.shape
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.norm_mlp(x))


@dataclass
class KVCache:
    """What :class:`LMTransformer` keeps between tokens: each block's keys and values [B, heads, positions,
    C / heads], room for every position the model has, filled up to ``length``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0


@MODELS.register("lm_transformer")
class LMTransformer(nn.Module):
    """Causal transformer LM; ``num_classes`` is the vocabulary size (from the dataset)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
    ):
        super().__init__()
        if len(input_shape) != 1 and tuple(input_shape[:1]) != (2,):
            raise ValueError(f"lm_transformer reads token rows [T] or packed rows [2, T], got {list(input_shape)}")
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.tokens = nn.Embedding(num_classes, width)
        self.positions = nn.Parameter(torch.zeros(1, input_shape[-1], width))
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions, std=0.02)
        self.blocks = nn.ModuleList(CausalBlock(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.returns_head = False  # a chunked loss may ask for the head's input instead of the logits

    @property
    def max_tokens(self) -> int:
        """The most tokens it reads in one sequence (its learned positions)."""
        return self.positions.shape[1]

    def empty_state(self, batch: int, device: torch.device | None = None) -> KVCache:
        """An empty key-value cache for ``batch`` rows."""
        block, weight = self.blocks[0], self.tokens.weight
        shape = (batch, block.heads, self.max_tokens, weight.shape[1] // block.heads)
        device = device or weight.device

        def empty() -> list[torch.Tensor]:
            return [torch.zeros(shape, device=device, dtype=weight.dtype) for _ in self.blocks]

        return KVCache(empty(), empty())

    def step(self, token: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One token per row [B] at the cache's next position -> logits [B, vocab], and the cache, filled in place
        with the token's keys and values (the same logits as :meth:`forward` over the whole sequence)."""
        position = state.length
        if position >= self.max_tokens:
            raise ValueError(f"the key-value cache is full: this model reads at most {self.max_tokens} tokens")
        h = self.tokens(token.long())[:, None] + self.positions[:, position : position + 1]
        for block, keys, values in zip(self.blocks, state.keys, state.values):
            h = block.step(h, keys, values, position)
        state.length += 1
        return (self.norm(h) @ self.tokens.weight.T)[:, 0], state

    def forward(self, x: torch.Tensor) -> torch.Tensor | LMHead:
        """Ids [B, T] or packed rows [B, 2, T] (:mod:`kdforge.models.tokens`) -> logits [B, T, V] (or the head)."""
        ids, positions, mask = token_inputs(x)
        if ids.shape[1] > self.positions.shape[1]:
            raise ValueError(
                f"{ids.shape[1]} tokens exceed the {self.positions.shape[1]} positions this model was built for"
            )
        place = self.positions[:, : ids.shape[1]] if positions is None else self.positions[0, positions]
        h = self.drop(self.tokens(ids) + place)
        for block in self.blocks:
            h = block(h, mask)
        if self.returns_head:
            return LMHead(self.norm(h), self.tokens.weight)
        return self.norm(h) @ self.tokens.weight.T
