"""Registry-wide: every loss term builds from YAML, runs forward and backward on real models,
and its trainable parts are in the optimiser before training. Plus layer mapping."""

import pytest
import torch
import yaml

from kdforge.config import OptimConfig
from kdforge.distiller import Distiller
from kdforge.errors import KdforgeError
from kdforge.losses import LOSSES, build_losses
from kdforge.models import build_model
from kdforge.optim import build_optimizer
from kdforge.schedules import Clock
from kdforge.taps import block_names, map_layers
from kdforge.teachers import Teacher

VIT = "vit"
CNN = "cnn"
ENSEMBLE = "ensemble"
TM = "vit_tm"
SSM = "ssm"  # a regression pair: sequences in, complex sequences out
LM = "lm"  # language models: token rows in, logits at every position out

#: one YAML example per registered term, on a ViT pair or a CNN pair
EXAMPLES = {
    "ce": (VIT, "{name: ce, label_smoothing: 0.1}"),
    "kd": (VIT, "{name: kd, temperature: {learnable: ctkd, init: 4.0, mode: instance}, direction: jsd}"),
    "kl": (VIT, "{name: kl, temperature: 2.0}"),
    "uld": (LM, "{name: uld, temperature: 2.0}"),
    "spike_rate": (LM, "{name: spike_rate, target: 0.2}"),
    "dkd": (VIT, "{name: dkd, temperature: 4.0, alpha: 1.0, beta: 8.0, warmup: 2, logit_std: true}"),
    "dist": (VIT, "{name: dist, temperature: {schedule: linear, start: 1.0, end: 4.0}}"),
    "mse_logits": (VIT, "{name: mse_logits, logit_std: true}"),
    "hint": (VIT, "{name: hint, student: blocks, teacher: blocks, mapping: learned, projector: mlp, loss: cosine}"),
    "fdd": (VIT, "{name: fdd, student: auto, teacher: auto, mapping: uniform}"),
    "cka": (VIT, "{name: cka, student: blocks.1, teacher: blocks.3, debiased: true}"),
    "at": (CNN, "{name: at, student: features.1, teacher: features.2}"),
    "minilm": (
        VIT,
        "{name: minilm, student: blocks, teacher: blocks, mapping: last, submodule: attn.qkv, relation_heads: 2}",
    ),
    "attn_kl": (VIT, "{name: attn_kl, student: blocks.1, teacher: blocks.3, submodule: attn.qkv, relation_heads: 2}"),
    "attn_mse": (
        VIT,
        "{name: attn_mse, student: blocks.1, teacher: blocks.3, submodule: attn.qkv, relation_heads: 2}",
    ),
    "rkd": (VIT, "{name: rkd, student: norm, teacher: norm}"),
    "pkt": (VIT, "{name: pkt, student: 'head:input', teacher: 'head:input'}"),
    "sp": (CNN, "{name: sp, student: features.1, teacher: features.2}"),
    "relational": (VIT, "{name: relational, student: blocks, teacher: blocks, mapping: skip}"),
    "cosine": (VIT, "{name: cosine}"),
    "proj_mse": (VIT, "{name: proj_mse, student: 'head:input', projector: mlp}"),
    "sim_kl": (
        VIT,
        "{name: sim_kl, teacher: 'head:input', temperature: {schedule: exponential, start: 4.0, end: 0.5}}",
    ),
    "infonce": (VIT, "{name: infonce, student: 'head:input', temperature: 0.2, neighbours: 2}"),
    "supcon": (VIT, "{name: supcon, student: 'head:input', temperature: 0.2, dim: 8}"),
    "ensemble_kd": (ENSEMBLE, "{name: ensemble_kd, temperature: 2.0, hidden: 8}"),
    "diverse_kd": (ENSEMBLE, "{name: diverse_kd, temperature: 2.0, min_weight: 0.1}"),
    "dual_head_kd": (CNN, "{name: dual_head_kd, temperature: 3.0}"),
    "crd": (CNN, "{name: crd, weight: 0.8, negatives: 32, dim: 16}"),
    "block_ce": (TM, "{name: block_ce, label_smoothing: 0.1}"),
    "clause_reg": (TM, "{name: clause_reg, sparsity: 1.0, budget: 4}"),
    "clause_align": (TM, "{name: clause_align, student: auto, teacher: auto, temperature: 2.0}"),
    "self_distill": (
        VIT,
        "{name: self_distill, layers: [blocks.0, blocks.1], alpha: 0.5, feature: 0.1, layout: tokens}",
    ),
    "reg_task": (SSM, "{name: reg_task, kind: mag_phase, phase_weight: 0.5}"),
    "reg_distill": (SSM, "{name: reg_distill, kind: complex_mse, weight: {schedule: linear, start: 0.0, end: 1.0}}"),
}


def models(kind):
    torch.manual_seed(0)
    if kind == ENSEMBLE:
        from kdforge.teachers.sources import EnsembleTeacher

        student, first = models(VIT)
        second = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2)
        return student, EnsembleTeacher([first, second])
    if kind == TM:
        teacher = build_model("vit", input_shape=(1, 8, 8), num_classes=10, embed_dim=32, depth=4, heads=4)
        return build_model(
            "vit_tm", input_shape=(1, 8, 8), num_classes=10, embed_dim=16, depth=2, heads=2, clauses=8, diag_heads=True
        ), teacher
    if kind == SSM:
        options = {
            "input_shape": (2, 12),
            "num_classes": 1,
            "pool": "none",
            "complex": True,
            "complex_mode": "channels",
        }
        return build_model("ssm", model_dim=8, num_layers=1, **options), build_model(
            "ssm", model_dim=16, num_layers=2, selectivity="mamba", **options
        )
    if kind == LM:
        return build_model("rwkv_spiking", input_shape=(12,), num_classes=40, size="tiny"), build_model(
            "lm_transformer", input_shape=(12,), num_classes=40, width=32, depth=2, heads=2
        )
    if kind == VIT:
        teacher = build_model("vit", input_shape=(1, 8, 8), num_classes=10, embed_dim=32, depth=4, heads=4)
        student = build_model("vit", input_shape=(1, 8, 8), num_classes=10, embed_dim=16, depth=2, heads=2)
    else:
        teacher = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=16, depth=3)
        student = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=2)
    return student, teacher


def test_every_registered_term_has_an_example():
    built_in = {
        name for name in LOSSES.names() if LOSSES.get(name).__module__.startswith("kdforge.")
    }  # not test plugins
    assert set(EXAMPLES) == built_in


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_term_builds_from_yaml_runs_and_trains_its_parts(name):
    kind, text = EXAMPLES[name]
    student, teacher_module = models(kind)
    terms = build_losses([yaml.safe_load(text)])
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    if kind == SSM:
        x, y = torch.randn(16, 2, 12, dtype=torch.cfloat), torch.randn(16, 1, 12, dtype=torch.cfloat)
    if kind == LM:
        x, y = torch.randint(0, 40, (16, 12)), torch.randint(0, 40, (16, 12))
    distiller = Distiller(student, Teacher(teacher_module), terms, x[:2], per_token=kind == LM, train_samples=64)
    index = [torch.arange(16)] if distiller.reads_index else []  # crd's memory bank: 64 training samples
    optimizer = build_optimizer(distiller.param_groups(), OptimConfig())  # built after setup, as the Trainer does
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    term_params = list(terms[0].parameters())
    assert {id(p) for p in term_params} <= in_optimizer
    distiller.train()
    out = distiller(x, y, Clock(step=50, epoch=5, epochs=10, progress=0.5), *index)  # past warm-ups and ramps
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher_module.parameters())
    assert all(p.grad is not None for p in term_params)


def test_layer_mappings():
    s, t = ["s0", "s1"], ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert map_layers(s, t, "uniform") == [("s0", "t2"), ("s1", "t5")]
    assert map_layers(s, t, "skip") == [("s0", "t0"), ("s1", "t3")]
    assert map_layers(s, t, "last") == [("s0", "t4"), ("s1", "t5")]
    assert map_layers(s, t[:2], "explicit") == [("s0", "t0"), ("s1", "t1")]
    assert map_layers(["s0"], ["t3"], "explicit") == [("s0", "t3")]
    with pytest.raises(KdforgeError, match="explicit mapping pairs layers position by position"):
        map_layers(s, t, "explicit")
    with pytest.raises(KdforgeError, match="at least as many teacher layers"):
        map_layers(t, s, "uniform")


def test_block_lists_are_found_and_checked():
    student, teacher = models(VIT)
    assert block_names(teacher, "auto") == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert block_names(teacher, "blocks") == block_names(teacher, "auto")
    assert block_names(teacher, "blocks", expand=False) == ["blocks"]
    with pytest.raises(KdforgeError, match="no module named 'blocks.9'"):
        block_names(teacher, ["blocks.0", "blocks.9"])
    terms = build_losses(
        [{"name": "hint", "student": "blocks", "teacher": "blocks", "mapping": "uniform", "submodule": "atn"}]
    )
    with pytest.raises(KdforgeError, match="no module named 'blocks.0.atn'.*closest: blocks.0.attn"):
        Distiller(student, Teacher(teacher), terms, torch.randn(2, 1, 8, 8))


def test_learned_mapping_starts_on_the_uniform_pairs_and_learns():
    student, teacher = models(VIT)
    terms = build_losses([{"name": "hint", "student": "blocks", "teacher": "blocks", "mapping": "learned"}])
    distiller = Distiller(student, Teacher(teacher), terms, torch.randn(2, 1, 8, 8))
    weights = torch.softmax(terms[0].gate.logits, -1)
    assert weights.argmax(-1).tolist() == [1, 3]  # uniform: student 0 -> teacher 1, student 1 -> teacher 3
    distiller(torch.randn(8, 1, 8, 8), torch.arange(8)).loss.backward()
    assert terms[0].gate.logits.grad.abs().sum() > 0


def test_kl_is_another_name_for_kd():
    kl, kd = build_losses([{"name": "kl", "temperature": 2.0}, {"name": "kd", "temperature": 2.0}])
    assert type(kl) is type(kd) and kl.direction == "forward"
