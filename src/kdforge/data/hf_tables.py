"""Hugging Face tables on disk, and their cells as tensors: what the ``hf`` dataset reads whether it maps its
tables (:mod:`kdforge.data.hf`) or streams them (:mod:`kdforge.data.hf_stream`), and the text datasets too.

A table is a ``save_to_disk`` folder or data files (``.parquet``, ``.arrow``, ``.jsonl``/``.json``, ``.csv``: one
file, a glob or a folder of them). An image cell becomes a tensor like an ``image_folder`` image; a numeric cell
(a number or a list of numbers) a standardised float tensor.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch

from kdforge.data.bundle import SPLIT_NAMES
from kdforge.data.folders import ImageOptions, image_transforms
from kdforge.errors import KdforgeError
from kdforge.files import FileReadError
from kdforge.pretrained import hub_problem, is_hub_id, note, unpinned

FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}


class Labels:
    """A label cell as a tensor: a number as it is; a class name as its index among ``names`` (sorted, as a
    ``datasets.ClassLabel`` numbers them)."""

    def __init__(self, names: list[str] | None = None):
        self.index = {name: i for i, name in enumerate(names)} if names is not None else None

    def __call__(self, value: Any) -> torch.Tensor:
        return torch.tensor(self.index[value] if self.index is not None else value)

    def indices(self, column: np.ndarray) -> np.ndarray:
        """A whole column of labels as class indices (numbers pass as they are)."""
        if self.index is None:
            return column
        return np.fromiter((self.index[v] for v in column.tolist()), dtype=np.int64, count=len(column))


def class_names(labels: np.ndarray, column: str, path: str) -> list[str] | None:
    """The sorted class names of a column of string labels (None: the labels are numbers); a label that is no
    name (empty, missing, a number among names) is refused, naming its row."""
    if labels.dtype.kind not in "UO":
        return None
    bad = next((i for i, v in enumerate(labels.tolist()) if not isinstance(v, str) or not v.strip()), None)
    if bad is not None:
        raise KdforgeError(
            f"hf: the label column '{column}' of '{path}' holds class names, but row {bad} holds "
            f"{labels[bad]!r}: give every row a class name (or drop it)"
        )
    return sorted(set(labels.tolist()))


def check_known_names(names: list[str], found: set[str], split: str, column: str, path: str) -> None:
    """Refuse a held-out split's class names that the training split does not have (no model could predict them)."""
    if unknown := sorted(found - set(names)):
        shown = ", ".join(repr(n) for n in unknown[:6]) + (", ..." if len(unknown) > 6 else "")
        raise KdforgeError(
            f"hf: the {split} split of '{path}' has label(s) {shown} in '{column}' that no training row has; the "
            f"classes are those of the training rows ({len(names)}: {', '.join(names[:8])}"
            f"{', ...' if len(names) > 8 else ''})"
        )


def check_split_marks(marks: set[str], column: str, path: str) -> None:
    """Refuse values of the ``split_column`` that name no split (their rows would be dropped unseen)."""
    known = {name for names in SPLIT_NAMES.values() for name in names}
    if unknown := sorted(marks - known):
        shown = ", ".join(repr(m) for m in unknown[:6]) + (", ..." if len(unknown) > 6 else "")
        raise KdforgeError(
            f"hf: the split_column '{column}' of '{path}' holds {shown}, which name(s) no split; its values must be "
            f"{', '.join(sorted(known))}: rename those rows' splits or drop the rows"
        )


@dataclass(frozen=True)
class HubDataset:
    """Which version of a hub dataset: its configuration (a subset: ``name`` in ``load_dataset``) and revision."""

    config: str | None = None
    revision: str | None = None


class DatasetName(pydantic.BaseModel):
    """A hub dataset among a text dataset's ``files``, with its subset and version:
    ``{path: Salesforce/wikitext, config: wikitext-2-raw-v1, revision: main}``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    path: str
    config: str | None = None
    revision: str | None = None


#: one of a text dataset's ``files``: a file, a folder, or a hub dataset (its id, or a :class:`DatasetName`)
DataFile = str | DatasetName


def named_table(entry: str | Path | DatasetName | dict[str, Any]) -> tuple[str, HubDataset] | None:
    """(hub id, version) when ``entry`` of ``files`` names a hub dataset rather than a file on this machine."""
    if isinstance(entry, DatasetName | dict):
        name = DatasetName.model_validate(entry)
        return name.path, HubDataset(name.config, name.revision)
    path = str(entry)
    if Path(path).suffix in (*FORMATS, ".txt") or not is_hub_id(path):
        return None
    return path, HubDataset()


def hub_dataset(path: str, hub: HubDataset, streaming: bool = False) -> Any:
    """The splits of the hub dataset ``path`` (a dict of them): prepared as memory-mapped Arrow files in the
    ``datasets`` cache (read from there offline), or with ``streaming`` read from the hub as streams. Recorded
    (for ``results.json``) with the commit it resolved to."""
    import datasets
    from huggingface_hub import constants

    what = "Hugging Face dataset"
    path, revision = unpinned(path, hub.revision, what)
    hub = HubDataset(hub.config, revision)
    cache = f"{datasets.config.HF_DATASETS_CACHE}, its files in {constants.HF_HUB_CACHE}"
    try:
        builder = datasets.load_dataset_builder(path, name=hub.config, revision=hub.revision)
        if streaming:
            found = builder.as_streaming_dataset()
        else:
            builder.download_and_prepare()
            found = builder.as_dataset()
    except datasets.exceptions.DatasetNotFoundError as err:
        raise hub_problem(err, path, what, hub.revision, local=False, missing=True, cache=cache) from None
    except (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetGenerationError) as err:
        raise hub_problem(err, path, what, hub.revision, local=False, cache=cache) from None
    config = {"config": hub.config} if hub.config else {}
    commit = builder.hash or hub.revision or "main"
    note({"id": path, "what": what, **config, "revision": hub.revision or "main", "commit": commit,
          "path": str(builder.cache_dir)})  # fmt: skip
    return found


def load_table(path: str, hub: HubDataset | None = None) -> Any:
    """A ``save_to_disk`` folder, data files (a file, a glob or a folder of them) as one table, or a hub dataset's
    splits (``path`` an id, ``hub`` its configuration and revision)."""
    import datasets

    if is_hub_id(path):
        return hub_dataset(path, hub or HubDataset())
    if hub is not None and hub != HubDataset():
        raise KdforgeError(f"hf: config and revision choose a version of a hub dataset; '{path}' is on this machine")
    if saved_to_disk(path):
        try:
            return datasets.load_from_disk(path)
        except (OSError, ValueError, FileNotFoundError) as err:
            raise FileReadError(f"hf: '{path}' is not a readable save_to_disk folder ({err})") from None
    kind, files = data_files(path)
    try:
        return datasets.load_dataset(kind, data_files=files, split="train")
    except (OSError, ValueError, datasets.exceptions.DatasetGenerationError) as err:
        reason = "they hold no rows" if no_rows(kind, files) else str(err).splitlines()[0]
        raise FileReadError(f"hf: the data files '{path}' cannot be read ({reason})") from None


def no_rows(kind: str, files: list[str]) -> bool:
    """Whether data files hold no rows at all (``datasets`` fails on them with a message that does not say so)."""
    import pyarrow.parquet as pq

    def rows(file: str) -> int:
        if kind == "parquet":
            return pq.ParquetFile(file).metadata.num_rows
        lines = [line for line in Path(file).read_text(errors="replace").splitlines() if line.strip()]
        return len(lines) - (kind == "csv")  # a CSV's first line names its columns

    try:
        return all(rows(file) <= 0 for file in files)
    except (OSError, ValueError):  # unreadable: the error that brought us here says more
        return False


def saved_to_disk(path: str) -> bool:
    """Whether ``path`` is a folder written by ``save_to_disk``."""
    return (Path(path) / "dataset_dict.json").is_file() or (Path(path) / "dataset_info.json").is_file()


def data_files(path: str) -> tuple[str, list[str]]:
    """The format (a ``datasets`` builder name) and the files of data files given as a file, a glob or a
    folder of them, all of one format."""
    folder = Path(path)
    files = sorted(folder.iterdir()) if folder.is_dir() else sorted(folder.parent.glob(folder.name))
    kinds = {FORMATS[f.suffix] for f in files if f.suffix in FORMATS}
    if not files or len(kinds) != 1:
        raise KdforgeError(
            f"hf: '{path}' is neither a save_to_disk folder nor data files of one format "
            f"({', '.join(sorted(FORMATS))}); found {', '.join(f.name for f in files[:5]) or 'nothing'}"
        )
    return kinds.pop(), [str(f) for f in files if f.suffix in FORMATS]


class Picture:
    """An image cell in the dataset's colour mode, transformed: a PIL image, or (a stream's cell, not yet
    decoded) its encoded bytes or file path."""

    def __init__(self, transform: Callable[[Any], torch.Tensor], mode: str):
        self.transform, self.mode = transform, mode

    def __call__(self, picture: Any) -> torch.Tensor:
        if isinstance(picture, dict):
            picture = decode(picture)
        return self.transform(picture.convert(self.mode))


def decode(cell: dict[str, Any]) -> Any:
    from PIL import Image, UnidentifiedImageError

    source = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell.get("path")
    try:
        picture = Image.open(source)  # type: ignore[arg-type]  # a cell with neither is a TypeError below
        picture.load()
    except (UnidentifiedImageError, OSError, TypeError) as err:
        raise FileReadError(f"hf: an image cell ({cell.get('path') or 'bytes'}) cannot be decoded: {err}") from None
    return picture


class Numbers:
    """A numeric cell (a number or a list of numbers) as a standardised float tensor of ``shape``."""

    def __init__(self, scaling: tuple[float, float], shape: tuple[int, ...]):
        self.scaling, self.shape = scaling, shape

    def __call__(self, value: Any) -> torch.Tensor:
        mean, std = self.scaling
        return (torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(self.shape) - mean) / std


Inputs = tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor], tuple[int, ...], tuple[float, float]]


def image_inputs(given: ImageOptions | dict[str, Any] | None) -> Inputs:
    """(training and evaluation transforms, input shape, scaling) of an image column."""
    options = ImageOptions.model_validate(given or {})
    train, evaluate, _ = image_transforms(options)
    channels, size = options.channels, options.image_size
    mode = "RGB" if channels == 3 else "L"
    return Picture(train, mode), Picture(evaluate, mode), (channels, size, size), (options.mean, options.std)
