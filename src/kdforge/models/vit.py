"""A small Vision Transformer (1-D or 2-D patches) with SDPA attention."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from kdforge.models import MODELS
from kdforge.models.layers import TransformerBlock, drop_path_rates, spatial_dims


@MODELS.register("vit")
class ViT(nn.Module):
    """Patch embedding + class token + learned positions -> ``depth`` pre-norm
    transformer blocks -> LayerNorm -> linear head on the class token.

    ``drop_path``: stochastic depth of the last block, the others ramping up to it from 0
    (``drop_path_schedule``: linear or cosine over depth).

    Taps: ``patch_embed``, ``blocks.N`` ([B, 1 + patches, embed_dim]), ``norm``, ``head``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        patch_size: int = 4,
        embed_dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        drop_path_schedule: Literal["linear", "cosine"] = "linear",
    ):
        super().__init__()
        dims = spatial_dims(input_shape, "vit")
        if any(s % patch_size for s in input_shape[1:]):
            raise ValueError(f"vit: input size {list(input_shape[1:])} is not divisible by patch_size {patch_size}")
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.patch_embed = conv(input_shape[0], embed_dim, patch_size, stride=patch_size)
        patches = 1
        for size in input_shape[1:]:
            patches *= size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, embed_dim) * 0.02)
        rates = drop_path_rates(drop_path, depth, drop_path_schedule)
        self.blocks = nn.Sequential(
            *(TransformerBlock(embed_dim, heads, mlp_ratio, dropout, drop_path=r) for r in rates)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, L] or [B, C, H, W] -> logits [B, num_classes]."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, patches, D]
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])
