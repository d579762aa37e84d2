"""The recipe: typed, strict sections (pydantic v2), YAML load/dump, dotted overrides.

YAML holds values only. Every key is checked before anything is built: an unknown key
fails with the closest valid one, a wrong type names the field, and when the value came
from a YAML file the message gives the file and line; when it came from an override, the
override is named.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from kdforge._recipe_yaml import Loc, Override, YamlSource, apply_override, describe_issue, load_yaml
from kdforge.errors import ConfigError, did_you_mean
from kdforge.files import read_text
from kdforge.registry import DATASETS, LOSSES, MODELS
from kdforge.schedules import ScheduleConfig


class Section(BaseModel):
    """A recipe section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Component(Section):
    """A section that names a registry entry; its other keys are that entry's options.

    ``{name: cnn, width: 32}`` builds ``MODELS['cnn'](width=32, ...)``. The options are
    checked against the entry's signature by :func:`component_issues`.
    """

    model_config = ConfigDict(extra="allow", strict=True)
    name: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


class RandAugmentConfig(Section):
    """torchvision's RandAugment: ``n`` random operations per image at magnitude ``m``."""

    n: int = Field(2, ge=1, description="operations per image")
    m: int = Field(9, ge=0, le=30, description="magnitude (0-30)")


class AugmentConfig(Section):
    """Training-batch augmentation; teacher and student see the same augmented batch."""

    shift: int = Field(0, ge=0, description="random translation, in pixels/steps per axis")
    noise: float = Field(0.0, ge=0, description="std of additive Gaussian noise")
    randaugment: RandAugmentConfig | None = Field(
        None, description="RandAugment on images (values in [0, 1] before standardisation)"
    )
    mixup: float | ScheduleConfig = Field(
        0.0, description="mixup strength α (λ ~ Beta(α, α)); 0: off; a schedule ramps it"
    )
    cutmix: float | ScheduleConfig = Field(0.0, description="CutMix strength α; 0: off; a schedule ramps it")
    mix_prob: float = Field(1.0, ge=0, le=1, description="chance that a batch is mixed at all")
    switch_prob: float = Field(0.5, ge=0, le=1, description="with mixup and CutMix both on: chance a batch uses CutMix")

    @property
    def mixes(self) -> bool:
        return any(isinstance(a, ScheduleConfig) or a > 0 for a in (self.mixup, self.cutmix))


class BooleanizeConfig(Section):
    """Turn inputs into ±1 bits for Tsetlin-machine students, by per-feature thresholds
    fitted on the training split: the median (``thresholds``), or ``levels`` quantiles
    (``thermometer``, ``levels`` bits per feature, stacked as channels)."""

    method: Literal["thresholds", "thermometer"] = "thermometer"
    levels: int = Field(4, gt=0, le=64)
    features: Literal["raw", "augmented", "convolutional"] = Field(
        "raw",
        description=(
            "what is thresholded: the inputs (raw); plus local contrast and edges (augmented); plus a fixed "
            "bank of small filters (convolutional)"
        ),
    )
    cache: str | None = Field(
        None,
        description=(
            "a folder where the bits are stored packed and reused by runs on the same inputs with the same settings"
        ),
    )


class DataConfig(Component):
    """Which dataset, how it is split, batched, booleanised and augmented."""

    name: str = "digits"
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(512, gt=0)
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int | None = Field(
        None,
        description=(
            "seed of the dataset and its split; default: the recipe's seed (fix it to vary only the training "
            "across seeds)"
        ),
    )
    augment: AugmentConfig = AugmentConfig()
    booleanize: BooleanizeConfig | None = Field(
        None, description="±1 bits by training-split thresholds, for TM students"
    )

    @pydantic.model_validator(mode="after")
    def _leaves_training(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction is {self.val_fraction + self.test_fraction:g}: together they must stay "
                "below 1 to leave a training split"
            )
        return self


class ModelConfig(Component):
    """A registered architecture and its constructor options."""


class TeacherTrainConfig(Section):
    """How a ``source: train`` teacher is trained (cross-entropy, recipe optimiser)."""

    epochs: int = Field(20, gt=0)
    lr: float | None = Field(None, gt=0, description="defaults to optim.lr")
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class FinetuneConfig(TeacherTrainConfig):
    """Fit a loaded teacher on the training split before distillation (cached by a hash of
    the teacher section): the whole model, or only its classifier head."""

    epochs: int = Field(5, gt=0)
    head_only: bool = False


class AdaptConfig(Section):
    """What the teacher expects, when it differs from the student's data (see InputAdapter)."""

    size: int | None = Field(None, gt=0, description="spatial size (square images, or sequence length)")
    channels: int | None = Field(None, gt=0, description="repeat a single channel to this many")
    mean: list[float] | None = Field(None, description="the teacher's per-channel normalisation mean, e.g. ImageNet's")
    std: list[float] | None = Field(None, description="the teacher's per-channel normalisation std")


class TeacherConfig(Section):
    """Where the frozen teacher comes from.

    ``train``: fit ``model`` first; ``checkpoint``: load ``path``; ``ensemble``: combine
    ``members`` (each a teacher section) by ``mean`` or ``weighted`` logits; ``ema``: the
    exponential moving average (``decay``) of the student itself (self-distillation);
    ``table``: stored embeddings (``path``: a table with its texts; none: the inputs).
    """

    source: Literal[
        "train",
        "checkpoint",
        "timm",
        "torchvision",
        "hf",
        "sentence-transformers",
        "table",
        "callable",
        "ensemble",
        "ema",
    ] = "train"
    model: ModelConfig | None = None
    path: str | None = None
    pretrained: bool | None = Field(
        None, description="timm/torchvision: start from pretrained weights (offline: give pretrained_file)"
    )
    pretrained_file: str | None = Field(None, description="timm/torchvision: local file with the pretrained weights")
    checkpoint: str | None = Field(
        None, description="timm/torchvision/callable: weights loaded after the pretrained ones (a fine-tuned teacher)"
    )
    finetune: FinetuneConfig | None = Field(None, description="fit the loaded teacher on the training split first")
    adapt: AdaptConfig | None = Field(
        None, description="resize / repeat channels / renormalise the batch for the teacher"
    )
    cache: str | None = Field(
        None, description="a folder written by `kdforge cache`: train from the teacher's stored outputs"
    )
    trainable: bool = Field(
        False, description="online distillation: co-train the teacher with its own CE term and optimiser group"
    )
    lr: float | None = Field(None, gt=0, description="trainable teachers: their learning rate (default optim.lr)")
    ce_weight: float | None = Field(
        None,
        ge=0,
        description=(
            "trainable teachers: weight of their own loss on the labels (cross-entropy, or the task term of "
            "regression data; default 1)"
        ),
    )
    train: TeacherTrainConfig | None = Field(None, description="source 'train' only; defaults apply")
    members: list[TeacherConfig] | None = Field(None, description="source 'ensemble': two or more teacher sections")
    combine: Literal["mean", "weighted"] | None = Field(
        None, description="source 'ensemble': how logits are combined (default mean)"
    )
    weights: list[float] | None = Field(
        None, description="source 'ensemble' with combine 'weighted': one weight per member"
    )
    decay: float | None = Field(
        None, gt=0, lt=1, description="source 'ema': EMA decay per optimiser step (default 0.999)"
    )

    @pydantic.model_validator(mode="after")
    def _source_needs(self) -> TeacherConfig:
        hub = {"model", "pretrained", "pretrained_file", "checkpoint", "finetune", "adapt"}
        needs = {"train": ("model",), "checkpoint": ("path",), "ensemble": ("members",), "ema": (), "table": ()}.get(
            self.source, ("model",)
        )
        allowed = {
            "train": {"model", "train"},
            "checkpoint": {"model", "path", "adapt"},
            "timm": hub,
            "torchvision": hub,
            "callable": {"model", "checkpoint", "finetune", "adapt"},
            "hf": {"model", "checkpoint", "finetune", "adapt"},
            "sentence-transformers": {"model"},
            "table": {"path"},
            "ensemble": {"members", "combine", "weights"},
            "ema": {"decay"},
        }[self.source]
        examples = {
            "model": "{name: ...} and its options",
            "path": "a run dir, .safetensors or .pt file",
            "members": "a list of teacher sections",
        }
        for key in needs:
            if getattr(self, key) is None:
                raise ValueError(f"source '{self.source}' needs teacher.{key} ({examples[key]})")
        for key in ("model", "path", "train", "members", "combine", "weights", "decay", *sorted(hub - {"model"})):
            if getattr(self, key) is not None and key not in allowed:
                raise ValueError(f"teacher.{key} is not used with source '{self.source}'; remove it")
        if self.source == "train" and self.train is None:
            self.train = TeacherTrainConfig()
        if self.source == "ensemble":
            if len(self.members) < 2:
                raise ValueError("an ensemble needs at least two members")
            if kinds := sorted({m.source for m in self.members} & {"ensemble", "table", "sentence-transformers"}):
                raise ValueError(
                    "ensemble members predict logits from the student's inputs: not "
                    f"{', '.join(repr(k) for k in kinds)}"
                )
            if sum(m.source == "ema" for m in self.members) > 1:
                raise ValueError("an ensemble holds at most one 'ema' member (the moving average of the student)")
            if any(m.cache is not None or m.trainable for m in self.members):
                raise ValueError(
                    "teacher.cache and teacher.trainable belong to the ensemble's own section, not to a member"
                )
            self.combine = self.combine or "mean"
            if (self.combine == "weighted") != (self.weights is not None):
                raise ValueError(
                    "combine 'weighted' goes with weights (one per member), and weights with combine 'weighted'"
                )
            if self.weights is not None and (
                len(self.weights) != len(self.members) or min(self.weights) < 0 or sum(self.weights) <= 0
            ):
                raise ValueError(f"weights must be {len(self.members)} non-negative numbers with a positive sum")
        if not self.trainable and (self.lr is not None or self.ce_weight is not None):
            raise ValueError("teacher.lr and teacher.ce_weight are used with trainable: true only")
        if self.trainable and (self.follows_student or self.cache is not None):
            raise ValueError(
                "a trainable teacher needs weights to train: not with an 'ema' teacher or member, or a cache"
            )
        if self.follows_student and self.cache is not None:
            raise ValueError("an EMA teacher (or ensemble member) changes as the student trains: it cannot be cached")
        if self.source == "ema" and self.decay is None:
            self.decay = 0.999
        return self

    @property
    def follows_student(self) -> bool:
        """Whether the teacher is (or holds) the moving average of the student."""
        return self.ema_part is not None

    @property
    def ema_part(self) -> tuple[str, float] | None:
        """(the submodule that follows the student, its decay): ``""`` for an ``ema`` teacher,
        ``members.<i>`` for an ensemble's ``ema`` member; None when nothing does."""
        if self.source == "ema":
            return "", self.decay
        found = [(f"members.{i}", m.decay) for i, m in enumerate(self.members or []) if m.source == "ema"]
        return found[0] if found else None


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


class StudentConfig(Section):
    model: ModelConfig
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


class OptimConfig(Section):
    name: Literal["adamw", "sgd", "dot"] = Field(
        "adamw",
        description=(
            "adamw or sgd (torch's own), or dot: SGD with separate momenta for the task and distillation "
            "gradients (DOT)"
        ),
    )
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.05, ge=0, description="decoupled (AdamW) or L2 (SGD) weight decay")
    momentum: float | None = Field(None, ge=0, lt=1, description="sgd (Nesterov) and dot; default 0.9")
    dot_delta: float | None = Field(
        None,
        ge=0,
        lt=1,
        description=(
            "dot only: distillation gradients use momentum + delta, task gradients momentum − delta (default 0.075)"
        ),
    )
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from 0 to lr over this many epochs")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="after warm-up: cosine decay to min_lr, or constant"
    )
    min_lr: float = Field(0.0, ge=0, description="where cosine decay ends")
    lr_cycle_steps: int | None = Field(
        None, gt=0, description="cosine with restarts: first cycle length in optimiser steps after warm-up"
    )
    lr_cycle_mul: float = Field(1.0, gt=0, description="each cycle is this many times longer than the last")
    lr_cycle_decay: float = Field(1.0, gt=0, le=1, description="each cycle's peak LR is this times the last one's")
    layer_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "layer-wise LR decay: block i of L gets lr · layer_decay^(L + 1 − i); embeddings decay most, the "
            "head not at all"
        ),
    )
    filter_bias_and_bn: bool = Field(
        True,
        description=(
            "no weight decay on biases, norm weights and embeddings (≤1-dim parameters and a model's "
            "no_weight_decay() names)"
        ),
    )
    grad_centralization: bool = Field(
        False, description="subtract each weight gradient's mean over its input dims before the step"
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> OptimConfig:
        if self.name == "adamw" and self.momentum is not None:
            raise ValueError("optim.momentum is only used with name 'sgd' or 'dot'")
        if self.name != "dot" and self.dot_delta is not None:
            raise ValueError("optim.dot_delta is only used with name 'dot'")
        if self.name == "dot":
            self.momentum = 0.9 if self.momentum is None else self.momentum
            self.dot_delta = 0.075 if self.dot_delta is None else self.dot_delta
            if not (0 <= self.momentum - self.dot_delta and self.momentum + self.dot_delta < 1):
                raise ValueError(
                    f"optim.momentum ± dot_delta must stay in [0, 1), got {self.momentum} ± {self.dot_delta}"
                )
        if self.lr_cycle_steps is not None and self.schedule != "cosine":
            raise ValueError("optim.lr_cycle_steps restarts a cosine schedule: set optim.schedule: cosine")
        return self


class EarlyStoppingConfig(Section):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    metric: Literal["accuracy", "loss"] = Field(
        "accuracy",
        description="validation metric watched (accuracy, or PSNR for a regression: higher is better; loss: lower)",
    )
    patience: int = Field(10, gt=0, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")


class TrainConfig(Section):
    epochs: int = Field(30, gt=0, description="length of training (the LR schedule spans it)")
    max_steps: int | None = Field(
        None,
        gt=0,
        description=(
            "a budget of optimiser steps instead of epochs: training, the LR schedule and every schedule span "
            "it (the last epoch may end early); train.epochs is then not used"
        ),
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N or mps")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="auto: bf16 on CUDA, off on CPU; fp16 uses a gradient scaler"
    )
    channels_last: bool = Field(
        False, description="channels-last memory format for image models and batches (faster convolutions on GPUs)"
    )
    compile: bool = Field(
        False, description="torch.compile the student (falls back to eager, with a warning, where unsupported)"
    )
    grad_clip: float | None = Field(
        None, gt=0, description="clip the global gradient norm (student, loss-term parts, trainable teacher) to this"
    )
    accumulate: int = Field(1, gt=0, description="micro-batches per optimiser step")
    baseline: bool = Field(True, description="also train the student without distillation")
    stage_checkpoints: bool = Field(
        False,
        description=(
            "save the student as each stage ends (recipe stages, curriculum partitions, and the steps of a "
            "schedule held in stages) to <checkpoint dir>/stages/stage_N"
        ),
    )
    checkpoint_interval: float = Field(
        10.0,
        ge=0,
        description=(
            "seconds between last.pt writes at epoch ends (0: every epoch); always written at the end and on stop"
        ),
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="stop when validation stops improving (the schedule still spans train.epochs)"
    )
    deterministic: bool = Field(
        False,
        description=(
            "deterministic kernels only (torch.use_deterministic_algorithms): bitwise-repeatable runs, sometimes slower"
        ),
    )
    grad_checkpoint: bool = Field(
        False,
        description=(
            "recompute each student block's activations in backward instead of storing them (less memory, "
            "~1/3 more compute)"
        ),
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "keep a moving average of the student's weights (e.g. 0.999); validation, best-epoch selection, "
            "test and export use it"
        ),
    )
    ema_warmup: bool = Field(True, description="EMA decay ramps up as min(ema_decay, (1 + step) / (10 + step))")
    fsdp: bool = Field(
        False,
        description=(
            "under torchrun: shard the student's parameters, gradients and optimiser state across processes "
            "(FSDP2) instead of replicating it (DDP)"
        ),
    )

    @pydantic.field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"device '{value}' is not one of auto, cpu, cuda, cuda:N, mps")
        return value


class LogConfig(Section):
    dir: str = Field("runs", description="where run directories are made")
    every_steps: int = Field(10, gt=0, description="metrics.jsonl line (and tracker update) every N optimiser steps")
    progress: bool = Field(True, description="live progress bars and epoch lines on the console")
    val_terms: bool = Field(
        True,
        description=(
            "every epoch, also compute each loss term on the validation split (val_terms in metrics.jsonl and "
            "the trackers; one more teacher pass over it)"
        ),
    )
    grad_stats_every: int | None = Field(
        None, gt=0, description="per-layer gradient norms (student, loss-term parts, trainable teacher) every N steps"
    )
    tensorboard: bool = Field(False, description="TensorBoard event files in <run dir>/tensorboard")
    weight_histograms: bool = Field(
        False,
        description=(
            "every epoch, a histogram of each student weight tensor to the trackers (MLflow: mean, std, min, max)"
        ),
    )
    wandb: bool = Field(False, description="a Weights & Biases run in <run dir>/wandb")
    wandb_project: str = Field("kdforge", description="the W&B project")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="offline needs no network; `wandb sync` uploads later"
    )
    mlflow: bool = Field(False, description="an MLflow run (metrics and the recipe as parameters)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; default: a SQLite store <run dir>/mlflow.db")


class Recipe(Section):
    """A whole distillation job."""

    name: str = Field("kdforge", description="the run directory is log.dir/<name>-<time>: one folder name, no path")
    seed: int = 0
    data: DataConfig = DataConfig()
    teacher: TeacherConfig
    student: StudentConfig
    losses: list[LossConfig] = Field(min_length=1)
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()
    stages: list[StageConfig] | None = Field(
        None, description="staged training; each stage changes weights, temperatures, data"
    )
    curriculum: CurriculumConfig | None = Field(
        None,
        description=(
            "a progressive curriculum (pocl); with stages (one per partition), each stage's own end (epochs, "
            "loss_plateau, val_plateau) and settings apply on top"
        ),
    )

    @pydantic.field_validator("name")
    @classmethod
    def _one_folder_name(cls, value: str) -> str:
        bad = [c for c in ("/", "\\", "\0") if c in value]
        if not value.strip() or value in (".", "..") or bad or Path(value).is_absolute():
            shown = ", ".join("NUL" if c == "\0" else repr(c) for c in bad) or "an empty or dot name"
            raise ValueError(
                f"the name becomes one folder under log.dir, so it cannot contain {shown}; choose a plain name such "
                "as 'my-run' (set log.dir for where runs go)"
            )
        return value

    @pydantic.model_validator(mode="after")
    def _stages_fit(self) -> Recipe:
        if (
            self.stages is not None
            and self.curriculum is not None
            and len(self.stages) != len(self.curriculum.partitions)
        ):
            raise ValueError(
                "stages and a curriculum together: one stage per curriculum partition "
                f"({len(self.curriculum.partitions)}), got {len(self.stages)}"
            )
        if (
            self.curriculum is not None
            and self.curriculum.epochs is not None
            and sum(self.curriculum.epochs) != self.train.epochs
        ):
            raise ValueError(
                f"curriculum.epochs sum to {sum(self.curriculum.epochs)} but train.epochs is {self.train.epochs}"
            )
        names = term_names([c.name for c in self.losses])
        for i, stage in enumerate(self.stages or []):
            if (
                stage.open_ended and i < len(self.stages) - 1 and self.curriculum is None
            ):  # a curriculum's stages end on their own
                raise ValueError(
                    f"stage {i} needs an end (epochs, loss_plateau or val_plateau); only the last stage runs to the end"
                )
            for key in (*stage.weights, *stage.temperatures):
                if key not in names:
                    raise ValueError(
                        f"stage {i} names loss term '{key}', which the recipe does not have{did_you_mean(key, names)}"
                    )
        if self.train.fsdp and self.train.ema_decay is not None:
            raise ValueError(
                "train.ema_decay keeps a whole copy of the student, which train.fsdp shards; use one or the other"
            )
        described = (
            self.teacher.model is not None or self.teacher.source == "checkpoint"
        )  # a checkpoint may carry its description
        if self.student.preset is not None and not (
            self.student.model.name == "ssm"
            and described
            and (self.teacher.model is None or self.teacher.model.name == "ssm")
        ):
            raise ValueError(
                "student.preset sizes an ssm student from an ssm teacher; here the student is "
                f"'{self.student.model.name}' and the teacher "
                f"'{self.teacher.model.name if self.teacher.model else self.teacher.source}' (set both model names to "
                "ssm, or drop student.preset)"
            )
        if self.student.init_from_teacher is not None and self.student.init_from is not None:
            raise ValueError(
                "student.init_from and student.init_from_teacher both give the student its first weights; keep one"
            )
        if self.student.init_from_teacher is not None and (
            self.teacher.cache is not None or self.teacher.source in ("ema", "ensemble")
        ):
            raise ValueError(
                "student.init_from_teacher copies the teacher's own modules: it needs one online teacher (no "
                "teacher.cache, not 'ema' or 'ensemble')"
            )
        if self.optim.name == "dot" and (
            self.train.amp == "fp16" or self.train.grad_clip is not None or self.optim.grad_centralization
        ):
            raise ValueError(
                "optim.name dot keeps the task and distillation gradients apart until its step, so it takes no "
                "gradient scaler, clipping or centralisation: "
                "use train.amp bf16 or off, and drop train.grad_clip and optim.grad_centralization"
            )
        if self.train.fsdp and self.teacher.follows_student:
            raise ValueError(
                "train.fsdp shards the student, which an EMA teacher must copy whole every step; use DDP (train.fsdp: "
                "false)"
            )
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe file '{path}' not found")
        text = read_text(path, "recipe file")
        return cls.from_dict(load_yaml(text, str(path)), overrides, YamlSource(str(path), text))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], overrides: Sequence[str] = (), source: YamlSource | None = None) -> Recipe:
        raw = copy.deepcopy(raw)
        applied = [apply_override(raw, text) for text in overrides]
        return validate_recipe(raw, source, applied)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: Sequence[str]) -> Recipe:
        return Recipe.from_dict(self.to_dict(), overrides)


# ---------------------------------------------------------------- validation


def validate_recipe(raw: Any, source: YamlSource | None = None, overrides: Sequence[Override] = ()) -> Recipe:
    """The typed recipe, or one :class:`ConfigError` listing every problem found in ``raw``."""
    if not isinstance(raw, dict):
        raise ConfigError("a recipe is a mapping of sections (name, data, teacher, student, losses, ...)")
    recipe = None
    try:
        recipe = Recipe.model_validate(raw)
    except pydantic.ValidationError as err:
        issues = [(e["loc"], _message(e)) for e in err.errors()]
    else:
        issues = []
    issues += component_issues(raw)  # also when other sections failed: every problem in one run
    if issues:
        lines = [describe_issue(loc, msg, source, overrides) for loc, msg in issues]
        raise ConfigError("invalid recipe:\n  " + "\n  ".join(lines))
    return recipe


def term_names(kinds: list[str]) -> list[str]:
    """Names of terms in recipe order: a repeated kind gets a suffix (``hint``, ``hint_2``)."""
    seen: Counter[str] = Counter()
    names = []
    for kind in kinds:
        seen[kind] += 1
        names.append(kind if seen[kind] == 1 else f"{kind}_{seen[kind]}")
    return names


def component_issues(raw: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Check each registry-backed section's options against its entry's signature. Reads the
    raw recipe, so that it runs even when other sections are invalid; a section that is
    itself malformed is left to the recipe's own validation."""
    issues: list[tuple[Loc, str]] = []
    for loc, kind, registry in _component_sections(raw):
        try:
            section = kind.model_validate(_at(raw, loc))
        except pydantic.ValidationError:
            continue
        issues += [(loc + sub, msg) for sub, msg in component_issues_for(section, registry)]
    return issues


def _component_sections(raw: dict[str, Any]) -> Iterable[tuple[Loc, type[Component], Any]]:

    if isinstance(raw.get("data"), dict):
        yield ("data",), DataConfig, DATASETS
    teacher = raw.get("teacher")
    teachers = [(("teacher",), teacher)] if isinstance(teacher, dict) else []
    members = teacher.get("members") if isinstance(teacher, dict) else None
    teachers += [
        (("teacher", "members", i), m)
        for i, m in enumerate(members if isinstance(members, list) else [])
        if isinstance(m, dict)
    ]
    for loc, section in teachers:
        if section.get("source", "train") in ("train", "checkpoint") and isinstance(section.get("model"), dict):
            yield loc + ("model",), ModelConfig, MODELS
    student = raw.get("student")
    if isinstance(student, dict) and isinstance(student.get("model"), dict):
        yield ("student", "model"), ModelConfig, MODELS
    losses = raw.get("losses")
    for i, term in enumerate(losses if isinstance(losses, list) else []):
        if isinstance(term, dict):
            yield ("losses", i), LossConfig, LOSSES


def _at(raw: Any, loc: Loc) -> Any:
    for key in loc:
        raw = raw[key]
    return raw


def component_issues_for(section: Component, registry: Any) -> list[tuple[Loc, str]]:
    """Problems of one registry-backed section: unknown name, unknown or mistyped options."""
    if section.name not in registry:
        return [(("name",), f"unknown {registry.kind} '{section.name}'{did_you_mean(section.name, registry.names())}")]
    try:
        registry.validate_options(section.name, section.options)
    except pydantic.ValidationError as err:
        fields = set(type(section).model_fields) | set(registry.options_model(section.name).model_fields)
        return [(tuple(e["loc"]), _message(e, fields)) for e in err.errors()]
    return []


def _message(error: Any, fields: Iterable[str] | None = None) -> str:
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        valid = fields if fields is not None else _fields_at(Recipe, loc[:-1])
        return f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), valid)}"
    if error["type"] == "missing":
        return "missing required key"
    shown = repr(error.get("input"))
    shown = shown if len(shown) < 60 else shown[:57] + "..."
    return f"{error['msg'].removeprefix('Value error, ')} (got {shown})"


def _fields_at(model: Any, loc: Loc) -> list[str]:
    """Field names of the section reached by ``loc`` from ``model``."""
    for key in loc:
        if isinstance(key, int):
            continue
        annotation = model.model_fields[key].annotation if key in model.model_fields else None
        model = _section_type(annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _section_type(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _section_type(arg)
        if found is not None:
            return found
    return None
