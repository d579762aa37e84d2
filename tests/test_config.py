"""Recipe validation: unknown keys, wrong types and bad overrides fail with a useful message."""

import pytest

from kdforge._recipe_yaml import parse_value
from kdforge.config import Recipe
from kdforge.errors import ConfigError

YAML = """\
name: t
teacher:
  source: train
  model: {name: cnn, width: 8}
student:
  model: {name: mlp, hidden: [16]}
losses:
  - {name: ce, weight: 0.1}
  - {name: kd, weight: 0.9, temprature: 4.0}
"""


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_typo_in_loss_option_names_the_key_the_fix_and_the_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        Recipe.from_yaml(write(tmp_path, YAML))
    message = str(err.value)
    assert "losses.1.temprature" in message
    assert "did you mean 'temperature'?" in message
    assert "r.yaml:9" in message


def test_typo_in_section_key_and_unknown_names(tmp_path):
    text = (
        YAML.replace("temprature", "temperature")
        .replace("name: t\n", "name: t\ntrian: {epochs: 3}\n")
        .replace("name: mlp", "name: mpl")
    )
    with pytest.raises(ConfigError) as err:
        Recipe.from_yaml(write(tmp_path, text))
    assert "unknown key 'trian' (did you mean 'train'?) [" in str(err.value)
    # sections are checked first; fix them and the registry names are checked
    with pytest.raises(ConfigError, match=r"student.model.name: unknown model 'mpl' \(did you mean 'mlp'\?\)"):
        Recipe.from_yaml(write(tmp_path, text.replace("trian: {epochs: 3}\n", "")))


def test_wrong_type_is_named(tmp_path):
    text = YAML.replace("temprature", "temperature").replace("width: 8", "width: eight")
    with pytest.raises(
        ConfigError, match=r"teacher.model.width: Input should be a valid integer \(got 'eight'\) \[.*r.yaml:4\]"
    ):
        Recipe.from_yaml(write(tmp_path, text))


def test_overrides_are_typed_and_named_in_errors(tmp_path):
    path = write(tmp_path, YAML.replace("temprature", "temperature"))
    recipe = Recipe.from_yaml(
        path, ["train.epochs=5", "optim.lr=1e-3", "losses.1.temperature=2", "student.model.hidden=[8, 8]"]
    )
    assert recipe.train.epochs == 5 and recipe.optim.lr == 1e-3
    assert recipe.losses[1].options == {"temperature": 2} and recipe.student.model.options["hidden"] == [8, 8]
    with pytest.raises(
        ConfigError, match=r"train.epochs: Input should be a valid integer.*\[from override 'train.epochs=abc'\]"
    ):
        Recipe.from_yaml(path, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match=r"did you mean 'epochs'\?.*override 'train.epoch=3'"):
        Recipe.from_yaml(path, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        Recipe.from_yaml(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="not an index of a list of 2 items"):
        Recipe.from_yaml(path, ["losses.5.weight=1.0"])


def test_source_rules_and_value_ranges(tmp_path):
    base = YAML.replace("temprature", "temperature")
    with pytest.raises(ConfigError, match="source 'checkpoint' needs teacher.path"):
        Recipe.from_yaml(write(tmp_path, base), ["teacher.source=checkpoint", "teacher.model=null"])
    with pytest.raises(ConfigError, match="greater than 0"):
        Recipe.from_yaml(write(tmp_path, base), ["optim.lr=0.0"])
    with pytest.raises(ConfigError, match="momentum is only used with name 'sgd'"):
        Recipe.from_yaml(write(tmp_path, base), ["optim.momentum=0.5"])


def test_yaml_roundtrip_keeps_every_value(tiny_recipe):
    recipe = Recipe.from_dict(tiny_recipe)
    again = Recipe.from_dict(__import__("yaml").safe_load(recipe.to_yaml()))
    assert again == recipe
    assert recipe.teacher.train.epochs == 2


def test_parse_value_reads_yaml_1_2_numbers():
    assert parse_value("1e-3") == 0.001 and parse_value("3") == 3 and parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True and parse_value("cnn") == "cnn"


def test_missing_recipe_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Recipe.from_yaml(tmp_path / "nope.yaml")
