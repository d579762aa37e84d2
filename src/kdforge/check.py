"""``kdforge check``: build everything a recipe names and run one batch forward and backward,
without training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from kdforge.bench import count_params
from kdforge.config import Recipe, TrainConfig
from kdforge.data.bundle import PER_TOKEN_TASKS
from kdforge.distiller import Distiller
from kdforge.errors import KdforgeError
from kdforge.family import families
from kdforge.layout import describe_layout
from kdforge.losses import build_losses
from kdforge.machine import seed_everything
from kdforge.models import build_model
from kdforge.pretrained import recording
from kdforge.session import Session
from kdforge.teachers import TEACHER_SOURCES
from kdforge.teachers.adapt import InputAdapter
from kdforge.teachers.cache import CachedTeacher
from kdforge.teachers.hub import download_hf
from kdforge.teachers.sources import ensemble, trained_teacher
from kdforge.teachers.teacher import Teacher
from kdforge.transfer import copy_matching, start_from


def check(recipe: Recipe, console: Console | None = None) -> dict[str, Any]:
    """Build everything and run one batch forward and backward, without training.

    Validates names, taps, feature shapes, projectors and class counts; prints a summary.
    A ``source: train`` teacher is checked as its untrained architecture.
    """
    console = console or Console()
    terms = build_losses(recipe.losses)
    seed_everything(recipe.seed)
    with Session(recipe, Path(recipe.log.dir), console) as session:  # its data loaders' workers stop at the end
        return _check(recipe, console, terms, session)


def fetch(recipe: Recipe, console: Console | None = None) -> list[dict[str, str]]:
    """Build what ``recipe`` names (its data, student and teacher), without running or training anything, so that
    everything it names by hub id or downloads lands in its library's cache: what a cluster user runs on a login
    node before an offline job. Returns those (:func:`kdforge.pretrained.recording`)."""
    console = console or Console()
    teacher = recipe.teacher
    if teacher is not None and teacher.shard:  # one process here, nothing to shard over: the files are what it needs
        recipe = recipe.model_copy(update={"teacher": teacher.model_copy(update={"shard": False})})
    with recording() as loaded, Session(recipe, Path(recipe.log.dir), console) as session:
        student = session.build_student()
        if teacher is not None and teacher.shard and teacher.source == "hf":
            download_hf(teacher)  # never built: a teacher sharded for its size may not fit this machine whole
        elif recipe.teacher is not None:
            _teacher_part(recipe, recipe.teacher, session, student, console)
    return loaded


def _check(recipe: Recipe, console: Console, terms: list[Any], session: Session) -> dict[str, Any]:
    from rich.table import Table

    data = session.data
    student = session.build_student()
    if recipe.student.init_from is not None:  # the first stage's student must fit this one
        start_from(student, recipe.student.init_from)
    teacher: Teacher | None = None
    teacher_note = "none: the student trains alone on its task"
    if recipe.teacher is not None:
        teacher, teacher_note = _teacher_part(recipe, recipe.teacher, session, student, console)
    distiller = Distiller(
        student,
        teacher,
        terms,
        session.example,
        per_token=data.task in PER_TOKEN_TASKS,
        train_samples=len(data.train),
        unlabelled=data.labelled is not None,
    )
    models = {"student": student, **({"teacher": teacher} if teacher is not None else {})}
    for role, model in models.items():
        logits = model(session.example)
        if data.task == "regression" and logits.shape[1:] != data.targets_example.shape[1:]:
            raise KdforgeError(
                f"the {role} outputs {list(logits.shape[1:])} per sample but dataset '{data.name}' has targets of "
                f"shape {list(data.targets_example.shape[1:])}"
            )
        if data.task == "classification" and logits.shape[-1] != data.num_classes:
            raise KdforgeError(
                f"the {role} outputs {logits.shape[-1]} classes but dataset '{data.name}' has {data.num_classes}"
            )

    distiller.train()
    if distiller.reads_index:
        session.index_training_batches([t.name for t in terms if t.reads_index])
    x, y, *index = next(iter(session.train.epoch(0)))
    with session.autocast():
        out = distiller(x, y, None, *index)
    out.loss.backward()
    no_grad = [n for n, p in student.named_parameters() if p.grad is None]
    frozen = teacher is not None and not teacher.trainable
    teacher_grads = [n for n, p in teacher.named_parameters() if p.grad is not None] if frozen and teacher else []
    if teacher_grads or not torch.isfinite(out.loss.detach()):
        raise KdforgeError(
            f"one-batch check failed: loss {float(out.loss.detach())}, teacher parameters with gradients: "
            f"{teacher_grads}"
        )

    table = Table(title=escape(f"kdforge check: {recipe.name}"))
    for column in ("part", "architecture", "params", "trainable", "output"):
        table.add_column(column, no_wrap=column != "architecture")
    projector_params = sum(p.numel() for p in distiller.terms.parameters())
    student_output = str(list(out.outputs.shape)) if out.outputs is not None else "LM head input (chunked loss)"
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    rows = [("data", data.name, "", "", f"x {list(x.shape)}")]
    if teacher is not None:
        module, shown = teacher.module, str(list(teacher(x).shape))
        rows.append(("teacher", type(module).__name__, f"{count_params(module):,}", "0", shown))
    rows += [
        ("student", type(student).__name__, f"{count_params(student):,}", f"{trainable:,}", student_output),
        ("projectors", "", f"{projector_params:,}", f"{projector_params:,}", ""),
    ]
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)
    projectors = ", ".join(t.name for t in terms if any(True for _ in t.parameters())) or "none"
    for part, note in (("data", data.describe()), ("teacher", teacher_note), ("projectors", projectors)):
        console.print(f"{part}: {note}", markup=False)
    if len(data.input_shape) == 3:
        console.print(f"memory layout: {describe_layout(recipe, session.memory_format)}", markup=False)
    schedule = recipe.train if recipe.teacher is not None else recipe.train.model_copy(update={"baseline": False})
    console.print(f"training: {describe_schedule(schedule, session.baseline_train().max_steps)}", markup=False)
    for said in (said for family in families() if (said := family.describe_after_fit(recipe, student))):
        console.print(f"after training: {said}", markup=False)
    parts = {name: float(value.detach()) for name, value in out.parts.items()}
    console.print(
        "one batch: "
        + ", ".join(f"{k} = {v:.4f} (x{t.weight})" for (k, v), t in zip(parts.items(), terms))
        + f"; total {float(out.loss.detach()):.4f}",
        markup=False,
    )
    if no_grad:
        console.print(
            f"[yellow]note:[/] student parameters without gradient on this batch: {escape(', '.join(no_grad[:6]))}"
        )
    console.print(
        "[green]check passed[/]: names, taps, shapes and class counts are consistent; forward and backward run."
    )
    return {
        "parts": parts,
        "loss": float(out.loss.detach()),
        "student_params": count_params(student),
        "teacher_params": count_params(teacher.module) if teacher is not None else 0,
    }


def _teacher_part(
    recipe: Recipe, cfg: Any, session: Session, student: torch.nn.Module, console: Console
) -> tuple[Teacher, str]:
    """The recipe's teacher as ``check`` builds it (wrapped, with a note), and what the student will
    copy and learn from it (``student.init_from_teacher``), checked now: a mismatch fails here."""
    teacher_module, teacher_note = _checked_teacher(session, cfg, student)
    if cfg.cache:  # a stale cache is refused here, before anything trains
        teacher_note = f"`train` reads {CachedTeacher(cfg.cache, session).describe()}"
    teacher = session.wrap_teacher(teacher_module)
    if isinstance(teacher.input_adapter, InputAdapter):
        teacher_note += f"; input adapted: {teacher.input_adapter.describe()}"
    if recipe.student.init_from_teacher is not None:  # what will be copied and learned, now: a mismatch fails here
        transfer = copy_matching(
            session.build_student(), teacher_module
        )  # into a copy: the checked student stays as built
        if not transfer.copied:
            raise KdforgeError(
                "init_from_teacher: no teacher tensor has a student tensor of the same name and shape "
                f"({len(transfer.shape_mismatch)} differ in shape); "
                "give the student the teacher's architecture (same model, or the standard preset of an ssm teacher), "
                "or drop student.init_from_teacher"
            )
        learned = [said for family in families() if (said := family.describe_from_teacher(student, teacher_module))]
        console.print(
            "; ".join(
                [
                    f"init_from_teacher: {len(transfer.copied)} teacher tensors will be copied "
                    f"({len(transfer.shape_mismatch)} differ in shape)",
                    *learned,
                ]
            ),
            markup=False,
        )
    return teacher, teacher_note


def _checked_teacher(session: Session, cfg: Any, student: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The teacher as ``check`` sees it: ``train`` teachers (also inside ensembles) are built
    untrained, the others are loaded; plus a note for the summary."""
    data = session.data
    if cfg.source == "train":
        module = build_model(
            cfg.model.name, input_shape=data.input_shape, num_classes=data.num_classes, **cfg.model.options
        )
        found = trained_teacher(session.recipe, cfg)
        if found is not None:
            return module, f"checked untrained; `train` reuses the one trained with the same settings in {found}"
        own = ""
        if cfg.train.data is not None:  # built now: data that cannot feed this teacher fails here
            session.teacher_batches(cfg.train)
            own = " on its own data (" + ", ".join(f"{k}: {v}" for k, v in cfg.train.data.items()) + ")"
        return module, (
            f"untrained here; `train` fits it for {cfg.train.epochs} epochs{own} (none trained with these settings "
            f"under {session.recipe.log.dir})"
        )
    if cfg.source == "ensemble":
        members = [_checked_teacher(session, m, student)[0] for m in cfg.members]
        return ensemble(session, cfg, members), f"ensemble of {len(members)} ({cfg.combine})"
    finetune = getattr(cfg, "finetune", None)  # a check loads the teacher; `train` fits it (minutes, not seconds)
    loaded = cfg.model_copy(update={"finetune": None}) if finetune is not None else cfg
    module, info = TEACHER_SOURCES.get(cfg.source)(session, loaded, session.run_dir / "teacher", student)
    notes = {"ema": f"EMA of the student (decay {cfg.decay})", "checkpoint": f"loaded from {cfg.path}"}
    note = notes.get(cfg.source, f"{cfg.source} model {cfg.model.name if cfg.model else ''}")
    note += "; RANDOM classifier head" if info.get("random_head") else ""
    return module, note + (f"; `train` fine-tunes it first ({finetune.epochs} epochs)" if finetune is not None else "")


def describe_schedule(train: TrainConfig, alone_steps: int | None = None) -> str:
    """How long the student trains, when it is validated, and when it stops early: one line. ``alone_steps``: the
    student alone's step budget, when it differs from the recipe's (matched to the distilled student's)."""
    length = f"{train.max_steps:,} optimiser steps" if train.max_steps is not None else f"{train.epochs} epochs"
    every = train.val_every
    if every == 1:
        validated = "validated after every epoch"
    else:
        interval = f"{every} epochs" if isinstance(every, int) else f"{every.steps:,} steps"
        validated = f"validated every {interval} and at the end"
    rule = train.early_stopping
    stops = (
        f"; stops early after {rule.patience:g} epochs without a better val {rule.metric}" if rule is not None else ""
    )
    baseline = "; the student alone is trained the same way" if train.baseline else ""
    if train.baseline and alone_steps != train.max_steps:
        baseline = (
            f"; the student alone for as many optimiser steps ({alone_steps:,}), on the labelled data only, "
            "validated as many steps apart"
        )
    return f"{length}, {validated} (the weights of the best validation are kept){stops}{baseline}"
