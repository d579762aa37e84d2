"""Drift caught before it lands: one cheap cell of a benchmark re-run and compared with its committed results file,
under benchmarks/reproduce.py's rule (equal where the file was measured on this machine class, else within the
spread of its seeds). A change that moves a committed figure must regenerate that file in the same commit."""

import json
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

import kdforge
from benchscripts import BENCHMARKS, load
from kdforge.machine import machine_class, where_measured


def committed(name):
    return json.loads((BENCHMARKS / "results" / name).read_text())


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their neighbours


def measured_threads(results):
    """The thread count ``results`` was measured with (this process's when it does not say): run at it, the cell is
    compared exactly wherever the CPU model and capability are the same too."""
    return results.get("measured_on", {}).get("threads", torch.get_num_threads())


@contextmanager
def at_threads_of(results):
    before = torch.get_num_threads()
    torch.set_num_threads(measured_threads(results))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measured_here(results):
    """Whether ``results`` was measured on this machine class (at its own thread count)."""
    here = where_measured(measured_threads(results))["machine_class"]
    return load("reproduce").same_class(results["measured_on"], here)


def agrees(results, values, found, seed=0):
    return load("reproduce").seed_agrees(results, values, seed, found)


def test_methods_a_students_seed_matches_methods_seeds(tmp_path):
    """The MLP-16 on 8×8 digits alone, seed 0, at the default recipe's 60 epochs (methods_seeds.json)."""
    methods, results = load("methods"), committed("methods_seeds.json")
    threads = measured_threads(results)
    found = methods.seeds_job("digits-mlp16", methods.ALONE, "0.003", [0], str(tmp_path), threads)
    values = [run["test"] for run in results["pairs"]["digits-mlp16"]["0.003"]["alone"]]
    assert agrees(results, values, found[0]["test"]) is None


def test_tm_a_booleanised_tm_flat_seed_matches_tm_features(tmp_path):
    """``tm_flat`` alone on raw booleanised 8×8 digits, seed 0, 30 epochs (tm_features.json)."""
    results = committed("tm_features.json")
    with at_threads_of(results):
        found = load("tm_students").features_run("raw", 0, results["epochs"], str(tmp_path))
    cell = results["accuracy"]["raw"]
    assert agrees(results, cell["test"], found["test"]) is None
    assert agrees(results, cell["test_hard"], found["test_hard"]) is None


def test_ssm_a_seed_of_mnist1d_at_one_epoch_matches_ssm_mnist1d_1ep(tmp_path):
    """The SSM teacher, its student with KD and alone on mnist1d, seed 0, one epoch each (ssm_mnist1d_1ep.json)."""
    results = committed("ssm_mnist1d_1ep.json")
    with at_threads_of(results):
        found = load("ssm").mnist1d_seed(results["recipe"], 0, str(tmp_path))
    for key in ("teacher", "kd", "alone"):
        assert agrees(results, results[key], found[key]) is None, key


def test_embedding_the_projection_heads_seed_matches_embed(tmp_path):
    """``embed_proj`` on MiniLM's vectors of the docstring corpus at 5 dimensions, seed 0 (embed.json)."""
    results = committed("embed.json")
    with at_threads_of(results):
        found = load("embed").train("embed_proj", 5, 0, str(tmp_path)).results["student"]["test"]
    cell = results["quality"]["5"]["embed_proj"]
    assert agrees(results, cell["spearman"], found["spearman"]) is None


def test_lm_the_plain_losses_value_matches_lm_loss_fused():
    """½ CE + ½ forward KL at V = 32,768 and 1,024 tokens, computed as lm_loss.py computes it (its measuring script,
    in a process of its own, 2 threads): the value lm_loss_fused.json holds. A loss value states no spread, so on
    another machine class than the one that wrote the file there is nothing to compare it with."""
    results = committed("lm_loss_fused.json")
    if not measured_here(results):
        pytest.skip(f"lm_loss_fused.json was measured on {machine_class(results['measured_on'])}")
    row = next(r for r in results["rows"] if (r["vocab"], r["tokens"]) == (32768, 1024))
    script = load("lm_loss").MEASURE
    args = ["plain", "32768", "1024", "1", "ce+kd", "plain", "cpu"]
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["loss"] == row["plain_loss"]


def test_data_the_smallest_streamed_parquet_run_matches_data_memory(tmp_path):
    """The memory benchmark's run on 20,000 streamed parquet rows (an MLP self-distilled for 300 steps): the
    student's test metrics data_memory.json holds. One run states no spread, so on another machine class than the
    one that wrote the file there is nothing to compare them with."""
    results, data = committed("data_memory.json"), load("data")
    row = next(r for r in results["rows"] if r["case"] == "hf parquet rows, streaming" and r["size"] == 20_000)
    if not measured_here(results):
        pytest.skip(f"data_memory.json was measured on {machine_class(results['measured_on'])}")
    with at_threads_of(results):
        recipe = data.memory_recipe(data.parquet_stream(tmp_path, 20_000), tmp_path)
        found = kdforge.run(kdforge.Recipe.from_dict(recipe), quiet=True).results["student"]["test"]
    assert found == row["test"]
