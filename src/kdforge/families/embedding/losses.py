"""Terms that compare embeddings: by default the two models' outputs (``student: output``,
``teacher: output``), or any tapped layers (one level of a hierarchical student, for
example ``student: heads.0``). Widths may differ (a 5-d student against a 384-d teacher),
except for ``cosine``. ``relational`` and ``cka`` (in :mod:`kdforge.losses.feature`)
read the outputs the same way.

| term | compares |
|---|---|
| ``cosine`` | each sample's two vectors: mean of 1 − cos (equal widths) |
| ``proj_mse`` | each sample's vectors through a trained linear projector, MSE |
| ``sim_kl`` | each sample's softmax over its batch similarities at τ, KL(teacher ‖ student) |
| ``infonce`` | the teacher's nearest neighbours as positives, InfoNCE in the student's space |
"""

from __future__ import annotations

from typing import Literal

import torch

from kdforge.bounds import AtLeastOne, Positive
from kdforge.losses import representation as rep
from kdforge.losses.feature import FeatureTerm, Hint, Layers
from kdforge.losses.terms import LOSSES, Shapes, StepContext
from kdforge.schedules import ScheduleConfig, schedule_value
from kdforge.taps import OUTPUT, LayerMapping


@LOSSES.register("cosine")
class Cosine(FeatureTerm):
    """Mean over samples of 1 − cos(student vector, teacher vector); the widths must match."""

    def __init__(
        self,
        student: Layers = OUTPUT,
        teacher: Layers = OUTPUT,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
    ):
        super().__init__(student, teacher, mapping, submodule)

    def setup(self, shapes: Shapes) -> None:
        for i, (s, t) in enumerate(self.pairs):
            widths = shapes.student[s][1:].numel(), self.teacher_shape(shapes, i)[1:].numel()
            if widths[0] != widths[1]:
                raise ValueError(
                    f"cosine compares vectors of one width, but {s} has {widths[0]} and the teacher's {t} {widths[1]}; "
                    "use proj_mse (a trained projector), or relational, sim_kl, infonce or cka, which compare "
                    "similarities"
                )

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return rep.feature_loss(student, teacher, "cosine")


@LOSSES.register("proj_mse")
class ProjectedMSE(Hint):
    """MSE between the teacher's vector and the student's mapped to the teacher's width by a
    trained projector (created before the optimiser, trained with the student)."""

    def __init__(
        self,
        student: Layers = OUTPUT,
        teacher: Layers = OUTPUT,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        projector: Literal["linear", "mlp"] = "linear",
    ):
        super().__init__(student, teacher, mapping, submodule, loss="mse", projector=projector)


class SimilarityTerm(FeatureTerm):
    """A term with a temperature that is a number or a schedule (for example a curriculum
    over stages, ``{schedule: linear, start: 4.0, end: 0.5, over: stages}``)."""

    def __init__(
        self,
        student: Layers,
        teacher: Layers,
        mapping: LayerMapping,
        submodule: str | None,
        temperature: float | ScheduleConfig,
    ):
        super().__init__(student, teacher, mapping, submodule)
        self.temperature = temperature

    def forward(self, ctx: StepContext) -> torch.Tensor:
        tau = schedule_value(self.temperature, ctx.clock)
        if isinstance(self.temperature, ScheduleConfig):
            ctx.logs[f"{self.name}.tau"] = torch.tensor(tau)
        return torch.stack([self.similarity_loss(s, t, tau) for s, t in self.features(ctx)]).mean()

    def similarity_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, tau: float
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@LOSSES.register("sim_kl")
class SimilarityKL(SimilarityTerm):
    """Row-wise softmax over the batch's cosine similarities at τ; T²-scaled batch-mean
    KL(teacher ‖ student) (:func:`kdforge.losses.functional.similarity_kl`)."""

    def __init__(
        self,
        student: Layers = OUTPUT,
        teacher: Layers = OUTPUT,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        temperature: Positive | ScheduleConfig = 1.0,
        standardize: bool = False,
    ):
        super().__init__(student, teacher, mapping, submodule, temperature)
        self.standardize = standardize

    def similarity_loss(self, student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
        return rep.similarity_kl(student, teacher, tau, self.standardize)


@LOSSES.register("infonce")
class NeighbourInfoNCE(SimilarityTerm):
    """InfoNCE whose positives are each sample's ``neighbours`` nearest other samples by the
    teacher's cosine similarity (:func:`kdforge.losses.functional.neighbour_infonce`)."""

    def __init__(
        self,
        student: Layers = OUTPUT,
        teacher: Layers = OUTPUT,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        temperature: Positive | ScheduleConfig = 0.1,
        neighbours: AtLeastOne = 1,
    ):
        super().__init__(student, teacher, mapping, submodule, temperature)
        self.neighbours = neighbours

    def similarity_loss(self, student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
        return rep.neighbour_infonce(student, teacher, tau, self.neighbours)
