"""The teacher stays frozen; gradients reach only the student and the projectors."""

import pytest
import torch

from kdforge.config import OptimConfig, TrainConfig
from kdforge.data import build_dataset, make_loader
from kdforge.distiller import Distiller
from kdforge.errors import KdforgeError
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.teachers import Teacher
from kdforge.trainer import Trainer


def make(hint=True, teacher_dropout=0.5):
    torch.manual_seed(0)
    teacher = Teacher(
        build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2, dropout=teacher_dropout)
    )
    student = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=2)
    specs = [{"name": "ce"}, {"name": "kd", "temperature": 2.0}]
    if hint:
        specs.append({"name": "hint", "student": "features.1", "teacher": "features.1", "projector": "conv1x1"})
    return Distiller(student, teacher, build_losses(specs), torch.randn(2, 1, 8, 8))


def test_gradients_reach_only_student_and_projectors():
    distiller = make()
    distiller.train()
    out = distiller(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    out.loss.backward()
    assert set(out.parts) == {"ce", "kd", "hint"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.student.parameters())
    projector = distiller.terms[2].projectors[0]
    assert projector.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in distiller.teacher.parameters())
    trainable = {id(p) for p in distiller.trainable_parameters()}
    assert {id(p) for p in projector.parameters()} <= trainable
    assert not trainable & {id(p) for p in distiller.teacher.parameters()}


def test_teacher_is_bit_identical_and_in_eval_after_training(tmp_path):
    data = build_dataset("digits")
    distiller = make()
    before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}  # includes BN running stats
    train = make_loader(data.train, 64, shuffle=True)
    trainer = Trainer(
        distiller, OptimConfig(lr=1e-2), TrainConfig(epochs=1), steps_per_epoch=len(train), checkpoint_dir=tmp_path
    )
    trainer.fit(train, make_loader(data.val, 256))
    distiller.train()
    assert not distiller.teacher.training and not any(m.training for m in distiller.teacher.modules())
    after = distiller.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # eval-locked: dropout 0.5 in the teacher does not make its outputs random
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(distiller.teacher(x), distiller.teacher(x))
    distiller.teacher.module.features.train()  # turned on behind its back: the next epoch turns it off again
    distiller.train()
    assert not any(m.training for m in distiller.teacher.modules()) and distiller.student.training
    # and the student did learn
    assert any(
        not torch.equal(a, b)
        for a, b in zip(make().student.state_dict().values(), distiller.student.state_dict().values())
    )


def test_class_count_mismatch_is_caught_at_construction():
    teacher = Teacher(build_model("mlp", input_shape=(1, 8, 8), num_classes=5))
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(KdforgeError, match="teacher outputs 5 classes but the student outputs 10"):
        Distiller(student, teacher, build_losses([{"name": "kd"}]), torch.randn(2, 1, 8, 8))


def test_terms_needing_a_teacher_without_one():
    student = build_model("mlp", input_shape=(4,), num_classes=3)
    with pytest.raises(KdforgeError, match=r"\['kd'\] need a teacher"):
        Distiller(student, None, build_losses([{"name": "ce"}, {"name": "kd"}]), torch.randn(2, 4))


def test_student_state_dict_has_no_wrapper_or_teacher_keys():
    distiller = make()
    keys = set(distiller.student_state_dict())
    assert keys == set(distiller.student.state_dict())
    assert not any(k.startswith(("module.", "teacher", "terms")) for k in keys)


def test_a_teacher_giving_top_k_log_probabilities_is_densified():
    from kdforge.losses.functional import kd_loss, topk_log_probs

    class Sparse(torch.nn.Module):
        def __init__(self, inner, k):
            super().__init__()
            self.inner, self.k = inner, k

        def forward(self, x):
            return topk_log_probs(self.inner(x), self.k)

    torch.manual_seed(0)
    inner = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[8])
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[8])
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    full = Distiller(student, Teacher(Sparse(inner, 10)), build_losses([{"name": "kd", "temperature": 2.0}]), x[:2])
    assert full(x, y).loss.item() == pytest.approx(kd_loss(student(x), inner(x), 2.0).item(), rel=1e-5)
    top3 = Distiller(student, Teacher(Sparse(inner, 3)), build_losses([{"name": "kd", "temperature": 2.0}]), x[:2])
    assert torch.isfinite(top3(x, y).loss)
