"""``mlp_to_tm``: any model with its MLP blocks replaced by TM feed-forward blocks.

``mlp_to_tm(model, example)`` converts a model in place (timm's, Hugging Face's with
``fc1``/``fc2`` MLPs, or ours); the registered model ``mlp_to_tm`` builds a registered
``base`` model and converts it, so the result is a student like any other: built from a
recipe, exported and reloaded from its ``student.json``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.families.tm.blocks import TMFeedForward
from kdforge.families.tm.clause import ClauseLayer, with_options
from kdforge.models import MODELS, build_model
from kdforge.models.layers import FeedForward


def is_mlp(module: nn.Module) -> bool:
    """Our ``FeedForward``, or any module with ``fc1`` and ``fc2`` linear layers (timm's Mlp and its kin)."""
    return isinstance(module, FeedForward) or (
        isinstance(getattr(module, "fc1", None), nn.Linear) and isinstance(getattr(module, "fc2", None), nn.Linear)
    )


def _width(mlp: nn.Module) -> int:
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    if linears[0].in_features != linears[-1].out_features:
        raise KdforgeError(
            f"mlp_to_tm: an MLP mapping {linears[0].in_features} -> {linears[-1].out_features} features cannot become "
            "a TM block (it must keep the width)"
        )
    return linears[0].in_features


def mlp_to_tm(model: nn.Module, example: torch.Tensor, **tm_options: Any) -> list[str]:
    """Replace every MLP block of ``model`` (see :func:`is_mlp`) by a :class:`TMFeedForward`
    of the same width, in place; ``example`` (a batch of inputs) tells each block its token
    count. ``tm_options`` are the TM block's and clause layer's options. Returns the
    replaced module names."""
    mlps = {name: module for name, module in model.named_modules() if name and is_mlp(module)}
    if not mlps:
        raise KdforgeError(
            f"mlp_to_tm: {type(model).__name__} has no MLP blocks (modules with fc1/fc2 linear layers, or kdforge "
            "FeedForward)"
        )
    tokens: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(
            lambda m, args, out, name=name: tokens.__setitem__(name, args[0].shape[-2] if args[0].dim() > 2 else 1)
        )
        for name, m in mlps.items()
    ]
    with torch.no_grad():
        model.eval()(example)
    for hook in hooks:
        hook.remove()
    for name, mlp in mlps.items():
        parent, _, child = name.rpartition(".")
        setattr(
            model.get_submodule(parent) if parent else model,
            child,
            TMFeedForward(_width(mlp), tokens.get(name, 1), **tm_options),
        )
    return list(mlps)


@MODELS.register("mlp_to_tm")
@with_options(ClauseLayer, TMFeedForward)
def mlp_to_tm_model(input_shape: tuple[int, ...], num_classes: int, base: dict[str, Any], **tm: Any) -> nn.Module:
    """Any registered model (``base: {name: vit, ...}``) with its MLP blocks replaced by TM
    feed-forward blocks; every TM option is an option here. With ``student.init_from_teacher``
    and the teacher's own architecture as ``base``, the student starts as the teacher."""
    options = dict(base)
    name = options.pop("name", None)
    if name is None:
        raise ValueError("mlp_to_tm needs base: {name: <a registered model>, ...its options}")
    model = build_model(name, input_shape=input_shape, num_classes=num_classes, **options)
    mlp_to_tm(model, torch.zeros(2, *input_shape), **tm)
    return model
