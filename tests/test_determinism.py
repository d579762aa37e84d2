"""On one machine and thread count a run's numbers are its own: the same whatever ran before it in the process,
in another process, with its teacher trained or reused, and its seed run alone or in a sweep with other seeds, one
process or several. (Across machine classes they move: docs/guide.md, "Reproducing our numbers".)"""

import io
import json
import os
import subprocess
import sys

import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file

from kdforge import Recipe, run
from kdforge.sweeper import sweep


def weights(result):
    return load_file(result.run_dir / "student.safetensors")


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_is_the_same_after_other_runs_in_its_process_in_another_process_and_with_its_teacher_reused(
    tiny_recipe, tmp_path
):
    threads = torch.get_num_threads()
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    first = run(Recipe.from_dict(tiny_recipe))  # trains the teacher
    run(Recipe.from_dict({**tiny_recipe, "seed": 1, "student": {"model": {"name": "mlp", "hidden": [8]}}}))
    again = run(Recipe.from_dict(tiny_recipe))  # after another run, reusing the first run's teacher
    assert again.results["teacher"]["cached_from"] == str(first.run_dir / "teacher")
    assert same(weights(first), weights(again)) and again.results["student"]["test"] == first.results["student"]["test"]
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**tiny_recipe, "log": {"dir": str(tmp_path / "other")}}))
    env = {"OMP_NUM_THREADS": str(threads)}  # the same thread count in the other process
    command = [sys.executable, "-m", "kdforge", "train", "tiny.yaml"]
    subprocess.run(command, cwd=tmp_path, check=True, env={**os.environ, **env}, capture_output=True)
    elsewhere = next((tmp_path / "other").glob("tiny-*"))
    assert same(weights(first), load_file(elsewhere / "student.safetensors"))
    assert json.loads((elsewhere / "results.json").read_text())["student"]["test"] == first.results["student"]["test"]


def test_a_seed_gives_the_same_result_run_alone_or_in_a_sweep_of_two_processes(tiny_recipe, tmp_path):
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    quiet = Console(file=io.StringIO())
    alone = run(Recipe.from_dict({**tiny_recipe, "seed": 4}), console=quiet).results["student"]["test"]
    parallel = sweep(Recipe.from_dict(tiny_recipe), seeds=2, first_seed=3, console=quiet, jobs=2).summary
    assert parallel["seeds"] == [3, 4] and [r["seed"] for r in parallel["runs"]] == [3, 4]
    assert parallel["runs"][0]["student"]["test"] != alone and parallel["runs"][1]["student"]["test"] == alone
    # the sweep says where its runs ran: their thread count, not the main process's (reproduce.py compares by it)
    assert parallel["measured_on"]["machine_class"] == parallel["runs"][0]["measured_on"]["machine_class"]
