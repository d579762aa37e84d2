"""``kdforge tune RECIPE --trials N``: search a recipe's hyper-parameters with Optuna, on validation only.

The search space maps dotted recipe keys (the keys of overrides) to a range, ``{low, high[, log, step]}``, a log
scale around the recipe's value, ``{factor: f}``, or a choice, ``{choice: [...]}`` (``losses: {choice: [[...],
[...]]}`` chooses between methods). It comes from the recipe's ``tune.space``, from ``--space`` on the command line,
or, when neither gives one, from the defaults: the learning rate (``factor`` 5) and each loss term's own space
(:attr:`~kdforge.losses.terms.LossTerm.search_space`); the loss terms of a chosen list get theirs too.

Each trial is a run of the recipe with the trial's values, without the student-alone baseline, its objective the
distilled student's best *validation* score (test scores never choose or prune a trial; equal scores go to the lower
validation loss), reported epoch by epoch so that a trial whose curve falls below the others' is pruned (median, or
successive halving). The study lives in a storage (a journal file in the tune directory by default, or any RDB URL):
trials of several processes (``--jobs``, with threads per process so that their sum is the core count) or machines (the
same ``--storage``) share it, and a study that is interrupted resumes where it stopped (the trials its processes left
running marked failed); ``--trials`` counts its finished trials. At the end: ``tune.md`` (the best trial, every
trial, parameter importances), Optuna's plots as PNG, ``best.yaml``, and the best recipe trained over ``--seeds`` seeds
beside the same student trained alone (a sweep).

Here the command itself, its processes and its progress bar; the search space in ``space``, a trial and the study's
storage in ``trials``, what the tune leaves in ``reporting``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.markup import escape

from kdforge.config import Recipe
from kdforge.config.recipe import with_teacher_optim_pinned
from kdforge.errors import KdforgeError
from kdforge.losses import build_losses
from kdforge.processes import exit_on_sigterm
from kdforge.teachers.sources import fitted, teacher_cache_key
from kdforge.tuner.reporting import TuneResult, report
from kdforge.tuner.space import Space, default_space, parse_space, recipe_params, recipe_space, suggest
from kdforge.tuner.trials import (
    FAILURES_IN_A_ROW,
    RECIPE_ITSELF,
    RUN_BY,
    PruneOnValidation,
    fail_abandoned,
    failing,
    finished,
    load_study,
    make_pruner,
    open_storage,
    trial_recipe,
    work,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "RECIPE_ITSELF",
    "RUN_BY",
    "PruneOnValidation",
    "TuneResult",
    "default_space",
    "load_study",
    "open_storage",
    "parse_space",
    "recipe_params",
    "recipe_space",
    "suggest",
    "tune",
]


def tune(
    recipe: Recipe,
    trials: int,
    *,
    space: Space | None = None,
    jobs: int = 1,
    storage: str | None = None,
    pruner: str = "median",
    seeds: int = 3,
    trial_seeds: int = 1,
    console: Console | None = None,
) -> TuneResult:
    """Search ``recipe``'s space for ``trials`` finished trials, each scored by the mean best validation score over
    ``trial_seeds`` seeds; report, and train the best recipe over ``seeds`` seeds beside the student alone
    (``seeds`` 0: no final training)."""
    console = console or Console()
    if trials < 1 or jobs < 1 or seeds < 0 or trial_seeds < 1:
        raise KdforgeError("tune needs --trials >= 1, --jobs >= 1, --seeds >= 0 and --trial-seeds >= 1")
    make_pruner(pruner, 0)  # a bad name fails before anything runs
    searched = recipe_space(recipe, space or {})
    # the teacher a trial trains fits with the recipe's optimiser, whatever the trial's: one teacher, trained once
    base = with_teacher_optim_pinned(recipe).to_dict()
    teacher_moves = suggest_check(base, searched)
    tune_dir = Path(recipe.log.dir) / f"{recipe.name}-tune"
    if storage is None:  # the default journal file lives in the tune folder
        tune_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or str(tune_dir / "study.journal")
    cores = os.cpu_count() or 1
    # trials before the pruner judges, and epochs of each (a quarter of the budget)
    startup = (max(2, min(5, trials // 4)), max(1, (recipe.train.epochs or 4) // 4))
    job: dict[str, Any] = {
        "name": recipe.name,
        "storage": storage,
        "seed": recipe.seed,
        "pruner": pruner,
        "startup": list(startup),
        "trials": trials,
        "space": {k: v.model_dump() for k, v in searched.items()},
        "base": base,
        "tune_dir": str(tune_dir),
        "trial_seeds": trial_seeds,
    }
    study = load_study(recipe.name, storage, recipe.seed, pruner, startup)  # a bad --storage stops here
    tune_dir.mkdir(parents=True, exist_ok=True)  # ... before any folder is made
    done = finished(study)
    console.print(
        f"[bold]kdforge tune[/] {escape(recipe.name)}: {len(searched)} parameters, {trials} trials "
        f"({done} finished already), {jobs} process(es) × {max(1, cores // jobs)} threads; storage {escape(storage)}"
    )
    if teacher_moves:
        console.print(
            "the searched values change how the teacher is trained (its data or training settings): each trial "
            "trains its own, and the gains it finds are partly the teacher's",
            markup=False,
        )
    abandoned = fail_abandoned(study)
    if abandoned:
        console.print(
            f"trial(s) {', '.join(str(t.number) for t in abandoned)} of an interrupted tune marked failed (their "
            "process is gone); new trials take their place",
            markup=False,
        )
    recipe_lost = any(t.user_attrs.get(RECIPE_ITSELF) for t in abandoned)
    if not study.trials or recipe_lost:  # a study starts from the recipe as written, where the space holds it
        start = recipe_params(base, searched)
        if start is not None:
            study.enqueue_trial(start, user_attrs={RECIPE_ITSELF: True})
        console.print(
            ("the recipe as written runs first" if recipe_lost else "trial 0 is the recipe as written")
            if start is not None
            else "the recipe's own values lie outside the space: every trial is drawn from it",
            markup=False,
        )
    with _progress(console, trials, done) as progress:
        if done == 0 and jobs > 1:  # the first trial alone, so that the processes share its trained teacher
            work({**job, "trials": 1, "threads": torch.get_num_threads(), "worker": 0, "progress": progress})
        if jobs == 1:
            work({**job, "threads": torch.get_num_threads(), "worker": 0, "progress": progress})
        else:
            _parallel(job, jobs, max(1, cores // jobs), progress, storage)
    study = load_study(recipe.name, storage, recipe.seed, pruner, startup)
    if finished(study) < trials and (error := failing(study)) is not None:
        raise KdforgeError(
            f"tune stopped: the last {FAILURES_IN_A_ROW} trials failed, the last one with: {error}. Change the search "
            "space (or the recipe), then run the command again: the study goes on"
        )
    return report(study, recipe, searched, tune_dir, seeds, console)


def suggest_check(base: dict[str, Any], space: Space) -> bool:
    """Every searched key exists in the recipe, and a trial's recipe is valid, its loss terms built, at both ends of
    the space (the lowest value of each range with the first of each choice, the highest with the last), before any
    trial runs: a space that can only give recipes that fail is one message, not a study of failed trials. True when
    the two ends train different teachers."""
    teachers = set()
    for end in (0, -1):
        raw = suggest(_EndValues(end), base, space)  # type: ignore[arg-type]  # a key the recipe lacks: its message
        try:
            recipe = trial_recipe(raw, Path("."), 0)
            build_losses(recipe.losses)
        except KdforgeError as err:
            side = "lowest value of each range, first choice" if end == 0 else "highest value, last choice"
            raise KdforgeError(f"tune: the search space gives recipes that fail ({side}): {err}") from None
        fits = fitted(recipe.teacher) if recipe.teacher is not None else []
        teachers.add(tuple(teacher_cache_key(recipe, cfg) for cfg in fits))
    return len(teachers) > 1


class _EndValues:
    """A stand-in for a trial that suggests one end of every range and choice (``end`` 0: the lowest and the
    first; -1: the highest and the last)."""

    def __init__(self, end: int):
        self.end = end

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return (low, high)[self.end]

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return (low, high)[self.end]

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[self.end]


def _parallel(job: dict[str, Any], jobs: int, threads: int, progress: Any, storage: str) -> None:
    """``jobs`` processes share the study through its storage; this one follows their progress."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=work, args=({**job, "threads": threads, "worker": w},)) for w in range(jobs)]
    with exit_on_sigterm():  # a SIGTERM unwinds through the finally below too
        for worker in workers:
            worker.start()
        try:
            while any(worker.is_alive() for worker in workers):
                for worker in workers:
                    worker.join(timeout=2.0)
                progress(load_study(job["name"], storage, job["seed"], job["pruner"], tuple(job["startup"])), None)
        finally:
            for worker in (w for w in workers if w.is_alive()):  # interrupted: no trial process outlives the command
                worker.terminate()
    if failed := [w.exitcode for w in workers if w.exitcode]:
        raise KdforgeError(f"tune: {len(failed)} of {jobs} trial processes ended with an error (exit codes {failed})")


class _progress:
    """A progress bar over finished trials (with ETA), updated as the study grows."""

    def __init__(self, console: Console, total: int, done: int):
        import rich.progress

        self.bar = rich.progress.Progress(
            *rich.progress.Progress.get_default_columns(), rich.progress.TextColumn("{task.fields[best]}"),
            console=console, disable=not console.is_terminal,
        )  # fmt: skip
        self.task = self.bar.add_task("trials", total=total, completed=done, best="")

    def __enter__(self) -> Any:
        self.bar.start()

        def update(study: optuna.Study, _: Any) -> None:
            values = [t.value for t in study.get_trials(deepcopy=False) if t.value is not None]
            self.bar.update(self.task, completed=finished(study), best=f"best {max(values):.4f}" if values else "")

        return update

    def __exit__(self, *_: Any) -> None:
        self.bar.stop()
