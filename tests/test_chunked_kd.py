"""Chunked token-level losses from hidden states and LM heads equal the plain computation on full logits, in value
and in every gradient: every divergence, dense or top-k teachers, and cross-entropy."""

import pytest
import torch
from torch._dynamo.utils import counters

from kdforge.losses.chunked import (
    LMHead,
    ce_chunks,
    chunked_linear_ce,
    chunked_linear_kd,
    chunked_linear_losses,
    chunked_linear_uld,
    default_chunk,
    kd_chunks,
    uld_chunks,
)
from kdforge.losses.divergence import sparse_kd_loss
from kdforge.losses.functional import cross_entropy, kd_loss, topk_log_probs, uld_loss

CASES = [
    ("forward", 1.0),
    ("reverse", 2.0),
    ("jsd", 1.0),
    ("gjsd", 1.5),
    ("skew_forward", 1.0),
    ("skew_reverse", 2.0),
    ("tvd", 1.0),
]


@pytest.fixture
def lm():
    """A tiny student (a layer under its LM head, with bias) and a teacher's hidden states and head."""
    g = torch.Generator().manual_seed(0)
    tokens, width, vocab = 45, 16, 50
    inputs = torch.randn(tokens, 8, generator=g)
    layer = torch.randn(8, width, generator=g, requires_grad=True)
    weight = torch.randn(vocab, width, generator=g, requires_grad=True)
    bias = torch.randn(vocab, generator=g, requires_grad=True)
    teacher = LMHead(torch.randn(tokens, 24, generator=g), torch.randn(vocab, 24, generator=g))
    return inputs, layer, weight, bias, teacher


def assert_same(found, expected):
    for a, b in zip(found, expected):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("direction", "temperature"), CASES)
def test_chunks_equal_the_plain_loss_and_its_gradients(lm, direction, temperature):
    inputs, layer, weight, bias, teacher = lm
    options = {"temperature": temperature, "direction": direction, "beta": 0.3, "alpha": 0.2}
    plain = kd_loss(inputs @ layer @ weight.T + bias, teacher.logits(), **options)
    expected = torch.autograd.grad(plain, [layer, weight, bias])
    chunked = chunked_linear_kd(LMHead(inputs @ layer, weight, bias), teacher.logits, chunk=7, **options)  # 7 ∤ 45
    assert torch.allclose(chunked, plain, rtol=1e-5, atol=1e-6)
    assert_same(torch.autograd.grad(chunked, [layer, weight, bias]), expected)


@pytest.mark.parametrize("tail", ["bucket", "renormalise"])
def test_a_top_k_teacher_in_chunks_equals_the_plain_sparse_loss(lm, tail):
    inputs, layer, weight, _, teacher = lm
    top = topk_log_probs(teacher.logits(), 8)
    options = {"temperature": 2.0, "direction": "jsd", "tail": tail}
    plain = sparse_kd_loss(inputs @ layer @ weight.T, top.log_probs, top.indices, **options)
    expected = torch.autograd.grad(plain, [layer, weight])
    chunked = chunked_linear_kd(LMHead(inputs @ layer, weight), top, chunk=10, **options)
    assert torch.allclose(chunked, plain, rtol=1e-5, atol=1e-6)
    assert_same(torch.autograd.grad(chunked, [layer, weight]), expected)


def test_chunked_cross_entropy_equals_the_plain_one(lm):
    inputs, layer, weight, bias, _ = lm
    targets = torch.randint(0, 50, (45,), generator=torch.Generator().manual_seed(1))
    plain = cross_entropy(inputs @ layer @ weight.T + bias, targets)
    expected = torch.autograd.grad(plain, [layer, weight, bias])
    chunked = chunked_linear_ce(LMHead(inputs @ layer, weight, bias), targets, chunk=16)
    smoothed = chunked_linear_ce(LMHead(inputs @ layer, weight, bias), targets, 0.1, chunk=16)
    assert torch.allclose(smoothed, cross_entropy(inputs @ layer @ weight.T + bias, targets, 0.1), rtol=1e-5)
    assert torch.allclose(chunked, plain, rtol=1e-5, atol=1e-6)
    assert_same(torch.autograd.grad(chunked, [layer, weight, bias]), expected)


def test_chunked_uld_equals_the_plain_one_with_a_teacher_of_another_vocabulary(lm):
    inputs, layer, weight, bias, _ = lm
    g = torch.Generator().manual_seed(2)
    teacher = LMHead(torch.randn(45, 24, generator=g), torch.randn(70, 24, generator=g))  # 70 tokens, not 50
    plain = uld_loss(inputs @ layer @ weight.T + bias, teacher.logits(), 2.0)
    expected = torch.autograd.grad(plain, [layer, weight, bias])
    chunked = chunked_linear_uld(LMHead(inputs @ layer, weight, bias), teacher.logits, 2.0, chunk=7)
    assert torch.allclose(chunked, plain, rtol=1e-5, atol=1e-6)
    assert_same(torch.autograd.grad(chunked, [layer, weight, bias]), expected)


def test_teacher_logits_may_be_given_whole_and_the_output_scales_the_gradients(lm):
    inputs, layer, weight, _, teacher = lm
    student = LMHead(inputs @ layer, weight)
    whole = chunked_linear_kd(student, teacher.logits(), chunk=10)
    assert torch.allclose(whole, chunked_linear_kd(student, teacher.logits, chunk=64))
    (grad,) = torch.autograd.grad(3.0 * whole, [weight])
    (plain,) = torch.autograd.grad(3.0 * kd_loss(inputs @ layer @ weight.T, teacher.logits(), 1.0), [weight])
    assert torch.allclose(grad, plain, rtol=1e-5, atol=1e-6)


def test_a_student_equal_to_its_teacher_has_zero_loss_and_zero_gradient(lm):
    inputs, layer, weight, _, _ = lm
    hidden = inputs @ layer
    loss = chunked_linear_kd(LMHead(hidden, weight), LMHead(hidden.detach(), weight.detach()).logits, chunk=4)
    (grad,) = torch.autograd.grad(loss, [layer])
    assert abs(float(loss.detach())) < 1e-6 and grad.abs().max() < 1e-5


def test_the_head_reshapes_and_selects_rows_without_making_logits():
    head = LMHead(torch.randn(2, 5, 4), torch.randn(9, 4))
    assert head.shape == (2, 5, 9)
    keep = torch.tensor([True, False] * 5)
    rows = head.rows(keep)
    assert rows.shape == (5, 9) and torch.equal(rows.hidden, head.hidden.flatten(0, 1)[keep])
    # a product over 5 rows and one over 10 may take different kernels (they do on AVX-512 Xeons): equal to rounding
    torch.testing.assert_close(rows.logits(), head.logits().flatten(0, 1)[keep], rtol=1e-6, atol=1e-6)


def test_bad_shapes_are_refused(lm):
    inputs, layer, weight, _, _ = lm
    with pytest.raises(ValueError, match=r"hidden \[N, H\] and weight \[V, H\] expected"):
        chunked_linear_kd(LMHead(inputs, weight), torch.zeros(45, 50))
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        chunked_linear_kd(LMHead(inputs @ layer, weight), torch.zeros(45, 50), chunk=0)


def test_under_bf16_autocast_the_chunked_loss_follows_the_plain_one(lm):
    inputs, layer, weight, bias, teacher = lm
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = inputs @ layer
        plain = kd_loss(hidden @ weight.T + bias, teacher.logits(), 1.0, "jsd")
        chunked = chunked_linear_kd(LMHead(hidden, weight, bias), teacher.logits, direction="jsd", chunk=8)
    (plain_grad,) = torch.autograd.grad(plain, [weight])
    (chunked_grad,) = torch.autograd.grad(chunked, [weight])
    assert chunked.dtype == torch.float32 and torch.allclose(chunked, plain, rtol=2e-2)
    assert chunked_grad.dtype == weight.dtype and torch.allclose(chunked_grad, plain_grad, rtol=5e-2, atol=5e-3)


def test_the_default_chunk_is_larger_on_a_gpu_and_never_under_128_tokens():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device name needs no GPU
    assert default_chunk(32_000, cpu) == 2**22 // 32_000 == 131
    assert default_chunk(32_000, gpu) == 2**25 // 32_000 == 1048  # launches, not arithmetic, cost on a GPU
    assert default_chunk(2**20, cpu) == default_chunk(2**20, gpu) == 128


def every_term(lm):
    """Every kind of chunked term on the fixture, with the plain loss each equals: (its ChunkTerm, its plain loss
    of whole logits)."""
    _, _, _, _, teacher = lm
    targets = torch.randint(0, 50, (45,), generator=torch.Generator().manual_seed(1))
    top = topk_log_probs(teacher.logits(), 8)
    terms = []
    for direction, temperature in CASES:
        options = {"temperature": temperature, "direction": direction, "beta": 0.3, "alpha": 0.2}
        terms.append((kd_chunks(teacher.logits, **options), lambda z, o=options: kd_loss(z, teacher.logits(), **o)))
    for tail in ("bucket", "renormalise"):
        options = {"temperature": 2.0, "direction": "jsd", "tail": tail}
        terms.append((kd_chunks(top, **options), lambda z, o=options: sparse_kd_loss(z, *top, **o)))
    terms.append((kd_chunks(teacher.logits, topk=8), lambda z: sparse_kd_loss(z, *top)))
    terms.append((ce_chunks(targets, 0.1), lambda z: cross_entropy(z, targets, 0.1)))
    terms.append((uld_chunks(teacher.logits, 2.0), lambda z: uld_loss(z, teacher.logits(), 2.0)))
    return terms


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_every_term_in_one_pass_equals_its_plain_loss_eager_and_compiled(lm, compiled):
    """One pass makes each chunk's logits once for all terms; compiled (train.compile), the terms' chunk step is one
    fused graph. Each term's value, and the gradients of their weighted sum, equal the plain losses' to 1e-5."""
    inputs, layer, weight, bias, _ = lm
    terms = every_term(lm)
    weights = torch.linspace(0.2, 1.2, len(terms))
    logits = inputs @ layer @ weight.T + bias
    plain = torch.stack([loss(logits) for _, loss in terms])
    expected = torch.autograd.grad((plain * weights).sum(), [layer, weight, bias])
    head = LMHead(inputs @ layer, weight, bias)
    counters.clear()
    total, values = chunked_linear_losses(head, [t for t, _ in terms], weights.tolist(), chunk=15, compiled=compiled)
    # compiled: one graph for every term, no break, nothing fallen back to eager
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    assert (graphs, breaks) == ((1, 0) if compiled else (0, 0))
    assert torch.allclose(values, plain.detach(), rtol=1e-5, atol=1e-6) and not values.requires_grad
    assert torch.allclose(total, (plain * weights).sum(), rtol=1e-5, atol=1e-6)
    assert_same(torch.autograd.grad(total, [layer, weight, bias]), expected)


def test_without_gradients_the_pass_only_measures(lm):
    inputs, layer, weight, bias, teacher = lm
    head = LMHead(inputs @ layer, weight, bias)
    with torch.no_grad():
        total, values = chunked_linear_losses(head, [kd_chunks(teacher.logits)], chunk=16)
    assert not total.requires_grad and torch.allclose(values[0], chunked_linear_kd(head, teacher.logits).detach())
