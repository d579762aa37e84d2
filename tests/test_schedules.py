"""Weight and temperature schedules, and the learnable CTKD temperature."""

import math

import pytest
import torch

from kdforge.config import Recipe
from kdforge.errors import ConfigError
from kdforge.losses import StepContext, build_loss
from kdforge.losses import functional as lf
from kdforge.losses.terms import Shapes
from kdforge.schedules import Clock, ScheduleConfig, cosine_ramp, schedule_value


def at(progress=0.0, epoch=0, epochs=11, stage=0, stages=1):
    return Clock(step=0, epoch=epoch, epochs=epochs, progress=progress, stage=stage, stages=stages)


def spec(**kw):
    return ScheduleConfig.model_validate(kw)


def test_each_schedule_against_its_formula():
    assert schedule_value(3.0, at(0.7)) == 3.0
    assert schedule_value(spec(schedule="constant", value=2.0), at(0.7)) == 2.0
    linear = spec(schedule="linear", start=4.0, end=1.0)
    assert [schedule_value(linear, at(x)) for x in (0, 0.5, 1)] == pytest.approx([4.0, 2.5, 1.0])
    exp = spec(schedule="exponential", start=1.0, end=16.0)
    assert [schedule_value(exp, at(x)) for x in (0, 0.25, 0.5, 1)] == pytest.approx([1.0, 2.0, 4.0, 16.0])
    cos = spec(schedule="cosine", start=8.0, end=2.0)
    assert [schedule_value(cos, at(x)) for x in (0, 0.5, 1)] == pytest.approx([8.0, 5.0, 2.0])
    assert schedule_value(cos, at(0.25)) == pytest.approx(2 + 6 * 0.5 * (1 + math.cos(math.pi / 4)))
    rising = spec(schedule="cosine", start=1.0, end=4.0)
    assert schedule_value(rising, at(0.1)) < schedule_value(rising, at(0.6)) < 4.0
    warm = spec(schedule="linear_warmup", value=0.9, warmup=0.2)
    assert [schedule_value(warm, at(x)) for x in (0, 0.1, 0.2, 0.9)] == pytest.approx([0.0, 0.45, 0.9, 0.9])
    step = spec(schedule="step", milestones=[0.5, 0.75], values=[1.0, 0.5, 0.1])
    assert [schedule_value(step, at(x)) for x in (0.2, 0.5, 0.8)] == pytest.approx([1.0, 0.5, 0.1])
    stages = spec(schedule="stages", values=[1.0, 2.0, 4.0])
    assert [schedule_value(stages, at(stage=s, stages=3)) for s in range(3)] == [1.0, 2.0, 4.0]


def test_clocks_steps_epochs_stages():
    by_epoch = spec(schedule="linear", start=0.0, end=10.0, over="epochs")
    assert schedule_value(by_epoch, at(progress=0.99, epoch=5, epochs=11)) == pytest.approx(
        5.0
    )  # constant within the epoch
    by_stage = spec(schedule="linear", start=1.0, end=4.0, over="stages")
    assert [schedule_value(by_stage, at(stage=s, stages=4)) for s in range(4)] == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_a_schedule_in_stages_holds_each_stage_value():
    five = spec(schedule="linear", start=4.0, end=0.5, stages=5)
    assert [schedule_value(five, at(x)) for x in (0.0, 0.19, 0.2, 0.5, 0.79, 0.8, 1.0)] == pytest.approx(
        [4.0, 4.0, 3.125, 2.25, 1.375, 0.5, 0.5]
    )
    by_epoch = spec(schedule="exponential", start=4.0, end=0.5, over="epochs", stages=2)
    assert [schedule_value(by_epoch, at(epoch=e, epochs=10)) for e in (0, 4, 5, 9)] == pytest.approx(
        [4.0, 4.0, 0.5, 0.5]
    )
    with pytest.raises(ValueError):
        spec(schedule="linear", start=1.0, end=0.5, stages=1)


def test_bad_schedules_are_clear():
    with pytest.raises(ValueError, match="schedule 'linear' needs start, end"):
        spec(schedule="linear")
    with pytest.raises(ValueError, match="one more value than milestones"):
        spec(schedule="step", milestones=[0.5], values=[1.0])
    raw = {
        "teacher": {"model": {"name": "mlp"}},
        "student": {"model": {"name": "mlp"}},
        "losses": [{"name": "kd", "temperature": {"schedule": "cosin", "start": 4.0, "end": 1.0}}],
    }
    with pytest.raises(ConfigError, match=r"losses\.0\.temperature"):
        Recipe.from_dict(raw)


def test_recipes_accept_scheduled_weights_and_temperatures():
    raw = {
        "teacher": {"model": {"name": "mlp"}},
        "student": {"model": {"name": "mlp"}},
        "losses": [
            {"name": "ce", "weight": {"schedule": "cosine", "start": 1.0, "end": 0.1}},
            {
                "name": "kd",
                "weight": 0.9,
                "temperature": {"schedule": "linear", "start": 1.0, "end": 4.0, "over": "epochs"},
            },
            {"name": "dkd", "temperature": {"learnable": "ctkd", "init": 4.0, "lr": 0.01}},
        ],
    }
    recipe = Recipe.from_dict(raw)
    assert isinstance(recipe.losses[0].weight, ScheduleConfig)
    assert Recipe.from_dict(recipe.to_dict()) == recipe  # round trip through YAML values
    with pytest.raises(ConfigError, match="min < init < max"):
        Recipe.from_dict({**raw, "losses": [{"name": "kd", "temperature": {"learnable": "ctkd", "init": 40.0}}]})


# ----------------------------------------------------------------------------- CTKD


def ctkd_term(**options):
    term = build_loss({"name": "kd", "temperature": {"learnable": "ctkd", "init": 4.0, "ramp": 0.5, **options}})
    term.name = "kd"
    term.setup(Shapes(torch.Size([8, 5]), torch.Size([8, 5])))
    return term


def logits(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 5, generator=g) * 2, torch.randn(8, 5, generator=g) * 2


def test_lambda_rises_from_zero_to_one_along_a_cosine():
    values = [cosine_ramp(p, 0.5) for p in (0.0, 0.1, 0.25, 0.4, 0.5, 0.9)]
    assert values[0] == 0.0 and values[2] == pytest.approx(0.5) and values[4] == values[5] == 1.0
    assert all(a < b for a, b in zip(values[:5], values[1:5]))


@pytest.mark.parametrize("mode", ["global", "instance"])
def test_ctkd_temperature_ascends_the_kd_loss_while_the_student_descends_it(mode):
    s, tt = logits()
    term = ctkd_term(mode=mode)
    theta = list(term.temperature.parameters())
    student = s.clone().requires_grad_()
    ctx = StepContext(None, None, student, tt, clock=at(progress=0.9))  # past the ramp: λ = 1
    loss = term(ctx)
    loss.backward()
    before = loss.item()
    with torch.no_grad():  # one plain gradient *descent* step, first on the student alone, then on τ alone
        after_student = term(StepContext(None, None, student - 0.5 * student.grad, tt, clock=at(progress=0.9))).item()
        for p in theta:
            p -= 0.5 * p.grad
        after_tau = term(StepContext(None, None, s, tt, clock=at(progress=0.9))).item()
    assert after_tau > before  # the reversed gradient made the temperature *increase* the loss
    assert after_student < before  # the student's gradient is not reversed


def test_ctkd_gets_no_gradient_at_the_start_and_stays_bounded():
    s, tt = logits()
    term = ctkd_term(min=1.0, max=21.0)
    term(StepContext(None, None, s.requires_grad_(), tt, clock=at(progress=0.0))).backward()
    assert term.temperature.theta.grad.item() == 0.0  # λ = 0 at the start
    assert term.temperature._raw.item() == pytest.approx(4.0)
    with torch.no_grad():
        term.temperature.theta.fill_(50.0)
    term(StepContext(None, None, s, tt, clock=at(progress=0.9)))
    assert 1.0 <= term.temperature._raw.item() <= 21.0


def test_ctkd_per_instance_temperatures_and_the_kd_formula():
    s, tt = logits()
    term = ctkd_term(mode="instance")
    value = term(StepContext(None, None, s, tt, clock=at(progress=0.9)))
    tau = term.temperature._raw
    assert tau.shape == (8,) and torch.allclose(tau, torch.full((8,), 4.0))  # starts at init for every sample
    assert value.item() == pytest.approx(lf.kd_loss(s, tt, tau).item(), rel=1e-6)


def test_ctkd_anchor_regulariser_pulls_towards_the_anchor():
    s, tt = logits()
    term = ctkd_term(reg=1.0, anchor=2.0, lambda_max=0.0)  # λ = 0: only the regulariser moves τ
    loss = term(StepContext(None, None, s, tt, clock=at(progress=0.9)))
    assert loss.item() == pytest.approx(lf.kd_loss(s, tt, 4.0).item() + (4.0 - 2.0) ** 2, rel=1e-5)
    loss.backward()
    with torch.no_grad():
        term.temperature.theta -= 0.1 * term.temperature.theta.grad
    term(StepContext(None, None, s, tt, clock=at(progress=0.9)))
    assert term.temperature._raw.item() < 4.0


def test_ctkd_learns_under_bf16_autocast():
    s, tt = logits()
    term = ctkd_term()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = term(StepContext(None, None, s.bfloat16().requires_grad_(), tt.bfloat16(), clock=at(progress=0.9)))
    loss.backward()
    grad = term.temperature.theta.grad
    assert term.temperature._raw.dtype == torch.float32 and torch.isfinite(grad) and grad.abs().item() > 0


def test_ctkd_trains_in_its_own_group_and_is_logged_every_step(tmp_path):
    from kdforge.callbacks import Callback
    from kdforge.config import OptimConfig, TrainConfig
    from kdforge.data import build_dataset, make_loader
    from kdforge.distiller import Distiller
    from kdforge.losses import build_losses
    from kdforge.models import build_model
    from kdforge.teachers import Teacher
    from kdforge.trainer import Trainer

    data = build_dataset("digits")
    teacher = Teacher(build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[32]))
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    terms = build_losses(
        [{"name": "ce"}, {"name": "kd", "temperature": {"learnable": "ctkd", "init": 4.0, "lr": 0.05, "ramp": 0.1}}]
    )
    distiller = Distiller(student, teacher, terms, data.train.x[:2])
    train = make_loader(data.train, 100, shuffle=True)
    seen = []

    class Record(Callback):
        def on_step_end(self, trainer, samples):
            seen.append(trainer.losses()["kd.tau"])

    trainer = Trainer(
        distiller,
        OptimConfig(lr=1e-3),
        TrainConfig(epochs=2),
        steps_per_epoch=len(train),
        checkpoint_dir=tmp_path,
        callbacks=[Record()],
    )
    groups = trainer.optimizer.param_groups
    theta = terms[1].temperature.theta
    assert any(g["lr"] == pytest.approx(0.05) and any(p is theta for p in g["params"]) for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(distiller.trainable_parameters())
    trainer.fit(train, make_loader(data.val, 512))
    assert len(seen) == 2 * len(train) and seen[0] == pytest.approx(4.0) and seen[-1] != pytest.approx(4.0)
    assert "kd.tau" in trainer.pos.history[-1]["train"]
