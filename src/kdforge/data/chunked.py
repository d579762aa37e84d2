"""Chunked zarr arrays for the ``arrays`` dataset, read lazily: a long SAR acquisition, for one.

A ``.zarr`` store holds ``x`` and ``y`` (or ``x_train`` / ``y_train`` and optionally ``x_val`` /
``y_val``, ``x_test`` / ``y_test``), real or complex, chunked as the user wrote them. A sample is
a row of ``x`` (and of ``y``), or with ``window``, a slice of ``window`` values along the last axis
of a row (every ``stride`` values): the azimuth windows of a range line. A target with the same
last axis as ``x`` is cut into the same windows (a sequence to regress); any other target
belongs to the row. Only the chunks a sample touches are read, in the DataLoader workers.
The splits are drawn by row, so that the overlapping windows of one row never straddle two
splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.data.bundle import DataBundle, DatasetSplit, split_rows
from kdforge.errors import KdforgeError
from kdforge.files import FileReadError, check_finite


def is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (path / ".zgroup").is_file() or (path / "zarr.json").is_file()


class Windows(Dataset):
    """Samples of ``x`` and ``y`` (zarr or NumPy arrays): ``[i]`` is row ``rows[i]``, from ``starts[i]`` on
    for ``window`` values of the last axis (the whole row without a window), with a channel axis when a
    row is one-dimensional; real inputs standardised by ``scaling``."""

    def __init__(
        self, x: Any, y: Any, rows: np.ndarray, starts: np.ndarray, window: int | None, scaling: tuple[float, float]
    ):
        self.x, self.y, self.rows, self.starts, self.window, self.scaling = x, y, rows, starts, window, scaling
        self.windowed_y = window is not None and y.ndim == x.ndim and y.shape[-1] == x.shape[-1]

    def __len__(self) -> int:
        return len(self.rows)

    def _cut(self, a: Any, row: int, start: int, windowed: bool) -> np.ndarray:
        """Row ``row`` of ``a``, or its window from ``start``, given a channel axis when one-dimensional."""
        if not windowed or self.window is None:
            return np.asarray(a[row])
        part = np.asarray(a[row, ..., start : start + self.window])
        return part[None] if part.ndim == 1 else part

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row, start = int(self.rows[i]), int(self.starts[i])
        x = torch.from_numpy(_floats(self._cut(self.x, row, start, self.window is not None)))
        if not x.is_complex():
            mean, std = self.scaling
            x = (x - mean) / std
        y = self._cut(self.y, row, start, self.windowed_y)
        if y.dtype.kind in "iu":
            return x, torch.tensor(int(y), dtype=torch.long)
        return x, torch.from_numpy(_floats(y))


def _floats(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.astype(np.complex64 if np.iscomplexobj(a) else np.float32))


def _open(path: Path) -> dict[str, Any]:
    import zarr  # the zarr extra (the command line names it when missing)

    try:
        group = zarr.open_group(str(path), mode="r")
        return {name: group[name] for name in group.array_keys()}
    except Exception as err:  # zarr raises many kinds for a damaged store; each is one message
        raise FileReadError(f"arrays: '{path}' is not a readable zarr store ({type(err).__name__}: {err})") from None


def _row_stats(x: Any, rows: np.ndarray, sample_rows: int = 64) -> tuple[float, float]:
    """Mean and std of up to ``sample_rows`` evenly spaced rows (real inputs only)."""
    picked = np.sort(rows)[:: max(1, len(rows) // sample_rows)]
    values = np.concatenate([np.asarray(x[int(r)], dtype=np.float64).ravel() for r in picked])
    return float(values.mean()), max(float(values.std()), 1e-8)


def chunked_arrays(
    path: Path,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    num_classes: int | None,
    standardize: bool,
    window: int | None,
    stride: int | None,
) -> DataBundle:
    """The ``arrays`` dataset of a zarr store (see the module docstring)."""
    found = _open(path)
    x_all, y_all = found.get("x_train", found.get("x")), found.get("y_train", found.get("y"))
    if x_all is None or y_all is None:
        raise KdforgeError(
            f"arrays: '{path}' must hold 'x' and 'y' (or 'x_train' and 'y_train'); found {sorted(found)}"
        )
    if window is not None and window > x_all.shape[-1]:
        raise KdforgeError(f"arrays: window {window} is longer than the rows of '{path}' ({x_all.shape[-1]} values)")
    for name in sorted(found):
        if name.startswith("x"):
            check_finite(found[name], f"arrays: {name} in '{path}'")
    regression = y_all.dtype.kind in "fc"
    given = {s: (found[f"x_{s}"], found[f"y_{s}"]) for s in ("val", "test") if f"x_{s}" in found}
    for x, y in [(x_all, y_all), *given.values()]:
        if x.shape[0] != y.shape[0]:
            raise KdforgeError(f"arrays: '{path}' has {x.shape[0]} rows of x but {y.shape[0]} of y")
    wanted = {s: f for s, f in (("val", val_fraction), ("test", test_fraction)) if s not in given}
    labels = np.zeros(y_all.shape[0], np.int64) if regression else np.asarray(y_all[:]).astype(np.int64)
    parts = iter(split_rows(labels, wanted, seed))
    rows = {"train": (x_all, y_all, next(parts))}
    for name in ("val", "test"):
        rows[name] = (
            (*given[name], np.arange(given[name][0].shape[0])) if name in given else (x_all, y_all, next(parts))
        )
    real = x_all.dtype.kind not in "c"
    scaling = _row_stats(x_all, rows["train"][2]) if standardize and real else (0.0, 1.0)
    step = stride or window or 1
    starts = np.arange(0, x_all.shape[-1] - window + 1, step) if window is not None else np.zeros(1, np.int64)
    splits = {}
    for name, (x, y, index) in rows.items():
        samples = Windows(x, y, np.repeat(index, len(starts)), np.tile(starts, len(index)), window, scaling)
        splits[name] = DatasetSplit(samples, None if regression else np.asarray(y[:])[samples.rows].astype(np.int64))
    example_x, example_y = splits["train"].dataset[0]
    if regression:
        classes = num_classes or (example_y.shape[0] if example_y.dim() > 1 else 1)
    else:
        classes = num_classes or int(labels.max()) + 1
    return DataBundle(
        path.stem,
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=classes,
        input_shape=tuple(example_x.shape),
        scaling=scaling,
    )
