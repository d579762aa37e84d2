"""The command line: help, list, check, train, eval, resume and error exits."""

import re

import yaml
from typer.testing import CliRunner

from kdforge.cli import app

runner = CliRunner()


def test_help_explains_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "train", "check", "cache", "eval", "list"):
        assert re.search(rf"│ {command}\s+\S", result.output)


def test_list(invoke, capsys):
    assert invoke("list", "losses") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("ce", "kd", "mse_logits", "hint"))
    assert invoke("list", "recipes") == 0 and "digits_kd" in capsys.readouterr().out
    assert invoke("list", "modles") == 2 and "did you mean 'models'?" in capsys.readouterr().out


def test_train_eval_resume_and_errors(invoke, tiny_recipe, tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", recipe) == 0 and "check passed" in capsys.readouterr().out
    assert invoke("train", recipe, "train.epochs=1", "train.baseline=false") == 0
    out = capsys.readouterr().out
    assert "student + KD" in out and "teacher" in out
    assert "\n\n" not in out  # no blank remains of progress bars when the output is not a terminal
    run_dir = next((tmp_path / "runs").glob("tiny-*"))
    assert invoke("eval", run_dir) == 0
    out = capsys.readouterr().out
    assert "student" in out and f"{run_dir} on digits test" in out  # the path whole, whatever the width
    # resuming a finished run retrains nothing and reports the same numbers
    assert invoke("train", "--resume", run_dir) == 0
    # errors: one message, exit code 2, no traceback
    assert invoke("train", recipe, "train.epoch=1") == 2
    out = capsys.readouterr().out
    assert "did you mean 'epochs'?" in out and "Traceback" not in out
    assert invoke("train", "no_such_recipe") == 2 and "not found" in capsys.readouterr().out
    assert invoke("eval", tmp_path) == 2 and "not a kdforge run directory" in capsys.readouterr().out


def test_cache_command_then_train_from_it(invoke, tiny_recipe, tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**tiny_recipe, "train": {"epochs": 1, "baseline": False}}))
    assert invoke("cache", recipe, "--out", tmp_path / "cache", "--topk", "3") == 0
    assert "bytes per sample" in capsys.readouterr().out
    assert invoke("train", recipe, f"teacher.cache={tmp_path / 'cache'}") == 0
    assert "student + KD" in capsys.readouterr().out


def test_export_pruned_students_measured_against_the_float_one(invoke, tiny_recipe, tmp_path, capsys):
    import json

    import torch

    from kdforge import load_student

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                **tiny_recipe,
                "student": {"model": {"name": "mlp", "hidden": [32, 16]}},
                "train": {"epochs": 1, "baseline": False},
            }
        )
    )
    assert invoke("train", recipe) == 0
    run_dir = next((tmp_path / "runs").glob("tiny-*"))
    dense = load_student(run_dir).state_dict()
    assert invoke("export", run_dir, "--prune", "0.5") == 0
    assert "non-zero weights" in capsys.readouterr().out
    pruned = load_student(run_dir / "student.pruned.safetensors").state_dict()
    weights = [k for k in dense if k.endswith("weight")]
    total = sum(dense[k].numel() for k in weights)
    assert sum(int((pruned[k] == 0).sum()) for k in weights) == round(
        0.5 * total
    )  # global: half of all weights together
    assert all(torch.equal(pruned[k][pruned[k] != 0], dense[k][pruned[k] != 0]) for k in weights)  # the rest untouched
    measured = json.loads((run_dir / "student.pruned.measured.json").read_text())
    assert measured["pruned unstructured 0.5"]["nonzero_weights"] < measured["float32"]["nonzero_weights"]
    assert (
        invoke(
            "export", run_dir, "--prune", "0.25", "--prune-kind", "structured", "--out", tmp_path / "rows.safetensors"
        )
        == 0
    )
    rows = load_student(tmp_path / "rows.safetensors").state_dict()
    *hidden, last = weights
    for k in hidden:  # a quarter of each hidden layer's output rows, whole; the output layer spared
        zero_rows = int((rows[k] == 0).all(dim=1).sum())
        assert zero_rows == round(0.25 * rows[k].shape[0])
    assert torch.equal(rows[last], dense[last])
    assert (
        invoke("export", run_dir, "--prune", "0.5", "--quantize", "int8") == 2
        and "give one of" in capsys.readouterr().out
    )


def test_public_names_stay_the_functions_whatever_was_imported_first():
    """``import kdforge`` is lazy; a public name that were also a submodule's (kdforge.run the function,
    kdforge/run.py the module) would turn into the module once anything imported it."""
    import importlib.util
    import subprocess
    import sys

    import kdforge

    clashing = [name for name in kdforge._HOMES if importlib.util.find_spec(f"kdforge.{name}") is not None]
    assert clashing == []
    code = "import kdforge.runner, kdforge.sweeper, kdforge.cli; from kdforge import run, sweep; print(run, sweep)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "<function run" in out and "<function sweep" in out


def test_help_imports_neither_torch_nor_the_heavy_libraries():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.argv = ['kdforge', '--help']\n"
        "from kdforge.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn', 'timm', 'transformers'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
