"""Building blocks shared by the architectures."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention on [B, N, D] tokens with PyTorch's fused SDPA kernel."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} must be divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Sequential):
    """Linear -> GELU -> dropout -> Linear, on the last dimension."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a residual branch for a random ``rate`` of the
    samples and scale the kept ones by 1 / (1 − rate); the identity in eval."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = torch.rand((len(x),) + (1,) * (x.dim() - 1), device=x.device) >= self.rate
        return x * keep.to(x.dtype) / (1.0 - self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def drop_path_rates(rate: float, depth: int, schedule: Literal["linear", "cosine"] = "linear") -> list[float]:
    """Drop-path rate of each of ``depth`` blocks, from 0 at the first to ``rate`` at the
    last: linearly, or along a half cosine (slow start, slow end)."""
    steps = [i / max(depth - 1, 1) for i in range(depth)]
    if schedule == "cosine":
        steps = [0.5 * (1.0 - math.cos(math.pi * t)) for t in steps]
    return [rate * t for t in steps]


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ffn(norm(x)), each branch with dropout
    and drop-path. ``ffn`` may be swapped."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        ffn: nn.Module | None = None,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = ffn if ffn is not None else FeedForward(dim, int(dim * mlp_ratio), dropout)
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.drop(self.attn(self.norm1(x))))
        return x + self.drop_path(self.drop(self.ffn(self.norm2(x))))


def spatial_dims(input_shape: tuple[int, ...], model: str) -> int:
    """1 for [C, L] inputs, 2 for [C, H, W]; anything else is an error naming the model."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"{model} takes [C, L] or [C, H, W] inputs, got shape {list(input_shape)}")
    return len(input_shape) - 1
