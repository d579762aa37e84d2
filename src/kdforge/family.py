"""How a family of students (or a user's plug-in) joins kdforge without the core knowing it.

A family is a package that, when imported, registers its parts with the registries
(models, losses, datasets, teacher sources, export formats) and registers one
:class:`Family`, whose hooks run at fixed points of a run: sizing a student, steering it
between epochs, starting it from its teacher, statistics after a fit, lines and sections
of the report, data that only its teacher can label, baselines.

Families are found, never imported by name: the subpackages of ``kdforge.families`` (the
built-in ones), the ``kdforge.families`` entry point group (installed third-party ones),
and files or modules given to ``--plugin``. :func:`load_families` imports them once, the
first time a registry is asked for its entries.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata
from typing import Any

#: name -> the registered family, in registration order
FAMILIES: dict[str, Family] = {}
_loading = False
_loaded = False


class Family:
    """What a family adds to a run. Subclass it, give it a ``name`` and a one-line
    ``description``, override the hooks it needs (each default does nothing), and call
    :func:`register_family` with an instance when the family's module is imported.

    ``session`` is the run's :class:`kdforge.run.Session` (recipe, data, loaders, device,
    console); ``entry`` is one model's row of ``results.json``.
    """

    name: str = ""
    description: str = ""

    def student_options(self, recipe: Any, options: dict[str, Any]) -> dict[str, Any]:
        """The student's model options, before it is built (e.g. sized from the teacher)."""
        return options

    def steering(self, recipe: Any, student: Any, val_batches: Any) -> Any | None:
        """A callable ``(trainer, student, epoch) -> dict`` run at each epoch's end before
        validation (it may change the student; what it returns joins the epoch's record)."""
        return None

    def from_teacher(self, session: Any, student: Any, teacher: Any) -> dict[str, Any]:
        """``student.init_from_teacher``, after the matching tensors are copied: what else
        this family's students learn from the teacher before distillation (for results.json)."""
        return {}

    def describe_from_teacher(self, student: Any, teacher: Any) -> str:
        """What :meth:`from_teacher` will do, for ``kdforge check`` (empty: nothing)."""
        return ""

    def check_run(self, session: Any) -> None:
        """Before anything is built: refuse a recipe this family's data cannot run (raise)."""

    def prepare_data(self, session: Any, teacher: Any) -> None:
        """Before the student trains: e.g. targets only the teacher can give (its embeddings)."""

    def after_fit(self, session: Any, stage: str, student: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Statistics of a fitted student (on the test split) to add to its results entry."""
        return {}

    def baselines(self, session: Any, student: Any, results: dict[str, Any]) -> dict[str, Any] | None:
        """Baselines to report instead of the student trained alone (None: train it alone)."""
        return None

    def notes(self, label: str, entry: dict[str, Any]) -> list[str]:
        """Short lines under the summary table and in report.md about one model's entry."""
        return []

    def report_sections(self, entry: dict[str, Any]) -> list[str]:
        """Markdown lines for report.md about the distilled student's entry."""
        return []


def register_family(family: Family) -> Family:
    """Make ``family``'s hooks part of every run (the same name again replaces it)."""
    if not family.name:
        raise ValueError(f"{type(family).__name__} needs a name")
    FAMILIES[family.name] = family
    return family


def families() -> list[Family]:
    """Every registered family (built-in, installed and plugged in)."""
    load_families()
    return list(FAMILIES.values())


def load_families() -> None:
    """Import the built-in families and the installed ones, once. Safe to call while a
    family is being imported (it returns at once then)."""
    global _loading, _loaded
    if _loaded or _loading:
        return
    _loading = True
    try:
        builtin = importlib.import_module("kdforge.families")  # found by walking it, never by name
        for found in pkgutil.iter_modules(builtin.__path__, f"{builtin.__name__}."):
            importlib.import_module(found.name)
        for point in metadata.entry_points(group="kdforge.families"):
            point.load()
        _loaded = True
    finally:
        _loading = False
