"""Cached teacher outputs: exact round trip, top-k, training without the teacher, stale caches."""

import json

import pytest
import torch

from kdforge import Recipe, run
from kdforge.errors import KdforgeError
from kdforge.run import build_cache
from kdforge.teachers import TEACHER_SOURCES
from kdforge.teachers.cache import CachedTeacher
from kdforge.teachers.teacher import Teacher


@pytest.fixture
def cached(tiny_recipe, tmp_path):
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    manifest = build_cache(Recipe.from_dict(tiny_recipe), tmp_path / "cache")
    return tiny_recipe, tmp_path / "cache", manifest


def online_logits(recipe, run_dir):
    from kdforge.run import Session
    from rich.console import Console

    session = Session(recipe, run_dir, Console())
    teacher, _ = session.acquire_teacher(use_cache=False)
    return session, teacher(session.data.train.x)


def test_dense_cache_equals_the_online_teacher_and_reports_its_size(cached, tmp_path):
    raw, path, manifest = cached
    session, logits = online_logits(Recipe.from_dict(raw), next((tmp_path / "runs").glob("tiny-cache-*")))
    cache = CachedTeacher(path, session)
    index = torch.tensor([5, 0, 17, 3])
    assert torch.equal(cache.lookup(index), logits[index])
    assert manifest["bytes_per_sample"] >= 10 * 4 and manifest["format"] == "dense"


def test_topk_cache_keeps_the_top_classes(cached, tmp_path):
    raw, _, _ = cached
    build_cache(Recipe.from_dict(raw), tmp_path / "top3", topk=3)
    session, logits = online_logits(Recipe.from_dict(raw), tmp_path / "runs")
    sparse = CachedTeacher(tmp_path / "top3", session).lookup(torch.arange(8))
    top = torch.log_softmax(logits[:8], -1).topk(3)
    assert torch.allclose(sparse.log_probs, top.values, atol=1e-6) and torch.equal(sparse.indices, top.indices)
    assert json.loads((tmp_path / "top3" / "manifest.json").read_text())["bytes_per_sample"] < 10 * 4


def test_training_from_the_cache_never_runs_the_teacher(cached, monkeypatch):
    raw, path, manifest = cached
    monkeypatch.setattr(TEACHER_SOURCES, "get", lambda name: pytest.fail("a teacher source was used"))
    monkeypatch.setattr(Teacher, "forward", lambda self, x: pytest.fail("the teacher ran"))
    result = run(Recipe.from_dict({**raw, "teacher": {**raw["teacher"], "cache": str(path)}}))
    assert result.results["teacher"]["test"] == manifest["teacher"]["test"] and result.results["teacher"]["cache"] == str(path)
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
    from kdforge.run import Session
    from kdforge.teachers.cache import fixed_views
    from rich.console import Console

    raw, path, _ = cached
    augmented = {**raw, "data": {**raw["data"], "augment": {"shift": 1, "noise": 0.1}}}
    build_cache(Recipe.from_dict(augmented), tmp_path / "views", views=3)
    recipe = Recipe.from_dict({**augmented, "teacher": {**raw["teacher"], "cache": str(tmp_path / "views")}})
    session = Session(recipe, tmp_path / "runs", Console())
    cache, _ = session.acquire_teacher()
    online, _ = session.acquire_teacher(use_cache=False)
    views = fixed_views(session, 3)
    for epoch in (0, 1, 4):  # view epoch % 3
        x, y, index = next(iter(session.train.epoch(epoch)))
        assert torch.equal(x, views(session.data.train.x[index], index, epoch))  # the student sees the cached view
        assert torch.allclose(cache.lookup(index, epoch=epoch), online(x), atol=1e-5)  # and the teacher's output on it
    first = next(iter(session.train.epoch(0)))[0]
    assert not torch.equal(first, session.data.train.x[next(iter(session.train.epoch(0)))[2]])  # views are augmented
    with pytest.raises(KdforgeError, match="needs data.augment"):
        build_cache(Recipe.from_dict(raw), tmp_path / "plain", views=2)


def test_cache_refuses_feature_terms(cached):
    raw, path, _ = cached
    losses = [*raw["losses"], {"name": "hint", "student": "features.0", "teacher": "features.1"}]
    with pytest.raises(KdforgeError, match="loss term 'hint' reads the teacher's layers"):
        run(Recipe.from_dict({**raw, "losses": losses, "teacher": {**raw["teacher"], "cache": str(path)}}))
