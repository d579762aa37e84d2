"""Bad recipes, overrides, command-line arguments and plugins, as a new user would give them, through the
real ``kdforge`` entry point: exit code 2, one plain message naming the culprit (key, line, option or file), no
traceback; and the same errors from the Python API."""

from __future__ import annotations

import pytest

# ----------------------------------------------------------------------------- recipes

RECIPE_CASES = {
    "unknown section": ({"traim": {"epochs": 1}}, ["traim", "did you mean 'train'?"]),
    "unknown loss option": (
        {"losses": [{"name": "kd", "temprature": 2.0}]},
        ["losses.0.temprature", "did you mean 'temperature'?"],
    ),
    "epochs as text": ({"train": {"epochs": "ten"}}, ["train.epochs", "'ten'"]),
    "negative epochs": ({"train": {"epochs": -3}}, ["train.epochs", "greater than 0"]),
    "zero learning rate": ({"optim": {"lr": 0}}, ["optim.lr"]),
    "unknown loss": ({"losses": [{"name": "kdd"}]}, ["losses.0.name", "unknown loss 'kdd'"]),
    "unknown student model": (
        {"student": {"model": {"name": "mlpp"}}},
        ["student.model.name", "unknown model 'mlpp'", "did you mean 'mlp'?"],
    ),
    "unknown dataset": ({"data": {"name": "digitz"}}, ["data.name", "did you mean 'digits'?"]),
    "unknown teacher source": ({"teacher": {"source": "zoo"}}, ["teacher.source", "'zoo'"]),
    "one-member ensemble": (
        {
            "teacher": {
                "source": "ensemble",
                "members": [{"source": "checkpoint", "path": "t.pt"}],
                "model": None,
                "train": None,
            }
        },
        ["at least two members"],
    ),
    "stage names a missing term": (
        {"stages": [{"epochs": 1, "weights": {"kdd": 1.0}}, {}]},
        ["stage 0", "'kdd'", "did you mean 'kd'?"],
    ),
    "curriculum partitions": ({"curriculum": {"partitions": [0.5, 0.9]}}, ["curriculum", "exactly 1"]),
    "teacher.lr without trainable": ({"teacher": {"lr": 0.1}}, ["teacher.lr", "trainable: true"]),
    "unknown device": ({"train": {"device": "gpu"}}, ["train.device", "'gpu'"]),
    "negative loss weight": ({"losses": [{"name": "kd", "weight": -1.0}]}, ["losses.0.weight", ">= 0"]),
    "name with parent folders": ({"name": "../../../elsewhere"}, ["name", "'/'", "one folder"]),
    "absolute name": ({"name": "/tmp/elsewhere"}, ["name", "'/'"]),
    "name with a backslash": ({"name": "a\\b"}, ["name", "'\\\\'"]),
    "dot-dot name": ({"name": ".."}, ["name", "empty or dot name"]),
    "fractions leave no training split": (
        {"data": {"val_fraction": 0.5, "test_fraction": 0.5}},
        ["data", "val_fraction + test_fraction is 1"],
    ),
    "hidden width negative": (
        {"student": {"model": {"name": "mlp", "hidden": [-4]}}},
        ["student.model.hidden.0", "greater than 0"],
    ),
    "hidden width zero": (
        {"student": {"model": {"name": "mlp", "hidden": [0]}}},
        ["student.model.hidden.0", "greater than 0"],
    ),
    "teacher width negative": (
        {"teacher": {"model": {"name": "cnn", "width": -1}}},
        ["teacher.model.width", "greater than 0"],
    ),
    "unknown model option": (
        {"student": {"model": {"name": "mlp", "widht": 3}}},
        ["student.model.widht", "unknown key"],
    ),
    "model option of the wrong type": (
        {"student": {"model": {"name": "mlp", "hidden": "big"}}},
        ["student.model.hidden", "'big'"],
    ),
    "no teacher, and a loss typo": (
        {"teacher": None, "losses": [{"name": "kd", "temprature": 2.0}]},
        ["losses.0.temprature", "did you mean 'temperature'?"],
    ),
    "no teacher for a term that reads one": (
        {"teacher": None},
        ["losses.1.name", "'kd' learns from a teacher", "no teacher section", "my.yaml:"],
    ),
    "no teacher to start the student from": (
        {"teacher": None, "losses": [{"name": "ce"}], "student": {"model": {"name": "mlp"}, "init_from_teacher": {}}},
        ["init_from_teacher"],
    ),
}


@pytest.mark.parametrize("case", RECIPE_CASES, ids=list(RECIPE_CASES))
def test_recipe_mistakes(case, fails, recipe):
    changes, names = RECIPE_CASES[case]
    fails("check", recipe(changes), names=names)


def test_every_problem_of_a_recipe_is_reported_at_once(fails, recipe):
    fails(
        "check",
        recipe(
            {
                "seed": "x",
                "losses": [{"name": "kd", "temprature": 2.0}],
                "train": {"epochs": "x"},
                "student": {"model": {"name": "mlp", "hidden": [-1]}},
            }
        ),
        names=["seed:", "losses.0.temprature", "train.epochs", "student.model.hidden.0"],
    )


def test_the_location_survives_an_absolute_recipe_path(fails, recipe, tmp_path, monkeypatch):
    path = recipe({"losses": [{"name": "kd", "temprature": 2.0}]}).resolve()
    fails("check", str(path), names=[f"[{path}:", "temprature"])
    monkeypatch.chdir(tmp_path)
    fails("check", path.name, names=[f"[{path.name}:", "temprature"])
    fails("check", path.name, "train.epoch=1", names=["[from override 'train.epoch=1']", "did you mean 'epochs'?"])


def test_markup_characters_in_values_are_printed_as_they_are(fails, recipe):
    fails("check", recipe({"name": "[bold]x[/bold]/y"}), names=["[bold]x[/bold]/y"])


YAML_CASES = {
    "duplicate key": ("name: a\nseed: 0\nname: b\n", ["my.yaml:3", "key 'name' is given twice", "lines 1 and 3"]),
    "duplicate nested key": ("train:\n  epochs: 1\n  epochs: 2\n", ["my.yaml:3", "'epochs'", "lines 2 and 3"]),
    "broken YAML": ("name: [a, b\nseed: 0\n", ["my.yaml", "not valid YAML"]),
    "a list, not a mapping": ("- name\n- seed\n", ["my.yaml", "mapping of sections"]),
    "empty file": ("", ["my.yaml", "mapping of sections"]),
}


@pytest.mark.parametrize("case", YAML_CASES, ids=list(YAML_CASES))
def test_recipe_files_that_are_not_recipes(case, fails, recipe):
    text, names = YAML_CASES[case]
    fails("check", recipe(text=text), names=names)


def test_recipe_in_another_encoding(fails, tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    fails("check", path, names=[str(path), "not utf-8 text", "byte 0xe9"])


def test_recipe_not_found(fails):
    fails("check", "no/such/recipe.yaml", names=["recipe 'no/such/recipe.yaml' not found"])


OVERRIDE_CASES = {
    "no equals sign": (["train.epochs"], ["override 'train.epochs'", "key.path=value"]),
    "unknown key": (["train.epoch=3"], ["[from override 'train.epoch=3']", "did you mean 'epochs'?"]),
    "index out of range": (["losses.5.weight=1"], ["losses.5.weight=1", "not an index of a list of 2 items"]),
    "wrong type": (["train.epochs=abc"], ["train.epochs", "[from override 'train.epochs=abc']"]),
    "into a value": (["seed.x=1"], ["override 'seed.x=1'", "'seed' is not a section"]),
    "bad name": (["name=../x"], ["name", "[from override 'name=../x']"]),
}


@pytest.mark.parametrize("case", OVERRIDE_CASES, ids=list(OVERRIDE_CASES))
def test_override_mistakes(case, fails, recipe):
    overrides, names = OVERRIDE_CASES[case]
    fails("check", recipe(), *overrides, names=names)


CLI_ARGUMENT_CASES = {
    "input shape not numbers": (["bench", "mlp", "--input-shape", "a,b"], ["--input-shape", "'a,b'"]),
    "batch sizes not numbers": (
        ["bench", "mlp", "--input-shape", "1,4", "--batch-sizes", "x"],
        ["--batch-sizes", "'x'"],
    ),
    "lengths not numbers": (["compare", "--models", "digits_kd", "--lengths", "0"], ["--lengths", "'0'"]),
    "model option negative": (
        ["bench", "mlp", "--input-shape", "1,4", "-o", "hidden=[-1]"],
        ["model 'mlp'", "hidden.0", "greater than 0"],
    ),
    "model option unknown": (
        ["bench", "mlp", "--input-shape", "1,4", "-o", "widht=3"],
        ["model 'mlp'", "unknown option 'widht'"],
    ),
    "model option without value": (
        ["bench", "mlp", "--input-shape", "1,4", "-o", "hidden"],
        ["--option takes key=value", "'hidden'"],
    ),
    "model name unknown": (["bench", "mlpp", "--input-shape", "1,4"], ["unknown model 'mlpp'", "did you mean 'mlp'?"]),
    "list of what": (["list", "[red]modles"], ["cannot list '[red]modles'"]),
    "eval of no run": (["eval", "/nonexistent-run"], ["'/nonexistent-run' is not a kdforge run directory"]),
}


@pytest.mark.parametrize("case", CLI_ARGUMENT_CASES, ids=list(CLI_ARGUMENT_CASES))
def test_command_line_arguments(case, fails):
    args, names = CLI_ARGUMENT_CASES[case]
    fails(*args, names=names)


def test_model_that_cannot_be_built_says_which(fails, recipe):
    fails(
        "check",
        recipe({"student": {"model": {"name": "vit", "embed_dim": 30, "heads": 4}}}),
        names=["model 'vit'", "embed_dim"],
    )


# ----------------------------------------------------------------------------- plugins

PLUGIN_CASES = {
    "syntax error": ("x = (\n", ["plugin file", "SyntaxError at", "bad_plugin.py:1"]),
    "raises while imported": (
        "import os\n\nraise RuntimeError('no GPU here')\n",
        ["plugin file", "RuntimeError at", "bad_plugin.py:3", "no GPU here"],
    ),
    "imports what is not installed": (
        "import not_installed_xyz\n",
        ["bad_plugin.py:1", "ModuleNotFoundError", "not_installed_xyz"],
    ),
    "registers a taken name": (
        "from kdforge.models import MODELS\n\n@MODELS.register('mlp')\nclass Mine:\n    pass\n",
        ["bad_plugin.py", "already registered"],
    ),
}


@pytest.mark.parametrize("case", PLUGIN_CASES, ids=list(PLUGIN_CASES))
def test_plugin_files(case, fails, tmp_path):
    text, names = PLUGIN_CASES[case]
    (tmp_path / "bad_plugin.py").write_text(text)
    fails("--plugin", tmp_path / "bad_plugin.py", "list", "models", names=names)


def test_plugin_not_found(fails, tmp_path):
    fails("--plugin", tmp_path / "none.py", "list", names=["plugin file", "none.py", "not found"])


def test_plugin_module_not_importable(fails):
    fails("--plugin", "no_such_module_xyz", "list", names=["plugin 'no_such_module_xyz'", "cannot be imported"])


@pytest.fixture
def fresh_families(monkeypatch, tmp_path):
    """The families as they are, restored after the test, with their parts to be imported again (a plug-in's
    declared in the test among them); ``tmp_path`` on the import path."""
    from kdforge import family, registry

    monkeypatch.setattr(family, "FAMILIES", dict(family.FAMILIES))
    monkeypatch.setattr(family, "DECLARED", dict(family.DECLARED))
    monkeypatch.setitem(family._state, "parts", False)
    for entries in (registry.MODELS, registry.LOSSES, registry.DATASETS, registry.TEACHER_SOURCES):
        monkeypatch.setattr(entries, "_filled", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    return family


PART_CASES = {
    "a part that does not exist": (None, ["plug-in family 'broken'", "'broken_part_xyz'", "no module"]),
    "a part that raises": ("x = 1\nraise ValueError('bad weights')\n", ["ValueError at", "broken_part_xyz.py:2"]),
    "a part that imports what is missing": ("import torch\nimport absent_dep_xyz\n", ["broken_part_xyz.py:2"]),
}


@pytest.mark.parametrize("case", PART_CASES, ids=list(PART_CASES))
def test_a_plugin_familys_parts_that_fail_are_the_plugins_error(case, fails, fresh_families, tmp_path):
    text, names = PART_CASES[case]
    if text is not None:
        (tmp_path / "broken_part_xyz.py").write_text(text)
    (tmp_path / "fam.py").write_text(
        "from kdforge.family import declare_family\n\n"
        "declare_family('broken', 'a family', parts=('broken_part_xyz',))\n"
    )
    message = fails("--plugin", tmp_path / "fam.py", "list", "models", names=names)
    assert "bug in kdforge" not in message


def test_an_installed_family_that_fails_is_named(fails, fresh_families, monkeypatch, tmp_path):
    from importlib import metadata

    (tmp_path / "installed_fam_xyz.py").write_text("import json\n\njson.loads('{')\n")
    point = metadata.EntryPoint(name="installed", value="installed_fam_xyz", group="kdforge.families")
    monkeypatch.setitem(fresh_families._state, "found", False)
    monkeypatch.setattr(fresh_families.metadata, "entry_points", lambda group: [point])
    fails("list", "models", names=["installed family 'installed'", "JSONDecodeError at", "installed_fam_xyz.py:3"])


# ----------------------------------------------------------------------------- the Python API and bugs


def test_run_raises_the_same_clear_error(tiny_recipe, tmp_path):
    import kdforge
    from kdforge.errors import KdforgeError

    with pytest.raises(KdforgeError, match="one folder"):
        kdforge.Recipe.from_dict({**tiny_recipe, "name": "../../escape"})
    (tmp_path / "blocked").write_text("a file")
    recipe = kdforge.Recipe.from_dict({**tiny_recipe, "log": {"dir": str(tmp_path / "blocked")}})
    with pytest.raises(KdforgeError, match="log.dir"):
        kdforge.run(recipe)


def test_a_bug_in_kdforge_keeps_its_traceback_and_asks_for_a_report(invoke, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    import kdforge.check

    monkeypatch.setattr(kdforge.check, "check", broken)
    assert invoke("check", "digits_kd") == 1
    captured = capsys.readouterr()
    assert "Traceback" in captured.err and "ZeroDivisionError" in captured.err
    assert "bug in kdforge" in captured.out and "report it" in captured.out


def test_a_missing_optional_dependency_names_the_extra_that_installs_it(fails, monkeypatch):
    def needs_timm(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'timm'", name="timm")

    import kdforge.check

    monkeypatch.setattr(kdforge.check, "check", needs_timm)
    fails("check", "digits_kd", names=["needs timm", "pip install 'kdforge[vision]'"])
