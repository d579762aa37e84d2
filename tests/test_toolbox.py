"""The training recipe toolbox: each knob changes what it should."""

import json

import pytest
import torch
from safetensors.torch import load_file

from kdforge import Recipe, run
from kdforge.callbacks import Callback
from kdforge.config import OptimConfig, TrainConfig
from kdforge.data import build_dataset, make_loader
from kdforge.distiller import Distiller
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.trainer import Trainer


@pytest.fixture(scope="module")
def data():
    return build_dataset("digits")


def fit_student(data, tmp, train_cfg, optim_cfg=None, model=None, callbacks=(), losses=None):
    torch.manual_seed(0)
    student = model or build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    distiller = Distiller(student, None, build_losses(losses or [{"name": "ce"}]), data.train.x[:2])
    train = make_loader(data.train, 100, shuffle=True)
    trainer = Trainer(distiller, optim_cfg or OptimConfig(lr=1e-2), train_cfg, steps_per_epoch=len(train), checkpoint_dir=tmp, callbacks=callbacks)
    return trainer, trainer.fit(train, make_loader(data.val, 512))


class Snapshots(Callback):
    """The student's weights after every optimiser step."""

    def __init__(self):
        self.states = []

    def on_step_end(self, trainer, samples):
        self.states.append({k: v.clone() for k, v in trainer.distiller.student.state_dict().items()})


def test_student_ema_is_the_hand_computed_average_and_is_what_is_selected(data, tmp_path):
    snapshots = Snapshots()
    torch.manual_seed(0)
    initial = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16]).state_dict()
    trainer, result = fit_student(data, tmp_path, TrainConfig(epochs=1, ema_decay=0.9, ema_warmup=False), callbacks=[snapshots])
    expected = {k: v.clone() for k, v in initial.items()}
    for state in snapshots.states:  # e <- 0.9 e + 0.1 w after each of the k steps
        expected = {k: 0.9 * expected[k] + 0.1 * state[k] for k in expected}
    got = trainer.ema.module.state_dict()
    assert len(snapshots.states) == 12 and all(torch.allclose(got[k], expected[k], atol=1e-6) for k in expected)
    assert not torch.allclose(got["head.weight"], snapshots.states[-1]["head.weight"])  # the average is not the last weights
    assert result.best_val == trainer.evaluate(make_loader(data.val, 512))  # validation measured the EMA
    trainer.load_best()
    assert torch.equal(trainer.distiller.student.state_dict()["head.weight"], got["head.weight"])  # and the best is the EMA


def test_ema_warmup_ramps_the_decay():
    from kdforge.ema import ModelEMA

    ema = ModelEMA(torch.nn.Linear(2, 2), 0.999)
    assert [round(ema.decay_at(s), 4) for s in (0, 10, 10_000)] == [0.1, 0.55, 0.999]


def test_a_run_with_ema_exports_the_average_and_says_so(tiny_recipe):
    tiny_recipe["train"] = {"epochs": 2, "baseline": False, "ema_decay": 0.8}
    result = run(Recipe.from_dict(tiny_recipe))
    best = torch.load(result.run_dir / "best.pt", weights_only=True)
    exported = load_file(result.run_dir / "student.safetensors")
    assert all(torch.equal(exported[k], best["ema"][k]) for k in exported)
    assert not all(torch.equal(exported[k], best["student"][k]) for k in exported)
    assert json.loads((result.run_dir / "results.json").read_text())["student"]["weights"] == "EMA (decay 0.8)"
