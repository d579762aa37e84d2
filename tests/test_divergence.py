"""Skew KL, skew reverse KL and total variation against hand-written formulas; top-k teachers with their tail as
one bucket or renormalised, and their limit k -> V (the dense loss)."""

import math

import pytest
import torch

from kdforge.losses.divergence import DIRECTIONS, divergence_rows, sparse_kd_loss
from kdforge.losses.functional import kd_loss, topk_log_probs


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(3)
    return torch.randn(6, 12, generator=g) * 2, torch.randn(6, 12, generator=g) * 2


def reference(zs, zt, direction, temperature, alpha):
    """Written from the definitions, one row and one class at a time, in float64."""
    total = 0.0
    for s_row, t_row in zip(zs.double().tolist(), zt.double().tolist()):
        p = [math.exp(v / temperature) for v in t_row]
        q = [math.exp(v / temperature) for v in s_row]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        if direction == "skew_forward":
            total += sum(pi * math.log(pi / (alpha * pi + (1 - alpha) * qi)) for pi, qi in zip(p, q))
        elif direction == "skew_reverse":
            total += sum(qi * math.log(qi / (alpha * qi + (1 - alpha) * pi)) for pi, qi in zip(p, q))
        else:
            total += 0.5 * sum(abs(pi - qi) for pi, qi in zip(p, q))
    return total / len(zs) * temperature**2


@pytest.mark.parametrize("direction", ["skew_forward", "skew_reverse", "tvd"])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_skew_and_total_variation_match_their_definitions(pair, direction, temperature):
    zs, zt = pair
    found = kd_loss(zs, zt, temperature, direction, alpha=0.3)
    assert float(found) == pytest.approx(reference(zs, zt, direction, temperature, 0.3), rel=1e-5)
    assert kd_loss(zt, zt, temperature, direction, alpha=0.3).abs() < 1e-6


def test_skew_with_alpha_zero_is_plain_kl_and_alpha_bounds_it(pair):
    zs, zt = pair
    assert torch.allclose(kd_loss(zs, zt, 1.0, "skew_forward", alpha=0.0), kd_loss(zs, zt, 1.0, "forward"))
    assert torch.allclose(kd_loss(zs, zt, 1.0, "skew_reverse", alpha=0.0), kd_loss(zs, zt, 1.0, "reverse"))
    # mixing a share alpha of p into q bounds KL(p || mix) by log(1 / alpha)
    far = kd_loss(zs * 20, -zt * 20, 1.0, "skew_forward", alpha=0.1)
    assert 0 < float(far) <= math.log(10) + 1e-5
    with pytest.raises(ValueError, match="0 <= alpha < 1"):
        kd_loss(zs, zt, 1.0, "skew_forward", alpha=1.0)


def test_the_gradient_reaches_the_student_only(pair):
    zs, zt = (z.clone().requires_grad_(True) for z in pair)
    for direction in DIRECTIONS:
        (grad_s,) = torch.autograd.grad(kd_loss(zs, zt.detach(), 2.0, direction), [zs])
        assert grad_s.abs().sum() > 0, direction


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("tail", ["bucket", "renormalise"])
def test_a_top_k_teacher_with_k_equal_to_v_is_the_dense_loss(pair, direction, tail):
    zs, zt = pair
    top = topk_log_probs(zt, 12)
    for temperature in (1.0, 2.0):
        sparse = sparse_kd_loss(zs, top.log_probs, top.indices, temperature, direction, tail=tail)
        assert torch.allclose(sparse, kd_loss(zs, zt, temperature, direction), rtol=1e-4, atol=1e-6)


def test_the_tail_bucket_gives_a_lower_bound_that_grows_to_the_dense_kl_as_k_grows(pair):
    zs, zt = pair
    dense = float(kd_loss(zs, zt, 1.0, "forward"))
    values = [float(sparse_kd_loss(zs, *topk_log_probs(zt, k), 1.0, "forward")) for k in range(1, 13)]
    assert all(a <= b + 1e-6 for a, b in zip(values, values[1:]))  # each k refines the partition of k - 1
    assert values[-1] == pytest.approx(dense, rel=1e-5) and values[0] < dense


def test_renormalising_ignores_the_students_mass_outside_the_teachers_top_k():
    zt = torch.tensor([[5.0, 4.0, 0.0, 0.0]])
    top = topk_log_probs(zt, 2)
    agree = torch.tensor([[5.0, 4.0, 0.0, 0.0]])
    elsewhere = torch.tensor([[5.0, 4.0, 9.0, 9.0]])  # the same ratio on the top 2, most mass on the others
    loss = {
        tail: [sparse_kd_loss(z, *top, 1.0, tail=tail) for z in (agree, elsewhere)]
        for tail in ("bucket", "renormalise")
    }
    assert torch.allclose(loss["renormalise"][0], loss["renormalise"][1], atol=1e-6)
    assert loss["bucket"][1] > loss["bucket"][0] + 1.0  # the bucket sees the student's misplaced mass


def test_divergence_rows_refuse_unknown_names(pair):
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        divergence_rows(*pair, direction="sideways")  # type: ignore[arg-type]
