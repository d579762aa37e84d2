"""A small GPT-style causal language model (``lm_transformer``): a teacher kdforge can train
from a recipe (``teacher.source: train``) on a local corpus, offline.

Token ids [B, T] -> token + learned position embeddings -> ``depth`` pre-norm blocks (causal
self-attention, GELU MLP) -> final norm -> logits [B, T, vocab] (head tied to the token
embedding; under a chunked term, the final hidden states and that head,
:class:`~kdforge.losses.chunked.LMHead`). Blocks are tapped as ``blocks.N`` for hidden-state alignment.
"""

from __future__ import annotations

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
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.norm_mlp(x))


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
