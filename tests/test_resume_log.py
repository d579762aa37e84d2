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

import yaml

from kdforge import Recipe, run


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


def kill_after(process, run_dir_glob, epochs):
    """SIGKILL ``process`` once the student's last.pt has been written ``epochs`` times (each version seen by its
    mtime), wherever in the next epoch it then is."""
    seen: set[int] = set()
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and len(seen) < epochs:
        for last in run_dir_glob():
            with contextlib.suppress(FileNotFoundError):
                seen.add(last.stat().st_mtime_ns)
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before the kill: give it more epochs"
    process.send_signal(signal.SIGKILL)
    process.wait(60)


def test_a_run_killed_twice_and_resumed_logs_each_epoch_once(tiny_recipe, tmp_path):
    """Killed after its first epoch, resumed, killed again two epochs later, resumed to the end."""
    recipe = {
        **tiny_recipe,
        "teacher": {**tiny_recipe["teacher"], "train": {"epochs": 1}},
        "train": {"epochs": 6, "baseline": False, "checkpoint_interval": 0},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    whole = run(Recipe.from_dict({**recipe, "log": {**recipe["log"], "dir": str(tmp_path / "whole")}})).run_dir

    kill_after(train(tmp_path / "r.yaml", f"log.dir={tmp_path / 'killed'}"),
               lambda: (tmp_path / "killed").glob("tiny-*/last.pt"), epochs=1)  # fmt: skip
    (killed,) = (tmp_path / "killed").glob("tiny-*")
    kill_after(train("--resume", killed), lambda: [killed / "last.pt"], epochs=3)  # the first seen is the old one
    assert train("--resume", killed).wait(300) == 0
    assert epoch_lines(killed) == epoch_lines(whole)
