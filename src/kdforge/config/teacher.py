"""Where the teacher comes from: the ``teacher`` section and its parts."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field

from kdforge.bounds import needs
from kdforge.config.sections import (
    ModelConfig,
    Section,
)

EMA_DECAY = 0.999  # an EMA teacher's decay per optimiser step, unless the recipe sets one


class TeacherTrainConfig(Section):
    """How a ``source: train`` teacher is trained (cross-entropy, the recipe's optimiser unless ``optim`` changes
    it)."""

    epochs: int = Field(20, gt=0)
    lr: float | None = Field(None, gt=0, description="defaults to optim.lr")
    optim: dict[str, Any] | None = Field(
        None,
        description=(
            "the teacher fits with the recipe's optim section with these keys changed (e.g. {name: adamw, lr: "
            "0.003}): a student trained with another optimiser (DOT, SGD) or rate distils from the same teacher; "
            "`kdforge tune` writes it out in full, so that its trials share one teacher"
        ),
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    data: dict[str, Any] | None = Field(
        None,
        description=(
            "the teacher learns from the recipe's data section with these keys changed (e.g. {lines: 600, "
            "split_seed: 1000}): a teacher that saw more, or other, labelled data than the student gets; it is "
            "selected on its own validation split and tested on the recipe's test split"
        ),
    )


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


class HFModelOptions(Section):
    """The options of a ``source: hf`` teacher's ``model`` (besides its ``name``: a folder or a hub id): which input
    it reads, which output it gives, which version of it and how it loads (see
    :func:`kdforge.teachers.hub.hf_source`)."""

    input: Literal["pixel_values", "input_ids"] | None = Field(
        None, description="what the model reads (default: input_ids for causal_lm, else pixel_values)"
    )
    output: Literal["logits", "hidden", "pooled", "mean", "causal_lm"] = "logits"
    vocab_map: str | None = Field(None, description="causal_lm: 'truncate' or a .json list (data id -> teacher id)")
    tokenizer: str | None = Field(None, description="causal_lm: the teacher's own tokenizer (a folder or a hub id)")
    revision: str | None = Field(None, description="a hub id's branch, tag or commit (default: main)")
    trust_remote_code: bool = Field(False, description="run the model code its repository ships (only if you trust it)")

    @pydantic.model_validator(mode="after")
    def _causal_lm_only(self) -> HFModelOptions:
        for key, what in (("vocab_map", "maps the data's tokens"), ("tokenizer", "retokenizes the data's text")):
            problem = needs(key, "output", f"{what} to the teacher's next-token logits", "causal_lm")(self)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def reads(self) -> str:
        return self.input or ("input_ids" if self.output == "causal_lm" else "pixel_values")


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
        None, description="timm/torchvision: start from pretrained weights (downloaded, or pretrained_file)"
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
    shard: bool = Field(
        False,
        description="under torchrun: shard the frozen teacher across the processes (FSDP2, block by block): each "
        "holds 1/N of its weights and gathers one block at a time for its forward",
    )
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None,
        description="the teacher's weights' type (bfloat16 halves a large teacher's memory; a Hugging Face model is "
        "loaded in it, with no float32 copy first); default float32",
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
        if self.shard and (self.source in ("ema", "table", "ensemble") or self.trainable or self.cache is not None):
            raise ValueError(
                "teacher.shard shards a frozen teacher that runs live: not a trainable, ema, table, ensemble or "
                "cached one"
            )
        if self.dtype is not None and (self.source in ("train", "ema", "table", "ensemble") or self.trainable):
            raise ValueError(
                f"teacher.dtype sets a loaded, frozen teacher's weights' type: not a '{self.source}'"
                + (" trainable" if self.trainable else "")
                + " teacher (an ensemble's members take their own)"
            )
        if self.source == "train" and self.train is None:
            self.train = TeacherTrainConfig()
        if self.source == "ensemble":
            members = self.members or []  # present: checked above
            if len(members) < 2:
                raise ValueError("an ensemble needs at least two members")
            if kinds := sorted({m.source for m in members} & {"ensemble", "table", "sentence-transformers"}):
                raise ValueError(
                    "ensemble members predict logits from the student's inputs: not "
                    f"{', '.join(repr(k) for k in kinds)}"
                )
            if sum(m.source == "ema" for m in members) > 1:
                raise ValueError("an ensemble holds at most one 'ema' member (the moving average of the student)")
            if any(m.cache is not None or m.trainable for m in members):
                raise ValueError(
                    "teacher.cache and teacher.trainable belong to the ensemble's own section, not to a member"
                )
            self.combine = self.combine or "mean"
            if (self.combine == "weighted") != (self.weights is not None):
                raise ValueError(
                    "combine 'weighted' goes with weights (one per member), and weights with combine 'weighted'"
                )
            if self.weights is not None and (
                len(self.weights) != len(members) or min(self.weights) < 0 or sum(self.weights) <= 0
            ):
                raise ValueError(f"weights must be {len(members)} non-negative numbers with a positive sum")
        if not self.trainable and (self.lr is not None or self.ce_weight is not None):
            raise ValueError("teacher.lr and teacher.ce_weight are used with trainable: true only")
        if self.trainable and (self.follows_student or self.cache is not None):
            raise ValueError(
                "a trainable teacher needs weights to train: not with an 'ema' teacher or member, or a cache"
            )
        if self.follows_student and self.cache is not None:
            raise ValueError("an EMA teacher (or ensemble member) changes as the student trains: it cannot be cached")
        if self.source == "ema" and self.decay is None:
            self.decay = EMA_DECAY
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
            return "", self.decay or EMA_DECAY
        found = [(f"members.{i}", m.decay or EMA_DECAY) for i, m in enumerate(self.members or []) if m.source == "ema"]
        return found[0] if found else None
