"""Callbacks observe the Trainer (and may steer it through ``trainer.should_stop``).

Loggers are callbacks: :class:`JsonlLogger` writes ``metrics.jsonl``;
:class:`ConsoleProgress` draws a rich progress bar per epoch with the loss parts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from kdforge.trainer import FitResult, Trainer


class Callback:
    """Hooks called by the Trainer. After a step, ``trainer.losses()`` gives its loss parts by
    name; call it only when you use them (it synchronises with the device)."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, samples: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None: ...

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """Fit is ending with ``error`` (a NaN loss, a second Ctrl-C, a bug): release resources."""


class JsonlLogger(Callback):
    """Appends one JSON line every ``every`` optimiser steps and one per epoch."""

    def __init__(self, path: str | Path, every: int = 10):
        self.path, self.every = Path(path), every

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_step_end(self, trainer: Trainer, samples: int) -> None:
        if trainer.pos.step % self.every == 0:
            self._write({"stage": trainer.stage, "kind": "step", "epoch": trainer.pos.epoch + 1, "step": trainer.pos.step, "lr": trainer.step_lr, **trainer.losses()})

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._write({"stage": trainer.stage, "kind": "epoch", "step": trainer.pos.step, **record})


class ConsoleProgress(Callback):
    """A live bar per epoch: ETA, samples/s and the loss parts; a line per epoch after."""

    def __init__(self, console: Console | None = None, refresh_every: int = 5):
        self.console = console or Console()
        self.refresh_every = refresh_every
        self.progress: Progress | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[parts]}"),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self._new_epoch(trainer)

    def _new_epoch(self, trainer: Trainer) -> None:
        assert self.progress is not None
        for task in self.progress.task_ids:
            self.progress.remove_task(task)
        desc = f"{trainer.stage} {trainer.pos.epoch + 1}/{trainer.cfg.epochs}"
        self.task = self.progress.add_task(desc, total=trainer.steps_per_epoch, completed=trainer.pos.step % trainer.steps_per_epoch, speed="", parts="")
        self.started, self.samples = time.perf_counter(), 0

    def on_step_end(self, trainer: Trainer, samples: int) -> None:
        assert self.progress is not None
        self.samples += samples
        fields = {}
        if trainer.pos.step % self.refresh_every == 0:
            rate = self.samples / max(time.perf_counter() - self.started, 1e-9)
            fields = {"speed": f"{rate:,.0f} samples/s", "parts": " ".join(f"{k} {v:.3f}" for k, v in trainer.losses().items())}
        self.progress.update(self.task, advance=1, **fields)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        val = record["val"]
        best = " *" if trainer.pos.best_epoch == record["epoch"] else ""
        self.console.print(
            f"  {trainer.stage} epoch {record['epoch']:>3}/{trainer.cfg.epochs}  train loss {record['train'].get('loss', float('nan')):.4f}  "
            f"val acc {val['accuracy']:.4f}  val loss {val['loss']:.4f}{best}",
            highlight=False,
        )
        if record["epoch"] < trainer.cfg.epochs:
            self._new_epoch(trainer)

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self.on_fit_end(trainer, None)
