"""Embedding distillation as plain functions and one config object, under the names and call
shapes users of earlier embedding-distillation code know, with correct semantics.

```python
from kdforge.embed import CURRICULUM_CONFIG, create_curriculum_schedule, curriculum_distill_step

schedule = create_curriculum_schedule(4.0, 0.5, num_stages=5)   # 4.00, 3.125, 2.25, 1.375, 0.50
loss, tau = curriculum_distill_step(student_vec, teacher_vec, stage=2, tau_schedule=schedule)
```

Where the semantics differ from that older code:

* :func:`distill_loss` with a student narrower than its teacher (5-d against 1536-d)
  compares the batch's *similarity structure* (:func:`kdforge.losses.functional.similarity_kl`
  at τ), not the first 5 coordinates of each vector, which carry no meaning of their own. So
  τ genuinely changes the loss and a temperature curriculum does something. With equal
  widths it is the mean of 1 − cos, as before (τ has no role there).
* :func:`kl_distill_loss` is the batch-mean KL times τ² (Hinton), not an element-wise mean
  over classes: the old value times K·τ².
* :func:`load_teacher_checkpoint` never unpickles code (``weights_only=True``, or
  safetensors / NumPy files).
* :func:`kl_distill_loss` takes ``reduction`` ``"mean"`` or ``"batchmean"`` (the same:
  summed over classes, averaged over samples), ``"sum"`` (summed over samples) or ``"none"``
  (one value per sample, [B]); the old element-wise ``"mean"`` is not offered, since it
  shrinks the loss by the class count.
* :class:`DistillationConfig` names the training budget ``epochs`` and the held-out
  fraction ``validation``; the old names ``max_epochs`` and ``validation_split`` are still
  read (by the constructor and :meth:`DistillationConfig.from_dict`, with a
  ``DeprecationWarning``). A curriculum may warm as well as cool, and the presets are frozen
  (change a copy: ``CURRICULUM_CONFIG.model_copy(update={"tau": 2.0})``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
import torch
from pydantic import BaseModel, ConfigDict, Field

from kdforge.errors import KdforgeError
from kdforge.export import read_checkpoint
from kdforge.files import load_npy, load_npz
from kdforge.losses import functional as lf
from kdforge.losses import representation as rep
from kdforge.schedules import Clock, ScheduleConfig, schedule_value

Reduction = Literal["mean", "sum"]
KLReduction = Literal["mean", "batchmean", "sum", "none"]
LEGACY_NAMES = {"max_epochs": "epochs", "validation_split": "validation"}  # DistillationConfig's older field names
ScheduleType = Literal["linear", "exponential", "cosine"]


def _reduce(batch_mean: torch.Tensor, batch: int, reduction: Reduction) -> torch.Tensor:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return batch_mean if reduction == "mean" else batch_mean * batch


def distill_loss(
    student_vec: torch.Tensor, teacher_vec: torch.Tensor, tau: float = 0.1, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Distillation loss between student [B, k] and teacher [B, D] embeddings: mean of
    1 − cos(student, teacher) when k = D, else the similarity-distribution KL at ``tau``
    (zero when the student keeps every cosine similarity of the batch). ``sum`` sums over
    samples instead of averaging."""
    if student_vec.shape[-1] == teacher_vec.shape[-1]:
        value = rep.feature_loss(student_vec, teacher_vec, "cosine")
    else:
        value = rep.similarity_kl(student_vec, teacher_vec, tau)
    return _reduce(value, len(student_vec), reduction)


def kl_distill_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0, reduction: KLReduction = "mean"
) -> torch.Tensor:
    """τ² · KL(softmax(teacher / τ) ‖ softmax(student / τ)) on routing or class logits [B, K],
    summed over classes, then: averaged over samples (``mean`` or ``batchmean``, a scalar),
    summed over samples (``sum``), or one value per sample (``none``, [B])."""
    if reduction not in ("mean", "batchmean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'batchmean', 'sum' or 'none', got {reduction!r}")
    if reduction in ("mean", "batchmean"):
        return lf.kd_loss(student_logits, teacher_logits, tau)
    log_ps = torch.log_softmax(student_logits.float() / tau, dim=-1)
    log_pt = torch.log_softmax(teacher_logits.float() / tau, dim=-1)
    per_sample = tau**2 * (log_pt.exp() * (log_pt - log_ps)).sum(-1)
    return per_sample if reduction == "none" else per_sample.sum()


def combined_distill_loss(
    student_vec: torch.Tensor,
    teacher_vec: torch.Tensor,
    reconstruction_loss: torch.Tensor | None = None,
    alpha: float | None = None,
    tau: float = 0.1,
) -> torch.Tensor:
    """α · :func:`distill_loss` + (1 − α) · ``reconstruction_loss`` (α 0.5 unless given); just the distillation
    loss when there is no reconstruction loss, and then an α, which weighs nothing, is said once (a warning) and
    left alone, as code written for the original API passes it."""
    if alpha is not None and reconstruction_loss is None and not _WARNED_ALPHA:
        _WARNED_ALPHA.append(alpha)
        warnings.warn(
            f"alpha={alpha} weighs the distillation loss against a reconstruction loss, and none was passed: the loss "
            "is the distillation loss alone (pass reconstruction_loss for alpha to count; said once)",
            UserWarning,
            stacklevel=3,
        )
    alpha = 0.5 if alpha is None else alpha
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    distill = distill_loss(student_vec, teacher_vec, tau)
    return distill if reconstruction_loss is None else alpha * distill + (1 - alpha) * reconstruction_loss


_WARNED_ALPHA: list[float] = []  # the alpha-without-reconstruction warning is given once per process


def create_curriculum_schedule(
    start_tau: float, end_tau: float, num_stages: int, schedule_type: ScheduleType = "linear"
) -> Callable[[int], float]:
    """stage (0-based) -> τ, from ``start_tau`` at stage 0 to ``end_tau`` at the last stage:
    ``linear``, ``exponential`` (geometric) or ``cosine``; the same schedules a recipe's
    ``{schedule: ..., over: stages}`` gives."""
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    if start_tau <= 0 or end_tau <= 0:
        raise ValueError(f"temperatures must be positive, got {start_tau} and {end_tau}")
    spec = ScheduleConfig(schedule=schedule_type, start=float(start_tau), end=float(end_tau), over="stages")

    def tau_at(stage: int) -> float:
        if not 0 <= stage < num_stages:
            raise ValueError(f"stage must be in [0, {num_stages - 1}], got {stage}")
        return schedule_value(spec, Clock(stage=stage, stages=num_stages))

    return tau_at


def curriculum_distill_step(
    student_vec: torch.Tensor,
    teacher_vec: torch.Tensor,
    stage: int,
    tau_schedule: Callable[[int], float],
    alpha: float | None = None,
    reconstruction_loss: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """(loss, τ) at curriculum ``stage``: :func:`combined_distill_loss` at τ = tau_schedule(stage) (``alpha`` only
    with a ``reconstruction_loss``)."""
    tau = tau_schedule(stage)
    return combined_distill_loss(student_vec, teacher_vec, reconstruction_loss, alpha, tau), tau


def load_teacher_checkpoint(
    checkpoint_path: str | Path, device: str = "cpu", map_location: str | None = None
) -> dict[str, Any]:
    """A teacher checkpoint as a dict: a torch file read with ``weights_only=True`` (tensors,
    numbers, strings, lists), a ``.safetensors`` file, or a NumPy ``.npy`` (as
    ``{"embeddings": ...}``) or ``.npz`` file. A file that pickles code is refused."""
    path = Path(checkpoint_path)
    if path.suffix in (".npy", ".npz"):
        found = (
            {"embeddings": load_npy(path, what="checkpoint")}
            if path.suffix == ".npy"
            else load_npz(path, what="checkpoint")
        )
        return {
            k: torch.from_numpy(np.ascontiguousarray(v)).to(map_location or device) if v.dtype.kind in "biufc" else v
            for k, v in found.items()
        }
    state = read_checkpoint(path, map_location or device)
    if not isinstance(state, dict):
        return {"embeddings": state} if isinstance(state, torch.Tensor) else {"checkpoint": state}
    return state


class DistillationConfig(BaseModel):
    """Settings of an embedding distillation: teacher and student widths, temperature and
    α (weight of distillation against reconstruction), an optional temperature curriculum
    over stages, and the training budget. Validated on construction; frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher_checkpoint: str | None = Field(
        None, description="teacher embeddings or weights (.pt read weights-only, .safetensors, .npy, .npz)"
    )
    teacher_dim: int = Field(1536, gt=0)
    student_dim: int = Field(5, gt=0)
    tau: float = Field(1.0, gt=0, description="temperature without a curriculum")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of distillation; 1 − alpha weighs reconstruction")
    loss_type: Literal["cosine", "kl"] = Field(
        "cosine", description="the distillation loss a loop uses: distill_loss (cosine) or kl_distill_loss (kl)"
    )
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    curriculum: bool = False
    curriculum_stages: int = Field(3, ge=1)
    curriculum_tau_schedule: tuple[float, float] = Field((3.0, 0.5), description="(start τ, end τ)")
    curriculum_schedule_type: ScheduleType = "linear"
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    epochs: int = Field(100, gt=0)
    validation: float = Field(0.1, ge=0, lt=1, description="held-out fraction for model selection")
    early_stopping_patience: int = Field(5, gt=0, description="epochs without a better validation score")
    save_dir: str = Field("checkpoints", description="where a loop saves its checkpoints")
    save_every: int = Field(10, gt=0, description="save a checkpoint every this many epochs")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _legacy_names(cls, values: Any) -> Any:
        old = [k for k in LEGACY_NAMES if isinstance(values, dict) and k in values]
        if not old:
            return values
        clash = [k for k in old if LEGACY_NAMES[k] in values]
        if clash:
            raise ValueError(f"give {clash[0]} or {LEGACY_NAMES[clash[0]]}, not both (they are the same setting)")
        warnings.warn(
            f"DistillationConfig: {', '.join(f'{k} is now {LEGACY_NAMES[k]}' for k in old)}; the old names still work",
            DeprecationWarning,
            stacklevel=4,
        )
        return {LEGACY_NAMES.get(k, k): v for k, v in values.items()}

    @pydantic.field_validator("curriculum_tau_schedule")
    @classmethod
    def _positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if min(value) <= 0:
            raise ValueError(f"curriculum_tau_schedule temperatures must be positive, got {value}")
        return value

    def get_tau_for_stage(self, stage: int) -> float:
        """τ at curriculum ``stage`` (0-based); ``tau`` when there is no curriculum."""
        if not self.curriculum:
            return self.tau
        return create_curriculum_schedule(
            *self.curriculum_tau_schedule, self.curriculum_stages, self.curriculum_schedule_type
        )(stage)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> DistillationConfig:
        """Build from a dict (the old names ``max_epochs`` and ``validation_split`` too). Unknown
        keys are an error that names the valid ones."""
        unknown = sorted(set(config_dict) - set(cls.model_fields) - set(LEGACY_NAMES))
        if unknown:
            raise KdforgeError(
                f"DistillationConfig has no field(s) {', '.join(unknown)}; valid: {', '.join(cls.model_fields)}"
            )
        return cls(**config_dict)


DEFAULT_OPENAI_CONFIG = DistillationConfig(teacher_dim=1536, student_dim=5, tau=1.0, alpha=0.5)
CURRICULUM_CONFIG = DistillationConfig(
    teacher_dim=1536,
    student_dim=5,
    tau=2.0,
    alpha=0.7,
    curriculum=True,
    curriculum_stages=5,
    curriculum_tau_schedule=(4.0, 0.5),
)
FAST_CONFIG = DistillationConfig(teacher_dim=1536, student_dim=5, tau=0.5, alpha=0.5, batch_size=64, epochs=20)

__all__ = [
    "CURRICULUM_CONFIG",
    "DEFAULT_OPENAI_CONFIG",
    "FAST_CONFIG",
    "DistillationConfig",
    "combined_distill_loss",
    "create_curriculum_schedule",
    "curriculum_distill_step",
    "distill_loss",
    "kl_distill_loss",
    "load_teacher_checkpoint",
]
