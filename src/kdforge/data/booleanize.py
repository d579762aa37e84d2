"""Booleanisation for Tsetlin-machine students: inputs become ±1 bits by per-feature thresholds
fitted on the training split (so that validation and test never shape them).

What is thresholded (``features``):

* ``raw``: the inputs themselves;
* ``augmented``: the inputs, plus each position's local contrast (its value minus the mean of
  its 3×3 neighbourhood, 3 steps on sequences: an adaptive threshold) and its gradient
  magnitude (Sobel on images, central differences on sequences: edges);
* ``convolutional``: the inputs, plus their responses to a fixed bank of small filters per
  channel (images: horizontal and vertical Sobel, the Laplacian and both diagonal
  gradients; sequences: first and second differences and the local mean).

Derived features are stacked as channels, so images stay images; every channel is then
thresholded by training quantiles like the inputs. A booleanised dataset can be stored
packed (one bit per value) in a ``cache`` folder and reused by every run with the same data
settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from kdforge.data.bundle import DataBundle, Split, in_memory
from kdforge.errors import KdforgeError
from kdforge.files import check_writable, load_npz, save_npz

Features = Literal["raw", "augmented", "convolutional"]

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
_KERNELS_2D = {
    "sobel_x": _SOBEL,
    "sobel_y": _SOBEL.t(),
    "laplacian": torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]) / 4,
    "diagonal": torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) / 2,
    "antidiagonal": torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]) / 2,
}
_KERNELS_1D = {
    "difference": torch.tensor([-0.5, 0.0, 0.5]),
    "curvature": torch.tensor([1.0, -2.0, 1.0]) / 2,
    "local_mean": torch.full((3,), 1 / 3),
}
_CHUNK = 4096  # rows filtered at once: intermediates stay small on large splits


def derived_channels(features: Features, spatial_dims: int) -> list[str]:
    """Names of the channel groups ``features`` makes from [C, *spatial] inputs, in order."""
    if features == "raw":
        return ["input"]
    if spatial_dims not in (1, 2):
        raise KdforgeError(
            f"data.booleanize.features '{features}' filters images [C, H, W] or sequences [C, L]; these inputs have "
            f"{spatial_dims} spatial dimension(s): use features: raw"
        )
    if features == "augmented":
        return ["input", "local_contrast", "gradient_magnitude"]
    return ["input", *(_KERNELS_2D if spatial_dims == 2 else _KERNELS_1D)]


def feature_maps(x: torch.Tensor, features: Features) -> torch.Tensor:
    """[N, C, *spatial] -> [N, G·C, *spatial]: the channel groups of :func:`derived_channels`."""
    if features == "raw":
        return x
    derived_channels(features, x.dim() - 2)  # refuses other shapes
    return torch.cat([_filtered(chunk.float(), features) for chunk in x.split(_CHUNK)])


def _filtered(x: torch.Tensor, features: Features) -> torch.Tensor:
    images = x.dim() == 4
    channels = x.shape[1]
    conv = F.conv2d if images else F.conv1d

    def apply(kernel: torch.Tensor) -> torch.Tensor:  # the same kernel on every channel, edges replicated
        weight = kernel.to(x.dtype).expand(channels, 1, *kernel.shape).contiguous()
        padded = F.pad(x, (1, 1, 1, 1) if images else (1, 1), mode="replicate")
        return conv(padded, weight, groups=channels)

    if features == "augmented":
        mean = apply(torch.full((3, 3) if images else (3,), 1 / 9 if images else 1 / 3))
        grad = apply(_SOBEL).hypot(apply(_SOBEL.t())) if images else apply(_KERNELS_1D["difference"]).abs()
        return torch.cat([x, x - mean, grad], 1)
    return torch.cat([x, *(apply(k) for k in (_KERNELS_2D if images else _KERNELS_1D).values())], 1)


def fit_thresholds(x: torch.Tensor, method: Literal["thresholds", "thermometer"], levels: int) -> torch.Tensor:
    """Per-feature thresholds [L, *shape] from training inputs [N, *shape]: the median
    (``thresholds``: L = 1) or the ``levels`` quantiles i / (levels + 1) (``thermometer``)."""
    count = 1 if method == "thresholds" else levels
    q = torch.arange(1, count + 1, dtype=torch.float32) / (count + 1)
    return torch.quantile(x.flatten(1).float(), q, dim=0).view(count, *x.shape[1:])


def booleanize(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """[N, C, *rest] -> [N, L·C, *rest] of ±1: bit l of feature i is x_i > t_{l,i}. Levels
    are stacked along the channel axis, so images stay images."""
    bits = (x.unsqueeze(1) > thresholds.unsqueeze(0)).float() * 2.0 - 1.0  # [N, L, C, *rest]
    return bits.flatten(1, 2)


def booleanize_bundle(data: DataBundle, cfg: Any) -> DataBundle:
    """``data`` as ±1 bits (``cfg``: the recipe's ``data.booleanize``); with ``cfg.cache``, read
    from (or written to) ``<cache>/booleanized-<key>.npz``, ``key`` a hash of the settings and
    of the inputs themselves (a changed dataset is booleanised anew)."""
    held = [in_memory(split, "data.booleanize") for split in (data.train, data.val, data.test)]
    stored = Path(cfg.cache) / f"booleanized-{cache_key(held, cfg)}.npz" if cfg.cache else None
    if stored is not None and stored.exists():
        splits, shape = _read_cached(stored, data)
    else:
        thresholds = input_thresholds(held[0].x, cfg)
        splits = {
            name: booleanize(feature_maps(split.x, cfg.features), thresholds)
            for name, split in zip(("train", "val", "test"), held)
        }
        shape = tuple(splits["train"].shape[1:])
        if stored is not None:
            check_writable(stored.parent, "data.booleanize.cache")
            save_npz(
                stored,
                {name: np.packbits(bits.numpy() > 0, axis=None) for name, bits in splits.items()}
                | {"shape": np.asarray(shape)},
            )
    return replace(
        data,
        train=Split(splits["train"], held[0].y),
        val=Split(splits["val"], held[1].y),
        test=Split(splits["test"], held[2].y),
        input_shape=shape,
        scaling=(0.0, 1.0),
    )


def input_thresholds(x: torch.Tensor, cfg: Any) -> torch.Tensor:
    """The thresholds ``cfg`` fits on training inputs ``x`` (on their feature maps)."""
    return fit_thresholds(feature_maps(x, cfg.features), cfg.method, cfg.levels)


def _read_cached(path: Path, data: DataBundle) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    arrays = load_npz(path, "booleanized data cache")
    try:
        shape = tuple(int(n) for n in arrays["shape"])
        splits = {}
        for name in ("train", "val", "test"):
            rows = len(getattr(data, name))
            if len(arrays[name]) != -(-rows * int(np.prod(shape)) // 8):
                raise ValueError(
                    f"its {name} split has {len(arrays[name])} bytes of bits, not {rows} rows of {list(shape)}"
                )
            bits = np.unpackbits(arrays[name], count=rows * int(np.prod(shape)))
            splits[name] = torch.from_numpy(bits.reshape(rows, *shape).astype(np.float32) * 2 - 1)
    except (KeyError, ValueError) as err:
        raise KdforgeError(
            f"booleanized data cache '{path}' does not hold this dataset's splits ({err}); delete it and it is rebuilt"
        ) from None
    return splits, shape


def cache_key(held: list[Split], cfg: Any) -> str:
    """A hash of the booleanisation settings and of every split's inputs."""
    digest = hashlib.blake2b(
        json.dumps(cfg.model_dump(mode="json", exclude={"cache"}), sort_keys=True).encode(), digest_size=8
    )
    for split in held:
        x = split.x.contiguous()
        digest.update(str((x.dtype, tuple(x.shape))).encode())
        digest.update(x.numpy().tobytes())
    return digest.hexdigest()
