"""Ensembles, the EMA teacher and self-distillation, from the maths to whole runs."""

import pytest
import torch

from kdforge import Recipe, run
from kdforge.check import check
from kdforge.config import OptimConfig, TrainConfig
from kdforge.data import build_dataset, make_loader
from kdforge.distiller import Distiller
from kdforge.ema import ema_update
from kdforge.errors import ConfigError, KdforgeError
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.teachers import Teacher
from kdforge.teachers.sources import EnsembleTeacher
from kdforge.trainer import Trainer
from stagecount import StageCounts


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
        Recipe.from_dict(
            {
                **base,
                "teacher": {
                    "source": "ensemble",
                    "weights": [1, 2],
                    "members": [{"model": {"name": "mlp"}}, {"model": {"name": "cnn"}}],
                },
            }
        )
    with pytest.raises(ConfigError, match="teacher.model is not used with source 'ema'"):
        Recipe.from_dict({**base, "teacher": {"source": "ema", "model": {"name": "mlp"}}})
    with pytest.raises(ConfigError, match=r"teacher\.members\.1\.model\.width: unknown key"):
        Recipe.from_dict(
            {
                **base,
                "teacher": {
                    "source": "ensemble",
                    "members": [{"model": {"name": "mlp"}}, {"model": {"name": "mlp", "width": 3}}],
                },
            }
        )
    assert Recipe.from_dict({**base, "teacher": {"source": "ema"}}).teacher.decay == 0.999


def test_ema_update_formula_and_buffers():
    target, source = (
        build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=1),
        build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=1),
    )
    source.features[0][1].running_mean.fill_(3.0)
    source.features[0][1].num_batches_tracked.fill_(5)
    expected = [0.9 * t + 0.1 * s for t, s in zip(target.parameters(), source.parameters())]
    ema_update(target, source, 0.9)
    assert all(torch.allclose(t, e) for t, e in zip(target.parameters(), expected))
    assert torch.allclose(target.features[0][1].running_mean, torch.full((4,), 0.3))  # float buffers are averaged too
    assert torch.equal(
        target.features[0][1].num_batches_tracked, source.features[0][1].num_batches_tracked
    )  # counters copied


def test_ema_teacher_follows_the_student_without_gradients(tmp_path):
    data = build_dataset("digits")
    student = mlp()
    teacher = Teacher(mlp(), ema_decay=0.5)
    teacher.module.load_state_dict(student.state_dict())
    distiller = Distiller(student, teacher, build_losses([{"name": "ce"}, {"name": "kd"}]), data.train.x[:2])
    train = make_loader(data.train, 200, shuffle=True)
    before = [p.clone() for p in teacher.module.parameters()]
    trainer = Trainer(
        distiller, OptimConfig(lr=1e-2), TrainConfig(epochs=1), steps_per_epoch=len(train), checkpoint_dir=tmp_path
    )
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
    members = [
        {"model": {"name": "cnn", "width": 8, "depth": 2}, "train": {"epochs": 1}},
        {"model": {"name": "mlp", "hidden": [32]}, "train": {"epochs": 1}},
    ]
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
    assert (
        result.results["teacher"]["source"] == "ema"
        and result.results["teacher"]["params"] == result.results["student"]["params"]
    )


def test_a_term_reads_one_members_logits_and_an_ema_member_alone_follows_the_student(tmp_path):
    from kdforge.losses.functional import kd_loss

    fixed, student = mlp(seed=1), mlp(seed=2)
    teacher = Teacher(EnsembleTeacher([fixed, mlp(seed=3)]), ema_decay=0.5, ema_part="members.1")
    teacher.start_ema(student)
    assert all(torch.equal(a, b) for a, b in zip(teacher.module.members[1].parameters(), student.parameters()))
    terms = build_losses(
        [
            {"name": "kd", "member": 0, "temperature": 2.0},
            {"name": "kd", "member": 1, "temperature": 3.0},
            {"name": "kd"},
        ]
    )
    distiller = Distiller(student, teacher, terms, torch.randn(2, 1, 8, 8))
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    out = distiller(x, y)
    with torch.no_grad():
        zs, z0, z1 = student(x), fixed(x), teacher.module.members[1](x)
    assert torch.allclose(out.parts["kd"], kd_loss(zs, z0, 2.0), atol=1e-6)
    assert torch.allclose(out.parts["kd_2"], kd_loss(zs, z1, 3.0), atol=1e-6)
    assert torch.allclose(out.parts["kd_3"], kd_loss(zs, (z0 + z1) / 2, 4.0), atol=1e-6)  # no member: the combination

    fixed_before = [p.clone() for p in fixed.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    distiller.after_step()
    assert all(torch.equal(a, b) for a, b in zip(fixed_before, fixed.parameters()))  # the external member never moves
    assert torch.allclose(teacher.module.members[1].head.weight, student.head.weight - 0.5)
    assert set(distiller.trainable_state_dict()["teacher"]) == set(
        teacher.module.members[1].state_dict()
    )  # only what changes is checkpointed


def test_member_must_name_an_ensemble_member_of_a_term_that_reads_the_teacher():
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(KdforgeError, match="member: 2 needs an ensemble teacher with a member 2.*an ensemble of 2"):
        Distiller(mlp(), Teacher(EnsembleTeacher([mlp(), mlp()])), build_losses([{"name": "kd", "member": 2}]), x)
    with pytest.raises(KdforgeError, match="this teacher is not an ensemble"):
        Distiller(mlp(), Teacher(mlp()), build_losses([{"name": "kd", "member": 0}]), x)
    with pytest.raises(KdforgeError, match="'ce' reads no teacher; remove member"):
        Distiller(mlp(), Teacher(EnsembleTeacher([mlp(), mlp()])), build_losses([{"name": "ce", "member": 0}]), x)


def test_per_token_member_logits_are_flattened_and_unpadded_like_the_combination():
    from kdforge.data.bundle import PAD_TARGET
    from kdforge.losses.functional import kd_loss

    class TinyLM(torch.nn.Module):
        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.embed, self.head = torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11)

        def forward(self, tokens):
            return self.head(self.embed(tokens))

    a, b, student = TinyLM(1), TinyLM(2), TinyLM(3)
    distiller = Distiller(
        student,
        Teacher(EnsembleTeacher([a, b])),
        build_losses([{"name": "kd", "member": 1, "temperature": 1.0}]),
        torch.randint(0, 11, (2, 5)),
        per_token=True,
    )
    tokens, targets = torch.randint(0, 11, (3, 5)), torch.randint(0, 11, (3, 5))
    targets[0, 3:] = PAD_TARGET
    real = (targets != PAD_TARGET).flatten()
    with torch.no_grad():
        expected = kd_loss(student(tokens).flatten(0, 1)[real], b(tokens).flatten(0, 1)[real], 1.0)
    assert torch.allclose(distiller(tokens, targets).parts["kd"], expected, atol=1e-6)

    terms = build_losses(
        [{"name": "dual_head_kd", "temperature": 2.0}, {"name": "diverse_kd", "by": "agreement"}]
    )  # token rows, padding left out, too
    distiller = Distiller(
        student, Teacher(EnsembleTeacher([a, b])), terms, torch.randint(0, 11, (2, 5)), per_token=True
    )
    parts = distiller(tokens, targets).parts
    with torch.no_grad():
        aux = terms[0].aux_head(student.embed(tokens).flatten(0, 1)[real])
        assert torch.allclose(
            parts["dual_head_kd"], kd_loss(aux, (a(tokens) + b(tokens)).flatten(0, 1)[real] / 2, 2.0), atol=1e-5
        )
    assert torch.isfinite(parts["diverse_kd"])


def test_external_teacher_and_ema_self_distillation_in_one_run(tiny_recipe, invoke, tmp_path):
    """The pretrained-teacher workflow: KD from a fixed teacher and from the student's own
    moving average at once, each term on its own member, through `kdforge train`."""
    import json

    import yaml

    tiny_recipe["teacher"] = {
        "source": "ensemble",
        "members": [tiny_recipe["teacher"], {"source": "ema", "decay": 0.9}],
    }
    tiny_recipe["losses"] = [
        {"name": "ce", "weight": 0.4},
        {"name": "kd", "member": 0, "weight": 0.4},
        {"name": "kd", "member": 1, "weight": 0.2, "temperature": 2.0},
    ]
    tiny_recipe["train"] = {"epochs": 2, "baseline": False}
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", path) == 0
    assert invoke("train", path) == 0
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    results = json.loads((run_dir / "results.json").read_text())
    assert [m.get("decay") for m in results["teacher"]["members"]] == [None, 0.9]
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert set(last["trainable"]["teacher"]) == set(
        build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16]).state_dict()
    )  # the EMA member
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("kd_2" in str(row) for row in metrics)


def test_ensemble_members_are_checked():
    base = {"student": {"model": {"name": "mlp"}}, "losses": [{"name": "kd"}]}
    ema = {"source": "ema"}
    with pytest.raises(ConfigError, match="at most one 'ema' member"):
        Recipe.from_dict({**base, "teacher": {"source": "ensemble", "members": [ema, ema]}})
    with pytest.raises(ConfigError, match="not 'ensemble'"):
        Recipe.from_dict(
            {
                **base,
                "teacher": {
                    "source": "ensemble",
                    "members": [ema, {"source": "ensemble", "members": [ema, {"model": {"name": "mlp"}}]}],
                },
            }
        )
    with pytest.raises(ConfigError, match="cannot be cached"):
        Recipe.from_dict(
            {**base, "teacher": {"source": "ensemble", "cache": "c", "members": [ema, {"model": {"name": "mlp"}}]}}
        )
    with pytest.raises(ConfigError, match="belong to the ensemble's own section"):
        Recipe.from_dict(
            {**base, "teacher": {"source": "ensemble", "members": [ema, {"model": {"name": "mlp"}, "trainable": True}]}}
        )
    with pytest.raises(ConfigError, match="member"):
        Recipe.from_dict({**base, "teacher": ema, "losses": [{"name": "kd", "member": -1}]})
    recipe = Recipe.from_dict({**base, "teacher": {"source": "ensemble", "members": [{"model": {"name": "mlp"}}, ema]}})
    assert recipe.teacher.ema_part == ("members.1", 0.999)


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

    tiny_recipe["teacher"] = {
        "source": "ensemble",
        "members": [
            {"source": "train", "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1}},
            {"source": "train", "model": {"name": "cnn", "width": 4, "depth": 1}, "train": {"epochs": 1}},
        ],
    }
    tiny_recipe["losses"] = [
        {"name": "ce"},
        {"name": "kd"},
        {"name": "hint", "student": "features.0", "teacher": "members.0.features.0", "projector": "linear"},
        {"name": "cka", "student": "features.0", "teacher": "members.1.features.0"},
    ]
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("train", tmp_path / "two.yaml") == 0, capsys.readouterr().out
    run_dir = next((tmp_path / "runs").glob("tiny-*"))
    epoch = next(
        r
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if r["stage"] == "distill" and r["kind"] == "epoch"
    )
    assert epoch["train"]["hint"] > 0 and 0 < epoch["train"]["cka"] <= 1  # one term per teacher's hidden states


def test_diverse_kd_weights_each_sample_towards_the_teachers_that_are_right_about_it():
    from kdforge.losses import functional as lf

    torch.manual_seed(0)
    members = torch.randn(2, 6, 4)  # [M, B, K]
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    members[0, torch.arange(3), labels[:3]] = 8.0  # member 0 is sure and right on the first half
    members[1, torch.arange(3, 6), labels[3:]] = 8.0  # member 1 on the second
    student = torch.randn(6, 4, requires_grad=True)
    weights = lf.teacher_importance(members, student, labels, "confidence", 1.0, 0.0)
    ce = torch.stack([torch.nn.functional.cross_entropy(z, labels, reduction="none") for z in members], 1)
    assert torch.allclose(weights, torch.softmax(-ce, 1))
    assert (weights[:3, 0] > 0.6).all() and (weights[3:, 1] > 0.6).all()
    filtered = lf.teacher_importance(members, student, labels, "confidence", 1.0, 0.2)
    assert ((filtered == 0) | (filtered >= 0.2)).all() and torch.allclose(filtered.sum(1), torch.ones(6))
    agree = lf.teacher_importance(members, members[1], labels, "agreement", 1.0, 0.0)
    assert (agree[:, 1] > agree[:, 0]).all()  # a student that already follows member 1 weighs it more
    loss = lf.multi_teacher_kd(student, members, weights, 2.0)
    expected = (
        sum(
            weights[b, m] * lf.kd_loss(student[b : b + 1], members[m, b : b + 1], 2.0)
            for b in range(6)
            for m in range(2)
        )
        / 6
    )
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(
        lf.multi_teacher_kd(student, members, torch.tensor([[1.0, 0.0]]).expand(6, 2), 2.0),
        lf.kd_loss(student, members[0], 2.0),
        atol=1e-5,
    )


def test_diverse_kd_runs_from_a_recipe_and_logs_each_members_weight(tiny_recipe, invoke, tmp_path):
    import json

    import yaml

    members = [
        {"model": {"name": "cnn", "width": 8, "depth": 2}, "train": {"epochs": 1}},
        {"model": {"name": "mlp", "hidden": [32]}, "train": {"epochs": 1}},
    ]
    tiny_recipe["teacher"] = {"source": "ensemble", "members": members}
    tiny_recipe["losses"] = [{"name": "ce", "weight": 0.3}, {"name": "diverse_kd", "weight": 0.7, "min_weight": 0.1}]
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    (tmp_path / "diverse.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("train", tmp_path / "diverse.yaml") == 0
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    epoch = json.loads((run_dir / "results.json").read_text())["student"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {key for row in rows for key in row}
    assert {"diverse_kd.w0", "diverse_kd.w1", "diverse_kd.filtered"} <= logged
    assert epoch["test"]["accuracy"] > 0
    with pytest.raises(KdforgeError, match="diverse_kd weighs the members of an ensemble"):
        Distiller(mlp(), Teacher(mlp()), build_losses([{"name": "diverse_kd"}]), torch.randn(2, 1, 8, 8))


def test_dual_head_kd_trains_an_auxiliary_head_and_leaves_the_students_own_head_to_the_labels(
    tiny_recipe, invoke, tmp_path
):
    import yaml

    from kdforge.losses.functional import kd_loss

    tiny_recipe["losses"] = [{"name": "ce", "weight": 0.5}, {"name": "dual_head_kd", "weight": 0.5, "temperature": 4.0}]
    (tmp_path / "dual.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", tmp_path / "dual.yaml") == 0

    student, teacher = mlp(seed=1), mlp(32, seed=2)
    terms = build_losses([{"name": "dual_head_kd", "temperature": 3.0}])
    distiller = Distiller(student, Teacher(teacher), terms, torch.randn(2, 1, 8, 8))
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    out = distiller(x, y)
    features = {}
    handle = student.head.register_forward_pre_hook(lambda module, args: features.update(x=args[0]))
    with torch.no_grad():
        student(x)
    handle.remove()
    aux = terms[0].aux_head
    assert torch.allclose(out.parts["dual_head_kd"], kd_loss(aux(features["x"]), teacher(x), 3.0), atol=1e-6)
    out.loss.backward()
    assert student.head.weight.grad is None  # the student's own classifier learns from the labels alone
    assert (
        aux.weight.grad.abs().sum() > 0 and next(student.features.parameters()).grad.abs().sum() > 0
    )  # the auxiliary head and the backbone learn


def arrays_file(path, samples, seed, shape=(1, 8, 8)):
    """An ``arrays`` dataset of ``samples`` random images with 3 classes, written at ``path``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.standard_normal((samples, *shape)).astype("float32"), y=rng.integers(0, 3, samples))
    return str(path)


def test_a_teacher_learns_from_data_of_its_own_and_is_scored_on_the_runs(tiny_recipe, tmp_path):
    """teacher.train.data: the teacher trains and is selected on another dataset (here another file, twice the size),
    the students on the run's; its cache key follows its own data, not the students'."""
    from kdforge.teachers.sources import teacher_cache_key, trained_teacher

    mine, theirs = arrays_file(tmp_path / "mine.npz", 60, 0), arrays_file(tmp_path / "theirs.npz", 120, 1)
    tiny_recipe.update(
        data={"name": "arrays", "path": mine, "batch_size": 16, "val_fraction": 0.25, "test_fraction": 0.25},
        teacher={**tiny_recipe["teacher"], "train": {"epochs": 1, "data": {"path": theirs}}},
        train={"epochs": 1, "baseline": False},
    )
    recipe = Recipe.model_validate(tiny_recipe)
    counts = StageCounts()
    result = run(recipe, callbacks=[counts])
    assert counts.samples == {"teacher": 60, "distill": 30}  # half of each file is its training split
    teacher = result.results["teacher"]
    assert teacher["own_data"] == {"path": theirs} and "val_own" in teacher
    plain = Recipe.model_validate({**tiny_recipe, "teacher": {**tiny_recipe["teacher"], "train": {"epochs": 1}}})
    assert teacher_cache_key(recipe, recipe.teacher) != teacher_cache_key(plain, plain.teacher)
    other = Recipe.model_validate({**tiny_recipe, "data": {**tiny_recipe["data"], "path": arrays_file(
        tmp_path / "other.npz", 40, 2)}})  # fmt: skip
    assert trained_teacher(other, other.teacher) is not None  # other student data, the same teacher: reused


def test_a_teacher_fits_with_the_recipes_optimiser_changed_by_its_own_optim(tiny_recipe):
    """teacher.train.optim changes keys of the recipe's optim for the teacher's fit alone: the key follows the
    optimiser the fit uses, however it is spelled, so a student trained with another optimiser or rate distils from
    the same teacher once its own is written out (what `kdforge tune` does)."""
    from kdforge.config.recipe import teacher_optim, with_teacher_optim_pinned
    from kdforge.teachers.sources import teacher_cache_key

    def key(recipe):
        return teacher_cache_key(recipe, recipe.teacher)

    plain = Recipe.model_validate(tiny_recipe)
    own = Recipe.model_validate({**tiny_recipe, "teacher": {**tiny_recipe["teacher"], "train": {
        "epochs": 2, "optim": {"name": "sgd", "momentum": 0.8}}}})  # fmt: skip
    fit = teacher_optim(own.optim, own.teacher.train)
    assert (fit.name, fit.momentum, fit.lr) == ("sgd", 0.8, 3e-3) and own.optim.name == "adamw"
    assert key(own) != key(plain)
    spelled = Recipe.model_validate({**tiny_recipe, "teacher": {**tiny_recipe["teacher"], "train": {
        "epochs": 2, "optim": {"lr": 3e-3}}}})  # fmt: skip
    assert key(spelled) == key(plain)  # the recipe's own rate, written out: the same teacher
    pinned = with_teacher_optim_pinned(plain)
    fit = pinned.teacher.train
    assert {**fit.optim, "lr": fit.lr} == plain.optim.model_dump(mode="json") and key(pinned) == key(plain)
    retuned = Recipe.from_dict(pinned.to_dict(), ["teacher.train.lr=0.01"])  # the teacher's own rate still reaches it
    assert teacher_optim(retuned.optim, retuned.teacher.train).lr == 0.01
    dot = {"name": "dot", "lr": 0.05}
    assert key(pinned.model_copy(update={"optim": OptimConfig(**dot)})) == key(plain)  # the student's alone changed
    assert key(plain.model_copy(update={"optim": OptimConfig(**dot)})) != key(plain)  # unpinned, the teacher's too
    members = {"source": "ensemble", "members": [tiny_recipe["teacher"], {**tiny_recipe["teacher"], "train": {
        "epochs": 1, "lr": 0.01}}]}  # fmt: skip
    ensemble = with_teacher_optim_pinned(Recipe.model_validate({**tiny_recipe, "teacher": members})).teacher
    assert [m.train.lr for m in ensemble.members] == [3e-3, 0.01]  # each member's own rate kept
    for wrong, said in (({"momentum": 2}, "teacher.train.optim.momentum: Input should be less than 1"),
                        ({"nmae": "sgd"}, "teacher.train.optim.nmae: unknown key 'nmae'")):  # fmt: skip
        with pytest.raises(ConfigError, match=said):
            Recipe.from_dict({**tiny_recipe, "teacher": {**tiny_recipe["teacher"], "train": {"optim": wrong}}})
    with pytest.raises(ConfigError, match="set the teacher's learning rate once"):
        Recipe.from_dict({**tiny_recipe, "teacher": {**tiny_recipe["teacher"], "train": {"lr": 0.1, "optim": {
            "lr": 0.2}}}})  # fmt: skip


def test_a_teachers_own_data_is_checked_before_anything_trains(tiny_recipe, tmp_path, invoke, capsys):
    import yaml

    tiny_recipe["data"] = {"name": "arrays", "path": arrays_file(tmp_path / "mine.npz", 40, 0)}
    tiny_recipe["teacher"]["train"]["data"] = {"path": arrays_file(tmp_path / "wide.npz", 40, 1, shape=(1, 8, 9))}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", tmp_path / "r.yaml") != 0
    said = capsys.readouterr().out
    assert "the teacher's own data (wide: train 26" in said and "input [1, 8, 9]" in said
    for wrong, said in (({"batch_size": 0}, "teacher.train.data.batch_size: Input should be greater than 0"),
                        ({"colour": 1}, "teacher.train.data.colour: unknown key 'colour'")):  # fmt: skip
        tiny_recipe["teacher"]["train"]["data"] = wrong
        with pytest.raises(ConfigError, match=said):
            Recipe.from_dict(tiny_recipe)


def test_a_teacher_whose_own_data_keeps_the_runs_split_file_is_told_so(tiny_recipe, tmp_path, invoke, capsys):
    """The run's split_file carries over to the teacher's own data (its rows must not be the run's test rows when
    both read the same samples): check says so, and says how to give it another."""
    import json

    import yaml

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": list(range(30)), "val": list(range(30, 45)), "test": list(range(45, 60))}))
    tiny_recipe["data"] = {
        "name": "arrays",
        "path": arrays_file(tmp_path / "mine.npz", 60, 0),
        "split_file": str(split),
    }
    tiny_recipe["teacher"]["train"]["data"] = {"path": arrays_file(tmp_path / "theirs.npz", 120, 1)}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", tmp_path / "r.yaml") == 0
    said = " ".join(capsys.readouterr().out.split())
    assert f"split by the run's split_file {split}" in said
    tiny_recipe["teacher"]["train"]["data"]["split_file"] = str(split)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", tmp_path / "r.yaml") == 0
    assert "split by the run's split_file" not in " ".join(capsys.readouterr().out.split())
