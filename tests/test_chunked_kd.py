"""chunked_linear_kd: the token-level KD loss from hidden states and LM heads, chunk by chunk, equals the
plain computation on full logits, in value and in every gradient."""

import pytest
import torch

from kdforge.losses.chunked import chunked_linear_kd, linear_teacher
from kdforge.losses.functional import kd_loss

CASES = [("forward", 0.5, 1.0), ("reverse", 0.5, 2.0), ("jsd", 0.5, 1.0), ("gjsd", 0.3, 1.5)]


@pytest.fixture
def lm():
    """A tiny student (a layer under its LM head, with bias) and a teacher's hidden states and head."""
    g = torch.Generator().manual_seed(0)
    tokens, width, vocab = 45, 16, 50
    inputs = torch.randn(tokens, 8, generator=g)
    layer = torch.randn(8, width, generator=g, requires_grad=True)
    weight = torch.randn(vocab, width, generator=g, requires_grad=True)
    bias = torch.randn(vocab, generator=g, requires_grad=True)
    teacher_hidden, teacher_weight = torch.randn(tokens, 24, generator=g), torch.randn(vocab, 24, generator=g)
    return inputs, layer, weight, bias, teacher_hidden, teacher_weight


@pytest.mark.parametrize(("direction", "beta", "temperature"), CASES)
def test_chunks_equal_the_plain_loss_and_its_gradients(lm, direction, beta, temperature):
    inputs, layer, weight, bias, teacher_hidden, teacher_weight = lm
    options = {"temperature": temperature, "direction": direction, "beta": beta}
    plain = kd_loss(inputs @ layer @ weight.T + bias, teacher_hidden @ teacher_weight.T, **options)
    expected = torch.autograd.grad(plain, [layer, weight, bias])
    teacher = linear_teacher(teacher_hidden, teacher_weight)
    chunked = chunked_linear_kd(inputs @ layer, weight, teacher, bias=bias, chunk=7, **options)  # 7 does not divide 45
    found = torch.autograd.grad(chunked, [layer, weight, bias])
    assert torch.allclose(chunked, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(found, expected):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_teacher_logits_may_be_given_whole_and_the_output_scales_the_gradients(lm):
    inputs, layer, weight, _, teacher_hidden, teacher_weight = lm
    logits = teacher_hidden @ teacher_weight.T
    whole = chunked_linear_kd(inputs @ layer, weight, logits, chunk=10)
    by_function = chunked_linear_kd(inputs @ layer, weight, linear_teacher(teacher_hidden, teacher_weight), chunk=64)
    assert torch.allclose(whole, by_function)
    (grad,) = torch.autograd.grad(3.0 * whole, [weight])
    (plain,) = torch.autograd.grad(3.0 * kd_loss(inputs @ layer @ weight.T, logits, 1.0), [weight])
    assert torch.allclose(grad, plain, rtol=1e-5, atol=1e-6)


def test_a_student_equal_to_its_teacher_has_zero_loss_and_zero_gradient(lm):
    inputs, layer, weight, _, _, _ = lm
    hidden = inputs @ layer
    loss = chunked_linear_kd(hidden, weight, linear_teacher(hidden.detach(), weight.detach()), chunk=4)
    (grad,) = torch.autograd.grad(loss, [layer])
    assert abs(float(loss.detach())) < 1e-6 and grad.abs().max() < 1e-5


def test_bad_shapes_are_refused(lm):
    inputs, layer, weight, _, _, _ = lm
    with pytest.raises(ValueError, match=r"hidden \[N, H\] and weight \[V, H\] expected"):
        chunked_linear_kd(inputs, weight, torch.zeros(45, 50))
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        chunked_linear_kd(inputs @ layer, weight, torch.zeros(45, 50), chunk=0)
