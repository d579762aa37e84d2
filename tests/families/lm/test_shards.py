"""The ``tokens`` dataset: memory-mapped token shards written here as raw uint16 / uint32 files."""

import io

import numpy as np
import pytest
import torch
from rich.console import Console

from kdforge import Recipe, run
from kdforge.data import build_dataset, make_loader
from kdforge.errors import KdforgeError


def write_shard(path, ids, dtype=np.uint16):
    np.asarray(ids, dtype=dtype).tofile(path)
    return path


def test_windows_pair_each_token_with_the_next_and_stay_inside_their_shard(tmp_path):
    write_shard(tmp_path / "a.bin", np.arange(0, 41))  # 41 tokens: 5 windows of 8 (+1)
    write_shard(tmp_path / "b.bin", np.arange(100, 120))  # 20 tokens: 2 windows, a tail of 3 left out
    data = build_dataset("tokens", path=str(tmp_path), length=8, vocab_size=200, val_fraction=0.15, test_fraction=0.15)
    assert data.task == "lm" and data.num_classes == 200 and data.input_shape == (8,)
    assert (len(data.train), len(data.val), len(data.test)) == (5, 1, 1)
    windows = [data.train.dataset[i] for i in range(5)] + [data.val.dataset[0], data.test.dataset[0]]
    for x, y in windows:
        assert x.dtype == torch.int64 and torch.equal(y[:-1], x[1:]) and int(y[-1]) == int(x[-1]) + 1
    starts = [int(x[0]) for x, _ in windows]
    assert starts == [0, 8, 16, 24, 32, 100, 108]  # in corpus order; val and test are its last windows


def test_val_and_test_shards_are_used_as_given_and_uint32_ids(tmp_path):
    (tmp_path / "train").mkdir()
    for i in range(3):
        write_shard(tmp_path / "train" / f"{i:03d}.bin", np.arange(70_000, 70_033) + i, np.uint32)
    write_shard(tmp_path / "val.bin", np.arange(70_100, 70_117), np.uint32)
    write_shard(tmp_path / "test.bin", np.arange(70_200, 70_217), np.uint32)
    data = build_dataset(
        "tokens",
        path=str(tmp_path / "train"),
        val=str(tmp_path / "val.bin"),
        test=str(tmp_path / "test.bin"),
        dtype="uint32",
        length=16,
        vocab_size=80_000,
    )
    assert (len(data.train), len(data.val), len(data.test)) == (6, 1, 1)
    assert int(data.val.dataset[0][0][0]) == 70_100 and int(data.test.dataset[0][1][-1]) == 70_216
    batches = make_loader(data.train, 4, shuffle=True, seed=1, num_workers=1)
    seen = sorted(int(x[0]) for xb, _ in batches.epoch(0) for x in xb)
    assert seen == sorted([70_000 + i + j for i in range(3) for j in (0, 16)])


def test_shards_that_cannot_be_trusted_are_named(tmp_path):
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00\x02")
    with pytest.raises(KdforgeError, match="odd.bin.*not a whole number of uint16 tokens"):
        build_dataset("tokens", path=str(tmp_path / "odd.bin"), vocab_size=10)
    write_shard(tmp_path / "big.bin", [1, 2, 3, 999, 4, 5] * 10)
    data = build_dataset("tokens", path=str(tmp_path / "big.bin"), length=4, vocab_size=256)
    with pytest.raises(KdforgeError, match="big.bin.*holds id 999.*vocabulary has 256"):
        data.train.first(1)
    with pytest.raises(KdforgeError, match="give vocab_size"):
        build_dataset("tokens", path=str(tmp_path / "big.bin"))
    with pytest.raises(KdforgeError, match="big.bin.*too few to cut val and test from"):
        build_dataset("tokens", path=str(tmp_path / "big.bin"), length=40, vocab_size=1000)


def test_a_tiny_lm_run_from_token_shards(tmp_path):
    text = " ".join(f"the function number {i} returns {i % 7} items." for i in range(120)).encode()
    write_shard(tmp_path / "corpus.bin", list(text))
    raw = {
        "name": "shards",
        "data": {"name": "tokens", "path": str(tmp_path / "corpus.bin"), "tokenizer": "bytes", "length": 32},
        "teacher": {"source": "train", "model": {"name": "lm_transformer", "width": 32, "depth": 1, "heads": 2}},
        "student": {"model": {"name": "rwkv_spiking", "size": "tiny", "width": 32, "depth": 1}},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 1.0}],
        "train": {"epochs": 2, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    raw["data"]["batch_size"], raw["data"]["workers"], raw["teacher"]["train"] = 16, 0, {"epochs": 2}
    result = run(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    assert 1.0 < result.results["student"]["test"]["perplexity"] < 256


def test_text_lm_and_text_corpus_read_a_hugging_face_text_column(tmp_path):
    import datasets

    docs = [f"Document {i} says that {i} plus one is {i + 1}." for i in range(40)]
    datasets.Dataset.from_dict({"body": docs, "n": list(range(40))}).to_parquet(str(tmp_path / "docs.parquet"))
    data = build_dataset("text_lm", files=[str(tmp_path / "docs.parquet")], text_column="body", length=16)
    text = "".join(data.decode(data.train.x[:4]) + data.decode(data.val.x) + data.decode(data.test.x))
    assert "Document" in text and data.num_classes == 256
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": docs[:30]})}).save_to_disk(str(tmp_path / "d"))
    corpus = build_dataset("text_corpus", files=[str(tmp_path / "d")], text_column="body", val_fraction=0.2)
    assert len(corpus.train) + len(corpus.val) + len(corpus.test) == 30
    with pytest.raises(KdforgeError, match="no text column 'text'; its columns: body, n"):
        build_dataset("text_lm", files=[str(tmp_path / "docs.parquet")])
