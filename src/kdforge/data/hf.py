"""Hugging Face ``datasets``: the ``hf`` dataset.

``path`` is a hub id (``ylecun/mnist``, at ``revision``, subset ``config``: prepared by ``datasets`` in its
cache and read from there offline), a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``
of splits), or data files — ``.parquet``, ``.arrow``, ``.jsonl``/``.json``, ``.csv`` — one file, a glob or a
folder of them. The tables stay memory-mapped Arrow files: rows are read
(and images decoded) in DataLoader workers as training asks for them, so memory is flat in the
number of rows.

Splits, the first that applies: the dataset's own (a ``DatasetDict``'s ``train``, ``validation``
/ ``val`` / ``valid`` / ``dev``, ``test``); ``split_column`` (rows marked ``train``, ``val`` /
``validation``, ``test``); the ``val`` / ``test`` options (files of their own); a missing split
is cut from the training rows, stratified by class and seeded.

The ``input`` column is an image (a ``datasets.Image`` feature: resized, cropped, flipped and
normalised like ``image_folder``, with the ``image`` options) or numbers (a number or a list of
numbers per row: standardised by the training rows' mean and std). The ``label`` column holds
classes (a ``ClassLabel``, whole numbers, or names: strings, numbered in sorted order and recorded as the data's
``class_names``) or, for a regression, real values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.bounds import AtLeastOne, needs
from kdforge.data.arrays import chunked_mean_std
from kdforge.data.bundle import DATASETS, SPLIT_NAMES, DataBundle, DatasetSplit, split_rows
from kdforge.data.folders import ImageOptions
from kdforge.data.hf_stream import streamed
from kdforge.data.hf_tables import (
    HubDataset,
    Inputs,
    Labels,
    Numbers,
    check_known_names,
    check_split_marks,
    class_names,
    image_inputs,
    load_table,
)
from kdforge.errors import KdforgeError


class HFRows(Dataset):
    """Rows of a ``datasets.Dataset``: ``[i]`` -> (the input column as a tensor, the label)."""

    def __init__(self, table: Any, input: str, label: str, prepare: Callable[[Any], torch.Tensor], labels: Labels):
        self.table, self.input, self.label, self.prepare, self.labels = table, input, label, prepare, labels

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.table[index]
        return self.prepare(row[self.input]), self.labels(row[self.label])


class _Column:
    """One numeric column, indexed by rows like an array (for :func:`chunked_mean_std`)."""

    def __init__(self, table: Any, name: str):
        self.table, self.name = table, name

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.table[rows.tolist()][self.name], dtype=np.float64)


@DATASETS.register("hf", rules=[needs("shuffle_buffer", "streaming", "is how many streamed rows are shuffled")])
def hf(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    input: str = "image",
    label: str = "label",
    val: str | None = None,
    test: str | None = None,
    split_column: str | None = None,
    image: ImageOptions | None = None,
    standardize: bool = True,
    streaming: bool = False,
    shuffle_buffer: AtLeastOne = 10_000,
    config: str | None = None,
    revision: str | None = None,
) -> DataBundle:
    """A Hugging Face dataset (see the module docstring): ``path`` a hub id (``config`` and ``revision``
    choose its subset and version), a ``save_to_disk`` folder or data files; ``input`` and ``label`` the
    columns; ``val``/``test`` files of their own; ``split_column`` the column that names each row's split;
    ``image`` the image options of ``image_folder`` (``image_size``, ``channels``, ``train_crop``,
    ``min_scale``, ``flip``, ``mean``, ``std``) for an image column; ``standardize`` numeric inputs by the
    training rows; ``streaming`` reads the splits as streams (:mod:`kdforge.data.hf_stream`; a hub dataset
    from the hub, with no local copy), shuffled through ``shuffle_buffer`` rows."""
    hub = HubDataset(config, revision)
    if streaming:
        return streamed(path, hub, input, label, val, test, split_column, image, standardize, shuffle_buffer)
    tables = table_splits(path, hub, val, test, split_column)
    first = tables["train"]
    for column in (input, label):
        if column not in first.column_names:
            raise KdforgeError(f"hf: '{path}' has no column '{column}'; its columns: {', '.join(first.column_names)}")
    found = labelled_splits(tables, {n: np.asarray(t[label]) for n, t in tables.items()}, label, path, seed,
                            {"val": val_fraction, "test": test_fraction})  # fmt: skip
    tables, regression = found.tables, found.regression
    is_image = type(first.features[input]).__name__ == "Image"
    prepare_train, prepare_eval, shape, scaling = (
        image_inputs(image) if is_image else _numeric_inputs(tables["train"], input, standardize)
    )
    splits = {
        name: DatasetSplit(
            HFRows(table, input, label, prepare_train if name == "train" else prepare_eval, found.mapping),
            None if regression else found.labels[name],
        )
        for name, table in tables.items()
    }
    return DataBundle(
        Path(path).stem or "hf",
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=found.classes,
        input_shape=shape,
        scaling=scaling,
        class_names=found.names,
    )


@dataclass
class LabelledSplits:
    """Every split of a table and its labels (class indices, or scores for a regression)."""

    tables: dict[str, Any]
    labels: dict[str, np.ndarray]
    mapping: Labels  # a label cell -> its class index
    names: list[str] | None  # the classes' names: the labels' own, or a ClassLabel's
    classes: int  # 1 for a regression
    regression: bool


def labelled_splits(
    tables: dict[str, Any],
    read: dict[str, np.ndarray],
    column: str,
    path: str,
    seed: int,
    fractions: dict[str, float],
) -> LabelledSplits:
    """The splits the data gives (``tables``, their label columns ``read``), with class names mapped to indices
    (a held-out split's checked against the training split's), and those it does not give drawn from the training
    rows (``fractions`` of the whole: stratified by class; a regression's at random)."""
    first = tables["train"]
    labels = read["train"]
    regression = labels.dtype.kind == "f"
    names = class_names(labels, column, path)
    if names is not None:
        for name, held in read.items():
            if name != "train":
                check_known_names(names, set(held.tolist()), name, column, path)
    mapping = Labels(names)
    found = {name: mapping.indices(held) for name, held in read.items()}
    every = found["train"]  # all the training rows', before any are drawn for val or test
    if wanted := [s for s in ("val", "test") if s not in tables]:
        strata = np.zeros(len(labels), dtype=np.int64) if regression else every  # scores: drawn at random
        parts = split_rows(strata, {s: fractions[s] for s in wanted}, seed)
        tables = {**tables, **{s: first.select(p) for s, p in zip(["train", *wanted], parts)}}
        found.update({s: every[p] for s, p in zip(["train", *wanted], parts)})  # read once, not per split
    names = names or getattr(first.features[column], "names", None)  # a ClassLabel's own names
    classes = len(names) if names else (1 if regression else int(every.max()) + 1)
    return LabelledSplits(tables, found, mapping, list(names) if names else None, classes, regression)


def table_splits(
    path: str, hub: HubDataset, val: str | None, test: str | None, split_column: str | None, dataset: str = "hf"
) -> dict[str, Any]:
    """The splits the data itself gives: {"train": ..., and "val" / "test" where given} (``dataset``: whose
    messages name the problems)."""
    import datasets

    found = load_table(path, hub)
    if isinstance(found, datasets.DatasetDict):
        named = {s: next((found[n] for n in names if n in found), None) for s, names in SPLIT_NAMES.items()}
        if named["train"] is None:
            raise KdforgeError(f"{dataset}: '{path}' has splits {', '.join(found)} but none named train")
        tables = {s: t for s, t in named.items() if t is not None}
    else:
        tables = {"train": found}
    if split_column is not None:
        table = tables["train"]
        if split_column not in table.column_names:
            raise KdforgeError(f"{dataset}: '{path}' has no column '{split_column}' (split_column)")
        marks = np.asarray(table[split_column]).astype(str)
        check_split_marks(set(np.unique(marks).tolist()), split_column, path)
        tables = {}
        for split, names in SPLIT_NAMES.items():
            rows = np.flatnonzero(np.isin(marks, names))
            if len(rows):
                tables[split] = table.select(rows)
        if "train" not in tables:
            raise KdforgeError(f"{dataset}: no row of '{path}' has {split_column} = train")
    for split, where in (("val", val), ("test", test)):
        if where is not None:
            tables[split] = load_table(where)
    return tables


def _numeric_inputs(table: Any, input: str, standardize: bool) -> Inputs:
    """(the same preparation twice, input shape, scaling) of a numeric column."""
    shape = tuple(np.asarray(table[0][input], dtype=np.float32).shape) or (1,)
    scaling = chunked_mean_std(_Column(table, input), np.arange(len(table))) if standardize else (0.0, 1.0)
    prepare = Numbers(scaling, shape)
    return prepare, prepare, shape, scaling
