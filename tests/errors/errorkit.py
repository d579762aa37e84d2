"""Bytes that bad-input tests write: a torch pickle, a malicious pickle, a .npy array, a safetensors file."""

from __future__ import annotations

import io
import os

import numpy as np
import torch


def torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


class Payload:
    """Pickled as a call of os.system: what a malicious checkpoint holds."""

    def __reduce__(self):
        return (os.system, ("echo owned",))


def npy_bytes(array, **options) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **options)
    return buffer.getvalue()


def good_safetensors() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.randn(8, 8)})
