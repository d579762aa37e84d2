"""Staged training and the POCL curriculum."""

import json
import math

import pytest
import torch

from kdforge import Recipe, run
from kdforge.callbacks import Callback
from kdforge.config import CurriculumConfig, OptimConfig, StageConfig, TrainConfig
from kdforge.curriculum import Curriculum, difficulty_order, loss_slope, pocl_stages, stage_finished
from kdforge.data import build_dataset, make_loader
from kdforge.distiller import Distiller
from kdforge.errors import ConfigError
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.teachers import Teacher
from kdforge.trainer import Trainer


def record(loss, accuracy):
    return {"train": {"loss": loss}, "val": {"accuracy": accuracy, "loss": 0.0}}


def test_stage_ends():
    assert loss_slope([3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert loss_slope([1.0, 1.1, 0.9, 1.0]) == pytest.approx(-0.02)
    by_epochs = StageConfig(epochs=2)
    assert not stage_finished(by_epochs, [record(1, 0.5)]) and stage_finished(by_epochs, [record(1, 0.5)] * 2)
    flat = StageConfig.model_validate({"loss_plateau": {"window": 3, "eps": 0.05}})
    assert not stage_finished(flat, [record(v, 0.5) for v in (3.0, 2.0, 1.0)])
    assert stage_finished(flat, [record(v, 0.5) for v in (3.0, 1.02, 1.0, 1.01)])
    patient = StageConfig.model_validate({"val_plateau": {"patience": 2, "min_delta": 0.01}})
    assert not stage_finished(patient, [record(1, a) for a in (0.5, 0.6, 0.605)])
    assert stage_finished(patient, [record(1, a) for a in (0.5, 0.6, 0.605, 0.6)])


def test_recipe_checks_stages():
    base = {
        "teacher": {"model": {"name": "mlp"}},
        "student": {"model": {"name": "mlp"}},
        "losses": [{"name": "ce"}, {"name": "kd"}],
    }
    with pytest.raises(ConfigError, match="names loss term 'kb'.*did you mean 'kd'"):
        Recipe.from_dict({**base, "stages": [{"epochs": 2, "weights": {"kb": 0.0}}, {}]})
    with pytest.raises(ConfigError, match="stage 0 needs an end"):
        Recipe.from_dict({**base, "stages": [{"weights": {"kd": 0.0}}, {}]})
    with pytest.raises(ConfigError, match=r"one stage per curriculum partition \(3\), got 1"):
        Recipe.from_dict({**base, "stages": [{}], "curriculum": {"name": "pocl"}})
    with pytest.raises(ConfigError, match="partitions must rise"):
        Recipe.from_dict({**base, "curriculum": {"partitions": [0.5, 0.4, 1.0]}})
    with pytest.raises(ConfigError, match="curriculum.epochs sum to 5 but train.epochs is 30"):
        Recipe.from_dict({**base, "curriculum": {"epochs": [1, 2, 2]}})


def test_a_recipe_curriculum_makes_its_stages():
    base = {
        "teacher": {"model": {"name": "mlp"}},
        "student": {"model": {"name": "mlp"}},
        "losses": [{"name": "ce"}, {"name": "kd"}],
    }
    curriculum = Curriculum.from_recipe(
        Recipe.from_dict({**base, "curriculum": {"name": "pocl", "epochs": [2, 3, 1]}, "train": {"epochs": 6}})
    )
    assert [s.epochs for s in curriculum.stages] == [2, 3, None] and curriculum.stages[
        0
    ].data.fraction == pytest.approx(1 / 3)
    assert Curriculum.from_recipe(Recipe.from_dict(base)) is None


def test_pocl_stages_split_epochs_and_grow_the_data():
    stages = pocl_stages(CurriculumConfig(partitions=[0.25, 0.5, 1.0]), epochs=10)
    assert [s.epochs for s in stages] == [4, 3, None] and [s.data.fraction if s.data else 1.0 for s in stages] == [
        0.25,
        0.5,
        1.0,
    ]


class Perfect(torch.nn.Module):
    """Right and sure on even-indexed samples (feature 0 holds the index), unsure on odd ones."""

    def forward(self, x):
        index, label = x[:, 0, 0, 0].long(), x[:, 0, 0, 1].long()
        sure = torch.nn.functional.one_hot(label, 10).float() * 10
        return torch.where((index % 2 == 0)[:, None], sure, torch.zeros_like(sure))


def labelled(n=40):
    x = torch.randn(n, 1, 8, 8)
    y = torch.randint(0, 10, (n,))
    x[:, 0, 0, 0], x[:, 0, 0, 1] = torch.arange(n).float(), y.float()
    return x, y


def test_difficulty_order_puts_what_the_teacher_knows_first():
    from kdforge.data import Split

    x, y = labelled()
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[8])
    distiller = Distiller(student, Teacher(Perfect()), build_losses([{"name": "kd"}]), x[:2])
    batches = make_loader(Split(x, y), 16)
    order = difficulty_order(distiller, batches, k=60.0, with_student=False)
    assert sorted(order[:20].tolist()) == list(range(0, 40, 2))  # the teacher's easy half first
    fused = difficulty_order(distiller, batches, k=60.0, with_student=True)
    assert sorted(fused.tolist()) == list(range(40))


class Seen(Callback):
    """Per epoch, what its steps trained with: stage, steps per epoch, kd weight, kd temperature."""

    def __init__(self):
        self.by_epoch = {}

    def on_step_end(self, trainer, samples):
        kd = trainer.distiller.terms[1]
        self.by_epoch[trainer.pos.epoch] = (trainer.pos.stage, trainer.steps_per_epoch, kd.weight, kd.temperature.spec)

    @property
    def rows(self):
        return [self.by_epoch[e] for e in sorted(self.by_epoch)]


def staged_trainer(tmp_path, curriculum, callbacks=(), epochs=4):
    data = build_dataset("digits")
    torch.manual_seed(0)
    teacher = Teacher(build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[32]))
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    terms = build_losses([{"name": "ce"}, {"name": "kd", "temperature": 4.0}])
    distiller = Distiller(student, teacher, terms, data.train.x[:2])
    train = make_loader(data.train, 50, shuffle=True, seed=1)
    trainer = Trainer(
        distiller,
        OptimConfig(lr=3e-3),
        TrainConfig(epochs=epochs),
        steps_per_epoch=len(train),
        checkpoint_dir=tmp_path,
        callbacks=callbacks,
        curriculum=curriculum,
    )
    return trainer, train, make_loader(data.val, 512)


def test_stages_change_weights_temperatures_and_data(tmp_path):
    stages = [
        StageConfig.model_validate(
            {"epochs": 2, "weights": {"kd": 0.0}, "temperatures": {"kd": 1.0}, "data": {"fraction": 0.5}}
        ),
        StageConfig(),
    ]
    seen = Seen()
    trainer, train, val = staged_trainer(tmp_path, Curriculum(stages), [seen])
    trainer.fit(train, val)
    full = len(train)
    assert [row[0] for row in seen.rows] == [0, 0, 1, 1]
    assert (
        seen.rows[0][1] == math.ceil(math.ceil(len(train.y) / 2) / 50) and seen.rows[-1][1] == full
    )  # half the data, then all
    assert seen.rows[0][2:] == (0.0, 1.0) and seen.rows[-1][2:] == (1.0, 4.0)  # overrides, then the recipe's values


def test_pocl_run_rises_in_temperature_and_data_and_resumes_exactly(tmp_path):
    cfg = CurriculumConfig(partitions=[0.5, 1.0], temperatures=[1.0, 4.0])
    seen = Seen()
    trainer, train, val = staged_trainer(tmp_path / "a", Curriculum(pocl_stages(cfg, 4), pocl=cfg), [seen])
    trainer.fit(train, val)
    assert [(r[0], r[3]) for r in seen.rows] == [(0, 1.0), (0, 1.0), (1, 4.0), (1, 4.0)]
    expected = trainer.distiller.student_state_dict()

    class StopAt(Callback):
        def on_step_end(self, trainer, samples):
            if trainer.pos.step == 20:  # in the first epoch of stage 2
                trainer.should_stop = True

    trainer, train, val = staged_trainer(tmp_path / "b", Curriculum(pocl_stages(cfg, 4), pocl=cfg), [StopAt()])
    assert trainer.fit(train, val).interrupted
    trainer, train, val = staged_trainer(tmp_path / "b", Curriculum(pocl_stages(cfg, 4), pocl=cfg))
    trainer.fit(train, val, resume=True)
    got = trainer.distiller.student_state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_staged_recipe_runs_end_to_end(tiny_recipe):
    tiny_recipe["train"] = {"epochs": 3, "baseline": False}
    tiny_recipe["stages"] = [{"name": "general", "epochs": 1, "weights": {"ce": 0.0}}, {"name": "task"}]
    result = run(Recipe.from_dict(tiny_recipe))
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["curriculum_stage"] for r in lines if r["kind"] == "epoch" and r["stage"] == "distill"] == [0, 1, 1]
    assert result.results["student"]["test"]["accuracy"] > 0.1


def test_the_progress_bar_names_the_stage(tmp_path):
    from kdforge.callbacks import ConsoleProgress

    stages = [StageConfig(name="general", epochs=1), StageConfig(name="task")]
    trainer, _, _ = staged_trainer(tmp_path, Curriculum(stages))
    trainer.pos.stage = 1
    assert ConsoleProgress._describe(trainer) == "distill epoch 1/4 [stage 2/2: task]"


def test_token_level_difficulty_measures_match_their_formulas():
    from kdforge.curriculum import sample_cross_entropy, unigram_f1
    from kdforge.data.bundle import PAD_TARGET

    torch.manual_seed(0)
    logits, targets = torch.randn(2, 4, 5), torch.tensor([[1, 2, 3, PAD_TARGET], [0, 0, 4, 4]])
    token = -torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected = torch.stack([token[0, :3].mean(), token[1].mean()])
    assert torch.allclose(sample_cross_entropy(logits, targets), expected, atol=1e-6)
    predicted = torch.tensor([[2, 1, 1, 3], [0, 4, 4, 4]])
    # row 0: bags {2, 1, 1} vs {1, 2, 3} share 1 and 2 (2 of 3); row 1: {0, 4, 4, 4} vs {0, 0, 4, 4} share 0, 4, 4 (3 of
    # 4)
    assert torch.allclose(unigram_f1(predicted, targets), torch.tensor([2 / 3, 3 / 4]))
    assert torch.equal(unigram_f1(targets.clamp(min=0), targets), torch.ones(2))


def test_pocl_distils_a_language_model(tmp_path):
    text = " ".join(
        f"the {w} sat on the mat and the {w} ran." for w in ["cat", "dog", "owl", "fox", "bee", "yak", "eel", "ant"]
    )
    (tmp_path / "docs.txt").write_text("\n".join(f"{text} {i}" for i in range(60)))
    lm = {"name": "lm_transformer", "width": 16, "depth": 1, "heads": 2}
    raw = {
        "name": "pocl-lm",
        "data": {"name": "text_lm", "files": [str(tmp_path / "docs.txt")], "length": 16, "batch_size": 32},
        "teacher": {"source": "train", "model": lm, "train": {"epochs": 1}},
        "student": {"model": lm},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
        "curriculum": {"name": "pocl", "partitions": [0.5, 1.0], "temperatures": [1.0, 2.0]},
        "train": {"epochs": 2, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    result = run(Recipe.from_dict(raw))
    assert result.results["student"]["epochs_run"] == 2 and math.isfinite(
        result.results["student"]["test"]["perplexity"]
    )
    epochs = [
        r
        for r in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines())
        if r["stage"] == "distill" and r["kind"] == "epoch"
    ]
    assert [r["curriculum_stage"] for r in epochs] == [0, 1]
    first, second = epochs[0]["step"], epochs[1]["step"] - epochs[0]["step"]
    assert first == math.ceil(second / 2) or first == second // 2  # stage 0 trains on the easier half of the windows


def test_pocl_partitions_with_the_recipes_own_stage_ends(tiny_recipe):
    raw = {
        **tiny_recipe,
        "train": {"epochs": 6, "baseline": False},
        "curriculum": {"name": "pocl", "partitions": [0.5, 1.0], "temperatures": [1.0, 4.0]},
        "stages": [{"loss_plateau": {"window": 2, "eps": 1e9}, "weights": {"ce": 1.0}}, {"weights": {"ce": 0.25}}],
    }  # eps this large: stage 0 ends after 2 epochs
    curriculum = Curriculum.from_recipe(Recipe.from_dict(raw))
    first, second = curriculum.stages
    assert (first.data.fraction, first.loss_plateau.window, first.weights) == (0.5, 2, {"ce": 1.0})
    assert second.data is None and second.open_ended and second.weights == {"ce": 0.25}
    result = run(Recipe.from_dict(raw))
    epochs = [
        r
        for r in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines())
        if r["stage"] == "distill" and r["kind"] == "epoch"
    ]
    assert [r["curriculum_stage"] for r in epochs] == [
        0,
        0,
        1,
        1,
        1,
        1,
    ]  # the plateau ended stage 0, not the curriculum's 3 epochs
    assert epochs[0]["step"] < epochs[2]["step"] - epochs[1]["step"]  # stage 0 trained on half the data
