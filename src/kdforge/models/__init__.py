"""Student and teacher architectures, built by name: ``build_model("cnn", ...)``.

A model is a class registered in :data:`MODELS`. ``input_shape`` (without the batch
dimension) and ``num_classes`` come from the dataset; every other constructor keyword
is a recipe option. Add a model in one file: decorate its class with
``@MODELS.register("name")`` and import the file below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from kdforge.errors import KdforgeError
from kdforge.registry import MODELS


def build_model(name: str, *, input_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model; its spec is kept on ``model.kdforge_spec`` for export."""
    MODELS.checked_options(name, options)
    try:
        model = MODELS.build(name, input_shape=tuple(input_shape), num_classes=num_classes, **options)
    except (
        ValueError,
        RuntimeError,
    ) as err:  # constructors (and torch) check their shapes; say which model and what to change
        raise KdforgeError(f"model '{name}' {dict(options)}: {err}") from None
    # a model that read outside weights while being built (embed_tokens' init) names the options
    # that rebuild its shape without them: a saved model then loads without those files
    options = getattr(model, "rebuild_options", options)
    model.kdforge_spec = {
        "name": name,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "options": options,
    }
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "kdforge_spec", None)
    if spec is None:
        raise ValueError("this model was not built by kdforge.build_model, so it has no spec to export")
    return spec


from kdforge.models import (  # noqa: E402,F401  (register the built-in models)
    cnn,
    mlp,
    vit,
)

__all__ = ["MODELS", "build_model", "model_spec"]
