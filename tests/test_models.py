import pytest
import torch

from kdforge.errors import KdforgeError
from kdforge.models import build_model


@pytest.mark.parametrize("shape", [(1, 40), (3, 16, 16)])
@pytest.mark.parametrize(
    "name,options",
    [
        ("mlp", {"hidden": [8]}),
        ("cnn", {"width": 4, "depth": 3}),
        ("vit", {"patch_size": 4, "embed_dim": 16, "depth": 1, "heads": 2}),
    ],
)
def test_models_map_inputs_to_logits_and_learn(name, options, shape):
    model = build_model(name, input_shape=shape, num_classes=7, **options)
    x = torch.randn(4, *shape)
    logits = model(x)
    assert logits.shape == (4, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.kdforge_spec == {"name": name, "input_shape": list(shape), "num_classes": 7, "options": options}


def test_bad_model_options_say_which_model():
    with pytest.raises(KdforgeError, match=r"model 'vit'.*not divisible by patch_size 3"):
        build_model("vit", input_shape=(1, 8, 8), num_classes=10, patch_size=3)
    with pytest.raises(KdforgeError, match=r"unknown model 'resnet'"):
        build_model("resnet", input_shape=(1, 8, 8), num_classes=10)
