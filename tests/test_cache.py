"""Cached teacher outputs: exact round trip, top-k, training without the teacher, stale caches."""

import json
import math

import pytest
import torch

from kdforge import Recipe, run
from kdforge.errors import KdforgeError
from kdforge.runner import build_cache
from kdforge.teachers import TEACHER_SOURCES
from kdforge.teachers.cache import CachedTeacher
from kdforge.teachers.teacher import Teacher


@pytest.fixture
def cached(tiny_recipe, tmp_path):
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    manifest = build_cache(Recipe.from_dict(tiny_recipe), tmp_path / "cache")
    return tiny_recipe, tmp_path / "cache", manifest


def online_logits(recipe, run_dir):
    from rich.console import Console

    from kdforge.session import Session

    session = Session(recipe, run_dir, Console())
    teacher, _ = session.live_teacher()
    return session, teacher(session.data.train.x)


def test_dense_cache_equals_the_online_teacher_and_reports_its_size(cached, tmp_path):
    raw, path, manifest = cached
    session, logits = online_logits(Recipe.from_dict(raw), next((tmp_path / "runs").glob("tiny-cache-*")))
    cache = CachedTeacher(path, session)
    index = torch.tensor([5, 0, 17, 3])
    assert torch.equal(cache.lookup(index)[0], logits[index])
    assert manifest["bytes_per_sample"] >= 10 * 4 and manifest["format"] == "dense"


def test_topk_cache_keeps_the_top_classes_in_float16(cached, tmp_path):
    raw, _, _ = cached
    build_cache(Recipe.from_dict(raw), tmp_path / "top3", topk=3)
    session, logits = online_logits(Recipe.from_dict(raw), tmp_path / "runs")
    sparse, _ = CachedTeacher(tmp_path / "top3", session).lookup(torch.arange(8))
    top = torch.log_softmax(logits[:8], -1).topk(3)
    assert torch.equal(sparse.log_probs, top.values.half().float()) and torch.equal(sparse.indices, top.indices)
    manifest = json.loads((tmp_path / "top3" / "manifest.json").read_text())
    assert manifest["id_bits"] == 4 and manifest["arrays"]["topk_ids"] == {"shape": [2], "dtype": "uint8"}
    assert 3 * 2 + 2 <= manifest["bytes_per_sample"] < 3 * 2 + 2 + 1  # 3 ids of 4 bits in 2 bytes; .npy headers


def test_training_from_the_cache_never_runs_the_teacher(cached, monkeypatch):
    raw, path, manifest = cached
    monkeypatch.setattr(TEACHER_SOURCES, "get", lambda name: pytest.fail("a teacher source was used"))
    monkeypatch.setattr(Teacher, "forward", lambda self, x: pytest.fail("the teacher ran"))
    result = run(Recipe.from_dict({**raw, "teacher": {**raw["teacher"], "cache": str(path)}}))
    assert result.results["teacher"]["test"] == manifest["teacher"]["test"] and result.results["teacher"][
        "cache"
    ] == str(path)
    assert 0.1 < result.student_accuracy <= 1.0


def test_a_cache_for_other_data_or_teacher_is_refused(cached):
    raw, path, _ = cached
    with pytest.raises(KdforgeError, match="was made for another teacher or data.*data_hash"):
        run(Recipe.from_dict({**raw, "seed": 1, "teacher": {**raw["teacher"], "cache": str(path)}}))
    other = {**raw["teacher"], "model": {"name": "cnn", "width": 4, "depth": 2}, "cache": str(path)}
    with pytest.raises(KdforgeError, match="teacher_hash"):
        run(Recipe.from_dict({**raw, "teacher": other}))
    with pytest.raises(KdforgeError, match="has no manifest.json"):
        run(Recipe.from_dict({**raw, "teacher": {**raw["teacher"], "cache": str(path.parent)}}))


def test_augmented_views_are_cached_and_shown_to_the_student_exactly(cached, tmp_path):
    from rich.console import Console

    from kdforge.session import Session
    from kdforge.teachers.cache import fixed_views

    raw, path, _ = cached
    augmented = {**raw, "data": {**raw["data"], "augment": {"shift": 1, "noise": 0.1}}}
    build_cache(Recipe.from_dict(augmented), tmp_path / "views", views=3)
    recipe = Recipe.from_dict({**augmented, "teacher": {**raw["teacher"], "cache": str(tmp_path / "views")}})
    session = Session(recipe, tmp_path / "runs", Console())
    cache, _ = session.acquire_teacher()
    online, _ = session.live_teacher()
    views = fixed_views(session, 3)
    for epoch in (0, 1, 4):  # view epoch % 3
        x, y, index = next(iter(session.train.epoch(epoch)))
        assert torch.equal(x, views(session.data.train.x[index], index, epoch))  # the student sees the cached view
        assert torch.allclose(
            cache.lookup(index, epoch=epoch)[0], online(x), atol=1e-5
        )  # and the teacher's output on it
    first = next(iter(session.train.epoch(0)))[0]
    assert not torch.equal(first, session.data.train.x[next(iter(session.train.epoch(0)))[2]])  # views are augmented
    with pytest.raises(KdforgeError, match="needs data.augment"):
        build_cache(Recipe.from_dict(raw), tmp_path / "plain", views=2)


FEATURE_LOSSES = [
    {"name": "hint", "student": "features.0", "teacher": "features.1", "projector": "conv1x1"},
    {"name": "cka", "student": "auto", "teacher": "auto", "mapping": "uniform"},  # resolved on the cached module tree
]


@pytest.fixture
def feature_recipe(tiny_recipe):
    return {
        **tiny_recipe,
        "student": {"model": {"name": "cnn", "width": 4, "depth": 2}},
        "losses": [*tiny_recipe["losses"], *FEATURE_LOSSES],
        "train": {"epochs": 1, "baseline": False},
    }


def test_tapped_teacher_layers_are_cached_and_give_the_online_loss(feature_recipe, tmp_path):
    from rich.console import Console

    from kdforge.distiller import Distiller
    from kdforge.losses import build_losses
    from kdforge.session import Session

    manifest = build_cache(Recipe.from_dict(feature_recipe), tmp_path / "feats")
    assert manifest["features"] == {"features.1": "feature_0", "features.0": "feature_1"}
    assert manifest["arrays"]["feature_0"] == {"shape": [16, 2, 2], "dtype": "float32"}
    recipe = Recipe.from_dict(
        {**feature_recipe, "teacher": {**feature_recipe["teacher"], "cache": str(tmp_path / "feats")}}
    )
    session = Session(recipe, next((tmp_path / "runs").glob("tiny-cache-*")), Console())
    cache, _ = session.acquire_teacher()
    online, _ = session.live_teacher()
    losses = {}
    for name, teacher in (("cache", cache), ("online", online)):
        torch.manual_seed(0)
        distiller = Distiller(session.build_student(), teacher, build_losses(recipe.losses), session.example)
        x, y, index = next(iter(session.train.epoch(0)))
        losses[name] = distiller(x, y, index=index).parts
    assert losses["cache"].keys() == losses["online"].keys()
    for part in losses["online"]:
        assert torch.allclose(losses["cache"][part], losses["online"][part], rtol=1e-5, atol=1e-6), part


def test_training_on_cached_features_never_runs_the_teacher(feature_recipe, tmp_path, monkeypatch):
    build_cache(Recipe.from_dict(feature_recipe), tmp_path / "feats", feature_dtype="float16")
    monkeypatch.setattr(Teacher, "forward", lambda self, x: pytest.fail("the teacher ran"))
    result = run(
        Recipe.from_dict({**feature_recipe, "teacher": {**feature_recipe["teacher"], "cache": str(tmp_path / "feats")}})
    )
    epoch = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert {"hint", "cka"} <= epoch["train"].keys() and all(math.isfinite(v) for v in epoch["train"].values())


def test_float16_features_halve_their_size_and_stay_close(feature_recipe, tmp_path):
    full = build_cache(Recipe.from_dict(feature_recipe), tmp_path / "f32")
    half = build_cache(Recipe.from_dict(feature_recipe), tmp_path / "f16", feature_dtype="float16")
    logits_bytes = 10 * 4
    assert half["bytes_per_sample"] - logits_bytes == pytest.approx(
        (full["bytes_per_sample"] - logits_bytes) / 2, rel=0.05
    )
    import numpy as np

    a, b = (np.load(tmp_path / d / "shards" / "feature_0-v0-00000.npy") for d in ("f32", "f16"))
    assert b.dtype == np.float16 and np.allclose(a, b, rtol=1e-2, atol=1e-2)


def test_a_cache_without_the_layers_a_term_reads_is_refused(cached):
    raw, path, _ = cached
    losses = [*raw["losses"], {"name": "hint", "student": "features.0", "teacher": "features.1"}]
    with pytest.raises(KdforgeError, match=r"read teacher layers \['features.1'\].*holds no layers; rebuild it"):
        run(
            Recipe.from_dict(
                {
                    **raw,
                    "student": {"model": {"name": "cnn", "width": 8, "depth": 2}},
                    "losses": losses,
                    "teacher": {**raw["teacher"], "cache": str(path)},
                }
            )
        )
    with pytest.raises(KdforgeError, match="no module named 'features.7'"):
        losses[-1]["teacher"] = "features.7"
        run(
            Recipe.from_dict(
                {
                    **raw,
                    "student": {"model": {"name": "cnn", "width": 8, "depth": 2}},
                    "losses": losses,
                    "teacher": {**raw["teacher"], "cache": str(path)},
                }
            )
        )


def test_a_cache_serves_recipes_that_differ_only_in_how_the_student_trains(cached):
    raw, path, _ = cached
    teacher = {**raw["teacher"], "cache": str(path)}
    student_only = {
        "optim": {"name": "adamw", "lr": 1e-3},  # the teacher trained at optim.lr ...
        "teacher": {**teacher, "train": {**raw["teacher"]["train"], "lr": 3.0e-3}},  # ... which it now names itself
        "train": {"epochs": 1, "baseline": False, "channels_last": False, "checkpoint_interval": 0},
    }
    result = run(Recipe.from_dict({**raw, **student_only}))
    assert result.results["teacher"]["cache"] == str(path)
    with pytest.raises(KdforgeError, match="teacher_hash"):  # a teacher trained with clipped gradients is another
        run(Recipe.from_dict({**raw, "teacher": teacher, "train": {**raw["train"], "grad_clip": 1.0}}))


def test_a_loaded_teachers_outputs_key_is_its_section_and_weights_file(tiny_recipe, tmp_path):
    from kdforge.teachers.sources import teacher_outputs_key

    weights = tmp_path / "teacher.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    loaded = {**tiny_recipe, "teacher": {"source": "checkpoint", "path": str(weights), "model": {"name": "cnn"}}}

    def key(**changes):
        recipe = Recipe.from_dict({**loaded, **changes})
        return teacher_outputs_key(recipe, recipe.teacher)

    same = key(
        optim={"name": "sgd", "lr": 0.1},
        train={"epochs": 9, "grad_clip": 1.0, "channels_last": False},
        data={"name": "digits", "batch_size": 7},
        seed=3,
    )
    assert same == key()
    torch.save({"w": torch.ones(3)}, weights)  # new weights under the same name
    assert key() != same
