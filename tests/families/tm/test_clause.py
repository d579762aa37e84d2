"""Tsetlin-machine clause layers: gradients, τ, what they can learn, hard mode, packed rules."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdforge.families.tm import clause as clause_module
from kdforge.families.tm import rules as rules_module
from kdforge.families.tm.clause import ClauseLayer, set_hard, set_levels
from kdforge.families.tm.flat import DeepTM
from kdforge.families.tm.rules import PackedTM, export_rules, has_int_linear, layer_rules, load_rules, model_rules
from kdforge.models import build_model

needs_int_linear = pytest.mark.skipif(not has_int_linear(), reason="this PyTorch has no oneDNN int8 linear (not x86)")


def fuzzy_inputs(n=32, features=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, features, generator=g) * 0.98 + 0.01  # strictly inside (0, 1)


@pytest.mark.parametrize("form", ["capacity", "product"])
def test_every_include_logit_gets_a_nonzero_gradient(form):
    torch.manual_seed(0)
    layer = ClauseLayer(6, 3, clauses=8, lf=3, form=form)
    layer(fuzzy_inputs()).pow(2).sum().backward()
    assert layer.include.grad.shape == (8, 12)
    assert (layer.include.grad != 0).all(), "a straight-through estimator must not pass zero gradient"


def test_include_mask_is_hard_forward_and_sigmoid_backward():
    layer = ClauseLayer(3, 2, clauses=2, tau=0.5)
    with torch.no_grad():
        layer.include.copy_(torch.tensor([[1.0, -1.0, 0.3, -0.2, 2.0, -3.0], [-1.0, 1.0, -0.3, 0.2, -2.0, 3.0]]))
    mask = layer.include_mask()
    assert torch.equal(mask, (layer.include > 0).float())
    mask.sum().backward()
    s = torch.sigmoid(layer.include.detach() / 0.5)
    torch.testing.assert_close(layer.include.grad, s * (1 - s) / 0.5)  # d σ(l/τ) / dl


@pytest.mark.parametrize("form", ["capacity", "product"])
def test_hard_mode_without_gradients_skips_the_surrogates_and_computes_the_same(form, monkeypatch):
    torch.manual_seed(0)
    layer = set_hard(ClauseLayer(6, 3, clauses=8, lf=2, form=form)).eval()
    u = torch.rand(5, 6)
    expected = layer(u)  # gradients recorded: hard values plus (surrogate − surrogate)
    calls = []
    monkeypatch.setattr(torch, "sigmoid", lambda *a: calls.append(a) or F.sigmoid(*a))
    with torch.no_grad():
        assert torch.equal(layer(u), expected)
    assert not calls  # no σ(include / τ) in inference
    layer(u).sum().backward()
    assert calls and layer.include.grad.abs().sum() > 0


def test_tau_changes_the_forward_output_and_the_gradient():
    torch.manual_seed(0)
    u = fuzzy_inputs()
    outputs, grads = [], []
    for tau in (0.25, 1.0):
        torch.manual_seed(1)
        layer = ClauseLayer(6, 3, clauses=8, lf=3, tau=tau)
        out = layer(u)
        out.sum().backward()
        outputs.append(out.detach())
        grads.append(layer.include.grad)
    assert not torch.allclose(outputs[0], outputs[1])
    assert not torch.allclose(grads[0], grads[1])


def test_capacity_score_matches_its_formula():
    torch.manual_seed(0)
    layer = ClauseLayer(4, 2, clauses=4, lf=2, tau=0.1)
    u = fuzzy_inputs(8, 4)
    literals = torch.cat([u, 1 - u], 1)
    include = (layer.include > 0).float()
    m = (1 - literals) @ include.t()
    x = include.sum(1).clamp(max=2) - m
    torch.testing.assert_close(layer.clause_scores(u), 0.1 * F.softplus(x / 0.1))
    layer.hard = True
    bits = (u > 0.5).float()
    m_hard = (1 - torch.cat([bits, 1 - bits], 1)) @ include.t()
    torch.testing.assert_close(layer.clause_scores(u), torch.relu(include.sum(1).clamp(max=2) - m_hard))


def test_product_form_is_exp_of_violations_and_the_and_when_hard():
    torch.manual_seed(0)
    layer = ClauseLayer(4, 2, clauses=4, form="product", kappa=3.0, tau=0.5)
    u = fuzzy_inputs(8, 4)
    include = (layer.include > 0).float()
    m = (1 - torch.cat([u, 1 - u], 1)) @ include.t()
    torch.testing.assert_close(layer.clause_scores(u), torch.exp(-3.0 * m / (0.5 * 4)))
    layer.hard = True
    bits = (u > 0.5).float()
    fires = ((1 - torch.cat([bits, 1 - bits], 1)) @ include.t() == 0).float()
    torch.testing.assert_close(layer.clause_scores(u), fires)


def test_votes_have_fixed_polarity():
    layer = ClauseLayer(4, 3, clauses=6)
    votes = layer.vote_matrix()
    assert (votes[0::2] > 0).all() and (votes[1::2] < 0).all()


def _fit(model, x, y, steps=400, lr=0.05):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("pattern", ["xor", "parity2"])
def test_clause_layer_learns_what_a_linear_layer_cannot(pattern):
    """XOR of two bits among distractors; parity of two bits with the others shuffled in."""
    g = torch.Generator().manual_seed(3)
    bits = torch.randint(0, 2, (512, 6), generator=g).float()
    a, b = (0, 1) if pattern == "xor" else (2, 5)
    y = (bits[:, a] != bits[:, b]).long() if pattern == "xor" else (bits[:, a] == bits[:, b]).long()
    u = bits * 0.8 + 0.1 + 0.05 * torch.randn(bits.shape, generator=g)
    torch.manual_seed(0)
    linear = _fit(torch.nn.Linear(6, 2), u, y)
    torch.manual_seed(0)
    layer = ClauseLayer(6, 2, clauses=16, lf=1)
    soft = _fit(layer, u, y)
    hard = (set_hard(layer)(u).argmax(1) == y).float().mean().item()
    assert linear < 0.8, "the task must be out of a linear layer's reach"
    assert soft > 0.97 and hard > 0.97


def test_deeptm_shapes_and_gradients():
    torch.manual_seed(0)
    deep = DeepTM(6, 3, hidden=10, depth=3, clauses=8)
    out = deep(fuzzy_inputs())
    assert out.shape == (32, 3)
    out.sum().backward()
    assert all((layer.include.grad != 0).any() for layer in deep.layers)


def test_learnable_tau_with_ema_is_used_in_eval():
    layer = ClauseLayer(4, 2, clauses=4, learn_tau=True, tau_ema=0.5, tau=0.5)
    assert [n for n, _ in layer.named_parameters() if "tau" in n] == ["tau.log_tau"]
    with torch.no_grad():
        layer.tau.log_tau.fill_(0.0)  # τ = 1 now; the EMA still remembers 0.5
    layer(fuzzy_inputs(4, 4))
    assert layer.tau.ema_tau.item() == pytest.approx(0.75)
    layer.eval()
    assert layer.tau().item() == pytest.approx(0.75)


def test_clause_and_literal_dropout_only_in_training():
    torch.manual_seed(0)
    layer = ClauseLayer(6, 3, clauses=8, clause_dropout=0.5, literal_dropout=0.5)
    u = fuzzy_inputs()
    layer.eval()
    assert torch.equal(layer(u), layer(u))
    layer.train()
    assert not torch.equal(layer(u), layer(u))


def test_hard_literals_read_a_fraction_of_the_inputs_as_booleans_in_training_with_their_gradient():
    torch.manual_seed(0)
    u = fuzzy_inputs().requires_grad_()
    layer = ClauseLayer(u.shape[-1], 3, clauses=8, hard_literals=1.0)
    same = ClauseLayer(u.shape[-1], 3, clauses=8)
    same.load_state_dict(layer.state_dict())
    layer.train(), same.train()
    assert torch.allclose(layer(u), same((u > 0.5).float()))  # every literal read as hard mode reads it
    layer(u).sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0  # straight through: the gradient of u reaches the inputs
    layer.eval()
    assert torch.equal(layer(u), same.eval()(u))  # at evaluation the soft literals, as without the option
    some = ClauseLayer(u.shape[-1], 3, clauses=8, hard_literals=0.5)
    some.load_state_dict(layer.state_dict())
    some.train()
    literals = some.literals(u)[..., : u.shape[-1]]
    booleans = (literals == 0) | (literals == 1)
    assert 0 < (booleans & (literals != u)).float().mean() < 1  # some inputs thresholded, not all
    from kdforge.errors import KdforgeError
    from kdforge.models import build_model

    with pytest.raises(KdforgeError, match="hard_literals: Input should be less than or equal to 1"):
        build_model("tm_flat", input_shape=(1, 4, 4), num_classes=2, hard_literals=1.5)  # checked as an option


def test_symmetric_prior_mirrors_literals_in_pairs():
    layer = ClauseLayer(5, 2, clauses=6, tm_prior="symmetric")
    first, second = layer.include[0::2], layer.include[1::2]
    assert torch.equal(second, torch.cat([first[:, 5:], first[:, :5]], 1))


# ----------------------------------------------------------------------------- export and packed inference


def trained_looking_tm_flat(seed=0, **options):
    torch.manual_seed(seed)
    model = build_model("tm_flat", input_shape=(1, 6, 5), num_classes=4, clauses=32, lf=4, **options)
    with torch.no_grad():  # spread weights as training would, so that votes and thresholds differ
        model.threshold.normal_(0, 0.3)
        model.tm.votes.normal_(0, 2)
        model.tm.bias.normal_()
    return set_hard(model.eval())


def use_products(kind: str, monkeypatch) -> None:
    """Make PackedTM multiply as on a CPU with VNNI but no oneDNN ("int8", from the first value on here), one without
    VNNI ("int_linear": oneDNN's int8 layers, from the first value on here), one with both ("both": int8 products
    below 3,000 input values, oneDNN's layers from there on) or where none pays ("float32")."""
    monkeypatch.setattr(rules_module, "fast_int8", lambda: kind in ("int8", "both"))
    monkeypatch.setattr(rules_module, "has_int_linear", lambda: kind in ("int_linear", "both"))
    monkeypatch.setattr(PackedTM, "INT8_VALUES", 1)
    monkeypatch.setattr(PackedTM, "INT_LINEAR_VALUES", 1)
    monkeypatch.setattr(PackedTM, "INT_LINEAR_VALUES_VNNI", 3000)


PRODUCTS = [
    "int8",
    pytest.param("int_linear", marks=needs_int_linear),
    pytest.param("both", marks=needs_int_linear),
    "float32",
]


@pytest.mark.parametrize("products", PRODUCTS)
@pytest.mark.parametrize("form", ["capacity", "product"])
@pytest.mark.parametrize("batch", [1, 63, 200])
def test_packed_equals_hard_float_exactly(form, batch, products, monkeypatch):
    use_products(products, monkeypatch)
    model = trained_looking_tm_flat(form=form)
    x = torch.randn(batch, 1, 6, 5, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = model(x).numpy()
    packed = PackedTM(model_rules(model)["layers"]["tm"])
    assert packed.int8 == (products in ("int8", "both"))
    assert (packed.int_linear is not None) == (products in ("int_linear", "both"))
    assert np.array_equal(packed(x), expected)


@pytest.mark.parametrize(
    "products,ways",  # the way taken at 1, 16,383, 16,384, 32,768 and 131,072 input values, at the shipped thresholds
    [
        ("int8", ["float32", "float32", "int8", "int8", "int8"]),
        pytest.param("int_linear", ["float32", "float32", "float32", "oneDNN", "oneDNN"], marks=needs_int_linear),
        pytest.param("both", ["float32", "float32", "int8", "int8", "oneDNN"], marks=needs_int_linear),
        ("float32", ["float32"] * 5),
    ],
)
def test_packed_takes_its_way_by_the_number_of_input_values(products, ways, monkeypatch):
    monkeypatch.setattr(rules_module, "fast_int8", lambda: products in ("int8", "both"))
    monkeypatch.setattr(rules_module, "has_int_linear", lambda: products in ("int_linear", "both"))
    packed = PackedTM(layer_rules(set_hard(ClauseLayer(8, 3, clauses=4, lf=3))))
    assert [packed.way(values) for values in (1, 16383, 16384, 32768, 131072)] == ways


@pytest.mark.parametrize(
    "products,says",
    [("int8", ["int8 products"]), ("int_linear", ["oneDNN"]), ("both", ["int8 products", "oneDNN"]), ("float32", [])],
)
def test_packed_says_how_it_multiplies_on_this_cpu(products, says, monkeypatch):
    use_products(products, monkeypatch)
    text = PackedTM.products()
    assert [part for part in ("int8 products", "oneDNN") if part in text] == says and "float32" in text


@pytest.mark.parametrize(
    "features,lf,vote_bits,levels",  # int8 votes and scores; then votes, scores too big for int8 (summed in float)
    [(70, 3, 8, 1), (70, 3, 8, 3), (70, 40, 8, 1), (70, 40, 8, 4), (70, 3, 12, 1), (150, 200, 8, 1)],
)
@pytest.mark.parametrize("products", PRODUCTS)
def test_packed_clause_layer_on_its_own_inputs(features, lf, vote_bits, levels, products, monkeypatch):
    use_products(products, monkeypatch)
    torch.manual_seed(0)
    layer = ClauseLayer(features, 5, clauses=12, lf=lf, vote_bits=vote_bits, include_init=features, levels=levels)
    set_hard(layer)
    u = fuzzy_inputs(600, features)  # inputs in [0, 1], cut at 0.5 (or at each level's threshold)
    packed = PackedTM(layer_rules(layer))
    too_big = vote_bits > 8 or levels * lf > 127  # for int8: float32 products instead
    assert (packed.int8_votes is None) == (products not in ("int8", "both") or too_big)
    assert (packed.int_linear is None) == (products not in ("int_linear", "both") or too_big)
    with torch.no_grad():
        assert np.array_equal(packed(u[:1]), layer(u[:1]).numpy())
        assert np.array_equal(packed(u), layer(u).numpy())
        packed.BLOCK_ROWS = 256  # big batches in blocks (of 200 rows), on every path, int8 and float votes alike
        assert np.array_equal(packed(u), layer(u).numpy())


def test_the_float32_way_fills_scratch_arrays_that_no_output_shares():
    """Few values: bits, scores and sums go into per-thread scratch arrays (a plan per layer and input shape), made so
    that calls in and out of inference mode may fill them; an output never aliases them, threads never share them, and
    a layer never takes the plan of another that had its id."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    layer = set_hard(ClauseLayer(20, 5, clauses=12, lf=3, include_init=20))
    packed = PackedTM(layer_rules(layer))
    u, v = fuzzy_inputs(3 * 7, 20).view(3, 7, 20), fuzzy_inputs(3 * 7, 20, seed=1).view(3, 7, 20)
    assert packed.way(u.numel()) == "float32"
    with torch.no_grad():
        expected_u, expected_v = layer(u), layer(v)
    with torch.inference_mode():
        first = packed.few_outputs(u)
    second = packed.few_outputs(v.requires_grad_())  # outside inference mode, inputs that require a gradient
    assert torch.equal(first, expected_u) and torch.equal(second, expected_v)  # the first kept its values
    assert rules_module.scratch(u.shape, 12, 5)[0] is rules_module.scratch(u.shape, 12, 5)[0]
    big = torch.Size([rules_module.SCRATCH_VALUES + 1, 1])
    assert rules_module.scratch(big, 12, 5)[0] is not rules_module.scratch(big, 12, 5)[0]  # not kept
    assert packed.plan(u.shape) is packed.plan(u.shape) and packed.plan(big) is not packed.plan(big)
    other = PackedTM(layer_rules(set_hard(ClauseLayer(20, 5, clauses=12, lf=3, include_init=3))))
    rules_module._SCRATCH.plans[(id(packed), u.shape)] = other.plan(u.shape)  # as if ``other`` had had its id
    assert packed.plan(u.shape).owner() is packed and torch.equal(packed.few_outputs(u), expected_u)
    assert other.plan(u.shape).bits is packed.plan(u.shape).bits  # layers of the same sizes share the arrays
    assert packed.few_outputs(u[:0]).shape == (0, 7, 5) and packed(np.zeros((0, 20))).shape == (0, 5)  # no rows
    with torch.no_grad():  # inputs of another dtype: the general float32 calls, the same outputs
        assert torch.equal(packed.few_outputs(u.double()), expected_u)

    inputs = [fuzzy_inputs(3 * 7, 20, seed=s).view(3, 7, 20) for s in range(8)]
    with torch.no_grad():
        wanted = [layer(x) for x in inputs]
    with ThreadPoolExecutor(4) as pool:  # each thread its own arrays: no call sees another's bits
        for _ in range(20):
            got = list(pool.map(packed.few_outputs, inputs))
            assert all(torch.equal(g, w) for g, w in zip(got, wanted))


@pytest.mark.parametrize("levels", [2, 3, 4, 8])
def test_packed_levels_count_the_thresholds_below_each_input_exactly(levels):
    """At L levels the float32 way counts the thresholds below each input by arithmetic (L a power of two) or by a
    search: either way as hard mode, on inputs at, just above and just below every threshold and beyond [0, 1]."""
    torch.manual_seed(0)
    layer = set_hard(ClauseLayer(6, 4, clauses=10, lf=3, include_init=6, levels=levels))
    edges = torch.tensor([0.0, 1.0, -1.0, 3.0, 1e30, -1e30, *layer.level_thresholds.tolist()])
    near = torch.cat([edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    values = torch.cat([near, torch.rand(6 * 12)])
    u = values[: len(values) // 6 * 6].view(-1, 6)  # every edge value, then random ones
    packed = PackedTM(layer_rules(layer))
    assert packed.way(u.numel()) == "float32" and packed.levels_by_arithmetic == (levels in (2, 4, 8))
    with torch.no_grad():
        assert torch.equal(packed.few_outputs(u), layer(u))
        expected_counts = torch.bucketize(u, layer.level_thresholds).to(torch.int8)
        assert torch.equal(packed.bits(u), expected_counts)  # the bits the int8 ways multiply
        many = torch.cat(
            [u, torch.rand(rules_module.PACKED_SEARCHED_PER_LEVEL * levels // 6, 6)]
        )  # counted, not searched, here
        assert torch.equal(packed.few_outputs(many), layer(many))
        more = torch.cat(
            [many, torch.rand(clause_module.SEARCHED_VALUES_PER_LEVEL * levels // 6, 6)]
        )  # hard mode counts them too
        assert torch.equal(layer.leveled(more), torch.bucketize(more, layer.level_thresholds) / levels)
        assert torch.equal(packed.few_outputs(more), layer(more))


def test_rules_round_trip_through_a_file(tmp_path):
    model = trained_looking_tm_flat()
    path = export_rules(model, tmp_path / "rules.json")
    rules = load_rules(path)
    assert rules == json.loads(json.dumps(model_rules(model)))
    layer = rules["layers"]["tm"]
    assert layer["clauses"][0] == torch.nonzero(model.tm.include[0] > 0).flatten().tolist()
    assert all(isinstance(v, int) for row in layer["votes"] for v in row)
    x = torch.randn(50, 1, 6, 5)
    assert np.array_equal(PackedTM(layer)(x), PackedTM(model_rules(model)["layers"]["tm"])(x))


def test_rules_errors_are_clear(tmp_path):
    from kdforge.errors import KdforgeError

    with pytest.raises(KdforgeError, match="no clause layers"):
        model_rules(torch.nn.Linear(3, 2))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(KdforgeError, match="not a kdforge tm-rules file"):
        load_rules(tmp_path / "x.json")
    with pytest.raises(KdforgeError, match="expects 30 input features"):
        PackedTM(model_rules(trained_looking_tm_flat())["layers"]["tm"])(np.zeros((2, 7)))


# ----------------------------------------------------------------------------- rules that say what they compute


def spread_clause_layer(seed=0, features=10, **options):
    """A clause layer whose clauses hold from none to most of the 2F literals, some contradictory."""
    torch.manual_seed(seed)
    layer = ClauseLayer(features, 3, clauses=16, lf=3, **options)
    with torch.no_grad():
        density = torch.linspace(-2.5, 1.5, 16)[:, None]  # few included literals in clause 0, many in 15
        layer.include.copy_(density + torch.randn(16, 2 * features))
    return set_hard(layer.eval())


def count_rule(rules, u):
    """Fires per clause, by the JSON alone: at least min_true of its included literals' level tests hold (one test
    per literal at one level). -> [C, B]."""
    tests = np.asarray(u)[:, :, None] > np.asarray(rules["thresholds"])[None]  # [B, F, levels]
    held = np.concatenate([tests.sum(2), (~tests).sum(2)], axis=1)  # [B, 2F]: the tests each literal passes
    return np.stack([held[:, c].sum(1) >= k for c, k in zip(rules["clauses"], rules["min_true"])])


@pytest.mark.parametrize(
    "options",
    [{}, {"form": "product"}, {"strict": True}, {"exclusive_literals": True}, {"levels": 2}, {"levels": 3}],
)
def test_rules_json_packed_evaluator_and_hard_layer_agree_on_every_clause(options):
    layer = spread_clause_layer(**options)
    u = fuzzy_inputs(300, 10)
    rules = layer_rules(layer)
    with torch.no_grad():
        hard = (layer.clause_scores(u) > 0).numpy().T  # [C, B]
    packed = (PackedTM(rules).clause_scores(u) > 0).T
    assert np.array_equal(packed, hard) and np.array_equal(count_rule(rules, u), hard)
    assert 0.05 < hard.mean() < 0.95  # the rules really fire and really fail
    sizes = [len(c) for c in rules["clauses"]]
    if options.get("form") == "product":
        assert rules["min_true"] == sizes  # every clause an AND (an empty one always fires)
    elif options.get("strict"):
        assert rules["min_true"] == [max(n, 1) for n in sizes]  # every clause an AND (an empty one never fires)
    elif not options:  # the capacity form: a threshold, an OR when the clause has at most LF literals
        assert rules["min_true"] == [max(n - 3, 0) + 1 for n in sizes]
        assert any(1 < k < n for k, n in zip(rules["min_true"], sizes))
    elif levels := options.get("levels"):  # the same threshold over the clause's n·L level tests
        assert rules["min_true"] == [levels * max(n - 3, 0) + 1 for n in sizes]
        assert rules["thresholds"][0] == pytest.approx([(2 * j + 1) / (2 * levels) for j in range(levels)])


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_levels_read_each_literal_as_its_nearest_multiple_and_bring_hard_mode_closer_to_soft(levels):
    torch.manual_seed(0)
    layer = ClauseLayer(40, 5, clauses=16, lf=4, include_init=20, levels=levels).eval()
    u = fuzzy_inputs(400, 40)
    with torch.no_grad():
        layer.votes.normal_(0, 2)
        soft = layer(u)
        expected = torch.round(u * levels) / levels  # no input lies on a tie (k + ½) / L
        assert torch.equal(set_hard(layer).literals(u)[:, :40], expected)
        many = fuzzy_inputs(2000, 40, seed=1)  # counted by comparisons rather than one bucketize
        assert torch.equal(layer.leveled(many), torch.round(many * levels) / levels)
        assert np.array_equal(PackedTM(layer_rules(layer))(many), layer(many).numpy())
        assert torch.equal(layer.clause_scores(u), torch.round(layer.clause_scores(u) * levels) / levels)
        closer = (layer(u) - soft).abs().mean()
        set_levels(layer, 1)
        assert torch.equal(layer.literals(u)[:, :40], (u > 0.5).float())
        assert closer < 0.5 * (layer(u) - soft).abs().mean()
        layer.hard = False
        assert torch.equal(layer(u), soft)  # soft mode does not depend on the levels


def test_levels_keep_the_straight_through_gradient_of_soft_mode():
    torch.manual_seed(0)
    layer = set_hard(ClauseLayer(6, 3, clauses=8, lf=3, levels=3))
    u = fuzzy_inputs(16).requires_grad_()
    layer(u).pow(2).sum().backward()
    assert u.grad.abs().sum() > 0 and layer.include.grad.abs().sum() > 0 and layer.votes.grad.abs().sum() > 0


def test_levels_are_refused_where_a_clause_is_an_and_of_booleans():
    from kdforge.errors import KdforgeError

    for options in ({"strict": True}, {"form": "product"}, {"lf": 1}):
        with pytest.raises(ValueError, match="levels: 1"):
            ClauseLayer(6, 3, levels=2, **options)
        with pytest.raises(ValueError, match="levels: 1"):
            set_levels(ClauseLayer(6, 3, **options), 2)
    with pytest.raises(KdforgeError, match="tm_flat reads each input as one boolean"):
        build_model("tm_flat", input_shape=(1, 6, 5), num_classes=4, levels=2)
    with pytest.raises(ValueError, match="tm_flat reads each input as one boolean"):
        set_levels(trained_looking_tm_flat(), 2)
    with pytest.raises(ValueError, match=r"levels\n.*less than or equal to 8"):
        ClauseLayer(6, 3, levels=9)
    with pytest.raises(ValueError, match=r"levels must be in \[1, 8\]"):
        set_levels(ClauseLayer(6, 3), 9)


def test_rules_of_version_2_still_load_and_evaluate_the_same(tmp_path):
    model = trained_looking_tm_flat()
    rules = model_rules(model)
    old = json.loads(json.dumps(rules))  # as version 2 wrote it: one threshold per input, no levels
    old["version"] = 2
    for layer in old["layers"].values():
        del layer["levels"]
        layer["thresholds"] = [t for (t,) in layer["thresholds"]]
    (tmp_path / "old.json").write_text(json.dumps(old))
    x = torch.randn(40, 1, 6, 5)
    assert np.array_equal(
        PackedTM(load_rules(tmp_path / "old.json")["layers"]["tm"])(x), PackedTM(rules["layers"]["tm"])(x)
    )


def test_contradictory_clauses_are_counted_or_prevented():
    counted, prevented = spread_clause_layer(), spread_clause_layer(exclusive_literals=True)
    assert (
        counted.contradictory().sum() > 0 and layer_rules(counted)["contradictory"] == counted.contradictory().tolist()
    )
    assert not prevented.contradictory().any()
    both = counted.included()[:, :10] & counted.included()[:, 10:]
    keeps = prevented.included()
    positive_wins = prevented.include[:, :10] >= prevented.include[:, 10:]
    assert torch.equal(keeps[:, :10][both], positive_wins[both]) and torch.equal(
        keeps[:, 10:][both], ~positive_wins[both]
    )
    with torch.no_grad():
        assert torch.equal(prevented.include_mask(), keeps.float())  # the forward uses what the rules export


def test_rule_text_says_and_or_or_threshold():
    from kdforge.families.tm.explain import rule_text

    assert rule_text(["u1", "¬u2"], 2, "capacity") == "u1 ∧ ¬u2"
    assert rule_text(["u1", "¬u2", "u4"], 1, "capacity") == "u1 ∨ ¬u2 ∨ u4"
    assert rule_text(["u1", "¬u2", "u4"], 2, "capacity") == "≥ 2 of 3: u1, ¬u2, u4"
    assert rule_text([], 1, "capacity") == "(no literals: never fires)"
    assert rule_text([], 0, "product") == "(no literals: always fires)"
    assert rule_text(["u1", "¬u2"], 4, "capacity", levels=3) == "≥ 4 of 3·2 level tests: u1, ¬u2"


def test_clause_report_prints_each_clause_as_its_rule():
    from kdforge.families.tm.explain import clause_report, literal_names, rule_text

    model = trained_looking_tm_flat()
    with torch.no_grad():
        model.tm.include.copy_(torch.randn_like(model.tm.include) + 0.6)  # many literals: thresholds, contradictions
    report = clause_report(model, {"tm": model.tm}, torch.randn(64, 1, 6, 5), top=32)
    rules = model_rules(model)["layers"]["tm"]
    for j, k in enumerate(rules["min_true"]):
        assert rule_text(literal_names(model.tm, j, model), k, "capacity") in report
    assert f"{sum(rules['contradictory'])} of the active clauses include a literal and its negation" in report
    assert "≥ " in report and "⚠" in report


def test_clause_report_of_leveled_literals_counts_their_level_tests():
    from kdforge.families.tm.explain import clause_report

    layer = spread_clause_layer(levels=2)
    report = clause_report(layer, {"layer": layer}, fuzzy_inputs(64, 10), top=16)
    assert "2 levels: each literal is read as 2 tests (`uI` above 0.25, 0.75" in report
    assert "at least 2·(n − min(n, LF)) + 1 of its 2·n tests hold" in report
    assert any(
        f"≥ {k} of 2·{len(c)} level tests" in report
        for c, k in zip(*map(layer_rules(layer).get, ("clauses", "min_true")))
    )


@pytest.mark.parametrize(
    "options,named",
    [({"clauses": 7}, "clauses"), ({"tau": 0.0}, "tau"), ({"clause_dropout": 1.0}, "clause_dropout")],
)
def test_a_clause_layer_built_directly_checks_its_options_as_a_recipe_does(options, named):
    """Odd clauses used to fail deep inside PyTorch at the first forward: the constructor names the option."""
    with pytest.raises(ValueError, match=named):
        ClauseLayer(8, 3, **options)
    assert ClauseLayer(8, 3, clauses=8, clause_bias=0.05).bias.detach().tolist() == pytest.approx([0.05] * 3)
