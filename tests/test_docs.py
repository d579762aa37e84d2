"""The guide's examples run: the one-file plugin registers a loss, a model and a dataset
that a recipe can use from the command line."""

import re
from pathlib import Path

import yaml

GUIDE = Path(__file__).parents[1] / "docs" / "guide.md"


def test_guide_plugin_example_works_from_the_cli(invoke, tmp_path, capsys):
    code = re.search(r"```python\n(# my_parts.py.*?)```", GUIDE.read_text(), re.S).group(1)
    plugin = tmp_path / "my_parts.py"
    plugin.write_text(code)
    recipe = {
        "name": "blobs",
        "data": {"name": "blobs", "n": 300, "batch_size": 32},
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1}},
        "student": {"model": {"name": "linear"}},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "soft_ce", "weight": 0.5, "temperature": 2.0}],
        "train": {"epochs": 1},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    path = tmp_path / "blobs.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert invoke("--plugin", plugin, "check", path) == 0
    out = capsys.readouterr().out
    assert "check passed" in out and "soft_ce" in out
    assert invoke("--plugin", plugin, "list", "losses") == 0 and "teacher's probabilities" in capsys.readouterr().out
    assert invoke("--plugin", tmp_path / "nope.py", "list") == 2 and "plugin file" in capsys.readouterr().out


def test_a_third_party_family_in_one_file_plugs_in_with_plugin_or_an_entry_point(invoke, tmp_path, capsys, monkeypatch):
    """The guide's file is a whole family: its model and dataset train from a recipe, its hooks
    add a statistic to results.json and a section to report.md, and kdforge list names it."""
    import json
    import sys
    from importlib import metadata

    from kdforge import family

    monkeypatch.setattr(family, "FAMILIES", dict(family.FAMILIES))  # the plug-in's family leaves with the test
    monkeypatch.setattr(family, "DECLARED", dict(family.DECLARED))
    code = re.search(r"```python\n(# my_parts.py.*?)```", GUIDE.read_text(), re.S).group(1)
    (tmp_path / "my_parts.py").write_text(code)
    recipe = {
        "name": "blobs",
        "data": {"name": "blobs", "n": 300, "batch_size": 32},
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1}},
        "student": {"model": {"name": "linear"}},
        "losses": [{"name": "ce"}],
        "train": {"epochs": 1, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    (tmp_path / "blobs.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("--plugin", tmp_path / "my_parts.py", "train", tmp_path / "blobs.yaml") == 0
    (run_dir,) = (tmp_path / "runs").glob("blobs-*")
    assert json.loads((run_dir / "results.json").read_text())["student"]["weight_norm"] > 0
    assert "## The linear student" in (run_dir / "report.md").read_text()
    capsys.readouterr()
    assert invoke("list") == 0 and "linear: linear students" in capsys.readouterr().out
    assert invoke("list", "models") == 0 and "linear" in capsys.readouterr().out

    # installed instead of plugged in: found through the kdforge.families entry point group
    monkeypatch.setattr(family, "FAMILIES", {k: v for k, v in family.FAMILIES.items() if k != "linear"})
    monkeypatch.setattr(family, "DECLARED", {k: v for k, v in family.DECLARED.items() if k != "linear"})
    monkeypatch.setitem(family._state, "found", False)
    monkeypatch.setitem(family._state, "parts", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_parts", None)
    point = metadata.EntryPoint(name="linear", value="my_parts", group="kdforge.families")
    monkeypatch.setattr(family.metadata, "entry_points", lambda group: [point] if group == "kdforge.families" else [])
    assert [f.name for f in family.families()][-1] == "linear"


def test_the_training_page_lists_every_training_field():
    from kdforge.config import (
        AugmentConfig,
        EarlyStoppingConfig,
        LogConfig,
        OnPolicyConfig,
        OptimConfig,
        RandAugmentConfig,
        TokensAugmentConfig,
        TrainConfig,
    )

    page = (GUIDE.parent / "training.md").read_text()
    sections = {
        "data.augment": AugmentConfig,
        "data.augment.randaugment": RandAugmentConfig,
        "data.augment.tokens": TokensAugmentConfig,
        "optim": OptimConfig,
        "train": TrainConfig,
        "train.early_stopping": EarlyStoppingConfig,
        "train.on_policy": OnPolicyConfig,
        "log": LogConfig,
    }
    missing = [
        f"{prefix}.{name}"
        for prefix, model in sections.items()
        for name in model.model_fields
        if f"`{prefix}.{name}`" not in page
    ]
    assert not missing, f"docs/training.md does not list {missing}"
