"""kdforge tune: search spaces, what a trial's recipe holds, the objective (validation only), resuming, the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pydantic
import pytest

from kdforge import Recipe
from kdforge.config.tune import ParamSpec
from kdforge.errors import ConfigError
from kdforge.tuner import default_space, parse_space, recipe_params, recipe_space, suggest, tune


def test_specs_take_exactly_one_form_and_integers_stay_integers():
    assert ParamSpec.model_validate({"low": 1, "high": 8}).integer
    assert not ParamSpec.model_validate({"low": 1.0, "high": 8.0}).integer
    for bad in ({"low": 1}, {"low": 2, "high": 1}, {"low": 0, "high": 1, "log": True}, {"factor": 2, "choice": [1]},
                {}, {"factor": 0.5}):  # fmt: skip
        with pytest.raises(pydantic.ValidationError):
            ParamSpec.model_validate(bad)
    assert parse_space(["optim.lr={low: 1.0e-4, high: 1.0e-2, log: true}"])["optim.lr"].log
    with pytest.raises(ConfigError, match="--space 'optim.lr=oops'"):
        parse_space(["optim.lr=oops"])


def test_each_method_ships_a_default_space(tiny_recipe):
    space = default_space(tiny_recipe)
    assert set(space) == {"optim.lr", "losses.1.weight", "losses.1.temperature"}  # ce has none: it sets the scale
    recipe = Recipe.model_validate({**tiny_recipe, "tune": {"space": {"optim.lr": {"factor": 3}}}})
    assert set(recipe_space(recipe, {})) == {"optim.lr"}  # a declared space replaces the defaults
    assert set(recipe_space(recipe, parse_space(["train.epochs={low: 2, high: 4}"]))) == {"optim.lr", "train.epochs"}


def test_a_trial_sets_each_searched_key_and_a_chosen_method_brings_its_own_space(tiny_recipe):
    space = parse_space(
        [
            "optim.lr={factor: 10}",
            "train.epochs={low: 2, high: 6}",
            "losses={choice: [[{name: ce}], [{name: ce, weight: 0.5}, {name: dkd}]]}",
        ]
    )
    params = {"optim.lr": 0.03, "train.epochs": 5, "losses": "ce+dkd", "ce+dkd:losses.1.beta": 4.0,
              "ce+dkd:losses.1.temperature": 2.0}  # fmt: skip
    raw = suggest(optuna.trial.FixedTrial(params), tiny_recipe, space)
    assert raw["optim"]["lr"] == 0.03 and raw["train"]["epochs"] == 5
    assert raw["losses"] == [{"name": "ce", "weight": 0.5}, {"name": "dkd", "beta": 4.0, "temperature": 2.0}]
    assert tiny_recipe["losses"][1]["name"] == "kd"  # the base recipe is left as it was
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    suggest(trial, tiny_recipe, space)
    assert 3e-4 <= trial.params["optim.lr"] <= 3e-2  # factor 10 around the recipe's 3e-3
    assert isinstance(trial.params["train.epochs"], int)
    with pytest.raises(ConfigError, match="'optim.nothing', which the recipe does not have"):
        suggest(trial, tiny_recipe, parse_space(["optim.nothing={low: 1, high: 2}"]))


def test_the_first_trial_gives_back_the_recipe_where_the_space_holds_it(tiny_recipe):
    raw = Recipe.model_validate(tiny_recipe).to_dict()
    space = default_space(raw)
    params = recipe_params(raw, space)
    assert params == {"optim.lr": 3e-3, "losses.1.weight": 0.5, "losses.1.temperature": 4.0}
    assert suggest(optuna.trial.FixedTrial(params), raw, space) == raw
    methods = parse_space(["losses={choice: [[{name: ce}], [{name: ce, weight: 0.5}, {name: kd, weight: 0.5}]]}"])
    params = recipe_params(raw, methods)  # the recipe's list is the second choice, its options at their values
    assert params == {"losses": "ce+kd", "ce+kd:losses.1.weight": 0.5, "ce+kd:losses.1.temperature": 4.0}
    assert Recipe.from_dict(suggest(optuna.trial.FixedTrial(params), raw, methods)).to_dict() == raw
    assert recipe_params(raw, parse_space(["train.epochs={low: 0, high: 8, step: 2}"])) == {"train.epochs": 2}
    outside = [
        "optim.lr={low: 0.01, high: 0.1}",
        "train.epochs={low: 1, high: 9, step: 4}",
        "losses={choice: [[{name: ce}], [{name: ce}, {name: dkd}]]}",
        "optim.name={choice: [sgd]}",
    ]
    for text in outside:
        assert recipe_params(raw, parse_space([text])) is None, text
    ramp = {"schedule": "linear", "start": 4, "end": 1}
    scheduled = Recipe.model_validate(
        {**tiny_recipe, "losses": [{"name": "ce"}, {"name": "kd", "temperature": ramp}]}
    ).to_dict()
    assert recipe_params(scheduled, default_space(scheduled)) == {"optim.lr": 3e-3, "losses.1.weight": 1.0}


def test_tune_searches_on_validation_resumes_and_reports(tiny_recipe, tmp_path):
    tiny_recipe["train"]["epochs"] = 3
    recipe = Recipe.model_validate(tiny_recipe)
    first = tune(recipe, 3, seeds=0, pruner="none")
    tune_dir = first.tune_dir
    study = optuna.load_study(study_name="tiny", storage=_journal(tune_dir))
    assert len(study.trials) == 3
    first_trial = study.trials[0]  # the recipe as written
    assert first_trial.params == {"optim.lr": 3e-3, "losses.1.weight": 0.5, "losses.1.temperature": 4.0}
    assert Recipe.from_yaml(f"{first_trial.user_attrs['run_dir']}/config.yaml").optim.lr == 3e-3
    for trial in study.trials:  # the objective: the best validation accuracy of the distilled student's epochs
        records = [json.loads(line) for line in open(f"{trial.user_attrs['run_dir']}/metrics.jsonl")]
        val = [r["val"] for r in records if r["stage"] == "distill" and r["kind"] == "epoch"]
        best = max(val, key=lambda v: (v["accuracy"], -v["loss"]))  # equal accuracies: the lower loss
        assert trial.value == best["accuracy"] - 1e-9 * best["loss"] and len(val) == 3
    assert first.best_value == max(t.value for t in study.trials)
    teachers = [_teacher_of(t.user_attrs["run_dir"]) for t in study.trials]  # trials at other learning rates ...
    assert len({meta["cache_key"] for meta in teachers}) == 1  # ... distil from the recipe's one teacher,
    assert ["cached_from" in meta for meta in teachers] == [False, True, True]  # trained once
    assert Recipe.from_yaml(tune_dir / "best.yaml").optim.lr == first.best_params["optim.lr"]
    text = (tune_dir / "tune.md").read_text()
    assert f"**Best trial: {study.best_trial.number}**" in text and "## Parameter importances" in text
    assert "| 0 (the recipe) | complete |" in text
    assert all((tune_dir / "plots" / f"{name}.png").stat().st_size > 1000 for name in ("history", "importances"))
    again = tune(recipe, 4, seeds=0, pruner="none")  # the same study goes on: one more trial
    study = optuna.load_study(study_name="tiny", storage=_journal(tune_dir))
    assert len(study.trials) == 4 and again.tune_dir == tune_dir


def test_a_resumed_tune_fails_the_trials_its_interrupted_processes_left_running(tiny_recipe):
    import socket
    import subprocess

    from kdforge.tuner import RECIPE_ITSELF, RUN_BY, load_study

    tiny_recipe["train"]["epochs"] = 2
    recipe = Recipe.model_validate(tiny_recipe)
    tune_dir = Path(recipe.log.dir) / f"{recipe.name}-tune"
    tune_dir.mkdir(parents=True)
    study = load_study(recipe.name, str(tune_dir / "study.journal"), 0, "none", (2, 1))
    study.enqueue_trial(recipe_params(recipe.to_dict(), recipe_space(recipe, {})), user_attrs={RECIPE_ITSELF: True})
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process of this machine that no longer exists
    interrupted, elsewhere = study.ask(), study.ask()  # the recipe's trial, and one of another machine
    interrupted.set_user_attr(RUN_BY, f"{socket.gethostname()}:{gone.pid}")
    elsewhere.set_user_attr(RUN_BY, f"not-{socket.gethostname()}:{gone.pid}")
    tune(recipe, 2, seeds=0, pruner="none")
    states = {t.number: t.state for t in study.get_trials()}
    assert states[0] == optuna.trial.TrialState.FAIL and states[1] == optuna.trial.TrialState.RUNNING
    again = [t for t in study.get_trials() if t.number > 1 and t.user_attrs.get(RECIPE_ITSELF)]
    assert len(again) == 1 and again[0].state == optuna.trial.TrialState.COMPLETE  # the recipe ran after all
    assert again[0].params == {"optim.lr": 3e-3, "losses.1.weight": 0.5, "losses.1.temperature": 4.0}
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials()) == 2


def test_a_trial_on_several_seeds_scores_their_mean_validation(tiny_recipe):
    tiny_recipe["train"]["epochs"] = 2
    result = tune(Recipe.model_validate(tiny_recipe), 2, seeds=0, pruner="none", trial_seeds=2)
    study = optuna.load_study(study_name="tiny", storage=_journal(result.tune_dir))
    for trial in study.trials:
        bests = []
        for run_dir in trial.user_attrs["run_dirs"]:
            records = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
            bests.append(max(r["val"]["accuracy"] for r in records if r["stage"] == "distill" and r["kind"] == "epoch"))
        seeds = {json.loads(open(f"{d}/results.json").read())["seed"] for d in trial.user_attrs["run_dirs"]}
        assert seeds == {0, 1} and trial.value == pytest.approx(sum(bests) / 2)


def _teacher_of(run_dir):
    (meta,) = Path(run_dir).glob("teacher/**/teacher.json")
    return json.loads(meta.read_text())["teacher"]


def test_a_search_that_changes_how_the_teacher_trains_says_each_trial_trains_its_own(tiny_recipe):
    from rich.console import Console

    tiny_recipe["train"]["epochs"] = 1
    recipe = Recipe.model_validate(tiny_recipe)
    for space, told in ((["optim.lr={low: 0.001, high: 0.01}"], False), (["data.batch_size={choice: [32, 64]}"], True)):
        console = Console(record=True, width=200)
        tune(recipe.model_copy(update={"name": f"tiny{told}"}), 1, space=parse_space(space), seeds=0, console=console)
        assert ("each trial trains its own" in console.export_text()) == told


def _journal(tune_dir):
    from kdforge.tuner import open_storage

    return open_storage(str(tune_dir / "study.journal"))


@pytest.mark.slow
def test_parallel_trials_share_the_study_and_the_cores(tiny_recipe):
    tiny_recipe["train"]["epochs"] = 2
    result = tune(Recipe.model_validate(tiny_recipe), 4, jobs=2, seeds=0, pruner="none")
    study = optuna.load_study(study_name="tiny", storage=_journal(result.tune_dir))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 4 <= len(finished) <= 5  # the two processes may each start a last trial
    assert len({t.user_attrs["run_dir"] for t in finished}) == len(finished)
    after_first = [t for t in finished if t.number > 0]  # the first trial runs alone, with every thread
    assert all(t.user_attrs["threads"] == max(1, (os.cpu_count() or 1) // 2) for t in after_first)


class _Told:
    """What a trial is told: (step, value) of each report; never prunes."""

    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return False


def test_trials_validated_by_steps_are_scored_and_pruned_on_every_validation(tmp_path):
    import torch

    from kdforge.config import OptimConfig, TrainConfig
    from kdforge.data import build_dataset, make_loader
    from kdforge.distiller import Distiller
    from kdforge.evaluate import selection_value
    from kdforge.losses import build_losses
    from kdforge.models import build_model
    from kdforge.trainer import Trainer
    from kdforge.tuner import PruneOnValidation

    data = build_dataset("digits")
    torch.manual_seed(0)
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    distiller = Distiller(student, None, build_losses([{"name": "ce"}]), torch.randn(2, 1, 8, 8))
    train = make_loader(data.train, 64, shuffle=True, seed=0)
    told = _Told()
    reporter = PruneOnValidation(told)
    trainer = Trainer(
        distiller,
        OptimConfig(lr=3e-3),
        TrainConfig.model_validate({"epochs": 2, "val_every": {"steps": 5}}),
        steps_per_epoch=len(train),
        checkpoint_dir=tmp_path,
        callbacks=[reporter],
    )
    result = trainer.fit(train, make_loader(data.val, 512))
    validations = [v for record in result.history for v in record["validations"]]
    assert [step for step, _ in told.reports] == [v["step"] for v in validations]  # each once, the last included
    assert reporter.best == max(selection_value(v["val"]) for v in validations)


def test_trials_with_equal_validation_scores_go_to_the_lower_validation_loss():
    from kdforge.evaluate import is_better, selection_value

    epochs = [
        {"accuracy": 1.0, "loss": 0.30},
        {"accuracy": 1.0, "loss": 0.05},  # the same accuracy, surer: chosen
        {"accuracy": 1.0 - 1e-6, "loss": 0.0},  # one sample worse on a million, however sure
        {"accuracy": 0.5, "loss": 100.0},
    ]
    best = None
    for metrics in epochs:
        best = metrics if is_better(metrics, best) else best
    assert max(epochs, key=selection_value) is best is epochs[1]
    assert selection_value({"psnr_db": 20.0, "loss": 0.01}) == pytest.approx(20.0)


def test_a_resumed_tune_continues_the_search_as_if_never_stopped(tiny_recipe, tmp_path):
    """A study stopped after two trials and resumed to four samples the four an uninterrupted study samples,
    none twice (a sampler seeded once per process would replay its first draws)."""
    tiny_recipe["train"]["epochs"] = 1

    def params(where, *stops):
        recipe = Recipe.model_validate({**tiny_recipe, "log": {**tiny_recipe["log"], "dir": str(tmp_path / where)}})
        for trials in stops:
            result = tune(recipe, trials, seeds=0, pruner="none")
        study = optuna.load_study(study_name="tiny", storage=_journal(result.tune_dir))
        return [t.params for t in sorted(study.trials, key=lambda t: t.number)]

    whole, resumed = params("whole", 4), params("resumed", 2, 4)
    assert resumed == whole
    assert len({json.dumps(p, sort_keys=True) for p in resumed}) == 4


def test_a_study_whose_trials_all_fail_stops_with_their_error(tiny_recipe, tmp_path):
    """Trials that fail where the up-front check cannot see (here the data is gone) stop the study after a few,
    with the error they share, instead of drawing failed trials for ever."""
    from kdforge.errors import KdforgeError
    from kdforge.tuner.trials import FAILURES_IN_A_ROW

    tiny_recipe["data"] = {"name": "arrays", "path": str(tmp_path / "gone.npz")}
    tiny_recipe["teacher"] = {"source": "train", "model": {"name": "mlp", "hidden": [8]}}
    with pytest.raises(KdforgeError, match=f"the last {FAILURES_IN_A_ROW} trials failed.*gone.npz"):
        tune(Recipe.model_validate(tiny_recipe), 3, seeds=0, pruner="none")
    study = optuna.load_study(study_name="tiny", storage=_journal(Path(tiny_recipe["log"]["dir"]) / "tiny-tune"))
    assert len(study.trials) == FAILURES_IN_A_ROW
