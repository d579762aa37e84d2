"""The files in a fit's checkpoint folder: ``last.pt`` (everything needed to resume exactly), ``best.pt`` (the best
trainable weights on validation) and ``stages/stage_N`` (the student as a stage ends). The Trainer decides what
they hold and when they are written; this module knows the files: where they are, when ``last.pt`` is due, how
they are written (atomically) and how they are read back (refusing, by name, one that kdforge did not write or that
does not fit the run)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from kdforge.export import save_model
from kdforge.files import FileReadError, load_torch, save_torch

RESUME_KEYS = ("trainable", "optimizer", "scaler", "position", "best", "curriculum", "rng")  # what last.pt holds


class CheckpointFiles:
    """The checkpoint folder ``directory`` of one fit."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.last, self.best = self.dir / "last.pt", self.dir / "best.pt"
        self.saved_at = -math.inf  # when last.pt was last written, or the fit started (perf_counter seconds)

    def start(self) -> None:
        """The fit starts: the first ``last.pt`` is due one interval from now, not after the first epoch."""
        self.saved_at = time.perf_counter()

    def due(self, interval: float) -> bool:
        """Whether ``interval`` seconds have passed since ``last.pt`` was last written, or the fit started."""
        return time.perf_counter() - self.saved_at >= interval

    def write_last(self, state: dict[str, Any]) -> None:
        save_torch(state, self.last)  # atomic: an interrupted or failed save never corrupts last.pt
        self.saved_at = time.perf_counter()

    def write_best(self, state: dict[str, Any]) -> None:
        save_torch(state, self.best)

    def write_stage(self, model: torch.nn.Module, number: int, info: dict[str, Any]) -> None:
        """``stages/stage_<number>`` (.safetensors + .json)."""
        (self.dir / "stages").mkdir(exist_ok=True)
        save_model(model, self.dir / "stages" / f"stage_{number}", info)

    def read_last(self, device: torch.device) -> dict[str, Any]:
        state = load_torch(self.last, device, what="resume checkpoint")
        missing = set(RESUME_KEYS) - set(state if isinstance(state, dict) else ())
        if missing:
            raise FileReadError(
                f"resume checkpoint '{self.last}' is not one kdforge wrote (it lacks {', '.join(sorted(missing))}); "
                "move it away to start this stage again, or resume another run"
            )
        return state

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        """Around putting :meth:`read_last`'s state back: the right keys with the wrong contents are refused with the
        file's name."""
        try:
            yield
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise FileReadError(
                f"resume checkpoint '{self.last}' does not fit this run ({' '.join(str(err).split())[:200]}); "
                "was it copied from another run? Move it away to start this stage again"
            ) from None

    def read_best(self, device: torch.device) -> dict[str, Any]:
        return load_torch(self.best, device, what="best checkpoint")

    def kept(self) -> str:
        """What an error that stops the fit can say is kept."""
        return f"the last good checkpoint is {self.last}" if self.last.exists() else "no checkpoint was written yet"
