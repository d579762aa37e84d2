"""The training recipe toolbox: each knob changes what it should."""

import io
import json

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from kdforge import Recipe, run
from kdforge.callbacks import Callback, ConsoleProgress
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
    trainer = Trainer(
        distiller,
        optim_cfg or OptimConfig(lr=1e-2),
        train_cfg,
        steps_per_epoch=len(train),
        checkpoint_dir=tmp,
        callbacks=callbacks,
    )
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
    trainer, result = fit_student(
        data, tmp_path, TrainConfig(epochs=1, ema_decay=0.9, ema_warmup=False), callbacks=[snapshots]
    )
    expected = {k: v.clone() for k, v in initial.items()}
    for state in snapshots.states:  # e <- 0.9 e + 0.1 w after each of the k steps
        expected = {k: 0.9 * expected[k] + 0.1 * state[k] for k in expected}
    got = trainer.ema.module.state_dict()
    assert len(snapshots.states) == 12 and all(torch.allclose(got[k], expected[k], atol=1e-6) for k in expected)
    assert not torch.allclose(
        got["head.weight"], snapshots.states[-1]["head.weight"]
    )  # the average is not the last weights
    assert result.best_val == trainer.evaluate(make_loader(data.val, 512))  # validation measured the EMA
    trainer.load_best()
    assert torch.equal(
        trainer.distiller.student.state_dict()["head.weight"], got["head.weight"]
    )  # and the best is the EMA


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


# ----------------------------------------------------------------------------- optimisation


def vit(**options):
    torch.manual_seed(0)
    return build_model(
        "vit", input_shape=(1, 8, 8), num_classes=10, patch_size=4, embed_dim=16, depth=2, heads=2, **options
    )


def test_layer_decay_gives_each_depth_its_lr_and_norms_no_decay(data, tmp_path):
    model = vit()
    trainer, _ = fit_student(
        data, tmp_path, TrainConfig(epochs=1), OptimConfig(lr=1.0, layer_decay=0.5, schedule="constant"), model=model
    )
    by_param = {id(p): g for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    lr = {n: by_param[id(p)]["lr"] for n, p in named.items()}
    assert lr["cls_token"] == lr["patch_embed.weight"] == 0.125  # embeddings: 0.5^3
    assert (
        lr["blocks.0.attn.qkv.weight"] == 0.25
        and lr["blocks.1.ffn.0.weight"] == 0.5
        and lr["head.weight"] == lr["norm.bias"] == 1.0
    )
    decay = {n: by_param[id(p)]["weight_decay"] for n, p in named.items()}
    assert decay["blocks.0.attn.qkv.weight"] == decay["head.weight"] == 0.05
    assert decay["blocks.0.attn.qkv.bias"] == decay["norm.weight"] == decay["pos_embed"] == decay["cls_token"] == 0.0


def test_without_the_filter_everything_decays(data, tmp_path):
    trainer, _ = fit_student(data, tmp_path, TrainConfig(epochs=1), OptimConfig(filter_bias_and_bn=False))
    assert len(trainer.optimizer.param_groups) == 1 and trainer.optimizer.param_groups[0]["weight_decay"] == 0.05


def test_cosine_restarts_reset_the_lr_at_each_cycle_boundary():
    from kdforge.optim import lr_factor

    cfg = OptimConfig(lr=1.0, min_lr=0.0, lr_cycle_steps=10, lr_cycle_mul=2.0, lr_cycle_decay=0.5, warmup_epochs=1)
    factors = [
        lr_factor(1 + s / 5, 1 + (s + 1) / 5, 100, cfg, step=5 + s, steps_per_epoch=5) for s in range(40)
    ]  # after 5 warm-up steps
    assert factors[0] == 1.0 and factors[9] < 0.03  # first cycle: 10 steps
    assert (
        factors[10] == 0.5 and factors[29] < 0.02 and factors[30] == 0.25
    )  # then 20 steps at half the peak, then 40 at a quarter
    assert lr_factor(0.2, 0.4, 100, cfg, step=1, steps_per_epoch=5) == pytest.approx(0.4)  # warm-up unchanged


def test_gradient_centralisation_removes_each_rows_mean(data, tmp_path):
    seen = {}

    class Grads(Callback):
        def on_before_optimizer_step(self, trainer):
            seen["before"] = trainer.distiller.student.head.weight.grad.clone()

    trainer, _ = fit_student(
        data, tmp_path, TrainConfig(epochs=1), OptimConfig(grad_centralization=True), callbacks=[Grads()]
    )
    from kdforge.optim import centralize_gradients

    weight, bias = torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(3))
    weight.grad, bias.grad = torch.arange(12.0).view(3, 4), torch.ones(3)
    centralize_gradients([weight, bias])
    assert torch.allclose(weight.grad, torch.tensor([-1.5, -0.5, 0.5, 1.5]).expand(3, 4)) and torch.equal(
        bias.grad, torch.ones(3)
    )
    assert (
        seen["before"].mean(1).abs().max() > 1e-6
    )  # the raw gradient was not centred; the trainer centres it before the step


def test_centralised_training_differs_from_plain(data, tmp_path):
    plain, _ = fit_student(data, tmp_path / "a", TrainConfig(epochs=1))
    centred, _ = fit_student(
        data, tmp_path / "b", TrainConfig(epochs=1), OptimConfig(lr=1e-2, grad_centralization=True)
    )
    assert not torch.allclose(plain.distiller.student.head.weight, centred.distiller.student.head.weight)


# ----------------------------------------------------------------------------- regularisation


def test_drop_path_is_identity_in_eval_and_drops_samples_in_training():
    from kdforge.models.layers import DropPath, drop_path_rates

    x = torch.ones(1000, 3)
    layer = DropPath(0.25).eval()
    assert torch.equal(layer(x), x)
    out = layer.train()(x)
    kept = out[:, 0] > 0
    assert torch.all(out[kept] == 1 / 0.75) and abs(kept.float().mean() - 0.75) < 0.05
    assert drop_path_rates(0.2, 3) == pytest.approx([0.0, 0.1, 0.2])
    assert drop_path_rates(0.2, 3, "cosine") == pytest.approx([0.0, 0.1, 0.2]) and drop_path_rates(0.2, 5, "cosine")[
        1
    ] == pytest.approx(0.2 * (1 - 0.5**0.5) / 2)
    model = vit(drop_path=0.3, drop_path_schedule="linear").eval()
    assert [b.drop_path.rate for b in model.blocks] == pytest.approx([0.0, 0.3])
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), model(x))


def test_gradient_checkpointing_recomputes_blocks_and_keeps_the_gradients(data, tmp_path, monkeypatch):
    from kdforge.machine import checkpoint_blocks

    x, y = data.train.x[:8], data.train.y[:8]
    plain, checkpointed = vit(), vit()
    checkpoint_blocks(checkpointed)
    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    for model in (plain, checkpointed):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    assert len(calls) == 2  # one per block, in training
    assert all(torch.allclose(a.grad, b.grad, atol=1e-6) for a, b in zip(plain.parameters(), checkpointed.parameters()))
    with torch.no_grad():
        checkpointed(x)
    assert len(calls) == 2  # no recomputation without gradients


# ----------------------------------------------------------------------------- augmentation


def mix_config(**fields):
    from kdforge.config import AugmentConfig

    return AugmentConfig(**fields)


def test_mixup_mixes_inputs_and_targets_with_one_lambda():
    from kdforge.data.augment import Mixer
    from kdforge.schedules import Clock

    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    mixed, targets = Mixer(mix_config(mixup=0.4), 10)(x, y, Clock())
    lam = float(targets[0, 0])
    assert 0 < lam < 1 and torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0))
    assert torch.allclose(targets[0, 5], torch.tensor(1 - lam)) and torch.allclose(targets.sum(1), torch.ones(6))


def test_cutmix_pastes_a_box_and_lambda_is_the_kept_area():
    from kdforge.data.augment import Mixer
    from kdforge.schedules import Clock

    torch.manual_seed(1)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 16, 16).contiguous()  # sample i is all i
    mixed, targets = Mixer(mix_config(cutmix=1.0), 4)(x, torch.arange(4), Clock())
    own = (mixed[0] == 0).float().mean()
    assert 0 < own < 1 and torch.allclose(targets[0, 0], own) and torch.allclose(targets[0, 3], 1 - own)


def test_a_mixing_strength_schedule_starts_at_zero():
    from kdforge.data.augment import Mixer
    from kdforge.schedules import Clock, ScheduleConfig

    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    ramp = ScheduleConfig(schedule="linear", start=0.0, end=1.0)
    mixer = Mixer(mix_config(mixup=ramp), 4)
    unmixed, targets = mixer(x, y, Clock(progress=0.0))
    assert torch.equal(unmixed, x) and torch.equal(targets, torch.eye(4))
    assert not torch.equal(mixer(x, y, Clock(progress=0.5))[0], x)


def test_teacher_and_student_see_the_same_mixed_batch(data, tmp_path):
    from kdforge.data.augment import Mixer
    from kdforge.teachers import Teacher

    seen = {"teacher": [], "student": []}
    teacher = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[32])
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    for role, model in (("teacher", teacher), ("student", student)):
        model.register_forward_pre_hook(
            lambda m, args, role=role: seen[role].append(args[0].clone()) if m.training or role == "teacher" else None
        )
    distiller = Distiller(student, Teacher(teacher), build_losses([{"name": "ce"}, {"name": "kd"}]), data.train.x[:2])
    seen = {"teacher": [], "student": []}
    train = make_loader(data.train, 100, shuffle=True)
    mixer = Mixer(mix_config(mixup=0.4, cutmix=1.0), 10)
    trainer = Trainer(
        distiller,
        OptimConfig(),
        TrainConfig(epochs=1),
        steps_per_epoch=len(train),
        checkpoint_dir=tmp_path,
        mixer=mixer,
    )
    trainer._train_epoch(train)
    assert len(seen["teacher"]) == len(seen["student"]) == len(train)
    assert all(torch.equal(t, s) for t, s in zip(seen["teacher"], seen["student"]))
    rows = data.train.x.flatten(1)
    assert not any(
        bool((torch.cdist(s.flatten(1), rows).min(1).values < 1e-4).all()) for s in seen["student"]
    )  # mixed, not raw rows


def test_randaugment_changes_images_per_sample_and_checks_their_range():
    from kdforge.data.augment import RandAugment
    from kdforge.errors import KdforgeError

    torch.manual_seed(0)
    images = torch.rand(16, 1, 8, 8)
    mean, std = 0.3, 0.2
    ra = RandAugment(2, 15, (mean, std))
    out = ra((images - mean) / std)
    assert out.shape == images.shape and not torch.allclose(out, (images - mean) / std)
    back = out * std + mean
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5
    with pytest.raises(KdforgeError, match=r"needs images in \[0, 1\] before standardisation"):
        ra(images * 255)
    with pytest.raises(KdforgeError, match=r"works on images \[B, C, H, W\]"):
        ra(torch.rand(4, 1, 40))


def token_rows(n=64, length=40, vocab=100):
    """Rows of [CLS]=1, words from ids 10..10+vocab, [SEP]=2, then padding 0 (mask token 3)."""
    g = torch.Generator().manual_seed(0)
    rows = torch.zeros(n, length, dtype=torch.long)
    rows[:, 0], rows[:, 1:30], rows[:, 30] = 1, torch.randint(10, 10 + vocab, (n, 29), generator=g), 2
    return rows


def test_token_changes_spare_padding_and_special_tokens_mask_their_share_and_draw_the_rest_from_the_batch():
    from kdforge.data.augment import TokenAugment
    from kdforge.data.bundle import TokenIds

    ids = TokenIds(special=(0, 1, 2, 3), mask=3)
    rows = token_rows()
    torch.manual_seed(0)
    out = TokenAugment(0.3, 0.5, ids)(rows)
    spared = torch.ones_like(rows, dtype=torch.bool)
    spared[:, 1:30] = False
    assert torch.equal(out[spared], rows[spared]) and out.dtype == rows.dtype
    words = ~spared
    masked = (out == 3) & words
    replaced = (out != rows) & (out != 3) & words
    assert abs(masked.float().mean() / words.float().mean() - 0.15) < 0.03  # p × mask
    assert abs(replaced.float().mean() / words.float().mean() - 0.15) < 0.03  # p × (1 − mask), 1 % drawn unchanged
    assert set(out[replaced].tolist()) <= set(rows[words].tolist())  # the batch's own words
    assert not (TokenAugment(0.3, 0.0, ids)(rows) == 3).any()
    everything = TokenAugment(1.0, 1.0, ids)(rows)
    assert (everything[words] == 3).all() and torch.equal(everything[spared], rows[spared])
    only_special = torch.tensor([[1, 2, 0, 0], [1, 2, 0, 0]])
    assert torch.equal(TokenAugment(1.0, 0.0, ids)(only_special), only_special)  # nothing to draw from or change


def test_close_tokens_are_each_tokens_nearest_by_cosine_and_changes_draw_from_them_alone():
    from kdforge.data.augment import TokenAugment, closest_tokens, token_table
    from kdforge.data.bundle import TokenIds
    from kdforge.errors import KdforgeError

    torch.manual_seed(0)
    words = torch.nn.Embedding(110, 16)
    model = torch.nn.Sequential(torch.nn.Embedding(40, 16), words, torch.nn.Embedding(2, 16))
    table = words.weight.detach()
    assert token_table(model) is words.weight  # the largest table: the vocabulary's, not positions' or segments'
    special = (0, 1, 2, 3)
    close = closest_tokens(token_table(model), 4, special, chunk=7)  # chunks that do not divide the vocabulary
    by_hand = torch.tensor(
        [
            sorted((j for j in range(110) if j != i and j not in special), key=lambda j: -float(
                torch.cosine_similarity(table[i], table[j], 0)
            ))[:4]
            for i in range(110)
        ]
    )  # fmt: skip
    assert torch.equal(close, by_hand)
    change = TokenAugment(0.3, 0.0, TokenIds(special=special, mask=3), neighbours=4)
    rows = token_rows()
    with pytest.raises(KdforgeError, match="the close tokens come from the teacher once it is ready"):
        change(rows)
    change.close = close
    out = change(rows)
    moved = out != rows
    assert abs(moved.float().mean() / (~torch.isin(rows, torch.tensor(special))).float().mean() - 0.3) < 0.03
    assert (close[rows[moved]] == out[moved, None]).any(1).all()  # one of the token's 4 closest, never itself
    drawn = close[rows[moved]] == out[moved, None]
    assert (drawn.float().mean(0) > 0.15).all()  # each of the 4 drawn about as often
    with pytest.raises(KdforgeError, match="has no nn.Embedding"):
        token_table(torch.nn.Linear(2, 2))
    with pytest.raises(KdforgeError, match="108 close tokens asked of a vocabulary of 110 tokens"):
        closest_tokens(words.weight, 108, special)


def test_close_tokens_need_a_teacher_whose_own_fit_reads_no_rows_changed_that_way():
    from kdforge import Recipe
    from kdforge.errors import ConfigError

    close = {"tokens": {"p": 0.3, "neighbours": 5}}
    data = {"name": "text_classification", "path": "t.csv", "tokenizer": "tok", "augment": close}
    raw = {"data": data, "student": {"model": {"name": "hf_encoder", "path": "s"}}, "losses": [{"name": "ce"}]}
    with pytest.raises(ConfigError, match="it needs a teacher"):
        Recipe.from_dict(raw)
    raw["teacher"] = {"source": "hf", "model": {"name": "t"}, "finetune": {"epochs": 1}}
    with pytest.raises(ConfigError, match=r"its own fit cannot read rows changed that way"):
        Recipe.from_dict(raw)
    Recipe.from_dict(raw, ["teacher.finetune.data={augment: {}}"])  # fit on the rows as they are
    Recipe.from_dict(raw, ["data.augment.tokens.teacher=original"])  # the changes are the student's alone
    del raw["teacher"]["finetune"]
    Recipe.from_dict(raw)  # a teacher loaded as it is: nothing fits it


def test_token_changes_leave_a_pairs_segments_alone_and_need_a_mask_token_to_mask():
    from kdforge.data.augment import BatchAugment, TokenAugment
    from kdforge.data.bundle import TokenIds
    from kdforge.errors import KdforgeError

    rows = token_rows(8)
    segments = (torch.arange(40) >= 15).long().expand(8, 40)
    pairs = torch.stack([rows, segments], 1)
    torch.manual_seed(0)
    out = TokenAugment(0.5, 0.5, TokenIds(special=(0, 1, 2, 3), mask=3))(pairs)
    assert out.shape == pairs.shape and torch.equal(out[:, 1], segments) and not torch.equal(out[:, 0], rows)
    with pytest.raises(KdforgeError, match="this tokenizer has no mask token; set mask: 0"):
        TokenAugment(0.5, 0.5, TokenIds(special=(0,), mask=None))
    assert TokenAugment(0.5, 0.0, TokenIds(special=(0,), mask=None))(rows).shape == rows.shape
    from kdforge.config import AugmentConfig

    config = AugmentConfig.model_validate({"tokens": {"p": 0.2}})
    with pytest.raises(KdforgeError, match="this dataset's inputs are not rows of token ids"):
        BatchAugment.from_config(config, (0.0, 1.0), None)


def test_soft_targets_with_label_smoothing_match_the_formula():
    from kdforge.losses import functional as lf

    torch.manual_seed(0)
    logits, soft = torch.randn(5, 4), torch.softmax(torch.randn(5, 4), -1)
    smoothed = 0.9 * soft + 0.1 / 4
    expected = -(smoothed * torch.log_softmax(logits, -1)).sum(1).mean()
    assert torch.allclose(lf.cross_entropy(logits, soft, 0.1), expected, atol=1e-6)


def test_mixing_or_randaugment_with_a_teacher_cache_is_refused(tiny_recipe, tmp_path):
    from kdforge.errors import KdforgeError
    from kdforge.runner import build_cache

    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    build_cache(Recipe.from_dict(tiny_recipe), tmp_path / "cache")
    for augment in ({"mixup": 0.2}, {"randaugment": {"n": 1, "m": 5}}):
        recipe = {
            **tiny_recipe,
            "data": {**tiny_recipe["data"], "augment": augment},
            "teacher": {**tiny_recipe["teacher"], "cache": str(tmp_path / "cache")},
        }
        with pytest.raises(KdforgeError, match="teacher.cache holds the teacher's outputs on fixed views only"):
            run(Recipe.from_dict(recipe))


def test_a_run_with_randaugment_and_mixing_trains_and_logs_scheduled_strengths(tiny_recipe):
    tiny_recipe["data"]["augment"] = {
        "randaugment": {"n": 1, "m": 5},
        "mixup": {"schedule": "linear", "start": 0.0, "end": 0.4},
        "cutmix": 1.0,
    }
    tiny_recipe["losses"] = [{"name": "ce", "weight": 0.5, "label_smoothing": 0.1}, {"name": "dkd", "weight": 0.5}]
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    tiny_recipe["log"]["every_steps"] = 5
    result = run(Recipe.from_dict(tiny_recipe))
    assert 0.0 <= result.student_accuracy <= 1.0 and result.results["student"]["val_best"]["loss"] > 0
    steps = [
        r
        for r in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "step" and r["stage"] == "distill"
    ]
    alphas = [r["mixup.alpha"] for r in steps]
    assert (
        alphas == sorted(alphas) and 0 < alphas[0] < alphas[-1] < 0.4 and all("cutmix.alpha" not in r for r in steps)
    )  # a constant is not logged


# ----------------------------------------------------------------------------- stopping, seeds, sweeps


def test_early_stopping_stops_after_patience_epochs_without_improvement(data, tmp_path):
    from kdforge.config import EarlyStoppingConfig

    rule = EarlyStoppingConfig(
        metric="loss", patience=2, min_delta=10.0
    )  # nothing improves the loss by 10: stop after epoch 3
    console = ConsoleProgress(Console(file=io.StringIO(), width=200))
    trainer, result = fit_student(data, tmp_path, TrainConfig(epochs=20, early_stopping=rule), callbacks=[console])
    assert result.stopped_early and len(result.history) == 3 and result.history[-1]["stopped_early"]
    *_, last, stop = console.console.file.getvalue().splitlines()  # the last epoch's line (3 is not one of every
    # 2nd), then why training stopped
    assert last.startswith("  distill   3/20  train loss")
    assert stop == "  distill: stopped early after epoch 3: val loss did not improve for 2 epochs"
    assert torch.load(tmp_path / "last.pt", weights_only=True)["position"]["epoch"] == 3
    trainer, result = fit_student(
        data, tmp_path / "patient", TrainConfig(epochs=4, early_stopping=EarlyStoppingConfig(patience=10))
    )
    assert not result.stopped_early and len(result.history) == 4


def test_deterministic_runs_repeat_bitwise_and_seeds_matter(tiny_recipe):
    tiny_recipe["train"] = {"epochs": 1, "baseline": False, "deterministic": True}
    seen = []
    original = Trainer.fit

    def fit(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(self, *args, **kwargs)

    Trainer.fit = fit
    try:
        first, again = (load_file(run(Recipe.from_dict(tiny_recipe)).run_dir / "student.safetensors") for _ in range(2))
    finally:
        Trainer.fit = original
    other = load_file(run(Recipe.from_dict({**tiny_recipe, "seed": 1})).run_dir / "student.safetensors")
    assert len(seen) >= 3 and all(seen) and not torch.are_deterministic_algorithms_enabled()  # on inside the runs only
    assert all(torch.equal(first[k], again[k]) for k in first) and not all(
        torch.equal(first[k], other[k]) for k in first
    )


def test_sweep_aggregates_mean_and_sample_std():
    from kdforge.sweeper import aggregate

    def result(seed, student, alone, last, epoch):
        def entry(acc):
            return {"test": {"accuracy": acc}, "test_last": {"accuracy": last}, "best_epoch": epoch}

        return {
            "seed": seed,
            "teacher": {"test": {"accuracy": 0.9}},
            "student": entry(student),
            "student_alone": entry(alone),
        }

    summary = aggregate(
        [result(0, 0.80, 0.70, 0.75, 4), result(1, 0.90, 0.80, 0.85, 6), result(2, 0.70, 0.75, 0.65, 5)]
    )
    student = summary["roles"]["student"]
    assert student["test_accuracy"]["mean"] == pytest.approx(0.8) and student["test_accuracy"]["std"] == pytest.approx(
        0.1
    )
    assert student["test_accuracy_last"]["mean"] == pytest.approx(0.75) and student["best_epoch"][
        "mean"
    ] == pytest.approx(5.0)
    assert (
        summary["kd_gain_points"]["mean"] == pytest.approx((10 + 10 - 5) / 3)
        and summary["roles"]["teacher"]["test_accuracy"]["std"] == 0.0
    )
    assert "test_accuracy_last" not in summary["roles"]["teacher"]


def test_a_sweep_runs_each_seed_and_writes_its_report(tiny_recipe, invoke, tmp_path):
    import yaml

    tiny_recipe["train"] = {"epochs": 1, "baseline": True}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("sweep", tmp_path / "r.yaml", "--seeds", 2, "--first-seed", 3) == 0
    sweep_dir = next((tmp_path / "runs").glob("tiny-sweep-*"))
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["seeds"] == [3, 4] and len(list(sweep_dir.glob("tiny-seed*"))) == 2
    accuracies = [r["student"]["test"]["accuracy"] for r in summary["runs"]]
    assert summary["roles"]["student"]["test_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    assert "± " in (sweep_dir / "sweep.md").read_text() and "KD gain" in (sweep_dir / "sweep.md").read_text()


# ----------------------------------------------------------------------------- logging


def test_metrics_lines_are_held_at_most_flush_seconds_and_all_written_when_fit_ends(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from kdforge import callbacks

    now = [0.0]
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    path = tmp_path / "metrics.jsonl"
    logger = callbacks.JsonlLogger(path, flush_seconds=5.0)
    trainer = SimpleNamespace(stage="distill", pos=SimpleNamespace(step=1))

    def epochs() -> list[int]:
        return [json.loads(line)["epoch"] for line in path.read_text().splitlines()] if path.exists() else []

    logger.on_epoch_end(trainer, {"epoch": 1})
    assert epochs() == []  # a short epoch: its line waits
    now[0] = 5.0
    logger.on_epoch_end(trainer, {"epoch": 2})
    assert epochs() == [1, 2]
    logger.on_epoch_end(trainer, {"epoch": 3})
    logger.on_fit_end(trainer, None)
    assert epochs() == [1, 2, 3]


@pytest.mark.parametrize("terminal", [False, True])
def test_console_lines_are_plain_in_a_file_and_the_bar_is_drawn_only_on_a_terminal(data, tmp_path, terminal):
    out = io.StringIO()
    console = ConsoleProgress(Console(file=out, width=200, force_terminal=terminal, color_system=None))
    steps = []
    console.on_step_end = lambda trainer, samples: steps.append(samples)  # what the trainer calls each step
    trainer, _ = fit_student(data, tmp_path, TrainConfig(epochs=2), callbacks=[console])
    assert (console in trainer.hooked["on_step_end"]) == terminal and console not in trainer.hooked[
        "on_before_optimizer_step"
    ]
    assert len(steps) == (2 * len(trainer.train_batches) if terminal else 0)
    lines = [line for line in out.getvalue().splitlines() if "train loss" in line]
    assert len(lines) == 2 and all("  distill   " in line and "val acc" in line for line in lines)
    assert all(line.startswith("  distill") for line in lines) != terminal  # a terminal's lines clear the bar first
    quiet = io.StringIO()
    fit_student(
        data, tmp_path / "q", TrainConfig(epochs=1), callbacks=[ConsoleProgress(Console(file=quiet, quiet=True))]
    )
    assert quiet.getvalue() == ""


# ----------------------------------------------------------------------------- tracking


def test_trackers_write_every_part_lr_temperature_throughput_and_gradient_norms(tiny_recipe, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    tiny_recipe["losses"][1]["temperature"] = {"schedule": "linear", "start": 4.0, "end": 2.0}
    tiny_recipe["train"] = {"epochs": 1, "baseline": False, "val_every": {"steps": 7}}
    tiny_recipe["log"].update(
        tensorboard=True, wandb=True, mlflow=True, grad_stats_every=5, every_steps=5, weight_histograms=True
    )
    run_dir = run(Recipe.from_dict(tiny_recipe)).run_dir

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "distill/loss",
        "distill/ce",
        "distill/kd",
        "distill/kd.tau",
        "distill/lr",
        "distill/samples_per_s",
        "distill/epoch/val/accuracy",
        "teacher/loss",
    } <= tags
    assert {"distill/grad_norm/student.head", "distill/grad_norm/student.features.0.0"} <= tags
    assert {"distill/weights/head.weight", "teacher/weights/head.weight"} <= set(events.Tags()["histograms"])
    (histogram,) = events.Histograms("distill/weights/head.weight")
    assert histogram.histogram_value.num == 10 * 16  # every weight of the [10, 16] head, counted once
    assert [e.step for e in events.Scalars("distill/val/accuracy")] == [7, 14]  # validations within the epoch
    taus = [e.value for e in events.Scalars("distill/kd.tau")]
    assert taus[0] > taus[-1]  # the scheduled temperature moved

    offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(client.get_metric_history(mlflow_run.info.run_id, "distill/loss")) >= 3
    assert mlflow_run.data.params["train.epochs"] == "1" and "distill/grad_norm/student.head" in mlflow_run.data.metrics
    head = {s: mlflow_run.data.metrics[f"distill/weights/head.weight/{s}"] for s in ("mean", "std", "min", "max")}
    assert head["min"] < head["mean"] < head["max"] and head["std"] > 0

    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    norms = [line for line in lines if line["kind"] == "grad_norms" and line["stage"] == "distill"]
    assert [line["step"] for line in norms] == [1, 6, 11, 16] and all(v > 0 for v in norms[0]["grad_norms"].values())


def test_layer_gradient_norms_match_the_parameters_gradients():
    from kdforge.machine import layer_grad_norms

    layer = torch.nn.Linear(3, 2)
    layer.weight.grad, layer.bias.grad = torch.full((2, 3), 2.0), torch.full((2,), 1.0)
    assert layer_grad_norms([(f"student.fc.{n}", p) for n, p in layer.named_parameters()]) == {
        "student.fc": pytest.approx((6 * 4 + 2) ** 0.5)
    }


def test_dot_keeps_task_and_distillation_momenta_apart_as_written():
    """DOT by hand: momentum − Δ on the task gradient, momentum + Δ on the distillation gradient,
    plain momentum for a parameter only one of them reaches, weight decay once."""
    from kdforge.optim import DistillationOrientedTrainer

    shared, projector = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([0.5]))
    opt = DistillationOrientedTrainer([shared, projector], lr=0.1, momentum=0.9, delta=0.1, weight_decay=0.01)
    task_buf = distill_buf = proj_buf = None
    expect_shared, expect_proj = shared.detach().clone(), projector.detach().clone()
    for g_task, g_distill, g_proj in (
        (torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([3.0])),
        (torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 1.0]), torch.tensor([-1.0])),
    ):
        shared.grad, projector.grad = g_distill.clone(), g_proj.clone()
        opt.stash_distillation_grads()
        assert shared.grad is None and projector.grad is None
        shared.grad = g_task.clone()
        opt.step()
        t = g_task + 0.01 * expect_shared  # decay joins the task gradient
        task_buf = t if task_buf is None else 0.8 * task_buf + t
        expect_shared -= 0.1 * task_buf
        distill_buf = g_distill if distill_buf is None else 1.0 * distill_buf + g_distill
        expect_shared -= 0.1 * distill_buf
        p = g_proj + 0.01 * expect_proj  # only a distillation gradient: it carries the decay, at plain momentum
        proj_buf = p if proj_buf is None else 0.9 * proj_buf + p
        expect_proj -= 0.1 * proj_buf
        assert torch.allclose(shared.detach(), expect_shared) and torch.allclose(projector.detach(), expect_proj)


def test_dot_trains_from_a_recipe_and_checkpoints_both_momenta(tiny_recipe, invoke, tmp_path):
    import yaml

    from kdforge.errors import ConfigError

    tiny_recipe["optim"] = {"name": "dot", "lr": 0.05, "weight_decay": 5e-4}
    tiny_recipe["losses"][1]["temperature"] = {
        "learnable": "ctkd",
        "init": 4.0,
    }  # a part only the distillation gradient reaches
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    path = tmp_path / "dot.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("train", path) == 0
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    state = torch.load(run_dir / "last.pt", weights_only=True)["optimizer"]["state"].values()
    assert any({"task_momentum", "distill_momentum"} <= set(s) for s in state)  # the student's weights: both
    assert any(set(s) == {"distill_momentum"} for s in state)  # the learned temperature: distillation only
    assert Recipe.from_dict(tiny_recipe).optim.dot_delta == 0.075
    with pytest.raises(ConfigError, match="dot keeps the task and distillation gradients apart"):
        Recipe.from_dict({**tiny_recipe, "train": {"grad_clip": 1.0}})
    with pytest.raises(ConfigError, match="dot_delta is only used with name 'dot'"):
        Recipe.from_dict({**tiny_recipe, "optim": {"name": "sgd", "dot_delta": 0.1}})
    with pytest.raises(ConfigError, match="momentum ± dot_delta must stay in"):
        Recipe.from_dict({**tiny_recipe, "optim": {"name": "dot", "momentum": 0.95, "dot_delta": 0.1}})
