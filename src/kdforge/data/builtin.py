"""Built-in datasets. All generated or loaded locally: nothing is downloaded."""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from kdforge.bounds import AtLeastOne
from kdforge.data.bundle import DATASETS, DataBundle, Split, split_rows, standardise


@DATASETS.register("digits")
def digits(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    image_size: AtLeastOne | None = None,
    channels: Literal[1, 3] = 1,
) -> DataBundle:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), optionally resized.

    ``image_size`` resizes to NxN (bilinear); ``channels`` 1 or 3 (grey repeated).
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8]
    if image_size is not None and image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.repeat(1, channels, 1, 1)
    y = torch.tensor(raw.target, dtype=torch.long)
    train, val, test = split_rows(raw.target, {"val": val_fraction, "test": test_fraction}, seed)
    xs, scaling = standardise(x[train], x[val], x[test])
    train_split, val_split, test_split = (Split(xi, y[idx]) for xi, idx in zip(xs, (train, val, test)))
    return DataBundle(
        "digits", train_split, val_split, test_split, num_classes=10, input_shape=tuple(x.shape[1:]), scaling=scaling
    )


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # generated locally, deterministic (its own seed)
    return data["x"], data["y"], data["x_test"], data["y_test"]


@DATASETS.register("mnist1d")
def mnist1d(*, seed: int, val_fraction: float, test_fraction: float) -> DataBundle:
    """MNIST-1D (4,000 + 1,000 sequences of length 40, 10 classes), generated locally.

    Inputs are [1, 40] (one channel). The package's own test set is used as test, so
    ``test_fraction`` does not apply; validation is split from its training set.
    """
    del test_fraction  # the package fixes its own test split
    x, y, x_test, y_test = _mnist1d_arrays()
    train, val = split_rows(y, {"val": val_fraction}, seed)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    xs, scaling = standardise(as_tensor(x[train]), as_tensor(x[val]), as_tensor(x_test))
    ys = [torch.tensor(v, dtype=torch.long) for v in (y[train], y[val], y_test)]
    train_split, val_split, test_split = (Split(xi, yi) for xi, yi in zip(xs, ys))
    return DataBundle(
        "mnist1d", train_split, val_split, test_split, num_classes=10, input_shape=(1, 40), scaling=scaling
    )
