"""Drift caught before it lands: one cheap cell of a benchmark re-run and compared with its committed results file,
under benchmarks/reproduce.py's rule (equal where the file was measured on this machine class, else within the
spread of its seeds). A change that moves a committed figure must regenerate that file in the same commit."""

import json
import subprocess
import sys

import pytest
import torch

from benchscripts import BENCHMARKS, load


def committed(name):
    return json.loads((BENCHMARKS / "results" / name).read_text())


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their neighbours


def test_methods_a_students_seed_matches_methods_seeds(tmp_path):
    """The MLP-16 on 8×8 digits alone, seed 0, at the default recipe's 60 epochs (methods_seeds.json)."""
    methods, reproduce = load("methods"), load("reproduce")
    found = methods.seeds_job("digits-mlp16", methods.ALONE, "0.003", [0], str(tmp_path), torch.get_num_threads())
    results = committed("methods_seeds.json")
    values = [run["test"] for run in results["pairs"]["digits-mlp16"]["0.003"]["alone"]]
    assert reproduce.seed_agrees(results, values, 0, found[0]["test"]) is None


def test_lm_the_plain_losses_value_matches_lm_loss_fused():
    """½ CE + ½ forward KL at V = 32,768 and 1,024 tokens, computed as lm_loss.py computes it (its measuring script,
    in a process of its own, 2 threads): the value lm_loss_fused.json holds. A loss value states no spread, so on
    another CPU capability than the one that wrote the file there is nothing to compare it with."""
    results = committed("lm_loss_fused.json")
    if results["measured_on"]["cpu_capability"] != torch.backends.cpu.get_cpu_capability():
        pytest.skip(f"lm_loss_fused.json was measured with {results['measured_on']['cpu_capability']} kernels")
    row = next(r for r in results["rows"] if (r["vocab"], r["tokens"]) == (32768, 1024))
    script = load("lm_loss").MEASURE
    args = ["plain", "32768", "1024", "1", "ce+kd", "plain", "cpu"]
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["loss"] == row["plain_loss"]
