"""Token windows for language-model distillation: the ``text_lm`` dataset.

Documents (the full docstrings of installed modules, built offline and deterministically, or
users' .txt / .jsonl / .csv texts, one document per line or row) are shuffled by the seed and
split *by document* into train / val / test, so no text leaks between splits (or split as the user's
``data.split_file`` says, by document index; or val / test read from files of their own). Each split's
documents are joined (the tokenizer's end-of-text token between) into one token stream, cut into windows of
``length + 1`` tokens that overlap by one: inputs are a window's first ``length`` tokens,
targets its last ``length`` (the next token at every position); the last window is padded,
its padded targets marked ``PAD_TARGET`` so that they count nowhere.

Tokenizers: ``bytes`` (UTF-8 bytes, ids 0-255: any text, no vocabulary file, no end-of-text token: a blank line
joins its documents) or a Hugging Face tokenizer, a folder or a hub id (the teacher's own).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np
import torch

from kdforge.data.bundle import DATASETS, PAD_TARGET, DataBundle, Split, split_rows
from kdforge.data.hf_tables import DataFile
from kdforge.data.text import DEFAULT_MODULES, docstrings, read_texts
from kdforge.errors import KdforgeError
from kdforge.pretrained import load_pretrained


class Tokenizer(Protocol):
    vocab_size: int
    end_of_text: int | None  # the id that ends a document, if the tokenizer has one

    def encode(self, text: str) -> list[int]: ...

    def encode_all(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """Each token's share of the text: joined, the row's text (a token that ends inside a character adds
        nothing; the character goes to the token that completes it)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as token ids 0-255."""

    vocab_size = 256
    end_of_text = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_all(self, texts: list[str]) -> list[list[int]]:
        return [list(text.encode("utf-8")) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def pieces(self, ids: Iterable[int]) -> list[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return [decoder.decode(bytes([int(i)])) for i in ids]


class HFTokenizer:
    """A Hugging Face tokenizer from a local folder or a hub id (no special tokens added)."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.inner = load_pretrained(AutoTokenizer.from_pretrained, path, "tokenizer")
        self.vocab_size, self.end_of_text = len(self.inner), self.inner.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text, add_special_tokens=False)

    def encode_all(self, texts: list[str]) -> list[list[int]]:  # in one call: a fast tokenizer's Rust batch
        return self.inner(texts, add_special_tokens=False)["input_ids"] if texts else []

    def decode(self, ids: Iterable[int]) -> str:
        return self.inner.decode([int(i) for i in ids])

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return token_pieces(self.inner, ids)


def token_pieces(tokenizer: Any, ids: Iterable[int]) -> list[str]:
    """Each token's share of the text, decoded as a stream (spaces and characters split across tokens come out
    where a whole decode puts them), by a Hugging Face fast tokenizer. Special tokens (padding, a chat template's
    roles) add no text: they stand for nothing another tokenizer could read."""
    from tokenizers.decoders import DecodeStream

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise KdforgeError(f"{type(tokenizer).__name__} is not a fast tokenizer: save the folder with a tokenizer.json")
    stream = DecodeStream(skip_special_tokens=True)
    return [stream.step(backend, int(i)) or "" for i in ids]


def text_readers(decode: Callable[[list[int]], str], pieces: Callable[[list[int]], list[str]]) -> dict[str, Any]:
    """A language-model bundle's ``decode`` (token rows -> texts) and ``token_texts`` (token rows -> each
    token's text); packed rows [B, 2, T] are read by their ids."""

    def ids(rows: torch.Tensor) -> list[list[int]]:
        return [(row[0] if row.dim() == 2 else row).tolist() for row in rows.cpu()]

    return {
        "decode": lambda rows: [decode(row) for row in ids(rows)],
        "token_texts": lambda rows: [pieces(row) for row in ids(rows)],
    }


def load_lm_tokenizer(name: str) -> Tokenizer:
    return ByteTokenizer() if name == "bytes" else HFTokenizer(name)


def stop_ids(
    tokenizer: Tokenizer, stop: list[str] | None, end_of_turn: int | None = None, key: str = "data.stop"
) -> list[int]:
    """The token ids at which written text ends: those of ``stop`` (each the text of one token of the vocabulary,
    such as ``<|im_end|>``), by default the tokenizer's end-of-text token and ``end_of_turn`` (chat data's)."""
    if stop is None:
        return sorted({i for i in (tokenizer.end_of_text, end_of_turn) if i is not None})
    ids = []
    for text in stop:
        encoded = tokenizer.encode(text)
        if len(encoded) != 1:
            raise KdforgeError(
                f"{key}: '{text}' is {len(encoded)} tokens of this tokenizer, not one; give the text of a single "
                "token (an end-of-text or end-of-turn token, such as <|im_end|>)"
            )
        ids.append(encoded[0])
    return ids


def lm_documents(
    files: list[DataFile] | None = None,
    modules: list[str] | None = None,
    file_encoding: str = "utf-8",
    text_column: str = "text",
) -> list[str]:
    """Users' texts (one document per line or row, decoded with ``file_encoding``; ``text_column`` of
    .jsonl, .csv and Hugging Face data), or the docstrings of ``modules`` (deduplicated, sorted)."""
    if files:
        return [text for f in files for text in read_texts(f, file_encoding, text_column)]
    return sorted(set(docstrings(modules or DEFAULT_MODULES)))


def drawn_documents(
    documents: list[str],
    fixed: dict[str, list[str]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_chars: int | None,
) -> dict[str, list[str]]:
    """The splits drawn from ``documents`` (train, and val / test unless ``fixed``): the user's document indices
    (``data.split_file``, used as given), or shuffled by ``seed``, cut to ``max_chars``, test first, then val."""
    wanted = {name: share for name, share in (("val", val_fraction), ("test", test_fraction)) if name not in fixed}

    def shuffled(_: np.ndarray, shares: tuple[float, ...], seed: int) -> list[np.ndarray]:
        order = np.random.default_rng(seed).permutation(len(documents))
        if max_chars is not None:
            sizes = np.cumsum([len(documents[i]) + 2 for i in order])
            order = order[: max(int(np.searchsorted(sizes, max_chars)), len(shares) + 1)]
        counts = [max(1, round(share * len(order))) for share in shares]
        if len(order) - sum(counts) < 1:
            raise KdforgeError(f"text_lm: {len(order)} documents are too few to split into train/val/test")
        at, held = 0, {}
        for part in reversed(range(len(shares))):  # test comes first in the order, then val
            held[part], at = order[at : at + counts[part]], at + counts[part]
        return [order[at:], *(held[part] for part in range(len(shares)))]

    index = split_rows(np.zeros(len(documents)), wanted, seed, draw=shuffled)
    return {name: [documents[i] for i in rows] for name, rows in zip(["train", *wanted], index)}


def joined(tokenizer: Tokenizer, documents: list[str], separator: str | None) -> list[int]:
    """One token stream of ``documents``, ``separator`` between each two: the tokenizer's end-of-text token by
    default (a blank line for a tokenizer without one), else that text's tokens."""
    if separator is None and tokenizer.end_of_text is not None:
        between = [tokenizer.end_of_text]
    else:
        between = tokenizer.encode("\n\n" if separator is None else separator)
    stream: list[int] = []
    for at, ids in enumerate(tokenizer.encode_all(documents)):
        stream.extend(between if at else [])
        stream.extend(ids)
    return stream


def windows(ids: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, next tokens), each [N, length], from consecutive windows of a token stream.
    The last window keeps the stream's tail: past its end, inputs are 0 and targets
    ``PAD_TARGET``, which no term or metric counts."""
    if len(ids) < 2:
        raise KdforgeError(f"text_lm: a split has {len(ids)} tokens, too few to predict a next one; give more text")
    count = -(-(len(ids) - 1) // length)
    x = torch.zeros(count * length, dtype=torch.long)
    y = torch.full((count * length,), PAD_TARGET, dtype=torch.long)
    x[: min(len(ids), len(x))] = torch.tensor(ids[: len(x)])
    y[: len(ids) - 1] = torch.tensor(ids[1:])
    return x.view(count, length), y.view(count, length)


@DATASETS.register("text_lm")
def text_lm(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    files: list[DataFile] | None = None,
    modules: list[str] | None = None,
    val_files: list[DataFile] | None = None,
    test_files: list[DataFile] | None = None,
    length: int = 128,
    tokenizer: str = "bytes",
    max_chars: int | None = 2_000_000,
    file_encoding: str = "utf-8",
    text_column: str = "text",
    separator: str | None = None,
    stop: list[str] | None = None,
) -> DataBundle:
    """Next-token windows of ``length`` tokens (see the module docstring). ``val_files`` / ``test_files``: fixed
    validation / test documents (the other splits are drawn from ``files``); ``max_chars`` keeps the first drawn
    documents (after shuffling) up to that many characters (``null``: all); ``file_encoding`` decodes the files;
    ``text_column``: the texts' field in .jsonl, .csv and Hugging Face data (.parquet, .arrow, save_to_disk
    folders); ``separator``: the text between two documents of a split (default: the tokenizer's end-of-text token,
    or a blank line for a tokenizer without one); ``stop``: the tokens that end what a model writes after this data
    (default: the tokenizer's end-of-text token)."""
    read = lambda given: lm_documents(given, None, file_encoding, text_column)  # noqa: E731
    fixed = {name: read(given) for name, given in (("val", val_files), ("test", test_files)) if given}
    parts = {**drawn_documents(lm_documents(files, modules, file_encoding, text_column), fixed, val_fraction,
                               test_fraction, seed, max_chars), **fixed}  # fmt: skip
    tok = load_lm_tokenizer(tokenizer)
    stop_ids(tok, stop)  # checked now: each a token of the vocabulary
    splits = {name: Split(*windows(joined(tok, docs, separator), length)) for name, docs in parts.items()}
    return DataBundle(
        "text_lm",
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=tok.vocab_size,
        input_shape=(length,),
        kind="lm",
        **text_readers(tok.decode, tok.pieces),
    )
