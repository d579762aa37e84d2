"""kdforge: knowledge distillation for PyTorch.

    import kdforge
    recipe = kdforge.Recipe.from_yaml("recipes/digits_kd.yaml", overrides=["train.epochs=5"])
    result = kdforge.run(recipe)
    student = kdforge.load_student(result.run_dir)

The names below are imported when first used, so that ``import kdforge`` (and the
``kdforge`` command's ``--help``) does not pay for PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kdforge._version import __version__

#: public name -> the module that defines it
_HOMES = {
    "Recipe": "kdforge.config",
    "DATASETS": "kdforge.data",
    "build_dataset": "kdforge.data",
    "Distiller": "kdforge.distiller",
    "StepOutput": "kdforge.distiller",
    "ConfigError": "kdforge.errors",
    "KdforgeError": "kdforge.errors",
    "NonFiniteLossError": "kdforge.errors",
    "RunInterrupted": "kdforge.errors",
    "load_student": "kdforge.export",
    "save_model": "kdforge.export",
    "Family": "kdforge.family",
    "register_family": "kdforge.family",
    "LOSSES": "kdforge.losses",
    "LossTerm": "kdforge.losses",
    "StepContext": "kdforge.losses",
    "build_loss": "kdforge.losses",
    "MODELS": "kdforge.models",
    "build_model": "kdforge.models",
    "Registry": "kdforge.registry",
    "RunResult": "kdforge.runner",
    "run": "kdforge.runner",
    "SweepResult": "kdforge.sweeper",
    "sweep": "kdforge.sweeper",
    "FeatureTap": "kdforge.taps",
    "TEACHER_SOURCES": "kdforge.teachers",
    "Teacher": "kdforge.teachers",
    "Trainer": "kdforge.trainer",
}

if TYPE_CHECKING:
    from kdforge.config import Recipe
    from kdforge.data import DATASETS, build_dataset
    from kdforge.distiller import Distiller, StepOutput
    from kdforge.errors import ConfigError, KdforgeError, NonFiniteLossError, RunInterrupted
    from kdforge.export import load_student, save_model
    from kdforge.family import Family, register_family
    from kdforge.losses import LOSSES, LossTerm, StepContext, build_loss
    from kdforge.models import MODELS, build_model
    from kdforge.registry import Registry
    from kdforge.runner import RunResult, run
    from kdforge.sweeper import SweepResult, sweep
    from kdforge.taps import FeatureTap
    from kdforge.teachers import TEACHER_SOURCES, Teacher
    from kdforge.trainer import Trainer


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'kdforge' has no attribute '{name}'")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


def list_models() -> list[str]:
    return importlib.import_module("kdforge.models").MODELS.names()


def list_losses() -> list[str]:
    return importlib.import_module("kdforge.losses").LOSSES.names()


def list_datasets() -> list[str]:
    return importlib.import_module("kdforge.data").DATASETS.names()


def list_teachers() -> list[str]:
    return importlib.import_module("kdforge.teachers").TEACHER_SOURCES.names()


__all__ = [
    "ConfigError",
    "DATASETS",
    "Distiller",
    "Family",
    "FeatureTap",
    "KdforgeError",
    "LOSSES",
    "LossTerm",
    "MODELS",
    "NonFiniteLossError",
    "Recipe",
    "Registry",
    "RunInterrupted",
    "RunResult",
    "StepContext",
    "StepOutput",
    "SweepResult",
    "TEACHER_SOURCES",
    "Teacher",
    "Trainer",
    "build_dataset",
    "build_loss",
    "build_model",
    "load_student",
    "register_family",
    "run",
    "save_model",
    "sweep",
    "list_datasets",
    "list_losses",
    "list_models",
    "list_teachers",
    "__version__",
]
