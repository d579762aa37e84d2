"""How the student trains: optimiser, loop, logging."""

from __future__ import annotations

import re
from typing import Literal

import pydantic
from pydantic import Field

from kdforge.config.sections import (
    Section,
)


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


class OnPolicyConfig(Section):
    """Sequences written during training (language models): on-policy distillation (GKD) or sequence-level KD."""

    fraction: float = Field(
        0.5, ge=0, le=1, description="λ: the share of each batch's sequences replaced by generated ones (0: plain KD)"
    )
    by: Literal["student", "teacher"] = Field(
        "student",
        description="who writes them: student (on-policy, GKD: the teacher scores the student's own samples) or "
        "teacher (sequence-level KD: the student learns the teacher's samples)",
    )
    max_new_tokens: int = Field(64, gt=0, description="tokens written after each prompt (at most to the row's end)")
    temperature: float = Field(1.0, ge=0, description="sampling temperature; 0 is greedy")
    top_k: int | None = Field(None, gt=0, description="sample among the k most likely tokens only")
    prompt_tokens: int = Field(
        16, gt=0, description="texts without a prompt (no masked tokens first): their first N tokens are the prompt"
    )


class EarlyStoppingConfig(Section):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    metric: Literal["accuracy", "loss"] = Field(
        "accuracy",
        description="validation metric watched (accuracy, or PSNR for a regression: higher is better; loss: lower)",
    )
    patience: float = Field(
        10, gt=0, description="epochs without improvement before stopping (fractions of one with val_every: {steps: N})"
    )
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class StepsConfig(Section):
    """An interval in optimiser steps: ``{steps: 500}``."""

    steps: int = Field(gt=0, description="optimiser steps")


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
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "channels-last memory format for image models and batches; auto: on when the student or the teacher "
            "has 2-D convolutions (1.4-1.5x faster convolution steps on CPU, 1.6-1.7x for a ResNet-50 teacher on a "
            "GPU)"
        ),
    )
    compile: bool = Field(
        False,
        description=(
            "torch.compile the student and the chunk step of chunked losses (falls back to eager, with a warning, "
            "where unsupported)"
        ),
    )
    grad_clip: float | None = Field(
        None, gt=0, description="clip the global gradient norm (student, loss-term parts, trainable teacher) to this"
    )
    accumulate: int = Field(1, gt=0, description="micro-batches per optimiser step")
    baseline: bool = Field(True, description="also train the student without distillation")
    baseline_budget: Literal["steps", "epochs"] = Field(
        "steps",
        description=(
            "the baseline's length when the distilled student also trains on unlabelled inputs: steps, as many "
            "optimiser steps as the distilled student takes (more epochs of the labelled data, early stopping's "
            "patience as long in steps: a gain is then the teacher's, not a longer schedule's); epochs, train.epochs "
            "of the labelled data"
        ),
    )
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
            "seconds between last.pt writes at epoch ends, the first one that long into training (0: every "
            "epoch); always written at the end and on stop"
        ),
    )
    val_every: int | StepsConfig = Field(
        1,
        description=(
            "validate every N epochs, or every N optimiser steps with {steps: N} (for epochs too long to wait "
            "for), and when training ends: the selected weights, early stopping and tune pruning see these "
            "validations only"
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
    on_policy: OnPolicyConfig | None = Field(
        None,
        description="language models: a share of each batch's sequences written by the student (GKD) or the "
        "teacher (sequence-level KD) after their prompts, then distilled on (the baseline trains on the data)",
    )
    fsdp: bool = Field(
        False,
        description=(
            "under torchrun: shard the student's parameters, gradients and optimiser state across processes "
            "(FSDP2) instead of replicating it (DDP)"
        ),
    )

    @pydantic.field_validator("val_every", mode="before")
    @classmethod
    def _interval(cls, value: object) -> object:
        """One message for any wrong interval (a union would report each of its branches)."""
        steps = isinstance(value, dict) and value.keys() == {"steps"} and _positive_int(value["steps"])
        if _positive_int(value) or steps or isinstance(value, StepsConfig):
            return value
        raise ValueError("give a number of epochs (1 or more), or {steps: N} to validate every N optimiser steps")

    @pydantic.field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"device '{value}' is not one of auto, cpu, cuda, cuda:N, mps")
        return value


class LogConfig(Section):
    dir: str = Field("runs", description="where run directories are made")
    every_steps: int = Field(
        50,
        gt=0,
        description=(
            "metrics.jsonl line (and tracker update) every N optimiser steps; each reads the losses back from the "
            "device"
        ),
    )
    progress: bool = Field(True, description="live progress bars and epoch lines on the console")
    val_terms: bool = Field(
        True,
        description=(
            "every epoch, also compute each loss term on the validation split (val_terms in metrics.jsonl and "
            "the trackers; one more teacher pass over it)"
        ),
    )
    epoch_test: bool = Field(
        False,
        description=(
            "after every epoch of the student, also its test metrics, as test in metrics.jsonl and the trackers: "
            "for reporting only (selection, early stopping and tuning read validation alone)"
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
