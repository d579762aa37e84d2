"""State-space sequence models: S4D (with and without input selectivity) and the ``ssm`` student.

* :class:`S4D`: a diagonal state space per channel, x' = A x + B u, y = Re(C x) + D u (real
  inputs: N/2 complex modes and their conjugates, y = 2·Re(C x)), discretised by zero-order
  hold with a learnable log Δt: Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A · B. Training runs it as a
  causal convolution with the kernel K_l = C B̄ Ā^l, by FFT; :meth:`S4D.step` runs it as the
  recurrence, one sample at a time. Both compute the same outputs (tested). ``complex``
  inputs take a truly complex path (N complex modes, complex C and D, y = C x + D u).
  Initialisations ``lin`` (S4D-Lin: A_n = −½ + iπn), ``inv`` (S4D-Inv:
  A_n = −½ + i·(N/π)(N/(2n + 1) − 1)) and ``real`` (S4D-Real: A_n = −(n + 1), no oscillation).
* :class:`SelectiveSSM`: Mamba-style input selectivity: Δ_t, B_t and C_t are computed from
  the input at every step, h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t u_t, y_t = C_t h_t + D u_t, by
  :func:`selective_scan`: ``sequential`` (the recurrence itself, with a hand-written backward)
  or ``chunked`` (log space, parallel within chunks); neither can overflow. Its modes
  oscillate like S4D's (``init: lin | inv``: N/2 complex modes and their conjugates — a chirp
  needs them) or only decay (``init: real``, Mamba's default for discrete data).
* ``selectivity: gate``: an S4D whose input is scaled by a per-step, per-channel gate
  σ(W u) — the simple time gate one compares against.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.models import MODELS

Init = Literal["lin", "inv", "real"]


def initial_a(init: Init, state_dim: int, modes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log(−Re A), Im A) [modes] of ``modes`` diagonal modes of a ``state_dim`` system:
    S4D-Lin A_n = −½ + iπn, S4D-Inv A_n = −½ + i(N/π)(N/(2n+1) − 1), S4D-Real A_n = −(n + 1)."""
    n = torch.arange(modes, dtype=torch.float32)
    if init == "real":
        return torch.log(n + 1), torch.zeros(modes)
    imag = math.pi * n if init == "lin" else (state_dim / math.pi) * (state_dim / (2 * n + 1) - 1)
    return torch.full((modes,), math.log(0.5)), imag


class S4D(nn.Module):
    """Diagonal state space over ``channels`` channels with ``state_dim`` states each.

    ``[B, L, H] -> [B, L, H]`` (real, or complex with ``complex=True``).
    """

    def __init__(
        self,
        channels: int,
        state_dim: int = 16,
        init: Init = "lin",
        complex: bool = False,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ):
        super().__init__()
        self.complex = complex
        modes = state_dim if complex else state_dim // 2  # a real system keeps conjugate pairs implicit
        if modes < 1:
            raise ValueError(f"state_dim must be >= {1 if complex else 2}, got {state_dim}")
        log_a_real, imag = initial_a(init, state_dim, modes)
        self.log_a_real = nn.Parameter(log_a_real.repeat(channels, 1))
        self.a_imag = nn.Parameter(imag.repeat(channels, 1))
        self.c = nn.Parameter(torch.view_as_real(torch.randn(channels, modes, dtype=torch.cfloat) * math.sqrt(0.5)))
        self.log_dt = nn.Parameter(torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.d = nn.Parameter(
            torch.view_as_real(torch.randn(channels, dtype=torch.cfloat)) if complex else torch.randn(channels)
        )
        self._cached: tuple[tuple[object, ...], torch.Tensor] | None = None  # (key, spectrum): see kernel_spectrum

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ΔA = log Ā, B̄, C) [H, modes] complex, by zero-order hold (B = 1: C absorbs the input scale)."""
        a = torch.complex(-torch.exp(self.log_a_real), self.a_imag)
        dt_a = a * torch.exp(self.log_dt)[:, None]
        return dt_a, torch.expm1(dt_a) / a, torch.view_as_complex(self.c)

    def kernel(self, length: int) -> torch.Tensor:
        """K [H, L]: K_l = Σ_n C_n B̄_n Ā_n^l (2·Re of it for real inputs)."""
        dt_a, b_bar, c = self.discrete()
        powers = torch.exp(dt_a[..., None] * torch.arange(length, device=dt_a.device))  # Ā^l, [H, N, L]
        k = torch.einsum("hn,hnl->hl", c * b_bar, powers)
        return k if self.complex else 2.0 * k.real

    def skip(self) -> torch.Tensor:
        return torch.view_as_complex(self.d) if self.complex else self.d

    def kernel_spectrum(self, length: int) -> torch.Tensor:
        """FFT of K over 2L samples. Building K costs more than the convolution at small
        batches, so without autograd (inference) the spectrum is kept until the length changes,
        a parameter's version changes (an in-place edit, a load) or the module's mode is set
        (``train()`` / ``eval()``): CPU fused AdamW updates parameters without bumping their
        versions, so a model stepped by it must pass through ``eval()`` before inference, as
        every validation does."""
        fft = torch.fft.fft if self.complex else torch.fft.rfft
        if torch.is_grad_enabled():
            return fft(self.kernel(length), n=2 * length)
        key = (length, *((p.data_ptr(), p._version) for p in (self.log_a_real, self.a_imag, self.c, self.log_dt)))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, fft(self.kernel(length), n=2 * length))
        return self._cached[1]

    def train(self, mode: bool = True) -> S4D:
        self._cached = None  # the weights may have changed since the spectrum was built: see kernel_spectrum
        return super().train(mode)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Convolution mode: y = K * u (causal) + D u, by FFT of length 2L."""
        length = u.shape[1]
        spectrum = self.kernel_spectrum(length)
        x = u.transpose(1, 2)  # [B, H, L]
        if self.complex:
            y = torch.fft.ifft(torch.fft.fft(x.to(torch.cfloat), n=2 * length) * spectrum, n=2 * length)[..., :length]
        else:
            y = torch.fft.irfft(torch.fft.rfft(x.float(), n=2 * length) * spectrum, n=2 * length)[..., :length]
        return (y.transpose(1, 2) + u * self.skip()).to(u.dtype)

    def initial_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(batch, *self.log_a_real.shape, dtype=torch.cfloat, device=device)

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent mode, one time step: u [B, H], state [B, H, N] -> (y [B, H], new state)."""
        dt_a, b_bar, c = self.discrete()
        state = torch.exp(dt_a) * state + b_bar * u[..., None]
        y = (c * state).sum(-1)
        y = y if self.complex else 2.0 * y.real
        return (y + u * self.skip()).to(u.dtype), state


ScanMethod = Literal["sequential", "chunked"]


def selective_scan(
    log_decay: torch.Tensor,
    inputs: torch.Tensor,
    state: torch.Tensor | None = None,
    method: ScanMethod = "sequential",
    chunk: int = 32,
) -> torch.Tensor:
    """h_t = exp(log_decay_t) · h_{t−1} + inputs_t along dim 1 (time), for log_decay <= 0.

    ``sequential`` runs the recurrence step by step (:class:`_Recurrence`); every factor is
    at most 1, so nothing can overflow, and it is exact. ``chunked`` works on ``chunk``
    steps at a time: with S_t the running sum of log_decay since the chunk began,
    h_t = exp(S_t) h_start + Σ_{s≤t} exp(S_t − S_s) inputs_s, the sum taken in log space
    (``logcumsumexp`` of log|inputs| − S, positive and negative parts apart); S only falls
    within a chunk, so this cannot overflow either. On CPU the sequential scan is ~30×
    faster (forward + backward, [32, 256, 32, 16]: 28 against 850 ms); the chunked one needs
    L/chunk sequential steps instead of L. Complex decays and inputs (oscillating modes) take
    the sequential scan. Computed in float32 (also under autocast). -> h [B, L, ...]
    """
    dtype = inputs.dtype
    log_decay, inputs = _single(log_decay), _single(inputs)
    h = torch.zeros_like(inputs[:, 0]) if state is None else _single(state)
    if method == "sequential":
        return _Recurrence.apply(torch.exp(log_decay), inputs, h).to(dtype)
    if log_decay.is_complex() or inputs.is_complex():
        raise ValueError("the chunked scan takes real decays and inputs: use scan 'sequential', or init 'real'")
    out = []
    for start in range(0, inputs.shape[1], chunk):
        s = log_decay[:, start : start + chunk].cumsum(1)
        x = inputs[:, start : start + chunk]
        parts = [torch.exp(s + torch.logcumsumexp(_log_or_floor(sign * x) - s, dim=1)) for sign in (1.0, -1.0)]
        hs = torch.exp(s) * h[:, None] + parts[0] - parts[1]
        h = hs[:, -1]
        out.append(hs)
    return torch.cat(out, 1).to(dtype)


def _single(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.cfloat if x.is_complex() else torch.float)


class _Recurrence(torch.autograd.Function):
    """h_t = a_t h_{t−1} + x_t, time along dim 1, with its adjoint as the backward:
    g_t = ∂L/∂h_t + ā_{t+1} g_{t+1}; ∂L/∂x_t = g_t, ∂L/∂a_t = g_t h̄_{t−1}, ∂L/∂h_0 = ā_1 g_1
    (bars: complex conjugates, PyTorch's convention for complex gradients; no-ops when real).
    Autograd through a Python loop of L steps would record 2L nodes (50× slower here)."""

    @staticmethod
    def forward(ctx, decay: torch.Tensor, inputs: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        a, x = (
            decay.transpose(0, 1).contiguous(),
            inputs.transpose(0, 1).contiguous(),
        )  # time first: each step is one contiguous slice
        h = torch.empty_like(x)
        previous = h0
        for t in range(x.shape[0]):
            previous = torch.addcmul(x[t], a[t], previous, out=h[t])
        ctx.save_for_backward(a, h, h0)
        return h.transpose(0, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, h, h0 = ctx.saved_tensors
        a = a.conj().resolve_conj()
        g = grad.transpose(0, 1).contiguous().to(h.dtype)
        for t in range(g.shape[0] - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        previous = torch.cat([h0[None], h[:-1]]).conj()
        return (g * previous).transpose(0, 1), g.transpose(0, 1), g[0] * a[0]


_LOG_ZERO = (
    -1e30
)  # log 0, finite: a −inf would make logcumsumexp's gradient NaN (−inf − (−inf)); exp of it is 0 all the same


def _log_or_floor(x: torch.Tensor) -> torch.Tensor:
    """log x where x > 0, ``_LOG_ZERO`` elsewhere, with a finite gradient everywhere."""
    positive = x > 0
    return torch.where(positive, torch.log(torch.where(positive, x, torch.ones_like(x))), torch.full_like(x, _LOG_ZERO))


class SelectiveSSM(nn.Module):
    """Mamba-style selective state space over ``channels`` channels: Δ_t = softplus(W_Δ u_t + b),
    B_t = W_B u_t, C_t = W_C u_t (shared across channels), h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t u_t,
    y_t = C_t · h_t + D u_t. ``init: real``: N real decaying modes (A = −1..−N, S4D-Real);
    ``lin | inv``: N/2 complex modes as in S4D (B_t, C_t complex, y_t = 2·Re(C_t · h_t) + D u_t),
    which can rotate as well as decay. ``[B, L, H] -> [B, L, H]``."""

    def __init__(
        self,
        channels: int,
        state_dim: int = 16,
        init: Init = "lin",
        scan: ScanMethod = "sequential",
        chunk: int = 32,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ):
        super().__init__()
        self.oscillating = init != "real"
        modes = state_dim // 2 if self.oscillating else state_dim
        if modes < 1:
            raise ValueError(f"state_dim must be >= 2 with init '{init}', got {state_dim}")
        if self.oscillating and scan == "chunked":
            raise ValueError(
                f"the chunked scan takes real decays, init '{init}' oscillates: use scan 'sequential', or init 'real'"
            )
        self.scan, self.chunk, self.modes = scan, chunk, modes
        log_a_real, imag = initial_a(init, state_dim, modes)
        self.log_a_real = nn.Parameter(log_a_real.repeat(channels, 1))
        self.a_imag = nn.Parameter(imag.repeat(channels, 1)) if self.oscillating else None
        self.to_dt = nn.Linear(channels, channels)
        dt = torch.exp(torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.to_dt.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt): Δ starts in [dt_min, dt_max]
            self.to_dt.weight.mul_(0.1)
        width = 2 * modes if self.oscillating else modes  # complex B, C as real and imaginary parts
        self.to_b = nn.Linear(channels, width, bias=False)
        self.to_c = nn.Linear(channels, width, bias=False)
        self.d = nn.Parameter(torch.ones(channels))

    def _state_vector(self, v: torch.Tensor) -> torch.Tensor:
        return torch.complex(v[..., : self.modes], v[..., self.modes :]) if self.oscillating else v

    def parameters_at(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log decay Δ·A [.., H, M], input Δ·B·u [.., H, M], C [.., M]) for inputs u [.., H]."""
        dt = F.softplus(self.to_dt(u))
        a = -torch.exp(self.log_a_real)
        if self.oscillating:
            a = torch.complex(a, self.a_imag)
        b, c = self._state_vector(self.to_b(u)), self._state_vector(self.to_c(u))
        return dt[..., None] * a, (dt * u)[..., None] * b[..., None, :], c

    def _read(self, h: torch.Tensor, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        y = (h * c[..., None, :]).sum(-1)
        return (2.0 * y.real if self.oscillating else y) + u * self.d

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        log_decay, inputs, c = self.parameters_at(u)
        return self._read(selective_scan(log_decay, inputs, method=self.scan, chunk=self.chunk), c, u)  # h [B, L, H, M]

    def initial_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(
            batch, *self.log_a_real.shape, dtype=torch.cfloat if self.oscillating else torch.float, device=device
        )

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: u [B, H], state [B, H, M] -> (y [B, H], new state)."""
        log_decay, inputs, c = self.parameters_at(u)
        state = torch.exp(log_decay) * state + inputs
        return self._read(state, c, u), state


class GatedS4D(S4D):
    """``selectivity: gate``: an S4D whose input is first scaled by σ(W u_t), a gate per time
    step and channel (the simplest input dependence, for comparison with ``mamba``)."""

    def __init__(self, channels: int, state_dim: int = 16, init: Init = "lin", complex: bool = False):
        super().__init__(channels, state_dim, init, complex)
        self.gate = nn.Linear(channels, channels)

    def gated(self, u: torch.Tensor) -> torch.Tensor:
        return u * torch.sigmoid(self.gate(u.abs() if self.complex else u))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return super().forward(self.gated(u))

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().step(self.gated(u), state)


class ComplexRMSNorm(nn.Module):
    """RMS normalisation of complex features by their magnitudes, with a real gain."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.abs().square().mean(-1, keepdim=True) + self.eps) * self.weight


def split_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU of real and imaginary parts apart (the identity's shape kept for complex features)."""
    return torch.complex(F.gelu(x.real), F.gelu(x.imag)) if x.is_complex() else F.gelu(x)


class SSMBlock(nn.Module):
    """Pre-norm residual block: x + dropout(W · GELU(ssm(norm(x)))). With ``backward`` (a
    second layer), bidirectional: ssm(x) + flip(backward(flip(x))), so that every output sees
    the whole sequence (non-causal tasks, e.g. focusing); there is no step mode then."""

    def __init__(self, dim: int, layer: nn.Module, dropout: float, complex: bool, backward: nn.Module | None = None):
        super().__init__()
        self.norm = ComplexRMSNorm(dim) if complex else nn.LayerNorm(dim)
        self.ssm, self.backward_ssm = layer, backward
        self.out = nn.Linear(dim, dim, dtype=torch.cfloat if complex else None)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        mixed = self.ssm(h)
        if self.backward_ssm is not None:
            mixed = mixed + self.backward_ssm(h.flip(1)).flip(1)
        y = self.out(split_gelu(mixed))
        return x + (self.drop(y) if not y.is_complex() else y)  # nn.Dropout is real-only

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backward_ssm is not None:
            raise ValueError("a bidirectional ssm reads the whole sequence: it has no step (recurrent) mode")
        y, state = self.ssm.step(self.norm(x), state)
        return x + self.out(split_gelu(y)), state


Selectivity = Literal["none", "gate", "mamba"]


def ssm_layer(
    selectivity: Selectivity, dim: int, state_dim: int, init: Init, complex: bool, scan: ScanMethod, chunk: int
) -> nn.Module:
    if selectivity == "mamba":
        if complex:
            raise ValueError("selectivity 'mamba' is real-valued: with complex inputs use complex_mode: channels")
        return SelectiveSSM(dim, state_dim, init, scan, chunk)
    return GatedS4D(dim, state_dim, init, complex) if selectivity == "gate" else S4D(dim, state_dim, init, complex)


@MODELS.register("ssm")
class SSM(nn.Module):
    """A state-space sequence model: encoder -> ``num_layers`` residual SSM blocks -> norm ->
    decoder, for sequence-to-sequence regression (``pool: none``: [B, C, L] -> [B, output_dim, L])
    or classification (``pool: mean | last``: -> [B, output_dim]).

    ``selectivity``: ``none`` (S4D), ``gate`` (S4D with a time gate on its input) or ``mamba``
    (Δ, B, C from the input). ``bidirectional``: each block also reads the sequence backwards
    (every output sees all inputs: for non-causal sequence-to-sequence tasks; no step mode).
    ``complex: true`` takes complex inputs and gives complex outputs,
    either through a truly complex path (``complex_mode: native``: complex S4D, norms and
    linear maps) or as real and imaginary channels (``complex_mode: channels``: any
    selectivity). ``output_dim`` defaults to the dataset's number of classes. ``scan`` and
    ``chunk``: how ``mamba`` layers scan (see :func:`selective_scan`).
    Taps: ``encoder``, ``blocks.N`` ([B, L, model_dim]), ``norm``, ``decoder``.
    """

    any_length = True  # runs on sequences of any length (kdforge compare times several)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        model_dim: int = 64,
        state_dim: int = 16,
        num_layers: int = 4,
        selectivity: Selectivity = "none",
        complex: bool = False,
        complex_mode: Literal["native", "channels"] = "native",
        init: Init = "lin",
        dropout: float = 0.0,
        output_dim: int | None = None,
        pool: Literal["none", "mean", "last"] = "mean",
        bidirectional: bool = False,
        scan: ScanMethod = "sequential",
        chunk: int = 32,
    ):
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"ssm takes sequences [channels, length], got input shape {list(input_shape)}")
        self.complex, self.pool = complex, pool
        native = complex and complex_mode == "native"
        self.split = complex and not native  # complex data as [real, imag] channels
        channels, out = input_shape[0], output_dim or num_classes
        self.out_dim = out
        dtype = torch.cfloat if native else None
        self.encoder = nn.Linear(2 * channels if self.split else channels, model_dim, dtype=dtype)
        layer = lambda: ssm_layer(selectivity, model_dim, state_dim, init, native, scan, chunk)  # noqa: E731
        self.blocks = nn.ModuleList(
            SSMBlock(model_dim, layer(), dropout, native, layer() if bidirectional else None) for _ in range(num_layers)
        )
        self.norm = ComplexRMSNorm(model_dim) if native else nn.LayerNorm(model_dim)
        self.decoder = nn.Linear(model_dim, 2 * out if self.split else out, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, L] -> [B, output_dim, L] (``pool: none``) or [B, output_dim]."""
        h = self.encoder(self._inputs(x.transpose(1, 2)))
        for block in self.blocks:
            h = block(h)
        y = self._outputs(self.decoder(self.norm(h)))  # [B, L, out]
        if self.pool == "none":
            return y.transpose(1, 2)
        return y.mean(1) if self.pool == "mean" else y[:, -1]

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.real, x.imag], -1) if self.split else x

    def _outputs(self, y: torch.Tensor) -> torch.Tensor:
        return torch.complex(y[..., : self.out_dim], y[..., self.out_dim :]) if self.split else y

    def initial_state(self, batch: int, device: torch.device | None = None) -> list[torch.Tensor]:
        return [block.ssm.initial_state(batch, device) for block in self.blocks]

    def step(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Recurrent mode: one time step x [B, C] -> (y [B, output_dim], new states)."""
        h = self.encoder(self._inputs(x))
        new = []
        for block, state in zip(self.blocks, states):
            h, state = block.step(h, state)
            new.append(state)
        return self._outputs(self.decoder(self.norm(h))), new


Compression = Literal["standard", "compressed", "tiny", "fixed_compressed", "fixed_tiny"]
_SHRINK = {"standard": 1, "compressed": 2, "tiny": 4}
_FIXED = {
    "fixed_compressed": {"model_dim": 32, "state_dim": 256, "num_layers": 4},
    "fixed_tiny": {"model_dim": 24, "state_dim": 128, "num_layers": 3},
}


def compression_preset(preset: Compression, teacher_options: dict) -> dict:
    """``ssm`` options of a student ``preset`` made from an ``ssm`` teacher's options:
    ``standard`` keeps its size, ``compressed`` halves and ``tiny`` quarters its model_dim,
    state_dim and num_layers (never below 8, 2 and 1); ``fixed_compressed`` (32, 256, 4)
    and ``fixed_tiny`` (24, 128, 3) set those three to fixed sizes whatever the teacher's
    (the usual sizes for SAR azimuth focusing). All keep the teacher's other options and
    drop input selectivity."""
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(SSM).parameters.items() if v.default is not v.empty}
    base = {**defaults, **teacher_options}
    if preset in _FIXED:
        sizes = _FIXED[preset]
    else:
        shrink = _SHRINK[preset]
        sizes = {
            "model_dim": max(8, base["model_dim"] // shrink),
            "state_dim": max(2, base["state_dim"] // shrink),
            "num_layers": max(1, base["num_layers"] // shrink),
        }
    return {**teacher_options, **sizes, "selectivity": "none"}
