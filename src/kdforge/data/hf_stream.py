"""``hf`` with ``streaming: true``: Hugging Face data read as streams, for data larger than memory.

Data files are read in order (no Arrow copy in the ``datasets`` cache; a ``save_to_disk`` folder
is streamed from its own files), shuffled through a buffer of ``shuffle_buffer`` rows seeded by
the run's seed and the epoch, and cut into global batches of consecutive rows; each rank takes
its share of every batch and each DataLoader worker decodes only the batches it makes (see
:class:`~kdforge.data.loaders.StreamBatches`). The splits are the data's own — a ``DatasetDict``'s,
``split_column``, or ``val`` / ``test`` files — since a stream cannot be re-split without
reading it all. One pass over the label column (and a numeric input column, for its mean and
std) counts the rows first; nothing else is read ahead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdforge.data.bundle import SPLIT_NAMES, DataBundle, StreamSplit
from kdforge.data.folders import ImageOptions
from kdforge.data.hf_tables import (
    HubDataset,
    Labels,
    Numbers,
    check_known_names,
    check_split_marks,
    class_names,
    data_files,
    hub_dataset,
    image_inputs,
    load_table,
    saved_to_disk,
)
from kdforge.errors import KdforgeError
from kdforge.files import FileReadError
from kdforge.pretrained import is_hub_id

SURVEY_ROWS = 4096  # rows per chunk of the counting pass
READ_ROWS = 1024  # rows per chunk read from the stream


class HFStream:
    """A split of a ``datasets.IterableDataset`` as a :class:`~kdforge.data.bundle.Stream`."""

    def __init__(self, table: Any, rows: int, input: str, label: str, prepare: Any, buffer: int, labels: Labels):
        self.table, self.rows, self.input, self.label = table, rows, input, label
        self.prepare_input, self.buffer, self.labels = prepare, buffer, labels

    def __len__(self) -> int:
        return self.rows

    def chunks(self, epoch: int, size: int, shuffle: bool, seed: int) -> Iterator[list[Any]]:
        rows = self._shuffled(np.random.default_rng([seed, epoch])) if shuffle else self._rows(self.table)
        while chunk := list(itertools.islice(rows, size)):
            yield chunk

    @staticmethod
    def _rows(table: Any) -> Iterator[dict[str, Any]]:
        for columns in table.iter(batch_size=READ_ROWS):  # every row, whatever the DataLoader worker
            yield from (dict(zip(columns, values)) for values in zip(*columns.values()))

    def _shuffled(self, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """The rows with the files (shards) in a random order, through a shuffling buffer: each row read
        takes the place of a random one in the buffer, which goes out. (``datasets``' own shuffle waits
        5 s after each pass over parquet files.)"""
        shards = self.table.num_shards
        buffer: list[dict[str, Any]] = []
        for shard in rng.permutation(shards):
            for row in self._rows(self.table.shard(shards, int(shard), contiguous=True)):
                if len(buffer) < self.buffer:
                    buffer.append(row)
                    continue
                slot = int(rng.integers(self.buffer))
                yield buffer[slot]
                buffer[slot] = row
        yield from (buffer[i] for i in rng.permutation(len(buffer)))

    def prepare(self, row: Any) -> tuple[torch.Tensor, Any]:
        return self.prepare_input(row[self.input]), self.labels(row[self.label])


class _InSplit:
    """Whether a row's ``column`` names one of ``names`` (a picklable filter)."""

    def __init__(self, column: str, names: tuple[str, ...]):
        self.column, self.names = column, names

    def __call__(self, row: dict[str, Any]) -> bool:
        return str(row[self.column]) in self.names


def stream_of(path: str, hub: HubDataset | None = None) -> Any:
    """A hub dataset's splits, a ``save_to_disk`` folder's dataset (or its dict of splits) or data files, as
    streams."""
    import datasets

    if is_hub_id(path):
        return hub_dataset(path, hub or HubDataset(), streaming=True)
    if saved_to_disk(path):
        found = load_table(path)
        shards = lambda t: t.to_iterable_dataset(num_shards=max(1, min(len(t) // 1000, 64)))  # noqa: E731
        if isinstance(found, datasets.DatasetDict):
            return {name: shards(table) for name, table in found.items()}
        return shards(found)
    kind, files = data_files(path)
    options: dict[str, Any] = {}
    if kind == "parquet":
        import pyarrow.dataset as arrow

        # unless told otherwise, parquet is read a row group at a time (a 100,000-row group of 32 numbers
        # became 300 MB of Python rows) and its column chunks are fetched ahead (a pass over a 258 MB file
        # peaked 250 MB higher than over a tenth of it): READ_ROWS at a time, nothing fetched ahead
        options = {"batch_size": READ_ROWS, "fragment_scan_options": arrow.ParquetFragmentScanOptions(pre_buffer=False)}
    return datasets.load_dataset(kind, data_files=files, split="train", streaming=True, **options)


def stream_splits(
    path: str, hub: HubDataset, val: str | None, test: str | None, split_column: str | None
) -> dict[str, Any]:
    """{"train", "val", "test"} -> the stream of each, from the data's own splits."""
    found = stream_of(path, hub)
    if isinstance(found, dict):
        tables = {s: next((found[n] for n in names if n in found), None) for s, names in SPLIT_NAMES.items()}
    else:
        tables = {"train": found, "val": None, "test": None}
    train = tables["train"]
    if train is None:
        raise KdforgeError(f"hf: '{path}' has splits {', '.join(found)} but none named train")
    if split_column is not None:
        check_split_marks(_distinct(train, split_column, path), split_column, path)
        tables = {s: train.filter(_InSplit(split_column, names)) for s, names in SPLIT_NAMES.items()}
    for split, where in (("val", val), ("test", test)):
        if where is not None:
            tables[split] = stream_of(where)
    if missing := [s for s, t in tables.items() if t is None]:
        raise KdforgeError(
            f"hf: streaming reads the splits the data gives (a DatasetDict's, split_column, or val: and test: "
            f"files), and '{path}' gives no {' and no '.join(missing)} split: a stream cannot be re-split without "
            "reading it all"
        )
    return tables


def _distinct(table: Any, column: str, path: str) -> set[str]:
    """The distinct values of one column of a stream, read as Arrow columns in one pass."""
    found: set[str] = set()
    try:
        for chunk in table.select_columns([column]).with_format("arrow").iter(batch_size=SURVEY_ROWS):
            found.update(map(str, chunk.column(column).unique().to_pylist()))
    except (KeyError, ValueError, TypeError) as err:
        raise FileReadError(f"hf: '{path}' has no readable column '{column}' (split_column): {err}") from None
    return found


def _survey(table: Any, input: str, label: str, numeric: bool, where: str) -> dict[str, Any]:
    """One pass over the label column (and a numeric input's), read as Arrow columns (no Python objects):
    rows, largest class, real labels, class names (labels that are strings), mean, std."""
    import pyarrow as pa

    columns = [label, input] if numeric else [label]
    rows, top, real, total, squares, count = 0, -1, False, 0.0, 0.0, 0
    names: set[Any] = set()
    try:
        for chunk in table.select_columns(columns).with_format("arrow").iter(batch_size=SURVEY_ROWS):
            marks = chunk.column(label)
            rows += len(marks)
            if pa.types.is_string(marks.type) or pa.types.is_large_string(marks.type):
                names.update(marks.unique().to_pylist())
            else:
                labels = _numbers(marks)
                real = real or labels.dtype.kind == "f"
                top = max(top, int(labels.max())) if len(labels) and not real else top
            if numeric:
                values = _numbers(chunk.column(input)).astype(np.float64)
                total, squares, count = total + values.sum(), squares + (values**2).sum(), count + values.size
    except (KeyError, ValueError, TypeError) as err:
        raise FileReadError(f"hf: the rows of '{where}' cannot be read as columns {columns} ({err})") from None
    if rows == 0:
        raise KdforgeError(f"hf: '{where}' has no rows")
    mean = total / max(count, 1)
    std = max(float(np.sqrt(max(squares / max(count, 1) - mean**2, 0.0))), 1e-8)
    found = class_names(np.array(sorted(names, key=str), dtype=object), label, where) if names else None
    return {"rows": rows, "classes": top + 1, "regression": real, "scaling": (float(mean), std), "names": found}


def _numbers(column: Any) -> np.ndarray:
    """An Arrow column of numbers, or of lists of numbers (flattened), as one NumPy array."""
    import pyarrow as pa

    column = column.combine_chunks()
    while (
        pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type)
    ):
        column = column.flatten()
    return column.to_numpy(zero_copy_only=False)


def streamed(
    path: str,
    hub: HubDataset,
    input: str,
    label: str,
    val: str | None,
    test: str | None,
    split_column: str | None,
    image: ImageOptions | dict[str, Any] | None,
    standardize: bool,
    buffer: int,
) -> DataBundle:
    """The ``hf`` dataset with ``streaming: true`` (see the module docstring)."""
    import datasets

    tables = stream_splits(path, hub, val, test, split_column)
    first = next(tables["train"].iter(batch_size=1), None)
    if first is None:
        raise KdforgeError(f"hf: '{path}' has no training rows")
    for column in (input, label):
        if column not in first:
            raise KdforgeError(f"hf: '{path}' has no column '{column}'; its columns: {', '.join(first)}")
    features = tables["train"].features
    is_image = features is not None and isinstance(features.get(input), datasets.Image)
    if is_image:  # decoded in the workers, and only the rows a worker makes batches of
        tables = {s: t.cast_column(input, datasets.Image(decode=False)) for s, t in tables.items()}
    survey = _survey(tables["train"], input, label, not is_image and standardize, path)
    if is_image:
        prepare_train, prepare_eval, shape, scaling = image_inputs(image)
    else:
        shape = tuple(np.asarray(first[input][0], dtype=np.float32).shape) or (1,)
        scaling = survey["scaling"] if standardize else (0.0, 1.0)
        prepare_train = prepare_eval = Numbers(scaling, shape)
    rows, names = {"train": survey["rows"]}, survey["names"]
    for split in ("val", "test"):
        held = _survey(tables[split], input, label, False, f"{path} ({split})")
        rows[split] = held["rows"]
        if names is not None:
            check_known_names(names, set(held["names"] or ()), split, label, path)
    labels = Labels(names)
    splits = {
        s: StreamSplit(
            HFStream(t, rows[s], input, label, prepare_train if s == "train" else prepare_eval, buffer, labels)
        )
        for s, t in tables.items()
    }
    feature = features.get(label) if features is not None else None
    names = names or getattr(feature, "names", None)
    classes = len(names) if names else (1 if survey["regression"] else survey["classes"])
    return DataBundle(
        Path(path).stem or "hf",
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=classes,
        input_shape=shape,
        scaling=scaling,
        class_names=list(names) if names else None,
    )
