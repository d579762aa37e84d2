"""What the benchmark scripts share: running a recipe quietly, mean ± std over seeds, and
where they write (``benchmarks/results/<name>.json``, every number, and ``<name>.md``, the
table people read)."""

from __future__ import annotations

import io
import json
import statistics
import time
from pathlib import Path

from rich.console import Console

import kdforge
from kdforge.callbacks import Callback
from kdforge.session import Session

RESULTS = Path(__file__).parent / "results"


def run_quietly(raw: dict) -> kdforge.RunResult:
    """Run a recipe given as a dict, its console output discarded."""
    return kdforge.run(kdforge.Recipe.from_dict(raw), console=Console(file=io.StringIO()))


class Intervals:
    """Step times as the intervals between consecutive step ends within an epoch: whole steps, the batch's
    loading included; an epoch's end (its validation pass) is no step."""

    def __init__(self):
        self.times: list[float] = []
        self.last: float | None = None

    def tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now

    def reset(self) -> None:
        self.last = None


class _Ticking(Callback):
    def __init__(self, intervals: Intervals):
        self.intervals = intervals

    def on_step_end(self, trainer, samples) -> None:
        self.intervals.tick()

    def on_epoch_end(self, trainer, record) -> None:
        self.intervals.reset()


def run_timed(raw: dict) -> tuple[kdforge.RunResult, list[float]]:
    """:func:`run_quietly`, and the time of each training step after the first of each epoch."""
    intervals = Intervals()
    callbacks = Session.callbacks
    Session.callbacks = lambda self: [*callbacks(self), _Ticking(intervals)]  # type: ignore[method-assign]
    try:
        return run_quietly(raw), intervals.times
    finally:
        Session.callbacks = callbacks  # type: ignore[method-assign]


def mean_std(values: list[float], digits: int = 2) -> str:
    """'mean ± std' over seeds (the value alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def save(name: str, out: dict, text: str) -> None:
    """Write ``out`` as <name>.json and ``text`` as <name>.md, and print the text."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
