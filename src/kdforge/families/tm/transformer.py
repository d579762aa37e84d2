"""TM students whose feed-forward blocks are clause layers: ``vit_tm``, ``swin_tm``,
``resnet_tm`` and ``pyramid_tm``, and their size presets.

Every option of the TM feed-forward block and of its clause layer is a keyword of each of
these models (``with_options``), so a recipe writes ``{name: vit_tm, clauses: 128, ff_mix: linear}``.
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.bounds import Positive
from kdforge.families.tm.blocks import Norm, TMAttention, TMFeedForward, make_norm
from kdforge.families.tm.clause import ClauseLayer, Clauses, with_options
from kdforge.models import MODELS
from kdforge.models.layers import DropPath, FeedForward, drop_path_rates, spatial_dims


class NoFeedForward(nn.Module):
    """A feed-forward block that adds nothing (the ``feed_forward: none`` ablation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def tm_ffn(dim: int, tokens: int, tm: dict[str, Any]) -> nn.Module:
    """A TM student's feed-forward block: its TM block, or for ablations (``feed_forward``) an MLP of about that
    block's parameter count (GELU, one hidden layer) or none at all."""
    options = dict(tm)
    kind = options.pop("feed_forward", "tm")
    block = TMFeedForward(dim, tokens, **options)
    if kind == "tm":
        return block
    if kind == "none":
        return NoFeedForward()
    params = sum(p.numel() for p in block.parameters())
    return FeedForward(dim, max(1, round((params - dim) / (2 * dim + 1))))


def feed_forward_option(feed_forward: Literal["tm", "mlp", "none"] = "tm") -> None:
    """The ``feed_forward`` option of the TM transformers: ``tm`` (the clause block), or, to measure what the clauses
    carry, ``mlp`` (an MLP of about the TM block's parameter count) or ``none`` (no feed-forward block)."""


class TMBlock(nn.Module):
    """Pre-norm block on [B, N, D]: x + attn(norm(x)), x + tm(norm(x)), with drop-path.
    ``diag_head`` (optional): a linear classifier on the block's mean token, tapped by the
    ``block_ce`` loss for per-block diagnostics."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn: nn.Module,
        norm: Norm,
        drop_path: float,
        dropout: float,
        num_classes: int | None,
    ):
        super().__init__()
        self.norm1, self.attn = make_norm(norm, dim), TMAttention(dim, heads, dropout)
        self.norm2, self.ffn = make_norm(norm, dim), ffn
        self.drop_path = DropPath(drop_path)
        self.diag_head = nn.Linear(dim, num_classes) if num_classes else None

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, prev: torch.Tensor | None = None, carry: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, scores = self.attn(self.norm1(x), bias, prev, carry)
        x = x + self.drop_path(attended)
        x = x + self.drop_path(self.ffn(self.norm2(x)))
        if self.diag_head is not None:
            self.diag_head(x.mean(1))  # read through its tap by the block_ce loss
        return x, scores


@MODELS.register("vit_tm")
@with_options(ClauseLayer, TMFeedForward, feed_forward_option)
class ViTTM(nn.Module):
    """Vision Transformer whose feed-forward blocks are Tsetlin-machine clause layers.

    Patch embedding (normalised, with ``patch_norm``) + learned positions (+ class token with ``pool: cls``) ->
    ``depth`` pre-norm blocks (SDPA attention, TM feed-forward) -> norm -> head on the class token or
    the mean token. ``residual_attention``: each block adds the previous block's attention
    scores to its own. ``diag_heads``: per-block classifiers for the ``block_ce`` loss.
    ``patch_norm`` (off by default): on the ablation's token parity it makes the clause blocks carry far more of
    the model, on digits and on "two of four" it costs accuracy (``benchmarks/tm.py ablation`` and ``patch_norm``).

    Taps: ``patch_embed``, ``patch_norm``, ``blocks.N`` ([B, tokens, embed_dim]), ``blocks.N.ffn``, ``norm``, ``head``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        patch_size: int = 4,
        embed_dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        pool: Literal["cls", "mean"] = "cls",
        norm: Norm = "layer",
        dropout: float = 0.0,
        drop_path: float = 0.0,
        drop_path_schedule: Literal["linear", "cosine"] = "linear",
        residual_attention: bool = False,
        diag_heads: bool = False,
        patch_norm: bool = False,
        **tm: Any,
    ):
        super().__init__()
        dims = spatial_dims(input_shape, "vit_tm")
        if any(s % patch_size for s in input_shape[1:]):
            raise ValueError(f"input size {list(input_shape[1:])} is not divisible by patch_size {patch_size}")
        self.pool, self.residual_attention = pool, residual_attention
        self.patch_embed = (nn.Conv1d if dims == 1 else nn.Conv2d)(
            input_shape[0], embed_dim, patch_size, stride=patch_size
        )
        self.patch_norm = make_norm(norm, embed_dim) if patch_norm else nn.Identity()
        tokens = math.prod(s // patch_size for s in input_shape[1:]) + (pool == "cls")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, embed_dim) * 0.02)
        rates = drop_path_rates(drop_path, depth, drop_path_schedule)
        self.blocks = nn.ModuleList(
            TMBlock(
                embed_dim, heads, tm_ffn(embed_dim, tokens, tm), norm, r, dropout, num_classes if diag_heads else None
            )
            for r in rates
        )
        self.norm = make_norm(norm, embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, L] or [B, C, H, W] -> logits [B, num_classes]."""
        tokens = self.patch_norm(self.patch_embed(x).flatten(2).transpose(1, 2))
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens, scores = tokens + self.pos_embed, None
        for block in self.blocks:
            tokens, scores = block(tokens, prev=scores, carry=self.residual_attention)
        tokens = self.norm(tokens)
        return self.head(tokens[:, 0] if self.cls_token is not None else tokens.mean(1))


# ----------------------------------------------------------------------------- Swin-TM


class WindowBlock(TMBlock):
    """A TM block attending within (shifted) windows of a [B, H, W, C] map; sizes that are not
    a multiple of the window are padded, and padding is masked out of attention."""

    def __init__(
        self,
        dim: int,
        heads: int,
        window: int,
        shift: bool,
        ffn: nn.Module,
        norm: Norm,
        drop_path: float,
        dropout: float,
        num_classes: int | None,
    ):
        super().__init__(dim, heads, ffn, norm, drop_path, dropout, num_classes)
        self.window, self.shift = window, shift
        self.rel_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(
            1
        )  # [2, w²]
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("rel_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, h, w, c = x.shape
        win = self.window
        shift = win // 2 if self.shift and min(h, w) > win else 0
        hp, wp = -(-h // win) * win, -(-w // win) * win
        shortcut = x
        y = F.pad(self.norm1(x), (0, 0, 0, wp - w, 0, hp - h))
        if shift:
            y = torch.roll(y, (-shift, -shift), dims=(1, 2))
        windows = y.view(b, hp // win, win, wp // win, win, c).transpose(2, 3).reshape(-1, win * win, c)
        bias = self.rel_bias[self.rel_index].permute(2, 0, 1)  # [heads, N, N]
        mask = window_mask(h, w, hp, wp, win, shift, x.device)
        if mask is not None:
            bias = (bias[None] + mask[:, None]).repeat(b, 1, 1, 1)  # [B · windows, heads, N, N]
        attended, _ = self.attn(windows, bias.to(x.dtype))
        y = attended.view(b, hp // win, wp // win, win, win, c).transpose(2, 3).reshape(b, hp, wp, c)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
        x = shortcut + self.drop_path(y[:, :h, :w])
        tokens = x.reshape(b, h * w, c)
        tokens = tokens + self.drop_path(self.ffn(self.norm2(tokens)))
        if self.diag_head is not None:
            self.diag_head(tokens.mean(1))
        return tokens.view(b, h, w, c)


def window_mask(h: int, w: int, hp: int, wp: int, win: int, shift: int, device: torch.device) -> torch.Tensor | None:
    """Additive mask [windows, N, N]: after the cyclic shift, tokens attend only to tokens of
    the same original region, and never to padding. None when nothing needs masking."""
    if not shift and (hp, wp) == (h, w):
        return None
    region = torch.zeros(hp, wp, dtype=torch.long, device=device)
    if shift:
        cuts = (slice(0, -win), slice(-win, -shift), slice(-shift, None))
        for i, rows in enumerate(cuts):
            for j, cols in enumerate(cuts):
                region[rows, cols] = 3 * i + j
    region[h:, :] = -1
    region[:, w:] = -1
    if shift:
        region = torch.roll(region, (-shift, -shift), dims=(0, 1))
    labels = region.view(hp // win, win, wp // win, win).transpose(1, 2).reshape(-1, win * win)
    same = labels[:, :, None] == labels[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill(~same, -1e4)


class PatchMerging(nn.Module):
    """[B, H, W, C] -> [B, ⌈H/2⌉, ⌈W/2⌉, out] (default 2C): concatenate 2×2 neighbours (odd
    sizes padded), normalise, project."""

    def __init__(self, dim: int, norm: Norm, out: int | None = None):
        super().__init__()
        self.norm = make_norm(norm, 4 * dim)
        self.reduction = nn.Linear(4 * dim, out or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


@MODELS.register("swin_tm")
@with_options(ClauseLayer, TMFeedForward, feed_forward_option)
class SwinTM(nn.Module):
    """Swin Transformer whose feed-forward blocks are Tsetlin-machine clause layers.

    Patch embedding (normalised, with ``patch_norm``) -> stages of window-attention blocks (every second block shifts
    its windows by half a window; relative position bias) with patch merging between stages
    (width doubles) -> norm -> mean pool -> head. Image sizes need not divide by the window
    or by two: maps are padded and padding is masked. ``embed_dim``, ``clauses`` and ``mlp_ratio`` take one
    number (the width doubles at each merge; every stage has that clause budget and ratio) or one per
    stage (``embed_dim: [48, 96]``, ``clauses: [32, 64]``, ``mlp_ratio: [3.0, 3.0]``).

    Taps: ``patch_embed``, ``patch_norm``, ``stages.S.blocks.N`` ([B, H, W, C]), ``stages.S.downsample``, ``norm``,
    ``head``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        patch_size: int = 2,
        embed_dim: int | tuple[int, ...] = 32,
        depths: tuple[int, ...] = (2, 2),
        heads: tuple[int, ...] = (2, 4),
        clauses: Clauses | tuple[Clauses, ...] = 64,
        mlp_ratio: Positive | tuple[Positive, ...] | None = None,
        window: int = 4,
        norm: Norm = "layer",
        patch_norm: bool = True,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        drop_path_schedule: Literal["linear", "cosine"] = "linear",
        diag_heads: bool = False,
        **tm: Any,
    ):
        super().__init__()
        if spatial_dims(input_shape, "swin_tm") != 2:
            raise ValueError("swin_tm takes images [C, H, W]")
        if len(depths) != len(heads):
            raise ValueError(f"depths {list(depths)} and heads {list(heads)} must have one entry per stage")
        widths = (
            list(embed_dim) if isinstance(embed_dim, (list, tuple)) else [embed_dim * 2**s for s in range(len(depths))]
        )
        budgets = list(clauses) if isinstance(clauses, (list, tuple)) else [clauses] * len(depths)
        ratios = list(mlp_ratio) if isinstance(mlp_ratio, (list, tuple)) else [mlp_ratio] * len(depths)
        if len(widths) != len(depths) or len(budgets) != len(depths) or len(ratios) != len(depths):
            raise ValueError(
                f"embed_dim, clauses and mlp_ratio take one number or one per stage ({len(depths)} stages), got "
                f"{embed_dim}, {clauses} and {mlp_ratio}"
            )
        self.patch_embed = nn.Conv2d(input_shape[0], widths[0], patch_size, stride=patch_size)
        self.patch_norm = make_norm(norm, widths[0]) if patch_norm else nn.Identity()
        size = [-(-s // patch_size) for s in input_shape[1:]]
        rates = iter(drop_path_rates(drop_path, sum(depths), drop_path_schedule))
        self.stages = nn.ModuleList()
        for s, (depth, h, dim) in enumerate(zip(depths, heads, widths)):
            stage = nn.Module()
            tokens = size[0] * size[1]
            ffn = {**tm, "clauses": budgets[s], "mlp_ratio": ratios[s]}
            stage.blocks = nn.ModuleList(
                WindowBlock(
                    dim,
                    h,
                    window,
                    i % 2 == 1,
                    tm_ffn(dim, tokens, ffn),
                    norm,
                    next(rates),
                    dropout,
                    num_classes if diag_heads else None,
                )
                for i in range(depth)
            )
            if s < len(depths) - 1:
                stage.downsample = PatchMerging(dim, norm, widths[s + 1])
                size = [-(-v // 2) for v in size]
            self.stages.append(stage)
        self.norm = make_norm(norm, dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> logits [B, num_classes]."""
        x = F.pad(x, (0, -x.shape[3] % self.patch_embed.stride[1], 0, -x.shape[2] % self.patch_embed.stride[0]))
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        for stage in self.stages:
            for block in stage.blocks:
                x = block(x)
            if hasattr(stage, "downsample"):
                x = stage.downsample(x)
        return self.head(self.norm(x).mean((1, 2)))


# ----------------------------------------------------------------------------- convolutional TM students


class ConvResidual(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + identity (or a strided 1x1 projection), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ConvTMStage(nn.Module):
    """A residual conv block, then a TM feed-forward block over the pixels as tokens."""

    def __init__(self, cin: int, cout: int, stride: int, tokens: int, norm: Norm, tm: dict[str, Any]):
        super().__init__()
        self.conv = ConvResidual(cin, cout, stride)
        self.norm = make_norm(norm, cout)
        self.ffn = tm_ffn(cout, tokens, tm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.ffn(self.norm(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


@MODELS.register("resnet_tm")
@with_options(ClauseLayer, TMFeedForward, feed_forward_option)
class ResNetTM(nn.Module):
    """Conv stem and residual stages, each followed by a TM feed-forward block on its pixels.

    Stage i has ``width · 2^i`` channels and halves the resolution (except the first).
    Taps: ``stem``, ``stages.N`` ([B, C, H, W]), ``head``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int = 16,
        stages: int = 2,
        norm: Norm = "layer",
        **tm: Any,
    ):
        super().__init__()
        if spatial_dims(input_shape, "resnet_tm") != 2:
            raise ValueError("resnet_tm takes images [C, H, W]")
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        h, w = input_shape[1:]
        layers, cin = [], width
        for i in range(stages):
            stride = 1 if i == 0 else 2
            h, w = -(-h // stride), -(-w // stride)
            layers.append(ConvTMStage(cin, width * 2**i, stride, h * w, norm, tm))
            cin = width * 2**i
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


@MODELS.register("pyramid_tm")
@with_options(ClauseLayer)
class PyramidTM(nn.Module):
    """Multi-scale pooled features voted by one clause layer.

    A small conv stem; its map average-pooled to 1×1, 2×2 and 4×4 (``scales``) grids,
    concatenated, squashed into [0, 1] (σ after a BatchNorm) and fed to a clause layer whose
    votes are the class logits. Taps: ``stem``, ``tm``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int = 16,
        scales: tuple[int, ...] = (1, 2, 4),
        clauses: Clauses = 256,
        lf: int = 8,
        **clause_options: Any,
    ):
        super().__init__()
        if spatial_dims(input_shape, "pyramid_tm") != 2:
            raise ValueError("pyramid_tm takes images [C, H, W]")
        self.scales = scales
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        features = width * sum(s * s for s in scales)
        self.squash = nn.BatchNorm1d(features)
        self.tm = ClauseLayer(features, num_classes, clauses, lf, **clause_options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.stem(x)
        pooled = torch.cat([F.adaptive_avg_pool2d(maps, s).flatten(1) for s in self.scales], dim=1)
        return self.tm(torch.sigmoid(self.squash(pooled)))


# ----------------------------------------------------------------------------- presets


def register_preset(name: str, base: str, **defaults: Any) -> None:
    """Register ``name`` as ``base`` with other defaults; every option stays overridable."""
    cls = MODELS.get(base)
    signature = inspect.signature(cls)
    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in signature.parameters.values()]

    def preset(**options: Any) -> nn.Module:
        return cls(**{**defaults, **options})

    preset.__signature__ = signature.replace(parameters=params)
    preset.__annotations__ = typing.get_type_hints(cls.__init__, include_extras=True)
    preset.__doc__ = f"{base} preset: " + ", ".join(f"{k}={v}" for k, v in defaults.items()) + "."
    preset.__qualname__ = preset.__name__ = name
    MODELS.register(name)(preset)


PRESETS = {
    "vit_tm_tiny": ("vit_tm", dict(embed_dim=64, depth=2, heads=4, clauses=64)),
    "vit_tm_small": ("vit_tm", dict(embed_dim=128, depth=4, heads=4, clauses=128)),
    "swin_tm_tiny": ("swin_tm", dict(embed_dim=32, depths=(2, 2), heads=(2, 4), window=4, clauses=64)),
    "swin_tm_small": ("swin_tm", dict(embed_dim=48, depths=(2, 2, 2), heads=(2, 4, 8), window=4, clauses=128)),
    "resnet_tm_tiny": ("resnet_tm", dict(width=16, stages=2, clauses=64)),
}
for _name, (_base, _defaults) in PRESETS.items():
    register_preset(_name, _base, **_defaults)
