"""No worker process outlives a command that spreads its work over several (sweep --jobs, tune --jobs)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kdforge.processes import exit_on_sigterm


def test_a_sigterm_inside_the_block_unwinds_through_finally_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    unwound = []
    with pytest.raises(SystemExit) as stopped:
        with exit_on_sigterm():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
            finally:
                unwound.append(True)
    assert stopped.value.code == 128 + signal.SIGTERM and unwound
    assert signal.getsignal(signal.SIGTERM) is before


def _alive(pid: int) -> bool:
    """Running (a zombie no one has reaped yet has stopped)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in found.read_text().split()] if found.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from Linux's /proc")
def test_a_sweep_stopped_by_sigterm_leaves_no_seed_training(tiny_recipe, tmp_path):
    tiny_recipe["train"] = {"epochs": 10_000, "baseline": False}  # far longer than the test waits
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    command = [sys.executable, "-m", "kdforge", "sweep", str(path), "--seeds", "2", "--jobs", "2"]
    sweep = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(workers := _children(sweep.pid)) < 2 and time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.2)
    assert len(workers) >= 2, sweep.stderr.read().decode() if sweep.poll() is not None else "no workers started"
    time.sleep(3)  # the workers are importing or training by now
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
