"""init_from_teacher (copy + module-wise fit), mlp_to_tm, and validation-driven steering."""

import json

import numpy as np
import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from kdforge.errors import KdforgeError
from kdforge.families.tm.blocks import TMFeedForward
from kdforge.families.tm.clause import set_hard
from kdforge.families.tm.convert import mlp_to_tm
from kdforge.families.tm.rules import PackedTM, model_rules
from kdforge.families.tm.steering import allocate_clauses, dhondt, diagnose, specialize_heads
from kdforge.families.tm.transfer import feedforward_pairs, fit_feedforwards
from kdforge.models import build_model
from kdforge.transfer import copy_matching

SHAPE = (1, 32, 32)


def with_teacher_mlps(student, teacher):
    """The student with each TM block swapped back for the teacher MLP it was paired with:
    if the transfer copied the rest right, it now computes what the teacher computes."""
    for name, (_, _, mlp) in feedforward_pairs(student, teacher).items():
        parent, _, child = name.rpartition(".")
        setattr(student.get_submodule(parent), child, mlp)
    return student


TEACHERS = {
    # timm's ViT uses LayerNorm eps 1e-6 (ours 1e-5) and Swin masks with -100 (ours -1e4): tiny differences
    "timm vit": (
        lambda: VisionTransformer(
            img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2
        ),
        "vit_tm",
        {"patch_norm": False},
        2e-2,
    ),
    "timm swin": (
        lambda: SwinTransformer(
            img_size=32,
            patch_size=2,
            in_chans=1,
            num_classes=10,
            embed_dim=32,
            depths=(2, 2),
            num_heads=(2, 4),
            window_size=4,
            mlp_ratio=2,
        ),
        "swin_tm",
        {},
        2e-2,
    ),
    "our vit": (
        lambda: build_model("vit", input_shape=SHAPE, num_classes=10, depth=2),
        "vit_tm",
        {"patch_norm": False},
        1e-5,
    ),
    "our vit, mlp_to_tm": (
        lambda: build_model("vit", input_shape=SHAPE, num_classes=10, depth=2),
        "mlp_to_tm",
        {"base": {"name": "vit", "depth": 2}, "clauses": 16},
        1e-5,
    ),
}


@pytest.mark.parametrize("kind", list(TEACHERS))
def test_transfer_copies_what_it_claims(kind):
    make_teacher, student_name, options, tolerance = TEACHERS[kind]
    torch.manual_seed(0)
    teacher = make_teacher().eval()
    student = build_model(student_name, input_shape=SHAPE, num_classes=10, **options)
    report = copy_matching(student, teacher)
    assert not report.shape_mismatch
    assert all(".ffn." in name or name.endswith("head_gain") for name in report.not_in_teacher), (
        report.not_in_teacher
    )  # only the TM parts are new
    assert any("attn.qkv" in name for name in report.copied) and any("norm" in name for name in report.copied)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        expected = teacher(x)
        got = with_teacher_mlps(student, teacher).eval()(x)
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=0)


def test_copied_tensors_equal_the_teachers_and_mismatches_are_reported():
    torch.manual_seed(0)
    teacher = build_model("vit", input_shape=SHAPE, num_classes=10, depth=2, embed_dim=64)
    student = build_model(
        "vit_tm", input_shape=SHAPE, num_classes=10, depth=2, embed_dim=64, patch_size=8, patch_norm=False
    )
    report = copy_matching(student, teacher)
    assert report.shape_mismatch["pos_embed"] == "teacher pos_embed [1, 65, 64] vs student [1, 17, 64]"
    assert "patch_embed.weight" in report.shape_mismatch and "pos_embed" not in report.copied
    source, target = teacher.state_dict(), student.state_dict()
    assert all(torch.equal(target[name], source[name]) for name in report.copied)


def test_module_wise_fit_teaches_tm_blocks_the_teacher_mlps():
    from kdforge.data import make_loader

    torch.manual_seed(0)
    teacher = build_model("vit", input_shape=SHAPE, num_classes=10, depth=2).eval()
    x = torch.randn(256, *SHAPE)
    batches = make_loader(_dataset(x), 64, shuffle=True, seed=0)
    fits = {}
    for steps in (0, 80):
        torch.manual_seed(1)
        student = build_model("vit_tm", input_shape=SHAPE, num_classes=10, depth=2, clauses=64, patch_norm=False)
        copy_matching(student, teacher)
        fits[steps] = fit_feedforwards(feedforward_pairs(student, teacher), teacher, batches, batches, steps, 3e-3)
    for name in fits[80]:
        assert fits[80][name]["teacher_mlp"] == name
        assert fits[80][name]["r2_val"] > fits[0][name]["r2_val"] + 0.2, (name, fits)


def _dataset(x):
    from kdforge.data.bundle import Split

    return Split(x, torch.zeros(len(x), dtype=torch.long))


def test_a_student_without_counterparts_is_a_clear_error():
    teacher = build_model("cnn", input_shape=SHAPE, num_classes=10)
    student = build_model("vit_tm", input_shape=SHAPE, num_classes=10)
    with pytest.raises(KdforgeError, match="no TM block of the student has a teacher MLP"):
        feedforward_pairs(student, teacher)


def test_a_student_normalising_patches_its_teacher_does_not_is_a_clear_error():
    teacher = build_model("vit", input_shape=SHAPE, num_classes=10, depth=2)
    student = build_model("vit_tm", input_shape=SHAPE, num_classes=10, depth=2, patch_norm=True)
    with pytest.raises(KdforgeError, match="give the student patch_norm: false"):
        feedforward_pairs(student, teacher)
    without = build_model("vit_tm", input_shape=SHAPE, num_classes=10, depth=2, patch_norm=False)
    assert feedforward_pairs(without, teacher)


def test_mlp_to_tm_replaces_every_mlp_of_a_timm_model_and_keeps_shapes():
    model = VisionTransformer(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=3, num_heads=2)
    replaced = mlp_to_tm(model, torch.zeros(2, *SHAPE), clauses=16, ff_mix="linear")
    assert replaced == ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.mlp"]
    assert (
        isinstance(model.blocks[1].mlp, TMFeedForward) and model.blocks[1].mlp.mix.in_features == 65
    )  # tokens found by a forward pass
    assert model(torch.randn(4, *SHAPE)).shape == (4, 10)
    with pytest.raises(KdforgeError, match="no MLP blocks"):
        mlp_to_tm(build_model("cnn", input_shape=SHAPE, num_classes=10), torch.zeros(1, *SHAPE))


def test_mlp_to_tm_model_rebuilds_from_its_spec(tmp_path):
    from kdforge import load_student
    from kdforge.export import save_model

    torch.manual_seed(0)
    model = build_model(
        "mlp_to_tm", input_shape=SHAPE, num_classes=10, base={"name": "vit", "depth": 1}, clauses=8
    ).eval()
    assert model.kdforge_spec["name"] == "mlp_to_tm"
    reloaded = load_student(save_model(model, tmp_path / "student"))
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x))
    with pytest.raises(KdforgeError, match="unknown model 'vti'"):
        build_model("mlp_to_tm", input_shape=SHAPE, num_classes=10, base={"name": "vti"})


def test_a_second_stage_may_switch_a_tm_student_to_hard_mode_but_not_change_its_shape(tmp_path):
    """init_from accepts options that leave every tensor as it is (finishing in hard mode), and names both option
    sets; an option that changes a tensor's shape is still refused."""
    from kdforge.export import save_model
    from kdforge.transfer import start_from

    torch.manual_seed(0)
    options = {"patch_size": 8, "clauses": 8, "lf": 4}
    first = build_model("vit_tm_tiny", input_shape=SHAPE, num_classes=10, **options).eval()
    save_model(first, tmp_path / "student")
    hard = build_model("vit_tm_tiny", input_shape=SHAPE, num_classes=10, **options, hard=True).eval()
    report = start_from(hard, tmp_path / "student.safetensors")
    assert report["options_now"] == {**report["options_before"], "hard": True}
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(hard(x), set_hard(first, True)(x))
    wider = build_model("vit_tm_tiny", input_shape=SHAPE, num_classes=10, **{**options, "clauses": 16})
    with pytest.raises(KdforgeError, match="give student.model the first stage's model section"):
        start_from(wider, tmp_path / "student.safetensors")


def test_init_from_teacher_accepts_true_and_refuses_a_cached_teacher(tiny_recipe):
    from kdforge import Recipe

    tiny_recipe["student"]["init_from_teacher"] = True
    assert Recipe.model_validate(tiny_recipe).student.init_from_teacher.steps == 200
    tiny_recipe["teacher"]["cache"] = "somewhere"
    with pytest.raises(Exception, match="init_from_teacher copies the teacher's own modules"):
        Recipe.model_validate(tiny_recipe)


# ----------------------------------------------------------------------------- steering


class Batches:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def epoch(self, _):
        yield self.x, self.y


def small_vit_tm(**options):
    torch.manual_seed(0)
    return build_model(
        "vit_tm", input_shape=(1, 16, 16), num_classes=4, embed_dim=32, depth=2, heads=2, clauses=16, **options
    )


def test_diagnostics_match_the_gradient_of_a_gate_and_leave_parameter_grads_alone():
    model = small_vit_tm()
    x, y = torch.randn(12, 1, 16, 16), torch.randint(0, 4, (12,))
    found = diagnose(model, Batches(x, y))
    assert all(p.grad is None for p in model.parameters())
    # reference: a gate on head 1 of block 0, by finite differences of the summed CE
    attn = model.blocks[0].attn

    def loss_with(gain):
        attn.head_gain[1] = gain
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model.eval()(x), y, reduction="sum")

    eps = 1e-3
    numeric = (loss_with(1 + eps) - loss_with(1 - eps)) / (2 * eps) / len(y)
    loss_with(1.0)
    torch.testing.assert_close(found.heads["blocks.0.attn"][1], numeric.abs(), rtol=2e-2, atol=1e-5)
    assert set(found.clauses) == {"blocks.0.ffn.tm", "blocks.1.ffn.tm"} and found.clauses["blocks.0.ffn.tm"].shape == (
        16,
    )


def test_head_gains_scale_head_outputs_and_specialize_keeps_each_blocks_mean():
    model = small_vit_tm()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        before = model(x)
        model.blocks[0].attn.head_gain.zero_()
        muted = model(x)
        model.blocks[0].attn.head_gain.fill_(1.0)
    assert not torch.allclose(before, muted)
    found = diagnose(model, Batches(torch.randn(16, 1, 16, 16), torch.randint(0, 4, (16,))))
    with torch.no_grad():
        assert all(v == 1.0 for heads in specialize_heads(model, found, 0.0).values() for v in heads.values())
        gains = specialize_heads(model, found, 0.7)
    for name, heads in gains.items():
        assert np.mean(list(heads.values())) == pytest.approx(1.0, abs=1e-5)
        importance = found.heads[name]
        assert (list(heads.values())[int(importance.argmax())]) == max(heads.values())


def test_dhondt_shares_in_proportion_with_floors_and_caps():
    assert dhondt({"a": 3.0, "b": 1.0}, 8, {"a": 0, "b": 0}, {"a": 10, "b": 10}) == {"a": 6, "b": 2}
    assert dhondt({"a": 3.0, "b": 1.0}, 8, {"a": 0, "b": 0}, {"a": 5, "b": 10}) == {"a": 5, "b": 3}
    assert dhondt({"a": 1.0, "b": 0.0}, 6, {"a": 2, "b": 2}, {"a": 10, "b": 10}) == {"a": 4, "b": 2}


def test_auto_clause_masks_the_least_important_clauses_and_the_rules_follow():
    model = small_vit_tm()
    found = diagnose(model, Batches(torch.randn(16, 1, 16, 16), torch.randint(0, 4, (16,))))
    with torch.no_grad():
        moved = allocate_clauses(model, found, total=20, min_clauses=2)
    assert sum(moved["after"].values()) == 20 and moved["before"] == {"blocks.0.ffn.tm": 16, "blocks.1.ffn.tm": 16}
    for name, kept in moved["after"].items():
        layer = model.get_submodule(name)
        assert int(layer.clause_mask.sum()) == kept
        importance = found.clauses[name]
        assert importance[layer.clause_mask].min() >= importance[~layer.clause_mask].max()
    again = diagnose(model, Batches(torch.randn(8, 1, 16, 16), torch.randint(0, 4, (8,))))
    assert (
        again.clauses["blocks.0.ffn.tm"][~model.blocks[0].ffn.tm.clause_mask] == 0
    ).all()  # masked clauses are silent
    rules = model_rules(model)
    assert [len(rules["layers"][n]["clauses"]) for n in moved["after"]] == list(moved["after"].values())
    tokens = {}
    layer = model.blocks[1].ffn.tm
    layer.register_forward_hook(lambda m, args, out: tokens.update(u=args[0], out=out))
    with torch.no_grad():
        set_hard(model)(torch.randn(4, 1, 16, 16))
    u = tokens["u"].reshape(-1, layer.in_features)
    assert np.array_equal(PackedTM(rules["layers"]["blocks.1.ffn.tm"])(u), tokens["out"].reshape(len(u), -1).numpy())
    with pytest.raises(KdforgeError, match="auto_clause.total between 4 and 32"):
        allocate_clauses(model, found, total=40, min_clauses=2)


def test_a_run_with_transfer_and_steering_records_both_and_explains(tiny_recipe, invoke):
    from kdforge import Recipe, run

    tiny_recipe["teacher"] = {
        "source": "train",
        "model": {"name": "vit", "patch_size": 4, "embed_dim": 32, "depth": 2, "heads": 2},
        "train": {"epochs": 1},
    }
    tiny_recipe["student"] = {
        "model": {
            "name": "vit_tm",
            "patch_size": 4,
            "embed_dim": 32,
            "depth": 2,
            "heads": 2,
            "clauses": 16,
            "lf": 4,
            "patch_norm": False,
        },
        "init_from_teacher": {"steps": 4},
        "clause_specialize": {"strength": 0.5, "warmup_epochs": 1},
        "auto_clause": {"warmup_epochs": 2, "min_clauses": 4},
        "diagnostics_every": 1,
    }
    tiny_recipe["train"]["baseline"] = False
    result = run(Recipe.model_validate(tiny_recipe))
    entry = result.results["student"]
    transfer = entry["init_from_teacher"]
    assert len(transfer["copied"]) == 24 and set(transfer["feedforward"]) == {"blocks.0.ffn", "blocks.1.ffn"}
    assert json.loads((result.run_dir / "transfer.json").read_text()) == transfer
    assert entry["steering"]["clause_specialize"]["epoch"] == 1 and entry["steering"]["auto_clause"]["epoch"] == 2
    assert sum(entry["steering"]["auto_clause"]["after"].values()) == 32  # the total is kept
    report = (result.run_dir / "report.md").read_text()
    assert "Initialised from the teacher" in report and "auto_clause after epoch 2" in report
    epochs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in epochs if r.get("kind") == "epoch" and r["stage"] == "distill"]
    assert all("head_importance" in r["diagnostics"] for r in logged)
    assert invoke("explain", result.run_dir, "--samples", 2, "--top-k", 4) == 0
    from matplotlib.image import imread

    assert imread(result.run_dir / "explain" / "sample_01.png").shape[2] in (3, 4)
    report = (result.run_dir / "explain" / "clauses.md").read_text()
    assert "## `blocks.1.ffn.tm`" in report and " ∧ " in report


# ----------------------------------------------------------------------------- explain


@pytest.mark.parametrize(
    ("name", "options", "shape"),
    [
        ("vit_tm", {"pool": "cls"}, (1, 16, 16)),
        ("vit_tm", {"pool": "mean", "residual_attention": True}, (1, 16, 16)),
        ("swin_tm", {"window": 3, "patch_size": 2}, (1, 15, 15)),
        ("resnet_tm", {}, (3, 12, 12)),
        ("tm_flat", {"clauses": 16}, (1, 8, 8)),
    ],
)
def test_explain_maps_of_each_tm_student(name, options, shape):
    from kdforge.families.tm.explain import overlay_maps

    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=5, **options)
    maps = overlay_maps(model, torch.randn(3, *shape))
    torch.testing.assert_close(maps["probs"].sum(-1), torch.ones(3))
    if name in ("vit_tm", "swin_tm"):
        attention = maps["attention"]
        assert attention.shape == ((3, 4, 4) if name == "vit_tm" else (3, 8, 8)) and (attention >= 0).all()
        if options.get("pool") == "cls":
            assert (attention.sum((1, 2)) <= 1 + 1e-6).all()  # the class token's attention to the patches
    else:
        assert maps["attention"] is None
    clauses = maps["clauses"]
    if name == "tm_flat":  # the best clause's literals: +1 / −1 per pixel, summed over channels
        assert clauses.shape == (3, 8, 8) and set(clauses.unique().tolist()) <= {-1.0, 0.0, 1.0}
    else:
        assert clauses.dim() == 3 and clauses.shape[0] == 3 and (clauses >= 0).all()
    assert all(not m.keep_weights and m.weights is None for m in model.modules() if hasattr(m, "keep_weights"))


def test_explain_refuses_students_without_clauses(tiny_recipe, tmp_path):
    from kdforge import Recipe, run
    from kdforge.families.tm.explain import explain_run

    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    tiny_recipe["teacher"]["train"] = {"epochs": 1}
    result = run(Recipe.model_validate(tiny_recipe))
    with pytest.raises(KdforgeError, match="has no clause layers"):
        explain_run(result.run_dir)


def test_check_pairs_tm_blocks_with_teacher_mlps_before_training(tiny_recipe):
    import io

    from rich.console import Console

    from kdforge import Recipe
    from kdforge.check import check

    tiny_recipe["teacher"] = {
        "source": "train",
        "model": {"name": "vit", "patch_size": 4, "embed_dim": 32, "depth": 2, "heads": 2},
    }
    tiny_recipe["student"] = {
        "model": {"name": "vit_tm", "patch_size": 4, "embed_dim": 32, "depth": 2, "heads": 2, "clauses": 16},
        "init_from_teacher": True,
    }
    tiny_recipe["student"]["model"]["patch_norm"] = True
    with pytest.raises(KdforgeError, match="give the student patch_norm: false"):  # found before any training
        check(Recipe.model_validate(tiny_recipe), Console(file=io.StringIO()))
    tiny_recipe["student"]["model"]["patch_norm"] = False
    out = io.StringIO()
    check(Recipe.model_validate(tiny_recipe), Console(file=out, width=300))
    assert (
        "2 TM blocks will learn their teacher MLPs: blocks.0.ffn <- blocks.0.ffn, blocks.1.ffn <- blocks.1.ffn"
        in out.getvalue()
    )
    tiny_recipe["teacher"]["model"] = {"name": "cnn", "width": 8}
    with pytest.raises(KdforgeError, match="no TM block of the student has a teacher MLP"):
        check(Recipe.model_validate(tiny_recipe), Console(file=io.StringIO()))


def test_a_student_of_another_width_is_a_clear_error():
    teacher = build_model("vit", input_shape=SHAPE, num_classes=10, depth=2, embed_dim=64)
    student = build_model("vit_tm", input_shape=SHAPE, num_classes=10, depth=2, embed_dim=32)
    with pytest.raises(KdforgeError, match="student's blocks.0.ffn is 32 wide but the teacher's blocks.0.ffn is 64"):
        feedforward_pairs(student, teacher)


def test_an_ema_of_the_student_keeps_clause_masks_exact():
    from kdforge.ema import ema_update

    model, average = small_vit_tm(), small_vit_tm()
    model.blocks[0].ffn.tm.clause_mask[:5] = False
    ema_update(average, model, 0.9)
    assert torch.equal(average.blocks[0].ffn.tm.clause_mask, model.blocks[0].ffn.tm.clause_mask)


def test_auto_clause_before_training_on_a_few_validation_batches(tiny_recipe, monkeypatch):
    from kdforge import Recipe, run
    from kdforge.families.tm import steering as clause_steering

    seen = []
    measured = clause_steering.diagnose
    monkeypatch.setattr(
        clause_steering,
        "diagnose",
        lambda model, batches, limit=None: seen.append(limit) or measured(model, batches, limit),
    )
    tiny_recipe["student"] = {
        "model": {"name": "vit_tm", "patch_size": 4, "embed_dim": 16, "depth": 2, "heads": 2, "clauses": 16, "lf": 4},
        "auto_clause": {"warmup_epochs": 0, "batches": 1, "total": 20, "min_clauses": 4},
    }
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    result = run(Recipe.model_validate(tiny_recipe))
    applied = result.results["student"]["steering"]["auto_clause"]
    assert (
        applied["epoch"] == 0 and sum(applied["after"].values()) == 20 and seen == [1]
    )  # once, before training, on one batch
    assert "auto_clause before training" in (result.run_dir / "report.md").read_text()
    from kdforge import load_student
    from kdforge.families.tm.clause import clause_layers

    assert (
        sum(int(layer.clause_mask.sum()) for layer in clause_layers(load_student(result.run_dir))) == 20
    )  # the trained student kept the budget


def hard_finish_recipe(tiny_recipe, epochs=3, finish=1):
    tiny_recipe["student"] = {
        "model": {"name": "vit_tm", "patch_size": 4, "embed_dim": 16, "depth": 1, "heads": 2, "clauses": 16, "lf": 4},
        "hard_finish": finish,
    }
    tiny_recipe["train"] = {"epochs": epochs, "baseline": False}
    return tiny_recipe


def test_hard_finish_trains_the_last_epochs_hard_and_selects_among_them_only(tiny_recipe, monkeypatch):
    from kdforge import Recipe, load_student, run, trainer
    from kdforge.families.tm.clause import clause_layers

    seen = []  # per validation of the student: was every clause layer hard?
    evaluate = trainer.Trainer.evaluate

    def spied(self, batches):
        if self.stage == "distill":
            seen.append(all(c.hard for c in clause_layers(self.distiller.student)))
        return evaluate(self, batches)

    monkeypatch.setattr(trainer.Trainer, "evaluate", spied)
    # the first score ever seen stays the best: only a restarted selection can choose a later epoch
    monkeypatch.setattr(trainer, "is_better", lambda val, best: best is None)
    result = run(Recipe.model_validate(hard_finish_recipe(tiny_recipe, epochs=4, finish=2)))
    entry = result.results["student"]
    # epoch 2 trained soft and is validated hard (its rules, as the switch comes before its validation)
    assert seen[:4] == [False, True, True, True]
    finish = entry["steering"]["hard_finish"]
    assert finish["epoch"] == 2 and finish["soft_best_epoch"] == 1 and entry["best_epoch"] == 2
    assert "test_hard" not in entry  # its test score is already its rules'
    assert all(c.hard for c in clause_layers(load_student(result.run_dir)))
    assert "trained its last 2 epochs in hard mode" in (result.run_dir / "report.md").read_text()


def test_hard_finish_resumes_hard_and_matches_the_uninterrupted_run(tiny_recipe, monkeypatch):
    import signal

    from kdforge import Recipe, load_student, run
    from kdforge.callbacks import Callback
    from kdforge.errors import RunInterrupted
    from kdforge.session import Session

    recipe = hard_finish_recipe(tiny_recipe)
    full = run(Recipe.model_validate(recipe))

    class CtrlC(Callback):
        def on_step_end(self, trainer, samples):
            if trainer.stage == "distill" and trainer.pos.epoch == 2 and trainer.pos.batch == 3:  # in the hard epoch
                signal.raise_signal(signal.SIGINT)

    callbacks = Session.callbacks
    monkeypatch.setattr(Session, "callbacks", lambda self: [*callbacks(self), CtrlC()])
    with pytest.raises(RunInterrupted) as stopped:
        run(Recipe.model_validate(recipe))
    monkeypatch.setattr(Session, "callbacks", callbacks)
    resumed = run(Recipe.model_validate(recipe), resume=stopped.value.run_dir)
    assert resumed.results["student"]["test"] == full.results["student"]["test"]
    a, b = load_student(full.run_dir).state_dict(), load_student(stopped.value.run_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"epochs": 2, "baseline": False, "early_stopping": {"patience": 1}}}, "early stopping would skip"),
        ({"train": {"epochs": 1, "baseline": False}}, r"hard_finish \(1\) must be below the number of epochs \(1\)"),
        ({"student": {"model": {"name": "mlp", "hidden": [8]}, "hard_finish": 1}}, "mlp has none"),
    ],
)
def test_hard_finish_refuses_what_would_skip_it_or_has_no_clauses(tiny_recipe, change, message):
    from kdforge import Recipe, run
    from kdforge.errors import KdforgeError

    recipe = {**hard_finish_recipe(tiny_recipe), **change}
    with pytest.raises(KdforgeError, match=message):
        run(Recipe.model_validate(recipe))
