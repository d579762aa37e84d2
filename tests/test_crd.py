"""CRD against a transcription of its authors' memory and NCE loss, and in a run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.errors import KdforgeError
from kdforge.losses.contrastive import CRD, nce_loss
from kdforge.losses.terms import Shapes, StepContext

N, B, DIM, K = 50, 6, 8, 10


def reference_nce(x, n_data, eps=1e-7):
    # Tian et al.'s ContrastLoss: column 0 the positive, the rest noise of probability 1/n_data each
    bsz, m = x.shape[0], x.size(1) - 1
    pn = 1.0 / n_data
    p_pos = x.select(1, 0)
    log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log_()
    p_neg = x.narrow(1, 1, m)
    log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log_()
    return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / bsz


def reference_step(memory_v1, memory_v2, v1, v2, y, idx, T, momentum, n_data):
    # Tian et al.'s ContrastMemory: v1 (student) against the teacher bank's rows, v2 (teacher) against the student
    # bank's, exp(· / T), each divided by Z = mean · n_data from this (first) batch; then the banks' momentum update
    bsz, dim = v1.shape
    weight_v1 = torch.index_select(memory_v1, 0, idx.view(-1)).view(bsz, -1, dim)
    out_v2 = torch.exp(torch.div(torch.bmm(weight_v1, v2.view(bsz, dim, 1)), T)).squeeze(-1)
    weight_v2 = torch.index_select(memory_v2, 0, idx.view(-1)).view(bsz, -1, dim)
    out_v1 = torch.exp(torch.div(torch.bmm(weight_v2, v1.view(bsz, dim, 1)), T)).squeeze(-1)
    out_v1 = out_v1 / (out_v1.mean() * n_data)
    out_v2 = out_v2 / (out_v2.mean() * n_data)
    loss = reference_nce(out_v1, n_data) + reference_nce(out_v2, n_data)
    new = []
    for memory, v in ((memory_v1, v1), (memory_v2, v2)):
        pos = torch.index_select(memory, 0, y.view(-1)).mul(momentum).add(torch.mul(v, 1 - momentum))
        updated = memory.clone()
        updated.index_copy_(0, y, pos.div(pos.pow(2).sum(1, keepdim=True).pow(0.5)))
        new.append(updated)
    return loss, new


def make_crd(**options):
    crd = CRD(dim=DIM, negatives=K, **options)
    crd.setup(Shapes(torch.Size([B, 3]), torch.Size([B, 3]), {"head:input": torch.Size([B, 12])},
                     {"head:input": torch.Size([B, 20])}, train_samples=N))  # fmt: skip
    return crd


def context(student, teacher, labels, index):
    return StepContext(inputs=torch.zeros(len(index), 1), targets=labels, student_logits=None,
                       student_features={"head:input": student}, teacher_features={"head:input": teacher},
                       index=index)  # fmt: skip


def test_nce_loss_equals_the_reference():
    x = torch.rand(B, 1 + K, generator=torch.Generator().manual_seed(0)) * 0.1
    torch.testing.assert_close(nce_loss(x, N), reference_nce(x, N)[0])


def test_crd_step_equals_the_reference_memory_and_loss():
    torch.manual_seed(0)
    crd = make_crd(sampling="any", momentum=0.5)
    student, teacher = torch.randn(B, 12, requires_grad=True), torch.randn(B, 20)
    index, labels = torch.tensor([3, 7, 11, 20, 31, 49]), torch.arange(B) % 3
    rows = crd.contrast(index, None)
    assert (rows[:, 0] == index).all() and not (rows[:, 1:] == index[:, None]).any()
    crd.contrast = lambda index, labels: rows  # the same draw for both computations
    banks = crd.student_bank.clone(), crd.teacher_bank.clone()
    v1 = F.normalize(crd.embed_student(student), dim=1)
    v2 = F.normalize(crd.embed_teacher(teacher), dim=1)
    expected, (student_bank, teacher_bank) = reference_step(*banks, v1, v2, index, rows, 0.07, 0.5, N)
    loss = crd(context(student, teacher, labels, index))
    torch.testing.assert_close(loss, expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(crd.student_bank, student_bank.detach())
    torch.testing.assert_close(crd.teacher_bank, teacher_bank.detach())
    loss.backward()  # the student's features and both embedding heads learn
    assert student.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crd.parameters())


def test_the_normalising_constants_are_fixed_from_the_first_batch():
    crd = make_crd()
    index, labels = torch.arange(B), torch.arange(B) % 3
    crd(context(torch.randn(B, 12), torch.randn(B, 20), labels, index))
    first = crd.normaliser.clone()
    assert (first > 0).all()
    crd(context(torch.randn(B, 12) * 5, torch.randn(B, 20), labels, index + B))
    assert torch.equal(crd.normaliser, first)


def test_other_class_negatives_avoid_the_anchors_class_once_labels_are_seen():
    torch.manual_seed(1)
    crd = make_crd(sampling="other_class")
    labels_all = torch.arange(N) % 5
    crd.labels.copy_(labels_all)
    index = torch.tensor([0, 1, 2, 3, 4, 5])
    rows = crd.contrast(index, labels_all[index])
    assert not (labels_all[rows[:, 1:]] == labels_all[index][:, None]).any()
    assert not (rows[:, 1:] == index[:, None]).any()


def test_options_are_checked():
    with pytest.raises(ValueError, match="temperature > 0"):
        CRD(temperature=0)
    with pytest.raises(KdforgeError, match="fewer than the training samples"):
        CRD(negatives=N).setup(Shapes(torch.Size([B, 3]), None, {"head:input": torch.Size([B, 4])},
                                      {"head:input": torch.Size([B, 4])}, train_samples=N))  # fmt: skip


def test_a_run_with_crd_indexes_its_batches_and_trains(tiny_recipe):
    from kdforge import Recipe, run

    tiny_recipe["losses"] = [
        {"name": "ce"},
        {"name": "crd", "weight": 0.8, "negatives": 64, "dim": 16},
    ]
    tiny_recipe["train"]["baseline"] = False
    result = run(Recipe.model_validate(tiny_recipe))
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["stage"] == "distill" and r["kind"] == "step"]
    assert steps and all(math.isfinite(r["crd"]) for r in steps)
    assert math.isfinite(result.results["student"]["test"]["accuracy"])
