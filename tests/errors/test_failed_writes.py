"""Output that cannot be written: folders blocked by files, a full disk, a kill during a checkpoint write.
The message names the place, and nothing written before is lost."""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from kdforge import files

# ----------------------------------------------------------------------------- output folders


def test_log_dir_blocked_by_a_file(fails, recipe, tmp_path):
    (tmp_path / "blocked").write_text("a file")
    fails(
        "train",
        recipe({"log": {"dir": str(tmp_path / "blocked")}}),
        names=["log.dir", "blocked", "a file of that name is in the way"],
    )


def test_log_dir_below_a_file(fails, recipe, tmp_path):
    (tmp_path / "blocked").write_text("a file")
    fails("train", recipe({"log": {"dir": str(tmp_path / "blocked" / "runs")}}), names=["log.dir", "not writable"])


def test_log_dir_on_a_pseudo_filesystem(fails, recipe):
    fails(
        "train", recipe({"log": {"dir": "/proc/kdforge-runs"}}), names=["log.dir", "/proc/kdforge-runs", "not writable"]
    )


def test_cache_out_blocked_by_a_file(fails, recipe, tmp_path):
    (tmp_path / "out").write_text("a file")
    fails("cache", recipe(), "--out", tmp_path / "out", names=["cache folder", "a file of that name is in the way"])


def test_log_dir_is_checked_before_anything_trains(fails, recipe, tmp_path, monkeypatch):
    from kdforge.session import Session

    def no_training(*args, **kwargs):
        raise AssertionError("the teacher started training before log.dir was checked")

    monkeypatch.setattr(Session, "fit_teacher", no_training)
    (tmp_path / "blocked").write_text("a file")
    fails("train", recipe({"log": {"dir": str(tmp_path / "blocked")}}), names=["log.dir"])


# ----------------------------------------------------------------------------- writes that fail


class FullDisk:
    """Replaces files._open_tmp: once ``full`` is set, every write fails with ENOSPC."""

    def __init__(self, fill_after=lambda path: False):
        self.full, self.fill_after, self.refused = False, fill_after, []

    def __call__(self, path):
        if self.full:
            self.refused.append(path.name.removesuffix(files.TMP_SUFFIX))
            return _NoSpace(path)
        self.full = self.fill_after(path)
        return open(path, "wb")


class _NoSpace(io.FileIO):
    def __init__(self, path):
        super().__init__(path, "wb")

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    best = tmp_path / "best.pt"
    files.save_torch({"epoch": 1, "w": torch.ones(3)}, best)
    before = best.read_bytes()
    disk = FullDisk()
    disk.full = True
    monkeypatch.setattr(files, "_open_tmp", disk)
    with pytest.raises(files.FileWriteError) as failed:
        files.save_torch({"epoch": 2, "w": torch.zeros(1000)}, best)
    message = str(failed.value)
    assert "best.pt" in message and "no space left" in message and "the previous 'best.pt' is intact" in message
    assert re.search(r"it needs [\d.,]+ (KB|bytes)", message)
    assert best.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_while_logging_metrics_is_a_message(tmp_path):
    from types import SimpleNamespace

    from kdforge.callbacks import JsonlLogger

    logger = JsonlLogger("/dev/full")  # every write to it fails with ENOSPC
    trainer = SimpleNamespace(stage="distill", pos=SimpleNamespace(step=1))
    with pytest.raises(
        files.FileWriteError,
        match="could not append to '/dev/full': No space left on device; the lines already there are intact",
    ):
        logger.on_epoch_end(trainer, {"epoch": 1, "train": {"loss": 1.0}, "val": {"accuracy": 0.5}})
        logger.on_fit_end(trainer, None)  # a short fit's lines are written when it ends


def test_a_full_disk_during_training_loses_nothing_and_the_run_resumes(tiny_recipe, tmp_path, monkeypatch):
    import kdforge
    from kdforge.files import FileWriteError

    raw = {
        **tiny_recipe,
        "teacher": {**tiny_recipe["teacher"], "train": {"epochs": 1}},
        "train": {"epochs": 3, "baseline": False, "checkpoint_interval": 0},
    }
    # the disk fills once the student's first last.pt is written (the teacher's files are already there)
    disk = FullDisk(lambda path: path.name == "last.pt.tmp" and path.parent.name.startswith("tiny-"))
    monkeypatch.setattr(files, "_open_tmp", disk)
    with pytest.raises(FileWriteError, match=r"last\.pt': no space left on device .*the previous 'last\.pt' is intact"):
        kdforge.run(kdforge.Recipe.from_dict(raw))
    assert disk.refused[:2] == ["last.pt", "best.pt"]  # best.pt was tried too, and failed alike
    run_dir = next((tmp_path / "runs").glob("tiny-*"))
    assert files.load_torch(run_dir / "last.pt")["position"]["epoch"] == 1  # the previous checkpoint, whole
    assert files.load_torch(run_dir / "teacher" / "best.pt")["epoch"] == 1  # the teacher's best weights
    assert not list(run_dir.rglob("*.tmp"))
    monkeypatch.setattr(files, "_open_tmp", lambda path: open(path, "wb"))  # space again
    (run_dir / "stale.pt.tmp").write_bytes(b"left by a kill")
    result = kdforge.run(kdforge.Recipe.from_yaml(run_dir / "config.yaml"), resume=run_dir)
    assert result.results["student"]["epochs_run"] == 3 and not (run_dir / "stale.pt.tmp").exists()


WRITER = """
import sys, torch
from kdforge import files
path = sys.argv[1]
for step in range(10**6):
    files.save_torch({"step": step, "w": torch.full((500_000,), float(step))}, path)
    print(step, flush=True)
"""


def test_a_kill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    for delay in (0.05, 0.2, 0.45):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # one checkpoint is complete; kill it while it writes the next ones
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = files.load_torch(path)
        assert torch.equal(state["w"], torch.full((500_000,), float(state["step"])))
    files.remove_stale_tmp(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
