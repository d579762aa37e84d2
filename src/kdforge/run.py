"""``run(recipe) -> RunResult``: build everything, train, evaluate, write the run directory.

Stages, each resumable from its own ``last.pt``: the teacher (``teacher/``, when it is
trained), the distilled student (the run directory itself), and the same student
trained without distillation (``baseline/``) for an honest comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

from kdforge.bench import count_params, latency_ms
from kdforge.callbacks import Callback, ConsoleProgress, JsonlLogger
from kdforge.config import Recipe
from kdforge.data import DataBundle, build_dataset, example_inputs, make_loader
from kdforge.distiller import Distiller
from kdforge.errors import KdforgeError
from kdforge.evaluate import evaluate
from kdforge.export import save_model
from kdforge.losses import LossTerm, build_loss, build_losses
from kdforge.models import build_model
from kdforge.report import plot_curves, summary_table, write_report, write_results
from kdforge.teachers import TEACHER_SOURCES, Teacher
from kdforge.trainer import Trainer, autocast_for, resolve_device, seed_everything


class RunInterrupted(KdforgeError):
    """The run was stopped (Ctrl-C); ``last.pt`` was saved and the run can resume."""

    def __init__(self, run_dir: Path, stage: str):
        self.run_dir = run_dir
        super().__init__(f"interrupted during {stage}; progress saved in {run_dir}. Resume with: kdforge train --resume {run_dir}")


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


class _Session:
    """What the stages of one run share: recipe, data, loaders, device, callbacks."""

    def __init__(self, recipe: Recipe, run_dir: Path, console: Console):
        self.recipe, self.run_dir, self.console = recipe, run_dir, console
        self.device = resolve_device(recipe.train.device)
        self.data: DataBundle = build_dataset(recipe.data.name, seed=recipe.seed, val_fraction=recipe.data.val_fraction, test_fraction=recipe.data.test_fraction, **recipe.data.options)
        batches = lambda split, size, shuffle: make_loader(split, size, shuffle=shuffle, seed=recipe.seed, device=self.device)  # noqa: E731
        self.train = batches(self.data.train, recipe.data.batch_size, True)
        self.val = batches(self.data.val, recipe.data.eval_batch_size, False)
        self.test = batches(self.data.test, recipe.data.eval_batch_size, False)
        self.example = example_inputs(self.train)
        self.autocast = lambda: autocast_for(recipe.train.amp, self.device)

    def callbacks(self) -> list[Callback]:
        callbacks: list[Callback] = [JsonlLogger(self.run_dir / "metrics.jsonl", self.recipe.log.every_steps)]
        if self.recipe.log.progress:
            callbacks.append(ConsoleProgress(self.console))
        return callbacks

    def entry(self, model: torch.nn.Module, name: str, test: dict[str, float], val_best: dict[str, float], **extra: Any) -> dict[str, Any]:
        """One row of results.json: what the model is, how good, how big, how fast."""
        return {"model": name, "params": count_params(model), "test": test, "val_best": val_best, "latency_ms": latency_ms(model, self.example), **extra}

    def train_student(self, stage: str, terms: list[LossTerm], teacher: Teacher | None, checkpoint_dir: Path) -> tuple[torch.nn.Module, dict[str, Any], list[dict[str, Any]]]:
        cfg = self.recipe.student.model
        torch.manual_seed(self.recipe.seed)  # the distilled and the lone student start from the same weights
        student = build_model(cfg.name, input_shape=self.data.input_shape, num_classes=self.data.num_classes, **cfg.options).to(self.device)
        distiller = Distiller(student, teacher, terms, self.example)
        trainer = Trainer(distiller, self.recipe.optim, self.recipe.train, steps_per_epoch=len(self.train), checkpoint_dir=checkpoint_dir, callbacks=self.callbacks(), stage=stage)
        result = trainer.fit(self.train, self.val, resume=True)
        if result.interrupted:
            raise RunInterrupted(self.run_dir, stage)
        best = trainer.load_best()
        entry = self.entry(student, cfg.name, trainer.evaluate(self.test), best["val"], best_epoch=best["epoch"])
        return student, entry, result.history


def run(recipe: Recipe, *, resume: str | Path | None = None, console: Console | None = None) -> RunResult:
    """Run a recipe end to end; with ``resume``, continue that run directory."""
    console = console or Console()
    started = time.perf_counter()
    terms = build_losses(recipe.losses)  # bad loss options fail before anything heavy is built
    run_dir = _prepare_run_dir(recipe, resume)
    seed_everything(recipe.seed)
    session = _Session(recipe, run_dir, console)
    console.print(f"[bold]kdforge[/] {recipe.name}: {session.data.describe()}; device {session.device}; run dir {run_dir}")
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    teacher_module, teacher_info = TEACHER_SOURCES.get(recipe.teacher.source)(recipe, session.data, run_dir, session.device, session.callbacks())
    teacher = Teacher(teacher_module)
    timings["teacher_s"] = time.perf_counter() - tick
    teacher_test = evaluate(teacher, session.test, session.autocast())
    teacher_val = teacher_info.get("val_best") or evaluate(teacher, session.val, session.autocast())
    teacher_name = teacher_module.kdforge_spec["name"] if hasattr(teacher_module, "kdforge_spec") else type(teacher_module).__name__
    histories = {"teacher": teacher_info.get("history", [])}
    results: dict[str, Any] = {
        "name": recipe.name,
        "dataset": session.data.name,
        "device": str(session.device),
        "seed": recipe.seed,
        "teacher": session.entry(teacher_module, teacher_name, teacher_test, teacher_val, source=recipe.teacher.source, **{k: v for k, v in teacher_info.items() if k not in ("history", "val_best")}),
    }

    tick = time.perf_counter()
    student, results["student"], histories["student + KD"] = session.train_student("distill", terms, teacher, run_dir)
    timings["distill_s"] = time.perf_counter() - tick
    save_model(student, run_dir / "student", {"test": results["student"]["test"], "recipe": recipe.name})

    if recipe.train.baseline:
        tick = time.perf_counter()
        ce = next((c for c in recipe.losses if c.name == "ce"), None)
        baseline_terms = [build_loss({"name": "ce", **(ce.options if ce else {})})]
        _, results["student_alone"], histories["student alone"] = session.train_student("baseline", baseline_terms, None, run_dir / "baseline")
        timings["baseline_s"] = time.perf_counter() - tick

    timings["total_s"] = time.perf_counter() - started
    from kdforge import __version__

    results.update(timings=timings, kdforge_version=__version__)
    write_results(run_dir, results)
    plots = plot_curves(run_dir, histories, teacher_test["accuracy"])
    write_report(run_dir, results, plots)
    console.print(summary_table(results))
    console.print(f"run directory: [bold]{run_dir}[/] (report.md, results.json, student.safetensors, plots/)")
    return RunResult(run_dir, results)


def _prepare_run_dir(recipe: Recipe, resume: str | Path | None) -> Path:
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise KdforgeError(f"cannot resume '{run_dir}': it has no config.yaml (is it a kdforge run directory?)")
        return run_dir
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(recipe.log.dir) / f"{recipe.name}-{stamp}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return run_dir


def load_run_recipe(run_dir: str | Path) -> Recipe:
    """The resolved recipe a run directory was made with."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise KdforgeError(f"'{run_dir}' is not a kdforge run directory (no config.yaml)")
    return Recipe.from_yaml(path)
