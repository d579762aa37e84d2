"""What a dataset gives the rest of kdforge: three splits plus the facts models need."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.errors import KdforgeError
from kdforge.registry import DATASETS

#: A language-model target position that no loss term or metric counts (PyTorch's
#: ``ignore_index`` convention): the padding after the end of a split's last window.
PAD_TARGET = -100

#: tasks whose targets are a class per position, [N, T] with PAD_TARGET where a position has none: their losses
#: and metrics count every real position (language modelling, and token classification: a tag per word)
PER_TOKEN_TASKS = ("lm", "token_classification")

#: the names a user's own split goes by (folders, a DatasetDict's keys, a split column's values)
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid", "dev"), "test": ("test",)}


@dataclass
class Split:
    """An in-memory split: inputs ``x`` [N, ...] and targets ``y`` [N] (or [N, T], a target per position).
    ``pad``: ``x`` holds rows of token ids padded at their end with this id, and each batch is cut to its longest
    row (dynamic padding: a batch of short texts is short), with its per-position targets."""

    x: torch.Tensor
    y: torch.Tensor
    pad: int | None = None

    def __len__(self) -> int:
        return len(self.y)

    def first(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets of the first ``n`` samples (shape probes, examples)."""
        return self.x[:n], self.y[:n]


@dataclass
class DatasetSplit:
    """A split read sample by sample (from disk, in DataLoader workers): ``dataset[i]`` is
    (input tensor, target). ``labels``: each sample's class, known without reading the sample
    (for stratified splits and class counts); None when the dataset cannot tell. ``on_device``:
    what turns a batch of the samples into model inputs once on the device (uint8 images ->
    normalised floats)."""

    dataset: Dataset
    labels: np.ndarray | None = None
    on_device: Callable[[torch.Tensor], torch.Tensor] | None = None  # applied to each batch on the device

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def first(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        samples = [self.dataset[i] for i in range(min(n, len(self)))]
        x = torch.stack([x for x, _ in samples])
        return self.on_device(x) if self.on_device else x, torch.stack([torch.as_tensor(y) for _, y in samples])


class Stream(Protocol):
    """What a streamed split reads from: its rows in order, never by index (files larger than memory)."""

    def __len__(self) -> int: ...

    def chunks(self, epoch: int, size: int, shuffle: bool, seed: int) -> Iterator[list[Any]]:
        """The epoch's rows, raw (undecoded), ``size`` at a time; shuffled (seeded by ``seed`` and ``epoch``)
        when asked."""
        ...

    def prepare(self, row: Any) -> tuple[torch.Tensor, Any]:
        """One raw row as (input tensor, target): decoded and transformed."""
        ...


@dataclass
class StreamSplit:
    """A split read as a stream (see :class:`Stream`): batches are consecutive rows of the epoch's order, so a
    stream has no sample index (no teacher cache, no stratified re-split)."""

    stream: Stream
    labels: None = None

    def __len__(self) -> int:
        return len(self.stream)

    def first(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = next(self.stream.chunks(0, n, False, 0))
        samples = [self.stream.prepare(row) for row in rows]
        return torch.stack([x for x, _ in samples]), torch.stack([torch.as_tensor(y) for _, y in samples])


AnySplit = Split | DatasetSplit | StreamSplit


def in_memory(split: AnySplit, needs: str) -> Split:
    """``split`` as an in-memory split, for what reads all of a split at once (``needs`` says what)."""
    if not isinstance(split, Split):
        raise KdforgeError(f"{needs} needs a dataset held in memory; this one is read from disk sample by sample")
    return split


@dataclass(frozen=True)
class TokenIds:
    """What token augmentation needs of a tokenizer: the ids it must never change (padding, [CLS], [SEP] and
    the other special tokens) and its mask token's id (None: it has none)."""

    special: tuple[int, ...]
    mask: int | None


@dataclass
class DataBundle:
    """Train/val/test splits of one dataset, and the shapes models are built from."""

    name: str
    train: AnySplit
    val: AnySplit
    test: AnySplit
    num_classes: int
    input_shape: tuple[int, ...]
    scaling: tuple[float, float] = (0.0, 1.0)  # (mean, std) the inputs were standardised with
    kind: str | None = None  # "embedding": no labels; the teacher's embeddings become the targets
    texts: dict[str, list[str]] | None = None  # split -> the texts its rows encode (text datasets)
    decode: Callable[[torch.Tensor], list[str]] | None = None  # input rows -> texts (text datasets)
    # token rows -> each token's share of the text (language models: a teacher with its own tokenizer aligns on it)
    token_texts: Callable[[torch.Tensor], list[list[str]]] | None = None
    # inputs without targets (regression: NaN targets) that only the distilled student trains on, with the
    # teacher's outputs as its only reference: the teacher and the student alone never see them. A dataset's
    # options that set them are named unlabelled_* (a trained teacher is reused whatever their values)
    unlabelled: Split | None = None
    labelled: int | None = None  # after with_unlabelled(): the training samples before the unlabelled ones
    class_names: list[str] | None = None  # each class's name, by index, where the data names them
    token_ids: TokenIds | None = None  # inputs that are rows of token ids: their tokenizer's special ids

    @property
    def task(self) -> str:
        """``embedding`` (set by the dataset), ``regression`` when the targets are real or
        complex values, else ``classification``."""
        if self.kind is not None:
            return self.kind
        y = self.targets_example
        return "regression" if y.is_floating_point() or y.is_complex() else "classification"

    def describe(self) -> str:
        return (
            f"{self.name}: train {self._train_count()}, val {len(self.val)}, test {len(self.test)}; "
            f"input {list(self.input_shape)}"
            + {
                "classification": f", {self.num_classes} classes",
                "embedding": ", targets: the teacher's embeddings",
            }.get(self.task, f", targets {list(self.targets_example.shape[1:])}")
        )

    def _train_count(self) -> str:
        """How many training samples, and how many of them come without targets."""
        if self.unlabelled is not None:
            return f"{len(self.train)} + {len(self.unlabelled)} unlabelled"
        if self.labelled is not None:
            return f"{self.labelled} + {len(self.train) - self.labelled} unlabelled"
        return str(len(self.train))

    def with_unlabelled(self) -> DataBundle:
        """This bundle with its unlabelled inputs appended to the training split (the distillation set)."""
        if self.unlabelled is None:
            return self
        train = in_memory(self.train, "unlabelled inputs")
        both = Split(torch.cat([train.x, self.unlabelled.x]), torch.cat([train.y, self.unlabelled.y]), train.pad)
        return dataclasses.replace(self, train=both, unlabelled=None, labelled=len(train))

    @functools.cached_property
    def targets_example(self) -> torch.Tensor:
        """The first training targets: their dtype and shape say what the task is (read once: from disk,
        a sample costs a decode)."""
        return self.train.first(1)[1]


def build_dataset(
    name: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    split_file: str | None = None,
    **options: Any,
) -> DataBundle:
    """Build a registered dataset, e.g. ``build_dataset("digits", image_size=32)``; ``split_file``: the
    user's own row indices for the splits the dataset would draw (see :func:`split_rows`)."""
    DATASETS.checked_options(name, options)
    given = GivenSplits.read(split_file) if split_file is not None else None
    token = _GIVEN.set(given)
    try:
        data = DATASETS.build(name, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, **options)
    finally:
        _GIVEN.reset(token)
    if given is not None and not given.used:
        raise KdforgeError(
            f"data.split_file '{split_file}': the {name} dataset draws no split (its splits are its own files or "
            "blocks); remove data.split_file"
        )
    return data


class GivenSplits:
    """The user's fixed split: row indices per split name, from a ``.json`` ({"train": [...], "val": [...],
    "test": [...]}) or ``.npz`` file, into the rows the dataset would otherwise split itself."""

    def __init__(self, path: str, parts: dict[str, Any]):
        self.path, self.parts, self.used = path, parts, False

    @classmethod
    def read(cls, path: str) -> GivenSplits:
        from kdforge.files import load_npz, read_json

        parts = load_npz(path, "split file") if str(path).endswith(".npz") else read_json(path, "split file")
        if not isinstance(parts, dict) or not parts:
            raise KdforgeError(f"data.split_file '{path}' must map split names (train, val, test) to row indices")
        return cls(path, parts)

    def take(self, names: list[str], rows: int) -> list[np.ndarray]:
        """The indices of ``names`` (train first, each in row order), checked against the ``rows`` being split."""
        where = f"data.split_file '{self.path}'"
        if extra := sorted(set(self.parts) - set(names)):
            raise KdforgeError(
                f"{where} gives {', '.join(extra)}, but this dataset takes that split from its own files; give "
                f"only {', '.join(names)}"
            )
        if missing := [n for n in names if n not in self.parts]:
            raise KdforgeError(f"{where} has no {', '.join(missing)} indices; give {', '.join(names)}")
        taken = []
        for name in names:
            index = np.asarray(self.parts[name])
            if index.ndim != 1 or (len(index) and index.dtype.kind not in "iu"):
                raise KdforgeError(f"{where}: '{name}' must be a list of whole numbers (row indices)")
            index = index.astype(np.int64)
            if len(index) and (index.min() < 0 or index.max() >= rows):
                raise KdforgeError(
                    f"{where}: '{name}' holds row {int(index.max() if index.max() >= rows else index.min())}, but "
                    f"the rows to split are 0 to {rows - 1}"
                )
            if name == "train" and not len(index):
                raise KdforgeError(f"{where}: 'train' is empty")
            taken.append(np.sort(index))
        joined = np.concatenate(taken)
        if len(np.unique(joined)) != len(joined):
            raise KdforgeError(f"{where}: some rows are in more than one split (or twice in one)")
        self.used = True
        return taken


_GIVEN: contextvars.ContextVar[GivenSplits | None] = contextvars.ContextVar("given_splits", default=None)


def split_rows(
    labels: np.ndarray,
    wanted: dict[str, float],
    seed: int,
    draw: Callable[[np.ndarray, tuple[float, ...], int], list[np.ndarray]] | None = None,
) -> list[np.ndarray]:
    """Indices of the training rows and of each ``wanted`` split (name -> share of the whole), in that
    order: the user's own (``data.split_file``) when given, else drawn by ``draw`` (default
    :func:`stratified_split` by ``labels``), seeded."""
    given = _GIVEN.get()
    if given is not None:
        return given.take(["train", *wanted], len(labels))
    return (draw or stratified_split)(labels, tuple(wanted.values()), seed)


def stratified_split(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices of ``len(fractions) + 1`` disjoint parts, class-stratified and seeded.

    ``fractions`` are shares of the whole for all parts but the first, which takes the rest. A part
    too small to hold every class (or a class with a single sample) cannot be stratified: that part
    is then drawn at random, seeded all the same.
    """
    from sklearn.model_selection import (
        train_test_split,
    )  # scikit-learn imports in about a second: only datasets that split pay for it

    rest = np.arange(len(y))
    parts: list[np.ndarray] = []
    remaining = 1.0
    for fraction in fractions:
        share = fraction / remaining
        counts = np.unique(y[rest], return_counts=True)[1]
        n_part = math.ceil(share * len(rest))  # as scikit-learn counts it
        stratifiable = counts.min() >= 2 and min(n_part, len(rest) - n_part) >= len(counts)
        rest, part = train_test_split(
            rest, test_size=share, random_state=seed, stratify=y[rest] if stratifiable else None
        )
        parts.append(np.sort(part))
        remaining -= fraction
    return [np.sort(rest), *parts]


def standardise(train: torch.Tensor, *others: torch.Tensor) -> tuple[list[torch.Tensor], tuple[float, float]]:
    """Scale all splits by the train split's mean and std (no statistics from val/test);
    returns the splits and (mean, std), so a teacher can undo the scaling."""
    mean, std = train.mean(), train.std().clamp_min(1e-8)
    return [(t - mean) / std for t in (train, *others)], (float(mean), float(std))
