"""Each loss against a hand-written reference formula, plus invariants."""

import math

import pytest
import torch

from kdforge.losses import StepContext, build_loss
from kdforge.losses import functional as lf
from kdforge.losses.terms import Shapes


def softmax_rows(z, t):
    out = []
    for row in z.tolist():
        exps = [math.exp(v / t) for v in row]
        out.append([e / sum(exps) for e in exps])
    return out


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(5, 7, generator=g) * 3,
        torch.randn(5, 7, generator=g) * 3,
        torch.randint(0, 7, (5,), generator=g),
    )


def test_cross_entropy_matches_formula(logits):
    s, _, y = logits
    for eps in (0.0, 0.1):
        p = softmax_rows(s, 1.0)
        k = s.shape[1]
        expected = sum(
            -sum(((1 - eps) * (c == int(y[i])) + eps / k) * math.log(p[i][c]) for c in range(k)) for i in range(len(y))
        ) / len(y)
        assert lf.cross_entropy(s, y, eps).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_is_t_squared_batchmean_kl(logits, temperature):
    s, t, _ = logits
    ps, pt = softmax_rows(s, temperature), softmax_rows(t, temperature)
    kl = sum(sum(pt[i][c] * math.log(pt[i][c] / ps[i][c]) for c in range(s.shape[1])) for i in range(len(s))) / len(s)
    assert lf.kd_loss(s, t, temperature).item() == pytest.approx(temperature**2 * kl, rel=1e-5)


def test_kd_invariants(logits):
    s, t, _ = logits
    assert lf.kd_loss(s, s.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert lf.kd_loss(s, t, 1.0).item() != pytest.approx(lf.kd_loss(s, t, 4.0).item(), rel=1e-3)
    # a constant shift of all logits changes nothing (softmax invariance)
    assert lf.kd_loss(s + 5.0, t, 2.0).item() == pytest.approx(lf.kd_loss(s, t, 2.0).item(), rel=1e-5)
    # batchmean: duplicating the batch leaves the value unchanged (a per-element mean would not scale with K)
    assert lf.kd_loss(torch.cat([s, s]), torch.cat([t, t]), 2.0).item() == pytest.approx(
        lf.kd_loss(s, t, 2.0).item(), rel=1e-5
    )


def test_kd_gradient_reaches_student_only(logits):
    s, t, _ = logits
    s, t = s.clone().requires_grad_(), t.clone().requires_grad_()
    term = build_loss({"name": "kd", "temperature": 2.0})
    term(StepContext(inputs=s, targets=None, student_logits=s, teacher_logits=t.detach())).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_mse_logits_matches_formula(logits):
    s, t, _ = logits
    expected = sum((a - b) ** 2 for a, b in zip(s.flatten().tolist(), t.flatten().tolist())) / s.numel()
    assert lf.mse_logits(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert lf.mse_logits(s, s).item() == 0.0


def resolved(options):
    """A feature term bound to stand-in models with modules named ``a`` (student) and ``b``."""
    term = build_loss(options)
    term.resolve(torch.nn.ModuleDict({"a": torch.nn.Identity()}), torch.nn.ModuleDict({"b": torch.nn.Identity()}))
    return term


def test_hint_matches_formula_through_its_projector():
    g = torch.Generator().manual_seed(1)
    fs, ft = torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g)
    term = resolved({"name": "hint", "student": "a", "teacher": "b", "projector": "linear"})
    term.setup(Shapes(torch.Size([4, 10]), torch.Size([4, 10]), {"a": fs.shape}, {"b": ft.shape}))
    ctx = StepContext(
        inputs=fs, targets=None, student_logits=fs, student_features={"a": fs}, teacher_features={"b": ft}
    )
    w, bias = term.projectors[0].weight.detach(), term.projectors[0].bias.detach()
    projected = [
        [sum(fs[i, j].item() * w[o, j].item() for j in range(6)) + bias[o].item() for o in range(3)] for i in range(4)
    ]
    expected = sum((projected[i][o] - ft[i, o].item()) ** 2 for i in range(4) for o in range(3)) / 12
    assert term(ctx).item() == pytest.approx(expected, rel=1e-5)


def test_hint_is_zero_on_identical_features_and_trains_the_projector():
    f = torch.randn(2, 4, 3, 3)
    term = resolved({"name": "hint", "student": "a", "teacher": "b", "projector": "none"})
    term.setup(Shapes(None, None, {"a": f.shape}, {"b": f.shape}))
    assert term(StepContext(f, None, f, None, {"a": f}, {"b": f})).item() == 0.0
    conv = resolved({"name": "hint", "student": "a", "teacher": "b", "projector": "conv1x1"})
    conv.setup(Shapes(None, None, {"a": torch.Size([2, 4, 6, 6])}, {"b": f.shape}))
    student = torch.randn(2, 4, 6, 6, requires_grad=True)
    conv(StepContext(f, None, f, None, {"a": student}, {"b": f})).backward()
    assert conv.projectors[0].conv.weight.grad.abs().sum() > 0 and student.grad.abs().sum() > 0


def test_ce_ignores_the_teacher(logits):
    s, _, y = logits
    term = build_loss({"name": "ce", "label_smoothing": 0.1})
    assert not term.uses_teacher
    assert term(StepContext(s, y, s)).item() == pytest.approx(lf.cross_entropy(s, y, 0.1).item())


def test_bad_loss_options_are_clear():
    from kdforge.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        build_loss({"name": "kd", "temprature": 2.0})
    with pytest.raises(ConfigError, match="unknown loss 'kdd'.*did you mean 'kd'"):
        build_loss({"name": "kdd"})


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_on_data_with_unlabelled_samples_is_the_mean_over_the_labelled_ones(smoothing):
    """Class index -100 (PAD_TARGET) marks a sample without a label: CE set up for such data averages over the
    labelled samples only, and a batch of unlabelled samples alone gives 0 and no gradient (not NaN)."""
    torch.manual_seed(0)
    logits = torch.randn(6, 5, requires_grad=True)
    targets = torch.tensor([3, -100, 0, 4, -100, 1])
    labelled = [0, 2, 3, 5]
    ce = build_loss({"name": "ce", "label_smoothing": smoothing})
    ce.setup(Shapes(torch.Size([6, 5]), None, unlabelled=True))
    loss = ce(StepContext(inputs=logits, targets=targets, student_logits=logits))
    smooth = torch.full((4, 5), smoothing / 5)
    smooth[torch.arange(4), targets[labelled]] += 1 - smoothing
    expected = -(smooth * torch.log_softmax(logits[labelled].detach(), 1)).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None and logits.grad[[1, 4]].abs().sum() == 0 and logits.grad[labelled].abs().sum() > 0
    logits.grad = None
    nothing = ce(StepContext(inputs=logits, targets=torch.full((6,), -100), student_logits=logits))
    assert nothing.item() == 0
    nothing.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0
    plain = build_loss({"name": "ce"})  # on data that has labels everywhere: PyTorch's mean, as before
    full = torch.tensor([3, 2, 0, 4, 1, 1])
    assert torch.equal(plain(StepContext(inputs=logits, targets=full, student_logits=logits)),
                       torch.nn.functional.cross_entropy(logits, full))  # fmt: skip


@pytest.mark.parametrize("kind", ["mse", "complex_mse", "mag_phase"])
def test_the_regression_task_term_skips_unlabelled_samples_and_the_distillation_term_does_not(kind):
    torch.manual_seed(0)
    dtype = torch.float32 if kind == "mse" else torch.cfloat
    student = torch.randn(6, 1, 16, dtype=dtype, requires_grad=True)
    targets = torch.randn(6, 1, 16, dtype=dtype)
    targets[[1, 4]] = float("nan")  # two unlabelled samples
    task = build_loss({"name": "reg_task", "kind": kind})
    labelled = [0, 2, 3, 5]
    expected = build_loss({"name": "reg_task", "kind": kind})(
        StepContext(inputs=student, targets=targets[labelled], student_logits=student[labelled])
    )
    loss = task(StepContext(inputs=student, targets=targets, student_logits=student))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student.grad is not None and student.grad[[1, 4]].abs().sum() == 0 and student.grad[labelled].abs().sum() > 0
    student.grad = None
    nothing = task(StepContext(inputs=student, targets=torch.full_like(targets, float("nan")), student_logits=student))
    assert nothing.item() == 0
    nothing.backward()
    assert student.grad is not None and student.grad.abs().sum() == 0  # a batch of unlabelled samples only
    distill = build_loss({"name": "reg_distill", "kind": kind})
    assert distill(StepContext(inputs=student, targets=targets, student_logits=student, teacher_logits=targets)).isnan()
