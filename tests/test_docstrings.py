"""The docstring corpus is the same in every process, whatever it has imported, and is cached on disk."""

import json

import pytest

from kdforge.data import _docstrings
from kdforge.data.text import docstrings


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path))
    return tmp_path


def test_what_this_process_imported_changes_nothing_and_the_corpus_is_cached(cache, monkeypatch):
    import transformers.utils.logging  # noqa: F401 - adds warning_once and friends to logging.Logger

    docs = docstrings(["logging"])
    assert not any("logger.warning()" in doc for doc in docs)  # transformers' additions are not logging's
    assert not any("logger.warning()" in doc for doc in _docstrings.collect(["logging"]))  # nor here
    assert any(doc.startswith("Instances of the Logger class") for doc in docs)
    (saved,) = cache.glob("docstrings-*.json")
    assert json.loads(saved.read_text()) == docs

    def collect_again(modules):
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(_docstrings, "_collect_in_fresh_process", collect_again)
    assert docstrings(["logging"]) == docs


def test_a_damaged_cache_is_collected_again(cache):
    docs = docstrings(["colorsys"])
    (saved,) = cache.glob("docstrings-*.json")
    saved.write_text('["cut short')
    assert docstrings(["colorsys"]) == docs and json.loads(saved.read_text()) == docs


def test_example_lines_with_random_output_are_left_out():
    doc = ">>> rng.random(2)\narray([0.3, 0.7])  # may vary\nDone."
    assert _docstrings._steady(doc) == ">>> rng.random(2)\nDone."
