"""Terms on intermediate features captured by taps: hints, CKA, attention, relations.

Each term names student and teacher layers (module names, as in ``named_modules()``).
For many pairs at once, name two block lists (``blocks``, ``layers``, ``encoder.layer``,
or ``auto``) and a ``mapping``: ``uniform``, ``skip``, ``last`` or ``learned`` (see
:func:`kdforge.taps.map_layers`). ``submodule`` is appended to every mapped layer
(``attn.qkv`` taps the attention projection inside each block).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from kdforge.bounds import AtLeastOne, Positive
from kdforge.errors import required
from kdforge.losses import representation as rep
from kdforge.losses.terms import LOSSES, LossTerm, Shapes, StepContext
from kdforge.taps import OUTPUT, LayerGate, LayerMapping, block_names, build_projector, map_layers

Layers = str | list[str]


class FeatureTerm(LossTerm):
    """Base of feature terms: resolves layer pairs against the models, then averages
    :meth:`pair_loss` over the pairs."""

    def __init__(
        self, student: Layers, teacher: Layers, mapping: LayerMapping = "explicit", submodule: str | None = None
    ):
        super().__init__()
        self.student_spec, self.teacher_spec, self.mapping, self.submodule = student, teacher, mapping, submodule
        self.pairs: list[tuple[str, str]] = []
        self.gate_layers: list[str] = []  # learned mapping: every teacher layer the gate mixes
        self.gate: LayerGate | None = None

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        teacher = required(teacher, "a teacher")
        expand = self.mapping != "explicit"
        s_layers = block_names(student, self.student_spec, expand)
        t_layers = block_names(teacher, self.teacher_spec, expand)
        pairs = map_layers(s_layers, t_layers, self.mapping)
        inside = (lambda name: f"{name}.{self.submodule}") if self.submodule else (lambda name: name)
        self.pairs = [(inside(s), inside(t)) for s, t in pairs]
        if self.mapping == "learned":
            self.gate_layers = [inside(t) for t in t_layers]
            self.gate = LayerGate(len(s_layers), len(t_layers), [t_layers.index(t) for _, t in pairs])
        block_names(student, [s for s, _ in self.pairs])  # the submodule exists in every block
        block_names(teacher, self.gate_layers or [t for _, t in self.pairs])

    @property
    def student_taps(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.pairs))

    @property
    def teacher_taps(self) -> list[str]:
        return self.gate_layers or list(dict.fromkeys(t for _, t in self.pairs))

    def teacher_shape(self, shapes: Shapes, index: int) -> torch.Size:
        if self.gate is None:
            return shapes.teacher[self.pairs[index][1]]
        found = {shapes.teacher[name] for name in self.gate_layers}
        if len(found) > 1:
            raise ValueError(
                f"mapping 'learned' mixes teacher layers, which must share one shape; got {sorted(map(list, found))}"
            )
        return found.pop()

    def features(self, ctx: StepContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
        student = [ctx.student_features[s] for s, _ in self.pairs]
        if self.gate is not None:
            return list(zip(student, self.gate([ctx.teacher_features[n] for n in self.gate_layers])))
        return list(zip(student, (ctx.teacher_features[t] for _, t in self.pairs)))

    def forward(self, ctx: StepContext) -> torch.Tensor:
        losses = [self.pair_loss(i, s, t) for i, (s, t) in enumerate(self.features(ctx))]
        return torch.stack(losses).mean()

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TokenFeatureTerm(FeatureTerm):
    """A feature term that leaves padding out: on token features [B, T, ...] of padded rows (dynamic padding), its
    :meth:`pair_loss` takes ``real``, the real positions, and the loss is what it would be without the padding."""

    reads_real_tokens = True

    def forward(self, ctx: StepContext) -> torch.Tensor:
        real = ctx.real_tokens
        pairs = enumerate(self.features(ctx))
        losses = [self.pair_loss(i, s, t, real if _per_position(s, real) else None) for i, (s, t) in pairs]
        return torch.stack(losses).mean()

    def pair_loss(
        self, index: int, student: torch.Tensor, teacher: torch.Tensor, real: torch.Tensor | None = None
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def _per_position(feature: torch.Tensor, real: torch.Tensor | None) -> bool:
    """Whether ``feature`` has a value per position of the token rows ``real`` describes ([B, T, ...])."""
    return real is not None and feature.dim() >= 3 and feature.shape[:2] == real.shape


@LOSSES.register("hint")
class Hint(TokenFeatureTerm):
    """FitNets hint: distance between a projected student feature and a teacher feature.

    ``loss``: ``mse``, ``cosine`` or ``smooth_l1``. ``projector`` maps each student feature
    to its teacher's shape: ``linear`` or ``mlp`` (last dim), ``conv1x1`` (channel dim), or
    ``none``. Projectors train with the student and are saved with the run.
    """

    def __init__(
        self,
        student: Layers,
        teacher: Layers,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        loss: Literal["mse", "cosine", "smooth_l1"] = "mse",
        projector: Literal["linear", "mlp", "conv1x1", "none"] = "linear",
    ):
        super().__init__(student, teacher, mapping, submodule)
        self.loss, self.projector_kind = loss, projector
        self.projectors = nn.ModuleList()

    def setup(self, shapes: Shapes) -> None:
        self.projectors = nn.ModuleList(
            build_projector(self.projector_kind, shapes.student[s], self.teacher_shape(shapes, i))
            for i, (s, _) in enumerate(self.pairs)
        )

    def pair_loss(
        self, index: int, student: torch.Tensor, teacher: torch.Tensor, real: torch.Tensor | None = None
    ) -> torch.Tensor:
        return rep.feature_loss(self.projectors[index](student), teacher, self.loss, real)


@LOSSES.register("fdd")
class FeatureDynamics(FeatureTerm):
    """Feature dynamics distillation: match the direction of the layer-to-layer changes of
    the mapped layers (needs two or more pairs). One projector, shared by all student
    layers (they live in one residual stream), maps student features to the teacher's."""

    def __init__(
        self,
        student: Layers = "auto",
        teacher: Layers = "auto",
        mapping: LayerMapping = "uniform",
        submodule: str | None = None,
        projector: Literal["linear", "mlp", "conv1x1", "none"] = "linear",
    ):
        super().__init__(student, teacher, mapping, submodule)
        self.projector_kind = projector
        self.projector: nn.Module = nn.Identity()

    def setup(self, shapes: Shapes) -> None:
        if len(self.pairs) < 2:
            raise ValueError(f"fdd needs at least two mapped layer pairs, got {len(self.pairs)}")
        self.projector = build_projector(
            self.projector_kind, shapes.student[self.pairs[0][0]], self.teacher_shape(shapes, 0)
        )

    def forward(self, ctx: StepContext) -> torch.Tensor:
        pairs = self.features(ctx)
        return rep.feature_dynamics_loss([self.projector(s) for s, _ in pairs], [t for _, t in pairs])


@LOSSES.register("cka")
class CKA(FeatureTerm):
    """1 − linear CKA between student and teacher features (no projector; widths may differ;
    by default the models' outputs).
    ``debiased`` uses the unbiased HSIC estimator (better on small batches)."""

    def __init__(
        self,
        student: Layers = OUTPUT,
        teacher: Layers = OUTPUT,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        debiased: bool = False,
    ):
        super().__init__(student, teacher, mapping, submodule)
        self.debiased = debiased

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return rep.cka_loss(student, teacher, self.debiased)


@LOSSES.register("at")
class AttentionTransfer(FeatureTerm):
    """Attention transfer (Zagoruyko & Komodakis): match the normalised spatial maps
    mean_c |f|^p of [B, C, H, W] (or [B, C, L]) features; channel counts may differ.
    The paper weights this term by about 1000."""

    def __init__(
        self,
        student: Layers,
        teacher: Layers,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        p: float = 2.0,
    ):
        super().__init__(student, teacher, mapping, submodule)
        self.p = p

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return rep.at_loss(student, teacher, self.p)


Relation = Literal["qk", "qq", "kk", "vv"]


@LOSSES.register("minilm")
class MiniLM(TokenFeatureTerm):
    """MiniLM: KL between self-attention relations of teacher and student, from tapped fused
    ``qkv`` projections ([B, N, 3D], e.g. ``submodule: attn.qkv``), or, in models with three projections (BERT and
    the Hugging Face encoders), from ``qkv``: their three names inside each block, e.g. ``[attention.self.query,
    attention.self.key, attention.self.value]``.

    ``relations``: ``qk`` (attention distributions), ``vv`` (value relation) — MiniLM's
    pair — or ``qq``/``kk``/``vv`` (MiniLMv2). Both sides are split into the same number
    of ``relation_heads``, so widths and head counts may differ.
    """

    def __init__(
        self,
        student: Layers,
        teacher: Layers,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        relation_heads: int = 4,
        relations: Sequence[Relation] = ("qk", "vv"),
        qkv: list[str] | None = None,
    ):
        if qkv is not None and (submodule is not None or len(qkv) != 3 or mapping == "learned"):
            raise ValueError(
                "qkv names the query, key and value projections inside each block (three names), in place of a "
                "fused submodule, with a mapping other than learned"
            )
        super().__init__(student, teacher, mapping, submodule)
        self.relation_heads, self.relations, self.qkv = relation_heads, list(relations), qkv

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        super().resolve(student, teacher)
        if self.qkv is not None:  # every projection exists in every mapped block
            block_names(student, [n for s, _ in self.pairs for n in self._projections(s)])
            block_names(required(teacher, "a teacher"), [n for _, t in self.pairs for n in self._projections(t)])

    def _projections(self, block: str) -> list[str]:
        return [f"{block}.{name}" for name in self.qkv or []]

    @property
    def student_taps(self) -> list[str]:
        if self.qkv is None:
            return super().student_taps
        return list(dict.fromkeys(n for s, _ in self.pairs for n in self._projections(s)))

    @property
    def teacher_taps(self) -> list[str]:
        if self.qkv is None:
            return super().teacher_taps
        return list(dict.fromkeys(n for _, t in self.pairs for n in self._projections(t)))

    def features(self, ctx: StepContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.qkv is None:
            return super().features(ctx)
        fused = lambda found, block: torch.cat([found[n] for n in self._projections(block)], -1)  # noqa: E731
        return [(fused(ctx.student_features, s), fused(ctx.teacher_features, t)) for s, t in self.pairs]

    def pair_loss(
        self, index: int, student: torch.Tensor, teacher: torch.Tensor, real: torch.Tensor | None = None
    ) -> torch.Tensor:
        s, t = _split_qkv(student), _split_qkv(teacher)
        losses = []
        for relation in self.relations:
            a, b = "qkv".index(relation[0]), "qkv".index(relation[1])
            losses.append(
                rep.relation_kl(
                    rep.relation_logits(s[a], s[b], self.relation_heads),
                    rep.relation_logits(t[a], t[b], self.relation_heads),
                    real,
                )
            )
        return torch.stack(losses).sum()


@LOSSES.register("attn_kl")
class AttentionKL(MiniLM):
    """Attention-distribution KL (MiniLM's ``qk`` relation alone): KL(teacher ‖ student) between the attention
    distributions softmax(q kᵀ / √d) (from fused ``qkv`` taps), per relation head, averaged over heads and rows.
    TinyBERT's attention term is ``attn_mse``."""

    def __init__(
        self,
        student: Layers,
        teacher: Layers,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        relation_heads: int = 4,
        qkv: list[str] | None = None,
    ):
        super().__init__(student, teacher, mapping, submodule, relation_heads, ["qk"], qkv)


@LOSSES.register("attn_mse")
class AttentionMSE(AttentionKL):
    """TinyBERT's attention term (Jiao et al., 2020): mean squared difference of the attention *scores*
    q kᵀ / √d before the softmax (from fused ``qkv`` taps), per relation head. Both models need the same number of
    tokens; their widths and head counts may differ (both are split into ``relation_heads``)."""

    def pair_loss(
        self, index: int, student: torch.Tensor, teacher: torch.Tensor, real: torch.Tensor | None = None
    ) -> torch.Tensor:
        (qs, ks, _), (qt, kt, _) = _split_qkv(student), _split_qkv(teacher)
        heads = self.relation_heads
        return rep.relation_mse(rep.relation_logits(qs, ks, heads), rep.relation_logits(qt, kt, heads), real)


def _split_qkv(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if x.dim() != 3 or x.shape[-1] % 3:
        raise ValueError(
            f"expected a fused qkv projection [B, N, 3D], got shape {list(x.shape)}; tap the attention's qkv linear "
            "layer"
        )
    return x.chunk(3, dim=-1)


@LOSSES.register("rkd")
class RKD(FeatureTerm):
    """Relational KD (Park et al.): match the batch's distance (weight ``distance``) and
    angle (weight ``angle``) structure; the paper uses 25 and 50."""

    def __init__(
        self,
        student: Layers,
        teacher: Layers,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        distance: float = 25.0,
        angle: float = 50.0,
    ):
        super().__init__(student, teacher, mapping, submodule)
        self.distance, self.angle = distance, angle

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        loss = student.new_zeros((), dtype=torch.float32)
        if self.distance:
            loss = loss + self.distance * rep.rkd_distance_loss(student, teacher)
        if self.angle:
            loss = loss + self.angle * rep.rkd_angle_loss(student, teacher)
        return loss


@LOSSES.register("pkt")
class PKT(FeatureTerm):
    """Probabilistic knowledge transfer: KL between the batch's cosine-similarity distributions."""

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return rep.pkt_loss(student, teacher)


@LOSSES.register("sp")
class SimilarityPreserving(FeatureTerm):
    """Similarity-preserving KD: match the row-normalised batch Gram matrices."""

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return rep.sp_loss(student, teacher)


@LOSSES.register("relational")
class Relational(FeatureTerm):
    """Compare the batch cosine-similarity matrices of student and teacher features (by
    default the models' outputs: embeddings of any two widths) by ``compare``: ``mse``, or
    ``correlation`` (1 − Pearson ρ of the pairs' similarities: only their order and spread count)."""

    def __init__(
        self,
        student: Layers = OUTPUT,
        teacher: Layers = OUTPUT,
        mapping: LayerMapping = "explicit",
        submodule: str | None = None,
        compare: Literal["mse", "correlation"] = "mse",
    ):
        super().__init__(student, teacher, mapping, submodule)
        self.compare = compare

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return rep.relational_loss(student, teacher, self.compare)


@LOSSES.register("supcon")
class SupCon(LossTerm):
    """Supervised contrastive loss on a pooled student feature (e.g. ``head:input``), through
    a small projection head (Linear -> ReLU -> Linear to ``dim``) that trains with the student."""

    uses_teacher = False
    reads_labels = True

    def __init__(self, student: str = "head:input", temperature: Positive = 0.1, dim: AtLeastOne = 128):
        super().__init__()
        self.student, self.temperature, self.dim = student, temperature, dim
        self.head: nn.Module = nn.Identity()

    @property
    def student_taps(self) -> list[str]:
        return [self.student]

    def setup(self, shapes: Shapes) -> None:
        width = shapes.student[self.student][1:].numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, self.dim))

    def forward(self, ctx: StepContext) -> torch.Tensor:
        return rep.supcon_loss(self.head(ctx.student_features[self.student]), ctx.labels, self.temperature)
