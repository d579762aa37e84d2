"""kdforge: knowledge distillation for PyTorch.

    import kdforge
    recipe = kdforge.Recipe.from_yaml("recipes/digits_kd.yaml", overrides=["train.epochs=5"])
    result = kdforge.run(recipe)
    student = kdforge.load_student(result.run_dir)
"""

__version__ = "0.1.0"

from kdforge.config import Recipe
from kdforge.data import DATASETS, build_dataset
from kdforge.distiller import Distiller, StepOutput
from kdforge.errors import ConfigError, KdforgeError, NonFiniteLossError
from kdforge.export import load_student, save_model
from kdforge.losses import LOSSES, LossTerm, StepContext, build_loss
from kdforge.models import MODELS, build_model
from kdforge.registry import Registry
from kdforge.run import RunInterrupted, RunResult, run
from kdforge.sweep import SweepResult, sweep
from kdforge.taps import FeatureTap
from kdforge.teachers import TEACHER_SOURCES, Teacher
from kdforge.trainer import Trainer


def list_models() -> list[str]:
    return MODELS.names()


def list_losses() -> list[str]:
    return LOSSES.names()


def list_datasets() -> list[str]:
    return DATASETS.names()


def list_teachers() -> list[str]:
    return TEACHER_SOURCES.names()


__all__ = [
    "ConfigError", "Distiller", "FeatureTap", "KdforgeError", "LossTerm", "NonFiniteLossError", "Recipe",
    "Registry", "RunInterrupted", "RunResult", "StepContext", "StepOutput", "SweepResult", "Teacher", "Trainer",
    "build_dataset", "build_loss", "build_model", "list_datasets", "list_losses", "list_models",
    "list_teachers", "load_student", "run", "save_model", "sweep", "__version__",
]
