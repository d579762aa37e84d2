"""Tsetlin-machine students (tm_flat, ViT-TM, Swin-TM): shapes, options, presets, hard mode in a run,
booleanised inputs."""

import json

import numpy as np
import pytest
import torch

from kdforge.families.tm.clause import ClauseLayer, clause_layers, set_hard
from kdforge.families.tm.rules import PackedTM, load_rules, model_rules
from kdforge.models import build_model

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


@pytest.mark.parametrize("name", ["vit_tm", "swin_tm_tiny", "resnet_tm_tiny"])
def test_feed_forward_ablations_replace_every_tm_block(name):
    """feed_forward: mlp swaps each TM block for an MLP of about its size; none for nothing at all."""
    from kdforge.families.tm.blocks import TMFeedForward
    from kdforge.families.tm.transformer import NoFeedForward
    from kdforge.models.layers import FeedForward

    shape, sizes = (1, 16, 16), {}
    for kind, block in [("tm", TMFeedForward), ("mlp", FeedForward), ("none", NoFeedForward)]:
        torch.manual_seed(0)
        model = build_model(name, input_shape=shape, num_classes=3, feed_forward=kind)
        assert model(torch.randn(2, *shape)).shape == (2, 3)
        blocks = [m for m in model.modules() if isinstance(m, (TMFeedForward, FeedForward, NoFeedForward))]
        assert blocks and all(isinstance(m, block) for m in blocks)
        sizes[kind] = sum(p.numel() for p in model.parameters())
    assert abs(sizes["mlp"] - sizes["tm"]) < 0.02 * sizes["tm"] and sizes["none"] < 0.9 * sizes["tm"]
    assert not clause_layers(build_model(name, input_shape=shape, num_classes=3, feed_forward="none"))


def test_literal_gain_sharpens_the_clause_inputs():
    from kdforge.families.tm.blocks import TMFeedForward

    torch.manual_seed(0)
    block = TMFeedForward(16, 5, clauses=8, literal_gain=1.0)
    x = torch.randn(2, 5, 16)
    plain = block.literals(x)
    block.literal_gain = 4.0
    sharp = block.literals(x)
    assert torch.allclose(sharp, torch.sigmoid(4.0 * torch.logit(plain)), atol=1e-5)
    assert (sharp - 0.5).abs().mean() > 2 * (plain - 0.5).abs().mean()


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


@pytest.mark.parametrize(
    "name,options",
    [
        ("vit_tm", {"embed_dim": 32, "heads": 2, "clauses": 16}),
        ("vit_tm", {"embed_dim": 32, "heads": 2, "clauses": 16, "routing": True, "backend": "deeptm"}),
        ("vit_tm", {"embed_dim": 32, "heads": 2, "clauses": 16, "levels": 3}),
        ("vit_tm", {"embed_dim": 32, "heads": 2, "clauses": 16, "routing": True, "levels": 4}),
        ("swin_tm_tiny", {}),
        ("swin_tm_tiny", {"levels": 2}),
        ("tm_flat", {"clauses": 32}),
    ],
)
def test_packed_model_gives_the_hard_mode_logits(name, options):
    """A trained-looking student with its clause layers packed computes exactly its hard-mode logits."""
    from kdforge.families.tm.packed import PackedClauseLayer, packed_model

    torch.manual_seed(0)
    model = build_model(name, input_shape=(1, 16, 16), num_classes=5, **options).eval()
    with torch.no_grad():
        for layer in clause_layers(model):
            layer.votes.normal_(0, 2)
            layer.include.add_(torch.randn_like(layer.include))
        for m in model.modules():
            if hasattr(m, "route") and m.route is not None:
                m.route.weight.normal_()
    x = torch.randn(33, 1, 16, 16)
    packed = packed_model(model)
    assert not clause_layers(packed) and any(isinstance(m, PackedClauseLayer) for m in packed.modules())
    with torch.inference_mode():
        expected = set_hard(model)(x)
        assert torch.equal(packed(x), expected)
        assert torch.equal(packed(x[:1]), set_hard(model)(x[:1]))


def test_a_run_says_when_its_rules_lose_to_its_soft_mode_and_what_to_do():
    from kdforge.families.tm.hooks import TsetlinMachines

    notes = TsetlinMachines().notes
    lose = {"test": {"accuracy": 0.97}, "test_hard": {"accuracy": 0.95}, "levels": 1, "gradable": True}
    assert "rules lose 2.00 points" in notes("student", lose)[-1] and "`levels: 8`" in notes("student", lose)[-1]
    for at_most_one in ({"gradable": False}, {"levels_chosen": {"levels": 1, "val_soft": 0.9, "val_hard": {"1": 0.8}}}):
        assert "levels" not in notes("student", {**lose, **at_most_one})[-1]  # strict, or one level chosen already
    leveled = notes("student", {**lose, "levels": 4})[-1]
    assert "rules lose 2.00 points" in leveled and "levels" not in leveled and "hard_finish" in leveled
    assert len(notes("student", {"test": {"accuracy": 0.97}, "test_hard": {"accuracy": 0.966}})) == 1


class LevelSession:
    """What ``choose_levels`` reads of a session: the recipe's student section, a validation split, and an evaluate
    whose accuracy depends only on the student's mode and levels (``hard``: level -> accuracy)."""

    def __init__(self, student: dict, soft: float, hard: dict[int, float]):
        from kdforge.config.student import StudentConfig

        self.recipe = type("Recipe", (), {"student": StudentConfig.model_validate(student)})()
        self.val, self.soft, self.hard, self.asked = object(), soft, hard, []

    def evaluate(self, model, batches, description):
        assert batches is self.val  # chosen on validation, never on test
        (layer, *_) = clause_layers(model)
        self.asked.append(layer.levels if layer.hard else "soft")
        return {"accuracy": self.hard[layer.levels] if layer.hard else self.soft}


def tiny_vit_tm(**options):
    torch.manual_seed(0)
    return build_model("vit_tm", input_shape=(1, 8, 8), num_classes=5, embed_dim=16, heads=2, clauses=8, **options)


@pytest.mark.parametrize(
    "hard,chosen,asked",
    [
        ({1: 0.880, 2: 0.898, 3: 0.899, 4: 0.9, 8: 0.9}, 2, ["soft", 1, 2]),  # 2: the first within 0.25 points
        ({1: 0.90, 2: 0.5, 3: 0.5, 4: 0.5, 8: 0.5}, 1, ["soft", 1]),
        ({1: 0.80, 2: 0.85, 3: 0.86, 4: 0.86, 8: 0.84}, 3, ["soft", 1, 2, 3, 4, 8]),  # none within: the best, fewest
    ],
)
def test_a_run_reads_its_literals_at_the_fewest_levels_that_keep_its_validation_score(hard, chosen, asked, tmp_path):
    from kdforge.export import load_model, save_model
    from kdforge.families.tm.hooks import choose_levels

    model, session = tiny_vit_tm(), LevelSession({"model": {"name": "vit_tm"}}, 0.9, hard)
    found = choose_levels(session, "distill", model)
    assert found == {"levels": chosen, "val_soft": 0.9, "val_hard": {str(n): hard[n] for n in asked[1:]}}
    assert session.asked == asked and {layer.levels for layer in clause_layers(model)} == {chosen}
    assert not any(layer.hard for layer in clause_layers(model))  # back in soft mode
    # the choice goes with the saved student
    loaded = load_model(save_model(model, tmp_path / "student"))
    assert {layer.levels for layer in clause_layers(loaded)} == {chosen}


@pytest.mark.parametrize(
    "student,model",
    [
        ({"model": {"name": "vit_tm"}, "choose_levels": False}, lambda: tiny_vit_tm()),
        ({"model": {"name": "vit_tm", "levels": 1}}, lambda: tiny_vit_tm(levels=1)),  # the user's own choice
        ({"model": {"name": "vit_tm", "strict": True}}, lambda: tiny_vit_tm(strict=True)),  # ANDs of booleans
        ({"model": {"name": "tm_flat"}}, lambda: build_model("tm_flat", input_shape=(8,), num_classes=3, clauses=8)),
        ({"model": {"name": "mlp"}}, lambda: build_model("mlp", input_shape=(8,), num_classes=3)),
    ],
)
def test_levels_are_not_chosen_where_there_is_nothing_to_choose(student, model):
    from kdforge.families.tm.hooks import choose_levels

    session = LevelSession(student, 0.9, dict.fromkeys((1, 2, 3, 4, 8), 0.5))
    assert choose_levels(session, "distill", model()) is None and session.asked == []


def test_a_run_saves_and_reports_the_levels_it_chose(tiny_recipe, monkeypatch):
    from kdforge import Recipe, load_student, run
    from kdforge.families.tm import hooks

    monkeypatch.setattr(hooks, "LEVEL_CHOICES", (1, 3))
    monkeypatch.setattr(hooks, "LEVEL_TOLERANCE", -1.0)  # no level keeps the soft score: the better of the two
    tiny_recipe["student"] = {"model": {"name": "vit_tm", "patch_size": 4, "embed_dim": 16, "heads": 2, "clauses": 8}}
    tiny_recipe["train"]["baseline"] = False
    result = run(Recipe.model_validate(tiny_recipe))
    entry = result.results["student"]
    chosen = entry["levels_chosen"]
    assert set(chosen["val_hard"]) == {"1", "3"} and entry["levels"] == chosen["levels"]
    assert chosen["levels"] == max((1, 3), key=lambda n: chosen["val_hard"][str(n)])
    assert {layer.levels for layer in clause_layers(load_student(result.run_dir))} == {chosen["levels"]}
    assert f"hard at 1: {100 * chosen['val_hard']['1']:.2f}%" in (result.run_dir / "report.md").read_text()


@pytest.mark.parametrize(
    "student,says",
    [
        ({}, True),
        ({"choose_levels": False}, False),
        ({"hard_finish": 1}, False),  # ends in hard mode at its own levels
    ],
)
def test_check_says_when_a_run_will_choose_its_levels(tiny_recipe, student, says):
    import io

    from rich.console import Console

    from kdforge import Recipe
    from kdforge.check import check

    tiny_recipe["student"] = {
        "model": {"name": "vit_tm", "patch_size": 4, "embed_dim": 16, "heads": 2, "clauses": 8},
        **student,
    }
    out = io.StringIO()
    check(Recipe.model_validate(tiny_recipe), Console(file=out, width=300))
    said = "after training: its rules' levels are chosen on validation (the fewest of 1, 2, 3, 4, 8 within 0.25 points"
    assert (said in out.getvalue()) is says
