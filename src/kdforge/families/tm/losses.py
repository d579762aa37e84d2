"""Clause-aware terms for Tsetlin-machine students: per-block diagnostic CE, a clause
regulariser, and alignment of clause activations with teacher features.

Clause scores are read through each clause layer's ``activations`` tap ([*, clauses]).
"""

from __future__ import annotations

import torch
from torch import nn

from kdforge.bounds import NonNegative, Positive
from kdforge.errors import KdforgeError
from kdforge.families.tm.blocks import TMFeedForward
from kdforge.families.tm.clause import ClauseLayer
from kdforge.losses import functional as lf
from kdforge.losses.feature import FeatureTerm, Layers
from kdforge.losses.terms import LOSSES, LossTerm, Shapes, StepContext
from kdforge.taps import LayerMapping, unwrap


def voting_layers(student: nn.Module) -> list[str]:
    """Names of the clause layers that vote each TM block's output (or every clause layer,
    for students without TM blocks)."""
    root = unwrap(student)
    blocks = [(n, m) for n, m in root.named_modules() if isinstance(m, TMFeedForward)]
    names = {id(m): n for n, m in root.named_modules()}
    layers = (
        [names[id(m.clause_layer)] for _, m in blocks]
        if blocks
        else [n for n, m in root.named_modules() if isinstance(m, ClauseLayer)]
    )
    if not layers:
        raise KdforgeError(f"{type(root).__name__} has no clause layers: clause-aware losses need a TM student")
    return layers


@LOSSES.register("block_ce")
class BlockCE(LossTerm):
    """Auxiliary cross-entropy of every per-block diagnostic head (students built with
    ``diag_heads: true``), averaged over blocks; each head's CE is logged."""

    uses_teacher = False
    reads_labels = True

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.heads: list[str] = []

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.heads = [n for n, _ in unwrap(student).named_modules() if n.endswith("diag_head")]
        if not self.heads:
            raise KdforgeError("block_ce reads per-block diagnostic heads: build the student with diag_heads: true")

    @property
    def student_taps(self) -> list[str]:
        return self.heads

    def forward(self, ctx: StepContext) -> torch.Tensor:
        losses = [lf.cross_entropy(ctx.student_features[h], ctx.targets, self.label_smoothing) for h in self.heads]
        for head, loss in zip(self.heads, losses):
            ctx.logs[f"{self.name}/{head.removesuffix('.diag_head')}"] = loss.detach()
        return torch.stack(losses).mean()


@LOSSES.register("clause_reg")
class ClauseRegularizer(LossTerm):
    """Keeps clauses short and alive: ``sparsity`` · the mean include probability σ(l/τ)
    (fewer literals: shorter rules) + ``budget_weight`` · mean over clauses of
    relu(expected included literals − ``budget``) / ``budget``. Logs, per clause layer, the
    share of clauses that fire (score > 0) on the batch and the include density."""

    uses_teacher = False

    def __init__(self, sparsity: NonNegative = 1.0, budget: Positive | None = None, budget_weight: NonNegative = 1.0):
        super().__init__()
        self.sparsity, self.budget, self.budget_weight = sparsity, budget, budget_weight
        self.layers: list[ClauseLayer] = []
        self.names: list[str] = []

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        found = [(n, m) for n, m in unwrap(student).named_modules() if isinstance(m, ClauseLayer)]
        if not found:
            raise KdforgeError("clause_reg needs a TM student (a model with clause layers)")
        self.names = [n for n, _ in found]
        self.layers = [m for _, m in found]  # a plain list: the student's modules are not this term's

    @property
    def student_taps(self) -> list[str]:
        return [f"{n}.activations" for n in self.names]

    def forward(self, ctx: StepContext) -> torch.Tensor:
        total = []
        for name, layer in zip(self.names, self.layers):
            p = layer.include_probability()
            loss = self.sparsity * p.mean()
            if self.budget is not None:
                loss = loss + self.budget_weight * torch.relu(p.sum(1) - self.budget).mean() / self.budget
            total.append(loss)
            scores = ctx.student_features[f"{name}.activations"].detach()
            ctx.logs[f"clause_usage/{name}"] = (scores.flatten(0, -2) > 0).float().mean()
            ctx.logs[f"include_density/{name}"] = (layer.include.detach() > 0).float().mean()
        return torch.stack(total).mean()


@LOSSES.register("clause_align")
class ClauseAlign(FeatureTerm):
    """Teacher features -> clause-activation distribution: KL(softmax(P t / T) ‖ softmax(s / T)) · T²
    (batch mean), where s are a TM block's clause scores and t the mapped teacher layer,
    both averaged over positions (tokens [B, N, D], or maps [B, C, H, W]), and P a trained linear projector to the
    clause
    count. ``student: auto`` takes every TM block's voting clause layer."""

    def __init__(
        self,
        student: Layers = "auto",
        teacher: Layers = "auto",
        mapping: LayerMapping = "uniform",
        temperature: Positive = 1.0,
    ):
        super().__init__(student, teacher, mapping)
        self.temperature = temperature
        self.projectors = nn.ModuleList()

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        if self.student_spec == "auto":
            self.student_spec = [f"{n}.activations" for n in voting_layers(student)]
        super().resolve(student, teacher)

    def setup(self, shapes: Shapes) -> None:
        width = lambda shape: shape[1] if len(shape) == 4 else shape[-1]  # noqa: E731  (what pooled() keeps)
        self.projectors = nn.ModuleList(
            nn.Linear(width(self.teacher_shape(shapes, i)), shapes.student[s][-1])
            for i, (s, _) in enumerate(self.pairs)
        )

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return lf.kd_loss(pooled(student), self.projectors[index](pooled(teacher).float()), self.temperature)


def pooled(x: torch.Tensor) -> torch.Tensor:
    """Average over positions: [B, N, D] tokens -> [B, D]; [B, C, H, W] maps -> [B, C]."""
    if x.dim() == 4:
        return x.mean((2, 3))
    return x.mean(1) if x.dim() == 3 else x
