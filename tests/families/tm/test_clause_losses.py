"""Clause-aware loss terms and what a TM run logs about its clauses."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdforge.families.tm.clause import ClauseLayer, set_hard
from kdforge.families.tm.rules import PackedTM, load_rules
from kdforge.models import build_model

# ----------------------------------------------------------------------------- clause-aware losses


def tm_distiller(losses, diag_heads=True):
    from kdforge.distiller import Distiller
    from kdforge.losses import build_losses
    from kdforge.teachers import Teacher

    torch.manual_seed(0)
    student = build_model(
        "vit_tm", input_shape=(1, 8, 8), num_classes=4, embed_dim=16, depth=2, heads=2, clauses=8, diag_heads=diag_heads
    )
    teacher = build_model("cnn", input_shape=(1, 8, 8), num_classes=4, width=8, depth=2)
    x = torch.randn(6, 1, 8, 8)
    return (
        Distiller(student, Teacher(teacher), build_losses(losses), x[:2]).train(),
        student,
        teacher,
        x,
        torch.arange(6) % 4,
    )


def test_block_ce_is_the_mean_ce_of_the_block_heads():
    distiller, student, _, x, y = tm_distiller([{"name": "block_ce"}])
    heads = {}
    for name in ("blocks.0.diag_head", "blocks.1.diag_head"):
        dict(student.named_modules())[name].register_forward_hook(
            lambda m, a, out, name=name: heads.__setitem__(name, out)
        )
    out = distiller(x, y)
    expected = (F.cross_entropy(heads["blocks.0.diag_head"], y) + F.cross_entropy(heads["blocks.1.diag_head"], y)) / 2
    torch.testing.assert_close(out.parts["block_ce"], expected)
    assert set(out.logs) >= {"block_ce/blocks.0", "block_ce/blocks.1"}


def test_clause_reg_matches_its_formula_and_logs_usage():
    distiller, student, _, x, y = tm_distiller(
        [{"name": "clause_reg", "sparsity": 0.5, "budget": 3.0, "budget_weight": 2.0}]
    )
    out = distiller(x, y)
    layers = [m for m in student.modules() if isinstance(m, ClauseLayer)]
    expected = []
    for layer in layers:
        p = torch.sigmoid(layer.include / 0.25)
        expected.append(0.5 * p.mean() + 2.0 * torch.relu(p.sum(1) - 3.0).mean() / 3.0)
    torch.testing.assert_close(out.parts["clause_reg"], torch.stack(expected).mean())
    assert 0.0 <= out.logs["clause_usage/blocks.0.ffn.tm"].item() <= 1.0
    out.loss.backward()
    assert all((layer.include.grad != 0).all() for layer in layers)


def test_clause_align_is_a_kl_from_projected_teacher_features_to_clause_scores():
    distiller, student, teacher, x, y = tm_distiller(
        [{"name": "clause_align", "teacher": "features", "temperature": 2.0}]
    )
    term = distiller.terms[0]
    assert [s for s, _ in term.pairs] == ["blocks.0.ffn.tm.activations", "blocks.1.ffn.tm.activations"]
    seen = {}
    for model, names in ((student, [s for s, _ in term.pairs]), (teacher, [t for _, t in term.pairs])):
        for name in names:
            dict(model.named_modules())[name].register_forward_hook(
                lambda m, a, out, name=name: seen.__setitem__(name, out)
            )
    out = distiller(x, y)
    expected = []
    for i, (s_name, t_name) in enumerate(term.pairs):
        s = seen[s_name].mean(1)  # clause scores [B, N, C] averaged over tokens
        t = term.projectors[i](seen[t_name].mean((2, 3)))  # CNN map [B, C, H, W] averaged over positions
        expected.append(
            (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(s / 2, -1))).sum(-1).mean() * 4
        )
    torch.testing.assert_close(out.parts["clause_align"], torch.stack(expected).mean())
    out.loss.backward()
    assert all((m.include.grad != 0).any() for m in student.modules() if isinstance(m, ClauseLayer))


def test_clause_terms_need_a_tm_student():
    from kdforge.errors import KdforgeError

    with pytest.raises(KdforgeError, match="diag_heads: true"):
        tm_distiller([{"name": "block_ce"}], diag_heads=False)


def test_gradient_checkpointing_covers_every_stage_of_swin_tm_and_changes_no_gradient():
    import functools

    from kdforge.machine import checkpoint_blocks

    torch.manual_seed(0)
    plain = build_model("swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=16, depths=(1, 2), heads=(2, 2))
    checkpointed = build_model(
        "swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=16, depths=(1, 2), heads=(2, 2)
    )
    checkpointed.load_state_dict(plain.state_dict())
    checkpoint_blocks(checkpointed)
    blocks = [b for stage in checkpointed.stages for b in stage.blocks]
    assert len(blocks) == 3 and all(isinstance(b.forward, functools.partial) for b in blocks)
    x = torch.randn(2, 1, 16, 16)
    for model in (plain, checkpointed):
        model(x).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_feature_terms_tap_tm_blocks_by_their_hidden_states(invoke, tiny_recipe, tmp_path, capsys):
    import yaml

    tiny_recipe.update(
        data={"name": "digits", "image_size": 16, "batch_size": 64},
        teacher={
            "source": "train",
            "model": {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 2, "heads": 2},
            "train": {"epochs": 1},
        },
        student={"model": {"name": "vit_tm_tiny", "patch_size": 4, "clauses": 8}},
        losses=[
            {"name": "ce"},
            {"name": "hint", "student": "blocks.0", "teacher": "blocks.0", "projector": "linear"},
            {"name": "cka", "student": "blocks", "teacher": "auto", "mapping": "uniform"},
            {"name": "fdd", "student": "blocks", "teacher": "blocks", "mapping": "uniform"},
        ],
    )
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", tmp_path / "tm.yaml") == 0, capsys.readouterr().out
    out = " ".join(capsys.readouterr().out.split())
    assert all(f"{term} = " in out for term in ("hint", "cka", "fdd"))
    assert (
        invoke("check", tmp_path / "tm.yaml", "losses.2.mapping=explicit") == 2
    )  # 'blocks' itself never runs: said so
    assert "never ran in a forward pass" in capsys.readouterr().out


def test_clause_usage_counts_what_fires_in_hard_mode():
    from kdforge.families.tm.clause import ClauseLayer, clause_usage, hard_mode

    torch.manual_seed(0)
    layer = ClauseLayer(6, 3, clauses=8, lf=2)
    layer.clause_mask[:2] = False  # two clauses switched off, as auto_clause does
    x = torch.rand(40, 6)
    with torch.no_grad(), hard_mode(layer):
        fires = (layer.clause_scores(x) * layer.clause_mask) > 0  # [40, 8], by the formula
    (usage,) = clause_usage(torch.nn.Sequential(layer), [(x[:25], None), (x[25:], None)]).values()
    assert usage["active"] == 6 and usage["used"] == int(fires.any(0).sum())
    assert usage["firing"] == pytest.approx(float(fires.float().sum()) / 40 / 6)
    assert not layer.hard and clause_usage(torch.nn.Linear(2, 2), [(x, None)]) == {}


def test_mlp_ratio_sizes_each_tm_feed_forward_from_its_token_width(invoke, tiny_recipe, tmp_path, capsys):
    import yaml

    from kdforge.errors import KdforgeError

    swin = build_model(
        "swin_tm",
        input_shape=(1, 16, 16),
        num_classes=3,
        embed_dim=8,
        depths=[1, 1],
        heads=[1, 2],
        window=2,
        clauses=8,
        mlp_ratio=1.5,
    )
    widths = {n: m.out_features for n, m in swin.named_modules() if n.endswith("ffn.proj_in")}
    assert widths == {
        "stages.0.blocks.0.ffn.proj_in": 12,
        "stages.1.blocks.0.ffn.proj_in": 24,
    }  # 1.5 x 8, then 1.5 x 16
    with pytest.raises(KdforgeError, match="literals .* or mlp_ratio .*, not both"):
        build_model("vit_tm", input_shape=(1, 16, 16), num_classes=3, literals=8, mlp_ratio=2.0)
    recipe = {
        **tiny_recipe,
        "student": {"model": {"name": "vit_tm_tiny", "patch_size": 4, "clauses": 8, "mlp_ratio": 2.0}},
    }
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("check", tmp_path / "tm.yaml") == 0, capsys.readouterr().out


def test_swin_stage_widths_and_clause_budgets_per_stage_from_a_recipe(invoke, tiny_recipe, tmp_path, capsys):
    import yaml

    from kdforge.errors import KdforgeError

    model = build_model(
        "swin_tm",
        input_shape=(1, 16, 16),
        num_classes=3,
        embed_dim=[12, 20],
        depths=[1, 1],
        heads=[2, 4],
        window=2,
        clauses=[8, 16],
    )
    layers = {n: (m.in_features, m.clauses) for n, m in model.named_modules() if isinstance(m, ClauseLayer)}
    assert layers == {
        "stages.0.blocks.0.ffn.tm": (12, 8),
        "stages.1.blocks.0.ffn.tm": (20, 16),
    }  # widths that do not double
    assert model.stages[0].downsample.reduction.out_features == 20 and model.head.in_features == 20
    doubled = build_model(
        "swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=8, depths=[1, 1], heads=[1, 2], window=2, clauses=8
    )
    assert [m.in_features for m in doubled.modules() if isinstance(m, ClauseLayer)] == [
        8,
        16,
    ]  # one number: the width doubles
    with pytest.raises(KdforgeError, match="one number or one per stage"):
        build_model(
            "swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=[8, 16, 32], depths=[1, 1], heads=[1, 2]
        )
    recipe = {
        **tiny_recipe,
        "student": {
            "model": {
                "name": "swin_tm",
                "embed_dim": [8, 12],
                "clauses": [8, 16],
                "depths": [1, 1],
                "heads": [1, 2],
                "window": 2,
            }
        },
    }
    (tmp_path / "swin.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("check", tmp_path / "swin.yaml") == 0, capsys.readouterr().out


def test_clause_bias_false_is_the_classic_machine_votes_alone_and_its_rules_say_so(tiny_recipe, invoke, tmp_path):
    import yaml

    from kdforge import load_student

    layer = ClauseLayer(6, 3, clauses=4, clause_bias=False)
    assert "bias" not in dict(layer.named_parameters()) and torch.equal(layer.bias, torch.zeros(3))
    u = torch.rand(5, 6)
    assert torch.allclose(layer(u), layer.scale * (layer.clause_scores(u) @ layer.vote_matrix()))
    tiny_recipe["student"] = {"model": {"name": "tm_flat", "clauses": 16, "lf": 4, "clause_bias": False}}
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    (tmp_path / "classic.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("train", tmp_path / "classic.yaml") == 0
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    student = set_hard(load_student(run_dir))
    assert torch.equal(student.tm.bias, torch.zeros(10))  # training never gave it one
    assert invoke("export", run_dir, "--format", "tm-rules") == 0
    rules = load_rules(run_dir / "student.tm-rules.json")
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        assert np.array_equal(PackedTM(rules["layers"]["tm"])(x), student(x).numpy())


def test_the_rule_tools_old_import_path_still_works():
    import kdforge.families.tm as family
    import kdforge.tm as old

    assert old.PackedTM is family.PackedTM and old.load_rules is family.load_rules


def test_the_seed_options_clause_bias_as_a_number_and_mlp_ratio_per_stage(invoke, tiny_recipe, tmp_path, capsys):
    """As the original Swin-TM writes them: ``clause_bias: 0.05`` (where the learned bias starts) and one
    ``mlp_ratio`` per stage; a recipe check takes both."""
    import yaml

    layer = ClauseLayer(6, 3, clauses=4, clause_bias=0.05)
    assert layer.bias.requires_grad and torch.allclose(layer.bias, torch.full((3,), 0.05))
    assert layer.bias.requires_grad and not ClauseLayer(6, 3, clauses=4, clause_bias=False).bias.requires_grad
    assert torch.equal(ClauseLayer(6, 3, clauses=4).bias, torch.zeros(3))
    model = build_model(
        "swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=8, depths=[1, 1], heads=[1, 2], window=2,
        clauses=8, mlp_ratio=[3.0, 1.5], clause_bias=0.05,
    )  # fmt: skip
    assert [m.in_features for m in model.modules() if isinstance(m, ClauseLayer)] == [24, 24]  # 3·8, 1.5·16
    recipe = {
        **tiny_recipe,
        "data": {"name": "digits", "image_size": 16, "batch_size": 64},
        "student": {"model": {"name": "swin_tm_tiny", "mlp_ratio": [3.0, 3.0], "clause_bias": 0.05}},
    }
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("check", tmp_path / "tm.yaml") == 0, capsys.readouterr().out
    recipe["student"]["model"]["mlp_ratio"] = [3.0, 3.0, 3.0]
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("check", tmp_path / "tm.yaml") == 2
    assert "mlp_ratio take one number or one per stage (2 stages)" in " ".join(capsys.readouterr().out.split())
