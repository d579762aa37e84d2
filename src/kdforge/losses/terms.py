"""LossTerm: a named, weighted part of the distillation loss, and what it reads.

A term is a thin module: its maths live in :mod:`kdforge.losses.functional`. It reads
what it needs from a :class:`StepContext`. Terms that compare features declare the
module names they tap (``student_taps`` / ``teacher_taps``); terms with trainable parts
(projectors) create them in :meth:`LossTerm.setup`, which the Distiller calls with the
tapped shapes before the optimiser exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pydantic
import torch
from torch import nn

from kdforge.config import LossConfig, component_issues_for, term_names
from kdforge.errors import ConfigError, required
from kdforge.losses.chunked import ChunkTerm, LMHead, chunked_linear_loss
from kdforge.losses.functional import TopK
from kdforge.registry import LOSSES
from kdforge.schedules import Clock, ScheduleConfig, schedule_value


@dataclass
class StepContext:
    """Everything a loss term may read at one training step.

    Terms may write scalars worth logging into ``logs`` (e.g. their temperature); the
    trainer records them every step next to the loss parts.
    """

    inputs: torch.Tensor
    targets: torch.Tensor  # class indices [B], or class probabilities [B, K] under mixup/CutMix
    student_logits: torch.Tensor | None
    teacher_logits: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    token_mask: torch.Tensor | None = None  # per-token runs: which flattened positions the logits keep (None: all)
    real_tokens: torch.Tensor | None = None  # padded token rows: [B, T], True at real tokens (None: nothing padded)
    index: torch.Tensor | None = None  # the samples' positions in the training split, for terms that read them
    # language models under a chunked term: the models' outputs before their LM heads (then a logit field is None
    # when no term reads it); a top-k teacher (a cache, or ``topk``) as it came, before any densifying
    student_head: LMHead | None = None
    teacher_head: LMHead | None = None
    teacher_topk: TopK | None = None

    @property
    def labels(self) -> torch.Tensor:
        """Class indices [B]: ``targets`` as given, or the dominant class of soft targets
        (mixup, CutMix)."""
        return self.targets if not self.targets.is_floating_point() else self.targets.argmax(-1)

    @property
    def step(self) -> int:
        return self.clock.step

    @property
    def epoch(self) -> int:
        return self.clock.epoch

    @property
    def progress(self) -> float:
        return self.clock.progress


@dataclass
class Shapes:
    """What :meth:`LossTerm.setup` learns from one probe batch: logit and tapped shapes."""

    student_logits: torch.Size
    teacher_logits: torch.Size | None
    student: dict[str, torch.Size] = field(default_factory=dict)
    teacher: dict[str, torch.Size] = field(default_factory=dict)
    train_samples: int | None = None  # the training split's size (None: not known, e.g. a streamed split)
    unlabelled: bool = False  # some training samples have no label (class index PAD_TARGET): only CE skips them


class LossTerm(nn.Module):
    """Base class. Subclasses implement ``forward(ctx) -> scalar tensor``."""

    #: whether the term reads teacher outputs (a term without one runs with no teacher)
    uses_teacher: bool = True
    name: str = ""
    weight: float | ScheduleConfig = 1.0
    #: an ensemble teacher's member whose logits this term reads instead of the combination
    member: int | None = None
    #: whether the term reads the models' :class:`~kdforge.losses.chunked.LMHead` (``ctx.student_head``)
    #: instead of their logits: then no step makes the whole logits unless another term needs them
    reads_head: bool = False
    #: such a term's tokens per chunk (None: :func:`~kdforge.losses.chunked.default_chunk`)
    chunk: int | None = None
    #: whether the term reads a top-k teacher as it is (``ctx.teacher_topk``) rather than densified
    reads_topk: bool = False
    #: whether the term reads the samples' training indices (``ctx.index``): then training batches carry them
    reads_index: bool = False
    #: whether the term reads which positions of padded token rows are real (``ctx.real_tokens``)
    reads_real_tokens: bool = False
    #: whether the term reads every sample's label (``ctx.labels``): it cannot train on unlabelled samples
    reads_labels: bool = False
    #: what ``kdforge tune`` searches for this term by default: option -> {low, high[, log]} or {factor} (a log
    #: scale around the recipe's value)
    search_space: ClassVar[dict[str, dict[str, Any]]] = {"weight": {"factor": 4.0}}

    @property
    def student_taps(self) -> list[str]:
        return []

    @property
    def teacher_taps(self) -> list[str]:
        return []

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Find the layers to tap in the actual models (called once, before any forward)."""

    def setup(self, shapes: Shapes) -> None:
        """Create trainable parts from the probed shapes (called once, before the optimiser)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups with their own settings (e.g. a temperature's learning rate).
        Parameters not listed here train in the main group."""
        return []

    def weight_at(self, clock: Clock) -> float:
        return schedule_value(self.weight, clock)

    def scheduled(self) -> list[Any]:
        """The term's weight and temperature as the recipe gives them (a number, a schedule, a learnable
        temperature's settings): what the stages of a run are told apart by, for every term alike."""
        temperature = getattr(self, "temperature", None)
        return [self.weight, getattr(temperature, "spec", temperature)]

    def forward(self, ctx: StepContext) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def chunks(self, ctx: StepContext) -> ChunkTerm:  # pragma: no cover - abstract
        """A term that reads the head: its loss of a chunk of the student's logits. The distiller makes every such
        term's chunks in one pass over the student's head (:func:`~kdforge.losses.chunked.chunked_linear_losses`)."""
        raise NotImplementedError

    def chunked(self, ctx: StepContext) -> torch.Tensor:
        """This term alone, a chunk of the student's logits at a time."""
        head = required(ctx.student_head, "the student's LM head (chunked: true)")
        return chunked_linear_loss(head, self.chunks(ctx), self.chunk)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight={self.weight}"


def build_loss(config: dict[str, Any] | Any) -> LossTerm:
    """Build one term from ``{"name": ..., "weight": ..., **options}`` (or a LossConfig)."""
    section = config if isinstance(config, LossConfig) else _validated(config)
    try:
        term = LOSSES.build(section.name, **LOSSES.validate_options(section.name, section.options))
    except ValueError as err:  # constructors check ranges (temperature > 0, ...)
        raise ConfigError(f"loss '{section.name}': {err}") from None
    term.name, term.weight, term.member = section.name, section.weight, section.member
    return term


def build_losses(configs: list[Any]) -> list[LossTerm]:
    """Build terms and name them (see :func:`term_names`)."""
    terms = [build_loss(c) for c in configs]
    for term, name in zip(terms, term_names([t.name for t in terms])):
        term.name = name
    return terms


def _validated(config: dict[str, Any]) -> Any:
    try:
        section = LossConfig.model_validate(config)
    except pydantic.ValidationError as err:
        raise ConfigError(f"invalid loss {config}: {err.errors()[0]['msg']}") from None
    problems = component_issues_for(section, LOSSES)
    if problems:
        raise ConfigError("invalid loss: " + "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
    return section
