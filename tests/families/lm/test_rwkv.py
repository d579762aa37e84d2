"""The ternary-spiking recurrent student: a correct, stable recurrence in both of its forms."""

import pytest
import torch

from kdforge.errors import KdforgeError
from kdforge.families.lm.rwkv import TernarySpike, WKVState, spike_statistics, spiking_layers, wkv_parallel, wkv_step
from kdforge.losses import StepContext, build_losses
from kdforge.models import build_model
from kdforge.schedules import Clock


def naive_wkv(k, v, w, u):
    """The defining formula, position by position, in float64."""
    out = torch.zeros_like(v)
    for t in range(k.shape[1]):
        i = torch.arange(t, dtype=k.dtype)
        past = (k[:, :t] - (t - 1 - i)[:, None] * w).exp()
        now = (u + k[:, t]).exp()
        out[:, t] = ((past * v[:, :t]).sum(1) + now * v[:, t]) / (past.sum(1) + now)
    return out


def stepwise(k, v, w, u):
    state, outs = WKVState.empty(k.shape[0], k.shape[2], k.device), []
    for t in range(k.shape[1]):
        out, state = wkv_step(k[:, t], v[:, t], w, u, state)
        outs.append(out)
    return torch.stack(outs, 1), state


def test_parallel_and_step_forms_match_the_formula_across_chunk_boundaries():
    g = torch.Generator().manual_seed(0)
    k, v = (
        torch.randn(2, 45, 6, generator=g, dtype=torch.float64),
        torch.randn(2, 45, 6, generator=g, dtype=torch.float64),
    )
    w, u = torch.rand(6, generator=g, dtype=torch.float64) + 0.01, torch.randn(6, generator=g, dtype=torch.float64)
    reference = naive_wkv(k, v, w, u)
    parallel, after = wkv_parallel(k.float(), v.float(), w.float(), u.float(), chunk=8)
    steps, state = stepwise(k.float(), v.float(), w.float(), u.float())
    assert torch.allclose(parallel.double(), reference, atol=1e-5)
    assert torch.allclose(steps.double(), reference, atol=1e-5)
    # the carried state is the same too (its sums unscaled: num · e^p, den · e^p)
    for scaled in (lambda st: st.num * st.p.exp(), lambda st: st.den * st.p.exp()):
        assert torch.allclose(scaled(after), scaled(state), rtol=1e-4)


def test_the_recurrence_stays_finite_and_exact_over_thousands_of_tokens():
    # large keys, decays from almost none to very fast: a naive exp(k)·e^{-tw} form overflows or divides 0 by 0
    g = torch.Generator().manual_seed(1)
    k, v = 10 * torch.randn(1, 3000, 4, generator=g), torch.randn(1, 3000, 4, generator=g)
    w, u = torch.tensor([1e-5, 0.01, 1.0, 30.0]), torch.tensor([0.0, 2.0, -2.0, 5.0])
    parallel, _ = wkv_parallel(k, v, w, u, chunk=64)
    steps, _ = stepwise(k, v, w, u)
    assert parallel.isfinite().all() and steps.isfinite().all()
    assert torch.allclose(parallel, steps, atol=1e-3)
    reference = naive_wkv(k.double(), v.double(), w.double(), u.double())
    assert torch.allclose(parallel.double(), reference, atol=1e-3)


def test_spikes_are_ternary_with_a_nonzero_straight_through_gradient():
    spike = TernarySpike(8, threshold=0.5, amplitude=0.7)
    x = torch.randn(4, 8, requires_grad=True)
    out = spike(x)
    levels = (out / spike.amplitude).detach().unique()
    assert set(levels.tolist()) <= {-1.0, 0.0, 1.0} and len(levels) == 3
    out.sum().backward()
    assert x.grad.abs().sum() > 0 and spike.amplitude.grad.abs().sum() > 0
    assert spike.rate.shape == (8,) and 0 < spike.rate.mean() < 1
    assert torch.allclose(spike.rate, (out.detach() != 0).float().mean(0))


def test_spike_statistics_count_dead_and_saturated_channels():
    spike = TernarySpike(4, threshold=0.5)
    model = torch.nn.Sequential(spike)
    x = torch.tensor([[2.0, 0.0, 2.0, -2.0], [2.0, 0.0, -2.0, 2.0]]).repeat(
        50, 1
    )  # channel 1 never fires; 0, 2, 3 always
    stats = spike_statistics(model, [(x[:60],), (x[60:],)])
    assert stats == {"density": pytest.approx(0.75), "dead_channels": 0.25, "saturated_channels": 0.75}


def test_the_spike_rate_term_pulls_every_channel_towards_its_target():
    torch.manual_seed(0)
    model = build_model("rwkv_spiking", input_shape=(16,), num_classes=30, size="tiny")
    term = build_losses([{"name": "spike_rate", "target": 0.2}])[0]
    term.resolve(model, None)
    model(torch.randint(0, 30, (4, 16)))
    rates = torch.cat([m.rate for m in spiking_layers(model).values()])
    ctx = StepContext(None, None, None, None, {}, {}, Clock())
    loss = term(ctx)
    assert loss.item() == pytest.approx(((rates.detach() - 0.2) ** 2).mean().item(), rel=1e-5)
    loss.backward()
    thresholds_inputs = [p.grad for n, p in model.named_parameters() if n.endswith("time.key.weight")]
    assert all(g is not None and g.abs().sum() > 0 for g in thresholds_inputs)
    with pytest.raises(KdforgeError, match="spiking student"):
        term.resolve(build_model("rwkv_spiking", input_shape=(16,), num_classes=30, size="tiny", spiking=False), None)


@torch.no_grad()
def both_modes(model, tokens):
    """The model's logits over ``tokens`` [B, T] in parallel, and stepping one token at a time."""
    state, logits = model.empty_state(len(tokens)), []
    for t in range(tokens.shape[1]):
        out, state = model.step(tokens[:, t], state)
        logits.append(out)
    return model(tokens), torch.stack(logits, 1)


@pytest.mark.parametrize("spiking", [True, False])
def test_the_student_generates_step_by_step_exactly_as_it_trains_in_parallel(spiking):
    torch.manual_seed(0)
    model = build_model(
        "rwkv_spiking", input_shape=(40,), num_classes=50, size="tiny", spiking=spiking, chunk=16
    ).eval()
    tokens = torch.randint(0, 50, (3, 40))
    full, stepped = both_modes(model, tokens)
    assert full.shape == (3, 40, 50)
    assert torch.allclose(stepped, full, atol=1e-4)
    assert bool(spike_statistics(model, [(tokens,)])) == spiking


def test_a_spiking_student_reads_2048_tokens_alike_in_both_modes():
    torch.manual_seed(0)
    model = build_model("rwkv_spiking", input_shape=(2048,), num_classes=256, size="tiny").eval()
    full, stepped = both_modes(model, torch.randint(0, 256, (1, 2048)))
    assert full.isfinite().all() and stepped.isfinite().all()
    assert torch.allclose(stepped, full, atol=1e-3)


def test_every_parameter_learns_through_the_spikes():
    torch.manual_seed(0)
    model = build_model("rwkv_spiking", input_shape=(16,), num_classes=30, size="tiny")
    tokens = torch.randint(0, 30, (4, 16))
    torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.roll(-1, 1).flatten()).backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent


def test_bad_sizes_say_what_to_change():
    with pytest.raises(KdforgeError, match="unknown size 'huge'"):
        build_model("rwkv_spiking", input_shape=(16,), num_classes=30, size="huge")
    with pytest.raises(KdforgeError, match="token rows"):
        build_model("rwkv_spiking", input_shape=(4, 16), num_classes=30)
