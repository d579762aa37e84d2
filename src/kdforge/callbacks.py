"""Callbacks observe the Trainer (and may steer it through ``trainer.should_stop``).

Loggers are callbacks: :class:`JsonlLogger` writes ``metrics.jsonl``;
:class:`ConsoleProgress` draws a rich progress bar per epoch with the loss parts.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kdforge.errors import required
from kdforge.evaluate import score_name, shown
from kdforge.files import FileWriteError, append_text, read_text, write_text

if TYPE_CHECKING:
    from kdforge.position import FitResult
    from kdforge.trainer import Trainer


class Callback:
    """Hooks called by the Trainer. After a step, ``trainer.losses()`` gives its loss parts by
    name; call it only when you use them (it synchronises with the device)."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_before_optimizer_step(self, trainer: Trainer) -> None:
        """Gradients are complete (and unscaled), before centralisation and clipping."""

    def on_step_end(self, trainer: Trainer, samples: int) -> None: ...

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """A validation between epoch ends (``train.val_every: {steps: N}``): ``record`` has its ``epoch``
        (fractional), ``step`` and ``val``. Validations at an epoch's end come in that epoch's record."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None: ...

    def on_checkpoint(self, trainer: Trainer) -> None:
        """``last.pt`` is about to be written: what the callback has kept of the fit so far must be on disk, so that
        a run killed after the write resumes with a log that agrees with it."""

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """Fit is ending with ``error`` (a NaN loss, a second Ctrl-C, a bug): release resources."""

    def has_work(self, hook: str) -> bool:
        """Whether the per-step ``hook`` does anything, asked after ``on_fit_start``: the trainer calls only
        those that do (on a small model a call that does nothing is a cost of its own)."""
        return getattr(type(self), hook) is not getattr(Callback, hook)


class JsonlLogger(Callback):
    """Appends one JSON line every ``every`` optimiser steps and one per epoch. The lines are written
    ``flush_seconds`` apart at most (an epoch longer than that writes its line when it ends), before each
    ``last.pt``, and when fit ends however it ends: opening the file for each line would cost a short epoch more
    than the line. A resumed fit first drops the lines a killed run wrote after its ``last.pt`` (and a line the
    kill cut short): they are written again as the fit goes on, so each step has its one line."""

    def __init__(self, path: str | Path, every: int = 10, flush_seconds: float = 5.0):
        self.path, self.every, self.flush_seconds = Path(path), every, flush_seconds
        self.pending: list[str] = []
        self.flushed = time.perf_counter()

    def _write(self, record: dict[str, Any]) -> None:
        self.pending.append(json.dumps(record) + "\n")
        if time.perf_counter() - self.flushed >= self.flush_seconds:
            self._flush()

    def _flush(self) -> None:
        lines, self.pending, self.flushed = "".join(self.pending), [], time.perf_counter()
        if lines:
            append_text(self.path, lines)

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.pos.step > 0 and self.path.is_file():
            lines = read_text(self.path, "metrics log").splitlines(keepends=True)
            kept = [line for line in lines if not _after(line, trainer.stage, trainer.pos.step)]
            if len(kept) < len(lines):
                write_text(self.path, "".join(kept))

    def on_checkpoint(self, trainer: Trainer) -> None:
        self._flush()

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        self._flush()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        with contextlib.suppress(FileWriteError):  # the error being raised is the one to report
            self._flush()

    def on_step_end(self, trainer: Trainer, samples: int) -> None:
        if trainer.grad_norms:
            self._write(
                {
                    "stage": trainer.stage,
                    "kind": "grad_norms",
                    "step": trainer.pos.step,
                    "grad_norms": trainer.grad_norms,
                }
            )
        if trainer.pos.step % self.every == 0:
            self._write(
                {
                    "stage": trainer.stage,
                    "kind": "step",
                    "epoch": trainer.pos.epoch + 1,
                    "step": trainer.pos.step,
                    "lr": trainer.step_lr,
                    **trainer.losses(),
                }
            )

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._write({"stage": trainer.stage, "kind": "val", **record})

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._write({"stage": trainer.stage, "kind": "epoch", "step": trainer.pos.step, **record})


def _after(line: str, stage: str, step: int) -> bool:
    """Whether a ``metrics.jsonl`` line is of ``stage`` past ``step`` (or no whole line: cut short by a kill)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return True
    return not line.endswith("\n") or (record.get("stage") == stage and record.get("step", 0) > step)


class EpochTest(Callback):
    """The test metrics after every epoch, in the epoch's record as ``test`` (``log.epoch_test``), for the log and
    the trackers to report. The trainer has chosen its best weights and its early stop from validation before the
    callbacks run, and nothing reads ``test`` back: reporting only."""

    def __init__(self, batches: Any):
        self.batches = batches

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        record["test"] = trainer.evaluate(self.batches)


class ConsoleProgress(Callback):
    """One live bar per stage (epoch, ETA, samples/s, loss parts, validation score) and
    about ``lines`` printed epoch summaries per stage, so long schedules stay readable."""

    def __init__(self, console: Console | None = None, refresh_every: int = 5, lines: int = 10):
        self.console = console or Console()
        self.refresh_every, self.lines = refresh_every, lines
        self.progress: Progress | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[parts]}"),
            TextColumn("{task.fields[val]}"),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,  # a log file gets the epoch lines, not a bar's blank remains
        )
        self.progress.start()
        total = trainer.cfg.max_steps or trainer.steps_per_epoch * trainer.epochs
        self.task = self.progress.add_task(
            self._describe(trainer), total=total, completed=trainer.pos.step, speed="", parts="", val=""
        )
        self.started, self.samples = time.perf_counter(), 0

    @staticmethod
    def _describe(trainer: Trainer) -> str:
        text = f"{trainer.stage} epoch {min(trainer.pos.epoch + 1, trainer.epochs)}/{trainer.epochs}"
        if trainer.curriculum is not None:  # staged training: which stage, by name when it has one
            stage = trainer.curriculum.stages[trainer.pos.stage]
            text += (
                f" [stage {trainer.pos.stage + 1}/{len(trainer.curriculum)}{': ' + stage.name if stage.name else ''}]"
            )
        return text

    def has_work(self, hook: str) -> bool:
        """A step has work only where there is a bar to draw (the output is a terminal)."""
        drawn = self.progress is not None and not self.progress.disable
        return super().has_work(hook) and (hook != "on_step_end" or drawn)

    def on_step_end(self, trainer: Trainer, samples: int) -> None:
        assert self.progress is not None
        self.samples += samples
        fields: dict[str, Any] = {}
        if trainer.pos.step % self.refresh_every == 0:
            rate = self.samples / max(time.perf_counter() - self.started, 1e-9)
            fields = {
                "speed": f"{rate:,.0f} samples/s",
                "parts": " ".join(f"{k} {v:.3f}" for k, v in trainer.losses().items()),
            }
        self.progress.update(self.task, advance=1, **fields)

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        assert self.progress is not None
        val = record["val"]
        best = f"best {shown(trainer.pos.best_val or val)} @{trainer.pos.best_epoch}"
        self._update(val=f"val {shown(val)} ({best})")
        self._say(
            f"  {trainer.stage} step {record['step']} (epoch {record['epoch']:.2f})  val {score_name(val)} "
            f"{shown(val)}  {best}"
        )

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        assert self.progress is not None
        val, epoch, epochs = record.get("val"), record["epoch"], trainer.epochs
        if val is None:  # not a validated epoch (train.val_every)
            self._update(description=self._describe(trainer))
            return
        best = f"best {shown(trainer.pos.best_val or val)} @{trainer.pos.best_epoch}"
        self._update(description=self._describe(trainer), val=f"val {shown(val)} ({best})")
        stopped = record.get("stopped_early", False)
        if epoch == 1 or epoch == epochs or epoch % max(1, epochs // self.lines) == 0 or stopped:  # and the last
            self._say(
                f"  {trainer.stage} {epoch:>3}/{epochs}  train loss {record['train']['loss']:.4f}  val "
                f"{score_name(val)} {shown(val)}  {best}"
            )
        if stopped:
            rule = required(trainer.cfg.early_stopping, "train.early_stopping")
            self._say(
                f"  {trainer.stage}: stopped early after epoch {epoch}: val {rule.metric} did not improve for "
                f"{rule.patience:g} epochs"
            )

    def _update(self, **fields: Any) -> None:
        """The bar's fields, where there is a bar."""
        assert self.progress is not None
        if not self.progress.disable:
            self.progress.update(self.task, **fields)

    def _say(self, line: str) -> None:
        """A line of the run's log, as plain text (no markup); in a file, never wrapped (one line per event),
        and written as it is: rich's rendering would cost a short epoch more than the line."""
        if self.console.is_terminal or self.console.is_jupyter or self.console.record:
            self.console.print(line, highlight=False, markup=False)
        elif not self.console.quiet:
            self.console.file.write(line + "\n")

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        self._stop()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
