"""A recurrent language-model student with ternary-spiking keys and values (``rwkv_spiking``).

Each block is RWKV-style: a **time mix** (token shift, receptance gate, a per-channel decaying
weighted average of past values) and a **channel mix** (token shift, squared-ReLU FFN behind
a receptance gate). With ``spiking`` the keys and values entering the time mix are ternary
spikes {−a, 0, +a}: cheap to store and to multiply, and the recurrent state stays a fixed
size whatever the context length.

The time mix at position t, per channel, with decay w > 0 and bonus u::

    wkv_t = (Σ_{i<t} e^{k_i − (t−1−i)w} v_i + e^{u + k_t} v_t) / (Σ_{i<t} e^{k_i − (t−1−i)w} + e^{u + k_t})

Computed naively the exponents overflow or the sums underflow to 0/0 after a few dozen
tokens. Both of our forms keep a running scale p (the largest exponent seen) and store the
sums divided by e^p, so every exponential is ≤ 1 and the denominator ≥ 1 after scaling:
:func:`wkv_parallel` for training (chunks of the sequence at once, the state carried
between chunks) and :func:`wkv_step` for generation (one token at a time, O(1) memory).
Both give the same outputs at any length (tested to thousands of tokens).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.models import MODELS


class WKVState(NamedTuple):
    """Running sums of one time-mix layer, each [B, C]: Σ e^{k_i − (t−1−i)w − p} v_i (``num``),
    the same without v (``den``), and their scale ``p``."""

    num: torch.Tensor
    den: torch.Tensor
    p: torch.Tensor

    @staticmethod
    def empty(batch: int, channels: int, device: torch.device, dtype: torch.dtype = torch.float32) -> WKVState:
        zeros = torch.zeros(batch, channels, device=device, dtype=dtype)
        return WKVState(zeros, zeros.clone(), torch.full_like(zeros, -1e38))


def wkv_step(
    k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor, state: WKVState
) -> tuple[torch.Tensor, WKVState]:
    """One token: k, v [B, C]; w (decay, > 0), u [C]. Returns wkv [B, C] and the next state."""
    now = u + k
    q = torch.maximum(state.p, now)
    old, new = torch.exp(state.p - q), torch.exp(now - q)
    out = (old * state.num + new * v) / (old * state.den + new)
    decayed = state.p - w
    q = torch.maximum(decayed, k)
    old, new = torch.exp(decayed - q), torch.exp(k - q)
    return out, WKVState(old * state.num + new * v, old * state.den + new, q)


def wkv_parallel(
    k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor, chunk: int = 8, state: WKVState | None = None
) -> tuple[torch.Tensor, WKVState]:
    """A whole sequence: k, v [B, T, C] -> wkv [B, T, C] and the state after it.

    Within a chunk of ``chunk`` positions every pairwise term is formed at once ([B, C, n, n]);
    the sums of earlier chunks arrive through the carried, scaled state. Each position is
    rescaled by its own largest exponent, so nothing overflows or vanishes at any length."""
    b, t, c = k.shape
    state = state or WKVState.empty(b, c, k.device, torch.float32)
    k, v = k.float().transpose(1, 2), v.float().transpose(1, 2)  # [B, C, T]
    w, u = w.float()[:, None], u.float()[:, None]  # [C, 1]
    outs = []
    for start in range(0, t, chunk):
        kc, vc = k[..., start : start + chunk], v[..., start : start + chunk]
        n = kc.shape[-1]
        steps = torch.arange(n, device=k.device, dtype=torch.float32)
        # e[t, i] = k_i − (t − 1 − i)·w for earlier positions i < t of this chunk
        e = kc[..., None, :] - (steps[:, None] - 1 - steps[None, :]) * w[..., None]
        e = e.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=k.device).tril(-1), -math.inf)
        carried = state.p[..., None] - steps * w  # [B, C, n]: the state's exponent at each position
        now = u + kc
        q = torch.maximum(torch.maximum(carried, now), e.amax(-1))
        weights = torch.exp(e - q[..., None])
        old, new = torch.exp(carried - q), torch.exp(now - q)
        num = old * state.num[..., None] + (weights * vc[..., None, :]).sum(-1) + new * vc
        den = old * state.den[..., None] + weights.sum(-1) + new
        outs.append(num / den)
        # the state after the chunk: everything decayed to its last position
        last = kc - (n - 1 - steps) * w  # [B, C, n]
        decayed = state.p - n * w[:, 0]
        p = torch.maximum(decayed, last.amax(-1))
        scale, terms = torch.exp(decayed - p), torch.exp(last - p[..., None])
        state = WKVState(scale * state.num + (terms * vc).sum(-1), scale * state.den + terms.sum(-1), p)
    return torch.cat(outs, dim=-1).transpose(1, 2), state


class TernarySpike(nn.Module):
    """x [..., C] -> a · s with s ∈ {−1, 0, +1}: s = sign(x) where |x| exceeds θ times the
    token's mean |x| (an adaptive threshold: it follows the activations' scale), else 0; a is
    a learnable per-channel amplitude. Backward is straight-through on the clipped normalised
    input, so the gradient is 1 inside [−1, 1] (never the zero of a step function); ``rate``
    keeps the last pass's firing rate per channel [C] (differentiable through the
    straight-through path, for the spike-rate regulariser) for the logs and statistics."""

    def __init__(self, channels: int, threshold: float = 0.5, amplitude: float = 1.0):
        super().__init__()
        self.threshold = threshold
        self.amplitude = nn.Parameter(torch.full((channels,), amplitude))
        self.rate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x / x.abs().mean(-1, keepdim=True).clamp_min(1e-6)
        clipped = scaled.clamp(-1.0, 1.0)
        spikes = torch.where(scaled.abs() > self.threshold, scaled.sign(), torch.zeros_like(scaled))
        ternary = clipped + (spikes - clipped).detach()
        self.rate = ternary.abs().flatten(0, -2).mean(0)
        return self.amplitude * ternary


def spiking_layers(model: nn.Module) -> dict[str, TernarySpike]:
    return {name: module for name, module in model.named_modules() if isinstance(module, TernarySpike)}


@torch.no_grad()
def spike_statistics(model: nn.Module, batches, dead: float = 0.01, saturated: float = 0.99) -> dict[str, float]:
    """Firing over ``batches`` (eval mode): ``density`` (mean share of non-zero spikes), and
    the share of channels that are ``dead`` (fire on < 1 % of tokens) or ``saturated``
    (> 99 %): neither carries information. Empty for a model without spikes."""
    layers = spiking_layers(model)
    if not layers:
        return {}
    was_training = model.training
    model.eval()
    totals, count = dict.fromkeys(layers, 0.0), 0
    for x, *_ in batches:
        model(x)
        for name, layer in layers.items():
            totals[name] = totals[name] + layer.rate * len(x)
        count += len(x)
    model.train(was_training)
    rates = torch.cat([total / count for total in totals.values()])
    return {
        "density": float(rates.mean()),
        "dead_channels": float((rates < dead).float().mean()),
        "saturated_channels": float((rates > saturated).float().mean()),
    }


def token_shift(x: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T, C] -> each position's predecessor (``previous`` [B, C], or zeros, before the first)."""
    first = torch.zeros_like(x[:, :1]) if previous is None else previous[:, None]
    return torch.cat([first, x[:, :-1]], dim=1)


class TimeMix(nn.Module):
    def __init__(self, width: int, layer: int, layers: int, spiking: bool, threshold: float, chunk: int):
        super().__init__()
        depth = layer / max(layers - 1, 1)
        ramp = torch.arange(width) / width
        # per-channel decays from fast to slow, and token-shift mixes, as in RWKV's initialisation
        self.log_decay = nn.Parameter(-5 + 8 * ramp ** (0.7 + 1.3 * depth))  # w = exp(log_decay)
        self.bonus = nn.Parameter(torch.full((width,), math.log(0.3)) + 0.5 * ((torch.arange(width) + 1) % 3 - 1))
        self.mix_k = nn.Parameter(ramp ** (1 - depth))
        self.mix_v = nn.Parameter(ramp ** (1 - depth) + 0.3 * depth)
        self.mix_r = nn.Parameter(ramp ** (0.5 * (1 - depth)))
        self.key, self.value, self.receptance = (nn.Linear(width, width, bias=False) for _ in range(3))
        self.output = nn.Linear(width, width, bias=False)
        self.spike_k = TernarySpike(width, threshold) if spiking else nn.Identity()
        self.spike_v = TernarySpike(width, threshold) if spiking else nn.Identity()
        self.chunk = chunk

    def mixed(self, x: torch.Tensor, shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.spike_k(self.key(x * self.mix_k + shifted * (1 - self.mix_k)))
        v = self.spike_v(self.value(x * self.mix_v + shifted * (1 - self.mix_v)))
        r = torch.sigmoid(self.receptance(x * self.mix_r + shifted * (1 - self.mix_r)))
        return k, v, r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, v, r = self.mixed(x, token_shift(x))
        wkv, _ = wkv_parallel(k, v, self.log_decay.exp(), self.bonus, self.chunk)
        return self.output(r * wkv.to(r.dtype))

    def step(self, x: torch.Tensor, previous: torch.Tensor, state: WKVState) -> tuple[torch.Tensor, WKVState]:
        k, v, r = self.mixed(x, previous)
        wkv, state = wkv_step(k.float(), v.float(), self.log_decay.exp().float(), self.bonus.float(), state)
        return self.output(r * wkv.to(r.dtype)), state


class ChannelMix(nn.Module):
    def __init__(self, width: int, layer: int, layers: int, ratio: float):
        super().__init__()
        ramp = torch.arange(width) / width
        depth = layer / max(layers - 1, 1)
        self.mix_k = nn.Parameter(ramp ** (1 - depth))
        self.mix_r = nn.Parameter(ramp ** (1 - depth))
        hidden = int(width * ratio)
        self.key, self.value = nn.Linear(width, hidden, bias=False), nn.Linear(hidden, width, bias=False)
        self.receptance = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, shifted: torch.Tensor | None = None) -> torch.Tensor:
        shifted = token_shift(x) if shifted is None else shifted
        k = F.relu(self.key(x * self.mix_k + shifted * (1 - self.mix_k))).square()
        return torch.sigmoid(self.receptance(x * self.mix_r + shifted * (1 - self.mix_r))) * self.value(k)


class Block(nn.Module):
    def __init__(
        self, width: int, layer: int, layers: int, spiking: bool, threshold: float, ffn_ratio: float, chunk: int
    ):
        super().__init__()
        self.norm_time, self.norm_channel = nn.LayerNorm(width), nn.LayerNorm(width)
        self.time = TimeMix(width, layer, layers, spiking, threshold, chunk)
        self.channel = ChannelMix(width, layer, layers, ffn_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.time(self.norm_time(x))
        return x + self.channel(self.norm_channel(x))


class BlockState(NamedTuple):
    """What one block carries between tokens: the last normalised inputs of its two mixes
    (for the token shift) and its time mix's sums."""

    time_input: torch.Tensor
    channel_input: torch.Tensor
    wkv: WKVState


PRESETS = {"tiny": {"width": 64, "depth": 2}, "small": {"width": 128, "depth": 4}, "base": {"width": 256, "depth": 6}}


@MODELS.register("rwkv_spiking")
class RWKVSpiking(nn.Module):
    """Token ids [B, T] -> next-token logits [B, T, vocab]. ``size`` picks a preset (width,
    depth: tiny 64×2, small 128×4, base 256×6); ``width``/``depth`` override it. ``spiking:
    false`` keeps real-valued keys and values (the comparison variant). ``threshold``: the
    spikes' threshold in units of the token's mean |activation|. ``chunk``: positions the
    parallel form takes at once (its pairwise terms grow with chunk²; 8 trains 2.7× faster than
    32 on CPU for ``small`` at length 128). Train with :meth:`forward`
    (parallel over the sequence); generate with :meth:`step` (one token, constant memory)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        size: str = "small",
        width: int | None = None,
        depth: int | None = None,
        spiking: bool = True,
        threshold: float = 0.5,
        ffn_ratio: float = 4.0,
        chunk: int = 8,
    ):
        super().__init__()
        if size not in PRESETS:
            raise ValueError(f"unknown size '{size}'; choose one of {sorted(PRESETS)}")
        if len(input_shape) != 1:
            raise ValueError(
                f"rwkv_spiking reads token rows [T], got input shape {list(input_shape)} (packed rows [2, T] of "
                "several documents each need an attention model: hf_causal_lm or lm_transformer; or data.pack: false)"
            )
        if num_classes < 2:
            raise ValueError(f"rwkv_spiking needs the vocabulary size as num_classes, got {num_classes}")
        width, depth = width or PRESETS[size]["width"], depth or PRESETS[size]["depth"]
        self.vocab_size, self.spiking = num_classes, spiking
        self.embed = nn.Embedding(num_classes, width)
        self.norm_in = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(Block(width, i, depth, spiking, threshold, ffn_ratio, chunk) for i in range(depth))
        self.norm_out = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_in(self.embed(x.long()))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm_out(h))

    def empty_state(self, batch: int, device: torch.device | None = None) -> list[BlockState]:
        device = device or self.head.weight.device
        width = self.embed.embedding_dim
        zeros = torch.zeros(batch, width, device=device, dtype=self.head.weight.dtype)
        return [BlockState(zeros, zeros, WKVState.empty(batch, width, device)) for _ in self.blocks]

    def step(self, token: torch.Tensor, state: list[BlockState]) -> tuple[torch.Tensor, list[BlockState]]:
        """One token per row [B] -> logits [B, vocab] and the next state (its size never grows)."""
        h = self.norm_in(self.embed(token.long()))
        after = []
        for block, carried in zip(self.blocks, state):
            x = block.norm_time(h)
            mixed, wkv = block.time.step(x, carried.time_input, carried.wkv)
            h = h + mixed
            y = block.norm_channel(h)
            h = h + block.channel(y[:, None], carried.channel_input[:, None])[:, 0]
            after.append(BlockState(x, y, wkv))
        return self.head(self.norm_out(h)), after
