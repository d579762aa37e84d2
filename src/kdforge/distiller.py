"""Distiller: student + frozen teacher + taps + loss terms -> one loss per step."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from kdforge import distributed
from kdforge.adapters import adapter_state, is_adapted, load_adapters
from kdforge.data.bundle import PAD_TARGET
from kdforge.errors import KdforgeError, required
from kdforge.losses import functional as lf
from kdforge.losses.chunked import LMHead, can_hand_head, chunked_linear_losses, handing_heads
from kdforge.losses.functional import TopK, dense_logits_from_topk
from kdforge.losses.terms import LossTerm, Shapes, StepContext
from kdforge.schedules import Clock, ScheduleConfig
from kdforge.taps import FeatureTap, unwrap
from kdforge.teachers.cache import CachedTeacher
from kdforge.teachers.teacher import Teacher


@dataclass
class StepOutput:
    loss: torch.Tensor  # weighted sum of the parts
    outputs: torch.Tensor | None  # student logits [B, K] (None: a chunked step that never made them whole)
    parts: dict[str, torch.Tensor]  # raw value of each term
    weighted: dict[str, torch.Tensor]  # weight * raw value
    logs: dict[str, torch.Tensor]  # scalars worth logging: temperatures, scheduled weights


class Distiller(nn.Module):
    """Runs student and teacher on a batch and sums the weighted loss terms.

    Trainable parts (projectors inside terms) are created here, from the shapes seen on
    ``example_input``, so that :meth:`trainable_parameters` is complete before the
    optimiser is built. The teacher's parameters are never among them.

    ``per_token`` (language models: logits [B, T, V], targets [B, T]): the terms see every
    position as a sample of its own, logits [B·T, V] and targets [B·T], so each logit term
    (CE, KD at any temperature, DKD, ...) is token-level as written; positions whose target is
    ``PAD_TARGET`` are left out.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher | CachedTeacher | None,
        terms: list[LossTerm],
        example_input: torch.Tensor,
        per_token: bool = False,
        train_samples: int | None = None,
        one_head_pass: bool = True,
        compile_chunks: bool = False,
        pad: int | None = None,
        unlabelled: bool = False,
    ):
        super().__init__()
        self.student, self.teacher, self.per_token = student, teacher, per_token
        # inputs are token rows padded with this id: the terms that can leave the padding out do. Kept only when one
        # reads the real positions, as finding whether a batch is padded waits on the device at every step.
        self.pad = pad if any(t.reads_real_tokens for t in terms) else None
        self.terms = nn.ModuleList(terms)
        self.loss_terms: list[LossTerm] = list(terms)  # the same, as a plain list: read several times a step
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise KdforgeError(f"loss term names must be unique, got {names}")
        if teacher is None and any(t.uses_teacher for t in terms):
            needing = [t.name for t in terms if t.uses_teacher]
            raise KdforgeError(f"terms {needing} need a teacher, but none was given")
        if unlabelled and (labelled_only := [t.name for t in terms if t.reads_labels]):
            raise KdforgeError(
                f"loss terms that need every training sample's label: {', '.join(labelled_only)}; but the data adds "
                "samples without one (its data.unlabelled_* options): drop those options or those terms (ce leaves "
                "such samples out)"
            )
        self.unlabelled = unlabelled  # some training samples have no label (PAD_TARGET): CE leaves them out
        self.cache = teacher if isinstance(teacher, CachedTeacher) else None  # outputs looked up, not computed
        for term in terms:
            term.resolve(
                student, teacher.module if teacher else None
            )  # a cached teacher's module is an empty copy of its tree
        for term in terms:
            if term.member is not None:
                _check_member(term, term.member, teacher)
        teacher_layers = list(
            dict.fromkeys(
                [n for t in terms for n in t.teacher_taps] + [_member_tap(t) for t in terms if t.member is not None]
            )
        )
        if self.cache is not None and (missing := [n for n in teacher_layers if n not in self.cache.layers]):
            raise KdforgeError(
                f"the loss terms read teacher layers {missing}, but teacher.cache '{self.cache.path}' holds "
                f"{self.cache.layers or 'no layers'}; rebuild it with this recipe: kdforge cache RECIPE --out "
                f"{self.cache.path}"
            )
        self.student_tap = FeatureTap(student, {n: n for t in terms for n in t.student_taps})
        self.teacher_tap = (
            FeatureTap(teacher.module, {n: n for n in teacher_layers}) if isinstance(teacher, Teacher) else None
        )
        self.uses_teacher = any(t.uses_teacher for t in terms)
        self.teacher_follows = isinstance(teacher, Teacher) and teacher.ema_decay is not None  # an EMA teacher
        self.heads = any(t.reads_head for t in terms)  # models hand their LM head in training steps
        # the terms that read the student's head make its chunks of logits once for all (not with DOT, which takes
        # the gradients of its distillation and task terms apart); compiled, each term's chunk loss runs fused
        self.one_head_pass, self.compile_chunks = one_head_pass, compile_chunks
        self.reads_index = any(t.reads_index for t in terms)  # training batches must carry their sample indices
        self.train_samples = train_samples
        if (chunked := [t.name for t in terms if t.reads_head]) and not can_hand_head(student):
            raise KdforgeError(
                f"{', '.join(chunked)}: chunked: true makes the logits from the student's last hidden states and LM "
                f"head, which {type(unwrap(student)).__name__} does not hand over; use hf_causal_lm or lm_transformer, "
                "or drop chunked"
            )
        self._setup_terms(example_input)

    @torch.no_grad()
    def _setup_terms(self, example: torch.Tensor) -> None:
        was_training = self.student.training
        self.student.eval()
        # the example is the split's first samples: a cache looks them up by those indices
        probe_index = torch.arange(len(example)) if self.cache is not None else None
        student_logits, teacher_logits, s_feats, t_feats = self._dense(example, probe_index)
        self.student.train(was_training)
        for role, tapped, wanted in (
            ("student", s_feats, self.student_tap.aliases),
            ("teacher", t_feats, self.teacher_tap.aliases if self.teacher_tap else []),
        ):
            if silent := [name for name in wanted if name not in tapped]:
                raise KdforgeError(
                    f"the {role}'s module(s) {', '.join(silent)} never ran in a forward pass, so nothing was captured "
                    "there: a ModuleList such as "
                    "'blocks' is a container (name one block, blocks.0, or give mapping: uniform to pair every block)"
                )
        shapes = Shapes(
            student_logits.shape,
            teacher_logits.shape if teacher_logits is not None else None,
            {k: v.shape for k, v in s_feats.items()},
            {k: v.shape for k, v in t_feats.items()},
            self.train_samples,
            self.unlabelled,
        )
        for term in self.loss_terms:
            term.setup(
                dataclasses.replace(shapes, teacher_logits=shapes.teacher[_member_tap(term)])
                if term.member is not None
                else shapes
            )
        self.to(example.device)

    def _forward_models(
        self,
        x: torch.Tensor,
        index: torch.Tensor | None = None,
        epoch: int = 0,
        heads: bool = False,
        teacher_x: torch.Tensor | None = None,
    ) -> tuple[Any, Any, dict, dict]:
        """(student output, teacher output, tapped features of each). Outputs are logits, or with ``heads``
        :class:`LMHead` from the models that can hand them, and a top-k teacher's :class:`TopK`. The teacher reads
        ``teacher_x`` where given (the batch before the student's own changes), else ``x``."""
        self.student_tap.clear()
        teacher_module = self.teacher.module if heads and isinstance(self.teacher, Teacher) else None
        with handing_heads(self.student, teacher_module) if heads else contextlib.nullcontext():
            student_out = self.student(x)
            teacher_out: torch.Tensor | LMHead | TopK | None = None
            teacher_features: dict[str, torch.Tensor] = {}
            if self.uses_teacher and self.cache is not None:
                assert index is not None
                teacher_out, teacher_features = self.cache.lookup(index, x.device, epoch)
            elif self.uses_teacher and self.teacher is not None and self.teacher_tap is not None:
                self.teacher_tap.clear()
                teacher_out = self.teacher(x if teacher_x is None else teacher_x)
                teacher_features = self.teacher_tap.features
        return student_out, teacher_out, self.student_tap.features, teacher_features

    def _dense(
        self, x: torch.Tensor, index: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict, dict]:
        """Every output as whole logits (token rows for language models): what the terms' setup probes."""
        student_out, teacher_out, s_feats, t_feats = self._forward_models(x, index)
        if isinstance(teacher_out, TopK):  # a sparse teacher or cache: rebuild dense logits
            teacher_out = dense_logits_from_topk(teacher_out.log_probs, teacher_out.indices, student_out.shape[-1])
        if self.per_token:
            student_out = student_out.flatten(0, -2)
            teacher_out = teacher_out.flatten(0, -2) if teacher_out is not None else None
        return student_out, teacher_out, s_feats, t_feats

    def forward(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        clock: Clock | None = None,
        index: torch.Tensor | None = None,
        teacher_inputs: torch.Tensor | None = None,
    ) -> StepOutput:
        """One step's loss. ``index``: the samples' positions in the training split, which a
        cached teacher needs to look up its outputs; ``teacher_inputs``: what the teacher reads in place of
        ``inputs`` (the same rows before the student's own changes)."""
        clock = clock or Clock()
        if (self.cache is not None or self.reads_index) and index is None:
            reader = "a cached teacher" if self.cache is not None else "a term that keeps a memory per sample"
            raise KdforgeError(f"{reader} needs the samples' indices: use indexed training batches")
        student_out, teacher_out, s_feats, t_feats = self._forward_models(
            inputs, index, clock.epoch, self.heads, teacher_inputs
        )
        real = None  # the unpadded positions, when some are padded
        if self.per_token:
            targets = targets.flatten()
            if not (keep := targets != PAD_TARGET).all():  # padded positions take no part in any logit term
                real = keep
                targets = targets[real]
            student_out, teacher_out = _token_rows(student_out, real), _token_rows(teacher_out, real)
            # an ensemble member's logits are token rows like the combined ones
            t_feats = {k: _token_rows(v, real) if _MEMBER.fullmatch(k) else v for k, v in t_feats.items()}
        ctx = self._context(inputs, targets, student_out, teacher_out, s_feats, t_feats, clock)
        ctx.token_mask, ctx.index, ctx.real_tokens = real, index, self._real_tokens(inputs)
        student_logits, teacher_logits = ctx.student_logits, ctx.teacher_logits
        teacher_task = None
        if (learner := self.learning_teacher) is not None and teacher_logits is not None:
            teacher_task = self._teacher_task(
                learner, StepContext(inputs, targets, teacher_logits, clock=clock)
            )  # the teacher learns from the labels only
            ctx.teacher_logits = teacher_logits.detach()
            ctx.teacher_features = {k: v.detach() for k, v in t_feats.items()}
        weights = {term.name: term.weight_at(clock) for term in self.loss_terms}
        for term in self.loss_terms:
            if isinstance(term.weight, ScheduleConfig):
                ctx.logs[f"{term.name}.weight"] = torch.tensor(weights[term.name])
        together, summed = self._head_pass(ctx, weights)
        parts = {
            t.name: together[t.name] if t.name in together else t(self._member_view(ctx, t)) for t in self.loss_terms
        }
        weighted = {name: weights[name] * value for name, value in parts.items()}
        if learner is not None and teacher_task is not None:
            name, value = teacher_task
            parts[name], weighted[name] = value, learner.ce_weight * value
        alone = [value for name, value in weighted.items() if name not in together]
        return StepOutput(functools.reduce(operator.add, alone, summed), student_logits, parts, weighted, ctx.logs)

    def _head_pass(self, ctx: StepContext, weights: dict[str, float]) -> tuple[dict[str, torch.Tensor], Any]:
        """The terms that read the student's head, in one pass over its chunks of logits: ({term: its loss,
        detached}, their weighted sum, whose gradients reach the student), or ({}, 0) when there are none."""
        terms = [t for t in self.loss_terms if t.reads_head and t.member is None]
        if not (terms and self.one_head_pass and ctx.student_head is not None):
            return {}, 0
        chunks = [t.chunk for t in terms if t.chunk is not None]
        summed, values = chunked_linear_losses(
            ctx.student_head,
            [t.chunks(ctx) for t in terms],
            [weights[t.name] for t in terms],
            min(chunks, default=None),  # the smallest any term asks for
            self.compile_chunks,
        )
        return dict(zip([t.name for t in terms], values)), summed

    def _real_tokens(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """[B, T]: True at the real tokens of padded token rows (ids [B, T], or a pair's ids and segments
        [B, 2, T]); None where nothing is padded, or no term reads them."""
        if self.pad is None:
            return None
        real = (inputs[:, 0] if inputs.dim() == 3 else inputs) != self.pad
        return None if bool(real.all()) else real

    def _context(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        student: torch.Tensor | LMHead,
        teacher: torch.Tensor | LMHead | TopK | None,
        s_feats: dict,
        t_feats: dict,
        clock: Clock,
    ) -> StepContext:
        """The step as the terms see it. Whole logits are made from an :class:`LMHead`, and a top-k teacher
        densified, only when a term reads them so."""
        terms = self.loss_terms
        ctx = StepContext(inputs, targets, None, None, s_feats, t_feats, clock)
        if isinstance(student, LMHead):
            ctx.student_head = student
            if any(not t.reads_head for t in terms) or self.learning_teacher is not None:
                ctx.student_logits = student.logits()
        else:
            ctx.student_logits = student
        learning = self.learning_teacher is not None  # its own task reads its whole logits
        if isinstance(teacher, TopK):
            ctx.teacher_topk = teacher
            if learning or any(t.uses_teacher and not t.reads_topk for t in terms):
                ctx.teacher_logits = dense_logits_from_topk(*teacher, student.shape[-1])
        elif isinstance(teacher, LMHead):
            ctx.teacher_head = teacher
            if learning or any(t.uses_teacher and not t.reads_head for t in terms):
                ctx.teacher_logits = teacher.logits()
        else:
            ctx.teacher_logits = teacher
        return ctx

    def _member_view(self, ctx: StepContext, term: LossTerm) -> StepContext:
        """The step as ``term`` sees it: with ``member``, that ensemble member's logits are the teacher's."""
        if term.member is None:
            return ctx
        return dataclasses.replace(ctx, teacher_logits=ctx.teacher_features[_member_tap(term)])

    @property
    def learning_teacher(self) -> Teacher | None:
        """The teacher when it is co-trained with the student (``trainable``), else None."""
        teacher = self.teacher
        return teacher if isinstance(teacher, Teacher) and teacher.trainable else None

    @property
    def evolving_teacher(self) -> nn.Module | None:
        """What training changes in the teacher (all of a trainable one, an EMA teacher or member), else None."""
        return self.teacher.evolving if isinstance(self.teacher, Teacher) else None

    def _teacher_task(self, teacher: Teacher, own: StepContext) -> tuple[str, torch.Tensor]:
        """A co-trained teacher's own loss on the labels, named ``teacher_<term>``: its task
        term (``reg_task`` for regression data), or cross-entropy."""
        task = cast(LossTerm | None, teacher.task)
        if task is None:
            logits = required(own.student_logits, "the teacher's logits")
            return "teacher_ce", lf.cross_entropy(logits, own.targets, unlabelled=self.unlabelled)
        return f"teacher_{task.name}", task(own)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and term parameters (projectors, heads, learnable temperatures), and a
        trainable teacher's: what the optimiser updates."""
        return [p for _, p in self.named_trainable_parameters()]

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """:meth:`trainable_parameters` with names: ``student.<name>``, ``terms.<name>``, ``teacher.<name>``."""
        parts = [("student", unwrap(self.student)), ("terms", self.terms)]
        if (learner := self.learning_teacher) is not None:
            parts.append(("teacher", learner.module))
        return [
            (f"{prefix}.{n}", p) for prefix, module in parts for n, p in module.named_parameters() if p.requires_grad
        ]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups: the terms' own groups (e.g. a temperature with its own learning
        rate) and one main group with every other trainable parameter."""
        special = [group for term in self.loss_terms for group in term.param_groups()]
        if (learner := self.learning_teacher) is not None:
            group = {"params": [p for p in learner.module.parameters() if p.requires_grad]}
            special.append({**group, "lr": learner.lr} if learner.lr is not None else group)
        taken = {id(p) for group in special for p in group["params"]}
        return [{"params": [p for p in self.trainable_parameters() if id(p) not in taken]}, *special]

    @torch.no_grad()
    def held_out_terms(
        self, batches: Any, clock: Clock, autocast: Callable[[], contextlib.AbstractContextManager]
    ) -> dict[str, float]:
        """Each loss term, and their weighted sum ``loss``, on ``batches`` (the student in eval mode, ``clock``'s
        weights and temperatures): does what the student learnt from the teacher hold on data it did not train on?"""
        was_training = self.training
        self.eval()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for x, y, *_ in batches:
            with autocast():
                out = self(x, y, clock)
            for name, value in {"loss": out.loss, **out.parts}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() * len(y)
            count += len(y)
        self.train(was_training)
        return {name: float(total) / count for name, total in sums.items()}

    def after_step(self) -> None:
        """Called after each optimiser step: an EMA teacher follows the student."""
        if self.teacher_follows:  # asked once, not every step
            cast(Teacher, self.teacher).update(unwrap(self.student))

    def trainable_state_dict(self) -> dict[str, Any]:
        """What training changes: student, term parts, and an EMA teacher's weights."""
        state = {"student": self.student_state_dict(), "terms": self.terms.state_dict()}
        if (evolving := self.evolving_teacher) is not None:
            state["teacher"] = evolving.state_dict()  # an ensemble's EMA member, not its fixed members
        return state

    def load_trainable_state_dict(self, state: dict[str, Any]) -> None:
        student = unwrap(self.student)
        if is_adapted(student):
            load_adapters(student, state["student"])
        else:
            distributed.load_model_state(student, state["student"])
        self.terms.load_state_dict(state["terms"])
        if "teacher" in state:
            required(self.evolving_teacher, "an evolving teacher").load_state_dict(state["teacher"])

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The student's own weights: no wrapper prefixes, no teacher, no projectors (a
        sharded student's are gathered on rank 0); an adapted student's adapters alone, which are all that train."""
        student = unwrap(self.student)
        state = distributed.model_state(student)
        return adapter_state(state) if is_adapted(student) else state


Output = torch.Tensor | LMHead | TopK | None
_MEMBER = re.compile(r"members\.\d+")  # an ensemble member's own output (its logits)


def _token_rows(out: Output, real: torch.Tensor | None) -> Output:
    """[B, T, ...] -> [B·T, ...], the padded positions left out (``real``: the kept ones), for logits, an LM head's
    hidden states or a top-k teacher."""
    if isinstance(out, LMHead):
        return out.rows(real)
    if isinstance(out, TopK):
        return TopK(*(_rows(part, real) for part in out))
    return None if out is None else _rows(out, real)


def _rows(tensor: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    rows = tensor.flatten(0, -2)
    return rows if real is None else rows[real]


def _member_tap(term: LossTerm) -> str:
    return f"members.{term.member}"


def _check_member(term: LossTerm, member: int, teacher: Teacher | CachedTeacher | None) -> None:
    """``member: i`` needs an ensemble teacher with a member i, and a term that reads logits."""
    members = getattr(teacher.module, "members", None) if teacher is not None else None
    count = len(members) if isinstance(members, nn.ModuleList) else 0
    if not term.uses_teacher:
        raise KdforgeError(
            f"loss '{term.name}': member: {member} picks the teacher whose logits a term reads, but "
            f"'{term.name}' reads no teacher; remove member"
        )
    if member >= count:
        has = f"an ensemble of {count}" if count else "not an ensemble"
        raise KdforgeError(
            f"loss '{term.name}': member: {member} needs an ensemble teacher with a member {member} "
            f"(teacher: {{source: ensemble, members: [...]}}, counted from 0); this teacher is {has}"
        )
