"""Ensembles, the EMA teacher and self-distillation, from the maths to whole runs."""

import pytest
import torch

from kdforge import Recipe, run
from kdforge.config import OptimConfig, TrainConfig
from kdforge.data import build_dataset, make_loader
from kdforge.distiller import Distiller
from kdforge.ema import ema_update
from kdforge.errors import ConfigError, KdforgeError
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.run import check
from kdforge.teachers import Teacher
from kdforge.teachers.sources import EnsembleTeacher
from kdforge.trainer import Trainer


def mlp(hidden=16, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[hidden])


def test_ensemble_combines_member_logits():
    a, b = mlp(seed=1), mlp(seed=2)
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(EnsembleTeacher([a, b])(x), (a(x) + b(x)) / 2, atol=1e-6)
    assert torch.allclose(EnsembleTeacher([a, b], [3.0, 1.0])(x), 0.75 * a(x) + 0.25 * b(x), atol=1e-6)
    other = build_model("mlp", input_shape=(1, 8, 8), num_classes=5)
    with pytest.raises(KdforgeError, match="different class counts"):
        EnsembleTeacher([a, other])


def test_ensemble_and_ema_sections_are_checked():
    base = {"student": {"model": {"name": "mlp"}}, "losses": [{"name": "kd"}]}
    with pytest.raises(ConfigError, match="at least two members"):
        Recipe.from_dict({**base, "teacher": {"source": "ensemble", "members": [{"model": {"name": "mlp"}}]}})
    with pytest.raises(ConfigError, match="combine 'weighted' goes with weights"):
        Recipe.from_dict({**base, "teacher": {"source": "ensemble", "weights": [1, 2], "members": [{"model": {"name": "mlp"}}, {"model": {"name": "cnn"}}]}})
    with pytest.raises(ConfigError, match="teacher.model is not used with source 'ema'"):
        Recipe.from_dict({**base, "teacher": {"source": "ema", "model": {"name": "mlp"}}})
    with pytest.raises(ConfigError, match=r"teacher\.members\.1\.model\.width: unknown key"):
        Recipe.from_dict({**base, "teacher": {"source": "ensemble", "members": [{"model": {"name": "mlp"}}, {"model": {"name": "mlp", "width": 3}}]}})
    assert Recipe.from_dict({**base, "teacher": {"source": "ema"}}).teacher.decay == 0.999


def test_ema_update_formula_and_buffers():
    target, source = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=1), build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=1)
    source.features[0][1].running_mean.fill_(3.0)
    source.features[0][1].num_batches_tracked.fill_(5)
    expected = [0.9 * t + 0.1 * s for t, s in zip(target.parameters(), source.parameters())]
    ema_update(target, source, 0.9)
    assert all(torch.allclose(t, e) for t, e in zip(target.parameters(), expected))
    assert torch.allclose(target.features[0][1].running_mean, torch.full((4,), 0.3))  # float buffers are averaged too
    assert torch.equal(target.features[0][1].num_batches_tracked, source.features[0][1].num_batches_tracked)  # counters copied


def test_ema_teacher_follows_the_student_without_gradients(tmp_path):
    data = build_dataset("digits")
    student = mlp()
    teacher = Teacher(mlp(), ema_decay=0.5)
    teacher.module.load_state_dict(student.state_dict())
    distiller = Distiller(student, teacher, build_losses([{"name": "ce"}, {"name": "kd"}]), data.train.x[:2])
    train = make_loader(data.train, 200, shuffle=True)
    before = [p.clone() for p in teacher.module.parameters()]
    trainer = Trainer(distiller, OptimConfig(lr=1e-2), TrainConfig(epochs=1), steps_per_epoch=len(train), checkpoint_dir=tmp_path)
    trainer.fit(train, make_loader(data.val, 512))
    assert all(p.grad is None and not p.requires_grad for p in teacher.module.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(before, teacher.module.parameters())]
    assert all(moved)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert all(torch.equal(last["trainable"]["teacher"][k], v) for k, v in teacher.module.state_dict().items())


def test_ensemble_gate_learns_to_trust_the_right_member():
    """Member 0 is right, member 1 is confidently wrong: the gate's weight on member 0 rises."""
    torch.manual_seed(0)

    class Oracle(torch.nn.Module):
        def __init__(self, right):
            super().__init__()
            self.right = right

        def forward(self, x):
            labels = x[:, 0, 0, 0].long()
            return 5 * torch.nn.functional.one_hot(labels if self.right else (labels + 1) % 10, 10).float()

    ensemble = EnsembleTeacher([Oracle(True), Oracle(False)])
    student = mlp()
    terms = build_losses([{"name": "ensemble_kd", "temperature": 2.0}])
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    x[:, 0, 0, 0] = y.float()
    distiller = Distiller(student, Teacher(ensemble), terms, x[:2])
    optimizer = torch.optim.Adam(terms[0].gate.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        distiller(x, y).loss.backward()
        optimizer.step()
    logits = torch.stack([m(x) for m in ensemble.members], 1)
    weights = torch.softmax(terms[0].gate(logits.flatten(1)), -1)
    assert weights[:, 0].mean() > 0.9


def test_ensemble_kd_needs_an_ensemble():
    with pytest.raises(KdforgeError, match="ensemble_kd needs an ensemble teacher"):
        Distiller(mlp(), Teacher(mlp()), build_losses([{"name": "ensemble_kd"}]), torch.randn(2, 1, 8, 8))


def test_ensemble_and_ema_recipes_run(tiny_recipe):
    members = [{"model": {"name": "cnn", "width": 8, "depth": 2}, "train": {"epochs": 1}}, {"model": {"name": "mlp", "hidden": [32]}, "train": {"epochs": 1}}]
    tiny_recipe["teacher"] = {"source": "ensemble", "members": members}
    tiny_recipe["losses"].append({"name": "ensemble_kd", "weight": 0.5})
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    assert set(check(Recipe.from_dict(tiny_recipe))["parts"]) == {"ce", "kd", "ensemble_kd"}
    result = run(Recipe.from_dict(tiny_recipe))
    assert result.results["teacher"]["combine"] == "mean" and len(result.results["teacher"]["members"]) == 2
    assert (result.run_dir / "teacher" / "member1" / "teacher.safetensors").exists()

    tiny_recipe["teacher"] = {"source": "ema", "decay": 0.9}
    tiny_recipe["losses"] = tiny_recipe["losses"][:2]
    result = run(Recipe.from_dict(tiny_recipe))
    assert result.results["teacher"]["source"] == "ema" and result.results["teacher"]["params"] == result.results["student"]["params"]


def test_a_trainable_teacher_learns_from_labels_only_in_its_own_group(tmp_path):
    from kdforge.losses.functional import cross_entropy

    torch.manual_seed(0)
    teacher = Teacher(mlp(32), trainable=True, lr=0.05, ce_weight=0.5)
    student = mlp()
    distiller = Distiller(student, teacher, build_losses([{"name": "ce"}, {"name": "kd"}]), torch.randn(2, 1, 8, 8))
    groups = distiller.param_groups()
    assert any(g.get("lr") == 0.05 and len(g["params"]) == len(list(teacher.module.parameters())) for g in groups)
    distiller.train()
    assert teacher.module.training  # a co-trained teacher follows the trainer's mode (dropout, batch norm)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    out = distiller(x, y)
    out.loss.backward()
    got = [p.grad.clone() for p in teacher.module.parameters()]
    teacher.module.zero_grad()
    (0.5 * cross_entropy(teacher.module(x), y)).backward()  # what the teacher should learn from: its CE alone
    assert all(torch.allclose(a, b.grad, atol=1e-6) for a, b in zip(got, teacher.module.parameters()))
    assert "teacher_ce" in out.parts and any(p.grad is not None for p in student.parameters())


def test_trainable_teacher_recipe_co_trains_and_checkpoints_the_teacher(tiny_recipe):
    tiny_recipe["teacher"] = {**tiny_recipe["teacher"], "trainable": True, "lr": 1e-3}
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    result = run(Recipe.from_dict(tiny_recipe))
    from kdforge.export import read_state_dict

    last = torch.load(result.run_dir / "last.pt", weights_only=True)
    pretrained = read_state_dict(result.run_dir / "teacher" / "teacher.safetensors")  # before co-training
    co_trained = last["trainable"]["teacher"]
    assert any(not torch.equal(co_trained[k], v) for k, v in pretrained.items() if v.is_floating_point())
    assert "teacher_ce" in last["position"]["history"]
    with pytest.raises(ConfigError, match="used with trainable: true only"):
        Recipe.from_dict({**tiny_recipe, "teacher": {**tiny_recipe["teacher"], "trainable": False}})


def test_hidden_states_of_several_teachers_at_once(invoke, tiny_recipe, tmp_path, capsys):
    import json

    import yaml

    tiny_recipe["teacher"] = {"source": "ensemble", "members": [
        {"source": "train", "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1}},
        {"source": "train", "model": {"name": "cnn", "width": 4, "depth": 1}, "train": {"epochs": 1}},
    ]}
    tiny_recipe["losses"] = [{"name": "ce"}, {"name": "kd"}, {"name": "hint", "student": "features.0", "teacher": "members.0.features.0", "projector": "linear"},
                             {"name": "cka", "student": "features.0", "teacher": "members.1.features.0"}]
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("train", tmp_path / "two.yaml") == 0, capsys.readouterr().out
    run_dir = next((tmp_path / "runs").glob("tiny-*"))
    epoch = next(r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["stage"] == "distill" and r["kind"] == "epoch")
    assert epoch["train"]["hint"] > 0 and 0 < epoch["train"]["cka"] <= 1  # one term per teacher's hidden states
