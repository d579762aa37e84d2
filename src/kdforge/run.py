"""``run(recipe) -> RunResult``: build everything, train, evaluate, write the run directory.

Stages, each resumable from its own ``last.pt``: the teacher (``teacher/``, when it is
trained), the distilled student (the run directory itself), and the same student
trained without distillation (``baseline/``) for an honest comparison.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import rich.progress
import torch
import yaml
from rich.console import Console
from rich.markup import escape

from kdforge import distributed
from kdforge._version import __version__
from kdforge.bench import count_params, latency_ms
from kdforge.callbacks import Callback, ConsoleProgress, JsonlLogger
from kdforge.config import Recipe
from kdforge.curriculum import Curriculum
from kdforge.data import DataBundle, example_inputs, make_loader, recipe_data
from kdforge.data.augment import BatchAugment, Mixer
from kdforge.distiller import Distiller
from kdforge.errors import KdforgeError, RunInterrupted
from kdforge.evaluate import evaluate
from kdforge.export import save_model
from kdforge.family import families
from kdforge.files import check_writable, read_json, remove_stale_tmp, write_json, write_text
from kdforge.losses import LossTerm, build_loss, build_losses
from kdforge.models import build_model
from kdforge.report import plot_curves, summary_table, write_report, write_results
from kdforge.teachers import TEACHER_SOURCES, Teacher
from kdforge.teachers.adapt import InputAdapter, expected_input
from kdforge.teachers.cache import CachedTeacher, fixed_views, write_cache
from kdforge.teachers.sources import ensemble
from kdforge.tracking import Tracker, build_trackers
from kdforge.trainer import Trainer, autocast_for, compiled, deterministic, resolve_device, seed_everything
from kdforge.transfer import copy_matching, start_from


@dataclass
class RunResult:
    run_dir: Path
    results: dict[str, Any]

    @property
    def student_accuracy(self) -> float:
        return self.results["student"]["test"]["accuracy"]

    @property
    def teacher_accuracy(self) -> float:
        return self.results["teacher"]["test"]["accuracy"]


class Session:
    """What the stages of one run share: recipe, data, loaders, device, callbacks."""

    def __init__(self, recipe: Recipe, run_dir: Path, console: Console):
        self.recipe, self.run_dir, self.console = recipe, run_dir, console
        self.device = resolve_device(recipe.train.device)
        self.data: DataBundle = recipe_data(recipe.data, recipe.seed)
        augment = BatchAugment.from_config(recipe.data.augment, self.data.scaling)
        # channels-last only means something for image batches [B, C, H, W]
        self.memory_format = (
            torch.channels_last
            if recipe.train.channels_last and len(self.data.input_shape) == 3
            else torch.contiguous_format
        )
        batches = {"device": self.device, "memory_format": self.memory_format}
        self.train = make_loader(
            self.data.train,
            recipe.data.batch_size,
            shuffle=True,
            seed=recipe.seed,
            transform=augment or None,
            **batches,
        )
        self.train.shard = distributed.setup()  # (rank, world): this process's share of every global batch
        self.val = make_loader(self.data.val, recipe.data.eval_batch_size, **batches)
        self.test = make_loader(self.data.test, recipe.data.eval_batch_size, **batches)
        self.example = example_inputs(self.train)
        self.autocast = lambda: autocast_for(recipe.train.amp, self.device)
        self.trackers: list[Tracker] | None = None

    def callbacks(self) -> list[Callback]:
        """Fresh loggers for one training stage, and the run's trackers (made on first use,
        on rank 0, and closed with the session)."""
        if self.trackers is None:
            self.trackers = build_trackers(self.recipe, self.run_dir) if distributed.is_main() else []
        callbacks: list[Callback] = [
            JsonlLogger(self.run_dir / "metrics.jsonl", self.recipe.log.every_steps),
            *self.trackers,
        ]
        if self.recipe.log.progress:
            callbacks.append(ConsoleProgress(self.console))
        return callbacks

    def track(self, batches: Any, description: str) -> Any:
        """``batches`` with a transient progress bar (when ``log.progress``): for evaluations."""
        if not self.recipe.log.progress:
            return batches
        return rich.progress.track(
            batches, description=description, total=len(batches), console=self.console, transient=True
        )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *error: Any) -> None:
        for tracker in self.trackers or []:
            tracker.close()

    def evaluate(self, model: Any, batches: Any, description: str) -> dict[str, float]:
        """The task's metrics of ``model`` over ``batches``, with a progress bar."""
        return evaluate(model, self.track(batches, description), self.autocast(), self.data.task)

    def teacher_entry(self, teacher: Teacher | CachedTeacher, info: dict[str, Any]) -> dict[str, Any]:
        if isinstance(teacher, CachedTeacher):  # measured when the cache was written
            return {**teacher.manifest["teacher"], "cache": str(teacher.path)}
        module = teacher.module
        test = self.evaluate(teacher, self.test, "teacher: test split")
        val = info.get("val_best") or self.evaluate(teacher, self.val, "teacher: validation split")
        extra = {k: v for k, v in info.items() if k not in ("history", "val_best")}
        name = extra.pop("model", None) or (
            module.kdforge_spec["name"] if hasattr(module, "kdforge_spec") else type(module).__name__
        )
        with getattr(
            module, "forgetting", contextlib.nullcontext
        )():  # a teacher that remembers its outputs: time real encoding, not recall
            return self.entry(
                teacher, name, test, val, source=self.recipe.teacher.source, **extra
            )  # latency with its input adapter

    def entry(
        self, model: torch.nn.Module, name: str, test: dict[str, float], val_best: dict[str, float], **extra: Any
    ) -> dict[str, Any]:
        """One row of results.json: what the model is, how good, how big, how fast."""
        return {
            "model": name,
            "params": count_params(model),
            "test": test,
            "val_best": val_best,
            "latency_ms": latency_ms(model, self.example),
            **extra,
        }

    def acquire_teacher(self, use_cache: bool = True) -> tuple[Teacher | CachedTeacher, dict[str, Any]]:
        """The frozen teacher of the recipe (an ``ema`` teacher or member is the student's architecture, whose
        weights follow the student once it trains), or its stored outputs (``teacher.cache``)."""
        cfg = self.recipe.teacher
        if cfg.cache and use_cache:
            augment = self.recipe.data.augment
            if augment.randaugment is not None or augment.mixes:
                raise KdforgeError(
                    "RandAugment, mixup and CutMix draw new inputs every step, but teacher.cache holds the teacher's "
                    "outputs on fixed views only; "
                    "train with the online teacher (drop teacher.cache) or augment with data.augment.shift/noise views"
                )
            teacher = CachedTeacher(cfg.cache, self)
            self.train.indexed = True  # the cache is looked up by sample index...
            self.train.fixed_views = fixed_views(self, teacher.manifest["views"])  # ...and shows the cached views
            return teacher, {}
        module, info = TEACHER_SOURCES.get(cfg.source)(self, cfg, self.run_dir / "teacher")
        return self.wrap_teacher(module), info

    def wrap_teacher(self, module: torch.nn.Module) -> Teacher:
        """The recipe's teacher module, frozen (or co-trained: ``trainable``), with its input adapter."""
        cfg = self.recipe.teacher
        trainable = (
            {
                "trainable": True,
                "lr": cfg.lr,
                "ce_weight": 1.0 if cfg.ce_weight is None else cfg.ce_weight,
                "task": self.task_term(),
            }
            if cfg.trainable
            else {}
        )
        follows = {"ema_part": cfg.ema_part[0], "ema_decay": cfg.ema_part[1]} if cfg.follows_student else {}
        return Teacher(
            module.to(self.device, memory_format=self.memory_format),
            input_adapter=self.adapter(cfg, module),
            **trainable,
            **follows,
        )

    def adapter(self, cfg: Any, module: torch.nn.Module | None = None) -> InputAdapter | None:
        """The teacher's input adapter: from ``teacher.adapt``, else from what the teacher says
        it expects (a timm model's pretrained config: size, channels, mean, std)."""
        a = cfg.adapt if cfg.adapt is not None else expected_input(module)
        if a is None:
            return None
        return InputAdapter(
            self.data.input_shape, self.data.scaling, size=a.size, channels=a.channels, mean=a.mean, std=a.std
        ).to(self.device)

    def task_term(self, label_smoothing: float | None = None) -> LossTerm:
        """The plain supervised loss of this data: ``ce`` for classes, ``reg_task`` for values
        (complex_mse for complex targets), with the recipe's options for that term if it has
        one; ``label_smoothing`` replaces the recipe's (a trained teacher's own setting)."""
        name = "reg_task" if self.data.task == "regression" else "ce"
        given = next((c.options for c in self.recipe.losses if c.name == name), None)
        options = (
            dict(given) if given is not None else ({"kind": "complex_mse"} if self.data.train.y.is_complex() else {})
        )
        if label_smoothing is not None and name == "ce":
            options["label_smoothing"] = label_smoothing
        return build_loss({"name": name, **options})

    def fit_teacher(
        self,
        module: torch.nn.Module,
        fit: Any,
        out_dir: Path,
        head: torch.nn.Module | None = None,
        adapter: torch.nn.Module | None = None,
    ) -> dict[str, Any]:
        """Fit a teacher on the labels (the task's own loss; ``fit``: epochs, lr, label
        smoothing), selected on validation, resumable from ``out_dir``. With ``head``, only
        that submodule trains; ``adapter`` prepares the batches as the teacher expects."""
        recipe = self.recipe
        if head is not None:  # head-only fine-tuning: everything else stays as loaded
            module.requires_grad_(False)
            head.requires_grad_(True)
        trainee = torch.nn.Sequential(adapter, module) if adapter is not None else module  # trains `module` in place
        distiller = Distiller(
            trainee, None, [self.task_term(fit.label_smoothing)], self.example, per_token=self.data.task == "lm"
        )
        optim = recipe.optim.model_copy(update={"lr": fit.lr or recipe.optim.lr})
        train_cfg = recipe.train.model_copy(
            update={"epochs": fit.epochs, "max_steps": None, "fsdp": False, "ema_decay": None}
        )  # student-only settings
        trainer = Trainer(
            distiller,
            optim,
            train_cfg,
            steps_per_epoch=len(self.train),
            checkpoint_dir=out_dir,
            callbacks=self.callbacks(),
            stage="teacher",
            task=self.data.task,
            grad_stats_every=recipe.log.grad_stats_every,
            val_terms=recipe.log.val_terms,
        )
        result = trainer.fit(self.train, self.val, resume=True)
        if result.interrupted:
            raise RunInterrupted(self.run_dir, "teacher training")
        best = trainer.load_best()
        module.requires_grad_(True)
        return {
            "epochs": fit.epochs,
            "best_epoch": best["epoch"],
            "val_best": best["val"],
            "history": result.history,
            "seconds": result.seconds,
        }

    def build_student(self) -> torch.nn.Module:
        """The recipe's student, untrained, on the device."""
        cfg = self.recipe.student.model
        return build_model(
            cfg.name,
            input_shape=self.data.input_shape,
            num_classes=self.data.num_classes,
            **student_options(self.recipe),
        ).to(self.device)

    def train_student(
        self, stage: str, terms: list[LossTerm], checkpoint_dir: Path, teacher: Teacher | None = None
    ) -> tuple[torch.nn.Module, dict[str, Any], list[dict[str, Any]], Teacher | None]:
        """Build the student (same seed, same initial weights in every stage) and fit it.
        An EMA teacher (or ensemble member) starts from this student's weights."""
        torch.manual_seed(self.recipe.seed)
        student = self.build_student().to(memory_format=self.memory_format)
        started_from = (
            start_from(student, self.recipe.student.init_from) if self.recipe.student.init_from else None
        )  # the baseline too: both go on from there
        transfer = (
            self.init_from_teacher(student, teacher, checkpoint_dir)
            if stage == "distill" and self.recipe.student.init_from_teacher
            else None
        )
        if teacher is not None and teacher.ema_decay is not None:
            teacher.start_ema(student)
        distiller = Distiller(
            compiled(student) if self.recipe.train.compile else student,
            teacher,
            terms,
            self.example,
            per_token=self.data.task == "lm",
        )
        curriculum = Curriculum.from_recipe(self.recipe) if stage == "distill" else None  # the baseline trains plainly
        augment = self.recipe.data.augment
        mixer = Mixer(augment, self.data.num_classes) if augment.mixes else None
        trainer = Trainer(
            distiller,
            self.recipe.optim,
            self.recipe.train,
            steps_per_epoch=len(self.train),
            checkpoint_dir=checkpoint_dir,
            callbacks=self.callbacks(),
            stage=stage,
            curriculum=curriculum,
            mixer=mixer,
            task=self.data.task,
            grad_stats_every=self.recipe.log.grad_stats_every,
            steering=steering(self.recipe, student, self.val),
            val_terms=self.recipe.log.val_terms,
        )
        result = trainer.fit(self.train, self.val, resume=True)
        if result.interrupted:
            raise RunInterrupted(self.run_dir, stage)
        last = {
            "test_last": trainer.evaluate(self.test),
            "epochs_run": len(result.history),
        }  # the final weights, for reporting only
        if result.stopped_early:
            last["stopped_early"] = True
        best = trainer.load_best()
        if trainer.sharded:  # gather the shards once: testing, timing and export use the whole student
            weights = distributed.gathered(student)
            student = self.build_student().to(memory_format=self.memory_format)
            student.load_state_dict(weights)
        for family in families():  # what each family measures on its students
            last.update(family.after_fit(self, stage, student, result.history))
        averaged = {"weights": f"EMA (decay {self.recipe.train.ema_decay})"} if trainer.ema is not None else {}
        if transfer is not None:
            last["init_from_teacher"] = transfer
        if started_from is not None:
            last["init_from"] = started_from
        entry = self.entry(
            student,
            self.recipe.student.model.name,
            self.evaluate(student, self.test, f"{stage}: test split"),
            best["val"],
            best_epoch=best["epoch"],
            **last,
            **averaged,
        )
        return student, entry, result.history, teacher

    def init_from_teacher(self, student: torch.nn.Module, teacher: Teacher, checkpoint_dir: Path) -> dict[str, Any]:
        """``student.init_from_teacher``: copy the matching teacher tensors, then let each family
        teach its own blocks (the TM family fits each TM block to its teacher MLP). Done once: a
        resumed run reads what it did from ``transfer.json``."""
        record = checkpoint_dir / "transfer.json"
        if (checkpoint_dir / "last.pt").exists() and record.exists():  # the checkpoint holds the transferred weights
            return read_json(record, "transfer record")
        report = copy_matching(student, teacher.module)
        self.console.print(f"init_from_teacher: {report.summary()}", markup=False)
        done = report.as_dict()
        for family in families():
            done.update(family.from_teacher(self, student, teacher))
        if distributed.is_main():
            write_json(record, done, indent=1)
        return done


def student_options(recipe: Recipe) -> dict[str, Any]:
    """The student's model options, as the families size it (e.g. an ssm preset from its teacher)."""
    options = recipe.student.model.options
    for family in families():
        options = family.student_options(recipe, options)
    return options


def steering(recipe: Recipe, student: torch.nn.Module, val: Any) -> Any | None:
    """What steers the student between epochs (the families' steerers, in turn), or None."""
    steerers = [s for family in families() if (s := family.steering(recipe, student, val)) is not None]
    if not steerers:
        return None
    return lambda trainer, model, epoch: {
        key: value for steer in steerers for key, value in steer(trainer, model, epoch).items()
    }


def run(recipe: Recipe, *, resume: str | Path | None = None, console: Console | None = None) -> RunResult:
    """Run a recipe end to end; with ``resume``, continue that run directory."""
    with deterministic(recipe.train.deterministic), contextlib.ExitStack() as cleanup:
        return _run(recipe, resume, console, cleanup)


def _run(
    recipe: Recipe, resume: str | Path | None, console: Console | None, cleanup: contextlib.ExitStack
) -> RunResult:
    distributed.setup()  # several processes (torchrun): rank 0 writes, all train
    console = console or Console()
    if not distributed.is_main():
        console = Console(quiet=True)
    started = time.perf_counter()
    terms = build_losses(recipe.losses)  # bad loss options fail before anything heavy is built
    run_dir = distributed.broadcast(_prepare_run_dir(recipe, resume) if distributed.is_main() else None)
    seed_everything(recipe.seed)
    session = cleanup.enter_context(Session(recipe, run_dir, console))
    where = f"{recipe.name}: {session.data.describe()}; device {session.device}; run dir {run_dir}"
    console.print(f"[bold]kdforge[/] {escape(where)}")
    timings: dict[str, float] = {}

    for family in families():
        family.check_run(session)
    tick = time.perf_counter()
    teacher, teacher_info = session.acquire_teacher()
    for family in families():
        family.prepare_data(session, teacher)
    timings["teacher_s"] = time.perf_counter() - tick
    results: dict[str, Any] = {
        "name": recipe.name,
        "dataset": session.data.name,
        "device": str(session.device),
        "seed": recipe.seed,
    }

    tick = time.perf_counter()
    student, results["student"], student_history, teacher = session.train_student("distill", terms, run_dir, teacher)
    timings["distill_s"] = time.perf_counter() - tick
    if distributed.is_main():
        save_model(student, run_dir / "student", {"test": results["student"]["test"], "recipe": recipe.name})
    results["teacher"] = session.teacher_entry(teacher, teacher_info)  # an EMA teacher is measured as it ended
    histories = {"teacher": teacher_info.get("history", []), "student + KD": student_history}

    instead = (
        [found for family in families() if (found := family.baselines(session, student, results)) is not None]
        if recipe.train.baseline
        else []
    )
    for found in instead:  # e.g. embeddings, which have no labels to learn alone from
        results.update(found)
    if recipe.train.baseline and not instead:
        tick = time.perf_counter()
        _, results["student_alone"], histories["student alone"], _ = session.train_student(
            "baseline", [session.task_term()], run_dir / "baseline"
        )
        timings["baseline_s"] = time.perf_counter() - tick

    timings["total_s"] = time.perf_counter() - started
    results.update(timings=timings, kdforge_version=__version__)
    if distributed.is_main():
        write_results(run_dir, results)
        write_report(run_dir, results, plot_curves(run_dir, histories))
    console.print(summary_table(results))
    console.print(
        f"run directory: [bold]{escape(str(run_dir))}[/] (report.md, results.json, student.safetensors, plots/)"
    )
    return RunResult(run_dir, results)


def _prepare_run_dir(recipe: Recipe, resume: str | Path | None) -> Path:
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise KdforgeError(f"cannot resume '{run_dir}': it has no config.yaml (is it a kdforge run directory?)")
        check_writable(run_dir, "run directory")
        remove_stale_tmp(run_dir)  # what a killed or failed write left behind
        return run_dir
    log_dir = check_writable(recipe.log.dir, "log.dir")  # before anything trains
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = log_dir / f"{recipe.name}-{stamp}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    write_text(run_dir / "config.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return run_dir


def load_run_recipe(run_dir: str | Path) -> Recipe:
    """The resolved recipe a run directory was made with."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise KdforgeError(f"'{run_dir}' is not a kdforge run directory (no config.yaml)")
    return Recipe.from_yaml(path)


def check(recipe: Recipe, console: Console | None = None) -> dict[str, Any]:
    """Build everything and run one batch forward and backward, without training.

    Validates names, taps, feature shapes, projectors and class counts; prints a summary.
    A ``source: train`` teacher is checked as its untrained architecture.
    """
    from rich.table import Table

    console = console or Console()
    terms = build_losses(recipe.losses)
    seed_everything(recipe.seed)
    session = Session(recipe, Path(recipe.log.dir), console)
    data = session.data
    student = session.build_student()
    if recipe.student.init_from is not None:  # the first stage's student must fit this one
        start_from(student, recipe.student.init_from)
    teacher_module, teacher_note = _checked_teacher(session, recipe.teacher, student)
    teacher = session.wrap_teacher(teacher_module)
    if teacher.input_adapter is not None:
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
    distiller = Distiller(student, teacher, terms, session.example, per_token=data.task == "lm")
    for role, logits in (("teacher", teacher(session.example)), ("student", student(session.example))):
        if data.task == "regression" and logits.shape[1:] != data.train.y.shape[1:]:
            raise KdforgeError(
                f"the {role} outputs {list(logits.shape[1:])} per sample but dataset '{data.name}' has targets of "
                f"shape {list(data.train.y.shape[1:])}"
            )
        if data.task == "classification" and logits.shape[-1] != data.num_classes:
            raise KdforgeError(
                f"the {role} outputs {logits.shape[-1]} classes but dataset '{data.name}' has {data.num_classes}"
            )

    distiller.train()
    x, y = next(iter(session.train.epoch(0)))
    with session.autocast():
        out = distiller(x, y)
    out.loss.backward()
    no_grad = [n for n, p in student.named_parameters() if p.grad is None]
    teacher_grads = [n for n, p in teacher.named_parameters() if p.grad is not None and not recipe.teacher.trainable]
    if teacher_grads or not torch.isfinite(out.loss.detach()):
        raise KdforgeError(
            f"one-batch check failed: loss {float(out.loss.detach())}, teacher parameters with gradients: "
            f"{teacher_grads}"
        )

    table = Table(title=escape(f"kdforge check: {recipe.name}"))
    for column in ("part", "architecture", "params", "trainable", "output", "note"):
        table.add_column(column)
    projector_params = sum(p.numel() for p in distiller.terms.parameters())
    rows = [
        ("data", data.name, "", "", f"x {list(x.shape)}", data.describe()),
        (
            "teacher",
            type(teacher_module).__name__,
            f"{count_params(teacher_module):,}",
            "0",
            str(list(teacher(x).shape)),
            teacher_note,
        ),
        (
            "student",
            type(student).__name__,
            f"{count_params(student):,}",
            f"{sum(p.numel() for p in student.parameters() if p.requires_grad):,}",
            str(list(out.outputs.shape)),
            "",
        ),
        (
            "projectors",
            "",
            f"{projector_params:,}",
            f"{projector_params:,}",
            "",
            ", ".join(t.name for t in terms if any(True for _ in t.parameters())) or "none",
        ),
    ]
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)
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
        "teacher_params": count_params(teacher_module),
    }


def _checked_teacher(session: Session, cfg: Any, student: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The teacher as ``check`` sees it: ``train`` teachers (also inside ensembles) are built
    untrained, the others are loaded; plus a note for the summary."""
    data = session.data
    if cfg.source == "train":
        module = build_model(
            cfg.model.name, input_shape=data.input_shape, num_classes=data.num_classes, **cfg.model.options
        )
        return module, f"untrained here; `train` fits it for {cfg.train.epochs} epochs"
    if cfg.source == "ensemble":
        members = [_checked_teacher(session, m, student)[0] for m in cfg.members]
        return ensemble(session, cfg, members), f"ensemble of {len(members)} ({cfg.combine})"
    module, info = TEACHER_SOURCES.get(cfg.source)(session, cfg, session.run_dir / "teacher", student)
    notes = {"ema": f"EMA of the student (decay {cfg.decay})", "checkpoint": f"loaded from {cfg.path}"}
    note = notes.get(cfg.source, f"{cfg.source} model {cfg.model.name if cfg.model else ''}")
    return module, note + ("; RANDOM classifier head" if info.get("random_head") else "")


def build_cache(
    recipe: Recipe,
    out: str | Path,
    topk: int | None = None,
    views: int = 1,
    feature_dtype: str = "float32",
    console: Console | None = None,
) -> dict[str, Any]:
    """``kdforge cache``: get the recipe's teacher (training it if needed), measure it, and
    store its outputs on the training split in ``out``: logits, and the outputs of the
    teacher layers the recipe's loss terms read."""
    console = console or Console()
    if recipe.teacher.follows_student:
        raise KdforgeError("an EMA teacher (or ensemble member) changes as the student trains: it cannot be cached")
    if recipe.teacher.trainable:
        raise KdforgeError(
            "a trainable teacher changes as the student trains: it cannot be cached (set teacher.trainable: false)"
        )
    terms = build_losses(recipe.losses)
    check_writable(out, "cache folder (--out)")
    seed_everything(recipe.seed)
    run_dir = _prepare_run_dir(recipe.model_copy(update={"name": f"{recipe.name}-cache"}), None)
    with Session(recipe, run_dir, console) as session:
        teacher, info = session.acquire_teacher(use_cache=False)
        student = session.build_student()
        for term in terms:  # which teacher layers the terms read, as they would find them online
            term.resolve(student, teacher.module)
        layers = list(dict.fromkeys(name for term in terms for name in term.teacher_taps))
        manifest = write_cache(
            session, teacher, session.teacher_entry(teacher, info), Path(out), topk, views, layers, feature_dtype
        )
    what = f"{manifest['format']}{'' if topk is None else f', top {topk}'}" + (
        f"; layers {', '.join(layers)} in {feature_dtype}" if layers else ""
    )
    console.print(
        f"cached {manifest['samples']:,} x {views} view(s) of training outputs of the teacher ({what}) "
        f"in {out}: {manifest['bytes_per_sample']:,.0f} bytes per sample. Train from it with teacher.cache={out}",
        markup=False,
    )
    return manifest
