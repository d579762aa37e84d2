"""User-facing errors: one clear message that says what to change."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class KdforgeError(Exception):
    """An error caused by the user's input (recipe, paths, names), not by a bug.

    The CLI prints these as one message without a traceback.
    """


class ConfigError(KdforgeError):
    """The recipe or an override is invalid."""


class RunInterrupted(KdforgeError):
    """The run was stopped (Ctrl-C); ``last.pt`` was saved and the run can resume."""

    def __init__(self, run_dir: Path, stage: str):
        self.run_dir = run_dir
        super().__init__(
            f"interrupted during {stage}; progress saved in {run_dir}. Resume with: kdforge train --resume {run_dir}"
        )


class NonFiniteLossError(KdforgeError):
    """A loss term produced NaN or inf; the run stops and keeps its last good checkpoint."""


def closest(word: str, options: Iterable[str], n: int = 3) -> list[str]:
    """The options most similar to ``word``, best first (may be empty)."""
    return difflib.get_close_matches(str(word), [str(o) for o in options], n=n, cutoff=0.5)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or the list of valid ones."""
    options = sorted(set(options))
    match = closest(word, options, n=1)
    if match:
        return f" (did you mean '{match[0]}'?)"
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" (valid: {shown})" if options else ""


def required(value: T | None, name: str) -> T:
    """``value``, which the recipe's checks made sure is set (``name`` says which setting, should one slip through)."""
    if value is None:
        raise KdforgeError(f"{name} is required here but not set")
    return value
