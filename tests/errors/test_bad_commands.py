"""Command-line values and recipe combinations that ``kdforge tune``, ``kdforge cache`` and ``kdforge check`` cannot
use: one message naming the option (or key) and its value, exit 2, before a teacher or a trial is trained."""

from __future__ import annotations

import json

import pytest

# ----------------------------------------------------------------------------- kdforge tune

STORAGE_CASES = {
    "unknown database scheme": ("foo://bar", ["--storage 'foo://bar'", "'foo' is no database"]),
    "sqlite file in a missing folder": ("sqlite:///{tmp}/absent/study.db", ["--storage", "cannot be opened"]),
    "journal file in a missing folder": ("{tmp}/absent/study.journal", ["--storage", "absent", "does not exist"]),
}


@pytest.mark.parametrize("case", STORAGE_CASES, ids=list(STORAGE_CASES))
def test_tune_storage_that_cannot_be_opened(case, fails, recipe, tmp_path):
    storage, names = STORAGE_CASES[case]
    message = fails("tune", recipe(), "--trials", "1", "--storage", storage.format(tmp=tmp_path), names=names)
    assert "sqlalche.me" not in message and not (tmp_path / "runs" / "tiny-tune").exists()


SPACE_CASES = {
    "misspelled spec key": ("losses.1.temperature={low: 1, hihg: 3}", ["hihg", "did you mean 'high'?"]),
    "range upside down": ("losses.1.temperature={low: 5, high: 3}", ["a range needs low < high"]),
    "factor of 1": ("optim.lr={factor: 1}", ["factor", "greater than 1"]),
    "misspelled recipe key": ("losses.1.temprature={low: 1, high: 3}", ["did you mean 'losses.1.temperature'?"]),
    "misspelled section": ("optimm.lr={factor: 3}", ["'optimm.lr'", "did you mean 'optim.lr'?"]),
    "loss option at its default": ("losses.1.tempreature={low: 1, high: 3}", ["losses.1.temperature"]),
    "a range no term can take": (
        "losses.1.temperature={low: -3, high: -1}",
        ["the search space gives recipes that fail", "temperature must be positive"],
    ),
    "a last choice no recipe can take": (
        "data.batch_size={choice: [32, 0]}",
        ["highest value, last choice", "data.batch_size"],
    ),
}


@pytest.mark.parametrize("case", SPACE_CASES, ids=list(SPACE_CASES))
def test_tune_space_mistakes_are_named_in_plain_words(case, fails, recipe):
    space, names = SPACE_CASES[case]
    message = fails("tune", recipe(), "--trials", "1", "--space", space, names=names)
    assert "pydantic" not in message and "https://" not in message and "[type=" not in message


# ----------------------------------------------------------------------------- kdforge cache


def test_cache_topk_above_the_class_count(fails, recipe, tmp_path):
    fails(
        "cache",
        recipe(),
        "--topk",
        "50",
        "--out",
        tmp_path / "cache",
        names=["--topk 50", "more than the 10 classes", "at most 10"],
    )
    assert not (tmp_path / "cache" / "manifest.json").exists()


# ----------------------------------------------------------------------------- split_column


@pytest.mark.parametrize("streaming", [False, True])
def test_split_column_values_that_name_no_split(streaming, fails, recipe, tmp_path):
    marks = ["train"] * 30 + ["validation"] * 6 + ["test"] * 6 + ["holdout"] * 4 + ["Train"] * 2
    rows = [{"x": [float(i), float(i % 3)], "y": i % 2, "part": m} for i, m in enumerate(marks)]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = {"name": "hf", "path": str(path), "input": "x", "label": "y", "split_column": "part"}
    changes = {
        "data": {**data, "streaming": streaming},
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [8]}},
    }
    fails("check", recipe(changes), names=["split_column 'part'", "rows.jsonl", "'Train', 'holdout'", "validation"])


# ----------------------------------------------------------------------------- what check refuses before loading


def chat_recipe(tmp_path, **data):
    """An on-policy chat recipe whose files do not even exist: the recipe alone shows the problem."""
    return {
        "data": {"name": "chat_lm", "files": [str(tmp_path / "absent.jsonl")], "tokenizer": str(tmp_path), **data},
        "teacher": {"source": "hf", "model": {"name": str(tmp_path / "absent-model")}, "train": None},
        "student": {"model": {"name": "lm_transformer"}},
        "losses": [{"name": "kd"}],
        "train": {"epochs": 1, "on_policy": {"fraction": 0.5}},
    }


ON_POLICY_CASES = {
    "a classification recipe": (
        lambda tmp: {"train": {"epochs": 1, "on_policy": {"fraction": 0.5}}},
        ["train.on_policy", "data 'digits' is not language-model data", "my.yaml:"],
    ),
    "packed chat rows": (lambda tmp: chat_recipe(tmp), ["data.pack", "one example per row", "pack: false"]),
    "packed chat rows, said so": (lambda tmp: chat_recipe(tmp, pack=True), ["data.pack", "my.yaml:"]),
    "the teacher writes from a cache": (
        lambda tmp: (
            chat_recipe(tmp, pack=False)
            | {
                "teacher": {"source": "hf", "model": {"name": "m"}, "train": None, "cache": str(tmp)},
                "train": {"epochs": 1, "on_policy": {"fraction": 0.5, "by": "teacher"}},
            }
        ),
        ["train.on_policy.by", "live teacher"],
    ),
}


@pytest.mark.parametrize("case", ON_POLICY_CASES, ids=list(ON_POLICY_CASES))
def test_check_refuses_on_policy_recipes_train_would_refuse(case, fails, recipe, tmp_path):
    changes, names = ON_POLICY_CASES[case]
    fails("check", recipe(changes(tmp_path)), names=names)
