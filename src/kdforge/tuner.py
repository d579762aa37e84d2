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
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import multiprocessing
import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kdforge._recipe_yaml import apply_override
from kdforge.callbacks import Callback
from kdforge.config import Recipe
from kdforge.config.tune import ParamSpec
from kdforge.errors import ConfigError, KdforgeError
from kdforge.evaluate import selection_value
from kdforge.files import save_figure, write_text
from kdforge.processes import exit_on_sigterm
from kdforge.registry import LOSSES

if TYPE_CHECKING:
    import optuna

    from kdforge.trainer import Trainer

Space = dict[str, ParamSpec]
DEFAULT_LR_FACTOR = 5.0
RECIPE_ITSELF = "recipe_as_written"  # the user attribute of the trial that runs the recipe's own values
RUN_BY = "run_by"  # the user attribute naming the process that runs a trial: "host:pid"
PRUNERS = ("median", "halving", "none")


@dataclass
class TuneResult:
    tune_dir: Path
    best_params: dict[str, Any]
    best_value: float
    best_recipe: Recipe
    sweep: dict[str, Any] | None


# ------------------------------------------------------------------ the search space


def parse_space(texts: Sequence[str]) -> Space:
    """``--space`` arguments, ``key={low: 1, high: 8}`` each, as a space."""
    space = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--space '{text}' must look like key.path={{low: 1, high: 8}}")
        space[key.strip()] = _spec(yaml.safe_load(value), f"--space '{text}'")
    return space


def _spec(raw: Any, where: str) -> ParamSpec:
    try:
        return ParamSpec.model_validate(raw)
    except Exception as error:  # pydantic's message, named by where the spec came from
        raise ConfigError(f"{where}: {error}") from None


def default_space(raw: dict[str, Any], prefix: str = "") -> Space:
    """The learning rate's and every loss term's own search space, for the recipe ``raw``."""
    space = {f"{prefix}optim.lr": ParamSpec(factor=DEFAULT_LR_FACTOR)} if not prefix else {}
    for i, term in enumerate(raw["losses"]):
        for option, spec in getattr(LOSSES.get(term["name"]), "search_space", {}).items():
            space[f"{prefix}losses.{i}.{option}"] = ParamSpec.model_validate(spec)
    return space


def recipe_space(recipe: Recipe, extra: Space) -> Space:
    """The space searched: ``--space`` over the recipe's ``tune.space``; the defaults when neither has one."""
    declared = {**(recipe.tune.space if recipe.tune else {}), **extra}
    return declared or default_space(recipe.to_dict())


def _current(raw: dict[str, Any], key: str) -> Any:
    """The recipe's value at ``key`` (a loss option it does not set: the term's default)."""
    target: Any = raw
    parts = key.split(".")
    for part in parts:
        if isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        elif isinstance(target, dict) and part in target:
            target = target[part]
        else:
            break
    else:
        return target
    if len(parts) == 3 and parts[0] == "losses" and parts[1].isdigit():  # an option left at the term's default
        if parts[2] == "weight":
            return 1.0
        defaults = _term_defaults(raw["losses"][int(parts[1])]["name"])
        if parts[2] in defaults:
            return defaults[parts[2]]
    raise ConfigError(f"tune: the search space names '{key}', which the recipe does not have")


def _label(choice: Any) -> str:
    """A short name for a choice: a list of loss terms by their names (ce+kd), anything else as JSON."""
    if isinstance(choice, list) and all(isinstance(t, dict) and "name" in t for t in choice):
        return "+".join(t["name"] for t in choice)
    return json.dumps(choice, sort_keys=True)


def suggest(trial: optuna.Trial | optuna.trial.FixedTrial, raw: dict[str, Any], space: Space) -> dict[str, Any]:
    """The trial's recipe (a dict) with every searched key set to the trial's value."""
    raw = copy.deepcopy(raw)
    for key, spec in space.items():
        name = key.split(":", 1)[-1]  # a chosen loss list's own options are named "<label>:losses.i.option"
        current = _current(raw, name)
        if isinstance(current, dict) and spec.choice is None:
            continue  # a schedule or a learnable temperature: left as the recipe has it
        value = _value(trial, key, spec, current)
        apply_override(raw, f"{name}={json.dumps(value)}")
        if spec.choice is not None and name == "losses":
            prefix = f"{_label(value)}:"
            chosen = {k: v for k, v in default_space(raw, prefix).items() if k not in space}
            for option_key, option_spec in chosen.items():
                option = option_key.split(":", 1)[1]
                current = _current(raw, option)
                if not isinstance(current, dict):
                    apply_override(raw, f"{option}={json.dumps(_value(trial, option_key, option_spec, current))}")
    return raw


def _labels(choices: list[Any]) -> list[str]:
    """The names Optuna knows a choice's values by (numbered where two would read the same)."""
    labels = [_label(c) for c in choices]
    return labels if len(set(labels)) == len(labels) else [f"{i}: {label}" for i, label in enumerate(labels)]


def _value(trial: optuna.Trial | optuna.trial.FixedTrial, key: str, spec: ParamSpec, current: Any) -> Any:
    if spec.choice is not None:
        labels = _labels(spec.choice)
        return spec.choice[labels.index(trial.suggest_categorical(key, labels))]
    if spec.factor is not None:
        if not isinstance(current, (int, float)) or current <= 0:
            raise ConfigError(
                f"tune: '{key}' has {{factor}}, which needs a positive number in the recipe, not {current}"
            )
        return trial.suggest_float(key, current / spec.factor, current * spec.factor, log=True)
    assert spec.low is not None and spec.high is not None
    if spec.integer:
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)


def recipe_params(raw: dict[str, Any], space: Space) -> dict[str, Any] | None:
    """The trial values that give back the recipe ``raw`` as written, or None when one of its searched values lies
    outside the space (a range that leaves it out, a choice that does not list it). The study's first trial has
    them: the search starts from the user's recipe, and its best trial is never one that scored below it."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        current = _current(raw, key.split(":", 1)[-1])
        if spec.choice is not None:
            chosen = next((i for i, c in enumerate(spec.choice) if _same_choice(raw, key, c, current)), None)
            if chosen is None:
                return None
            params[key] = _labels(spec.choice)[chosen]
            if key == "losses":  # the chosen terms' own options, as suggest() adds them
                options = default_space(raw, f"{_label(spec.choice[chosen])}:")
                found = recipe_params(raw, {k: v for k, v in options.items() if k not in space})
                if found is None:
                    return None
                params.update(found)
        elif isinstance(current, dict):  # a schedule or a learnable temperature: suggest() leaves it as it is
            continue
        elif _within(spec, current):
            params[key] = current
        else:
            return None
    return params


def _same_choice(raw: dict[str, Any], key: str, choice: Any, current: Any) -> bool:
    """Whether ``choice`` is the recipe's value at ``key``; loss lists compared with every option spelled out."""
    if key != "losses" or not isinstance(choice, list):
        return bool(choice == current)
    try:
        chosen = Recipe.from_dict({**raw, "losses": choice}).to_dict()["losses"]
    except ConfigError:
        return False
    return _spelled_out(chosen) == _spelled_out(current)


def _spelled_out(terms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Loss terms with the options they leave out at the terms' defaults."""
    return [{**_term_defaults(term["name"]), **term} for term in terms]


def _term_defaults(name: str) -> dict[str, Any]:
    """A loss term's options that have a default, with it."""
    parameters = inspect.signature(LOSSES.get(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _within(spec: ParamSpec, value: Any) -> bool:
    """Whether a number lies in a range (on its grid, if it has a step), or may be scaled by a factor."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if spec.factor is not None:
        return value > 0
    assert spec.low is not None and spec.high is not None
    if not spec.low <= value <= spec.high or (spec.integer and value != int(value)):
        return False
    return spec.step is None or math.isclose((value - spec.low) / spec.step, round((value - spec.low) / spec.step))


# ------------------------------------------------------------------ trials


class PruneOnValidation(Callback):
    """Reports the distilled student's validation score at each validation (the Optuna step is the epoch, or the
    optimiser step when validating by steps); stops the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial, report: bool = True):
        self.trial, self.best, self.report = trial, -math.inf, report
        self.reported_step = -1  # by steps: the last optimiser step reported

    def on_validation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._take(trainer, record["val"], record["step"], f"step {record['step']}")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if "val" not in record:  # an epoch not validated
            return
        if "validations" in record:  # by steps: only a validation at the epoch's end is new here
            last = record["validations"][-1]
            if last["step"] != self.reported_step:
                self._take(trainer, last["val"], last["step"], f"step {last['step']}")
            return
        self._take(trainer, record["val"], record["epoch"], f"epoch {record['epoch']}")

    def _take(self, trainer: Trainer, val: dict[str, float], step: int, when: str) -> None:
        import optuna

        if trainer.stage != "distill":  # the teacher's or the baseline's fit
            return
        value = selection_value(val)
        self.best, self.reported_step = max(self.best, value), step
        if not self.report:
            return
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {when} (val {value:.4f})")


def trial_recipe(raw: dict[str, Any], tune_dir: Path, number: int) -> Recipe:
    """A trial's run: the distilled student only, quietly, in the tune directory's ``trials/``."""
    raw = copy.deepcopy(raw)
    raw["name"] = f"{raw['name']}-trial{number}"
    raw.setdefault("train", {})["baseline"] = False
    raw.setdefault("log", {}).update(dir=str(tune_dir / "trials"), progress=False)
    return Recipe.from_dict(raw)


def objective(trial: optuna.Trial, base: dict[str, Any], space: Space, tune_dir: Path, trial_seeds: int = 1) -> float:
    """The mean over ``trial_seeds`` seeds (each its own split: a small validation split is a noisy judge) of the
    distilled student's best validation score; the first seed's curve is the one the pruner watches."""
    from kdforge.runner import run

    trial.set_user_attr(RUN_BY, f"{socket.gethostname()}:{os.getpid()}")
    recipe = trial_recipe(suggest(trial, base, space), tune_dir, trial.number)
    bests, run_dirs = [], []
    for offset in range(trial_seeds):
        seeded = recipe.model_copy(update={"seed": recipe.seed + offset, "name": f"{recipe.name}-seed{offset}"})
        reporter = PruneOnValidation(trial, report=offset == 0)
        result = run(seeded if trial_seeds > 1 else recipe, console=Console(quiet=True), callbacks=[reporter])
        bests.append(reporter.best)
        run_dirs.append(str(result.run_dir))
    trial.set_user_attr("run_dir", run_dirs[0])
    trial.set_user_attr("run_dirs", run_dirs)
    trial.set_user_attr("seed_values", bests)
    trial.set_user_attr("best_epoch", result.results["student"].get("best_epoch"))
    trial.set_user_attr("threads", torch.get_num_threads())
    return sum(bests) / len(bests)


def open_storage(spec: str) -> Any:
    """An RDB URL as it is (sqlite:///..., postgresql://...); a file path: an Optuna journal file there."""
    import optuna

    if "://" in spec:
        return spec
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(spec))


def make_pruner(kind: str, startup_trials: int, warmup_epochs: int = 1) -> optuna.pruners.BasePruner:
    """``median``: a trial stops when, after ``warmup_epochs``, its validation score is below the median of the
    earlier trials' at that epoch (once ``startup_trials`` have finished); ``halving``: successive halving."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise KdforgeError(f"--pruner is one of {', '.join(PRUNERS)}, not '{kind}'")


def load_study(name: str, storage: str, seed: int, pruner: str, startup: tuple[int, int]) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name,
        storage=open_storage(storage),
        direction="maximize",  # every score is higher-is-better (a perplexity enters negated)
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(pruner, *startup),
        load_if_exists=True,
    )


def finished(study: optuna.Study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def fail_abandoned(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Mark failed the trials still running in the storage whose process, on this machine, is gone (an interrupted
    tune): otherwise they would stay "running" in the study for ever. Trials of other machines are left alone."""
    import optuna

    abandoned = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        host, _, pid = str(trial.user_attrs.get(RUN_BY, "")).rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            abandoned.append(trial)
    return abandoned


def _alive(pid: int) -> bool:
    if os.name == "nt":  # there os.kill would end the process rather than ask after it
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def work(job: dict[str, Any]) -> None:
    """One process's share of the study: trials until it has ``trials`` finished ones (in every process together)."""
    import optuna
    from optuna.study import MaxTrialsCallback

    torch.set_num_threads(job["threads"])
    space = {k: ParamSpec.model_validate(v) for k, v in job["space"].items()}
    study = load_study(job["name"], job["storage"], job["seed"] + job["worker"], job["pruner"], tuple(job["startup"]))
    if finished(study) >= job["trials"]:
        return
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(
        lambda trial: objective(trial, job["base"], space, Path(job["tune_dir"]), job.get("trial_seeds", 1)),
        callbacks=[MaxTrialsCallback(job["trials"], states=states), job.get("progress") or (lambda s, t: None)],
        catch=(KdforgeError,),  # a trial that fails (e.g. its loss turns NaN) is recorded as failed; the study goes on
    )


# ------------------------------------------------------------------ the command


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
    tune_dir = Path(recipe.log.dir) / f"{recipe.name}-tune"
    tune_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or str(tune_dir / "study.journal")
    base = recipe.to_dict()
    suggest_check(base, searched)
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
    study = load_study(recipe.name, storage, recipe.seed, pruner, startup)
    done = finished(study)
    console.print(
        f"[bold]kdforge tune[/] {escape(recipe.name)}: {len(searched)} parameters, {trials} trials "
        f"({done} finished already), {jobs} process(es) × {max(1, cores // jobs)} threads; storage {escape(storage)}"
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
    return report(study, recipe, searched, tune_dir, seeds, console)


def suggest_check(base: dict[str, Any], space: Space) -> None:
    """Every searched key exists in the recipe, and a trial's recipe is valid (with the lowest value of each range
    and the first of each choice), before any trial runs."""
    trial_recipe(suggest(_FirstValues(), base, space), Path("."), 0)  # type: ignore[arg-type]


class _FirstValues:
    """A stand-in for a trial that suggests the lowest value of every range and the first of every choice."""

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return low

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return low

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[0]


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


# ------------------------------------------------------------------ the report


def report(
    study: optuna.Study, recipe: Recipe, space: Space, tune_dir: Path, seeds: int, console: Console
) -> TuneResult:
    """tune.md, the plots, best.yaml, and the best recipe over ``seeds`` seeds."""
    import optuna

    from kdforge.sweeper import sweep

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise KdforgeError(f"tune: no trial of study '{study.study_name}' finished; see {tune_dir / 'trials'}")
    best = study.best_trial
    best_raw = suggest(optuna.trial.FixedTrial(best.params), recipe.to_dict(), space)
    best_recipe = Recipe.from_dict(best_raw)
    write_text(tune_dir / "best.yaml", best_recipe.to_yaml())
    importances = _importances(study)
    plots = _plots(study, tune_dir / "plots", importances)
    summary = None
    if seeds:
        console.rule(f"[bold]the best recipe over {seeds} seeds, beside the student alone")
        final = best_recipe.model_copy(
            update={
                "train": best_recipe.train.model_copy(update={"baseline": True}),
                "log": best_recipe.log.model_copy(update={"dir": str(tune_dir)}),
            }
        )
        summary = sweep(final, seeds, recipe.seed, console).summary
    write_text(tune_dir / "tune.md", tune_markdown(study, recipe, best, importances, plots, summary))
    console.print(tune_table(study, best))
    console.print(f"tune directory: [bold]{escape(str(tune_dir))}[/] (tune.md, best.yaml, plots/, trials/)")
    return TuneResult(tune_dir, best.params, float(best.value or 0.0), best_recipe, summary)


def _importances(study: optuna.Study) -> dict[str, float]:
    import optuna

    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # fewer than two finished trials, or one value everywhere
        return {}


def _plots(study: optuna.Study, folder: Path, importances: dict[str, float]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as views

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {  # plot, and the axes' names in our words (x, y)
        "history": (views.plot_optimization_history, ("trial", "best validation score")),
        "intermediate": (views.plot_intermediate_values, ("epoch", "validation score")),
    }
    if importances:
        wanted["importances"] = (views.plot_param_importances, ("importance", "parameter"))
    made = []
    for name, (plot, (x, y)) in wanted.items():
        axes = plot(study)
        axes.set_xlabel(x)
        axes.set_ylabel(y)
        figure = axes.get_figure()
        save_figure(figure, folder / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(figure)  # type: ignore[arg-type]
        made.append(f"plots/{name}.png")
    return made


def _trial_rows(study: optuna.Study) -> list[list[str]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        epochs = max(t.intermediate_values) if t.intermediate_values else "-"
        params = ", ".join(f"{k} = {_shown(v)}" for k, v in t.params.items())
        value = f"{t.value:.4f}" if t.value is not None else "-"
        number = f"{t.number} (the recipe)" if t.user_attrs.get(RECIPE_ITSELF) else str(t.number)
        rows.append([number, t.state.name.lower(), value, str(epochs), params])
    return rows


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tune_markdown(
    study: optuna.Study,
    recipe: Recipe,
    best: optuna.trial.FrozenTrial,
    importances: dict[str, float],
    plots: list[str],
    summary: dict[str, Any] | None,
) -> str:
    lines = [
        f"# kdforge tune: {recipe.name}",
        "",
        "Objective: the distilled student's best validation score (higher is better; a perplexity enters negated). "
        "Only validation scores chose and pruned the trials; the test figures come from the final runs over seeds.",
        "",
        f"**Best trial: {best.number}**"
        + (" (the recipe as written: no trial scored higher)" if best.user_attrs.get(RECIPE_ITSELF) else "")
        + f", validation {best.value:.4f}, "
        + ", ".join(f"`{k}` = {_shown(v)}" for k, v in best.params.items())
        + " (recipe: `best.yaml`).",
        "",
    ]
    if summary is not None:
        from kdforge.sweeper import sweep_report

        lines += ["## The best recipe over seeds (test split)", "", sweep_report(summary).split("\n", 2)[-1], ""]
    if importances:
        lines += ["## Parameter importances", "", "| parameter | importance |", "|---|---:|"]
        lines += [f"| `{k}` | {v:.3f} |" for k, v in importances.items()]
        lines.append("")
    lines += ["## Trials", "", "| trial | state | validation | epochs | parameters |", "|---:|---|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _trial_rows(study)]
    lines += ["", *[f"![{Path(p).stem}]({p})" for p in plots], ""]
    return "\n".join(lines)


def tune_table(study: optuna.Study, best: optuna.trial.FrozenTrial) -> Table:
    table = Table(title=f"kdforge tune: {escape(study.study_name)} (best: trial {best.number})")
    for column in ("trial", "state", "validation", "epochs", "parameters"):
        table.add_column(column, justify="right" if column in ("trial", "validation", "epochs") else "left")
    for row in _trial_rows(study):
        table.add_row(*map(escape, row), style="bold" if row[0].partition(" ")[0] == str(best.number) else None)
    return table
