"""Chat, instruction and text examples as token rows: the ``chat_lm`` dataset.

Each example of the files (.jsonl, .json, .parquet, .arrow, a save_to_disk folder) is one of:

- a conversation, ``messages: [{role, content}, ...]``, rendered with the tokenizer's chat template; the
  loss is on the assistant's turns only (each turn's tokens are found by rendering the conversation up to it
  with and without the turn: what the template adds for an answer, closing tokens included);
- an instruction, ``prompt`` and ``completion``: a user turn and the assistant's answer through the chat
  template (when the tokenizer has one; else the two texts joined, the end-of-text token after); the loss is
  on the completion only;
- a text, ``text``: the loss is on every token.

``format: auto`` reads whichever of these fields the first example has. Examples are split into
train / val / test (seeded, or ``data.split_file``), cut to ``max_length`` tokens, then either padded one per
row (``pack: false``) or packed in order into rows of ``length`` tokens (``pack: true``): rows [N, 2, length] of
ids and document numbers, so that models restart positions and attention at each example
(:mod:`kdforge.models.tokens`). Targets are the next token where it is trainable, else ``PAD_TARGET``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from kdforge.data.bundle import DATASETS, PAD_TARGET, DataBundle, Split, split_rows
from kdforge.data.hf_tables import DataFile, load_table, named_table
from kdforge.errors import KdforgeError
from kdforge.families.lm.data import (
    HFTokenizer,
    Tokenizer,
    load_lm_tokenizer,
    stop_ids,
    text_readers,
    token_pieces,
)
from kdforge.files import read_text

Format = Literal["auto", "chat", "instruction", "text"]
FIELDS = {"chat": ("messages",), "instruction": ("prompt", "completion"), "text": ("text",)}


def read_examples(files: Sequence[DataFile], encoding: str = "utf-8") -> list[dict[str, Any]]:
    """The rows of .jsonl / .json files (a list of objects) or of Hugging Face data (on disk, or a hub dataset:
    every split), as dicts."""
    rows: list[dict[str, Any]] = []
    for name in files:
        hub = named_table(name)
        path = Path(hub[0] if hub else str(name))
        if hub is None and path.suffix in (".jsonl", ".json"):
            text = read_text(path, "examples file", encoding, option="data.file_encoding")
            try:
                found = (
                    [json.loads(line) for line in text.splitlines() if line.strip()]
                    if path.suffix == ".jsonl"
                    else json.loads(text)
                )
            except json.JSONDecodeError as err:
                raise KdforgeError(f"'{path}' is not valid JSON ({err.msg}, line {err.lineno})") from None
        else:
            table = load_table(*hub) if hub else load_table(str(path))
            found = [row for split in (table.values() if isinstance(table, dict) else [table]) for row in split]
        if not isinstance(found, list) or not all(isinstance(row, dict) for row in found):
            raise KdforgeError(f"'{path}' must hold one JSON object per example")
        rows.extend(found)
    if not rows:
        raise KdforgeError(f"chat_lm: no examples in {', '.join(map(str, files))}")
    return rows


def example_format(row: dict[str, Any], wanted: Format) -> str:
    found = next((kind for kind, fields in FIELDS.items() if all(f in row for f in fields)), None)
    kind = found if wanted == "auto" else wanted
    if kind is None or not all(f in row for f in FIELDS[kind]):
        expected = " or ".join("+".join(f) for f in FIELDS.values()) if wanted == "auto" else "+".join(FIELDS[kind])
        raise KdforgeError(
            f"chat_lm: an example has fields {sorted(row)}; expected {expected} (data.files, data.format: {wanted})"
        )
    return kind


class ExampleEncoder:
    """Token ids and their trainable mask for one example (see the module docstring)."""

    def __init__(self, tokenizer: HFTokenizer):
        self.inner, self.eos = tokenizer.inner, tokenizer.inner.eos_token_id
        self.has_template = bool(getattr(self.inner, "chat_template", None))

    def encode(self, row: dict[str, Any], kind: str) -> tuple[list[int], list[bool]]:
        if kind == "text":
            ids = self._ids(str(row["text"])) + self._end()
            return ids, [True] * len(ids)
        if kind == "instruction" and not self.has_template:
            prompt, completion = self._ids(str(row["prompt"])), self._ids(str(row["completion"])) + self._end()
            return prompt + completion, [False] * len(prompt) + [True] * len(completion)
        messages = (
            row["messages"]
            if kind == "chat"
            else [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
        )
        return self._conversation(messages)

    def _conversation(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[bool]]:
        if not self.has_template:
            raise KdforgeError("chat_lm: conversations need a tokenizer with a chat template; this one has none")
        ids = self._ids(self._render(messages, False))
        trainable = [False] * len(ids)
        for turn, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            start = len(self._ids(self._render(messages[:turn], True)))
            end = len(self._ids(self._render(messages[: turn + 1], False)))
            if ids[:start] != self._ids(self._render(messages[:turn], True)):
                raise KdforgeError(
                    "chat_lm: the chat template renders a conversation's start differently once it goes on, so the "
                    "assistant's tokens cannot be found; use prompt/completion examples or another template"
                )
            trainable[start:end] = [True] * (end - start)
        return ids, trainable

    def end_of_turn(self) -> int | None:
        """The first special token after a short answer's text, found by rendering one (None without a template)."""
        if not self.has_template:
            return None
        question = [{"role": "user", "content": "Say yes."}]
        start = len(self._ids(self._render(question, True)))
        answered = self._ids(self._render([*question, {"role": "assistant", "content": "Yes."}], False))
        tokens = self.inner.added_tokens_decoder
        special = set(self.inner.all_special_ids) | {i for i, token in tokens.items() if token.special}
        return next((i for i in answered[start:] if i in special), None)

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        if not messages:
            return ""
        return self.inner.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _ids(self, text: str) -> list[int]:
        return self.inner.encode(text, add_special_tokens=False)

    def _end(self) -> list[int]:
        return [self.eos] if self.eos is not None else []


def end_of_turn(tokenizer: Any) -> int | None:
    """The special token the chat template closes an assistant's answer with (``<|im_end|>``, ``<|eot_id|>``);
    None for a tokenizer without a template."""
    return ExampleEncoder(tokenizer).end_of_turn() if isinstance(tokenizer, HFTokenizer) else None


def data_stops(data: Any) -> tuple[Tokenizer, list[int]]:
    """The tokenizer of a recipe's language-model ``data`` section and the ids that end what is written after it
    (``data.stop``, by default the end-of-text token and, for chat data, the end-of-turn token)."""
    name = data.options.get("tokenizer", "bytes")
    tokenizer = load_lm_tokenizer(name)
    turn = end_of_turn(tokenizer) if data.name == "chat_lm" else None
    return tokenizer, stop_ids(tokenizer, data.options.get("stop"), turn)


def as_user_turn(tokenizer: Any, text: str) -> str:
    """``text`` as a user's turn through the tokenizer's chat template, the assistant's turn opened after it
    (as is, for a tokenizer without a template)."""
    inner = getattr(tokenizer, "inner", None)
    if inner is None or not getattr(inner, "chat_template", None):
        return text
    return inner.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def pairs(ids: list[int], trainable: list[bool], max_length: int) -> tuple[list[int], list[int]]:
    """(inputs, next-token targets) of an example cut to ``max_length`` + 1 tokens; untrainable targets are
    ``PAD_TARGET``."""
    ids, trainable = ids[: max_length + 1], trainable[: max_length + 1]
    return ids[:-1], [t if keep else PAD_TARGET for t, keep in zip(ids[1:], trainable[1:])]


def rows_of(examples: list[tuple[list[int], list[int]]], length: int, pack: bool) -> Split:
    """Examples laid into rows of ``length`` tokens: one each, padded; or packed in order, each whole in one
    row, with document numbers (padding is a document of its own, with no targets)."""
    rows: list[list[tuple[list[int], list[int]]]] = []
    used = length  # no row open yet
    for example in examples:
        if not pack or used + len(example[0]) > length:
            rows.append([])
            used = 0
        rows[-1].append(example)
        used += len(example[0])
    x = torch.zeros((len(rows), 2, length) if pack else (len(rows), length), dtype=torch.long)
    y = torch.full((len(rows), length), PAD_TARGET, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for document, (inputs, targets) in enumerate(row):
            span = slice(at, at + len(inputs))
            if pack:
                x[r, 0, span], x[r, 1, span] = torch.tensor(inputs), document
            else:
                x[r, span] = torch.tensor(inputs)
            y[r, span] = torch.tensor(targets)
            at += len(inputs)
        if pack:
            x[r, 1, at:] = len(row)
    return Split(x, y)


@DATASETS.register("chat_lm")
def chat_lm(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    files: list[DataFile],
    tokenizer: str,
    format: Format = "auto",
    length: int = 512,
    max_length: int | None = None,
    pack: bool = True,
    file_encoding: str = "utf-8",
    stop: list[str] | None = None,
) -> DataBundle:
    """Chat, instruction or text examples (see the module docstring) as rows of ``length`` tokens;
    ``tokenizer``: a local Hugging Face tokenizer folder (the teacher's); ``max_length``: tokens kept per
    example (default ``length``); ``pack``: several examples per row, each attending only to itself; ``stop``: the
    tokens that end what a model writes after this data (default: the end-of-text and end-of-turn tokens)."""
    max_length = length if max_length is None else max_length
    if not 1 <= max_length <= length:
        raise KdforgeError(f"chat_lm: max_length must be in [1, length = {length}], got {max_length}")
    rows = read_examples(files, file_encoding)
    kind = example_format(rows[0], format)
    words = HFTokenizer(tokenizer)
    stop_ids(words, stop)  # checked now: each a token of the vocabulary
    encoder = ExampleEncoder(words)
    examples = [pairs(*encoder.encode(row, example_format(row, kind)), max_length) for row in rows]
    if not any(t != PAD_TARGET for _, targets in examples for t in targets):
        raise KdforgeError("chat_lm: no example has a token to learn (every completion is empty or cut off)")
    parts = split_rows(np.zeros(len(examples)), {"val": val_fraction, "test": test_fraction}, seed)
    splits = [rows_of([examples[i] for i in index], length, pack) for index in parts]
    tok = encoder.inner
    return DataBundle(
        "chat_lm",
        *splits,
        num_classes=len(tok),
        input_shape=(2, length) if pack else (length,),
        kind="lm",
        **text_readers(tok.decode, functools.partial(token_pieces, tok)),
    )
