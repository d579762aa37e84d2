"""State-space layers: convolution == recurrence, stable selective scan, the ssm model."""

import math

import pytest
import torch

from kdforge.families.ssm.model import S4D, GatedS4D, SelectiveSSM, _Recurrence, selective_scan
from kdforge.models import build_model


def run_steps(layer, u):
    state = layer.initial_state(len(u))
    outputs = []
    for t in range(u.shape[1]):
        y, state = layer.step(u[:, t], state)
        outputs.append(y)
    return torch.stack(outputs, 1)


@pytest.mark.parametrize(
    ("layer", "complex"),
    [
        (lambda: S4D(6, 8), False),
        (lambda: S4D(6, 8, init="inv"), False),
        (lambda: S4D(6, 8, complex=True), True),
        (lambda: GatedS4D(6, 8), False),
        (lambda: GatedS4D(6, 8, complex=True), True),
        (lambda: SelectiveSSM(6, 8), False),
        (lambda: SelectiveSSM(6, 8, init="real"), False),
        (lambda: SelectiveSSM(6, 8, init="real", scan="chunked", chunk=16), False),
    ],
)
def test_convolution_or_scan_mode_equals_the_recurrent_step_mode(layer, complex):
    torch.manual_seed(0)
    module = layer()
    u = torch.randn(3, 70, 6, dtype=torch.cfloat if complex else torch.float32)
    parallel = module(u)
    assert parallel.dtype == u.dtype and parallel.shape == u.shape
    torch.testing.assert_close(parallel, run_steps(module, u), atol=1e-5, rtol=1e-4)


def test_s4d_kernel_matches_the_zero_order_hold_formula():
    torch.manual_seed(0)
    layer = S4D(2, 4)
    a = torch.complex(-torch.exp(layer.log_a_real), layer.a_imag).detach().to(torch.cdouble)
    dt = torch.exp(layer.log_dt).detach().double()[:, None]
    c = torch.view_as_complex(layer.c).detach().to(torch.cdouble)
    steps = torch.arange(5, dtype=torch.double)
    a_bar = torch.exp(dt * a)
    reference = 2 * torch.einsum("hn,hnl->hl", c * (a_bar - 1) / a, a_bar[..., None] ** steps).real
    torch.testing.assert_close(layer.kernel(5).double(), reference, rtol=1e-5, atol=1e-6)


def test_s4d_initialisations_follow_lin_and_inv():
    lin, inv = S4D(1, 8, init="lin"), S4D(1, 8, init="inv")
    n = torch.arange(4.0)
    torch.testing.assert_close(lin.a_imag[0].detach(), math.pi * n)
    torch.testing.assert_close(inv.a_imag[0].detach(), (8 / math.pi) * (8 / (2 * n + 1) - 1))
    torch.testing.assert_close(-torch.exp(lin.log_a_real).detach(), torch.full((1, 4), -0.5))


def test_log_dt_learns_and_changes_the_output():
    torch.manual_seed(0)
    layer = S4D(3, 8)
    u = torch.randn(2, 30, 3)
    before = layer(u)
    before.square().sum().backward()
    assert (layer.log_dt.grad != 0).all()
    with torch.no_grad():
        layer.log_dt.add_(1.0)
    assert not torch.allclose(layer(u), before)


@pytest.mark.parametrize("complex", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_inference_reuses_the_kernel_until_a_parameter_or_the_length_changes(complex, fused):
    torch.manual_seed(0)
    layer = S4D(3, 8, complex=complex).eval()
    # CPU fused AdamW leaves the parameters' versions as they were: the mode switch of a validation must still tell
    optimiser = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=fused)
    u = torch.randn(2, 30, 3, dtype=torch.cfloat if complex else torch.float32)
    with torch.no_grad():
        first = layer(u)
        assert layer.kernel_spectrum(30) is layer.kernel_spectrum(30)
        assert layer.kernel_spectrum(31) is not layer.kernel_spectrum(30)
    torch.testing.assert_close(first, layer(u).detach())  # the cached path equals the autograd one
    layer.train()
    layer(u).abs().square().sum().backward()
    optimiser.step()
    layer.eval()
    with torch.no_grad():
        after_step = layer(u)
    torch.testing.assert_close(after_step, layer(u).detach())  # the step invalidated the cache
    assert not torch.allclose(after_step, first)
    layer.load_state_dict(S4D(3, 8, complex=complex).state_dict())
    with torch.no_grad():
        loaded = layer(u)
    torch.testing.assert_close(loaded, layer(u).detach())  # so did loading new weights
    assert not torch.allclose(loaded, after_step)


def reference_scan(log_decay, inputs):
    h, out = torch.zeros_like(inputs[:, 0], dtype=torch.float64), []
    for t in range(inputs.shape[1]):
        h = torch.exp(log_decay[:, t].double()) * h + inputs[:, t].double()
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("method", ["sequential", "chunked"])
def test_selective_scan_is_exact_and_finite_at_length_4096_with_fast_and_slow_decays(method):
    torch.manual_seed(0)
    rates = torch.tensor([1e-3, 0.1, 5.0, 60.0])  # per state: from barely decaying to gone in one step
    log_decay = -torch.rand(2, 4096, 3, 4) * rates
    inputs = torch.randn(2, 4096, 3, 4)
    h = selective_scan(log_decay, inputs, method=method)
    assert torch.isfinite(h).all()
    reference = reference_scan(log_decay, inputs)
    assert (h.double() - reference).abs().max() <= 1e-4 * reference.abs().max()


@pytest.mark.parametrize("method", ["sequential", "chunked"])
def test_selective_scan_gradients_are_finite_and_match_the_loop(method):
    torch.manual_seed(0)
    log_decay = (-torch.rand(2, 70, 3) * 3).requires_grad_()
    inputs = torch.randn(2, 70, 3).requires_grad_()
    weights = torch.randn(2, 70, 3)
    (selective_scan(log_decay, inputs, method=method, chunk=16) * weights).sum().backward()
    scan_grads = log_decay.grad.clone(), inputs.grad.clone()
    log_decay.grad = inputs.grad = None
    (reference_scan(log_decay, inputs).float() * weights).sum().backward()
    torch.testing.assert_close(scan_grads[0], log_decay.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scan_grads[1], inputs.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_sequential_scan_backward_passes_gradcheck_including_the_initial_state(dtype):
    torch.manual_seed(0)
    log_decay = (-torch.rand(2, 9, 3, dtype=dtype)).requires_grad_()  # complex: decay and rotation
    inputs = torch.randn(2, 9, 3, dtype=dtype, requires_grad=True)
    state = torch.randn(2, 3, dtype=dtype, requires_grad=True)
    scan = lambda d, x, h: _Recurrence.apply(torch.exp(d), x, h)  # noqa: E731  (selective_scan computes in float32)
    assert torch.autograd.gradcheck(scan, (log_decay, inputs, state))


@pytest.mark.parametrize("selectivity", ["none", "gate", "mamba"])
@pytest.mark.parametrize("complex_mode", [None, "native", "channels"])
def test_ssm_model_sequence_outputs_equal_its_step_mode(selectivity, complex_mode):
    if selectivity == "mamba" and complex_mode == "native":
        with pytest.raises(Exception, match="use complex_mode: channels"):
            build_model("ssm", input_shape=(2, 24), num_classes=3, selectivity="mamba", complex=True)
        return
    torch.manual_seed(0)
    complex_options = {"complex": True, "complex_mode": complex_mode} if complex_mode else {}
    model = build_model(
        "ssm",
        input_shape=(2, 24),
        num_classes=3,
        model_dim=8,
        state_dim=4,
        num_layers=2,
        selectivity=selectivity,
        pool="none",
        **complex_options,
    ).eval()
    x = torch.randn(5, 2, 24, dtype=torch.cfloat if complex_mode else torch.float32)
    y = model(x)
    assert y.shape == (5, 3, 24) and y.is_complex() == bool(complex_mode)
    with torch.no_grad():
        stepped = run_steps(model, x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(y.detach(), stepped, atol=1e-4, rtol=1e-4)


def test_ssm_classifier_pools_and_trains():
    torch.manual_seed(0)
    model = build_model(
        "ssm", input_shape=(1, 40), num_classes=10, model_dim=16, state_dim=8, num_layers=2, selectivity="mamba"
    )
    y = torch.randint(0, 10, (64,))
    t = torch.arange(40.0)
    x = torch.sin((1 + y[:, None]) * 0.15 * t)[:, None] + 0.1 * torch.randn(64, 1, 40)  # the class is the frequency
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert model(x).shape == (64, 10) and losses[-1] < 0.5 * losses[0], losses
    with pytest.raises(Exception, match="sequences"):
        build_model("ssm", input_shape=(1, 8, 8), num_classes=3)


def test_compression_presets_size_the_student_from_the_teacher():
    from kdforge.families.ssm.model import compression_preset

    teacher = {"model_dim": 64, "state_dim": 16, "num_layers": 4, "selectivity": "mamba", "complex": True}
    assert compression_preset("standard", teacher) == {**teacher, "selectivity": "none"}
    assert compression_preset("compressed", teacher) == {
        **teacher,
        "model_dim": 32,
        "state_dim": 8,
        "num_layers": 2,
        "selectivity": "none",
    }
    assert compression_preset("tiny", {"num_layers": 2}) == {
        "model_dim": 16,
        "state_dim": 4,
        "num_layers": 1,
        "selectivity": "none",
    }  # ssm defaults fill in


def test_student_preset_in_a_recipe_is_overridable_per_field(tiny_recipe, tmp_path):
    from rich.console import Console

    from kdforge import Recipe
    from kdforge.session import Session

    tiny_recipe["data"] = {"name": "mnist1d", "batch_size": 64}
    tiny_recipe["teacher"]["model"] = {
        "name": "ssm",
        "model_dim": 32,
        "state_dim": 8,
        "num_layers": 4,
        "selectivity": "mamba",
    }
    tiny_recipe["student"] = {"model": {"name": "ssm", "model_dim": 12}, "preset": "compressed"}
    recipe = Recipe.model_validate(tiny_recipe)
    student = Session(recipe, tmp_path, Console(quiet=True)).build_student()
    assert student.kdforge_spec["options"] == {"model_dim": 12, "state_dim": 4, "num_layers": 2, "selectivity": "none"}
    assert len(student.blocks) == 2 and student.encoder.out_features == 12
    tiny_recipe["teacher"]["model"] = {"name": "cnn", "width": 8}
    with pytest.raises(Exception, match="student.preset sizes an ssm student from an ssm teacher"):
        Recipe.model_validate(tiny_recipe)


@pytest.mark.parametrize("selectivity", ["none", "mamba"])
def test_ssm_layers_report_their_gradient_norms(selectivity):
    from kdforge.machine import layer_grad_norms

    torch.manual_seed(0)
    model = build_model(
        "ssm", input_shape=(1, 32), num_classes=4, model_dim=8, state_dim=4, num_layers=2, selectivity=selectivity
    )
    torch.nn.functional.cross_entropy(model(torch.randn(6, 1, 32)), torch.arange(6) % 4).backward()
    norms = layer_grad_norms(model.named_parameters())
    for block in ("blocks.0.ssm", "blocks.1.ssm"):
        assert norms[block] > 0  # the state-space parameters of each layer (A, C, Δt, D) are one reported layer


def test_a_bidirectional_ssm_sees_the_future_and_a_causal_one_does_not():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 30)
    later = x.clone()
    later[..., 20:] += 1.0  # change only the last steps
    for bidirectional in (False, True):
        model = build_model(
            "ssm",
            input_shape=(1, 30),
            num_classes=1,
            model_dim=8,
            state_dim=4,
            num_layers=1,
            pool="none",
            bidirectional=bidirectional,
        ).eval()
        with torch.no_grad():
            early_change = (model(later) - model(x))[..., :20].abs().max()
        assert (early_change > 1e-4) == bidirectional
    with pytest.raises(ValueError, match="no step"):
        model.step(x[:, :, 0], model.initial_state(2))


def test_feature_matching_on_ssm_blocks_trains_projectors_from_the_first_step_with_scheduled_weights():
    """α·task + β·distill + γ·feature on an SSM pair: blocks mapped uniformly (teacher 4 blocks of
    width 16 -> student 2 of width 8), projectors built before the optimiser and trained; a
    task-only warm-up (β, γ = 0 at the start), then a ramp."""
    from kdforge.config import OptimConfig
    from kdforge.distiller import Distiller
    from kdforge.losses import build_losses
    from kdforge.optim import build_optimizer
    from kdforge.schedules import Clock
    from kdforge.teachers import Teacher

    torch.manual_seed(0)
    options = {"input_shape": (1, 32), "num_classes": 1, "pool": "none", "complex": True, "complex_mode": "channels"}
    student = build_model("ssm", model_dim=8, state_dim=8, num_layers=2, **options)
    teacher = build_model("ssm", model_dim=16, state_dim=8, num_layers=4, selectivity="mamba", **options).eval()
    ramp = {"schedule": "linear_warmup", "value": 1.0, "warmup": 0.5}
    terms = build_losses(
        [
            {"name": "reg_task", "kind": "complex_mse", "weight": 1.0},
            {"name": "reg_distill", "kind": "mag_phase", "weight": ramp},
            {"name": "hint", "student": "blocks", "teacher": "blocks", "mapping": "uniform", "weight": ramp},
        ]
    )
    x, y = torch.randn(8, 1, 32, dtype=torch.cfloat), torch.randn(8, 1, 32, dtype=torch.cfloat)
    distiller = Distiller(student, Teacher(teacher), terms, x[:2])
    hint = terms[2]
    assert hint.pairs == [("blocks.0", "blocks.1"), ("blocks.1", "blocks.3")]
    optimizer = build_optimizer(distiller.param_groups(), OptimConfig(lr=1e-2))
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    projector_params = list(hint.projectors.parameters())
    assert projector_params and {id(p) for p in projector_params} <= in_optimizer
    assert not in_optimizer & {id(p) for p in teacher.parameters()}

    start = distiller(x, y, Clock(progress=0.0))
    assert start.weighted["reg_distill"] == 0 and start.weighted["hint"] == 0 and start.parts["hint"] > 0
    assert start.loss.item() == pytest.approx(start.parts["reg_task"].item())

    before = [p.detach().clone() for p in projector_params]
    losses = []
    for step in range(30):
        out = distiller(x, y, Clock(step=step, progress=0.6))  # past the warm-up: every term counts
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.parts["hint"].item())
    assert all(p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, projector_params))
    assert losses[-1] < 0.5 * losses[0]


def test_a_standard_student_starts_from_its_gated_teacher_without_the_gates(tiny_recipe):
    from kdforge import Recipe, run

    tiny_recipe["data"] = {"name": "mnist1d", "batch_size": 128}
    tiny_recipe["teacher"] = {
        "source": "train",
        "model": {"name": "ssm", "model_dim": 16, "state_dim": 8, "num_layers": 2, "selectivity": "gate"},
        "train": {"epochs": 1},
    }
    tiny_recipe["student"] = {"model": {"name": "ssm"}, "preset": "standard", "init_from_teacher": True}
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    result = run(Recipe.model_validate(tiny_recipe))
    transfer = result.results["student"]["init_from_teacher"]
    student = build_model("ssm", input_shape=(1, 40), num_classes=10, model_dim=16, state_dim=8, num_layers=2)
    assert sorted(transfer["copied"]) == sorted(
        student.state_dict()
    )  # everything: only the teacher's gates have no place
    assert "feedforward" not in transfer and transfer["not_in_teacher"] == [] and transfer["shape_mismatch"] == {}


def test_init_from_teacher_with_nothing_to_copy_is_a_clear_error(tiny_recipe):
    import io

    from rich.console import Console

    from kdforge import Recipe
    from kdforge.check import check
    from kdforge.errors import KdforgeError

    tiny_recipe["data"] = {"name": "mnist1d", "batch_size": 128}
    tiny_recipe["teacher"]["model"] = {"name": "ssm", "model_dim": 16, "state_dim": 8, "num_layers": 2}
    tiny_recipe["student"] = {"model": {"name": "mlp", "hidden": [12]}, "init_from_teacher": True}
    with pytest.raises(KdforgeError, match="no teacher tensor has a student tensor of the same name and shape"):
        check(Recipe.model_validate(tiny_recipe), Console(file=io.StringIO()))
