"""A run killed with SIGKILL and resumed leaves the same log as a run never interrupted: every epoch's line once,
with the same values, whatever moment the kill came (the lines are on disk before each last.pt, and lines past
it are dropped on resume)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml


def epoch_lines(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["stage"], r["epoch"], round(r["train"]["loss"], 6)) for r in lines if r["kind"] == "epoch"]


def train(recipe_path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "kdforge", "train", str(recipe_path), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize("epochs_before_kill", [1, 3])
def test_a_killed_and_resumed_run_logs_each_epoch_once(epochs_before_kill, tiny_recipe, tmp_path):
    recipe = {
        **tiny_recipe,
        "teacher": {**tiny_recipe["teacher"], "train": {"epochs": 1}},
        "train": {"epochs": 6, "baseline": False, "checkpoint_interval": 0},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert train(tmp_path / "r.yaml", f"log.dir={tmp_path / 'whole'}").wait(300) == 0
    (whole,) = (tmp_path / "whole").glob("tiny-*")

    process = train(tmp_path / "r.yaml", f"log.dir={tmp_path / 'killed'}")
    seen: set[int] = set()  # the student's last.pt, each version by its mtime: one per epoch
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and len(seen) < epochs_before_kill:
        for last in (tmp_path / "killed").glob("tiny-*/last.pt"):
            with contextlib.suppress(FileNotFoundError):
                seen.add(last.stat().st_mtime_ns)
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before the kill: give it more epochs"
    process.send_signal(signal.SIGKILL)
    process.wait(60)
    (killed,) = (tmp_path / "killed").glob("tiny-*")
    assert train("--resume", killed).wait(300) == 0
    assert epoch_lines(killed) == epoch_lines(whole)
