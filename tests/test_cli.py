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
    run_dir = next((tmp_path / "runs").glob("tiny-*"))
    assert invoke("eval", run_dir) == 0 and "student" in capsys.readouterr().out
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
