"""End to end: a tiny run writes the promised run directory; teachers are cached and loaded."""

import json
from pathlib import Path

import pytest
import torch

from kdforge import Recipe, load_student, run
from kdforge.check import check
from kdforge.errors import KdforgeError
from kdforge.export import save_model
from kdforge.models import build_model


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    raw = {
        "name": "tiny",
        "seed": 0,
        "data": {"name": "digits", "batch_size": 64, "augment": {"shift": 1}},
        "teacher": {"source": "train", "model": {"name": "cnn", "width": 8, "depth": 2}, "train": {"epochs": 2}},
        "student": {"model": {"name": "mlp", "hidden": [16]}},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 4.0}],
        "optim": {"lr": 3.0e-3},
        "train": {"epochs": 2},
        "log": {"dir": str(tmp / "runs"), "progress": False, "every_steps": 10},
    }
    return raw, run(Recipe.from_dict(raw))


def test_run_directory_has_everything(finished):
    _, result = finished
    d = result.run_dir
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "student.safetensors",
        "student.json",
        "last.pt",
        "best.pt",
        "report.md",
        "README.md",
        "plots/loss.png",
        "plots/accuracy.png",
        "teacher/teacher.safetensors",
        "baseline/best.pt",
    ):
        assert (d / name).exists(), name
    results = json.loads((d / "results.json").read_text())
    for role in ("teacher", "student", "student_alone"):
        entry = results[role]
        assert (
            entry["params"] > 0
            and 0 <= entry["test"]["accuracy"] <= 1
            and entry["latency_ms"] > 0
            and "accuracy" in entry["val_best"]
        )
    assert results["teacher"]["params"] > results["student"]["params"]
    assert results["kdforge_version"] and set(results["timings"]) >= {"teacher_s", "distill_s", "baseline_s", "total_s"}
    assert "| student + KD |" in (d / "report.md").read_text()
    for role in ("student", "student_alone"):  # fidelity to the teacher on test, with and without KD
        agreement = results[role]["teacher_agreement"]
        assert 0 <= agreement["top1_agreement"] <= 1 and agreement["kl_from_teacher"] > 0
    assert "student alone agrees with the teacher's top-1 on" in (d / "report.md").read_text()
    from huggingface_hub import ModelCard  # the Hub's own reader: the run folder uploads as a model repository

    card = ModelCard.load(d / "README.md")
    assert card.data.library_name == "kdforge" and card.data.metrics == ["accuracy"]
    assert card.data.base_model is None  # a teacher trained here, not one from the hub
    assert "| student + KD | mlp |" in card.text and "kdforge.load_student" in card.text and "KD gain" in card.text
    lines = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert {r["stage"] for r in epochs} == {"teacher", "distill", "baseline"} and len(epochs) == 6
    assert any(r["kind"] == "step" and "kd" in r for r in lines)


def test_exported_student_rebuilds_in_its_own_class(finished):
    _, result = finished
    student = load_student(result.run_dir)
    assert type(student).__name__ == "MLP" and not student.training
    best = torch.load(result.run_dir / "best.pt", weights_only=True)["student"]
    assert all(torch.equal(best[k], v) for k, v in student.state_dict().items())


def test_trained_teacher_is_reused_by_a_later_run(finished, tmp_path):
    raw, first = finished
    again = run(Recipe.from_dict({**raw, "train": {"epochs": 1, "baseline": False}}))
    assert again.results["teacher"]["cached_from"] == str(first.run_dir / "teacher")
    assert again.results["teacher"]["test"] == first.results["teacher"]["test"]
    assert "student_alone" not in again.results


def test_a_second_stage_that_trains_its_teacher_anew_says_how_to_keep_the_first_runs(finished):
    """A student continuing a run (``init_from``) under another optimiser gets a teacher fitted anew with it: the log
    says so and names the first run's teacher file; reusing the first run's teacher needs no hint."""
    import io

    from rich.console import Console

    raw, first = finished
    second = {**raw, "student": {**raw["student"], "init_from": str(first.run_dir)}, "train": {"epochs": 1}}

    def log_of(recipe):
        out = io.StringIO()
        run(Recipe.from_dict(recipe), console=Console(file=out, width=500))
        return out.getvalue()

    assert "reusing the one trained" in (same := log_of({**second, "train": {"epochs": 1, "baseline": False}}))
    assert "continues" not in same
    anew = log_of({**second, "optim": {"lr": 1.0e-3}, "train": {"epochs": 1, "baseline": False}})
    assert "teacher: training it for 2 epochs" in anew
    assert f"the student continues {first.run_dir}: to distil it from that run's own teacher" in anew
    assert "teacher: {source: checkpoint, path: <that run>/teacher/teacher.safetensors}" in anew


def test_checkpoint_teacher_loads_and_mismatched_classes_fail(finished, tmp_path):
    raw, first = finished
    teacher_file = first.teacher_file
    base = {**raw, "teacher": {"source": "checkpoint", "path": str(teacher_file)}}
    report = check(Recipe.from_dict(base))
    assert report["teacher_params"] == first.results["teacher"]["params"]
    wrong = build_model("mlp", input_shape=(1, 8, 8), num_classes=5)
    save_model(wrong, tmp_path / "five")
    with pytest.raises(KdforgeError, match="predicts 5 classes but the dataset has 10"):
        check(
            Recipe.from_dict({**raw, "teacher": {"source": "checkpoint", "path": str(tmp_path / "five.safetensors")}})
        )
    torch.save(wrong.state_dict(), tmp_path / "plain.pt")
    spec = {"source": "checkpoint", "path": str(tmp_path / "plain.pt"), "model": {"name": "mlp"}}
    with pytest.raises(KdforgeError, match=r"shape mismatches \(2\): head.bias: checkpoint \[5\] vs model \[10\]"):
        check(Recipe.from_dict({**raw, "teacher": spec}))
    with pytest.raises(KdforgeError, match="not found"):
        check(Recipe.from_dict({**raw, "teacher": {**spec, "path": str(tmp_path / "missing.pt")}}))


def test_check_catches_a_wrong_tap_name(tiny_recipe):
    tiny_recipe["losses"].append(
        {"name": "hint", "student": "features.0", "teacher": "featurs.1", "projector": "linear"}
    )
    with pytest.raises(KdforgeError, match=r"no module named 'featurs.1' in CNN.*closest: features.1"):
        check(Recipe.from_dict(tiny_recipe))


@pytest.mark.parametrize(
    "train, expected",
    [
        ({"epochs": 200, "early_stopping": {"patience": 30}}, "200 epochs, validated after every epoch (the weights of "
         "the best validation are kept); stops early after 30 epochs without a better val accuracy; the student "
         "alone is trained the same way"),
        ({"epochs": 9, "val_every": 3, "baseline": False}, "9 epochs, validated every 3 epochs and at the end (the "
         "weights of the best validation are kept)"),
        ({"max_steps": 20000, "val_every": {"steps": 1000}, "early_stopping": {"patience": 0.5, "metric": "loss"},
          "baseline": False}, "20,000 optimiser steps, validated every 1,000 steps and at the end (the weights of the "
         "best validation are kept); stops early after 0.5 epochs without a better val loss"),
    ],
)  # fmt: skip
def test_check_says_how_long_the_student_trains_and_when_it_is_validated(train, expected):
    from kdforge.check import describe_schedule
    from kdforge.config import TrainConfig

    assert describe_schedule(TrainConfig.model_validate(train)) == expected


def test_check_says_when_the_student_alone_takes_as_many_steps_as_the_distilled_one():
    from kdforge.check import describe_schedule
    from kdforge.config import TrainConfig

    matched = describe_schedule(TrainConfig.model_validate({"epochs": 5}), alone_steps=40)
    assert matched.endswith(
        "; the student alone for as many optimiser steps (40), on the labelled data only, validated as many steps apart"
    )


def test_check_runs_a_hint_recipe(tiny_recipe):
    tiny_recipe["student"] = {"model": {"name": "cnn", "width": 4, "depth": 2}}
    tiny_recipe["losses"].append(
        {"name": "hint", "student": "features.1", "teacher": "features.1", "projector": "conv1x1"}
    )
    report = check(Recipe.from_dict(tiny_recipe))
    assert set(report["parts"]) == {"ce", "kd", "hint"} and report["loss"] > 0


def test_ctrl_c_saves_and_resume_gives_the_uninterrupted_result(tiny_recipe, tmp_path, monkeypatch):
    import signal

    from kdforge.callbacks import Callback
    from kdforge.errors import RunInterrupted
    from kdforge.session import Session

    tiny_recipe["train"] = {"epochs": 3, "baseline": False}
    full = run(Recipe.from_dict(tiny_recipe))

    class CtrlC(Callback):
        def on_step_end(self, trainer, samples):
            if trainer.stage == "distill" and trainer.pos.step == 30:  # mid-epoch 2
                signal.raise_signal(signal.SIGINT)

    callbacks = Session.callbacks
    monkeypatch.setattr(Session, "callbacks", lambda self: [*callbacks(self), CtrlC()])
    with pytest.raises(RunInterrupted, match="Resume with: kdforge train --resume") as stopped:
        run(Recipe.from_dict(tiny_recipe))
    run_dir = stopped.value.run_dir
    assert torch.load(run_dir / "last.pt", weights_only=True)["position"]["step"] == 30
    monkeypatch.setattr(Session, "callbacks", callbacks)
    resumed = run(Recipe.from_dict(tiny_recipe), resume=run_dir)
    assert resumed.results["student"]["test"] == full.results["student"]["test"]
    assert resumed.results["student"]["best_epoch"] == full.results["student"]["best_epoch"]
    a, b = load_student(full.run_dir).state_dict(), load_student(run_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def image_folder_of(tmp_path):
    """A three-class folder of 12x12 PNGs in the train/ + test/ layout."""
    from PIL import Image

    for split, n in (("train", 8), ("test", 3)):
        for c in range(3):
            (tmp_path / "images" / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 12), (80 * c, 40, 200 - 60 * c)).save(
                    tmp_path / "images" / split / f"c{c}" / f"{i}.png"
                )
    return tmp_path / "images"


def timm_weights(tmp_path, name, classes):
    """A timm model's (random) weights saved where a recipe's checkpoint or pretrained_file points."""
    import timm
    from safetensors.torch import save_file

    path = tmp_path / f"{name}.safetensors"
    save_file(timm.create_model(name, num_classes=classes).state_dict(), str(path))
    return path


def data_for_recipe(name, tmp_path):
    """Overrides that give a shipped recipe which reads the user's own files small files of that kind
    (and a small model of its teacher's kind in place of its large one)."""
    import numpy as np

    if name.startswith("cifar10_folder_"):
        model = "test_vit" if "vit" in name else "test_resnet"
        weights = timm_weights(tmp_path, model, 3)
        return [
            f"data.path={image_folder_of(tmp_path)}",
            f"teacher.model.name={model}",
            f"teacher.checkpoint={weights}",
        ]
    if name == "imagenet_folder_kd":
        weights = timm_weights(tmp_path, "test_resnet", 1000)
        folder = image_folder_of(tmp_path)
        return [
            f"data.path={folder}",
            "data.image_size=32",
            "data.workers=1",
            "teacher.model.name=test_resnet",
            f"teacher.pretrained_file={weights}",
        ]
    if name == "lm_tokens_rwkv":
        text = np.frombuffer(b" ".join(b"tokens from a shard, number %d." % i for i in range(400)), dtype=np.uint8)
        text.astype(np.uint16).tofile(tmp_path / "train.bin")
        text[:2000].astype(np.uint16).tofile(tmp_path / "val.bin")
        return [f"data.path={tmp_path / 'train.bin'}", f"data.val={tmp_path / 'val.bin'}", "data.test_fraction=0.1"]
    if name == "hf_text_lm":
        import datasets

        docs = [f"Document {i} of a parquet corpus says {i % 9}." for i in range(200)]
        datasets.Dataset.from_dict({"text": docs}).to_parquet(str(tmp_path / "train.parquet"))
        return [f"data.files=[{tmp_path / 'train.parquet'}]"]
    if name.startswith(("hf_llm_", "hf_chat_")):
        from datafiles import hf_llm_stand_ins

        return hf_llm_stand_ins(name, tmp_path)
    if name in ("glue_sst2_kd", "conll_ner_kd"):
        from datafiles import encoder_stand_ins

        return encoder_stand_ins(name, tmp_path)
    if name == "text_cls_kd":
        return ["data.per_package=6"]  # a check encodes a few texts
    return ["data.max_texts=300"] if name.startswith("embed_") else []  # the check needs only a few texts encoded


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "recipes").glob("*.yaml")))
def test_shipped_recipes_pass_check(name, tmp_path):
    from kdforge.cli import recipe_path

    given = data_for_recipe(name, tmp_path)
    report = check(Recipe.from_yaml(recipe_path(name), [f"log.dir={tmp_path / 'runs'}", "log.progress=false", *given]))
    assert report["loss"] > 0 and report["parts"]


def test_runs_started_in_the_same_second_get_their_own_folders(tiny_recipe, tmp_path, monkeypatch):
    """Parallel runs of one recipe (a sweep's workers) claim their folders by mkdir, never sharing one."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime

    from kdforge import runner

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 1, 12, 0, 0)

    monkeypatch.setattr(runner, "datetime", Frozen)
    recipe = Recipe.from_dict({**tiny_recipe, "log": {"dir": str(tmp_path)}})
    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: runner._prepare_run_dir(recipe, None), range(8)))
    assert len(set(folders)) == 8
    assert sorted(f.name for f in folders)[0] == f"{recipe.name}-20260101-120000"
    assert all((f / "config.yaml").exists() for f in folders)


def test_check_and_train_say_that_a_trained_teacher_is_reused(finished, tmp_path):
    import io

    from rich.console import Console

    raw, first = finished
    student_only = {  # what the teacher did not train with: the student's learning rate and memory layout
        **raw,
        "optim": {**raw["optim"], "lr": 1e-3},
        "teacher": {**raw["teacher"], "train": {**raw["teacher"]["train"], "lr": raw["optim"]["lr"]}},
        "train": {"epochs": 1, "baseline": False, "channels_last": False},
    }
    said = io.StringIO()
    check(Recipe.from_dict(student_only), console=Console(file=said, width=300))
    assert f"reuses the one trained with the same settings in {first.run_dir / 'teacher'}" in said.getvalue()
    said = io.StringIO()
    again = run(Recipe.from_dict(student_only), console=Console(file=said, width=300))
    assert again.results["teacher"]["cached_from"] == str(first.run_dir / "teacher")
    assert f"teacher: reusing the one trained with the same settings in {first.run_dir / 'teacher'}" in said.getvalue()
    said = io.StringIO()
    check(Recipe.from_dict({**raw, "seed": 5}), console=Console(file=said, width=300))
    assert "untrained here; `train` fits it for 2 epochs" in said.getvalue()


@pytest.mark.parametrize(
    "val, expected",
    [
        ({"accuracy": 0.9, "loss": 0.3}, {"loss": "train loss, val cross-entropy", "accuracy": "val accuracy (%)"}),
        ({"psnr_db": 30.0, "mse": 1e-3, "loss": 1e-3}, {"loss": "train loss, val MSE", "psnr_db": "val PSNR (dB)"}),
        (
            {"spearman": 0.8, "recall_at_10": 0.4, "loss": 0.2},
            {
                "loss": "train loss, val 1 − ρ",
                "spearman": "val Spearman ρ of similarities",
                "recall_at_10": "val neighbour recall@10",
            },
        ),  # fmt: skip
        ({"perplexity": 9.0, "accuracy": 0.3, "loss": 2.2}, {"perplexity": "val perplexity"}),
    ],
)
def test_one_plot_per_metric_with_its_name_on_the_axis(tmp_path, monkeypatch, val, expected):
    from kdforge import report

    drawn = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi: drawn.update({path.stem: fig.axes[0]}))
    history = [{"epoch": e, "train": {"loss": 1.0 / e}, **({"val": val} if e % 2 == 0 else {})} for e in range(1, 6)]
    written = report.plot_curves(tmp_path, {"student + KD": history, "student alone": history})
    assert written == [f"plots/{name}.png" for name in drawn] and set(drawn) >= set(expected)
    assert {name: drawn[name].get_ylabel() for name in expected} == expected
    validated = drawn[next(iter(set(drawn) - {"loss"}))].get_lines()[0]
    assert list(validated.get_xdata()) == [2, 4]  # epochs without validation are left out


def test_a_quiet_run_prints_nothing_and_returns_its_results(tiny_recipe, capfd):
    tiny_recipe["log"]["progress"] = True  # quiet turns the bars off too
    tiny_recipe["train"] = {"epochs": 1}
    result = run(Recipe.from_dict(tiny_recipe), quiet=True)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""
    assert 0 < result.student_accuracy <= 1 and "student_alone" in result.results
    assert (result.run_dir / "results.json").exists()


def test_a_run_frees_its_models_when_it_returns(tiny_recipe):
    """The run's session, models and loaders refer to one another; the run frees them before it returns, so that a
    next run in the same process (a notebook, a search) does not find the device still holding them."""
    import gc

    from kdforge.session import Session

    def alive() -> dict[int, object]:
        return {id(o): o for o in gc.get_objects() if issubclass(type(o), (Session, torch.nn.Module))}

    gc.collect()
    gc.disable()
    try:
        before = alive()  # what other tests keep
        run(Recipe.from_dict(tiny_recipe), quiet=True)
        assert not [o for key, o in alive().items() if key not in before]
    finally:
        gc.enable()


def test_epoch_test_metrics_are_logged_and_choose_nothing(tiny_recipe):
    """log.epoch_test: every student epoch's line holds its test metrics; the run's best epoch and results are
    those of the same run without them (the test split reports, validation chooses)."""
    import json

    from kdforge import Recipe, run

    tiny_recipe["train"] = {"epochs": 3, "baseline": True}
    plain = run(Recipe.from_dict(tiny_recipe))
    tiny_recipe["log"] = {**tiny_recipe["log"], "epoch_test": True}
    logged = run(Recipe.from_dict(tiny_recipe))
    lines = [json.loads(line) for line in (logged.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = {(r["stage"], r["epoch"]): r for r in lines if r["kind"] == "epoch"}
    assert all("accuracy" in epochs[(stage, e)]["test"] for stage in ("distill", "baseline") for e in (1, 2, 3))
    assert all("test" not in r for (stage, _), r in epochs.items() if stage == "teacher")
    best = logged.results["student"]["best_epoch"]
    assert epochs[("distill", best)]["test"]["accuracy"] == pytest.approx(logged.results["student"]["test"]["accuracy"])
    for role in ("student", "student_alone"):
        assert logged.results[role]["best_epoch"] == plain.results[role]["best_epoch"]
        assert logged.results[role]["test"] == plain.results[role]["test"]


def test_a_recipe_without_a_teacher_trains_the_student_alone(tiny_recipe, invoke, capsys, tmp_path):
    """The TM guide's first example trains a TM transformer alone: no teacher section, a task loss. check and
    train take it, and the run folder is the one a distillation writes, without the teacher's rows."""
    import json

    import yaml

    from kdforge import load_student

    recipe = {k: v for k, v in tiny_recipe.items() if k != "teacher"}
    recipe["data"] = {"name": "digits", "image_size": 8, "batch_size": 64}
    recipe["student"] = {"model": {"name": "vit_tm_tiny", "clauses": 8}}
    recipe["losses"] = [{"name": "ce"}]
    recipe["train"] = {"epochs": 1}
    (tmp_path / "alone.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("check", tmp_path / "alone.yaml") == 0
    assert "teacher: none: the student trains alone" in " ".join(capsys.readouterr().out.split())
    assert invoke("train", tmp_path / "alone.yaml") == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    results = json.loads((run_dir / "results.json").read_text())
    assert "teacher" not in results and "student_alone" not in results and results["student"]["test"]["accuracy"] > 0
    assert not (run_dir / "teacher").exists() and not (run_dir / "baseline").exists()
    assert "| student | vit_tm_tiny |" in (run_dir / "report.md").read_text() and "student + KD" not in out
    assert load_student(run_dir).__class__.__name__ == "ViTTM"
