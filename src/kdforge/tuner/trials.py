"""One trial of ``kdforge tune`` (a quiet run of the recipe with the trial's values, pruned on validation), and the
study the trials of every process share through its storage."""

from __future__ import annotations

import copy
import math
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console

from kdforge.callbacks import Callback
from kdforge.config import Recipe
from kdforge.config.tune import ParamSpec
from kdforge.errors import KdforgeError
from kdforge.evaluate import selection_value
from kdforge.tuner.space import Space, suggest

if TYPE_CHECKING:
    import optuna

    from kdforge.trainer import Trainer


RECIPE_ITSELF = "recipe_as_written"  # the user attribute of the trial that runs the recipe's own values
RUN_BY = "run_by"  # the user attribute naming the process that runs a trial: "host:pid"
PRUNERS = ("median", "halving", "none")


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
        try:
            result = run(seeded if trial_seeds > 1 else recipe, console=Console(quiet=True), callbacks=[reporter])
        except KdforgeError as err:  # the study goes on; the error stays with the trial, for the report
            trial.set_user_attr(ERROR, str(err))
            raise
        bests.append(reporter.best)
        run_dirs.append(str(result.run_dir))
    trial.set_user_attr("run_dir", run_dirs[0])
    trial.set_user_attr("run_dirs", run_dirs)
    trial.set_user_attr("seed_values", bests)
    trial.set_user_attr("best_epoch", result.results["student"].get("best_epoch"))
    trial.set_user_attr("threads", torch.get_num_threads())
    return sum(bests) / len(bests)


ERROR = "error"  # a failed trial's message
FAILURES_IN_A_ROW = 5  # failed trials in a row that stop a study: then something in every recipe it draws is wrong


def failing(study: optuna.Study) -> str | None:
    """The last trial's error when the study's last :data:`FAILURES_IN_A_ROW` trials all failed, else None."""
    import optuna

    recent = study.get_trials(deepcopy=False)[-FAILURES_IN_A_ROW:]
    if len(recent) < FAILURES_IN_A_ROW or any(t.state != optuna.trial.TrialState.FAIL for t in recent):
        return None
    return str(recent[-1].user_attrs.get(ERROR, "see the trial runs' folders"))


def open_storage(spec: str) -> Any:
    """The study's storage: an RDB URL (sqlite:///..., postgresql://...), or a file path for an Optuna journal
    file there. One that cannot be opened is one message naming ``--storage``, its value and why."""
    import optuna

    if "://" not in spec:
        from optuna.storages.journal import JournalFileBackend

        if not Path(spec).parent.is_dir():
            raise KdforgeError(f"--storage '{spec}': the folder '{Path(spec).parent}' does not exist; create it first")
        return optuna.storages.JournalStorage(JournalFileBackend(spec))
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(spec)
    except sqlalchemy.exc.NoSuchModuleError:
        scheme = spec.partition("://")[0]
        raise KdforgeError(
            f"--storage '{spec}': '{scheme}' is no database SQLAlchemy knows (sqlite:///file.db, postgresql://..., "
            "mysql://...); or give a file path for a journal file"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        reason = str(getattr(err, "orig", None) or err).splitlines()[0]
        raise KdforgeError(f"--storage '{spec}' cannot be opened: {reason}") from None


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
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(storage),
        direction="maximize",  # every score is higher-is-better (a perplexity enters negated)
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(pruner, *startup),
        load_if_exists=True,
    )
    saved = study.user_attrs.get(f"{SAMPLER_STATE}{seed}")
    if saved is not None:  # a resumed study draws on from where its sampler stopped, not from its first draws
        for rng, state in zip(_random_states(study.sampler), saved):
            rng.set_state((state[0], np.asarray(state[1], dtype=np.uint32), *state[2:]))
    return study


#: study attribute (+ the sampler's seed) holding its random state after the last trial (JSON: storages need it)
SAMPLER_STATE = "kdforge.sampler_state."


def keep_sampler_state(study: optuna.Study, seed: int) -> None:
    """Store the sampler's random state in the study after each trial: an interrupted study, run again, restores
    it and samples what it would have sampled without the interruption (the trial that was running is drawn again).
    The state is TPE's own NumPy generators (``optuna`` is pinned in uv.lock)."""
    states: list[Any] = [rng.get_state() for rng in _random_states(study.sampler)]
    study.set_user_attr(f"{SAMPLER_STATE}{seed}", [[s[0], s[1].tolist(), *s[2:]] for s in states])


def _random_states(sampler: Any) -> list[np.random.RandomState]:
    return [sampler._rng.rng, sampler._random_sampler._rng.rng]


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
    seed = job["seed"] + job["worker"]
    study = load_study(job["name"], job["storage"], seed, job["pruner"], tuple(job["startup"]))
    if finished(study) >= job["trials"]:
        return
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(
        lambda trial: objective(trial, job["base"], space, Path(job["tune_dir"]), job.get("trial_seeds", 1)),
        callbacks=[
            MaxTrialsCallback(job["trials"], states=states),
            lambda study, trial: study.stop() if failing(study) is not None else None,
            lambda study, trial: keep_sampler_state(study, seed),
            job.get("progress") or (lambda s, t: None),
        ],
        catch=(KdforgeError,),  # a trial that fails (e.g. its loss turns NaN) is recorded as failed; the study goes on
    )
