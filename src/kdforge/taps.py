"""Capture intermediate tensors by module name with forward hooks, and project them.

Models are never rewritten to expose features: ``FeatureTap(model, {"mid": "blocks.1"})``
records the output of ``model.blocks.1`` on each forward (``"head:input"`` records the
input of ``head`` instead; ``"output"`` the model's own output, e.g. an embedding). A
module that returns a tuple, as transformer blocks do (hidden states, attention, ...), is
recorded by its first tensor, the hidden states. A name that does not exist fails at
construction with the closest valid names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from kdforge.errors import KdforgeError, closest

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel and torch.compile wrappers
OUTPUT = "output"  # the tap name of a model's own output: its root module's


def module_name(name: str, modules: Mapping[str, nn.Module]) -> str:
    """The module a tap name hooks: ``output`` is the root (unless a module has that name)."""
    return "" if name == OUTPUT and OUTPUT not in modules else name


def strip_wrappers(name: str) -> str:
    """``module._orig_mod.blocks.1`` -> ``blocks.1``."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class FeatureTap:
    """Forward hooks that store tapped tensors in :attr:`features` (alias -> tensor).

    ``policy`` says what happens when a tapped module runs more than once in a forward:
    ``last`` keeps the last call, ``first`` the first, ``error`` raises.
    Call :meth:`clear` before each forward (the Distiller does).
    """

    def __init__(self, model: nn.Module, taps: Mapping[str, str], policy: Literal["last", "first", "error"] = "last"):
        self.policy = policy
        self.aliases = list(taps)
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        root = unwrap(model)
        modules = dict(root.named_modules())
        for alias, spec in taps.items():
            name, _, where = strip_wrappers(spec).partition(":")
            name = module_name(name, modules)
            if name not in modules:
                hint = closest(name, [n for n in modules if n], n=5)
                suggestion = (
                    f"; closest: {', '.join(hint)}" if hint else f"; some valid names: {', '.join(list(modules)[1:9])}"
                )
                raise KdforgeError(f"no module named '{name}' in {type(root).__name__} to tap{suggestion}")
            if where not in ("", "input", "output"):
                raise KdforgeError(f"tap '{spec}': the part after ':' must be 'input' or 'output'")
            hook = self._input_hook(alias) if where == "input" else self._output_hook(alias)
            self._handles.append(modules[name].register_forward_hook(hook))

    def _store(self, alias: str, value: Any) -> None:
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            value = value[0]  # a block returning (hidden states, attention scores, ...), as transformer blocks do
        if not isinstance(value, torch.Tensor):
            raise KdforgeError(
                f"tap '{alias}' captured a {type(value).__name__}, not a tensor; tap a submodule that returns one"
            )
        if alias in self.features:
            if self.policy == "error":
                raise KdforgeError(f"tapped module '{alias}' ran twice in one forward; choose policy 'first' or 'last'")
            if self.policy == "first":
                return
        self.features[alias] = value

    def _output_hook(self, alias: str) -> Any:
        return lambda module, args, output: self._store(alias, output)

    def _input_hook(self, alias: str) -> Any:
        return lambda module, args, output: self._store(alias, args[0])

    def clear(self) -> None:
        self.features = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class Conv1x1Projector(nn.Module):
    """1x1 convolution on the channel dim of [B, C, L] / [B, C, H, W], then resize to the
    teacher's spatial size when it differs."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size):
        super().__init__()
        conv = {3: nn.Conv1d, 4: nn.Conv2d}[len(student_shape)]
        self.conv = conv(student_shape[1], teacher_shape[1], 1, bias=False)
        self.size = tuple(teacher_shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if tuple(x.shape[2:]) != self.size:
            x = nn.functional.interpolate(
                x, size=self.size, mode="linear" if x.dim() == 3 else "bilinear", align_corners=False
            )
        return x


class MLPProjector(nn.Sequential):
    """Linear -> GELU -> Linear on the last dimension (hidden width = the teacher's)."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__(nn.Linear(student_dim, teacher_dim), nn.GELU(), nn.Linear(teacher_dim, teacher_dim))


def build_projector(kind: str, student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """A trainable map from a student feature's shape to a teacher feature's shape."""
    s, t = tuple(student_shape), tuple(teacher_shape)
    if kind == "none":
        if s != t:
            raise KdforgeError(
                f"feature shapes differ (student {list(s)}, teacher {list(t)}); use projector 'linear' or 'conv1x1'"
            )
        return nn.Identity()
    if kind in ("linear", "mlp"):
        if s[:-1] != t[:-1]:
            raise KdforgeError(
                f"projector '{kind}' maps the last dim only, but shapes differ elsewhere (student {list(s)}, teacher "
                f"{list(t)}); use 'conv1x1' for conv features"
            )
        return nn.Linear(s[-1], t[-1]) if kind == "linear" else MLPProjector(s[-1], t[-1])
    if kind == "conv1x1":
        if len(s) not in (3, 4) or len(s) != len(t):
            raise KdforgeError(
                "projector 'conv1x1' needs [B, C, L] or [B, C, H, W] features of the same rank, got student "
                f"{list(s)}, teacher {list(t)}"
            )
        return Conv1x1Projector(student_shape, teacher_shape)
    raise KdforgeError(f"unknown projector '{kind}' (valid: linear, mlp, conv1x1, none)")


# ----------------------------------------------------------------------------- layer mapping

#: containers that usually hold a model's blocks, tried in this order by ``auto``
BLOCK_CONTAINERS = (
    "blocks",
    "layers",
    "encoder.layer",
    "encoder.layers",
    "model.layers",
    "transformer.h",
    "h",
    "stages",
    "features",
)

LayerMapping = Literal["explicit", "uniform", "skip", "last", "learned"]


def block_names(model: nn.Module, spec: str | list[str], expand: bool = True) -> list[str]:
    """Module names of a block list: ``auto`` finds a common container (``blocks``,
    ``layers``, ``encoder.layer``, ...; in a hierarchical model each stage's, in order); with ``expand``, a container's
    name gives its
    children; a list is taken as it is. Every name is checked to exist."""
    root = unwrap(model)
    modules = dict(root.named_modules())
    if isinstance(spec, list):
        names = [strip_wrappers(n) for n in spec]
    elif spec == "auto":
        lists = [n for n, m in modules.items() if isinstance(m, (nn.ModuleList, nn.Sequential))]
        kind = next(
            (c for c in BLOCK_CONTAINERS if any(n == c or n.endswith("." + c) for n in lists)), None
        )  # also nested: model.vit.encoder.layer
        if kind is None:
            raise KdforgeError(
                f"no block list found in {type(root).__name__} (looked for {', '.join(BLOCK_CONTAINERS)}); name the "
                "layers"
            )
        # every list of that kind, in order: one per stage of a hierarchical model (stages.S.blocks)
        found = [n for n in lists if n == kind or n.endswith("." + kind)]
        found = [n for n in found if not any(n.startswith(f + ".") for f in found)]
        names = [f"{f}.{child}" for f in found for child, _ in modules[f].named_children()]
    elif expand and isinstance(modules.get(strip_wrappers(spec)), (nn.ModuleList, nn.Sequential)):
        names = [f"{strip_wrappers(spec)}.{child}" for child, _ in modules[strip_wrappers(spec)].named_children()]
    else:
        names = [strip_wrappers(spec)]
    for name in names:
        if module_name(name.partition(":")[0], modules) not in modules:
            hint = closest(name, [n for n in modules if n], n=5)
            raise KdforgeError(
                f"no module named '{name}' in {type(root).__name__}{'; closest: ' + ', '.join(hint) if hint else ''}"
            )
    return names


def map_layers(student: list[str], teacher: list[str], mapping: LayerMapping) -> list[tuple[str, str]]:
    """Pairs (student layer, teacher layer) for S student and T teacher layers.

    ``explicit``: position by position (the lists must have the same length, or one side a
    single layer); ``uniform``: evenly spaced teacher layers ending at the last one
    (student i -> teacher ⌈(i+1)·T/S⌉ − 1); ``skip``: every (T // S)-th teacher layer from
    the first; ``last``: the last S teacher layers. ``learned`` uses ``uniform`` pairs as
    its starting point (see :class:`LayerGate`).
    """
    s, t = len(student), len(teacher)
    if mapping == "explicit":
        if s == t or t == 1 or s == 1:
            return [(student[min(i, s - 1)], teacher[min(i, t - 1)]) for i in range(max(s, t))]
        raise KdforgeError(
            f"explicit mapping pairs layers position by position, but got {s} student and {t} teacher layers; give "
            "equal lists or a mapping (uniform, skip, last, learned)"
        )
    if s > t:
        raise KdforgeError(
            f"mapping '{mapping}' needs at least as many teacher layers as student layers, got {s} student and {t} "
            "teacher layers"
        )
    if mapping in ("uniform", "learned"):
        return [(student[i], teacher[math.ceil((i + 1) * t / s) - 1]) for i in range(s)]
    if mapping == "skip":
        return [(student[i], teacher[i * (t // s)]) for i in range(s)]
    if mapping == "last":
        return [(student[i], teacher[t - s + i]) for i in range(s)]
    raise KdforgeError(f"unknown mapping '{mapping}' (valid: explicit, uniform, skip, last, learned)")


class LayerGate(nn.Module):
    """Learned layer mapping: each student layer i matches a softmax-gated mixture of all
    teacher layers, Σ_j softmax(g_i)_j · h_j (teacher layers of one shape). The gates start
    concentrated on the ``uniform`` pairing and train with the student."""

    def __init__(self, student_layers: int, teacher_layers: int, start: list[int]):
        super().__init__()
        logits = torch.zeros(student_layers, teacher_layers)
        logits[torch.arange(student_layers), torch.tensor(start)] = 3.0
        self.logits = nn.Parameter(logits)

    def forward(self, teacher_features: list[torch.Tensor]) -> list[torch.Tensor]:
        stacked = torch.stack([f.float() for f in teacher_features])  # [T, B, ...]
        weights = torch.softmax(self.logits, -1)  # [S, T]
        return list(torch.einsum("st,t...->s...", weights, stacked))
