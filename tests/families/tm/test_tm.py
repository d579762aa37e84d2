"""Tsetlin-machine clause layers: gradients, τ, what they can learn, hard mode, packed rules."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdforge.families.tm.clause import ClauseLayer, DeepTM, set_hard
from kdforge.families.tm.rules import PackedTM, export_rules, layer_rules, load_rules, model_rules
from kdforge.models import build_model


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


@pytest.mark.parametrize("form", ["capacity", "product"])
@pytest.mark.parametrize("batch", [1, 63, 200])
def test_packed_equals_hard_float_exactly(form, batch):
    model = trained_looking_tm_flat(form=form)
    x = torch.randn(batch, 1, 6, 5, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = model(x).numpy()
    packed = PackedTM(model_rules(model)["layers"]["tm"])
    assert np.array_equal(packed(x), expected)


def test_packed_clause_layer_on_its_own_inputs():
    torch.manual_seed(0)
    layer = set_hard(ClauseLayer(70, 5, clauses=12, lf=3))  # inputs in [0, 1], thresholded at 0.5
    u = fuzzy_inputs(100, 70)
    with torch.no_grad():
        assert np.array_equal(PackedTM(layer_rules(layer))(u), layer(u).numpy())


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


# ----------------------------------------------------------------------------- TM students


@pytest.mark.parametrize(
    "name,shape,options",
    [
        ("tm_flat", (1, 8, 8), {}),
        ("tm_flat", (1, 8, 8), {"backend": "deeptm", "hidden": 16}),
        ("vit_tm", (1, 28, 28), {"patch_size": 7}),
        ("vit_tm", (1, 20, 20), {"pool": "mean", "residual_attention": True, "backend": "deeptm", "norm": "rms"}),
        ("vit_tm", (1, 40), {"patch_size": 5}),
        ("swin_tm", (1, 32, 32), {}),
        ("swin_tm", (3, 27, 27), {"window": 3}),
        ("swin_tm", (1, 13, 11), {"window": 4, "depths": (1, 1, 1), "heads": (1, 2, 2)}),
        ("swin_tm", (1, 9, 9), {"window": 7, "patch_size": 1}),
        ("resnet_tm", (1, 15, 15), {}),
        ("pyramid_tm", (1, 16, 16), {}),
        ("vit_tm_tiny", (1, 32, 32), {}),
        ("swin_tm_tiny", (1, 32, 32), {}),
        ("resnet_tm_tiny", (3, 17, 17), {}),
    ],
)
def test_tm_students_shapes_and_include_gradients(name, shape, options):
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=7, clauses=16, **options)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    out.sum().backward()
    includes = [p for n, p in model.named_parameters() if "include" in n]
    assert includes and all((p.grad != 0).any() for p in includes)


def test_tm_block_options_all_change_the_model():
    """Each option of the TM feed-forward block builds something and runs."""
    shape = (1, 16, 16)
    base = dict(input_shape=shape, num_classes=3, clauses=16, embed_dim=32, heads=2, depth=2)
    torch.manual_seed(0)
    x = torch.randn(2, *shape)
    options = [
        {"ff_mix": "linear"},
        {"ff_mix": "linear_depthwise"},
        {"bitwise_mix": True},
        {"routing": True},
        {"revote": True},
        {"bypass": 0.5},
        {"gating": "geglu"},
        {"gating": "swiglu"},
        {"learn_tau": True, "tau_ema": 0.9},
        {"diag_heads": True},
    ]
    plain = sum(p.numel() for p in build_model("vit_tm", **base).parameters())
    for option in options:
        model = build_model("vit_tm", **base, **option)
        assert model(x).shape == (2, 3)
        assert sum(p.numel() for p in model.parameters()) > plain, option


def test_swin_window_mask_keeps_regions_and_padding_apart():
    from kdforge.families.tm.transformer import window_mask

    assert window_mask(8, 8, 8, 8, 4, 0, torch.device("cpu")) is None
    mask = window_mask(6, 6, 8, 8, 4, 2, torch.device("cpu"))  # 6×6 padded to 8×8, shifted by 2
    assert mask.shape == (4, 16, 16)
    assert (mask.diagonal(dim1=1, dim2=2) == 0).all()  # a token always sees itself
    assert (mask < 0).any(dim=-1).any()
    unshifted = window_mask(6, 6, 8, 8, 4, 0, torch.device("cpu"))
    # in the first window (rows 0-3, cols 0-3) nothing is padding: no masking there
    assert (unshifted[0] == 0).all() and (unshifted[-1] < 0).any()


def test_residual_attention_carries_scores():
    torch.manual_seed(0)
    model = build_model("vit_tm", input_shape=(1, 16, 16), num_classes=3, clauses=16, residual_attention=True, depth=3)
    seen = []
    for block in model.blocks:
        block.attn.register_forward_hook(lambda m, args, out: seen.append((args[2] if len(args) > 2 else None, out[1])))
    model(torch.randn(2, 1, 16, 16))
    assert seen[0][0] is None and torch.equal(seen[1][0], seen[0][1]) and torch.equal(seen[2][0], seen[1][1])


def test_presets_rebuild_from_their_spec_and_stay_overridable(tmp_path):
    from kdforge.export import load_model, save_model

    torch.manual_seed(0)
    model = build_model("swin_tm_tiny", input_shape=(1, 16, 16), num_classes=4, clauses=8, window=2)
    assert model.stages[0].blocks[0].window == 2 and model.stages[0].blocks[0].ffn.clause_layer.clauses == 8
    save_model(model, tmp_path / "student")
    again = load_model(tmp_path / "student.safetensors")
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(model.eval()(x), again.eval()(x))


def test_tm_options_are_checked_like_any_model_option():
    from kdforge.errors import KdforgeError

    with pytest.raises(KdforgeError, match="model 'vit_tm': ff_mix"):
        build_model("vit_tm", input_shape=(1, 16, 16), num_classes=3, ff_mix="conv")
    with pytest.raises(KdforgeError, match="unknown option 'clauss' \\(did you mean 'clauses'\\?\\)"):
        build_model("vit_tm_tiny", input_shape=(1, 16, 16), num_classes=3, clauss=8)


def test_swin_stage_layout_is_written_in_a_recipe(invoke, tiny_recipe, tmp_path, capsys):
    import yaml

    recipe = {
        **tiny_recipe,
        "student": {
            "model": {"name": "swin_tm", "embed_dim": 8, "depths": [1, 1], "heads": [1, 2], "window": 2, "clauses": 8}
        },
    }
    (tmp_path / "swin.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("check", tmp_path / "swin.yaml") == 0, capsys.readouterr().out
    assert (
        invoke("check", tmp_path / "swin.yaml", "student.model.depths=[1, 1, 1]", "student.model.heads=[1, 1, 2]") == 0
    ), capsys.readouterr().out
    assert build_model(
        "swin_tm", input_shape=(1, 8, 8), num_classes=3, depths=[1, 1], heads=[1, 2], window=2
    ).kdforge_spec["options"]["depths"] == [1, 1]


def test_hard_transformer_equals_its_exported_clause_layers():
    """In hard mode every clause layer of a ViT-TM computes exactly what its rules compute."""
    torch.manual_seed(0)
    model = set_hard(
        build_model("vit_tm", input_shape=(1, 16, 16), num_classes=3, clauses=16, embed_dim=32, heads=2).eval()
    )
    rules = model_rules(model)["layers"]
    checked = []

    def compare(name):
        def hook(layer, args, out):
            assert np.array_equal(
                PackedTM(rules[name])(args[0].reshape(-1, layer.in_features)),
                out.reshape(-1, layer.out_features).numpy(),
            )
            checked.append(name)

        return hook

    for name, module in model.named_modules():
        if isinstance(module, ClauseLayer):
            module.register_forward_hook(compare(name))
    with torch.no_grad():
        model(torch.randn(5, 1, 16, 16))
    assert sorted(checked) == sorted(rules) and len(rules) == 2


def test_tm_flat_run_on_booleanized_digits_reports_hard_mode_and_exports_rules(tiny_recipe, invoke, tmp_path):
    from kdforge import Recipe, load_student, run
    from kdforge.data import recipe_data

    tiny_recipe["data"]["booleanize"] = {"method": "thermometer", "levels": 2}
    tiny_recipe["student"] = {"model": {"name": "tm_flat", "clauses": 32, "lf": 4}}
    tiny_recipe["train"]["baseline"] = False
    recipe = Recipe.model_validate(tiny_recipe)
    data = recipe_data(recipe.data, recipe.seed)
    assert data.input_shape == (2, 8, 8) and set(data.train.x.unique().tolist()) == {-1.0, 1.0}
    result = run(recipe)
    entry = result.results["student"]
    assert 0.0 <= entry["test_hard"]["accuracy"] <= 1.0
    (usage,) = entry["clause_usage"].values()  # the final clause usage, in results.json
    assert usage["clauses"] == usage["active"] == 32 and 0 < usage["used"] <= 32 and 0.0 < usage["firing"] <= 1.0
    assert "in hard mode" in (result.run_dir / "report.md").read_text()
    assert invoke("export", result.run_dir, "--format", "tm-rules") == 0
    rules = load_rules(result.run_dir / "student.tm-rules.json")
    assert rules["input_bits"]["levels"] == 2 and np.asarray(rules["input_bits"]["thresholds"]).shape == (2, 1, 8, 8)
    student = set_hard(load_student(result.run_dir))
    with torch.no_grad():
        assert np.array_equal(PackedTM(rules["layers"]["tm"])(data.test.x), student(data.test.x).numpy())
    assert invoke("explain", result.run_dir, "--samples", 1) == 0
    assert (
        "x[1," in (result.run_dir / "explain" / "clauses.md").read_text()
    )  # literals name input positions and thresholds


def test_booleanize_thresholds_come_from_the_training_split():
    from kdforge.data.booleanize import booleanize, fit_thresholds

    x = torch.arange(10.0).view(10, 1)
    t = fit_thresholds(x, "thermometer", 3)
    assert torch.allclose(t.flatten(), torch.quantile(x.flatten(), torch.tensor([0.25, 0.5, 0.75])))
    bits = booleanize(torch.tensor([[0.0], [5.0], [9.0]]), t)
    assert bits.tolist() == [[-1, -1, -1], [1, 1, -1], [1, 1, 1]]
    assert fit_thresholds(x, "thresholds", 7).shape == (1, 1)


def _correlate(image, kernel):
    """Hand-written 'same' correlation with edge replication, one 2-D channel."""
    padded = np.pad(image, 1, mode="edge")
    h, w = image.shape
    return np.array([[(padded[i : i + 3, j : j + 3] * kernel).sum() for j in range(w)] for i in range(h)])


def test_augmented_and_convolutional_features_match_their_filters():
    from kdforge.data.booleanize import derived_channels, feature_maps
    from kdforge.errors import KdforgeError

    x = torch.randn(2, 2, 5, 6)
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 4
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]]) / 4
    conv = feature_maps(x, "convolutional")
    assert derived_channels("convolutional", 2) == [
        "input",
        "sobel_x",
        "sobel_y",
        "laplacian",
        "diagonal",
        "antidiagonal",
    ] and conv.shape == (2, 12, 5, 6)
    image = x[1, 1].numpy()
    assert torch.equal(conv[:, :2], x)  # the inputs come first, then one group of channels per filter
    assert np.allclose(conv[1, 3].numpy(), _correlate(image, sobel), atol=1e-5)
    assert np.allclose(conv[1, 5].numpy(), _correlate(image, sobel.T), atol=1e-5)
    assert np.allclose(conv[1, 7].numpy(), _correlate(image, laplacian), atol=1e-5)
    augmented = feature_maps(x, "augmented")
    assert augmented.shape == (2, 6, 5, 6)
    assert np.allclose(augmented[1, 3].numpy(), image - _correlate(image, np.full((3, 3), 1 / 9)), atol=1e-5)
    assert np.allclose(
        augmented[1, 5].numpy(), np.hypot(_correlate(image, sobel), _correlate(image, sobel.T)), atol=1e-5
    )
    sequence = torch.arange(8.0).view(1, 1, 8) ** 2
    assert feature_maps(sequence, "augmented")[0, 2, 1:-1].tolist() == [
        2.0 * i for i in range(1, 7)
    ]  # |central difference| of i² is 2i
    assert feature_maps(sequence, "convolutional").shape == (1, 4, 8)
    with pytest.raises(KdforgeError, match="features 'augmented' filters images"):
        feature_maps(torch.randn(3, 10), "augmented")


def test_booleanized_features_from_a_recipe_are_cached_reused_and_exported(
    tiny_recipe, invoke, tmp_path, monkeypatch, capsys
):
    import yaml

    from kdforge import load_student
    from kdforge.data import booleanize as module
    from kdforge.data import build_dataset

    cache = tmp_path / "bits"
    tiny_recipe["data"]["booleanize"] = {
        "method": "thermometer",
        "levels": 2,
        "features": "augmented",
        "cache": str(cache),
    }
    tiny_recipe["student"] = {"model": {"name": "tm_flat", "clauses": 16, "lf": 4}}
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    path = tmp_path / "bits.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("train", path) == 0
    (stored,) = cache.glob("booleanized-*.npz")
    first = json.loads(next((tmp_path / "runs").glob("tiny-*/results.json")).read_text())["student"]["test"]

    def refuse(*args):
        raise AssertionError("the cached bits should have been used")

    monkeypatch.setattr(module, "feature_maps", refuse)
    assert invoke("train", path) == 0  # the second run reads the bits back
    monkeypatch.undo()
    runs = sorted((tmp_path / "runs").glob("tiny-*"))
    assert json.loads((runs[1] / "results.json").read_text())["student"]["test"] == first

    assert invoke("export", runs[1], "--format", "tm-rules") == 0
    rules = load_rules(runs[1] / "student.tm-rules.json")
    bits = rules["input_bits"]
    assert bits["features"] == "augmented" and bits["channels"] == ["input", "local_contrast", "gradient_magnitude"]
    raw = build_dataset("digits", seed=0, val_fraction=0.15, test_fraction=0.2).test.x  # the recipe's split
    inputs = module.booleanize(module.feature_maps(raw, bits["features"]), torch.tensor(bits["thresholds"]))
    student = set_hard(load_student(runs[1]))
    with torch.no_grad():  # the rules, fed the documented pipeline on raw data, are the student
        assert np.array_equal(PackedTM(rules["layers"]["tm"])(inputs), student(inputs).numpy())

    stored.write_bytes(b"not an archive")
    capsys.readouterr()
    assert invoke("train", path) == 2
    said = capsys.readouterr().out.replace("\n", "")
    assert str(stored) in said and "truncated or damaged" in said
    module.save_npz(
        stored,
        {
            "train": np.zeros(3, np.uint8),
            "val": np.zeros(3, np.uint8),
            "test": np.zeros(3, np.uint8),
            "shape": np.array([6, 8, 8]),
        },
    )
    assert invoke("train", path) == 2
    assert "delete it and it is rebuilt" in capsys.readouterr().out.replace("\n", "")


# ----------------------------------------------------------------------------- clause-aware losses


def tm_distiller(losses, diag_heads=True):
    from kdforge.distiller import Distiller
    from kdforge.losses import build_losses
    from kdforge.teachers import Teacher

    torch.manual_seed(0)
    student = build_model(
        "vit_tm", input_shape=(1, 8, 8), num_classes=4, embed_dim=16, depth=2, heads=2, clauses=8, diag_heads=diag_heads
    )
    teacher = build_model("cnn", input_shape=(1, 8, 8), num_classes=4, width=8, depth=2)
    x = torch.randn(6, 1, 8, 8)
    return (
        Distiller(student, Teacher(teacher), build_losses(losses), x[:2]).train(),
        student,
        teacher,
        x,
        torch.arange(6) % 4,
    )


def test_block_ce_is_the_mean_ce_of_the_block_heads():
    distiller, student, _, x, y = tm_distiller([{"name": "block_ce"}])
    heads = {}
    for name in ("blocks.0.diag_head", "blocks.1.diag_head"):
        dict(student.named_modules())[name].register_forward_hook(
            lambda m, a, out, name=name: heads.__setitem__(name, out)
        )
    out = distiller(x, y)
    expected = (F.cross_entropy(heads["blocks.0.diag_head"], y) + F.cross_entropy(heads["blocks.1.diag_head"], y)) / 2
    torch.testing.assert_close(out.parts["block_ce"], expected)
    assert set(out.logs) >= {"block_ce/blocks.0", "block_ce/blocks.1"}


def test_clause_reg_matches_its_formula_and_logs_usage():
    distiller, student, _, x, y = tm_distiller(
        [{"name": "clause_reg", "sparsity": 0.5, "budget": 3.0, "budget_weight": 2.0}]
    )
    out = distiller(x, y)
    layers = [m for m in student.modules() if isinstance(m, ClauseLayer)]
    expected = []
    for layer in layers:
        p = torch.sigmoid(layer.include / 0.25)
        expected.append(0.5 * p.mean() + 2.0 * torch.relu(p.sum(1) - 3.0).mean() / 3.0)
    torch.testing.assert_close(out.parts["clause_reg"], torch.stack(expected).mean())
    assert 0.0 <= out.logs["clause_usage/blocks.0.ffn.tm"].item() <= 1.0
    out.loss.backward()
    assert all((layer.include.grad != 0).all() for layer in layers)


def test_clause_align_is_a_kl_from_projected_teacher_features_to_clause_scores():
    distiller, student, teacher, x, y = tm_distiller(
        [{"name": "clause_align", "teacher": "features", "temperature": 2.0}]
    )
    term = distiller.terms[0]
    assert [s for s, _ in term.pairs] == ["blocks.0.ffn.tm.activations", "blocks.1.ffn.tm.activations"]
    seen = {}
    for model, names in ((student, [s for s, _ in term.pairs]), (teacher, [t for _, t in term.pairs])):
        for name in names:
            dict(model.named_modules())[name].register_forward_hook(
                lambda m, a, out, name=name: seen.__setitem__(name, out)
            )
    out = distiller(x, y)
    expected = []
    for i, (s_name, t_name) in enumerate(term.pairs):
        s = seen[s_name].mean(1)  # clause scores [B, N, C] averaged over tokens
        t = term.projectors[i](seen[t_name].mean((2, 3)))  # CNN map [B, C, H, W] averaged over positions
        expected.append(
            (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(s / 2, -1))).sum(-1).mean() * 4
        )
    torch.testing.assert_close(out.parts["clause_align"], torch.stack(expected).mean())
    out.loss.backward()
    assert all((m.include.grad != 0).any() for m in student.modules() if isinstance(m, ClauseLayer))


def test_clause_terms_need_a_tm_student():
    from kdforge.errors import KdforgeError

    with pytest.raises(KdforgeError, match="diag_heads: true"):
        tm_distiller([{"name": "block_ce"}], diag_heads=False)


def test_gradient_checkpointing_covers_every_stage_of_swin_tm_and_changes_no_gradient():
    import functools

    from kdforge.machine import checkpoint_blocks

    torch.manual_seed(0)
    plain = build_model("swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=16, depths=(1, 2), heads=(2, 2))
    checkpointed = build_model(
        "swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=16, depths=(1, 2), heads=(2, 2)
    )
    checkpointed.load_state_dict(plain.state_dict())
    checkpoint_blocks(checkpointed)
    blocks = [b for stage in checkpointed.stages for b in stage.blocks]
    assert len(blocks) == 3 and all(isinstance(b.forward, functools.partial) for b in blocks)
    x = torch.randn(2, 1, 16, 16)
    for model in (plain, checkpointed):
        model(x).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_feature_terms_tap_tm_blocks_by_their_hidden_states(invoke, tiny_recipe, tmp_path, capsys):
    import yaml

    tiny_recipe.update(
        data={"name": "digits", "image_size": 16, "batch_size": 64},
        teacher={
            "source": "train",
            "model": {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 2, "heads": 2},
            "train": {"epochs": 1},
        },
        student={"model": {"name": "vit_tm_tiny", "patch_size": 4, "clauses": 8}},
        losses=[
            {"name": "ce"},
            {"name": "hint", "student": "blocks.0", "teacher": "blocks.0", "projector": "linear"},
            {"name": "cka", "student": "blocks", "teacher": "auto", "mapping": "uniform"},
            {"name": "fdd", "student": "blocks", "teacher": "blocks", "mapping": "uniform"},
        ],
    )
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("check", tmp_path / "tm.yaml") == 0, capsys.readouterr().out
    out = " ".join(capsys.readouterr().out.split())
    assert all(f"{term} = " in out for term in ("hint", "cka", "fdd"))
    assert (
        invoke("check", tmp_path / "tm.yaml", "losses.2.mapping=explicit") == 2
    )  # 'blocks' itself never runs: said so
    assert "never ran in a forward pass" in capsys.readouterr().out


def test_clause_usage_counts_what_fires_in_hard_mode():
    from kdforge.families.tm.clause import ClauseLayer, clause_usage, hard_mode

    torch.manual_seed(0)
    layer = ClauseLayer(6, 3, clauses=8, lf=2)
    layer.clause_mask[:2] = False  # two clauses switched off, as auto_clause does
    x = torch.rand(40, 6)
    with torch.no_grad(), hard_mode(layer):
        fires = (layer.clause_scores(x) * layer.clause_mask) > 0  # [40, 8], by the formula
    (usage,) = clause_usage(torch.nn.Sequential(layer), [(x[:25], None), (x[25:], None)]).values()
    assert usage["active"] == 6 and usage["used"] == int(fires.any(0).sum())
    assert usage["firing"] == pytest.approx(float(fires.float().sum()) / 40 / 6)
    assert not layer.hard and clause_usage(torch.nn.Linear(2, 2), [(x, None)]) == {}


def test_mlp_ratio_sizes_each_tm_feed_forward_from_its_token_width(invoke, tiny_recipe, tmp_path, capsys):
    import yaml

    from kdforge.errors import KdforgeError

    swin = build_model(
        "swin_tm",
        input_shape=(1, 16, 16),
        num_classes=3,
        embed_dim=8,
        depths=[1, 1],
        heads=[1, 2],
        window=2,
        clauses=8,
        mlp_ratio=1.5,
    )
    widths = {n: m.out_features for n, m in swin.named_modules() if n.endswith("ffn.proj_in")}
    assert widths == {
        "stages.0.blocks.0.ffn.proj_in": 12,
        "stages.1.blocks.0.ffn.proj_in": 24,
    }  # 1.5 x 8, then 1.5 x 16
    with pytest.raises(KdforgeError, match="literals .* or mlp_ratio .*, not both"):
        build_model("vit_tm", input_shape=(1, 16, 16), num_classes=3, literals=8, mlp_ratio=2.0)
    recipe = {
        **tiny_recipe,
        "student": {"model": {"name": "vit_tm_tiny", "patch_size": 4, "clauses": 8, "mlp_ratio": 2.0}},
    }
    (tmp_path / "tm.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("check", tmp_path / "tm.yaml") == 0, capsys.readouterr().out


def test_swin_stage_widths_and_clause_budgets_per_stage_from_a_recipe(invoke, tiny_recipe, tmp_path, capsys):
    import yaml

    from kdforge.errors import KdforgeError

    model = build_model(
        "swin_tm",
        input_shape=(1, 16, 16),
        num_classes=3,
        embed_dim=[12, 20],
        depths=[1, 1],
        heads=[2, 4],
        window=2,
        clauses=[8, 16],
    )
    layers = {n: (m.in_features, m.clauses) for n, m in model.named_modules() if isinstance(m, ClauseLayer)}
    assert layers == {
        "stages.0.blocks.0.ffn.tm": (12, 8),
        "stages.1.blocks.0.ffn.tm": (20, 16),
    }  # widths that do not double
    assert model.stages[0].downsample.reduction.out_features == 20 and model.head.in_features == 20
    doubled = build_model(
        "swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=8, depths=[1, 1], heads=[1, 2], window=2, clauses=8
    )
    assert [m.in_features for m in doubled.modules() if isinstance(m, ClauseLayer)] == [
        8,
        16,
    ]  # one number: the width doubles
    with pytest.raises(KdforgeError, match="one number or one per stage"):
        build_model(
            "swin_tm", input_shape=(1, 16, 16), num_classes=3, embed_dim=[8, 16, 32], depths=[1, 1], heads=[1, 2]
        )
    recipe = {
        **tiny_recipe,
        "student": {
            "model": {
                "name": "swin_tm",
                "embed_dim": [8, 12],
                "clauses": [8, 16],
                "depths": [1, 1],
                "heads": [1, 2],
                "window": 2,
            }
        },
    }
    (tmp_path / "swin.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("check", tmp_path / "swin.yaml") == 0, capsys.readouterr().out


def test_clause_bias_false_is_the_classic_machine_votes_alone_and_its_rules_say_so(tiny_recipe, invoke, tmp_path):
    import yaml

    from kdforge import load_student

    layer = ClauseLayer(6, 3, clauses=4, clause_bias=False)
    assert "bias" not in dict(layer.named_parameters()) and torch.equal(layer.bias, torch.zeros(3))
    u = torch.rand(5, 6)
    assert torch.allclose(layer(u), layer.scale * (layer.clause_scores(u) @ layer.vote_matrix()))
    tiny_recipe["student"] = {"model": {"name": "tm_flat", "clauses": 16, "lf": 4, "clause_bias": False}}
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    (tmp_path / "classic.yaml").write_text(yaml.safe_dump(tiny_recipe))
    assert invoke("train", tmp_path / "classic.yaml") == 0
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    student = set_hard(load_student(run_dir))
    assert torch.equal(student.tm.bias, torch.zeros(10))  # training never gave it one
    assert invoke("export", run_dir, "--format", "tm-rules") == 0
    rules = load_rules(run_dir / "student.tm-rules.json")
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        assert np.array_equal(PackedTM(rules["layers"]["tm"])(x), student(x).numpy())


def test_the_rule_tools_old_import_path_still_works():
    import kdforge.families.tm as family
    import kdforge.tm as old

    assert old.PackedTM is family.PackedTM and old.load_rules is family.load_rules
