"""``run(recipe) -> RunResult``: build everything, train, evaluate, write the run directory.

Stages, each resumable from its own ``last.pt``: the teacher (``teacher/``, when it is
trained), the distilled student (the run directory itself), and the same student
trained without distillation (``baseline/``) for an honest comparison.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.markup import escape

from kdforge import distributed
from kdforge._version import __version__
from kdforge.callbacks import Callback
from kdforge.config import Recipe
from kdforge.data.bundle import PER_TOKEN_TASKS
from kdforge.errors import KdforgeError
from kdforge.evaluate import teacher_agreement
from kdforge.export import TRANSFORMERS_FOLDER, save_model
from kdforge.family import families
from kdforge.files import check_writable, remove_stale_tmp, write_text
from kdforge.losses import build_losses
from kdforge.machine import deterministic, seed_everything, where_measured
from kdforge.pretrained import recording
from kdforge.report import model_card, plot_curves, summary_table, write_report, write_results
from kdforge.session import Session
from kdforge.teachers.cache import write_cache
from kdforge.teachers.teacher import Teacher


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

    @property
    def teacher_file(self) -> Path:
        """The teacher this run trained or fine-tuned, as a kdforge model file: another recipe distils from the same
        teacher with ``teacher: {source: checkpoint, path: <this>}`` (zoo teachers, not retrained, have none)."""
        return self.run_dir / "teacher" / "teacher.safetensors"


def run(
    recipe: Recipe,
    *,
    resume: str | Path | None = None,
    console: Console | None = None,
    callbacks: Sequence[Callback] = (),
    quiet: bool = False,
) -> RunResult:
    """Run a recipe end to end; with ``resume``, continue that run directory. ``callbacks`` join every training
    stage's own (e.g. a search that prunes a trial on its validation curve). ``quiet``: print nothing and draw
    no progress bars (notebooks, pipelines); the results come back in the :class:`RunResult` and the run
    directory as always."""
    if quiet:
        console = Console(quiet=True)
        recipe = recipe.model_copy(update={"log": recipe.log.model_copy(update={"progress": False})})
    try:
        with deterministic(recipe.train.deterministic), contextlib.ExitStack() as cleanup:
            return _run(recipe, resume, console, cleanup, callbacks)
    finally:
        # the run's models, optimisers and loaders refer to one another: freed now, not whenever the cyclic
        # collector next runs (a notebook's or a search's next run would otherwise find the device still holding them)
        gc.collect()


def _run(
    recipe: Recipe,
    resume: str | Path | None,
    console: Console | None,
    cleanup: contextlib.ExitStack,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    distributed.setup()  # several processes (torchrun): rank 0 writes, all train
    console = console or Console()
    if not distributed.is_main():
        console = Console(quiet=True)
    started = time.perf_counter()
    sources = cleanup.enter_context(recording())  # what was named by hub id or downloaded, as resolved
    terms = build_losses(recipe.losses)  # bad loss options fail before anything heavy is built
    run_dir = distributed.broadcast(_prepare_run_dir(recipe, resume) if distributed.is_main() else None)
    seed_everything(recipe.seed)
    session = cleanup.enter_context(Session(recipe, run_dir, console, callbacks))
    layout = "; channels-last" if session.memory_format == torch.channels_last else ""
    where = f"{recipe.name}: {session.data.describe()}; device {session.device}{layout}; run dir {run_dir}"
    console.print(f"[bold]kdforge[/] {escape(where)}")
    timings: dict[str, float] = {}

    for family in families():
        family.check_run(session)
    tick = time.perf_counter()
    teacher, teacher_info = session.acquire_teacher() if recipe.teacher is not None else (None, {})
    for family in families():
        family.prepare_data(session, teacher)
    if teacher is not None:
        timings["teacher_s"] = time.perf_counter() - tick
    results: dict[str, Any] = {
        "name": recipe.name,
        "dataset": session.data.name,
        "device": str(session.device),
        "seed": recipe.seed,
    }
    named = {"classes": session.data.class_names} if session.data.class_names else {}  # class index -> name
    results.update(named)

    tick = time.perf_counter()
    student, results["student"], student_history = session.train_student("distill", terms, run_dir, teacher)
    timings["distill_s"] = time.perf_counter() - tick
    if distributed.is_main():
        save_model(student, run_dir / "student", {"test": results["student"]["test"], "recipe": recipe.name, **named})
    histories = {"teacher": teacher_info.get("history", [])} if teacher is not None else {}
    histories["student + KD" if teacher is not None else "student"] = student_history
    if teacher is not None:  # an EMA teacher is measured as it ended
        results["teacher"] = session.teacher_entry(teacher, teacher_info)

    alone = recipe.train.baseline and teacher is not None  # without a teacher, the student was trained alone
    instead = (
        [found for family in families() if (found := family.baselines(session, student, results)) is not None]
        if alone
        else []
    )
    for found in instead:  # e.g. embeddings, which have no labels to learn alone from
        results.update(found)
    students = {"student": student}
    if alone and not instead:
        tick = time.perf_counter()
        students["student_alone"], results["student_alone"], histories["student alone"] = session.train_student(
            "baseline", [session.task_term()], run_dir / "baseline"
        )
        timings["baseline_s"] = time.perf_counter() - tick
    if (
        isinstance(teacher, Teacher)
        and session.data.task in ("classification", *PER_TOKEN_TASKS)
        and not getattr(teacher.module, "own_tokens", False)
    ):
        for role, model in students.items():  # fidelity: how closely each student follows the teacher
            results[role]["teacher_agreement"] = teacher_agreement(
                model, teacher, session.track(session.test, f"{role}: agreement with the teacher"),
                session.autocast(), per_token=session.data.task in PER_TOKEN_TASKS,
            )  # fmt: skip

    timings["total_s"] = time.perf_counter() - started
    results.update(timings=timings, kdforge_version=__version__, **({"sources": sources} if sources else {}))
    results["measured_on"] = where_measured()
    if distributed.is_main():
        write_results(run_dir, results)
        write_report(run_dir, results, plot_curves(run_dir, histories))
        card = functools.partial(model_card, results, recipe.to_yaml())
        write_text(run_dir / "README.md", card("kdforge"))  # the Hub's model card, beside student.safetensors
        if (transformers := run_dir / TRANSFORMERS_FOLDER).is_dir():  # the card the Hub shows for that folder
            write_text(transformers / "README.md", card("transformers"))
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
    while True:  # mkdir is the claim: two runs of one recipe started in the same second never share a folder
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
    write_text(run_dir / "config.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return run_dir


def load_run_recipe(run_dir: str | Path) -> Recipe:
    """The resolved recipe a run directory was made with."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise KdforgeError(f"'{run_dir}' is not a kdforge run directory (no config.yaml)")
    return Recipe.from_yaml(path)


def build_cache(
    recipe: Recipe,
    out: str | Path,
    topk: int | None = None,
    views: int = 1,
    feature_dtype: str = "float32",
    console: Console | None = None,
    logprob_bits: int = 16,
) -> dict[str, Any]:
    """``kdforge cache``: get the recipe's teacher (training it if needed), measure it, and
    store its outputs on the training split in ``out``: logits, and the outputs of the
    teacher layers the recipe's loss terms read."""
    console = console or Console()
    if recipe.teacher is None:
        raise KdforgeError("kdforge cache stores a teacher's outputs, and the recipe has no teacher section")
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
        classes = session.data.num_classes
        if topk is not None and topk > classes:
            raise KdforgeError(
                f"--topk {topk} is more than the {classes} classes (or tokens) the teacher scores on "
                f"{session.data.describe()}: give at most {classes}, or leave --topk out to keep every logit"
            )
        teacher, info = session.live_teacher()
        student = session.build_student()
        for term in terms:  # which teacher layers the terms read, as they would find them online
            term.resolve(student, teacher.module)
        layers = list(dict.fromkeys(name for term in terms for name in term.teacher_taps))
        manifest = write_cache(
            session,
            teacher,
            session.teacher_entry(teacher, info),
            Path(out),
            topk,
            views,
            layers,
            feature_dtype,
            batch_size=recipe.data.eval_batch_size,
            logprob_bits=logprob_bits,
        )
    per_token = f", {manifest['bytes_per_token']} bytes per token" if "bytes_per_token" in manifest else ""
    what = f"{manifest['format']}{'' if topk is None else f', top {topk}'}{per_token}" + (
        f"; layers {', '.join(layers)} in {feature_dtype}" if layers else ""
    )
    console.print(
        f"cached {manifest['samples']:,} x {views} view(s) of training outputs of the teacher ({what}) "
        f"in {out}: {manifest['bytes_per_sample']:,.0f} bytes per sample. Train from it with teacher.cache={out}",
        markup=False,
    )
    return manifest
