"""Hugging Face transformers models with fewer blocks: the blocks to keep, by index or slice, and the model's
config and weights without the others (what ``hf_causal_lm`` and ``hf_encoder`` students start from)."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from kdforge.errors import KdforgeError


def block_list(model: nn.Module, count: int) -> str:
    """The dotted name of the model's list of ``count`` blocks (``model.layers``, ``transformer.h``,
    ``bert.encoder.layer``, ...): of the module lists that long, the one holding the most parameters."""
    lists = [
        (name, sum(p.numel() for p in module.parameters()))
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count
    ]
    if not lists:
        raise KdforgeError(f"{type(model).__name__} has no list of {count} blocks to take layers from")
    return max(lists, key=lambda item: item[1])[0]


def chosen_layers(layers: list[int] | str, count: int) -> list[int]:
    """Block indices from a list or a Python slice (``"::2"``, ``"0:6"``), checked against ``count`` blocks."""
    if isinstance(layers, str):
        if not re.fullmatch(r"-?\d*(:-?\d*){1,2}", layers):
            raise KdforgeError(f"layers '{layers}' is neither a list of block indices nor a slice such as '::2'")
        parts = [int(p) if p else None for p in layers.split(":")]
        layers = list(range(count))[slice(*parts)]
    if not layers or any(not 0 <= i < count for i in layers) or len(set(layers)) != len(layers):
        raise KdforgeError(f"layers {layers} must be distinct block indices in [0, {count})")
    return list(layers)


def shrunk(full: Any, layers: list[int] | str) -> tuple[Any, dict[str, torch.Tensor]]:
    """(config, weights) of the transformers model ``full`` keeping only the blocks ``layers``, renumbered from 0
    (layer-drop initialisation, as in DistilBERT and Minitron)."""
    config = full.config
    keep = chosen_layers(layers, config.num_hidden_layers)
    blocks = block_list(full, config.num_hidden_layers)
    renumber = {str(old): str(new) for new, old in enumerate(keep)}
    pattern = re.compile(rf"^{re.escape(blocks)}\.(\d+)\.")
    state = {}
    for key, value in full.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif match[1] in renumber:
            state[f"{blocks}.{renumber[match[1]]}.{key[match.end() :]}"] = value
    if isinstance(getattr(config, "layer_types", None), list):  # per-block attention kinds (sliding or full)
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    return config, state


def config_options(config: Any) -> dict[str, Any]:
    """A transformers config as the JSON options that rebuild it (``model_type`` first)."""
    values = config.to_diff_dict()
    values.pop("transformers_version", None)
    return {"model_type": config.model_type, **values}


def new_config(hf_config: dict[str, Any], kinds: str, **defaults: Any) -> Any:
    """A transformers config built from options (``model_type`` and its fields; ``defaults`` where they are not
    given); ``kinds`` names a few model types for the message when ``model_type`` is missing."""
    from transformers import AutoConfig

    options = {**defaults, **hf_config}
    model_type = options.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"hf_config needs model_type ({kinds}, ...)")
    try:
        return AutoConfig.for_model(model_type, **options)
    except ValueError as err:
        raise ValueError(f"hf_config: {err}") from None
