import pytest
import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.models import build_model
from kdforge.taps import FeatureTap, block_names, build_projector


def test_tap_captures_outputs_and_inputs_by_name():
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16, 12])
    tap = FeatureTap(model, {"mid": "features.1", "pre": "head:input"})
    x = torch.randn(3, 1, 8, 8)
    logits = model(x)
    assert tap.features["mid"].shape == (3, 12)
    assert torch.equal(tap.features["pre"], tap.features["mid"])
    assert torch.equal(model.head(tap.features["pre"]), logits)


def test_output_taps_what_the_model_returns():
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    tap = FeatureTap(model, {"out": "output"})
    assert block_names(model, "output") == ["output"]
    logits = model(torch.randn(3, 1, 8, 8))
    assert tap.features["out"] is logits


def test_wrong_name_fails_at_construction_with_closest_names():
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=2)
    with pytest.raises(KdforgeError, match=r"no module named 'feature.1'.*closest: features.1"):
        FeatureTap(model, {"x": "feature.1"})


def test_wrapper_prefixes_are_stripped():
    model = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5])
    wrapped = nn.DataParallel(model)
    tap = FeatureTap(wrapped, {"h": "module.features.0"})
    model(torch.randn(2, 4))
    assert tap.features["h"].shape == (2, 5)


def test_policy_for_modules_called_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(self.lin(x))

    x = torch.randn(1, 2)
    for policy, pick in (("first", lambda m: m.lin(x)), ("last", lambda m: m(x))):
        model = Twice()
        tap = FeatureTap(model, {"l": "lin"}, policy=policy)
        model(x)
        assert torch.allclose(tap.features["l"], pick(model))
    model = Twice()
    tap = FeatureTap(model, {"l": "lin"}, policy="error")
    with pytest.raises(KdforgeError, match="ran twice"):
        model(x)


def test_projectors_map_shapes_or_refuse():
    assert build_projector("linear", torch.Size([2, 5, 8]), torch.Size([2, 5, 16]))(torch.randn(2, 5, 8)).shape == (
        2,
        5,
        16,
    )
    conv = build_projector("conv1x1", torch.Size([2, 4, 8, 8]), torch.Size([2, 16, 4, 4]))
    assert conv(torch.randn(2, 4, 8, 8)).shape == (2, 16, 4, 4)
    with pytest.raises(KdforgeError, match="use projector 'linear' or 'conv1x1'"):
        build_projector("none", torch.Size([2, 4]), torch.Size([2, 5]))
    with pytest.raises(KdforgeError, match="use 'conv1x1'"):
        build_projector("linear", torch.Size([2, 4, 8, 8]), torch.Size([2, 16, 4, 4]))
