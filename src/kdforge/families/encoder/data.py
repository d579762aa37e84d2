"""Labelled text for encoders: ``text_classification`` (a text, or a pair of texts, and its class or score) and
``token_classification`` (words and a tag per word, as CoNLL data has them).

Both read a table: data files (``.csv``, ``.jsonl``, ``.parquet``, ``.arrow``: a file, a glob or a folder of them),
a ``save_to_disk`` folder or a hub dataset by id (prepared in the ``datasets`` cache, read from there offline), with
the splits it gives (a DatasetDict's, files of their own, a split column) and the others drawn, seeded. Each text
is tokenized once, by ``tokenizer`` (a folder or hub id; ``minilm``: the installed all-MiniLM-L6-v2's), cut to
``max_length`` tokens, and held as rows of token ids padded at their end: every batch is cut to its longest row
(dynamic padding, :class:`~kdforge.data.bundle.Split`), so a batch of short texts costs a short forward.
Sentence pairs are rows [2, T]: the ids and each token's segment (``token_type_ids``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import torch
from pydantic import NonNegativeInt, PositiveInt

from kdforge.data._docstrings import cache_folder, docstring_groups
from kdforge.data.bundle import PAD_TARGET, SPLIT_NAMES, DataBundle, Split, TokenIds, split_rows
from kdforge.data.hf import labelled_splits, table_splits
from kdforge.data.hf_tables import HubDataset
from kdforge.data.text import clean_sentences, load_tokenizer
from kdforge.errors import KdforgeError
from kdforge.files import write_text
from kdforge.registry import DATASETS


def encoder_tokenizer(name: str, dataset: str) -> Any:
    """A fast tokenizer that pads (its pad id ends every short row)."""
    tok = load_tokenizer(name)
    if not tok.is_fast:
        raise KdforgeError(f"{dataset}: tokenizer '{name}' is not a fast tokenizer; save it with a tokenizer.json")
    if tok.pad_token_id is None:
        raise KdforgeError(f"{dataset}: tokenizer '{name}' has no padding token; give one that pads (BERT-style)")
    return tok


def special_ids(tok: Any) -> TokenIds:
    """The ids token augmentation leaves alone (padding among them) and the mask token's."""
    return TokenIds(tuple(sorted({*tok.all_special_ids, tok.pad_token_id})), tok.mask_token_id)


def columns_present(table: Any, wanted: dict[str, str | None], dataset: str, path: str, split: str) -> None:
    """Refuse a table without one of the ``wanted`` columns (option -> column), naming the columns it has."""
    for option, column in wanted.items():
        if column is not None and column not in table.column_names:
            raise KdforgeError(
                f"{dataset}: the {split} split of '{path}' has no column '{column}' (data.{option}); its columns: "
                f"{', '.join(table.column_names)}"
            )
    if len(table) == 0:
        raise KdforgeError(f"{dataset}: the {split} split of '{path}' is empty")


def column_texts(table: Any, column: str, dataset: str, path: str, split: str) -> list[str]:
    """A text column as strings; a cell that holds no text (empty in a CSV, a number) is refused, naming its row."""
    values = list(table[column])
    if (bad := next((i for i, v in enumerate(values) if not isinstance(v, str)), None)) is not None:
        raise KdforgeError(
            f"{dataset}: row {bad} of the {split} split of '{path}' holds {values[bad]!r} in '{column}', not a text"
        )
    return values


def too_long(encoded: dict[str, list[list[int]]], tok: Any, max_length: int | None, dataset: str) -> None:
    """Without ``max_length``, refuse rows (each split's ids) that the tokenizer's model cannot read whole, saying
    how many."""
    limit = tok.model_max_length
    if max_length is not None or limit >= 1_000_000:  # cut to max_length, or a tokenizer that states no maximum
        return
    over = {split: sum(len(row) > limit for row in rows) for split, rows in encoded.items()}
    if count := sum(over.values()):
        longest = max(len(row) for rows in encoded.values() for row in rows)
        where = ", ".join(f"{split} {n}" for split, n in over.items() if n)
        raise KdforgeError(
            f"{dataset}: {count} row(s) are longer than the tokenizer's maximum of {limit} tokens ({where}; the "
            f"longest {longest}); set data.max_length ({limit} or less) to cut them"
        )


def padded(rows: list[list[int]], pad: int, width: int) -> np.ndarray:
    """Rows of ids as one [N, width] array, each padded at its end with ``pad``."""
    out = np.full((len(rows), width), pad, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def read_splits(
    path: str, hub: HubDataset, given: dict[str, str | None], drop: list[str], dataset: str
) -> dict[str, Any]:
    """The splits the data gives (``given``: val, test and split_column), less those named in ``drop``."""
    tables = table_splits(path, hub, given["val"], given["test"], given["split_column"], dataset)
    for name in drop:
        key = next((k for k, names in SPLIT_NAMES.items() if name in names), None)
        if key is None or key == "train":
            raise KdforgeError(f"{dataset}: data.drop_splits names '{name}'; give validation or test")
        tables.pop(key, None)
    return tables


def no_hidden_labels(read: dict[str, np.ndarray], column: str, path: str, dataset: str) -> None:
    """Refuse negative class indices: the labels a hub dataset hides (GLUE's test splits), which no loss can read."""
    for name, values in read.items():
        if values.dtype.kind in "iu" and (values < 0).any():
            raise KdforgeError(
                f"{dataset}: {int((values < 0).sum())} row(s) of the {name} split of '{path}' have a negative label "
                f"in '{column}' (no label, as GLUE's test splits have): add data.drop_splits: [{name}] to draw that "
                "split from the training rows"
            )


@DATASETS.register("text_classification")
def text_classification(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    tokenizer: str,
    text: str = "text",
    text_pair: str | None = None,
    label: str = "label",
    max_length: PositiveInt | None = None,
    val: str | None = None,
    test: str | None = None,
    split_column: str | None = None,
    drop_splits: list[str] | None = None,
    config: str | None = None,
    revision: str | None = None,
    unlabelled_path: str | None = None,
) -> DataBundle:
    """Texts (``text``, and ``text_pair`` for pairs, as NLI and paraphrase tasks have) and their ``label``: class
    indices or class names (sorted, recorded as the classes' names), or real scores (a regression, as STS-B's).
    See the module docstring for ``path``, ``tokenizer`` and ``max_length``; ``val``/``test``: files of their
    own; ``split_column``: the column naming each row's split; ``drop_splits``: the data's own splits to leave out
    and draw from the training rows instead (``[test]`` for GLUE, whose test labels are hidden); ``config`` /
    ``revision``: a hub dataset's subset and version. ``unlabelled_path``: more texts, without labels (files or
    a hub dataset's training split, with the same text columns; a label column there is ignored): a transfer set
    that only the distilled student learns from, from the teacher's outputs (the teacher and the student alone
    never see it; CE leaves its rows out)."""
    name = "text_classification"
    given = {"val": val, "test": test, "split_column": split_column}
    tables = read_splits(path, HubDataset(config, revision), given, drop_splits or [], name)
    for split, table in tables.items():
        columns_present(table, {"text": text, "text_pair": text_pair, "label": label}, name, path, split)
    read = {split: np.asarray(table[label]) for split, table in tables.items()}
    no_hidden_labels(read, label, path, name)
    found = labelled_splits(tables, read, label, path, seed, {"val": val_fraction, "test": test_fraction})
    tables, labels, regression = found.tables, found.labels, found.regression
    sources = {split: (table, path) for split, table in tables.items()}
    if unlabelled_path is not None:
        extra = table_splits(unlabelled_path, HubDataset(), None, None, None, name)["train"]
        columns_present(extra, {"text": text, "text_pair": text_pair}, name, unlabelled_path, "train")
        sources["unlabelled"] = (extra, unlabelled_path)
    tok = encoder_tokenizer(tokenizer, name)
    encoded = {}
    for split, (table, where) in sources.items():
        pairs = column_texts(table, text_pair, name, where, split) if text_pair is not None else None
        out = tok(column_texts(table, text, name, where, split), pairs, truncation=max_length is not None,
                  max_length=max_length)  # fmt: skip
        encoded[split] = out
    too_long({split: out["input_ids"] for split, out in encoded.items()}, tok, max_length, name)
    width = max(len(row) for out in encoded.values() for row in out["input_ids"])  # one width: splits join
    splits = {}
    for split, out in encoded.items():
        x = torch.from_numpy(padded(out["input_ids"], tok.pad_token_id, width))
        if text_pair is not None and "token_type_ids" in out:  # each token's segment: 0 for the text, 1 the pair
            x = torch.stack([x, torch.from_numpy(padded(out["token_type_ids"], 0, width))], 1)
        if split == "unlabelled":  # no label: PAD_TARGET, which CE leaves out (a NaN score for a regression)
            y = torch.full((len(x), 1), float("nan")) if regression else torch.full((len(x),), PAD_TARGET)
        else:
            y = torch.from_numpy(labels[split])
            y = y.float().view(-1, 1) if regression else y.long()
        splits[split] = Split(x, y, pad=tok.pad_token_id)

    def decode(rows: torch.Tensor) -> list[str]:  # a pair's row: its ids, without the segments
        return tok.batch_decode((rows[:, 0] if rows.dim() == 3 else rows).cpu(), skip_special_tokens=True)

    return DataBundle(
        name,
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=found.classes,
        input_shape=tuple(splits["train"].x.shape[1:]),
        decode=decode,
        class_names=None if regression else found.names,
        unlabelled=splits.get("unlabelled"),
        token_ids=special_ids(tok),
    )


def aligned_tags(tags: list[list[int]], word_ids: list[list[int | None]]) -> list[list[int]]:
    """Each token's tag: its word's for the first sub-word of a word, ``PAD_TARGET`` for the word's other sub-words
    and for special tokens (neither the loss nor the metric counts them)."""
    rows = []
    for row, ids in enumerate(word_ids):
        previous, out = None, []
        for word in ids:
            out.append(tags[row][word] if word is not None and word != previous else PAD_TARGET)
            previous = word
        rows.append(out)
    return rows


@DATASETS.register("token_classification")
def token_classification(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    tokenizer: str,
    tokens: str = "tokens",
    tags: str = "ner_tags",
    max_length: PositiveInt | None = None,
    val: str | None = None,
    test: str | None = None,
    split_column: str | None = None,
    drop_splits: list[str] | None = None,
    config: str | None = None,
    revision: str | None = None,
) -> DataBundle:
    """Rows of words (``tokens``, a list of strings) and a tag per word (``tags``: indices, or names such as
    ``B-PER``, sorted), as CoNLL-2003 has them. Each word's tag goes to its first sub-word; the loss and the metrics
    ignore the others. Options as :func:`text_classification`'s."""
    name = "token_classification"
    given = {"val": val, "test": test, "split_column": split_column}
    tables = read_splits(path, HubDataset(config, revision), given, drop_splits or [], name)
    for split, table in tables.items():
        columns_present(table, {"tokens": tokens, "tags": tags}, name, path, split)
        for row, (w, t) in enumerate(zip(table[tokens], table[tags])):  # the rows as the file has them
            if len(w) != len(t):
                raise KdforgeError(
                    f"{name}: row {row} of the {split} split of '{path}' has {len(w)} words in '{tokens}' but "
                    f"{len(t)} tags in '{tags}'; give each word one tag"
                )
    tag_names = tag_vocabulary(tables, tags, path, name)
    if "val" not in tables or "test" not in tables:
        wanted = {s: f for s, f in (("val", val_fraction), ("test", test_fraction)) if s not in tables}
        first = tables["train"]
        parts = split_rows(np.zeros(len(first), dtype=np.int64), wanted, seed)  # rows drawn at random
        tables = {**tables, **{s: first.select(p) for s, p in zip(["train", *wanted], parts)}}
    tok = encoder_tokenizer(tokenizer, name)
    index = {tag: i for i, tag in enumerate(tag_names)}
    encoded = {}
    for split, table in tables.items():
        words, row_tags = list(table[tokens]), list(table[tags])
        out = tok(words, is_split_into_words=True, truncation=max_length is not None, max_length=max_length)
        numbered = [[index[v] if isinstance(v, str) else int(v) for v in t] for t in row_tags]
        encoded[split] = (out["input_ids"], aligned_tags(numbered, [out.word_ids(i) for i in range(len(words))]))
    too_long({split: ids for split, (ids, _) in encoded.items()}, tok, max_length, name)
    width = max(len(row) for ids, _ in encoded.values() for row in ids)
    splits = {
        split: Split(
            torch.from_numpy(padded(ids, tok.pad_token_id, width)),
            torch.from_numpy(padded(targets, PAD_TARGET, width)),
            pad=tok.pad_token_id,
        )  # fmt: skip
        for split, (ids, targets) in encoded.items()
    }
    return DataBundle(
        name,
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=len(tag_names),
        input_shape=(width,),
        kind="token_classification",
        decode=lambda rows: tok.batch_decode(rows.cpu(), skip_special_tokens=True),
        class_names=tag_names,
        token_ids=special_ids(tok),
    )


def tag_vocabulary(tables: dict[str, Any], column: str, path: str, dataset: str) -> list[str]:
    """The tags' names: a ``Sequence(ClassLabel)``'s own, the sorted names the rows use, or for tags given as
    indices without names, the indices as names."""
    feature = getattr(tables["train"].features[column], "feature", None)
    if names := getattr(feature, "names", None):
        return list(names)
    seen = {tag for table in tables.values() for row in table[column] for tag in row}
    if all(isinstance(tag, str) for tag in seen):
        return sorted(seen)
    if all(isinstance(tag, int) and tag >= 0 for tag in seen):
        return [str(i) for i in range(max(seen) + 1)]
    raise KdforgeError(
        f"{dataset}: the tags in '{column}' of '{path}' mix names and numbers (or hold negative numbers); give each "
        "word a tag name or a tag index"
    )


#: package_docstrings' classes: the modules whose docstrings each library's texts come from (the standard library,
#: and libraries kdforge itself installs)
PACKAGES = {
    "numpy": ("numpy", "numpy.linalg", "numpy.random", "numpy.fft", "numpy.ma", "numpy.polynomial"),
    "torch": ("torch", "torch.nn", "torch.nn.functional", "torch.optim", "torch.utils.data", "torch.linalg",
              "torch.distributions"),
    "scikit-learn": tuple(f"sklearn.{m}" for m in ("linear_model", "ensemble", "preprocessing", "metrics",
                                                   "decomposition", "cluster", "model_selection", "neighbors", "svm",
                                                   "tree")),
    "matplotlib": ("matplotlib.pyplot", "matplotlib.axes", "matplotlib.figure", "matplotlib.colors"),
    "pydantic": ("pydantic", "pydantic.fields", "pydantic.main", "pydantic.types"),
    "rich": ("rich.console", "rich.table", "rich.progress", "rich.text", "rich.panel"),
    "asyncio": ("asyncio",),
    "logging": ("logging", "logging.handlers"),
    "http and urllib": ("http.client", "http.server", "http.cookiejar", "urllib.request", "urllib.parse"),
    "os, shutil and pathlib": ("os", "os.path", "shutil", "pathlib", "tempfile"),
    "xml": ("xml.etree.ElementTree", "xml.dom.minidom", "xml.sax"),
    "unittest": ("unittest", "unittest.mock"),
}  # fmt: skip


def package_sentences(per_package: int, extra: int = 0) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Up to ``per_package`` first sentences of each library's docstrings (drawn with a fixed seed: the same texts
    for every run), none that two libraries share; and up to ``extra`` more of each library's, drawn next (none of
    the first: the unlabelled ones)."""
    found = [clean_sentences(docs) for docs in docstring_groups(list(PACKAGES.values()))]
    count: dict[str, int] = {}
    for sentences in found:
        for sentence in sentences:
            count[sentence.lower()] = count.get(sentence.lower(), 0) + 1
    rng = np.random.default_rng(0)
    drawn, more = {}, {}
    for name, sentences in zip(PACKAGES, found):
        own = [s for s in sentences if count[s.lower()] == 1]
        order = rng.permutation(len(own))
        drawn[name] = [own[i] for i in sorted(order[:per_package])]
        more[name] = [own[i] for i in sorted(order[per_package : per_package + extra])]
    return drawn, more


def package_rows(drawn: dict[str, list[str]], pairs: bool) -> list[dict[str, str]]:
    """The table's rows from each library's ``drawn`` sentences: a sentence and its library, or (``pairs``) two
    sentences and whether one library wrote both (each sentence with another from its own library or from another,
    half and half, drawn with a fixed seed)."""
    rows = [{"text": text, "label": name} for name, texts in drawn.items() for text in texts]
    if not pairs:
        return rows
    rng = np.random.default_rng(1)
    names = list(drawn)
    paired = []
    for row in rows:
        same = bool(rng.random() < 0.5)
        other = row["label"] if same else names[(names.index(row["label"]) + rng.integers(1, len(names))) % len(names)]
        candidates = [t for t in drawn[other] if t != row["text"]]
        paired.append({"text": row["text"], "text_pair": candidates[rng.integers(len(candidates))],
                       "label": "same library" if same else "different libraries"})  # fmt: skip
    return paired


def unlabelled_rows(more: dict[str, list[str]], pairs: bool) -> list[dict[str, str]]:
    """Rows without a label from each library's ``more`` sentences: a sentence, or (``pairs``) a sentence and
    another of them drawn with a fixed seed."""
    texts = [text for texts in more.values() for text in texts]
    if not pairs:
        return [{"text": text} for text in texts]
    rng = np.random.default_rng(2)
    return [{"text": text, "text_pair": texts[(i + rng.integers(1, len(texts))) % len(texts)]}
            for i, text in enumerate(texts)]  # fmt: skip


def cached_table(rows: list[dict[str, str]]) -> str:
    """``rows`` as a JSONL table in kdforge's cache folder, named by its contents (written once)."""
    text = "\n".join(json.dumps(row) for row in rows) + "\n"
    path = cache_folder() / f"package-docstrings-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        write_text(path, text)
    return str(path)


@DATASETS.register("package_docstrings")
def package_docstrings(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    tokenizer: str,
    max_length: PositiveInt = 64,
    per_package: PositiveInt = 250,
    pairs: bool = False,
    unlabelled_per_package: NonNegativeInt = 0,
) -> DataBundle:
    """A real text-classification task built offline: which library (one of 12, see ``PACKAGES``) the first sentence
    of a docstring comes from, or with ``pairs`` whether two sentences come from the same library. The texts are
    those of the libraries installed here (the same wherever their versions are), written once as a JSONL table in
    kdforge's cache folder and read by :func:`text_classification`, whose other options these are (``tokenizer:
    minilm``, the teacher's own, for all-MiniLM-L6-v2). ``unlabelled_per_package``: up to that many more sentences
    of each library (fewer where a library has no more), without their library: a transfer set only the distilled
    student learns from (``unlabelled_path`` of :func:`text_classification`)."""
    drawn, more = package_sentences(per_package, unlabelled_per_package)
    unlabelled = None
    if unlabelled_per_package:
        if sum(len(texts) for texts in more.values()) < 2:
            raise KdforgeError(
                f"package_docstrings: no library has sentences beyond the {per_package} of data.per_package to leave "
                "unlabelled; lower data.per_package or drop data.unlabelled_per_package"
            )
        unlabelled = cached_table(unlabelled_rows(more, pairs))
    data = text_classification(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                               path=cached_table(package_rows(drawn, pairs)), tokenizer=tokenizer,
                               text_pair="text_pair" if pairs else None, max_length=max_length,
                               unlabelled_path=unlabelled)  # fmt: skip
    return dataclasses.replace(data, name="package_docstrings")
