"""Arrays of per-sample rows stored as shard files, for the teacher cache.

An array of ``views`` x ``samples`` rows is cut into shards of ``shard_samples`` consecutive
samples of one view, each its own ``.npy`` file written atomically as soon as the teacher has
produced it: an interrupted ``kdforge cache`` keeps every finished shard and goes on from the
first missing one. Reading maps every shard into memory (nothing is loaded until a row is
asked for), or stacks them into one tensor when the whole cache is small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdforge.errors import KdforgeError
from kdforge.files import load_npy, random_access, save_npy


def shard_file(folder: Path, name: str, view: int, shard: int) -> Path:
    return folder / "shards" / f"{name}-v{view}-{shard:05d}.npy"


def shard_count(samples: int, shard_samples: int) -> int:
    return -(-samples // shard_samples)


def shards_done(folder: Path, names: list[str], view: int, samples: int, shard_samples: int) -> int:
    """How many leading shards of ``view`` are complete (every array's file written)."""
    for shard in range(shard_count(samples, shard_samples)):
        if not all(shard_file(folder, name, view, shard).is_file() for name in names):
            return shard
    return shard_count(samples, shard_samples)


class ShardBuffer:
    """Rows of one shard as the teacher produces them, batch by batch; :meth:`flush` writes them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, rows: np.ndarray) -> None:
        self.rows.setdefault(name, []).append(rows)

    def __len__(self) -> int:
        return sum(len(r) for r in next(iter(self.rows.values()), []))

    def flush(self, folder: Path, view: int, shard: int) -> None:
        for name, parts in self.rows.items():
            save_npy(shard_file(folder, name, view, shard), np.concatenate(parts))
        self.rows.clear()


class ShardedArray:
    """Rows [views, samples, *shape] of one cached array, read from its memory-mapped shards."""

    def __init__(
        self, folder: Path, name: str, views: int, samples: int, shard_samples: int, shape: list[int], dtype: str
    ):
        self.shard_samples, self.samples = shard_samples, samples
        rebuild = f"rebuild it with: kdforge cache RECIPE --out {folder}"
        self.maps: list[list[np.ndarray]] = []
        for view in range(views):
            maps = []
            for shard in range(shard_count(samples, shard_samples)):
                path = shard_file(folder, name, view, shard)
                array = random_access(load_npy(path, mmap_mode="r", what="teacher cache shard"))
                rows = min(shard_samples, samples - shard * shard_samples)
                if list(array.shape) != [rows, *shape] or array.dtype != np.dtype(dtype):
                    raise KdforgeError(
                        f"teacher cache shard '{path}' holds {list(array.shape)} {array.dtype}, but the manifest "
                        f"promises {[rows, *shape]} {dtype}; {rebuild}"
                    )
                maps.append(array)
            self.maps.append(maps)
        self.nbytes = sum(a.nbytes for maps in self.maps for a in maps)

    def whole(self) -> np.ndarray:
        """Every row, [views, samples, ...], read into memory."""
        return np.stack([np.concatenate(maps) for maps in self.maps])

    def rows(self, view: int, index: np.ndarray) -> np.ndarray:
        """The rows of samples ``index`` in ``view``, read shard by shard."""
        shard, offset = np.divmod(index, self.shard_samples)
        maps = self.maps[view]
        out = np.empty((len(index), *maps[0].shape[1:]), maps[0].dtype)
        for s in np.unique(shard):
            chosen = shard == s
            out[chosen] = maps[s][offset[chosen]]
        return out
