"""The recipe's building blocks: strict sections, components named in a registry, and the data sections."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

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


class TokensAugmentConfig(Section):
    """Change some tokens of each training row (rows of token ids: text datasets): teacher and student see the
    same changed row, new inputs for the teacher to label (TinyBERT's augmented transfer set, drawn each step), or
    (``teacher: original``) the teacher reads the row as it is and the student learns its answer from the changed
    one (Noisy Student)."""

    p: float = Field(gt=0, le=1, description="chance that a token (not padding, not a special token) is changed")
    mask: float = Field(
        0.5, ge=0, le=1, description="of the changed tokens, the share set to the mask token, the rest to a token "
        "drawn from the batch's own (or a close one: neighbours)",
    )  # fmt: skip
    neighbours: int = Field(
        0, ge=0, description="k > 0: a changed token that is not masked becomes one of the k tokens closest to it in "
        "the teacher's token-embedding table (cosine; TinyBERT's word replacement by close words), which the teacher "
        "has once it is ready, so its own fit cannot read such rows; 0: a token drawn from the batch",
    )  # fmt: skip
    teacher: Literal["changed", "original"] = Field(
        "changed", description="what the teacher reads: the same changed row as the student, or the row as it is "
        "(its fit, too, reads the rows as they are)",
    )  # fmt: skip


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
    tokens: TokensAugmentConfig | None = Field(None, description="token changes, for rows of token ids (text)")

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
    split_file: str | None = Field(
        None,
        description=(
            "your fixed split: a .json or .npz file of row indices for train, val and test (the splits the dataset "
            "would draw; a split that comes from the dataset's own files is not in it), used exactly as given"
        ),
    )
    workers: int | None = Field(
        None,
        ge=0,
        description=(
            "processes that read samples of datasets read from disk (image_folder, ...); default: one fewer than "
            "the cores, at most 4; 0: read in the training process"
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
