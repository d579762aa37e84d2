"""Your own arrays: the ``arrays`` dataset.

An ``.npz`` file is read whole. A folder of ``.npy`` files (``x.npy``, ``y.npy``, and optionally
``x_val.npy`` ...) larger than :data:`IN_MEMORY_BYTES` (or with ``memory_map: true``) is
memory-mapped instead: samples are read row by row as training asks for them (in DataLoader
workers), so a table of a million rows trains with flat memory. Its standardisation is measured
on up to :data:`STATISTICS_ROWS` training rows, read in chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.bounds import AtLeastOne, needs
from kdforge.data.bundle import DATASETS, DataBundle, DatasetSplit, Split, split_rows, standardise
from kdforge.data.chunked import chunked_arrays, is_zarr
from kdforge.errors import KdforgeError
from kdforge.files import check_finite, load_npy, load_npz, random_access

IN_MEMORY_BYTES = 2 * 1024**3  # larger inputs are memory-mapped (memory_map: auto)
STATISTICS_ROWS = 100_000  # training rows the mean and std of memory-mapped inputs are measured on


class ArrayRows(Dataset):
    """Rows ``index`` of a (memory-mapped) array ``x`` and their targets: ``[i]`` -> (row as float32,
    or complex64, standardised by ``scaling``; target)."""

    def __init__(self, x: np.ndarray, y: torch.Tensor, index: np.ndarray, scaling: tuple[float, float]):
        self.x, self.y, self.index, self.scaling = random_access(x), y, index, scaling

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        """Sent to a worker process (spawned, not forked): the file's name, not its contents."""
        state = dict(self.__dict__)
        if isinstance(self.x, np.memmap):
            state["x"] = str(self.x.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if isinstance(self.x, str):
            self.x = random_access(np.load(self.x, mmap_mode="r"))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.scaling
        row = _tensor(np.asarray(self.x[int(self.index[i])]))
        return (row - mean) / std if (mean, std) != (0.0, 1.0) else row, self.y[int(self.index[i])]


@DATASETS.register("arrays", rules=[needs("stride", "window", "is the step between windows")])
def arrays(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    num_classes: AtLeastOne | None = None,
    standardize: bool = True,
    memory_map: bool | None = None,
    window: AtLeastOne | None = None,
    stride: AtLeastOne | None = None,
) -> DataBundle:
    """Your own arrays: an ``.npz`` with ``x`` and ``y`` (or ``x_train``/``y_train`` and
    optionally ``x_val``/``y_val``, ``x_test``/``y_test``), or a directory holding
    ``x.npy`` and ``y.npy`` (and the same optional splits). Missing splits are cut from the
    training data by the seed.

    Integer ``y`` are class labels (splits stratified); real or complex ``y`` make a
    regression (e.g. [N, C, L] target sequences; ``num_classes`` is then their channel
    count). Complex ``x`` stay complex (and are not standardised). ``memory_map``: read the
    ``.npy`` inputs row by row from disk (default: when they exceed 2 GiB).

    A ``.zarr`` store (``x``, ``y``, and the same optional splits) is read lazily, chunk by chunk;
    ``window`` (and ``stride``) cut its rows into windows along the last axis
    (:mod:`kdforge.data.chunked`).
    """
    if is_zarr(Path(path)):
        return chunked_arrays(
            Path(path),
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            num_classes=num_classes,
            standardize=standardize,
            window=window,
            stride=stride,
        )
    if window is not None or stride is not None:
        raise KdforgeError(f"arrays: window and stride cut the rows of a zarr store; '{path}' is not one")
    found = _read_arrays(Path(path), memory_map)
    x_all, y_all = found.get("x_train", found.get("x")), found.get("y_train", found.get("y"))
    if x_all is None or y_all is None:
        raise KdforgeError(
            f"arrays: '{path}' must hold 'x' and 'y' (or 'x_train' and 'y_train'); found {sorted(found)}"
        )
    _check(path, x_all, y_all)
    for name in sorted(found):
        if name.startswith("x"):
            check_finite(found[name], f"arrays: {name} in '{path}'")
    regression = not np.issubdtype(y_all.dtype, np.integer)
    given = {s: (found[f"x_{s}"], found[f"y_{s}"]) for s in ("val", "test") if f"x_{s}" in found}
    wanted = {s: f for s, f in (("val", val_fraction), ("test", test_fraction)) if s not in given}
    parts = iter(
        split_rows(y_all, wanted, seed, lambda y, shares, seed: _random_split(len(y), shares, seed))
        if regression
        else split_rows(y_all.astype(np.int64), wanted, seed)
    )
    train = next(parts)
    rows = {"train": (x_all, y_all, train)}
    for name in ("val", "test"):
        rows[name] = (*given[name], np.arange(len(given[name][1]))) if name in given else (x_all, y_all, next(parts))
    every = _targets(y_all, regression)
    targets = {name: _targets(given[name][1], regression) if name in given else every for name in rows}
    ys = {name: targets[name][index] for name, (_, _, index) in rows.items()}
    splits: list[Split] | list[DatasetSplit]
    if isinstance(x_all, np.memmap):
        splits, scaling = _mapped_splits(rows, targets, standardize)
    else:
        xs = [_tensor(x[index]) for x, _, index in rows.values()]
        scaling = (0.0, 1.0)
        if standardize and not xs[0].is_complex():
            xs, scaling = standardise(*xs)
        splits = [Split(x, ys[name]) for x, name in zip(xs, rows)]
    if regression:
        classes = num_classes or (ys["train"].shape[1] if ys["train"].dim() > 1 else 1)
    else:
        classes = num_classes or int(max(int(y.max()) for y in ys.values())) + 1
    train_split, val_split, test_split = splits
    return DataBundle(
        Path(path).stem,
        train_split,
        val_split,
        test_split,
        num_classes=classes,
        input_shape=tuple(x_all.shape[1:]),
        scaling=scaling,
    )


def _check(path: str, x: np.ndarray, y: np.ndarray) -> None:
    for name, array in (("x", x), ("y", y)):
        if array.dtype.kind not in "biufc":
            raise KdforgeError(
                f"arrays: {name} in '{path}' holds {array.dtype} values; x and y must be numbers (bool, int, float or "
                "complex)"
            )
    if x.ndim < 2:
        raise KdforgeError(
            f"arrays: x in '{path}' has shape {list(x.shape)}, but kdforge reads one row per sample, [N, "
            "features, ...]; a single feature per sample is x[:, None] (shape [N, 1])"
        )
    if len(x) != len(y):
        raise KdforgeError(f"arrays: x in '{path}' has {len(x)} rows but y has {len(y)}")


def _targets(y: np.ndarray, regression: bool) -> torch.Tensor:
    return _tensor(np.asarray(y)) if regression else torch.from_numpy(np.asarray(y).astype(np.int64))


def _mapped_splits(
    rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], targets: dict[str, torch.Tensor], standardize: bool
) -> tuple[list[DatasetSplit], tuple[float, float]]:
    """Splits that read their rows from the memory-mapped inputs, and the scaling they apply."""
    x_train, _, train = rows["train"]
    scaling = (0.0, 1.0)
    if standardize and not np.iscomplexobj(x_train):
        scaling = chunked_mean_std(x_train, train)
    splits = [
        DatasetSplit(
            ArrayRows(x, targets[name], index, scaling),
            None if targets[name].is_floating_point() else targets[name][index].numpy(),
        )
        for name, (x, _, index) in rows.items()
    ]
    return splits, scaling


def chunked_mean_std(x: Any, index: np.ndarray, chunk: int = 4096) -> tuple[float, float]:
    """Mean and (unbiased) std of ``x``'s rows ``index`` (up to :data:`STATISTICS_ROWS` of them, evenly
    spaced), read ``chunk`` rows at a time in float64; ``x`` is anything indexed by an array of rows (a
    memory-mapped array, a table's column)."""
    rows = np.sort(index)[:: max(1, len(index) // STATISTICS_ROWS)]
    count, total, squares = 0, 0.0, 0.0
    for start in range(0, len(rows), chunk):
        values = np.asarray(x[rows[start : start + chunk]], dtype=np.float64)
        count, total, squares = count + values.size, total + values.sum(), squares + np.square(values).sum()
    mean = total / count
    variance = max(squares - count * mean * mean, 0.0) / max(count - 1, 1)
    return float(mean), max(float(np.sqrt(variance)), 1e-8)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """complex64 for complex arrays, float32 for the rest."""
    return torch.from_numpy(np.ascontiguousarray(a.astype(np.complex64 if np.iscomplexobj(a) else np.float32)))


def _random_split(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """[rest, then one part per fraction] of a seeded permutation of range(n)."""
    order = np.random.default_rng(seed).permutation(n)
    sizes = [int(round(f * n)) for f in fractions]
    cuts = np.cumsum(sizes)
    return [order[cuts[-1] if sizes else 0 :], *(order[a - s : a] for a, s in zip(cuts, sizes))]


def _read_arrays(path: Path, memory_map: bool | None) -> dict[str, np.ndarray]:
    """The arrays of ``path``; a folder's ``x*.npy`` inputs memory-mapped when ``memory_map`` says so
    (None: when they exceed :data:`IN_MEMORY_BYTES`)."""
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        inputs = sum(f.stat().st_size for f in files if f.stem.startswith("x"))
        mapped = inputs > IN_MEMORY_BYTES if memory_map is None else memory_map
        return {
            f.stem: load_npy(f, mmap_mode="r" if mapped and f.stem.startswith("x") else None, what="arrays file")
            for f in files
        }
    if memory_map:
        raise KdforgeError(f"arrays: memory_map reads a folder of .npy files; '{path}' is not one")
    if path.suffix == ".npz" and path.is_file():
        return load_npz(path, what="arrays file")
    raise KdforgeError(f"arrays: '{path}' is neither an .npz file nor a directory of .npy files")
