"""Every functional loss against an independent NumPy reference, plus its invariants."""

import math
import zlib

import numpy as np
import pytest
import torch

from kdforge.losses import functional as lf
from kdforge.losses import representation as rep

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def same_draws(request):
    """Each test draws the same numbers whichever tests ran before it in its worker (xdist shares the module)."""
    global rng
    rng = np.random.default_rng(zlib.crc32(request.node.name.encode()))


def t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def kl(p, q):
    return (p * np.log(p / q)).sum(-1)


@pytest.fixture
def pair():
    s, tt = rng.normal(size=(6, 5)) * 2, rng.normal(size=(6, 5)) * 2
    return s, tt, np.array([0, 1, 2, 3, 4, 1])


# ----------------------------------------------------------------------------- logits


@pytest.mark.parametrize("temp", [1.0, 3.0])
def test_kd_directions_match_reference(pair, temp):
    s, tt, _ = pair
    ps, pt = softmax(s / temp), softmax(tt / temp)
    m = (ps + pt) / 2
    expected = {
        "forward": kl(pt, ps).mean(),
        "reverse": kl(ps, pt).mean(),
        "jsd": (0.5 * kl(pt, m) + 0.5 * kl(ps, m)).mean(),
    }
    for direction, value in expected.items():
        assert lf.kd_loss(t(s), t(tt), temp, direction).item() == pytest.approx(temp**2 * value, rel=1e-4)
    for beta in (0.2, 0.7):
        mb = beta * pt + (1 - beta) * ps
        gjsd = ((beta * kl(pt, mb) + (1 - beta) * kl(ps, mb)) / (beta * (1 - beta))).mean()
        assert lf.kd_loss(t(s), t(tt), temp, "gjsd", beta).item() == pytest.approx(temp**2 * gjsd, rel=1e-4)


def test_forward_and_reverse_differ_and_gjsd_has_the_right_limits(pair):
    s, tt = t(pair[0]), t(pair[1])
    forward, reverse = lf.kd_loss(s, tt, 2.0, "forward").item(), lf.kd_loss(s, tt, 2.0, "reverse").item()
    assert abs(forward - reverse) > 1e-2  # KL is asymmetric
    assert lf.kd_loss(s, tt, 2.0, "gjsd", 0.0).item() == pytest.approx(forward, rel=1e-6)
    assert lf.kd_loss(s, tt, 2.0, "gjsd", 1.0).item() == pytest.approx(reverse, rel=1e-6)
    assert lf.kd_loss(s, tt, 2.0, "gjsd", 1e-4).item() == pytest.approx(forward, rel=1e-3)  # continuous at the ends
    assert lf.kd_loss(s, tt, 2.0, "gjsd", 1 - 1e-4).item() == pytest.approx(reverse, rel=1e-3)
    assert lf.kd_loss(s, tt, 2.0, "gjsd", 0.5).item() == pytest.approx(
        4 * lf.kd_loss(s, tt, 2.0, "jsd").item(), rel=1e-5
    )
    for direction in ("forward", "reverse", "jsd", "gjsd"):
        assert lf.kd_loss(s, s.clone(), 2.0, direction).item() == pytest.approx(0.0, abs=1e-6)


def test_t_squared_keeps_the_gradient_scale():
    """Soft-target gradients shrink as 1/T²; the T² factor restores them (Hinton et al., 2015).
    For large T the gradient tends to (z_s - z_t) / (K B) with zero-mean logits."""
    s = torch.randn(4, 10, generator=torch.Generator().manual_seed(1)) * 0.1
    tt = torch.randn(4, 10, generator=torch.Generator().manual_seed(2)) * 0.1
    s, tt = s - s.mean(1, keepdim=True), tt - tt.mean(1, keepdim=True)
    grads = []
    for temp in (10.0, 40.0):
        x = s.clone().requires_grad_()
        lf.kd_loss(x, tt, temp).backward()
        grads.append(x.grad)
    limit = (s - tt) / (10 * 4)  # (z_s - z_t) / (K B): independent of T thanks to T²
    for g in grads:
        assert torch.allclose(g, limit, rtol=0.05, atol=1e-6)


def test_per_sample_temperature_matches_rowwise_scalar_temperatures(pair):
    s, tt, _ = pair
    temps = torch.tensor([1.0, 2.0, 3.0, 1.5, 4.0, 2.5])
    rows = [lf.kd_loss(t(s[i : i + 1]), t(tt[i : i + 1]), float(temps[i])) for i in range(6)]
    assert lf.kd_loss(t(s), t(tt), temps).item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-5)


def test_dkd_matches_reference(pair):
    s, tt, y = pair
    temp, alpha, beta = 2.0, 1.0, 8.0
    ps, pt = softmax(s / temp), softmax(tt / temp)
    idx = np.arange(len(y))
    bs = np.stack([ps[idx, y], 1 - ps[idx, y]], 1)
    bt = np.stack([pt[idx, y], 1 - pt[idx, y]], 1)
    tckd = kl(bt, bs)
    nckd = []
    for i in range(len(y)):
        keep = np.arange(s.shape[1]) != y[i]
        nckd.append(kl(softmax(tt[i, keep] / temp), softmax(s[i, keep] / temp)))
    expected = temp**2 * (alpha * tckd + beta * np.array(nckd)).mean()
    assert lf.dkd_loss(t(s), t(tt), torch.tensor(y), temp, alpha, beta).item() == pytest.approx(expected, rel=1e-4)
    assert lf.dkd_loss(t(s), t(s), torch.tensor(y), temp).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_with_alpha_beta_one_equals_kd_when_target_probabilities_agree():
    """KD = TCKD + (1 - p_t^target) NCKD; with the same target probability the weights are exact."""
    z = torch.randn(3, 6, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 2, 5])
    other = z.clone()
    other[0, 1:] = other[0, 1:].flip(0)  # permute non-target logits: same target probability
    other[1, [0, 1, 3, 4, 5]] = other[1, [5, 4, 3, 1, 0]]
    other[2, :5] = other[2, :5].flip(0)
    pt = torch.softmax(other, -1)[torch.arange(3), y]
    dkd_rows = [lf.dkd_loss(z[i : i + 1], other[i : i + 1], y[i : i + 1], 1.0, 1.0, float(1 - pt[i])) for i in range(3)]
    kd_rows = [lf.kd_loss(z[i : i + 1], other[i : i + 1], 1.0) for i in range(3)]
    assert torch.allclose(torch.stack(dkd_rows), torch.stack(kd_rows), rtol=1e-4, atol=1e-6)


def test_logit_standardisation(pair):
    s = t(pair[0])
    z = lf.standardize_logits(s)
    ref = (pair[0] - pair[0].mean(1, keepdims=True)) / pair[0].std(1, ddof=1, keepdims=True)  # the authors' std
    assert np.allclose(z.numpy(), ref, atol=1e-5)
    assert torch.allclose(lf.standardize_logits(3 * s + 7), z, atol=1e-5)  # shift and scale free


def test_dist_matches_reference(pair):
    s, tt, _ = pair
    temp = 2.0
    ps, pt = softmax(s / temp), softmax(tt / temp)
    inter = np.mean([1 - np.corrcoef(ps[i], pt[i])[0, 1] for i in range(len(ps))])
    intra = np.mean([1 - np.corrcoef(ps[:, k], pt[:, k])[0, 1] for k in range(ps.shape[1])])
    expected = temp**2 * (1.0 * inter + 2.0 * intra)
    assert lf.dist_loss(t(s), t(tt), temp, beta=1.0, gamma=2.0).item() == pytest.approx(expected, rel=1e-4)
    assert lf.dist_loss(t(s), t(s), temp).item() == pytest.approx(0.0, abs=1e-5)


def test_mse_logits_matches_reference(pair):
    s, tt, _ = pair
    assert lf.mse_logits(t(s), t(tt)).item() == pytest.approx(((s - tt) ** 2).mean(), rel=1e-5)


def test_topk_form_is_exact_at_full_k_and_keeps_the_top_classes():
    z = torch.randn(4, 9, generator=torch.Generator().manual_seed(4)) * 3
    values, indices = lf.topk_log_probs(z, 9)
    dense = lf.dense_logits_from_topk(values, indices, 9)
    assert torch.allclose(torch.log_softmax(dense, -1), torch.log_softmax(z, -1), atol=1e-5)
    values, indices = lf.topk_log_probs(z, 3)
    dense = lf.dense_logits_from_topk(values, indices, 9)
    p, ref = torch.softmax(dense, -1), torch.softmax(z, -1)
    assert torch.allclose(p.sum(-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(p.gather(1, indices), ref.gather(1, indices), atol=1e-5)  # kept classes exact
    rest = (1 - ref.gather(1, indices).sum(1)) / 6
    mask = torch.ones_like(p, dtype=torch.bool).scatter(1, indices, False)
    assert torch.allclose(p[mask].reshape(4, 6), rest[:, None].expand(4, 6), atol=1e-5)


# ----------------------------------------------------------------------------- features


def test_feature_losses_match_reference():
    a, b = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 3, 5))
    assert rep.feature_loss(t(a), t(b), "mse").item() == pytest.approx(((a - b) ** 2).mean(), rel=1e-5)
    d = np.abs(a - b)
    assert rep.feature_loss(t(a), t(b), "smooth_l1").item() == pytest.approx(
        np.where(d < 1, 0.5 * d**2, d - 0.5).mean(), rel=1e-5
    )
    fa, fb = a.reshape(4, -1), b.reshape(4, -1)
    cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert rep.feature_loss(t(a), t(b), "cosine").item() == pytest.approx((1 - cos).mean(), rel=1e-5)
    for kind in ("mse", "smooth_l1", "cosine"):
        assert rep.feature_loss(t(a), t(a), kind).item() == pytest.approx(0.0, abs=1e-6)


def reference_cka(x, y, debiased):
    n = len(x)
    k, l = x @ x.T, y @ y.T  # noqa: E741  (the paper's K and L)
    if not debiased:
        h = np.eye(n) - 1 / n
        hsic = lambda a, b: np.trace(h @ a @ h @ h @ b @ h)  # noqa: E731
    else:

        def hsic(a, b):
            a, b = a - np.diag(np.diag(a)), b - np.diag(np.diag(b))
            one = np.ones(n)
            return (
                np.trace(a @ b)
                + one @ a @ one * (one @ b @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ a @ b @ one
            ) / (n * (n - 3))

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matches_reference_and_its_invariances(debiased):
    x, y = rng.normal(size=(12, 6)), rng.normal(size=(12, 4)) + rng.normal(size=(12, 1))
    assert rep.linear_cka(t(x), t(y), debiased).item() == pytest.approx(
        reference_cka(x, y, debiased), rel=1e-3, abs=1e-5
    )
    assert rep.linear_cka(t(x), t(x), debiased).item() == pytest.approx(1.0, abs=1e-5)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert rep.linear_cka(t(x @ q * 3.7), t(y), debiased).item() == pytest.approx(
        rep.linear_cka(t(x), t(y), debiased).item(), rel=1e-4
    )
    assert rep.cka_loss(t(x), t(x * 2), debiased).item() == pytest.approx(0.0, abs=1e-5)


def test_attention_transfer_matches_reference():
    a, b = rng.normal(size=(2, 4, 3, 3)), rng.normal(size=(2, 6, 3, 3))
    at = lambda f: (lambda m: m / np.linalg.norm(m, axis=1, keepdims=True))((f**2).mean(1).reshape(2, -1))  # noqa: E731
    assert rep.at_loss(t(a), t(b)).item() == pytest.approx(((at(a) - at(b)) ** 2).mean(), rel=1e-5)
    assert rep.at_loss(t(a), t(a * 5)).item() == pytest.approx(0.0, abs=1e-7)
    assert rep.at_loss(t(rng.normal(size=(2, 4, 6, 6))), t(b)).item() > 0  # resized to the teacher's 3x3


def test_relation_logits_and_kl_match_reference():
    q, k = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 8))
    heads = 2
    ref = (
        np.einsum(
            "bhnd,bhmd->bhnm", q.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3), k.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
        )
        / 2.0
    )
    assert np.allclose(rep.relation_logits(t(q), t(k), heads).numpy(), ref, atol=1e-5)
    other = rng.normal(size=ref.shape)
    expected = kl(softmax(ref), softmax(other)).mean()
    assert rep.relation_kl(t(other), t(ref)).item() == pytest.approx(expected, rel=1e-4)
    assert rep.relation_kl(t(ref), t(ref)).item() == pytest.approx(0.0, abs=1e-6)


def test_rkd_matches_reference_and_is_zero_for_similar_geometry():
    s, tt = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    huber = lambda a, b: (lambda d: np.where(d < 1, 0.5 * d**2, d - 0.5).mean())(np.abs(a - b))  # noqa: E731

    def dist(x):  # every entry, the zero diagonal too, over the mean off-diagonal distance
        d = np.linalg.norm(x[:, None] - x[None], axis=2)
        return d / d[~np.eye(len(x), dtype=bool)].mean()

    def angle(x):
        e = x[None, :, :] - x[:, None, :]
        n = np.linalg.norm(e, axis=2, keepdims=True)
        e = np.divide(e, n, out=np.zeros_like(e), where=n > 0)
        return np.einsum("jid,jkd->jik", e, e).reshape(-1)

    assert rep.rkd_distance_loss(t(s), t(tt)).item() == pytest.approx(huber(dist(s), dist(tt)), rel=1e-4)
    assert rep.rkd_angle_loss(t(s), t(tt)).item() == pytest.approx(huber(angle(s), angle(tt)), rel=1e-4)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    similar = s @ q * 2.5 + 1.0  # rotated, scaled, shifted: same relational structure
    assert rep.rkd_distance_loss(t(s), t(similar)).item() == pytest.approx(0.0, abs=1e-6)
    assert rep.rkd_angle_loss(t(s), t(similar)).item() == pytest.approx(0.0, abs=1e-6)


def test_pkt_sp_relational_match_reference_and_vanish_on_scaled_copies():
    s, tt = rng.normal(size=(6, 5)), rng.normal(size=(6, 7))

    def cosm(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return x @ x.T

    ps, pt = (cosm(s) + 1) / 2, (cosm(tt) + 1) / 2
    ps, pt = ps / ps.sum(1, keepdims=True), pt / pt.sum(1, keepdims=True)
    assert rep.pkt_loss(t(s), t(tt)).item() == pytest.approx(kl(pt, ps).mean() / len(s), rel=1e-3)  # over B² entries
    gs, gt = s @ s.T, tt @ tt.T
    gs, gt = gs / np.linalg.norm(gs, axis=1, keepdims=True), gt / np.linalg.norm(gt, axis=1, keepdims=True)
    assert rep.sp_loss(t(s), t(tt)).item() == pytest.approx(((gs - gt) ** 2).sum() / 36, rel=1e-4)
    assert rep.relational_loss(t(s), t(tt)).item() == pytest.approx(((cosm(s) - cosm(tt)) ** 2).mean(), rel=1e-4)
    for fn in (rep.pkt_loss, rep.sp_loss, rep.relational_loss):
        assert fn(t(s), t(s * 3)).item() == pytest.approx(0.0, abs=1e-5)


def test_relational_correlation_is_one_minus_pearson_of_the_off_diagonal_similarities():
    s, tt = rng.normal(size=(7, 3)), rng.normal(size=(7, 9))
    off = ~np.eye(7, dtype=bool)

    def cosm(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return (x @ x.T)[off]

    expected = 1 - np.corrcoef(cosm(s), cosm(tt))[0, 1]
    assert rep.relational_loss(t(s), t(tt), "correlation").item() == pytest.approx(expected, rel=1e-4)
    assert rep.relational_loss(t(s), t(s * 3), "correlation").item() == pytest.approx(0.0, abs=1e-5)
    # a student whose cosines are an affine map of the teacher's is perfect by correlation,
    # not by MSE: unit vectors [cos θ, sin θ] against [cos θ, sin θ, 1], whose cosines are (cos + 1) / 2
    angles = rng.uniform(0, np.pi / 3, size=7)
    flat = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    lifted = np.concatenate([flat, np.ones((7, 1))], axis=1)  # cos' = (cos + 1) / 2: affine
    assert rep.relational_loss(t(flat), t(lifted), "correlation").item() == pytest.approx(0.0, abs=1e-5)
    assert rep.relational_loss(t(flat), t(lifted)).item() > 1e-3


def test_feature_dynamics_matches_reference():
    s = [rng.normal(size=(3, 4)) for _ in range(3)]
    tt = [rng.normal(size=(3, 4)) for _ in range(3)]
    cos = lambda a, b: (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # noqa: E731
    expected = np.mean([(1 - cos(s[i + 1] - s[i], tt[i + 1] - tt[i])).mean() for i in range(2)])
    assert rep.feature_dynamics_loss([t(a) for a in s], [t(b) for b in tt]).item() == pytest.approx(expected, rel=1e-4)
    scaled = [t(b * 2 + 1) for b in s]  # same steps in direction: zero
    assert rep.feature_dynamics_loss([t(a) for a in s], scaled).item() == pytest.approx(0.0, abs=1e-6)


def test_supcon_matches_reference():
    z, y = rng.normal(size=(6, 4)), np.array([0, 0, 1, 1, 1, 2])
    temp = 0.5
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = zn @ zn.T / temp
    losses = []
    for i in range(6):
        others = [a for a in range(6) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        denom = np.log(np.exp(sim[i, others]).sum())
        losses.append(-np.mean([sim[i, p] - denom for p in positives]))
    assert rep.supcon_loss(t(z), torch.tensor(y), temp).item() == pytest.approx(np.mean(losses), rel=1e-4)
    assert rep.supcon_loss(t(z), torch.arange(6), temp).item() == 0.0  # no positives: nothing to learn
    assert math.isfinite(rep.supcon_loss(t(z), torch.tensor(y), 0.05).item())


# ----------------------------------------------------------------------------- embeddings


def cosine_matrix(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def test_similarity_kl_matches_reference_for_a_5d_student_and_a_384d_teacher():
    s, tt = rng.normal(size=(7, 5)), rng.normal(size=(7, 384))
    for tau in (0.1, 1.0, 4.0):
        expected = []
        for i in range(7):
            others = [j for j in range(7) if j != i]
            expected.append(kl(softmax(cosine_matrix(tt)[i, others] / tau), softmax(cosine_matrix(s)[i, others] / tau)))
        assert rep.similarity_kl(t(s), t(tt), tau).item() == pytest.approx(tau**2 * np.mean(expected), rel=1e-4)


def test_similarity_kl_vanishes_when_similarities_are_kept_and_tau_changes_more_than_its_scale():
    teacher = rng.normal(size=(8, 384))
    rotation = np.linalg.qr(rng.normal(size=(384, 384)))[0]
    assert rep.similarity_kl(t(teacher @ rotation * 3.0), t(teacher), 0.5).item() == pytest.approx(0.0, abs=1e-5)
    student = rng.normal(size=(8, 5))
    per_tau = [rep.similarity_kl(t(student), t(teacher), tau).item() / tau**2 for tau in (0.1, 1.0, 4.0)]
    assert len({round(v, 6) for v in per_tau}) == 3  # the distributions themselves change with τ
    assert per_tau[0] > per_tau[1] > per_tau[2]  # sharper rows differ more


def test_standardized_similarity_kl_matches_reference_and_ignores_each_rows_shift_and_scale():
    s, tt, tau = rng.normal(size=(7, 5)), rng.normal(size=(7, 384)), 0.2
    z = lambda row: (row - row.mean()) / row.std(ddof=1)  # noqa: E731
    expected = []
    for i in range(7):
        others = [j for j in range(7) if j != i]
        rows = [softmax(z(cosine_matrix(x)[i, others]) / tau) for x in (tt, s)]
        expected.append(kl(*rows))
    got = rep.similarity_kl(t(s), t(tt), tau, standardize=True).item()
    assert got == pytest.approx(tau**2 * np.mean(expected), rel=1e-4)
    assert got != pytest.approx(rep.similarity_kl(t(s), t(tt), tau).item(), rel=1e-2)
    # unit vectors beside a shared offset: every cosine becomes (a² cos + c²) / (a² + c²), an affine map of the
    # teacher's that narrows each row's spread; the plain form charges for it, the standardised one does not
    teacher = rng.normal(size=(6, 3))
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    squeezed = np.hstack([0.5 * teacher, np.ones((6, 1))])
    assert rep.similarity_kl(t(squeezed), t(teacher), tau, standardize=True).item() == pytest.approx(0.0, abs=1e-5)
    assert rep.similarity_kl(t(squeezed), t(teacher), tau).item() > 1e-3


def test_neighbour_infonce_matches_reference_with_teacher_neighbours_as_positives():
    s, tt, tau, k = rng.normal(size=(6, 4)), rng.normal(size=(6, 30)), 0.3, 2
    ts, ss = cosine_matrix(tt), cosine_matrix(s) / tau
    losses = []
    for i in range(6):
        others = [j for j in range(6) if j != i]
        positives = sorted(others, key=lambda j: -ts[i, j])[:k]
        denom = np.log(np.exp(ss[i, others]).sum())
        losses.append(-np.mean([ss[i, p] - denom for p in positives]))
    assert rep.neighbour_infonce(t(s), t(tt), tau, k).item() == pytest.approx(np.mean(losses), rel=1e-4)
    with pytest.raises(ValueError, match="neighbours must be in"):
        rep.neighbour_infonce(t(s), t(tt), tau, 6)


def test_neighbour_infonce_is_lower_for_a_student_that_keeps_the_neighbourhoods():
    teacher = t(rng.normal(size=(16, 64)))
    rotated = teacher @ torch.linalg.qr(torch.randn(64, 64))[0]  # same similarities
    unrelated = t(rng.normal(size=(16, 64)))
    assert rep.neighbour_infonce(rotated, teacher, 0.1, 1) < rep.neighbour_infonce(unrelated, teacher, 0.1, 1)
    assert torch.isfinite(rep.neighbour_infonce(unrelated, teacher, 0.01, 3))


# ----------------------------------------------------------------------------- regression


def complex_pair(seed=0, shape=(4, 3, 16)):
    g = torch.Generator().manual_seed(seed)
    make = lambda: torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))  # noqa: E731
    return make(), make()


def test_regression_losses_match_their_formulas():
    p, t = complex_pair()
    expected_cmse = sum(((p.real[i] - t.real[i]) ** 2 + (p.imag[i] - t.imag[i]) ** 2).mean() for i in range(4)) / 4
    torch.testing.assert_close(lf.regression_loss(p, t, "complex_mse"), expected_cmse)
    torch.testing.assert_close(lf.regression_loss(p.real, t.real, "mse"), ((p.real - t.real) ** 2).mean())
    phase = torch.remainder(torch.atan2(p.imag, p.real) - torch.atan2(t.imag, t.real) + math.pi, 2 * math.pi) - math.pi
    magnitude = torch.sqrt(p.real**2 + p.imag**2) - torch.sqrt(t.real**2 + t.imag**2)
    expected = (magnitude**2).mean() + 0.5 * (t.abs() * phase**2).mean()
    torch.testing.assert_close(lf.regression_loss(p, t, "mag_phase", phase_weight=0.5), expected)
    for kind in ("complex_mse", "mag_phase"):
        assert float(lf.regression_loss(t, t, kind)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="complex_mse or mag_phase"):
        lf.regression_loss(p, t, "mse")


def test_phase_difference_wraps_around_pi():
    a = torch.polar(torch.ones(2), torch.tensor([math.pi - 0.1, 0.3]))
    b = torch.polar(torch.ones(2), torch.tensor([-math.pi + 0.1, -0.3]))
    torch.testing.assert_close(lf.wrapped_phase_difference(a, b), torch.tensor([-0.2, 0.6]))  # not 2π − 0.2


def test_psnr_in_db():
    t = torch.tensor([0.0, 2.0, -1.0, 1.0])
    p = t + torch.tensor([0.1, -0.1, 0.1, -0.1])
    assert float(lf.psnr_db(p, t)) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-5)
