"""Built-in datasets. All generated or loaded locally: nothing is downloaded."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdforge.data.bundle import DATASETS, DataBundle, Split, standardise, stratified_split
from kdforge.errors import KdforgeError
from kdforge.files import load_npy, load_npz


@DATASETS.register("digits")
def digits(
    *, seed: int, val_fraction: float, test_fraction: float, image_size: int | None = None, channels: int = 1
) -> DataBundle:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), optionally resized.

    ``image_size`` resizes to NxN (bilinear); ``channels`` 1 or 3 (grey repeated).
    """
    from sklearn.datasets import load_digits

    if channels not in (1, 3):
        raise KdforgeError(f"digits: channels must be 1 or 3, got {channels}")
    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8]
    if image_size is not None and image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.repeat(1, channels, 1, 1)
    y = torch.tensor(raw.target, dtype=torch.long)
    train, val, test = stratified_split(raw.target, (val_fraction, test_fraction), seed)
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
    train, val = stratified_split(y, (val_fraction,), seed)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    xs, scaling = standardise(as_tensor(x[train]), as_tensor(x[val]), as_tensor(x_test))
    ys = [torch.tensor(v, dtype=torch.long) for v in (y[train], y[val], y_test)]
    train_split, val_split, test_split = (Split(xi, yi) for xi, yi in zip(xs, ys))
    return DataBundle(
        "mnist1d", train_split, val_split, test_split, num_classes=10, input_shape=(1, 40), scaling=scaling
    )


@DATASETS.register("arrays")
def arrays(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    num_classes: int | None = None,
    standardize: bool = True,
) -> DataBundle:
    """Your own arrays: an ``.npz`` with ``x`` and ``y`` (or ``x_train``/``y_train`` and
    optionally ``x_val``/``y_val``, ``x_test``/``y_test``), or a directory holding
    ``x.npy`` and ``y.npy``. Missing splits are cut from the training data by the seed.

    Integer ``y`` are class labels (splits stratified); real or complex ``y`` make a
    regression (e.g. [N, C, L] target sequences; ``num_classes`` is then their channel
    count). Complex ``x`` stay complex (and are not standardised).
    """
    found = _read_arrays(Path(path))
    x_all, y_all = found.get("x_train", found.get("x")), found.get("y_train", found.get("y"))
    if x_all is None or y_all is None:
        raise KdforgeError(
            f"arrays: '{path}' must hold 'x' and 'y' (or 'x_train' and 'y_train'); found {sorted(found)}"
        )
    for name, array in (("x", x_all), ("y", y_all)):
        if array.dtype.kind not in "biufc":
            raise KdforgeError(
                f"arrays: {name} in '{path}' holds {array.dtype} values; x and y must be numbers (bool, int, float or "
                "complex)"
            )
    if x_all.ndim < 2:
        raise KdforgeError(
            f"arrays: x in '{path}' has shape {list(x_all.shape)}, but kdforge reads one row per sample, [N, "
            "features, ...]; "
            "a single feature per sample is x[:, None] (shape [N, 1])"
        )
    if len(x_all) != len(y_all):
        raise KdforgeError(f"arrays: x in '{path}' has {len(x_all)} rows but y has {len(y_all)}")
    regression = not np.issubdtype(y_all.dtype, np.integer)
    given = {s: (found[f"x_{s}"], found[f"y_{s}"]) for s in ("val", "test") if f"x_{s}" in found}
    cut = tuple(f for s, f in (("val", val_fraction), ("test", test_fraction)) if s not in given)
    parts = iter(
        _random_split(len(y_all), cut, seed) if regression else stratified_split(y_all.astype(np.int64), cut, seed)
    )
    train = next(parts)
    splits = {"train": (x_all[train], y_all[train])}
    for name in ("val", "test"):
        splits[name] = given[name] if name in given else (x_all[(idx := next(parts))], y_all[idx])
    xs = [_tensor(splits[s][0]) for s in ("train", "val", "test")]
    scaling = (0.0, 1.0)
    if standardize and not xs[0].is_complex():
        xs, scaling = standardise(*xs)
    ys = [
        _tensor(splits[s][1]) if regression else torch.tensor(splits[s][1].astype(np.int64))
        for s in ("train", "val", "test")
    ]
    if regression:
        classes = num_classes or (ys[0].shape[1] if ys[0].dim() > 1 else 1)
    else:
        classes = num_classes or int(max(int(y.max()) for y in ys)) + 1
    train_split, val_split, test_split = (Split(x, y) for x, y in zip(xs, ys))
    return DataBundle(
        Path(path).stem,
        train_split,
        val_split,
        test_split,
        num_classes=classes,
        input_shape=tuple(xs[0].shape[1:]),
        scaling=scaling,
    )


def _tensor(a: np.ndarray) -> torch.Tensor:
    """complex64 for complex arrays, float32 for the rest."""
    return torch.from_numpy(np.ascontiguousarray(a.astype(np.complex64 if np.iscomplexobj(a) else np.float32)))


def _random_split(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """[rest, then one part per fraction] of a seeded permutation of range(n)."""
    order = np.random.default_rng(seed).permutation(n)
    sizes = [int(round(f * n)) for f in fractions]
    cuts = np.cumsum(sizes)
    return [order[cuts[-1] if sizes else 0 :], *(order[a - s : a] for a, s in zip(cuts, sizes))]


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        return {p.stem: load_npy(p, what="arrays file") for p in sorted(path.glob("*.npy"))}
    if path.suffix == ".npz" and path.is_file():
        return load_npz(path, what="arrays file")
    raise KdforgeError(f"arrays: '{path}' is neither an .npz file nor a directory of .npy files")
