"""Terms on the student's logits: ground-truth CE and logit distillation.

Every term with a temperature accepts a number, a schedule or a learnable (CTKD)
temperature, and ``logit_std: true`` to standardise both models' logits first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, cast

import torch

from kdforge.bounds import AtLeastOne, BelowOne, NonNegative, Positive, Probability, needs
from kdforge.errors import KdforgeError, required
from kdforge.losses import functional as lf
from kdforge.losses.chunked import ChunkTerm, ce_chunks, kd_chunks, uld_chunks
from kdforge.losses.divergence import Direction, Tail, sparse_kd_loss
from kdforge.losses.terms import LOSSES, LossTerm, Shapes, StepContext
from kdforge.schedules import CTKDTemperature, TemperatureSpec, build_temperature

_CHUNK = needs("chunk", "chunked", "is the chunked loss's chunk of tokens")


def _fixed_when_chunked(options: Any) -> str | None:
    if options.chunked and (options.logit_std or not isinstance(options.temperature, (int, float))):
        return "chunked: true takes a fixed temperature (a number) and no logit_std"
    return None


@LOSSES.register("ce", rules=[_CHUNK])
class CrossEntropy(LossTerm):
    """Cross-entropy with the ground-truth labels (optionally label-smoothed). ``chunked: true`` (language
    models): made from the student's last hidden states and LM head a chunk of tokens at a time, never from
    the whole logits (``chunk`` tokens, default 2²² logits on a CPU, 2²⁵ on a GPU)."""

    search_space: ClassVar[dict[str, dict[str, Any]]] = {}  # the task term: its weight sets the scale

    uses_teacher = False

    def __init__(self, label_smoothing: BelowOne = 0.0, chunked: bool = False, chunk: AtLeastOne | None = None):
        super().__init__()
        self.label_smoothing, self.reads_head, self.chunk = label_smoothing, chunked, chunk
        self.unlabelled = False  # set in setup: some training samples have no label, and the mean leaves them out

    def setup(self, shapes: Shapes) -> None:
        self.unlabelled = shapes.unlabelled

    def forward(self, ctx: StepContext) -> torch.Tensor:
        if self.reads_head:
            return self.chunked(ctx)
        logits = required(ctx.student_logits, "the student's logits")
        return lf.cross_entropy(logits, ctx.targets, self.label_smoothing, self.unlabelled)

    def chunks(self, ctx: StepContext) -> ChunkTerm:
        return ce_chunks(ctx.targets, self.label_smoothing)


class LogitTerm(LossTerm):
    """Shared by logit terms: optional standardisation, then a temperature of any kind."""

    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "weight": {"low": 0.1, "high": 1.0},
        "temperature": {"low": 1.0, "high": 8.0},
    }

    def __init__(self, temperature: TemperatureSpec | None = None, logit_std: bool = False):
        super().__init__()
        self.temperature = build_temperature(temperature) if temperature is not None else None
        self.logit_std = logit_std

    def setup(self, shapes: Shapes) -> None:
        if shapes.teacher_logits is not None and shapes.teacher_logits[-1] != shapes.student_logits[-1]:
            raise KdforgeError(
                f"{self.name}: the teacher outputs {shapes.teacher_logits[-1]} classes but the student outputs "
                f"{shapes.student_logits[-1]}; give both the dataset's class count (a language model with "
                "another vocabulary is distilled with uld)"
            )
        if isinstance(self.temperature, CTKDTemperature):
            self.temperature.setup(
                shapes.student_logits[-1] + (shapes.teacher_logits[-1] if shapes.teacher_logits else 0)
            )

    def param_groups(self) -> list[dict[str, Any]]:
        if not isinstance(self.temperature, CTKDTemperature):
            return []
        group: dict[str, Any] = {"params": list(self.temperature.parameters()), "weight_decay": 0.0}
        if self.temperature.spec.lr is not None:
            group["lr"] = self.temperature.spec.lr
        return [group]

    def prepare(
        self, ctx: StepContext, teacher_logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(student logits, teacher logits, temperature) as this term should compare them;
        ``teacher_logits`` replaces the teacher's output (e.g. a mixture of teachers)."""
        target = required(ctx.teacher_logits if teacher_logits is None else teacher_logits, "the teacher's logits")
        student = required(ctx.student_logits, "the student's logits")
        zs, zt = student, target
        if self.logit_std:
            zs, zt = lf.standardize_logits(zs), lf.standardize_logits(zt)
        tau = self.temperature.at(ctx.clock, student, target) if self.temperature is not None else None
        if self.temperature is not None and not isinstance(self.temperature.spec, (int, float)):  # scheduled or learned
            ctx.logs[f"{self.name}.tau"] = tau.detach().mean() if isinstance(tau, torch.Tensor) else torch.tensor(tau)
        return zs, zt, tau

    def finish(self, value: torch.Tensor) -> torch.Tensor:
        """Add the temperature's anchor regulariser (learnable temperatures only)."""
        return value + self.temperature.regulariser() if isinstance(self.temperature, CTKDTemperature) else value


@LOSSES.register("kd", rules=[_CHUNK, _fixed_when_chunked])
class KD(LogitTerm):
    """Logit KD at temperature T: Hinton's forward KL, or reverse KL, JSD, generalised JSD (β), skew KL or skew
    reverse KL (α), total variation (:mod:`kdforge.losses.divergence`). T²-scaled, batch-averaged.

    ``temperature``: number, schedule or ``{learnable: ctkd}``. A top-k teacher (a cache written with ``--topk``,
    or ``topk: k`` here, which keeps the online teacher's top k alike) is compared over its k tokens and ``tail``:
    ``bucket`` (one outcome for all other tokens, holding each model's leftover mass) or ``renormalise`` (the k
    tokens only). ``chunked: true`` (language models) never makes the whole [tokens, vocabulary] logits: the
    student's last hidden states go through its LM head a chunk of tokens at a time, forward and backward
    (:func:`~kdforge.losses.chunked.chunked_linear_kd`; ``chunk`` tokens, default 2²² logits on a CPU, 2²⁵ on a GPU).
    """

    reads_topk = True

    def __init__(
        self,
        temperature: TemperatureSpec = 4.0,
        direction: Direction = "forward",
        beta: Probability = 0.5,
        alpha: BelowOne = 0.1,
        logit_std: bool = False,
        topk: AtLeastOne | None = None,
        tail: Tail = "bucket",
        chunked: bool = False,
        chunk: AtLeastOne | None = None,
    ):
        super().__init__(temperature, logit_std)
        self.direction, self.beta, self.alpha, self.topk, self.tail = direction, beta, alpha, topk, tail
        self.reads_head, self.chunk = chunked, chunk

    def forward(self, ctx: StepContext) -> torch.Tensor:
        if self.reads_head:
            return self.chunked(ctx)
        options: dict[str, Any] = {"direction": self.direction, "beta": self.beta, "alpha": self.alpha}
        sparse = ctx.teacher_topk
        if sparse is None and self.topk is not None:
            sparse = lf.topk_log_probs(required(ctx.teacher_logits, "the teacher's logits"), self.topk)
        if sparse is None:
            zs, zt, tau = self.prepare(ctx)
            return self.finish(lf.kd_loss(zs, zt, tau, **options))
        if self.logit_std:
            raise KdforgeError(f"{self.name}: a top-k teacher has no logits to standardise; drop logit_std")
        zs, _, tau = self.prepare(ctx, teacher_logits=sparse.log_probs)
        if isinstance(tau, torch.Tensor):
            raise KdforgeError(
                f"{self.name}: a top-k teacher takes a fixed or scheduled temperature, not a learned one"
            )
        return sparse_kd_loss(zs, *sparse, tau, tail=self.tail, **options)

    def chunks(self, ctx: StepContext) -> ChunkTerm:
        return kd_chunks(
            ctx.teacher_topk or _teacher_chunks(ctx),
            temperature=float(cast(float, self.temperature.spec)) if self.temperature is not None else 1.0,
            direction=self.direction,
            beta=self.beta,
            alpha=self.alpha,
            topk=self.topk,
            tail=self.tail,
        )


# "kl": the name embedding-distillation code gives it (on routing or class logits)
LOSSES.register("kl", rules=[_CHUNK, _fixed_when_chunked])(KD)


def _teacher_chunks(ctx: StepContext) -> Any:
    """What a chunked term reads of the teacher: its head, which makes its logits a chunk at a time, or them."""
    if ctx.teacher_head is not None:
        return ctx.teacher_head.logits
    return required(ctx.teacher_logits, "the teacher's logits")


@LOSSES.register("uld", rules=[_CHUNK])
class ULD(LossTerm):
    """Universal logit distillation (Boizard et al., 2024), for a teacher whose vocabulary is not the student's:
    the L1 distance between the two models' next-token probabilities sorted in decreasing order
    (:func:`~kdforge.losses.functional.uld_loss`), which needs no token of one to name a token of the other.
    Use it with a teacher that reads the data in its own tokens (an ``hf`` teacher's ``tokenizer`` option) and
    with ``ce``, as the paper does: it matches how sure the teacher is, the labels say of what. ``chunked: true``
    works as for ``kd``."""

    def __init__(self, temperature: Positive = 1.0, chunked: bool = False, chunk: AtLeastOne | None = None):
        super().__init__()
        self.temperature, self.reads_head, self.chunk = temperature, chunked, chunk

    def forward(self, ctx: StepContext) -> torch.Tensor:
        if self.reads_head:
            return self.chunked(ctx)
        student = required(ctx.student_logits, "the student's logits")
        return lf.uld_loss(student, required(ctx.teacher_logits, "the teacher's logits"), self.temperature)

    def chunks(self, ctx: StepContext) -> ChunkTerm:
        return uld_chunks(_teacher_chunks(ctx), self.temperature)


@LOSSES.register("dual_head_kd")
class DualHeadKD(LogitTerm):
    """Dual-head KD (Yang et al., 2024): the KD loss trains an auxiliary linear classifier on
    the student's features (``student``, default the input of its ``head``) instead of the
    student's own head, which then learns from the labels alone; the backbone learns from
    both. The two losses no longer pull one classifier two ways. The auxiliary head trains
    with the student, is saved with the run, and is never exported (the student keeps its
    own head). Use with ``ce``: ``[{name: ce}, {name: dual_head_kd, temperature: 4}]``."""

    def __init__(
        self,
        temperature: TemperatureSpec = 4.0,
        student: str = "head:input",
        direction: Direction = "forward",
        beta: Probability = 0.5,
        logit_std: bool = False,
    ):
        super().__init__(temperature, logit_std)
        self.student, self.direction, self.beta = student, direction, beta
        self.aux_head: torch.nn.Module = torch.nn.Identity()

    @property
    def student_taps(self) -> list[str]:
        return [self.student]

    def setup(self, shapes: Shapes) -> None:
        super().setup(shapes)
        feature = shapes.student[self.student]
        if len(feature) != len(
            shapes.student_logits
        ):  # [B, D] features for [B, K] logits, [B, T, D] for [B·T, K] tokens
            feature_rows = feature[:-1].numel()
            if feature_rows != shapes.student_logits[:-1].numel():
                raise KdforgeError(
                    f"{self.name}: '{self.student}' gives features of shape {list(feature)}, which do not line up "
                    "with the logits "
                    f"{list(shapes.student_logits)}; tap the features the student's classifier reads (head:input)"
                )
        self.aux_head = torch.nn.Linear(feature[-1], shapes.student_logits[-1])

    def forward(self, ctx: StepContext) -> torch.Tensor:
        features = ctx.student_features[self.student]
        rows = features.reshape(-1, features.shape[-1])  # one row per sample, or per token
        if ctx.token_mask is not None:  # the positions the logits keep
            rows = rows[ctx.token_mask]
        zs, zt, tau = self.prepare(dataclasses.replace(ctx, student_logits=self.aux_head(rows.float())))
        return self.finish(lf.kd_loss(zs, zt, tau, self.direction, self.beta))


@LOSSES.register("dkd")
class DKD(LogitTerm):
    """Decoupled KD (Zhao et al., 2022): α · target-class KD + β · non-target-class KD.

    ``warmup``: epochs over which the term's strength ramps linearly from 0 to 1.
    """

    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "beta": {"low": 1.0, "high": 8.0, "log": True},
        "temperature": {"low": 1.0, "high": 8.0},
    }
    reads_labels = True  # the target class splits the KD in two

    def __init__(
        self,
        temperature: TemperatureSpec = 4.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        warmup: NonNegative = 0.0,
        logit_std: bool = False,
    ):
        super().__init__(temperature, logit_std)
        self.alpha, self.beta, self.warmup = alpha, beta, warmup

    def forward(self, ctx: StepContext) -> torch.Tensor:
        zs, zt, tau = self.prepare(ctx)
        ramp = min(1.0, ctx.clock.progress * ctx.clock.epochs / self.warmup) if self.warmup else 1.0
        return self.finish(ramp * lf.dkd_loss(zs, zt, ctx.labels, tau, self.alpha, self.beta))


@LOSSES.register("dist")
class DIST(LogitTerm):
    """DIST (Huang et al., 2022): inter-class (β) and intra-class (γ) Pearson-correlation matching."""

    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "temperature": {"low": 1.0, "high": 8.0},
        "beta": {"low": 0.25, "high": 4.0, "log": True},
        "gamma": {"low": 0.25, "high": 4.0, "log": True},
    }

    def __init__(
        self, temperature: TemperatureSpec = 1.0, beta: float = 1.0, gamma: float = 1.0, logit_std: bool = False
    ):
        super().__init__(temperature, logit_std)
        self.beta, self.gamma = beta, gamma

    def forward(self, ctx: StepContext) -> torch.Tensor:
        zs, zt, tau = self.prepare(ctx)
        return self.finish(lf.dist_loss(zs, zt, tau, self.beta, self.gamma))


@LOSSES.register("mse_logits")
class MSELogits(LogitTerm):
    """Mean squared error between student and teacher logits (optionally standardised)."""

    search_space: ClassVar[dict[str, dict[str, Any]]] = {"weight": {"factor": 4.0}}

    def __init__(self, logit_std: bool = False):
        super().__init__(None, logit_std)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        zs, zt, _ = self.prepare(ctx)
        return lf.mse_logits(zs, zt)
