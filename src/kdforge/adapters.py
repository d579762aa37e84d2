"""Low-rank adapters on a student (``student.peft``): LoRA (Hu et al. 2021) or DoRA (Liu et al. 2024) through the
``peft`` library.

The student is built as the recipe says (a pretrained model, its layer-dropped teacher, a new model), then each
chosen linear layer gets a pair of low-rank matrices beside its weight (``peft.inject_adapter_in_model``, on any
PyTorch model); the student's own weights are frozen, so only the adapters train and the optimiser holds state
for them alone. Checkpoints and the best weights hold the adapters only: the rest is rebuilt from the recipe. When
training ends the adapters are merged into the weights (:func:`merge`): the saved student is a plain model of its
own class, with the adapted model's outputs; the adapters themselves are kept beside it
(``student_adapter.safetensors``), from which a family writes its ecosystem's adapter folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from kdforge.errors import ConfigError, KdforgeError

if TYPE_CHECKING:
    from kdforge.config.student import PeftConfig

#: what marks an adapter's parameters in a state dict (``...q_proj.lora_A.default.weight``)
ADAPTER = ".lora_"


def adapt(model: nn.Module, cfg: PeftConfig) -> nn.Module:
    """``model`` with LoRA adapters on ``cfg.target_modules`` (in place), everything else frozen."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise KdforgeError("student.peft needs the peft library: pip install 'kdforge[peft]'") from None
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if cfg.target_modules == "all-linear":
        targets = linear[:-1]  # the last one is the output head, which stays as it is
    else:
        targets = list(cfg.target_modules)
        if missing := [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in linear)]:
            ends = sorted({name.rpartition(".")[2] for name in linear})
            raise ConfigError(
                f"student.peft.target_modules: {', '.join(missing)} match no linear layer of the student (its "
                f"layers end in: {', '.join(ends[:12])}{' ...' if len(ends) > 12 else ''})"
            )
    if not targets:
        raise ConfigError("student.peft: the student has no linear layer to adapt but its output head")
    config = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, use_dora=cfg.method == "dora"
    )
    inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(ADAPTER in name)
    return model


def is_adapted(model: nn.Module) -> bool:
    return any(ADAPTER in name for name, _ in model.named_parameters())


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters' entries of a state dict: what training changes in an adapted student."""
    return {name: value for name, value in state.items() if ADAPTER in name}


def load_adapters(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load an adapted student's adapters (a checkpoint's); its other weights stay as built."""
    missing = sorted(set(adapter_state(model.state_dict())) - set(state))
    unexpected = sorted(set(state) - set(adapter_state(model.state_dict())))
    if missing or unexpected:
        raise KdforgeError(
            f"the saved adapters do not fit this student ({len(missing)} missing, e.g. {missing[:2]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]}): the recipe's student.peft changed"
        )
    model.load_state_dict(state, strict=False)


def merge(model: nn.Module) -> nn.Module:
    """``model`` with every adapter merged into its layer's weight and the layer unwrapped (in place): a plain
    model of its own class that computes what the adapted one did."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model
