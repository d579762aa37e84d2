"""Several teachers and self-distillation: a per-sample gate over an ensemble's members,
and deep-to-shallow distillation through auxiliary heads on the student's own layers.

(The EMA teacher, the other self-distillation, is a teacher source: ``teacher: {source: ema}``
with an ordinary ``kd`` term.)
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from kdforge.bounds import BelowOne, NonNegative, Positive, Probability
from kdforge.errors import KdforgeError, required
from kdforge.losses import functional as lf
from kdforge.losses import representation as rep
from kdforge.losses.logit import LogitTerm
from kdforge.losses.terms import LOSSES, LossTerm, Shapes, StepContext
from kdforge.schedules import TemperatureSpec
from kdforge.taps import block_names, unwrap


@LOSSES.register("ensemble_kd")
class EnsembleKD(LogitTerm):
    """KD from an ensemble teacher whose members are weighted per sample by a small gate.

    The gate (an MLP on the members' detached logits) outputs softmax weights w[B, M]; the
    target is Σ_m w_m z_m. The gate learns from the labels alone (cross-entropy of the
    mixed logits, added to this term) so it trusts, for each sample, the members that are
    right about it; the student then distils from the mixture.
    Needs ``teacher: {source: ensemble, ...}``.
    """

    reads_labels = True  # the gate's cross-entropy

    def __init__(self, temperature: TemperatureSpec = 4.0, hidden: int = 32, logit_std: bool = False):
        super().__init__(temperature, logit_std)
        self.hidden = hidden
        self.members: list[str] = []
        self.gate: nn.Module = nn.Identity()

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.members = _member_names(teacher, "ensemble_kd needs an ensemble teacher")

    @property
    def teacher_taps(self) -> list[str]:
        return self.members

    def setup(self, shapes: Shapes) -> None:
        super().setup(shapes)
        classes = shapes.student_logits[-1]
        self.gate = nn.Sequential(
            nn.Linear(len(self.members) * classes, self.hidden), nn.ReLU(), nn.Linear(self.hidden, len(self.members))
        )

    def forward(self, ctx: StepContext) -> torch.Tensor:
        member_logits = torch.stack([ctx.teacher_features[m].float() for m in self.members], 1)  # [B, M, K]
        weights = torch.softmax(self.gate(member_logits.flatten(1)), -1)  # [B, M]
        mixed = (weights.unsqueeze(-1) * member_logits).sum(1)  # [B, K]
        gate_ce = lf.cross_entropy(mixed, ctx.targets)
        ctx.logs[f"{self.name}.gate_ce"] = gate_ce.detach()
        zs, zt, tau = self.prepare(ctx, teacher_logits=mixed.detach())
        return self.finish(lf.kd_loss(zs, zt, tau)) + gate_ce


@LOSSES.register("diverse_kd")
class DiverseKD(LossTerm):
    """KD from every member of an ensemble teacher, each sample weighting the teachers by how
    much they have to give it (dynamic teacher importance, after DiverseDistill, Liu et al.):
    w_m(x) = softmax_m(−d_m(x) / ``tau``), d_m the member's cross-entropy on the label
    (``by: confidence``) or its KL from the student (``by: agreement``); members under
    ``min_weight`` are filtered out of that sample. The loss is T² · Σ_m w_m KL(p_m ‖ p_s).
    Logs each member's mean weight (``<term>.w<m>``) and the share of filtered (sample,
    member) pairs. Needs ``teacher: {source: ensemble, ...}``.
    """

    def __init__(
        self,
        temperature: Positive = 4.0,
        by: Literal["confidence", "agreement"] = "confidence",
        tau: Positive = 1.0,
        min_weight: BelowOne = 0.0,
    ):
        super().__init__()
        self.temperature, self.by, self.tau, self.min_weight = temperature, by, tau, min_weight
        self.reads_labels = by == "confidence"  # each member's cross-entropy on the label
        self.members: list[str] = []

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.members = _member_names(teacher, "diverse_kd weighs the members of an ensemble teacher")

    @property
    def teacher_taps(self) -> list[str]:
        return self.members

    def forward(self, ctx: StepContext) -> torch.Tensor:
        logits = torch.stack([ctx.teacher_features[m] for m in self.members])  # [M, B, K]
        student = required(ctx.student_logits, "the student's logits")
        weights = lf.teacher_importance(logits, student, ctx.labels, self.by, self.tau, self.min_weight)
        for m, mean in enumerate(weights.mean(0)):
            ctx.logs[f"{self.name}.w{m}"] = mean
        ctx.logs[f"{self.name}.filtered"] = (weights == 0).float().mean()
        return lf.multi_teacher_kd(student, logits, weights, self.temperature)


@LOSSES.register("self_distill")
class SelfDistill(LossTerm):
    """Deep-to-shallow self-distillation (Zhang et al., "Be Your Own Teacher", 2019).

    An auxiliary classifier (global average pool + linear) sits on each tapped student
    layer; each learns from the labels ((1 − α) · CE) and from the student's own final
    output (α · T² KL, the final logits detached), and, with ``feature`` > 0, pulls its
    pooled feature (through a linear map) towards the deepest tapped one. The heads train
    with the student and are saved with the run, never exported with it. No teacher needed.
    ``layout``: ``conv`` features are [B, C, ...] (pooled over the spatial dims), ``tokens``
    are [B, N, D] (pooled over tokens).
    """

    uses_teacher = False
    reads_labels = True

    def __init__(
        self,
        layers: Annotated[list[str], Field(min_length=1)],
        temperature: Positive = 3.0,
        alpha: Probability = 0.3,
        feature: NonNegative = 0.0,
        layout: Literal["conv", "tokens"] = "conv",
    ):
        super().__init__()
        self.layers, self.temperature, self.alpha, self.feature, self.layout = (
            list(layers),
            temperature,
            alpha,
            feature,
            layout,
        )
        self.heads = nn.ModuleList()
        self.feature_maps = nn.ModuleList()

    @property
    def student_taps(self) -> list[str]:
        return self.layers

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x
        return x.mean(1) if self.layout == "tokens" else x.flatten(2).mean(-1)

    def setup(self, shapes: Shapes) -> None:
        widths = [self._pool(torch.zeros(shapes.student[name])).shape[-1] for name in self.layers]
        classes = shapes.student_logits[-1]
        self.heads = nn.ModuleList(nn.Linear(w, classes) for w in widths)
        if self.feature:
            self.feature_maps = nn.ModuleList(nn.Linear(w, widths[-1]) for w in widths[:-1])

    def forward(self, ctx: StepContext) -> torch.Tensor:
        pooled = [self._pool(ctx.student_features[name].float()) for name in self.layers]
        final = required(ctx.student_logits, "the student's logits").detach()
        losses = []
        for i, (feature, head) in enumerate(zip(pooled, self.heads)):
            logits = head(feature)
            loss = (1 - self.alpha) * lf.cross_entropy(logits, ctx.targets) + self.alpha * lf.kd_loss(
                logits, final, self.temperature
            )
            if self.feature and i < len(self.feature_maps):
                loss = loss + self.feature * rep.feature_loss(self.feature_maps[i](feature), pooled[-1].detach())
            losses.append(loss)
        return torch.stack(losses).mean()


def _member_names(teacher: nn.Module | None, needs: str) -> list[str]:
    """The taps of an ensemble teacher's members (``members.0``, ...); ``needs`` says who asks when it is none."""
    if teacher is None or not isinstance(getattr(unwrap(teacher), "members", None), nn.ModuleList):
        raise KdforgeError(f"{needs}: teacher: {{source: ensemble, members: [...]}}")
    return block_names(teacher, "members")
