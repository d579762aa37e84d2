"""Simulated SAR azimuth lines: range-compressed raw data in, the focused line out.

A side-looking radar on a platform at speed v passes a scene at slant range R0. A point
scatterer at azimuth position x is seen from the platform position v·t at range
R(t) = √(R0² + (v t − x)²) ≈ R0 + (v t − x)² / (2 R0), so its echo's phase
−4π R(t) / λ is a linear-FM chirp in azimuth time with rate K_a = 2 v² / (λ R0), heard while
it is inside the beam: for an antenna of length D, a synthetic aperture of L_s = λ R0 / D
metres, T_s = L_s / v seconds (the constant phase −4π R0 / λ is dropped). With pulses at
the PRF, one range bin's azimuth line is the scene's reflectivity convolved with the
impulse response h(t) = rect(t / T_s) · exp(−iπ K_a t²).

:func:`simulate_azimuth_lines` draws each line's reflectivity: a few point targets (random
positions away from the edges, complex amplitudes of random magnitude in [0.5, 1.5] and
uniform phase) on a clutter background (complex Gaussian per cell at ``clutter_db`` below
unit power), convolves it with h, and adds complex white noise at ``snr_db`` below the
echo's mean power. The target is the matched-filter output of the noise-free echo,
(echo ⋆ h) / Σ|h|²: every point target focuses to a peak of its own amplitude at its own
position. A model that maps input to target learns to focus and to denoise.

The registered dataset ``sar_azimuth`` holds ``lines`` such lines, inputs and targets as
complex [1, length] sequences, split into train/val/test by the seed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from kdforge.data.bundle import DATASETS, DataBundle, Split


@dataclass(frozen=True)
class SARGeometry:
    """An airborne X-band default: 3 cm wavelength, 100 m/s, 2 km slant range, 200 Hz PRF,
    1.2 m antenna (aperture 0.5 s = 101 pulses, Doppler bandwidth 167 Hz < PRF)."""

    wavelength: float = 0.03
    velocity: float = 100.0
    slant_range: float = 2000.0
    prf: float = 200.0
    antenna_length: float = 1.2

    @property
    def fm_rate(self) -> float:
        """K_a = 2 v² / (λ R0), in Hz/s."""
        return 2.0 * self.velocity**2 / (self.wavelength * self.slant_range)

    @property
    def aperture_pulses(self) -> int:
        """Pulses during which a point stays in the beam: T_s · PRF, T_s = λ R0 / (D v), made
        odd so that the response has a centre sample (focused peaks land on their targets)."""
        return 2 * int(self.wavelength * self.slant_range / (self.antenna_length * self.velocity) * self.prf / 2) + 1

    def impulse_response(self) -> np.ndarray:
        """h at the pulse times of one aperture, centred: rect · exp(−iπ K_a t²)."""
        n = self.aperture_pulses
        t = (np.arange(n) - (n - 1) / 2) / self.prf
        return np.exp(-1j * math.pi * self.fm_rate * t**2)


def _convolve_same(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Row-wise linear convolution of [N, L] with [K], cropped to the centred L samples."""
    n = x.shape[1] + len(h) - 1
    full = np.fft.ifft(np.fft.fft(x, n) * np.fft.fft(h, n))
    start = (len(h) - 1) // 2
    return full[:, start : start + x.shape[1]]


def line_geometries(count: int, geometry: SARGeometry, range_spread: float, seed: int) -> list[SARGeometry]:
    """Each line's geometry: ``geometry`` for all when ``range_spread`` is 0, else its slant range drawn uniformly
    within ± ``range_spread`` of ``geometry``'s (each range bin of a swath has its own: a farther bin has a slower
    chirp heard over a longer aperture), from a random stream of its own."""
    if not 0.0 <= range_spread < 1.0:
        raise ValueError(f"range_spread must be in [0, 1), got {range_spread}")
    if range_spread == 0.0:
        return [geometry] * count
    factors = np.random.default_rng([seed, 1]).uniform(1.0 - range_spread, 1.0 + range_spread, count)
    return [dataclasses.replace(geometry, slant_range=geometry.slant_range * f) for f in factors]


def simulate_azimuth_lines(
    count: int,
    length: int = 512,
    targets: tuple[int, int] = (1, 4),
    snr_db: float = 10.0,
    clutter_db: float = -20.0,
    geometry: SARGeometry = SARGeometry(),
    seed: int = 0,
    range_spread: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``count`` lines: (raw echo + noise [count, length] complex64, focused target [count,
    length] complex64, each line's target positions). Same seed, same lines. ``range_spread`` > 0 gives each line
    its own slant range (:func:`line_geometries`), so each needs its own focusing filter."""
    rng = np.random.default_rng(seed)
    geometries = line_geometries(count, geometry, range_spread, seed)
    responses = [g.impulse_response() for g in geometries]
    longest = max(len(h) for h in responses)
    margin = longest // 2
    if length <= 2 * margin:
        raise ValueError(
            f"an azimuth line of {length} samples cannot hold a {longest}-pulse aperture; use length > {2 * margin}"
        )
    scene = np.sqrt(10 ** (clutter_db / 10) / 2) * (
        rng.standard_normal((count, length)) + 1j * rng.standard_normal((count, length))
    )
    positions = []
    for line in scene:
        where = rng.choice(
            np.arange(margin, length - margin), size=rng.integers(targets[0], targets[1] + 1), replace=False
        )
        line[where] += rng.uniform(0.5, 1.5, len(where)) * np.exp(2j * math.pi * rng.uniform(size=len(where)))
        positions.append(np.sort(where))
    echo = np.empty_like(scene)
    focused = np.empty_like(scene)
    for group in _same_response(geometries):  # one convolution per distinct geometry (all lines, without a spread)
        h = responses[group[0]]
        echo[group] = _convolve_same(scene[group], h)
        # matched filter: correlation with h
        focused[group] = _convolve_same(echo[group], np.conj(h[::-1])) / np.sum(np.abs(h) ** 2)
    noise_power = np.mean(np.abs(echo) ** 2) / 10 ** (snr_db / 10)
    noise = np.sqrt(noise_power / 2) * (rng.standard_normal(echo.shape) + 1j * rng.standard_normal(echo.shape))
    return (echo + noise).astype(np.complex64), focused.astype(np.complex64), positions


def _same_response(geometries: list[SARGeometry]) -> list[list[int]]:
    """Indices of the lines grouped by geometry, in order of first appearance."""
    groups: dict[SARGeometry, list[int]] = {}
    for i, g in enumerate(geometries):
        groups.setdefault(g, []).append(i)
    return list(groups.values())


UNLABELLED_STREAM = 1_000_003  # the unlabelled lines' seed offset: a stream apart from every labelled seed


@DATASETS.register("sar_azimuth")
def sar_azimuth(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    lines: int = 1200,
    length: int = 512,
    snr_db: float = 10.0,
    clutter_db: float = -20.0,
    min_targets: int = 1,
    max_targets: int = 4,
    unlabelled_lines: int = 0,
    range_spread: float = 0.0,
) -> DataBundle:
    """Simulated range-compressed SAR azimuth lines (complex [1, length]) and their
    matched-filter focused lines as complex regression targets; deterministic from the seed.
    ``unlabelled_lines`` more raw lines come without their focused lines (NaN targets): as a
    radar gives plenty of raw data and few references, only the distilled student trains on
    them, against the teacher's outputs. The labelled lines do not depend on their number. ``range_spread`` > 0: each
    line from its own slant range, within ± that fraction of 2 km (so each needs its own focusing filter)."""
    shape = (min_targets, max_targets)
    raw, focused, _ = simulate_azimuth_lines(
        lines, length, shape, snr_db, clutter_db, seed=seed, range_spread=range_spread
    )
    order = np.random.default_rng(seed).permutation(lines)
    n_val, n_test = int(round(val_fraction * lines)), int(round(test_fraction * lines))
    parts = (order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test])
    splits = [Split(torch.from_numpy(raw[idx])[:, None], torch.from_numpy(focused[idx])[:, None]) for idx in parts]
    unlabelled = None
    if unlabelled_lines > 0:
        extra, _, _ = simulate_azimuth_lines(
            unlabelled_lines,
            length,
            shape,
            snr_db,
            clutter_db,
            seed=UNLABELLED_STREAM + seed,
            range_spread=range_spread,
        )
        inputs = torch.from_numpy(extra)[:, None]
        unlabelled = Split(inputs, torch.full_like(inputs, complex(math.nan, math.nan)))
    return DataBundle("sar_azimuth", *splits, num_classes=1, input_shape=(1, length), unlabelled=unlabelled)
