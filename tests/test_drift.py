"""Drift caught before it lands: one cheap cell of a benchmark re-run and compared with its committed results file,
under benchmarks/reproduce.py's rule (equal where the file was measured on this machine class, else within the
spread of its seeds). A change that moves a committed figure must regenerate that file in the same commit."""

import importlib.util
import json
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def committed(name):
    return json.loads((BENCHMARKS / "results" / name).read_text())


def test_methods_a_students_seed_matches_methods_seeds(tmp_path, monkeypatch):
    """The MLP-16 on 8×8 digits alone, seed 0, at the default recipe's 60 epochs (methods_seeds.json)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # methods.py imports its neighbours
    methods, reproduce = load("methods"), load("reproduce")
    found = methods.seeds_job("digits-mlp16", methods.ALONE, "0.003", [0], str(tmp_path), torch.get_num_threads())
    results = committed("methods_seeds.json")
    values = [run["test"] for run in results["pairs"]["digits-mlp16"]["0.003"]["alone"]]
    assert reproduce.seed_agrees(results, values, 0, found[0]["test"]) is None
