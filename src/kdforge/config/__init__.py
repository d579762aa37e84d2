"""The recipe: typed, strict sections (pydantic v2), YAML load/dump, dotted overrides.

YAML holds values only. Every key is checked before anything is built: an unknown key
fails with the closest valid one, a wrong type names the field, and when the value came
from a YAML file the message gives the file and line; when it came from an override, the
override is named.
"""

from kdforge.config.recipe import Recipe, component_issues, component_issues_for, term_names, validate_recipe
from kdforge.config.sections import (
    AugmentConfig,
    BooleanizeConfig,
    Component,
    DataConfig,
    ModelConfig,
    RandAugmentConfig,
    Section,
    TokensAugmentConfig,
)
from kdforge.config.student import (
    AutoClauseConfig,
    CurriculumConfig,
    LossConfig,
    PlateauConfig,
    SpecializeConfig,
    StageConfig,
    StageDataConfig,
    StudentConfig,
    TransferConfig,
    ValPlateauConfig,
)
from kdforge.config.teacher import AdaptConfig, FinetuneConfig, TeacherConfig, TeacherTrainConfig
from kdforge.config.training import EarlyStoppingConfig, LogConfig, OnPolicyConfig, OptimConfig, TrainConfig

__all__ = [
    "AdaptConfig",
    "AugmentConfig",
    "AutoClauseConfig",
    "BooleanizeConfig",
    "Component",
    "CurriculumConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "OnPolicyConfig",
    "FinetuneConfig",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PlateauConfig",
    "RandAugmentConfig",
    "TokensAugmentConfig",
    "Recipe",
    "Section",
    "SpecializeConfig",
    "StageConfig",
    "StageDataConfig",
    "StudentConfig",
    "TeacherConfig",
    "TeacherTrainConfig",
    "TrainConfig",
    "TransferConfig",
    "ValPlateauConfig",
    "component_issues",
    "component_issues_for",
    "term_names",
    "validate_recipe",
]
