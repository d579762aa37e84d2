"""Datasets on disk that cannot be read as asked: arrays, .npz files, embedding tables, text files and
Hugging Face folders. Each is refused with one message naming the file and what to change."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from errorkit import Payload, good_safetensors, npy_bytes, torch_bytes

# ----------------------------------------------------------------------------- datasets


def arrays_recipe(path):
    return {
        "data": {"name": "arrays", "path": str(path)},
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [8]}},
    }


X, Y = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3
ARRAY_CASES = {
    "empty x.npy": ({"x.npy": b"", "y.npy": npy_bytes(Y)}, ["x.npy", "is empty (0 bytes)"]),
    "object x.npy": (
        {"x.npy": npy_bytes(np.array([{"a": 1}] * 60, dtype=object), allow_pickle=True), "y.npy": npy_bytes(Y)},
        ["x.npy", "object-dtype array"],
    ),
    "truncated x.npy": ({"x.npy": npy_bytes(X)[:300], "y.npy": npy_bytes(Y)}, ["x.npy", "truncated or damaged"]),
    "text x.npy": (
        {"x.npy": npy_bytes(np.array(["a"] * 60)), "y.npy": npy_bytes(Y)},
        ["x in", "<U1 values", "must be numbers"],
    ),
    "1-D x.npy": ({"x.npy": npy_bytes(X[:, 0]), "y.npy": npy_bytes(Y)}, ["x in", "shape [60]", "x[:, None]"]),
    "rows differ": ({"x.npy": npy_bytes(X[:50]), "y.npy": npy_bytes(Y)}, ["x in", "50 rows but y has 60"]),
    "no y": ({"x.npy": npy_bytes(X)}, ["must hold 'x' and 'y'"]),
}


@pytest.mark.parametrize("case", ARRAY_CASES, ids=list(ARRAY_CASES))
def test_array_folders(case, fails, recipe, tmp_path):
    found, names = ARRAY_CASES[case]
    folder = tmp_path / "arrays"
    folder.mkdir()
    for name, data in found.items():
        (folder / name).write_bytes(data)
    fails("check", recipe(arrays_recipe(folder)), names=names)


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


NPZ_CASES = {
    "empty npz": (lambda: b"", ["d.npz", "is empty"]),
    "truncated npz": (lambda: npz_bytes(x=X, y=Y)[:200], ["d.npz", "truncated or damaged"]),
    "object npz": (lambda: npz_bytes(x=np.array([{"a": 1}] * 60, dtype=object), y=Y), ["d.npz", "object-dtype array"]),
}


@pytest.mark.parametrize("case", NPZ_CASES, ids=list(NPZ_CASES))
def test_npz_files(case, fails, recipe, tmp_path):
    data, names = NPZ_CASES[case]
    (tmp_path / "d.npz").write_bytes(data())
    fails("check", recipe(arrays_recipe(tmp_path / "d.npz")), names=names)


def table_recipe(path):
    return {
        "data": {"name": "embedding_table", "path": str(path)},
        "teacher": {"source": "table", "model": None, "train": None},
        "student": {"model": {"name": "embed_proj"}},
        "losses": [{"name": "cosine"}],
    }


TABLE_CASES = {
    "empty npy table": ("t.npy", lambda: b"", ["t.npy", "is empty"]),
    "object npy table": (
        "t.npy",
        lambda: npy_bytes(np.array([None] * 4, dtype=object), allow_pickle=True),
        ["t.npy", "object-dtype array"],
    ),
    "truncated npz table": ("t.npz", lambda: npz_bytes(embeddings=X)[:100], ["t.npz", "truncated or damaged"]),
    "damaged safetensors table": (
        "t.safetensors",
        lambda: good_safetensors()[:20],
        ["t.safetensors", "not a valid safetensors file"],
    ),
    "pickled pt table": (
        "t.pt",
        lambda: torch_bytes({"embeddings": torch.ones(4, 2), "hook": Payload()}),
        ["t.pt", "pickled Python objects"],
    ),
    "table without embeddings": ("t.npz", lambda: npz_bytes(vectors=X), ["t.npz", "must hold 'embeddings'"]),
}


@pytest.mark.parametrize("case", TABLE_CASES, ids=list(TABLE_CASES))
def test_embedding_tables(case, fails, recipe, tmp_path):
    name, data, names = TABLE_CASES[case]
    (tmp_path / name).write_bytes(data())
    fails("check", recipe(table_recipe(tmp_path / name)), names=names)


def test_an_embedding_table_with_texts_is_read(tmp_path):
    from kdforge.families.embedding.teachers import read_table

    (tmp_path / "t.npz").write_bytes(npz_bytes(embeddings=X, texts=np.array([f"text {i}" for i in range(60)])))
    embeddings, texts = read_table(tmp_path / "t.npz")
    assert embeddings.shape == (60, 4) and texts[3] == "text 3"


def test_arrays_path_missing(fails, recipe, tmp_path):
    fails(
        "check",
        recipe(arrays_recipe(tmp_path / "nothing.npz")),
        names=["nothing.npz", "neither an .npz file nor a directory"],
    )


def text_recipe(path, dataset="text_corpus", **options):
    if dataset == "text_lm":
        return {
            "data": {"name": "text_lm", "files": [str(path)], "length": 16, **options},
            "teacher": {"source": "train", "model": {"name": "lm_transformer"}},
            "student": {"model": {"name": "lm_transformer"}},
        }
    return {
        "data": {"name": "text_corpus", "files": [str(path)], **options},
        "teacher": {"source": "table", "model": None, "train": None},
        "student": {"model": {"name": "embed_text"}},
        "losses": [{"name": "cosine"}],
    }


TEXT_CASES = {
    "broken jsonl line": ("t.jsonl", '{"text": "one"}\n{"text": "two"\n', {}, ["t.jsonl", "line 2 is not valid JSON"]),
    "jsonl line without text": (
        "t.jsonl",
        '{"text": "one"}\n{"body": "two"}\n',
        {},
        ["t.jsonl", "line 2 has no 'text' field"],
    ),
    "jsonl line not an object": (
        "t.jsonl",
        '{"text": "one"}\n[1, 2]\n',
        {},
        ["t.jsonl", "line 2 is not a JSON object"],
    ),
    "csv without text column": ("t.csv", "id,body\n1,x\n", {}, ["t.csv", "row 1 has no 'text' field"]),
    "unknown suffix": (
        "t.md",
        "# hello\n",
        {},
        ["t.md", ".txt, .jsonl, .csv, .parquet or .arrow files, or a save_to_disk folder"],
    ),
    "unknown encoding name": (
        "t.txt",
        "hello\n",
        {"file_encoding": "klingon"},
        ["t.txt", "unknown text encoding 'klingon'"],
    ),
}


@pytest.mark.parametrize("case", TEXT_CASES, ids=list(TEXT_CASES))
def test_text_files(case, fails, recipe, tmp_path):
    name, text, options, names = TEXT_CASES[case]
    (tmp_path / name).write_text(text)
    fails("check", recipe(text_recipe(tmp_path / name, **options)), names=names)


@pytest.mark.parametrize("dataset", ["text_corpus", "text_lm"])
def test_latin1_text_names_the_encoding_option(dataset, fails, recipe, tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    fails(
        "check", recipe(text_recipe(path, dataset)), names=["t.txt", "not utf-8 text", "latin-1", "data.file_encoding"]
    )


def test_latin1_text_reads_with_the_option(tmp_path):
    from kdforge.data.text import read_texts

    path = tmp_path / "t.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    assert read_texts(path, "latin-1") == ["café"]


def tiny_vit_folder(folder):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=10,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    return folder


HF_FOLDER_CASES = {
    "truncated config.json": (
        "config.json",
        lambda p: p.read_bytes()[:50],
        ["vit", "cannot be read", "save_pretrained"],
    ),
    "damaged weights": ("model.safetensors", lambda p: p.read_bytes()[:100], ["vit", "cannot be read"]),
    "no weights": ("model.safetensors", None, ["vit", "cannot be read"]),
}


@pytest.mark.parametrize("case", HF_FOLDER_CASES, ids=list(HF_FOLDER_CASES))
def test_damaged_hugging_face_model_folders(case, fails, recipe, tmp_path):
    name, data, names = HF_FOLDER_CASES[case]
    folder = tiny_vit_folder(tmp_path / "vit")
    if data is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(data(folder / name))
    fails("check", recipe({"teacher": {"source": "hf", "model": {"name": str(folder)}, "train": None}}), names=names)


def test_a_tokenizer_folder_without_a_tokenizer(fails, recipe, tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "t.txt").write_text("some text\n" * 50)
    fails(
        "check",
        recipe(text_recipe(tmp_path / "t.txt", "text_lm", tokenizer=str(tmp_path / "tok"))),
        names=["tokenizer", "tok", "cannot be read"],
    )


def shards_recipe(path, **options):
    model = {"name": "lm_transformer", "width": 16, "depth": 1, "heads": 2}
    return {
        "data": {"name": "tokens", "path": str(path), "vocab_size": 64, "length": 16, **options},
        "teacher": {"source": "train", "model": model, "train": {"epochs": 1}},
        "student": {"model": model},
        "losses": [{"name": "ce"}],
    }


SHARD_CASES = {
    "empty training shard": ({"train.bin": 0}, {}, ["train.bin", "hold 0 tokens", "fewer than the 17"]),
    "short training shard": ({"train.bin": 10}, {}, ["train.bin", "hold 10 tokens", "data.length 16"]),
    "short val shard": (
        {"train.bin": 2000, "val.bin": 5},
        {"val": "val.bin"},
        ["val.bin", "hold 5 tokens", "fewer than the 17"],
    ),
    "too few windows, val given": (
        {"train.bin": 20, "val.bin": 200},
        {"val": "val.bin"},
        ["train.bin", "too few to cut test from", "or test shards of their own"],
    ),
}


@pytest.mark.parametrize("case", SHARD_CASES, ids=list(SHARD_CASES))
def test_token_shards_too_short_are_named(case, fails, recipe, tmp_path):
    sizes, options, names = SHARD_CASES[case]
    for name, size in sizes.items():
        (np.arange(size) % 64).astype(np.uint16).tofile(tmp_path / name)
    given = {key: str(tmp_path / value) for key, value in options.items()}
    message = fails("check", recipe(shards_recipe(tmp_path / "train.bin", **given)), names=names)
    assert "val shards" not in message or "val" not in options
