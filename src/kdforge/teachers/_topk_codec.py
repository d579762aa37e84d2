"""The compact form of a top-k teacher in a cache: token ids packed at the bits the vocabulary needs, and
log-probabilities in float16 or quantised to 8 bits.

Ids: a vocabulary of V tokens needs b = ⌈log2 V⌉ bits per id (15 at 32k, 17 at 128k) instead of the 16 or 32
of an integer type; each row's k ids are written as one little-endian bit string of ⌈k·b / 8⌉ bytes.

Log-probabilities: float16 (2 bytes, relative error 5e-4), or one byte each, log p quantised uniformly on
[LOGP_FLOOR, 0] (a step of 0.078 nats: each probability within ±4 %; below e^−20 a token is clipped to the
floor). Bytes per token position: k · (2 + b/8) or k · (1 + b/8) — at V = 128k, k = 32: 132 or 100 bytes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LOGP_FLOOR = -20.0  # the 8-bit codes span log p in [LOGP_FLOOR, 0]
LOGP_BITS = (8, 16)


def id_bits(vocab: int) -> int:
    """Bits per token id for a vocabulary of ``vocab`` tokens."""
    return max(1, math.ceil(math.log2(vocab)))


def packed_bytes(k: int, bits: int) -> int:
    return -(-k * bits // 8)


def pack_ids(indices: np.ndarray, bits: int) -> np.ndarray:
    """[..., k] non-negative ids below 2**bits -> [..., ⌈k·bits/8⌉] uint8, each row one little-endian bit string."""
    values = indices.astype(np.uint32)
    planes = (values[..., None] >> np.arange(bits, dtype=np.uint32)) & 1  # [..., k, bits], least significant first
    flat = planes.reshape(*indices.shape[:-1], indices.shape[-1] * bits).astype(np.uint8)
    return np.packbits(flat, axis=-1, bitorder="little")


def unpack_ids(packed: torch.Tensor, k: int, bits: int) -> torch.Tensor:
    """The inverse of :func:`pack_ids`, on any device: [..., bytes] uint8 -> [..., k] int64. Each id is read from
    the (at most 4) bytes that hold it."""
    if bits > 25:
        raise ValueError(f"ids of {bits} bits do not fit the 4-byte window this decoder reads")
    padded = torch.nn.functional.pad(packed, (0, 3)).long()
    offsets = torch.arange(k, device=packed.device) * bits
    first = offsets // 8
    word = sum(padded[..., first + b] << (8 * b) for b in range(4))
    return (word >> (offsets % 8)) & ((1 << bits) - 1)


def encode_log_probs(log_probs: torch.Tensor, bits: int) -> np.ndarray:
    """Top-k log-probabilities as float16, or as 8-bit codes of log p on [LOGP_FLOOR, 0]."""
    if bits == 16:
        return log_probs.to(torch.float16).cpu().numpy()
    if bits != 8:
        raise ValueError(f"log-probabilities are kept in 8 or 16 bits, not {bits}")
    codes = (log_probs.float().clamp(LOGP_FLOOR, 0.0) / LOGP_FLOOR * 255).round()
    return codes.to(torch.uint8).cpu().numpy()


def decode_log_probs(stored: torch.Tensor) -> torch.Tensor:
    """float32 log-probabilities from :func:`encode_log_probs`'s output (its dtype says which form)."""
    if stored.dtype == torch.uint8:
        return stored.float() * (LOGP_FLOOR / 255)
    return stored.float()
