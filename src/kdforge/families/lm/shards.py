"""Token shards: the ``tokens`` dataset, language-model training data as large corpora store it.

A shard is a flat binary file of token ids (``uint16`` for vocabularies up to 65,536, else
``uint32``), native byte order, no header: what nanoGPT-style preprocessing writes
(``train.bin``, ``val.bin``) and what billion-token corpora are cut into. Shards are
memory-mapped, never loaded: a window is read from the page cache when a worker asks for it,
so memory stays flat however large the corpus.

Each shard is cut into windows of ``length + 1`` tokens that overlap by one (inputs: the first
``length``, targets: the last ``length``); a shard's tail shorter than a window is left out,
and no window crosses from one shard into the next. Splits: ``val`` and ``test`` files (or
folders) when given, used as they are; otherwise the last windows of the corpus, as contiguous
blocks (``val_fraction``, then ``test_fraction`` at the very end), so that no text is shared
between splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from kdforge.bounds import AtLeastOne
from kdforge.data.bundle import DATASETS, DataBundle, DatasetSplit
from kdforge.errors import KdforgeError
from kdforge.families.lm.data import load_lm_tokenizer, text_readers
from kdforge.files import FileReadError, random_access

DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


class TokenWindows(Dataset):
    """Windows ``start`` to ``stop`` of the shards ``files``: ``[i]`` -> (inputs [length], next
    tokens [length]), int64. The memory maps are opened in each process on first use."""

    def __init__(self, files: list[Path], dtype: str, length: int, vocab_size: int, start: int = 0, stop: int = -1):
        self.files, self.dtype, self.length, self.vocab_size = files, np.dtype(DTYPES[dtype]), length, vocab_size
        tokens = [shard_tokens(f, self.dtype) for f in files]
        if max(tokens) < length + 1:  # a short shard among longer ones only gives no window, like every tail
            raise FileReadError(
                f"token shard(s) {_named(files)} hold {max(tokens)} tokens at most, fewer than the {length + 1} one "
                f"window needs (data.length {length}, plus the next token): give more tokens, or a shorter length"
            )
        counts = [(n - 1) // length for n in tokens]
        self.ends = np.cumsum(counts)  # window index where each shard's windows end
        self.start, self.stop = start, int(self.ends[-1]) if stop < 0 else stop
        self._maps: list[np.memmap] | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def part(self, start: int, stop: int) -> TokenWindows:
        """The windows ``start`` to ``stop`` of these (counted from this part's first)."""
        view = TokenWindows.__new__(TokenWindows)
        view.__dict__.update(self.__dict__, start=self.start + start, stop=self.start + stop, _maps=None)
        return view

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}  # workers open their own maps

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._maps is None:
            self._maps = [random_access(np.memmap(f, dtype=self.dtype, mode="r")) for f in self.files]
        window = self.start + index
        shard = int(np.searchsorted(self.ends, window, side="right"))
        first = (window - (int(self.ends[shard - 1]) if shard else 0)) * self.length
        tokens = torch.from_numpy(self._maps[shard][first : first + self.length + 1].astype(np.int64))
        if int(tokens.max()) >= self.vocab_size:
            raise FileReadError(
                f"token shard '{self.files[shard]}' holds id {int(tokens.max())} near token {first}, but the "
                f"vocabulary has {self.vocab_size}: check vocab_size, the tokenizer and dtype"
            )
        return tokens[:-1], tokens[1:]


def shard_tokens(file: Path, dtype: np.dtype) -> int:
    """How many tokens ``file`` holds; refused when its size is not a whole number of them."""
    if not file.is_file():
        raise FileReadError(f"token shard '{file}' not found")
    size = file.stat().st_size
    if size % dtype.itemsize:
        raise FileReadError(
            f"token shard '{file}' has {size} bytes, not a whole number of {dtype.name} tokens ({dtype.itemsize} "
            "bytes each): it is truncated, or its dtype is another"
        )
    return size // dtype.itemsize


def _named(files: list[Path]) -> str:
    shown = ", ".join(f"'{f}'" for f in files[:3])
    return shown + (f" and {len(files) - 3} more" if len(files) > 3 else "")


def shard_files(where: str | list[str], what: str) -> list[Path]:
    """The shards ``where`` names: files, or folders of ``*.bin`` files (sorted)."""
    found: list[Path] = []
    for entry in [where] if isinstance(where, str) else where:
        path = Path(entry)
        if path.is_dir():
            found += sorted(path.glob("*.bin"))
        elif path.is_file():
            found.append(path)
        else:
            raise KdforgeError(f"tokens: {what} '{path}' is neither a shard file nor a folder of .bin shards")
    if not found:
        raise KdforgeError(f"tokens: {what} '{where}' holds no .bin shards")
    return found


@DATASETS.register("tokens")
def tokens(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str | list[str],
    val: str | list[str] | None = None,
    test: str | list[str] | None = None,
    dtype: Literal["uint16", "uint32"] = "uint16",
    length: AtLeastOne = 128,
    vocab_size: AtLeastOne | None = None,
    tokenizer: str | None = None,
) -> DataBundle:
    """Language-model windows of ``length`` tokens from memory-mapped token shards (see the module
    docstring): ``path`` a shard or a folder of ``.bin`` shards (or a list); ``val``/``test`` your own
    held-out shards; ``dtype`` ``uint16`` or ``uint32``; the vocabulary from ``vocab_size`` or a local
    ``tokenizer`` folder (``bytes``: UTF-8 bytes), which also lets ``kdforge generate`` print text."""
    del seed  # the windows keep the corpus order; training shuffles them
    tok = load_lm_tokenizer(tokenizer) if tokenizer is not None else None
    vocab = vocab_size or (tok.vocab_size if tok is not None else None)
    if vocab is None:
        raise KdforgeError("tokens: give vocab_size (or a tokenizer folder the shards were made with)")
    corpus = TokenWindows(shard_files(path, "path"), dtype, length, vocab)
    held = {name: where for name, where in (("val", val), ("test", test)) if where is not None}
    parts = {name: TokenWindows(shard_files(where, name), dtype, length, vocab) for name, where in held.items()}
    cut = [name for name in ("val", "test") if name not in parts]  # drawn from the corpus's end
    sizes = {"val": round(val_fraction * len(corpus)), "test": round(test_fraction * len(corpus))}
    end = len(corpus)
    for name in reversed(cut):
        parts[name] = corpus.part(end - max(1, sizes[name]), end)
        end -= len(parts[name])
    if end < 1 or any(len(p) == 0 for p in parts.values()):
        shards = " and ".join(f"{name} shards" for name in cut)
        raise KdforgeError(
            f"tokens: the {len(corpus)} windows of {length + 1} tokens in {_named(corpus.files)} are too few to cut "
            f"{' and '.join(cut)} from and keep a training split; give more tokens, a shorter length"
            + (f", or {shards} of their own" if shards else "")
        )
    splits = {"train": corpus.part(0, end), **parts}
    return DataBundle(
        Path(corpus.files[0]).parent.name or "tokens",
        DatasetSplit(splits["train"]),
        DatasetSplit(splits["val"]),
        DatasetSplit(splits["test"]),
        num_classes=vocab,
        input_shape=(length,),
        kind="lm",
        **(text_readers(tok.decode, tok.pieces) if tok is not None else {}),
    )
