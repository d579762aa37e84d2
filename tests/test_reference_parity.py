"""Each feature / relational term against a transcription of its authors' reference computation, at a realistic
batch size (64), so that a loss weight taken from a paper or a peer library means the same in kdforge.

The references are written out step by step as the authors' published code computes them (not copied): where that
code normalises differently from the paper's formula, the code is what users' weights were tuned with.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import functional as lf
from kdforge.losses import representation as rep

B = 64


@pytest.fixture
def features():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 24, generator=g), torch.randn(B, 40, generator=g)


def reference_pkt(student, teacher, eps=1e-7):
    # Passalis & Tefas' code: unit rows, cosine matrix, mapped to [0, 1], each row divided by its sum, then the mean
    # of p_t · log((p_t + eps) / (p_s + eps)) over every one of the B² entries
    def conditional(x):
        x = x / (x.norm(dim=1, keepdim=True) + eps)
        similarity = (x @ x.T + 1.0) / 2.0
        return similarity / similarity.sum(1, keepdim=True)

    ps, pt = conditional(student), conditional(teacher)
    return torch.mean(pt * torch.log((pt + eps) / (ps + eps)))


def reference_pairwise(x, eps=1e-12):
    # Park et al.'s pdist: squared norms expanded, clamped at eps, square-rooted, diagonal set to zero
    squares = x.pow(2).sum(1)
    d = (squares[:, None] + squares[None, :] - 2 * x @ x.T).clamp(min=eps).sqrt().clone()
    d[range(len(x)), range(len(x))] = 0
    return d


def reference_rkd_distance(student, teacher):
    # each distance matrix over the mean of its positive entries; Huber loss averaged over all B² entries
    dt = reference_pairwise(teacher)
    dt = dt / dt[dt > 0].mean()
    ds = reference_pairwise(student)
    ds = ds / ds[ds > 0].mean()
    return F.smooth_l1_loss(ds, dt, reduction="mean")


def reference_rkd_angle(student, teacher):
    # unit differences e[a, b] = x_b − x_a; all B³ cosines compared with a Huber loss, averaged
    def cosines(x):
        e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
        return torch.bmm(e, e.transpose(1, 2)).view(-1)

    return F.smooth_l1_loss(cosines(student), cosines(teacher), reduction="mean")


def reference_sp(student, teacher):
    # Tung & Mori: Gram matrices of the flattened features, rows L2-normalised, squared Frobenius difference / B²
    gs = F.normalize(student @ student.T)
    gt = F.normalize(teacher @ teacher.T)
    return (gt - gs).pow(2).view(-1, 1).sum(0)[0] / (len(student) * len(student))


def reference_at(student, teacher):
    # Zagoruyko & Komodakis: channel mean of squared activations, flattened, L2-normalised; mean squared difference
    def attention(x):
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    return (attention(student) - attention(teacher)).pow(2).mean()


def reference_dist(student_logits, teacher_logits, beta=1.0, gamma=1.0, tau=1.0):
    # Huang et al.: softmax at tau; 1 − Pearson per sample (inter) and per class (intra, on the transpose); tau²
    def pearson(a, b, eps=1e-8):
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    ys, yt = (student_logits / tau).softmax(dim=1), (teacher_logits / tau).softmax(dim=1)
    inter = 1 - pearson(ys, yt).mean()
    intra = 1 - pearson(ys.T, yt.T).mean()
    return tau**2 * (beta * inter + gamma * intra)


def reference_standardise(logits):
    # Sun et al.: (z − mean) / (1e-7 + std), torch's default (sample, 1/(K − 1)) standard deviation
    return (logits - logits.mean(dim=-1, keepdim=True)) / (1e-7 + logits.std(dim=-1, keepdim=True))


def test_pkt_equals_the_authors_mean_over_all_entries(features):
    s, t = features
    torch.testing.assert_close(rep.pkt_loss(s, t), reference_pkt(s, t), rtol=1e-5, atol=1e-9)


def test_rkd_distance_and_angle_equal_the_authors_averages(features):
    s, t = features
    torch.testing.assert_close(rep.rkd_distance_loss(s, t), reference_rkd_distance(s, t), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(rep.rkd_angle_loss(s, t), reference_rkd_angle(s, t), rtol=1e-4, atol=1e-7)


def test_sp_and_at_equal_the_authors_code():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(B, 8, 6, 6, generator=g), torch.randn(B, 16, 6, 6, generator=g)
    torch.testing.assert_close(rep.sp_loss(s, t), reference_sp(s.flatten(1), t.flatten(1)), rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(rep.at_loss(s, t), reference_at(s, t), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_dist_equals_the_authors_code(tau):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(B, 10, generator=g), torch.randn(B, 10, generator=g)
    torch.testing.assert_close(
        lf.dist_loss(s, t, tau, beta=2.0, gamma=0.5), reference_dist(s, t, 2.0, 0.5, tau), rtol=1e-4, atol=1e-7
    )


def test_logit_standardisation_uses_the_authors_sample_std():
    z = torch.randn(B, 10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(lf.standardize_logits(z), reference_standardise(z), rtol=1e-5, atol=1e-6)
    population = (z - z.mean(-1, keepdim=True)) / z.std(-1, unbiased=False, keepdim=True)
    assert not torch.allclose(lf.standardize_logits(z), population, rtol=1e-3)  # 1/K would differ by √(K/(K−1))


def reference_tinybert_attention(student_qkv, teacher_qkv, heads):
    # Jiao et al.: per head, the attention scores q kᵀ / √d before the softmax; MSELoss (mean) between the two models'
    def scores(qkv):
        q, k, _ = qkv.chunk(3, dim=-1)
        b, n, d = q.shape
        q = q.view(b, n, heads, d // heads).permute(0, 2, 1, 3)
        k = k.view(b, n, heads, d // heads).permute(0, 2, 1, 3)
        return torch.matmul(q, k.transpose(-1, -2)) / (d // heads) ** 0.5

    return F.mse_loss(scores(student_qkv), scores(teacher_qkv))


def test_attn_mse_is_tinybert_and_attn_kl_is_the_attention_distribution_kl():
    from kdforge.losses.feature import AttentionKL, AttentionMSE

    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(8, 5, 3 * 16, generator=g), torch.randn(8, 5, 3 * 32, generator=g)
    mse = AttentionMSE(student="blocks.0", teacher="blocks.0", relation_heads=4)
    torch.testing.assert_close(mse.pair_loss(0, s, t), reference_tinybert_attention(s, t, 4), rtol=1e-5, atol=1e-7)

    def distribution(qkv):  # softmax of the same scores: the attention each query spreads over the tokens
        q, k, _ = qkv.chunk(3, dim=-1)
        b, n, d = q.shape
        q, k = (x.view(b, n, 4, d // 4).transpose(1, 2) for x in (q, k))
        return torch.softmax(q @ k.transpose(-1, -2) / (d // 4) ** 0.5, -1)

    ps, pt = distribution(s), distribution(t)
    expected = (pt * (pt.log() - ps.log())).sum(-1).mean()  # KL(teacher ‖ student), averaged over batch, heads, rows
    kl = AttentionKL(student="blocks.0", teacher="blocks.0", relation_heads=4)
    torch.testing.assert_close(kl.pair_loss(0, s, t), expected, rtol=1e-5, atol=1e-7)


def reference_cka(x, y, debiased=False):
    # Kornblith et al.'s notebook: linear Gram matrices, centred (with the unbiased centring for the debiased
    # estimator: zero diagonal, column means over n − 2, corrected), then <Gx, Gy> / (‖Gx‖ ‖Gy‖)
    def centre(gram):
        gram = gram.clone()
        n = gram.shape[0]
        if debiased:
            gram.fill_diagonal_(0)
            means = gram.sum(0) / (n - 2)
            means -= means.sum() / (2 * (n - 1))
        else:
            means = gram.mean(0)
            means -= means.mean() / 2
        gram -= means[:, None]
        gram -= means[None, :]
        if debiased:
            gram.fill_diagonal_(0)
        return gram

    gx, gy = centre(x @ x.T), centre(y @ y.T)
    return (gx.ravel() @ gy.ravel()) / (gx.norm() * gy.norm())


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_equals_the_authors_notebook(features, debiased):
    s, t = features
    expected = reference_cka(s.double(), t.double(), debiased).float()
    torch.testing.assert_close(rep.linear_cka(s, t, debiased), expected, rtol=1e-4, atol=1e-6)
