"""How a family of students (or a user's plug-in) joins kdforge without the core knowing it.

A family has two halves. Its package's ``__init__`` imports nothing heavy and
:func:`declare_family`: its name, a one-line description, its ``parts`` (the modules that
register its models, losses, datasets, teacher sources and export formats, and its
:class:`Family` hooks) and, optionally, a ``commands`` module that adds its subcommands to
the ``kdforge`` command. Declarations are cheap, so ``kdforge --help`` lists every family's
commands without importing PyTorch; the parts are imported the first time a registry is
asked for its entries.

The hooks run at fixed points of a run: sizing a student, steering it between epochs,
starting it from its teacher, statistics after a fit, lines and sections of the report,
data that only its teacher can label, baselines.

Families are found, never imported by name: the subpackages of ``kdforge.families`` (the
built-in ones), the ``kdforge.families`` entry point group (installed ones), and files or
modules given to ``--plugin``. A one-file plug-in simply registers its parts and calls
:func:`register_family` when it is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from kdforge.errors import KdforgeError, PluginError


@dataclass(frozen=True)
class Declared:
    """What a family says about itself before anything heavy is imported."""

    name: str
    description: str
    parts: tuple[str, ...] = ()  # modules whose import registers the family's entries and hooks
    commands: str | None = None  # a light module with ``register(app)``, adding subcommands


#: name -> declaration, and name -> hooks (filled when the parts are imported)
DECLARED: dict[str, Declared] = {}
FAMILIES: dict[str, Family] = {}
_state = {"found": False, "parts": False, "busy": False}


class Family:
    """What a family adds to a run. Subclass it, give it a ``name`` and a one-line
    ``description``, override the hooks it needs (each default does nothing), and call
    :func:`register_family` with an instance when the family's module is imported.

    ``session`` is the run's :class:`kdforge.session.Session` (recipe, data, loaders, device,
    console); ``entry`` is one model's row of ``results.json``.
    """

    name: str = ""
    description: str = ""
    # (results key, label) of the baselines :meth:`baselines` adds, in the order the report shows them
    roles: tuple[tuple[str, str], ...] = ()
    # the datasets whose batches :meth:`batch_rewrite` can rewrite (``train.on_policy``)
    rewrites_data: tuple[str, ...] = ()

    def recipe_problems(self, recipe: Any) -> list[tuple[str, str]]:
        """Problems of the recipe alone that this family's parts know of, as (dotted key, what to change):
        checked with the rest of the recipe, before anything is loaded."""
        return []

    def student_options(self, recipe: Any, options: dict[str, Any]) -> dict[str, Any]:
        """The student's model options, before it is built (e.g. sized from the teacher)."""
        return options

    def steering(self, recipe: Any, student: Any, val_batches: Any) -> Any | None:
        """A callable ``(trainer, student, epoch) -> dict`` run at each epoch's end before
        validation (it may change the student; what it returns joins the epoch's record, but a
        true ``"restart_selection"`` makes the best weights be chosen from that validation on).
        Its optional ``restore(trainer, student)`` re-applies, when a run resumes, what it
        changed that the weights do not hold."""
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

    def batch_rewrite(self, session: Any, student: Any, teacher: Any) -> Any | None:
        """A callable ``(inputs, targets, clock) -> (inputs, targets)`` applied to each distillation batch
        before the models see it (e.g. sequences the student writes, ``train.on_policy``), or None."""
        return None

    def after_fit(self, session: Any, stage: str, student: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Statistics of a fitted student (on the test split) to add to its results entry."""
        return {}

    def describe_after_fit(self, recipe: Any, student: Any) -> str:
        """For ``kdforge check``: what :meth:`after_fit` will do to this student, in words ("" for nothing)."""
        return ""

    def baselines(self, session: Any, student: Any, results: dict[str, Any]) -> dict[str, Any] | None:
        """Baselines to report instead of the student trained alone (None: train it alone)."""
        return None

    def notes(self, label: str, entry: dict[str, Any]) -> list[str]:
        """Short lines under the summary table and in report.md about one model's entry."""
        return []

    def report_sections(self, entry: dict[str, Any]) -> list[str]:
        """Markdown lines for report.md about the distilled student's entry."""
        return []


def declare_family(name: str, description: str, parts: tuple[str, ...] = (), commands: str | None = None) -> Declared:
    """Declare a family (from its package's light ``__init__``)."""
    DECLARED[name] = Declared(name, description, tuple(parts), commands)
    return DECLARED[name]


def register_family(family: Family) -> Family:
    """Make ``family``'s hooks part of every run (the same name again replaces it); a family
    not declared before (a one-file plug-in) is declared with its name and description."""
    if not family.name:
        raise ValueError(f"{type(family).__name__} needs a name")
    FAMILIES[family.name] = family
    DECLARED.setdefault(family.name, Declared(family.name, family.description))
    return family


def families() -> list[Family]:
    """The hooks of every family (built-in, installed and plugged in), their parts loaded."""
    load_parts()
    return list(FAMILIES.values())


def declared() -> list[Declared]:
    """Every family's declaration, without importing any family's parts."""
    find_families()
    return list(DECLARED.values())


def find_families() -> None:
    """Import the built-in families' and the installed ones' light packages, once."""
    if _state["found"]:
        return
    _state["found"] = True
    builtin = importlib.import_module("kdforge.families")  # found by walking it, never by name
    for found in pkgutil.iter_modules(builtin.__path__, f"{builtin.__name__}."):
        importlib.import_module(found.name)
    for point in metadata.entry_points(group="kdforge.families"):
        try:
            point.load()
        except KdforgeError:
            raise
        except Exception as err:  # the installed package's code, not kdforge's
            raise PluginError.of(f"the installed family '{point.name}' ({point.value})", err, point.module) from None


def load_parts() -> bool:
    """Import every declared family's parts, once; whether they are all loaded. Safe to call
    while a part is being imported (it returns False at once then)."""
    if _state["parts"] or _state["busy"]:
        return _state["parts"]
    _state["busy"] = True
    try:
        find_families()
        for family in list(DECLARED.values()):
            for part in family.parts:
                _import_part(family.name, part)
        _state["parts"] = True
    finally:
        _state["busy"] = False
    return True


def _import_part(family: str, part: str) -> None:
    """Import one of a family's parts; a plug-in's part that fails is the plug-in's error, named with its line
    (a built-in family's is a bug in kdforge, and keeps its traceback)."""
    if part.startswith("kdforge."):
        importlib.import_module(part)
    else:
        import_user_module(part, f"the plug-in family '{family}' (its part '{part}')")


def import_user_module(module: str, what: str) -> None:
    """Import a user's module (a plug-in or one of its parts): its failure is a :class:`PluginError` that names
    ``what`` and the user's own file and line."""
    try:
        importlib.import_module(module)
    except KdforgeError:
        raise
    except Exception as err:
        raise PluginError.of(what, err, module) from None


def family_of(entry: Any) -> str:
    """Which family registered a registry entry (a class or function): a built-in family's name,
    ``core``, or ``plug-ins`` (a user's file or module)."""
    module = getattr(entry, "__module__", "") or ""
    if module.startswith("kdforge.families."):
        return module.split(".")[2]
    if module.startswith("kdforge.") or module == "kdforge":
        return "core"
    declared_in = {
        type(f).__module__: name for name, f in FAMILIES.items()
    }  # a one-file plug-in: the family registered beside the entry
    return declared_in.get(module) or next(
        (f.name for f in DECLARED.values() for part in f.parts if module == part or module.startswith(part + ".")),
        "plug-ins",
    )


def add_commands(app: Any) -> None:
    """Every family's subcommands, added to the ``kdforge`` command (nothing heavy imported)."""
    for family in declared():
        if family.commands:
            importlib.import_module(family.commands).register(app)


def recipe_problems(recipe: Any) -> list[tuple[str, str]]:
    """What the families find wrong with ``recipe`` (see :meth:`Family.recipe_problems`), and an on-policy
    recipe whose data no family writes sequences for."""
    found = [problem for family in families() for problem in family.recipe_problems(recipe)]
    writers = sorted({name for family in families() for name in family.rewrites_data})
    if recipe.train.on_policy is not None and recipe.data.name not in writers:
        found.append(
            (
                "train.on_policy",
                f"writes sequences with a language model, and data '{recipe.data.name}' is not language-model data "
                f"({', '.join(writers) or 'no family writes any'}): use such data or drop train.on_policy",
            )
        )
    return found


def student_options(recipe: Any) -> dict[str, Any]:
    """The student's model options, as the families size it (e.g. an ssm preset from its teacher)."""
    options = recipe.student.model.options
    for family in families():
        options = family.student_options(recipe, options)
    return options


def steering(recipe: Any, student: Any, val: Any) -> Steering | None:
    """What steers the student between epochs (the families' steerers, in turn), or None."""
    steerers = [s for family in families() if (s := family.steering(recipe, student, val)) is not None]
    return Steering(steerers) if steerers else None


class Steering:
    """The families' steerers as one (see :meth:`kdforge.family.Family.steering`)."""

    def __init__(self, steerers: list[Any]):
        self.steerers = steerers

    def __call__(self, trainer: Any, model: Any, epoch: int) -> dict[str, Any]:
        return {key: value for steer in self.steerers for key, value in steer(trainer, model, epoch).items()}

    def restore(self, trainer: Any, model: Any) -> None:
        for steer in self.steerers:
            if hasattr(steer, "restore"):
                steer.restore(trainer, model)
