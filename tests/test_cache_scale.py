"""The teacher cache at scale: written in shards, resumed after an interruption, memory-mapped when
read, and made of data read from disk (an image folder, with the views its random crops draw)."""

import numpy as np
import pytest
import torch
from rich.console import Console

from datafiles import write_images
from kdforge import Recipe, run
from kdforge.errors import KdforgeError
from kdforge.runner import build_cache
from kdforge.session import Session
from kdforge.teachers import _shards, cache
from kdforge.teachers.cache import CachedTeacher
from kdforge.teachers.teacher import Teacher


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 5,120 bytes: two batches of 64 dense ten-class logits (digits' 1,167 training samples make
    10 shards), eight of top-4 (10 bytes a sample: 4 float16 log-probabilities, 4 ids of 4 bits; 3 shards)."""
    monkeypatch.setattr(cache, "SHARD_BYTES", 2 * 64 * 10 * 4)


def teacher_calls(monkeypatch):
    calls = []
    forward = Teacher.forward
    monkeypatch.setattr(Teacher, "forward", lambda self, x: calls.append(len(x)) or forward(self, x))
    return calls


def test_shards_are_read_as_one_array_in_memory_and_memory_mapped(tiny_recipe, tmp_path, small_shards, monkeypatch):
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    tiny_recipe["data"]["eval_batch_size"] = 64
    manifest = build_cache(Recipe.from_dict(tiny_recipe), tmp_path / "cache", topk=4)
    assert manifest["shard_samples"] == 512 and len(list((tmp_path / "cache" / "shards").glob("*.npy"))) == 2 * 3
    session = Session(Recipe.from_dict(tiny_recipe), tmp_path / "runs" / "read", Console())
    index = torch.tensor([1166, 0, 511, 512, 1024, 5, 1000])  # across shards, unsorted, the last sample
    held = CachedTeacher(tmp_path / "cache", session)
    monkeypatch.setattr(cache, "IN_MEMORY_BYTES", 0)
    mapped = CachedTeacher(tmp_path / "cache", session)
    assert isinstance(held.arrays["topk_ids"], torch.Tensor)
    assert isinstance(mapped.arrays["topk_ids"], _shards.ShardedArray)
    (a, _), (b, _) = held.lookup(index), mapped.lookup(index)
    assert torch.equal(a.log_probs, b.log_probs) and torch.equal(a.indices, b.indices)
    online = torch.log_softmax(session.live_teacher()[0](session.data.train.x[index]), -1).topk(4)
    assert torch.equal(b.indices, online.indices) and torch.allclose(b.log_probs, online.values, atol=2e-3)


def test_an_interrupted_cache_goes_on_from_its_last_shard(tiny_recipe, tmp_path, small_shards, monkeypatch):
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    tiny_recipe["data"]["eval_batch_size"] = 64
    recipe = Recipe.from_dict(tiny_recipe)
    whole = build_cache(recipe, tmp_path / "whole")
    flush, flushed = _shards.ShardBuffer.flush, []

    def interrupted(self, folder, view, shard):
        if len(flushed) == 3:
            raise KeyboardInterrupt
        flushed.append(shard)
        flush(self, folder, view, shard)

    monkeypatch.setattr(_shards.ShardBuffer, "flush", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(recipe, tmp_path / "cut")
    assert not (tmp_path / "cut" / "manifest.json").exists()  # not a cache yet: training refuses it
    monkeypatch.setattr(_shards.ShardBuffer, "flush", flush)
    cached, outputs = [], cache._Outputs.__call__
    monkeypatch.setattr(cache._Outputs, "__call__", lambda self, x: cached.append(len(x)) or outputs(self, x))
    resumed = build_cache(recipe, tmp_path / "cut")
    assert cached == [64] + [64] * 12 + [1167 % 64]  # a probe batch, then only the shards not written yet
    for shard in range(10):
        name = f"logits-v0-{shard:05d}.npy"
        assert np.array_equal(
            np.load(tmp_path / "whole" / "shards" / name), np.load(tmp_path / "cut" / "shards" / name)
        )
    assert resumed["bytes_per_sample"] == whole["bytes_per_sample"]


def test_a_folder_holding_another_cache_is_not_overwritten(tiny_recipe, tmp_path):
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    tiny_recipe["data"]["eval_batch_size"] = 64
    build_cache(Recipe.from_dict(tiny_recipe), tmp_path / "cache")
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache" / "shards").iterdir()}
    with pytest.raises(KdforgeError, match=r"holds \(part of\) a teacher cache made with other settings \(format, k, "):
        build_cache(Recipe.from_dict(tiny_recipe), tmp_path / "cache", topk=3)
    assert {p.name: p.read_bytes() for p in (tmp_path / "cache" / "shards").iterdir()} == before


@pytest.fixture
def folder_recipe(tmp_path):
    write_images(tmp_path / "pets" / "train", 8)
    write_images(tmp_path / "pets" / "test", 2, seed=1)
    return {
        "name": "pets",
        "seed": 0,
        "data": {
            "name": "image_folder",
            "path": str(tmp_path / "pets"),
            "image_size": 8,
            "train_crop": "random_resized",
            "min_scale": 0.3,
            "flip": True,
            "batch_size": 8,
            "workers": 0,
        },
        "teacher": {"source": "train", "model": {"name": "cnn", "width": 4, "depth": 1}, "train": {"epochs": 1}},
        "student": {"model": {"name": "cnn", "width": 4, "depth": 1}},
        "losses": [{"name": "kd"}],
        "train": {"epochs": 3, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }


def test_an_image_folder_is_cached_view_by_view_and_the_student_sees_the_cached_views(folder_recipe, tmp_path):
    manifest = build_cache(Recipe.from_dict(folder_recipe), tmp_path / "cache", views=2)
    assert manifest["views"] == 2 and manifest["samples"] == 20  # 24 training images, 4 drawn for validation
    recipe = Recipe.from_dict(
        {**folder_recipe, "teacher": {**folder_recipe["teacher"], "cache": str(tmp_path / "cache")}}
    )
    session = Session(recipe, next((tmp_path / "runs").glob("pets-cache-*")), Console())
    cached, _ = session.acquire_teacher()
    online, _ = session.live_teacher()
    with torch.no_grad():
        for epoch in (0, 1, 2, 3):  # epochs 2 and 3 show views 0 and 1 again, in a new order
            x, _, index = next(iter(session.train.epoch(epoch)))
            assert torch.allclose(cached.lookup(index, epoch=epoch)[0], online(x), atol=1e-5)
    crops = [next(iter(session.train.epoch(e)))[0] for e in (0, 1)]
    assert not torch.equal(*crops)  # the two views are two different crops


def test_training_from_an_image_folder_cache_never_runs_the_teacher(folder_recipe, tmp_path, monkeypatch):
    build_cache(Recipe.from_dict(folder_recipe), tmp_path / "cache", topk=2)
    calls = teacher_calls(monkeypatch)
    result = run(
        Recipe.from_dict({**folder_recipe, "teacher": {**folder_recipe["teacher"], "cache": str(tmp_path / "cache")}})
    )
    assert calls == [] and result.results["student"]["test"]["accuracy"] >= 0


def test_a_cache_of_an_image_folder_refuses_batch_augmentation(folder_recipe, tmp_path):
    folder_recipe["data"]["augment"] = {"shift": 1}
    with pytest.raises(KdforgeError, match="data.augment views are for data held in memory: remove data.augment"):
        build_cache(Recipe.from_dict(folder_recipe), tmp_path / "cache")
