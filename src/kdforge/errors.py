"""User-facing errors: one clear message that says what to change."""

from __future__ import annotations

import difflib
import sysconfig
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


class PluginError(KdforgeError):
    """A user's plug-in (a ``--plugin`` file or module, an installed family, a family's part) failed to import: the
    user's code, named with its own file and line."""

    @classmethod
    def of(cls, what: str, err: BaseException, module: str = "") -> PluginError:
        """``what`` (e.g. "plugin file 'my_parts.py'") failed with ``err`` while ``module`` was imported, told
        where in the user's code."""
        if isinstance(err, SyntaxError):
            return cls(f"{what} failed while being imported: SyntaxError at {err.filename}:{err.lineno}: {err.msg}")
        missing = getattr(err, "name", None) if isinstance(err, ModuleNotFoundError) else None
        if missing and (module == missing or module.startswith(missing + ".")):
            return cls(f"{what} cannot be imported: there is no module '{missing}' (is it installed, or on the path?)")
        import traceback

        frames = traceback.extract_tb(err.__traceback__)
        root = _source_root(module)
        own = [f for f in frames if root is not None and f.filename.startswith(root)]
        others = [f for f in frames if not f.filename.startswith(_NOT_THE_USERS) and "importlib" not in f.filename]
        found = (own or others)[-1:]
        where = f" at {found[0].filename}:{found[0].lineno}" if found else ""
        return cls(f"{what} failed while being imported: {type(err).__name__}{where}: {err}")


#: where frames are kdforge's or Python's own, not a plug-in's
_NOT_THE_USERS = ("<frozen", str(Path(__file__).resolve().parent), sysconfig.get_paths()["stdlib"])


def _source_root(module: str) -> str | None:
    """The file of ``module``, or the folder of the top-level package it belongs to (None: not found)."""
    import importlib.util

    if not module:
        return None
    if module.endswith(".py"):
        return str(Path(module).resolve())
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))).resolve())
    return str(Path(spec.origin).resolve()) if spec.origin else None


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
