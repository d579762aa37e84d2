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


def test_the_training_page_lists_every_training_field():
    from kdforge.config import AugmentConfig, EarlyStoppingConfig, LogConfig, OptimConfig, RandAugmentConfig, TrainConfig

    page = (GUIDE.parent / "training.md").read_text()
    sections = {"data.augment": AugmentConfig, "data.augment.randaugment": RandAugmentConfig, "optim": OptimConfig, "train": TrainConfig, "train.early_stopping": EarlyStoppingConfig, "log": LogConfig}
    missing = [f"{prefix}.{name}" for prefix, model in sections.items() for name in model.model_fields if f"`{prefix}.{name}`" not in page]
    assert not missing, f"docs/training.md does not list {missing}"
