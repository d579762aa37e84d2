"""Parts of the TM students: the clause feed-forward block, and attention that can carry
its scores from block to block (residual attention)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.bounds import Positive
from kdforge.families.tm.clause import ClauseLayer, Clauses
from kdforge.families.tm.flat import DeepTM
from kdforge.models.layers import Attention

Norm = Literal["layer", "rms"]


def make_norm(kind: Norm, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if kind == "layer" else nn.RMSNorm(dim)


class TMFeedForward(nn.Module):
    """The feed-forward block of a TM transformer: [B, N, D] tokens -> [B, N, D].

    tokens -> (token mix) -> input projection -> u = σ(·) ∈ [0, 1] -> (bitwise mix) ->
    clause scores -> (routing gate, clause re-vote) -> votes -> (gating) (+ dense bypass).

    * ``ff_mix``: ``linear`` mixes tokens with an N×N matrix, ``linear_depthwise`` with a
      per-channel kernel-3 convolution along the tokens; both residual and zero at start.
    * ``bitwise_mix``: each literal input becomes a·u + (1 − a)·(1 − u) with a learned
      a = σ(·) per feature (starting at 0.95): the block may learn to negate an input.
    * ``routing``: a per-token gate 2·σ(W x) on every clause (W starts at 0: gate 1), so
      tokens choose which clauses may vote.
    * ``revote``: clause self-attention across tokens: tokens whose clause patterns agree
      (cosine) share their scores, s + γ·softmax(ŝŝᵀ)·s, with γ learned from 0.
    * ``bypass`` > 0: adds ``bypass``·tanh(g)·Linear(x), g learned from 0.
    * ``gating``: ``geglu`` / ``swiglu`` multiplies the TM output by GELU / SiLU of a
      linear gate of the tokens.
    * ``backend``: ``ste`` (one clause layer) or ``deeptm`` (``deep_depth`` stacked layers).
    * ``literal_gain``: u = σ(gain · projection); a larger gain spreads the clause inputs towards 0 and 1. The
      default, 4, made the clauses carry the model on the token tasks of ``benchmarks/tm.py ablation`` (higher
      accuracy than 1, and a large loss when their output is replaced by its mean).
    * ``literals``: the clause layer's input width (default: the token width); or
      ``mlp_ratio``: that width as a multiple of the token width, like a transformer MLP's
      hidden ratio (so it follows each stage's width in a Swin-TM).
    """

    def __init__(
        self,
        dim: int,
        tokens: int,
        literals: int | None = None,
        literal_gain: float = 4.0,
        mlp_ratio: Positive | None = None,
        clauses: Clauses = 64,
        backend: Literal["ste", "deeptm"] = "ste",
        deep_depth: int = 2,
        ff_mix: Literal["none", "linear", "linear_depthwise"] = "none",
        bitwise_mix: bool = False,
        routing: bool = False,
        revote: bool = False,
        bypass: float = 0.0,
        gating: Literal["none", "geglu", "swiglu"] = "none",
        **clause_options: Any,
    ):
        super().__init__()
        self.ff_mix, self.gating, self.bypass_scale, self.literal_gain = ff_mix, gating, bypass, literal_gain
        if literals is not None and mlp_ratio is not None:
            raise ValueError("give literals (a width) or mlp_ratio (a multiple of the token width), not both")
        if mlp_ratio is not None:
            literals = max(1, round(mlp_ratio * dim))
        literals = literals or dim
        if ff_mix == "linear":
            self.mix = nn.Linear(tokens, tokens)
        elif ff_mix == "linear_depthwise":
            self.mix = nn.Conv1d(dim, dim, 3, padding=1, groups=dim)
        if ff_mix != "none":
            nn.init.zeros_(self.mix.weight)
            nn.init.zeros_(self.mix.bias)
        self.proj_in = nn.Linear(dim, literals)
        self.negate = nn.Parameter(torch.full((literals,), 3.0)) if bitwise_mix else None
        if backend == "ste":
            self.tm = ClauseLayer(literals, dim, clauses, **clause_options)
        else:
            self.tm = DeepTM(literals, dim, hidden=literals, depth=deep_depth, clauses=clauses, **clause_options)
        if routing:
            self.route = nn.Linear(dim, clauses)
            nn.init.zeros_(self.route.weight)
            nn.init.zeros_(self.route.bias)
        else:
            self.route = None
        self.revote_gain = nn.Parameter(torch.zeros(())) if revote else None
        self.gate = nn.Linear(dim, dim) if gating != "none" else None
        if bypass > 0:
            self.dense = nn.Linear(dim, dim)
            self.bypass_gate = nn.Parameter(torch.zeros(()))

    @property
    def clause_layer(self) -> ClauseLayer:
        """The layer whose clauses vote the block's output (the last one of a DeepTM)."""
        return self.tm if isinstance(self.tm, ClauseLayer) else self.tm.layers[-1]

    def literals(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, D] tokens -> [B, N, F] clause inputs in [0, 1]."""
        if self.ff_mix != "none":  # both mixes act along the tokens of [B, D, N]
            x = x + self.mix(x.transpose(1, 2)).transpose(1, 2)
        u = torch.sigmoid(self.literal_gain * self.proj_in(x))
        if self.negate is not None:
            a = torch.sigmoid(self.negate)
            u = a * u + (1.0 - a) * (1.0 - u)
        return u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modulates = self.route is not None or self.revote_gain is not None
        out = self.tm(self.literals(x), modulate=(lambda s: self.modulate(s, x)) if modulates else None)
        if self.gate is not None:
            out = out * (F.gelu if self.gating == "geglu" else F.silu)(self.gate(x))
        if self.bypass_scale > 0:
            out = out + self.bypass_scale * torch.tanh(self.bypass_gate) * self.dense(x)
        return out

    def modulate(self, scores: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Routing and re-vote on the clause scores [B, N, C] before they vote."""
        if self.route is not None:
            scores = scores * 2.0 * torch.sigmoid(self.route(x))
        if self.revote_gain is not None:
            unit = scores / (scores.norm(dim=-1, keepdim=True) + 1e-6)
            agreement = torch.softmax(unit @ unit.transpose(1, 2) * math.sqrt(scores.shape[-1]), dim=-1)
            scores = scores + self.revote_gain * (agreement @ scores)
        return scores


class TMAttention(Attention):
    """:class:`Attention` with an additive score ``bias`` (window masks, relative positions),
    residual attention (given the previous block's pre-softmax scores, it adds them to its
    own and returns the sum for the next block; explicit softmax then, not SDPA), and a
    gain per head (``head_gain``, 1 unless ``clause_specialize`` sets it from validation).

    ``keep_weights = True`` makes it compute the softmax explicitly and keep the attention
    weights [B, H, N, N] of its last call in ``weights`` (``kdforge explain`` does)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__(dim, heads, dropout)
        self.register_buffer("head_gain", torch.ones(heads))
        self.keep_weights, self.weights = False, None

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, prev: torch.Tensor | None = None, carry: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``bias``: added to the scores ([H or B, H, N, N]); ``prev``: the carried scores of
        residual attention (``carry`` turns it on). -> (out, scores or None)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if not (carry or self.keep_weights):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
            return self.merge(out), None
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        if bias is not None:
            scores = scores + bias
        if prev is not None:
            scores = scores + prev
        weights = torch.softmax(scores, dim=-1)
        if self.keep_weights:
            self.weights = weights.detach()
        return self.merge(F.dropout(weights, p) @ v), scores if carry else None

    def merge(self, heads: torch.Tensor) -> torch.Tensor:
        """[B, H, N, d] per-head outputs -> gains -> [B, N, D] -> output projection."""
        b, h, n, d = heads.shape
        return self.proj((heads * self.head_gain.to(heads.dtype)[:, None, None]).transpose(1, 2).reshape(b, n, h * d))
