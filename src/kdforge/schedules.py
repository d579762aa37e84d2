"""Schedules for loss weights and temperatures, and the learnable CTKD temperature.

A weight or a temperature in a recipe is a number, a schedule, or (temperatures only) a
learnable temperature::

    weight: 0.9
    weight: {schedule: linear_warmup, value: 0.9, warmup: 0.1}
    temperature: {schedule: cosine, start: 8.0, end: 2.0}
    temperature: {schedule: stages, values: [1.0, 2.0, 4.0]}
    temperature: {schedule: linear, start: 4.0, end: 0.5, over: epochs, stages: 5}
    temperature: {learnable: ctkd, init: 4.0, min: 1.0, max: 21.0, mode: global}

A schedule reads a clock position x in [0, 1]: the fraction of optimiser steps done
(``over: steps``, the default), of epochs done (``over: epochs``, constant within an
epoch), or of curriculum stages done (``over: stages``). ``warmup`` and ``milestones`` are
positions on that clock. ``stages: N`` holds the value constant in N equal parts of the clock (a
curriculum in stages: linear, exponential or cosine across them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pydantic
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


@dataclass(slots=True)
class Clock:
    """Where training is, for schedules: ``progress`` is the fraction of steps done."""

    step: int = 0
    epoch: int = 0  # 0-based
    epochs: int = 1
    progress: float = 0.0
    stage: int = 0  # 0-based
    stages: int = 1


class ScheduleConfig(BaseModel):
    """A value that changes during training (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    schedule: Literal["constant", "linear", "exponential", "cosine", "linear_warmup", "step", "stages"]
    start: float | None = Field(None, description="linear/exponential/cosine: value at x = 0")
    end: float | None = Field(None, description="linear/exponential/cosine: value at x = 1")
    value: float | None = Field(None, description="constant, linear_warmup: the value (after warm-up)")
    warmup: float = Field(0.1, gt=0, le=1, description="linear_warmup: ramp from 0 over this much of the clock")
    milestones: list[float] | None = Field(None, description="step: clock positions where the next value starts")
    values: list[float] | None = Field(None, description="step: one more than milestones; stages: one per stage")
    over: Literal["steps", "epochs", "stages"] = "steps"
    stages: int | None = Field(
        None,
        ge=2,
        description=(
            "hold the value in this many equal stages of the clock (a stepped curriculum: linear 4 -> 0.5 "
            "over 5 stages gives 4, 3.125, 2.25, 1.375, 0.5)"
        ),
    )

    @pydantic.model_validator(mode="after")
    def _complete(self) -> ScheduleConfig:
        needs = {
            "constant": ("value",),
            "linear": ("start", "end"),
            "exponential": ("start", "end"),
            "cosine": ("start", "end"),
            "linear_warmup": ("value",),
            "step": ("milestones", "values"),
            "stages": ("values",),
        }[self.schedule]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"schedule '{self.schedule}' needs {', '.join(missing)}")
        if self.schedule == "exponential" and (self.number("start") <= 0 or self.number("end") <= 0):
            raise ValueError("an exponential schedule needs positive start and end")
        if self.schedule == "step" and len(self.listed("values")) != len(self.listed("milestones")) + 1:
            raise ValueError(
                f"a step schedule needs one more value than milestones, got {len(self.listed('values'))} values and "
                f"{len(self.listed('milestones'))} milestones"
            )
        if self.schedule == "stages":
            self.over = "stages"
        return self

    def number(self, key: str) -> float:
        """A value this kind of schedule requires (the validator made sure it is there)."""
        value = getattr(self, key)
        if value is None:
            raise ValueError(f"schedule '{self.schedule}' needs {key}")
        return float(value)

    def listed(self, key: str) -> list[float]:
        """A list this kind of schedule requires (``milestones``, ``values``)."""
        value = getattr(self, key)
        if value is None:
            raise ValueError(f"schedule '{self.schedule}' needs {key}")
        return list(value)


def clock_position(over: str, clock: Clock) -> float:
    """x in [0, 1] on the chosen clock."""
    if over == "epochs":
        return clock.epoch / max(1, clock.epochs - 1)
    if over == "stages":
        return clock.stage / max(1, clock.stages - 1)
    return min(1.0, max(0.0, clock.progress))


def schedule_value(spec: float | ScheduleConfig, clock: Clock) -> float:
    """The value of a number or a schedule at ``clock``."""
    if not isinstance(spec, ScheduleConfig):
        return float(spec)
    x = clock_position(spec.over, clock)
    if spec.stages is not None:  # the stage this position falls in, as a position itself
        x = min(int(x * spec.stages), spec.stages - 1) / (spec.stages - 1)
    kind = spec.schedule
    if kind in ("constant", "linear_warmup"):
        return spec.number("value") * (min(1.0, x / spec.warmup) if kind == "linear_warmup" else 1.0)
    if kind == "step":
        return spec.listed("values")[sum(x >= m for m in spec.listed("milestones"))]
    if kind == "stages":
        values = spec.listed("values")
        if len(values) < clock.stages:
            raise ValueError(f"a stages schedule has {len(values)} values but training has {clock.stages} stages")
        return values[clock.stage]
    start, end = spec.number("start"), spec.number("end")
    if kind == "linear":
        return start + (end - start) * x
    if kind == "exponential":
        return start * (end / start) ** x
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * x))  # cosine


# ----------------------------------------------------------------------------- temperatures


class LearnableTemperatureConfig(BaseModel):
    """CTKD: a temperature learned adversarially (Li et al., AAAI 2023)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    learnable: Literal["ctkd"]
    init: float = Field(4.0, gt=0, description="starting temperature")
    min: float = Field(1.0, gt=0, description="lower bound τ_min")
    max: float = Field(21.0, gt=0, description="upper bound τ_min + τ_range")
    mode: Literal["global", "instance"] = "global"
    hidden: int = Field(64, gt=0, description="instance mode: width of the MLP on the logits")
    lambda_max: float = Field(1.0, ge=0, description="final strength of the gradient reversal")
    ramp: float = Field(
        0.2, gt=0, le=1, description="fraction of training over which λ rises from 0 to lambda_max (cosine)"
    )
    reg: float = Field(0.0, ge=0, description="anchor regulariser strength: reg · (τ − anchor)²")
    anchor: float | None = Field(None, gt=0, description="defaults to init")
    lr: float | None = Field(
        None, gt=0, description="learning rate of the temperature's parameters (default: optim.lr)"
    )

    @pydantic.model_validator(mode="after")
    def _bounds(self) -> LearnableTemperatureConfig:
        if not self.min < self.init < self.max:
            raise ValueError(f"ctkd needs min < init < max, got {self.min}, {self.init}, {self.max}")
        return self


TemperatureSpec = float | ScheduleConfig | LearnableTemperatureConfig


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by −λ backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:  # type: ignore[override]
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    return _ReverseGradient.apply(x, strength)


def cosine_ramp(progress: float, ramp: float, maximum: float = 1.0) -> float:
    """0 at the start, rising along half a cosine to ``maximum`` at ``progress = ramp``, then flat."""
    x = min(1.0, max(0.0, progress) / ramp)
    return maximum * 0.5 * (1 - math.cos(math.pi * x))


class Temperature(nn.Module):
    """A term's temperature: ``temperature.at(clock, student_logits, teacher_logits)`` returns
    a number (constant or scheduled) or a tensor (learnable: [] global, [B] per instance)."""

    spec: TemperatureSpec

    def __init__(self, spec: TemperatureSpec):
        super().__init__()
        self.spec = spec

    def regulariser(self) -> torch.Tensor | float:
        return 0.0

    def at(
        self, clock: Clock, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None
    ) -> float | torch.Tensor:
        """The temperature for this step (and the batch, for per-instance temperatures)."""
        if isinstance(self.spec, LearnableTemperatureConfig):  # built by build_temperature: never here
            raise TypeError("a learnable temperature is a CTKDTemperature")
        return schedule_value(self.spec, clock)


class CTKDTemperature(Temperature):
    """Curriculum temperature (CTKD): τ = τ_min + τ_range · sigmoid(θ), where θ is one
    parameter (``global``) or the output of a small MLP on the detached student and teacher
    logits (``instance``).

    τ reaches the loss through a gradient-reversal layer of strength λ, which follows a
    cosine ramp from 0 to ``lambda_max`` over the first ``ramp`` of training. So while the
    student *descends* the distillation loss, the temperature *ascends* it: it moves to
    where the student finds the teacher hardest to match, more so as training goes on
    (an easy-to-hard curriculum). The optional anchor term ``reg · (τ − anchor)²`` is added
    by :meth:`regulariser` without reversal and keeps τ from running away to a bound.
    τ is computed in float32 even under autocast, so its update is never lost to bf16.
    """

    spec: LearnableTemperatureConfig

    def __init__(self, spec: LearnableTemperatureConfig):
        super().__init__(spec)
        self.low, self.range = spec.min, spec.max - spec.min
        theta0 = math.log((spec.init - spec.min) / (spec.max - spec.init))  # sigmoid(θ0) puts τ at init
        self.theta = nn.Parameter(torch.tensor(theta0))  # global τ; the instance MLP's output bias
        self.mlp: nn.Module | None = None
        self._raw: torch.Tensor | None = None

    def setup(self, logit_inputs: int) -> None:
        """Instance mode: build the MLP on ``logit_inputs`` features (student + teacher logits).
        Called by the term's setup, before the optimiser exists. Its last layer starts at zero,
        so every sample starts at τ = init."""
        if self.spec.mode == "instance":
            first, head = nn.Linear(logit_inputs, self.spec.hidden), nn.Linear(self.spec.hidden, 1, bias=False)
            nn.init.zeros_(head.weight)
            self.mlp = nn.Sequential(first, nn.ReLU(), head)

    def at(self, clock: Clock, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(student_logits.device.type, enabled=False):
            theta = self.theta
            if self.mlp is not None:
                pair = [student_logits.detach().float()] + (
                    [teacher_logits.detach().float()] if teacher_logits is not None else []
                )
                theta = theta + self.mlp(torch.cat(pair, -1)).squeeze(-1)
            tau = self.low + self.range * torch.sigmoid(theta)
        self._raw = tau
        return reverse_gradient(tau, cosine_ramp(clock.progress, self.spec.ramp, self.spec.lambda_max))

    def regulariser(self) -> torch.Tensor | float:
        if self.spec.reg == 0 or self._raw is None:
            return 0.0
        anchor = self.spec.anchor if self.spec.anchor is not None else self.spec.init
        return self.spec.reg * (self._raw - anchor).pow(2).mean()


def build_temperature(spec: TemperatureSpec) -> Temperature:
    if isinstance(spec, LearnableTemperatureConfig):
        return CTKDTemperature(spec)
    if not isinstance(spec, ScheduleConfig) and spec <= 0:
        raise ValueError(f"temperature must be positive, got {spec}")
    return Temperature(spec)
