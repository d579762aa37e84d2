"""benchmarks/tm_ablation.py: the second stage of ``hard_finish`` goes on from the first stage's student and teacher."""

import json

import numpy as np
import yaml

from benchscripts import BENCHMARKS, load


def small_token_task(path):
    """A task in ``token_task``'s format ([6, 4, 4] ±1 bits, 5 classes), small enough to train in seconds."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 160), ("test", 80)):
        bits = rng.integers(0, 2, (n, 6, 4, 4))
        arrays[f"x_{split}"] = (2.0 * bits - 1.0).astype(np.float32)
        arrays[f"y_{split}"] = (bits[:, :4].sum((1, 2, 3)) % 5).astype(np.int64)
    np.savez(path, **arrays)
    return path


def test_the_hard_mode_finish_distils_from_the_first_stages_teacher_not_one_refitted_at_its_learning_rate(
    tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its neighbours
    ablation = load("tm_ablation")
    task = small_token_task(tmp_path / "token-parity.npz")
    job = (task, "vit_tm_tiny", "TM, literal_gain 4", "distilled", 0, 1, str(tmp_path / "runs"))

    out = ablation.hard_finish_run(job)

    runs = {yaml.safe_load((p.parent / "config.yaml").read_text())["student"]["init_from"]: p.parent
            for p in (tmp_path / "runs").glob("*/results.json")}  # fmt: skip
    first_dir = runs.pop(None)
    ((finish_from, second_dir),) = runs.items()
    assert finish_from == str(first_dir)
    first, second = (json.loads((d / "results.json").read_text())["teacher"] for d in (first_dir, second_dir))
    assert second["test"] == first["test"]  # accuracy and loss: the same weights
    assert out["teacher"] == first["test"]["accuracy"]
