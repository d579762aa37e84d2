"""Resume gives the uninterrupted result; NaN stops with the term's name; checkpoints kept."""

import json

import pytest
import torch

from kdforge.callbacks import Callback
from kdforge.config import OptimConfig, TrainConfig
from kdforge.data import build_dataset, make_loader
from kdforge.data.augment import BatchAugment
from kdforge.distiller import Distiller
from kdforge.errors import NonFiniteLossError
from kdforge.evaluate import is_better
from kdforge.losses import LossTerm, build_losses
from kdforge.models import build_model
from kdforge.teachers import Teacher
from kdforge.trainer import FINITE_EVERY, Trainer, _StepLosses, weighted_sum


class StopAtStep(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, samples):
        if trainer.pos.step == self.step:
            trainer.should_stop = True  # what Ctrl-C does


@pytest.fixture(scope="module")
def data():
    return build_dataset("digits")


def build(seed, terms=None, accumulate=1, epochs=2, tmp=None, callbacks=(), data=None, **train_options):
    torch.manual_seed(99)  # the teacher is not in last.pt: its source gives the same weights again
    teacher = Teacher(build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[32]))
    torch.manual_seed(seed)
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16], dropout=0.2)
    distiller = Distiller(
        student, teacher, terms or build_losses([{"name": "ce"}, {"name": "kd"}]), torch.randn(2, 1, 8, 8)
    )
    train = make_loader(data.train, 50, shuffle=True, seed=3, transform=BatchAugment(shift=1, noise=0.1))
    cfg = TrainConfig.model_validate(
        {
            "epochs": epochs,
            "accumulate": accumulate,
            "grad_clip": 1.0,
            "ema_decay": 0.9 if accumulate > 1 else None,
            **train_options,
        }
    )  # with an EMA: it resumes too
    trainer = Trainer(
        distiller,
        OptimConfig(lr=3e-3, warmup_epochs=0.5),
        cfg,
        steps_per_epoch=len(train),
        checkpoint_dir=tmp,
        callbacks=callbacks,
    )
    return distiller, trainer, train, make_loader(data.val, 512)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_resume_equals_uninterrupted(tmp_path, data, accumulate):
    distiller, trainer, train, val = build(0, accumulate=accumulate, tmp=tmp_path / "a", data=data)
    full = trainer.fit(train, val)
    expected = distiller.student_state_dict()

    distiller, trainer, train, val = build(
        0, accumulate=accumulate, tmp=tmp_path / "b", callbacks=[StopAtStep(4)], data=data
    )
    stopped = trainer.fit(train, val)
    assert stopped.interrupted and (tmp_path / "b" / "last.pt").exists()
    assert trainer.pos.epoch == 0 and trainer.pos.batch == 4 * accumulate  # stopped mid-epoch

    distiller, trainer, train, val = build(123, accumulate=accumulate, tmp=tmp_path / "b", data=data)  # a fresh process
    resumed = trainer.fit(train, val, resume=True)
    got = distiller.student_state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert [r["val"] for r in resumed.history] == [r["val"] for r in full.history]
    assert resumed.best_epoch == full.best_epoch


class BlowsUp(LossTerm):
    uses_teacher = False

    def __init__(self, at_step):
        super().__init__()
        self.name, self.at_step = "unstable", at_step

    def forward(self, ctx):
        value = ctx.student_logits.mean() * 0
        return value + (float("nan") if ctx.step >= self.at_step else 0.0)


class StepNumber(LossTerm):
    uses_teacher = False

    def __init__(self):
        super().__init__()
        self.name = "step_number"

    def forward(self, ctx):
        return ctx.student_logits.sum() * 0 + ctx.step


class LastStep(Callback):
    def on_step_end(self, trainer, samples):
        self.losses = trainer.losses()


@pytest.mark.parametrize("accumulate", [1, 5])
def test_epoch_losses_are_the_mean_over_its_steps(tmp_path, data, accumulate):
    # 24 micro-batches an epoch: one step each (the losses are summed at step 32, mid-epoch 2), or steps of 5, 5, 5,
    # 5 and 4 micro-batches, each step's loss the mean over its micro-batches
    last = LastStep()
    _, trainer, train, val = build(0, [StepNumber()], accumulate, tmp=tmp_path, callbacks=[last], data=data)
    assert trainer.losses() == {}
    result = trainer.fit(train, val)
    steps = 24 // accumulate + (24 % accumulate > 0)
    for epoch, record in enumerate(result.history):
        assert record["train"] == {
            "loss": pytest.approx(steps * epoch + (steps - 1) / 2),
            "step_number": pytest.approx(steps * epoch + (steps - 1) / 2),
        }
    assert last.losses == {"loss": 2 * steps - 1, "step_number": 2 * steps - 1}


def test_nan_loss_names_the_term_and_keeps_the_last_good_checkpoint(tmp_path, data):
    terms = build_losses([{"name": "ce"}]) + [BlowsUp(at_step=30)]  # 24 steps per epoch: epoch 1 completes
    distiller, trainer, train, val = build(0, terms=terms, tmp=tmp_path, data=data, checkpoint_interval=0)
    with pytest.raises(
        NonFiniteLossError,
        match=r"loss term 'unstable' became nan in epoch 2, between steps 25 and 32; "
        r"the last good checkpoint is .*last.pt",
    ):
        trainer.fit(train, val)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["position"]["epoch"] == 1 and (tmp_path / "best.pt").exists()


def test_lr_warmup_then_cosine(tmp_path, data):
    distiller, trainer, train, val = build(0, epochs=1, tmp=tmp_path, data=data)
    lrs = []

    class Record(Callback):
        def on_step_end(self, trainer, samples):
            lrs.append(trainer.step_lr)

    trainer.callbacks.append(Record())
    trainer.fit(train, val)
    peak = max(lrs)
    assert lrs[0] == pytest.approx(3e-3 / 12) and peak == pytest.approx(3e-3, rel=1e-6)
    assert lrs.index(peak) == 11 and lrs[-1] < 1e-4  # 12 warm-up steps (half an epoch of 24)


@pytest.mark.parametrize("interval, expected", [(0.0, [1, 2, 3]), (1e9, [3])])
def test_last_checkpoint_interval(tmp_path, data, interval, expected):
    distiller, trainer, train, val = build(0, epochs=3, tmp=tmp_path, data=data)
    trainer.cfg = trainer.cfg.model_copy(update={"checkpoint_interval": interval})
    saved, logged = [], []

    class Record(Callback):
        def on_epoch_end(self, trainer, record):
            logged.append(trainer.pos.epoch)

        def on_checkpoint(self, trainer):  # told before each write, after the epoch's own callbacks
            saved.append(trainer.pos.epoch)
            assert logged[-1] == trainer.pos.epoch

    trainer.callbacks.append(Record())
    trainer.fit(train, val)
    assert saved == expected  # the first write one interval into the fit; the last epoch is always written
    assert torch.load(tmp_path / "last.pt", weights_only=True)["position"]["epoch"] == 3


def test_fp16_with_a_gradient_scaler_and_channels_last_train(tiny_recipe):
    from kdforge import Recipe, run

    tiny_recipe["student"] = {"model": {"name": "cnn", "width": 4, "depth": 2}}
    tiny_recipe["train"] = {"epochs": 1, "baseline": False, "amp": "fp16", "channels_last": True, "grad_clip": 1.0}
    result = run(Recipe.from_dict(tiny_recipe))
    last = torch.load(result.run_dir / "last.pt", weights_only=True)
    assert last["scaler"]["scale"] > 0 and 0.1 < result.student_accuracy <= 1.0


def test_compiled_student_keeps_its_own_names():
    from kdforge.machine import compiled
    from kdforge.taps import unwrap

    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[8])
    wrapped = compiled(student)
    assert wrapped is not student and unwrap(wrapped) is student  # exports and taps see the student's own names
    assert torch._dynamo.config.suppress_errors  # graphs that fail to compile run eagerly


def test_a_backward_graph_that_fails_to_compile_runs_eagerly(monkeypatch):
    import torch._inductor.compile_fx

    from kdforge.machine import compiled

    def broken(*args, **kwargs):
        raise RuntimeError("PassManager::run failed")  # what Triton raised for one backward kernel

    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx_backward", broken)
    torch._dynamo.reset()
    torch.manual_seed(0)
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[8])
    x = torch.randn(4, 1, 8, 8)
    compiled(student)(x).square().sum().backward()
    grads = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    student(x).square().sum().backward()
    assert all(torch.allclose(g, p.grad) for g, p in zip(grads, student.parameters()))
    torch._dynamo.reset()


@pytest.mark.slow
def test_a_compiled_run_trains(tiny_recipe):
    from kdforge import Recipe, run

    tiny_recipe["train"] = {"epochs": 1, "baseline": False, "compile": True}
    assert run(Recipe.from_dict(tiny_recipe)).student_accuracy > 0.1


def test_every_loss_term_is_logged_on_validation_too(tiny_recipe):
    import json

    from kdforge import Recipe, run

    result = run(Recipe.from_dict({**tiny_recipe, "train": {"epochs": 1, "baseline": False}}))
    epochs = [
        r for r in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"
    ]
    distill = next(r for r in epochs if r["stage"] == "distill")
    terms = distill["val_terms"]
    assert set(terms) == {"loss", "ce", "kd"} and terms["kd"] > 0
    assert terms["ce"] == pytest.approx(distill["val"]["loss"], rel=1e-4)  # the same student on the same split
    assert terms["loss"] == pytest.approx(0.5 * terms["ce"] + 0.5 * terms["kd"], rel=1e-4)
    teacher = next(r for r in epochs if r["stage"] == "teacher")
    assert teacher["val_terms"]["ce"] == pytest.approx(teacher["val"]["loss"], rel=1e-4)
    quiet = run(
        Recipe.from_dict(
            {
                **tiny_recipe,
                "train": {"epochs": 1, "baseline": False},
                "log": {**tiny_recipe["log"], "val_terms": False},
            }
        )
    )
    assert all(
        "val_terms" not in json.loads(line) for line in (quiet.run_dir / "metrics.jsonl").read_text().splitlines()
    )


def test_a_step_budget_instead_of_epochs(tiny_recipe):
    import json

    from kdforge import Recipe, run

    result = run(
        Recipe.from_dict(
            {
                **tiny_recipe,
                "train": {"epochs": 50, "max_steps": 25, "baseline": True},
                "optim": {"lr": 3e-3, "min_lr": 1e-4},
            }
        )
    )
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    for stage in ("distill", "baseline"):
        epochs = [r for r in records if r["stage"] == stage and r["kind"] == "epoch"]
        assert [r["step"] for r in epochs] == [19, 25]  # 19 steps an epoch (1167 samples / 64), then 6 of the budget
        # the cosine schedule spans the budget, not the 50 epochs (where step 19 would still be near the peak, 3e-3)
        assert 1e-4 < epochs[-1]["lr"] < 1.2e-4 and 2e-4 < epochs[0]["lr"] < 8e-4
    assert result.results["student"]["epochs_run"] == 2
    teacher = [r for r in records if r["stage"] == "teacher" and r["kind"] == "epoch"]
    assert len(teacher) == tiny_recipe["teacher"]["train"]["epochs"]  # the teacher keeps its own epochs


IN_TWO_STAGES = {"schedule": "linear", "start": 4.0, "end": 1.0, "over": "epochs", "stages": 2}


@pytest.mark.parametrize(
    "term",
    [
        {"name": "kd", "weight": 0.5, "temperature": IN_TWO_STAGES},
        {"name": "sim_kl", "weight": 0.5, "temperature": IN_TWO_STAGES},  # an embedding term's curriculum
        {"name": "kd", "weight": IN_TWO_STAGES},
    ],
    ids=["kd temperature", "sim_kl temperature", "kd weight"],
)
def test_a_student_snapshot_as_each_stage_of_a_scheduled_term_ends(term, tiny_recipe):
    """One rule for every term: a weight or temperature held in stages gives one snapshot per stage."""
    import json

    from kdforge import Recipe, load_student, run

    losses = [{"name": "ce", "weight": 0.5}, term]
    result = run(
        Recipe.from_dict(
            {**tiny_recipe, "losses": losses, "train": {"epochs": 4, "baseline": False, "stage_checkpoints": True}}
        )
    )
    stages = result.run_dir / "stages"
    assert sorted(p.name for p in stages.glob("*.safetensors")) == ["stage_1.safetensors", "stage_2.safetensors"]
    assert [json.loads((stages / f"stage_{i}.json").read_text())["epoch"] for i in (1, 2)] == [
        2,
        4,
    ]  # τ 4 for epochs 1-2, then 1
    final = load_student(result.run_dir / "stages" / "stage_2.safetensors").state_dict()
    first = load_student(result.run_dir / "stages" / "stage_1.safetensors").state_dict()
    assert any(not torch.equal(first[k], final[k]) for k in first)  # two moments of training, not one copied twice


def test_validation_every_n_epochs_selects_among_the_validated_ones(tiny_recipe):
    from kdforge import Recipe, run

    tiny_recipe["train"] = {"epochs": 5, "val_every": 2, "baseline": False}
    result = run(Recipe.from_dict(tiny_recipe))
    history = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    distilled = [r for r in history if r["kind"] == "epoch" and r["stage"] == "distill"]
    assert [r["epoch"] for r in distilled if "val" in r] == [2, 4, 5]  # every second epoch, and the last
    assert len(distilled) == 5 and all("loss" in r["train"] for r in distilled)
    assert result.results["student"]["best_epoch"] in (2, 4, 5)


def test_a_run_validating_by_steps_logs_each_validation_and_reports_its_step(tiny_recipe):
    from kdforge import Recipe, run

    tiny_recipe["train"] = {"epochs": 2, "val_every": {"steps": 6}, "baseline": False}
    result = run(Recipe.from_dict(tiny_recipe))
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in lines if r["kind"] == "val" and r["stage"] == "distill"]
    last = [r["step"] for r in lines if r["kind"] == "epoch" and r["stage"] == "distill"][-1]
    assert [r["step"] for r in validations] == list(range(6, last, 6))  # the last step is validated with the end
    assert all("accuracy" in r["val"] for r in validations)
    best_step = result.results["student"]["best_step"]
    assert best_step in {r["step"] for r in validations} | {last}
    assert "best step chosen on validation" in (result.run_dir / "report.md").read_text()
    assert (result.run_dir / "plots" / "accuracy.png").exists()
    with pytest.raises(Exception, match=r"train.val_every: give a number of epochs .* \{steps: N\}"):
        Recipe.from_dict(tiny_recipe, ["train.val_every={step: 6}"])


def test_early_stopping_patience_counts_epochs_when_validating_every_n(tiny_recipe):
    from kdforge import Recipe, run

    tiny_recipe["train"] = {
        "epochs": 40,
        "val_every": 3,
        "baseline": False,
        "early_stopping": {"patience": 6, "min_delta": 1.0},
    }  # fmt: skip  (never improves by 1)
    result = run(Recipe.from_dict(tiny_recipe))
    assert result.results["student"]["epochs_run"] == 9  # validated at 3 (first), 6 and 9: 6 epochs without gain


@pytest.mark.parametrize(
    "student, teacher, asked, expected",
    [
        ({"name": "cnn", "width": 4}, {"name": "mlp"}, "auto", torch.channels_last),  # the student convolves
        ({"name": "mlp"}, {"name": "cnn", "width": 4}, "auto", torch.channels_last),  # the teacher does
        ({"name": "mlp"}, {"name": "mlp"}, "auto", torch.contiguous_format),  # nothing convolves
        ({"name": "cnn", "width": 4}, {"name": "cnn", "width": 4}, False, torch.contiguous_format),
        ({"name": "mlp"}, {"name": "mlp"}, True, torch.channels_last),
    ],
)
def test_channels_last_by_default_where_something_convolves_images(tiny_recipe, student, teacher, asked, expected):
    from kdforge import Recipe
    from kdforge.data import recipe_data
    from kdforge.layout import memory_format

    tiny_recipe.update(student={"model": student}, teacher={"source": "train", "model": teacher})
    tiny_recipe["train"]["channels_last"] = asked
    recipe = Recipe.from_dict(tiny_recipe)
    assert memory_format(recipe, recipe_data(recipe.data, 0)) == expected
    sequences = Recipe.from_dict({**tiny_recipe, "data": {"name": "mnist1d"}})  # [B, C, L]: no image layout
    assert memory_format(sequences, recipe_data(sequences.data, 0)) == torch.contiguous_format


def test_batches_already_channels_last_are_not_converted_back():
    from kdforge.data.loaders import in_layout

    fast = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert in_layout(fast, torch.contiguous_format) is fast
    assert in_layout(fast.transpose(2, 3), torch.contiguous_format).is_contiguous()  # a strided view is made dense
    assert in_layout(torch.randn(4, 3, 8, 8), torch.channels_last).is_contiguous(memory_format=torch.channels_last)


class Validations(Callback):
    """What each validation between epoch ends saw, and the student's weights then."""

    def __init__(self):
        self.records, self.weights = [], []

    def on_validation(self, trainer, record):
        self.records.append(record)
        self.weights.append({k: v.clone() for k, v in trainer.distiller.student_state_dict().items()})


def test_validation_every_n_steps_selects_among_them(tmp_path, data):
    seen = Validations()
    distiller, trainer, train, val = build(0, tmp=tmp_path, callbacks=[seen], data=data, val_every={"steps": 7})
    result = trainer.fit(train, val)
    last = 2 * len(train)
    inside = list(range(7, last, 7))  # the last step is validated as training ends
    assert [r["step"] for r in seen.records] == inside
    steps = [v["step"] for r in result.history for v in r.get("validations", [])]
    assert steps == [*inside, last]
    assert all(v["epoch"] == pytest.approx(v["step"] / len(train), abs=1e-4) for r in result.history
               for v in r["validations"])  # fmt: skip
    expected = None
    for v in (v for r in result.history for v in r["validations"]):
        if expected is None or is_better(v["val"], expected["val"]):
            expected = v
    best = trainer.load_best()
    assert (best["step"], best["val"]) == (expected["step"], expected["val"])
    if best["step"] != last:  # the selected weights are those validated at that step, not the last ones
        chosen = seen.weights[inside.index(best["step"])]
        got = distiller.student_state_dict()
        assert all(torch.equal(chosen[k], got[k]) for k in chosen)
    assert result.history[0]["val"] == result.history[0]["validations"][-1]["val"]  # the epoch's latest score


def test_early_stopping_by_steps_counts_fractions_of_an_epoch(tmp_path, data):
    distiller, trainer, train, val = build(
        0, epochs=4, tmp=tmp_path, data=data, val_every={"steps": 5}, early_stopping={"patience": 0.5, "min_delta": 1}
    )  # never improves by 1: stops once half an epoch has passed since the first validation
    result = trainer.fit(train, val)
    per_epoch = len(train)
    expected = 5 * (1 + next(k for k in range(1, 100) if k * 5 / per_epoch >= 0.5))
    assert result.stopped_early and trainer.pos.step == expected
    assert len(result.history) == 1 + (expected - 1) // per_epoch  # the epoch it stopped in is recorded


def test_resume_mid_epoch_keeps_the_validations_by_steps(tmp_path, data):
    def fit(folder, callbacks=(), resume=False):
        _, trainer, train, val = build(0, tmp=tmp_path / folder, callbacks=callbacks, data=data, val_every={"steps": 4})
        return trainer.fit(train, val, resume=resume), trainer.load_best()

    full, full_best = fit("a")
    stopped, _ = fit("b", callbacks=[StopAtStep(10)])
    assert stopped.interrupted and not stopped.history  # stopped mid-epoch, after the validations at steps 4 and 8
    resumed, resumed_best = fit("b", resume=True)
    assert [r["validations"] for r in resumed.history] == [r["validations"] for r in full.history]
    assert (resumed_best["step"], resumed_best["val"]) == (full_best["step"], full_best["val"])


def test_evaluate_sums_every_batch(data):
    """Accuracy and mean cross-entropy over several batches (the last one short) equal those of the whole split
    at once: each batch counts by its samples."""
    from kdforge.evaluate import evaluate

    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16], dropout=0.5).train()
    metrics = evaluate(model, make_loader(data.val, batch_size=64))
    assert model.training  # the model is handed back in the mode it came in
    with torch.no_grad():
        logits = model.eval()(data.val.x)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(-1) == data.val.y).float().mean().item())
    assert metrics["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, data.val.y).item(), rel=1e-5)


def test_evaluate_sums_a_regression_over_batches():
    """A regression's mean squared error and PSNR over several batches (the last one short, the largest |target| in
    it) equal those of the whole split at once."""
    import math

    from kdforge.data.bundle import Split
    from kdforge.evaluate import evaluate

    torch.manual_seed(0)
    x, y = torch.randn(150, 4), torch.randn(150, 3)
    y[140, 1] = 9.0
    model = torch.nn.Linear(4, 3)
    metrics = evaluate(model, make_loader(Split(x, y), batch_size=64))
    with torch.no_grad():
        mse = float((model(x) - y).square().mean())
    assert metrics["mse"] == pytest.approx(mse, rel=1e-5)
    assert metrics["psnr_db"] == pytest.approx(10 * math.log10(81.0 / mse), rel=1e-5)


def test_step_losses_sum_as_the_stacked_steps_do_across_buffer_growth():
    """The steps' loss values written row by row into a buffer that grows past its first FINITE_EVERY rows sum to
    exactly what stacking them all at once gives, and a sum taken starts the next one empty."""
    gen = torch.Generator().manual_seed(0)
    steps = [
        ([torch.rand((), generator=gen) * 10 for _ in range(3)], 1.0 / (1 + i % 4)) for i in range(3 * FINITE_EVERY)
    ]
    pending = _StepLosses()
    for values, weight in steps:
        pending.add(values, weight)
    assert torch.equal(pending.take_sum(), weighted_sum(steps))
    assert not pending and pending.take_sum() is None
    pending.add(*steps[5])
    assert torch.equal(pending.take_sum(), weighted_sum(steps[5:6]))


def test_the_trainer_takes_the_steps_a_plain_pytorch_loop_takes(data, tmp_path):
    """Two epochs of ½ CE + ½ KD (T = 4) with AdamW (weight decay on the weights only, a constant rate): the student
    after every optimiser step is what a hand-written loop over the same batches makes of it. A leaner or faster
    step (fused optimisers, fewer device waits, logging written later) must not change what is learnt."""
    import copy

    import torch.nn.functional as F

    states = []

    class AfterEachStep(Callback):
        def on_step_end(self, trainer, samples):
            states.append({k: v.clone() for k, v in trainer.distiller.student.state_dict().items()})

    torch.manual_seed(99)
    teacher = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[32]).eval()
    torch.manual_seed(0)
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    hand = copy.deepcopy(student)
    terms = build_losses([{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 4.0}])
    distiller = Distiller(student, Teacher(copy.deepcopy(teacher)), terms, torch.randn(2, 1, 8, 8))
    optim = OptimConfig(lr=3e-3, weight_decay=0.01, schedule="constant")
    train = make_loader(data.train, 50, shuffle=True, seed=3)
    cfg = TrainConfig(epochs=2)
    trainer = Trainer(
        distiller, optim, cfg, steps_per_epoch=len(train), checkpoint_dir=tmp_path, callbacks=[AfterEachStep()]
    )
    trainer.fit(train, make_loader(data.val, 512))

    decay = [p for p in hand.parameters() if p.dim() > 1]
    rest = [p for p in hand.parameters() if p.dim() <= 1]
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=3e-3)
    batches = make_loader(data.train, 50, shuffle=True, seed=3)
    step = 0
    for epoch in range(2):
        for x, y in batches.epoch(epoch):  # each epoch's own order, as the trainer reads it
            s, t = hand(x), teacher(x).detach()
            kd = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
            loss = 0.5 * F.cross_entropy(s, y) + 0.5 * kd
            adamw.zero_grad()
            loss.backward()
            adamw.step()
            for name, value in hand.state_dict().items():
                torch.testing.assert_close(states[step][name], value, rtol=1e-5, atol=1e-6, msg=f"step {step} {name}")
            step += 1
    assert step == len(states) == 2 * len(train)
