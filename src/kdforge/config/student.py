"""The student, its loss terms, and how training moves through stages and curricula."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field

from kdforge.config.sections import (
    Component,
    ModelConfig,
    Section,
)
from kdforge.schedules import ScheduleConfig


class TransferConfig(Section):
    """``student.init_from_teacher``: start from the teacher (``true`` takes these defaults).
    Tensors of the same (renamed) name and shape are copied; then each TM feed-forward block
    (if the student has any) learns, for ``steps`` steps, to reproduce the teacher MLP in its
    place (see kdforge.transfer)."""

    steps: int = Field(
        200,
        ge=0,
        description="module-wise steps in which each TM block learns its teacher MLP's outputs (0: copy only)",
    )
    lr: float = Field(3e-3, gt=0, description="Adam learning rate of those steps")


class SpecializeConfig(Section):
    """``student.clause_specialize``: after ``warmup_epochs``, each attention head's gain becomes
    (1 − strength) + strength · its validation importance / its block's mean importance."""

    strength: float = Field(0.5, ge=0, le=1)
    warmup_epochs: int = Field(2, ge=1, description="applied once, at the end of this epoch")


class AutoClauseConfig(Section):
    """``student.auto_clause``: after ``warmup_epochs``, share the clause budget across clause
    layers by their validation importance and mask each layer's least important clauses."""

    warmup_epochs: int = Field(
        2,
        ge=0,
        description=(
            "applied once, at the end of this epoch (0: before training, e.g. on a student initialised from "
            "its teacher)"
        ),
    )
    batches: int | None = Field(
        None, gt=0, description="validation batches the clause importance is measured on (default: all)"
    )
    total: int | None = Field(
        None, gt=0, description="active clauses in all layers together (default: keep the current total)"
    )
    min_clauses: int = Field(2, ge=1, description="no layer keeps fewer")


class PeftConfig(Section):
    """``student.peft``: low-rank adapters (LoRA, Hu et al. 2021; DoRA, Liu et al. 2024, which learns each weight
    row's magnitude apart from its direction) on the student's linear layers; only the adapters train, the
    student's own weights stay as built (a pretrained model, a layer-dropped teacher)."""

    method: Literal["lora", "dora"] = "lora"
    r: int = Field(16, ge=1, description="the adapters' rank")
    alpha: int = Field(32, ge=1, description="their scale: a layer's update is alpha / r times B·A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on an adapted layer's input to its adapter")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="the linear layers adapted: names (q_proj, v_proj, ...; a layer whose name ends so) or all-linear "
        "(every linear layer but the output head)",
    )


class StudentConfig(Section):
    model: ModelConfig
    peft: PeftConfig | None = Field(
        None, description="{method: lora, r, alpha, dropout, target_modules}: train low-rank adapters only"
    )
    preset: Literal["standard", "compressed", "tiny", "fixed_compressed", "fixed_tiny"] | None = Field(
        None,
        description="an ssm student sized from the ssm teacher (its model section, or the teacher.json beside a "
        "checkpoint): standard (same size), compressed (1/2), tiny (1/4), "
        "fixed_compressed (model_dim 32, state_dim 256, 4 layers), fixed_tiny (24, 128, 3); without selectivity; "
        "student.model options override",
    )
    init_from_teacher: TransferConfig | None = Field(
        None,
        description=(
            "true, or {steps, lr}: copy matching teacher weights, fit each TM block (if any) to its teacher MLP"
        ),
    )
    init_from: str | None = Field(
        None,
        description="an earlier run directory (or its student.safetensors) of the same student model: start from its "
        "weights, "
        "with and without the teacher (the second stage of a two-stage distillation)",
    )
    clause_specialize: SpecializeConfig | None = None
    auto_clause: AutoClauseConfig | None = None
    diagnostics_every: int = Field(
        0, ge=0, description="TM students: log head and clause importance on validation every N epochs (0: off)"
    )
    hard_finish: int = Field(
        0,
        ge=0,
        description="TM students: train the last N epochs in hard mode (boolean literals, integer votes: what the "
        "exported rules compute); the best weights are chosen among those epochs only (0: off)",
    )
    choose_levels: bool = Field(
        True,
        description="TM students whose model sets no `levels`: after training, read the literals of hard mode and "
        "the exported rules at the fewest of 1, 2, 3, 4 or 8 levels that scores within 0.25 points of the soft "
        "student on validation (the best of them if none does)",
    )

    @pydantic.field_validator("init_from_teacher", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        return ({} if value else None) if isinstance(value, bool) else value


class LossConfig(Component):
    """One named loss term and its weight."""

    weight: float | ScheduleConfig = Field(1.0, description="a number >= 0 or a schedule")
    member: int | None = Field(
        None,
        ge=0,
        description=(
            "ensemble teachers: this term reads member i's logits (e.g. the EMA member) instead of the combination"
        ),
    )

    @pydantic.field_validator("weight")
    @classmethod
    def _non_negative(cls, value: float | ScheduleConfig) -> float | ScheduleConfig:
        if isinstance(value, float) and value < 0:
            raise ValueError(f"a loss weight must be >= 0, got {value}")
        return value


class PlateauConfig(Section):
    """Move on when the training loss stops falling: |least-squares slope| over ``window`` epochs < ``eps``."""

    window: int = Field(3, ge=2, description="epochs the slope is fitted over")
    eps: float = Field(1e-3, ge=0, description="loss change per epoch below which the stage ends")


class ValPlateauConfig(Section):
    """Move on when validation accuracy has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = Field(3, gt=0)
    min_delta: float = Field(0.0, ge=0)


class StageDataConfig(Section):
    """Which training samples a stage sees: a seeded random ``fraction``, or only ``classes``."""

    fraction: float | None = Field(None, gt=0, le=1)
    classes: list[int] | None = None

    @pydantic.model_validator(mode="after")
    def _one(self) -> StageDataConfig:
        if (self.fraction is None) == (self.classes is None):
            raise ValueError("a stage's data sets exactly one of fraction or classes")
        return self


class StageConfig(Section):
    """One stage of a staged recipe: how it ends, and what it changes (weights and
    temperatures by term name, the training subset). The last stage runs to train.epochs."""

    name: str | None = None
    epochs: int | None = Field(None, gt=0, description="the stage lasts this many epochs")
    loss_plateau: PlateauConfig | None = None
    val_plateau: ValPlateauConfig | None = None
    weights: dict[str, float | ScheduleConfig] = Field(
        default_factory=dict, description="term name -> weight in this stage"
    )
    temperatures: dict[str, float | ScheduleConfig] = Field(
        default_factory=dict, description="term name -> temperature in this stage"
    )
    data: StageDataConfig | None = None

    @pydantic.model_validator(mode="after")
    def _one_end(self) -> StageConfig:
        if sum(x is not None for x in (self.epochs, self.loss_plateau, self.val_plateau)) > 1:
            raise ValueError("a stage ends by one of epochs, loss_plateau or val_plateau")
        return self

    @property
    def open_ended(self) -> bool:
        return self.epochs is None and self.loss_plateau is None and self.val_plateau is None


class CurriculumConfig(Section):
    """POCL, progressive curriculum: rank training samples by difficulty (teacher and student
    losses, fused by reciprocal ranks), train on cumulative easy-to-hard ``partitions`` with
    a rising temperature."""

    name: Literal["pocl"] = "pocl"
    partitions: list[float] = Field(
        default_factory=lambda: [1 / 3, 2 / 3, 1.0],
        description="cumulative shares of the data, easiest first; the last is 1",
    )
    temperatures: list[float] | None = Field(
        default_factory=lambda: [1.0, 2.0, 4.0],
        description="temperature of every (non-learnable) temperature term per stage; null keeps the terms' own",
    )
    epochs: list[int] | None = Field(None, description="epochs per stage; default: train.epochs split evenly")
    fusion_k: float = Field(60.0, gt=0, description="reciprocal-rank fusion constant")

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> CurriculumConfig:
        p = self.partitions
        if not p or p[-1] != 1.0 or any(b <= a for a, b in zip(p, p[1:])) or p[0] <= 0:
            raise ValueError(f"partitions must rise strictly from above 0 to exactly 1, got {p}")
        for key in ("temperatures", "epochs"):
            values = getattr(self, key)
            if values is not None and len(values) != len(p):
                raise ValueError(f"curriculum.{key} needs one value per partition ({len(p)}), got {len(values)}")
        return self
