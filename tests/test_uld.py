"""Universal logit distillation: the L1 distance between sorted probabilities, against a formula written row by row;
blind to which token is which, defined across vocabularies of different sizes, zero on identical distributions."""

import math

import pytest
import torch

from kdforge.losses.functional import uld_loss


def reference(zs, zt, temperature):
    """Each row's probabilities sorted from the largest, the shorter list extended by zeros, summed |p - q|; the
    mean over rows. In float64, one row at a time."""
    total = 0.0
    for s_row, t_row in zip(zs.double().tolist(), zt.double().tolist()):
        p = sorted((math.exp(v / temperature) for v in s_row), reverse=True)
        q = sorted((math.exp(v / temperature) for v in t_row), reverse=True)
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        size = max(len(p), len(q))
        p, q = p + [0.0] * (size - len(p)), q + [0.0] * (size - len(q))
        total += sum(abs(a - b) for a, b in zip(p, q))
    return total / len(zs)


@pytest.mark.parametrize(("student_vocab", "teacher_vocab"), [(12, 12), (12, 20), (20, 7)])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_uld_matches_its_definition(student_vocab, teacher_vocab, temperature):
    g = torch.Generator().manual_seed(4)
    zs, zt = torch.randn(5, student_vocab, generator=g) * 2, torch.randn(5, teacher_vocab, generator=g) * 2
    assert float(uld_loss(zs, zt, temperature)) == pytest.approx(reference(zs, zt, temperature), rel=1e-5)


def test_uld_ignores_token_identity_and_is_zero_on_the_same_distribution():
    g = torch.Generator().manual_seed(5)
    zs, zt = torch.randn(4, 10, generator=g), torch.randn(4, 16, generator=g)
    shuffled = zt[:, torch.randperm(16, generator=g)]
    assert torch.allclose(uld_loss(zs, zt), uld_loss(zs, shuffled))
    padded = torch.cat([zs, torch.full((4, 6), -1e4)], 1)  # six more tokens that are never predicted
    assert float(uld_loss(zs, padded)) < 1e-6 and float(uld_loss(zs, zs.flip(-1))) < 1e-6


def test_uld_moves_the_students_logits_but_not_their_sum_and_temperature_changes_it():
    g = torch.Generator().manual_seed(6)
    zs, zt = torch.randn(3, 8, generator=g).requires_grad_(), torch.randn(3, 11, generator=g)
    (grad,) = torch.autograd.grad(uld_loss(zs, zt), [zs])
    assert grad.abs().sum() > 0 and torch.allclose(grad.sum(-1), torch.zeros(3), atol=1e-7)  # softmax: shift-free
    assert not torch.isclose(uld_loss(zs, zt, 1.0), uld_loss(zs, zt, 3.0))
