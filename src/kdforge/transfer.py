"""Start a student from other weights: its teacher's (``init_from_teacher``: every tensor
whose name, after the renames below, and shape match) or an earlier student's
(``init_from``: the first stage of a two-stage distillation).

:func:`copy_matching` copies e.g. patch embedding, positions, attention, norms and head.
Our own ``vit`` maps onto ``vit_tm`` name for name; timm's ViT and Swin spell a few modules
differently (``patch_embed.proj``, ``layers.S``, ``mlp``, ``head.fc``, the relative position
table), which :data:`RENAMES` translates. A family may then teach its own blocks more
(:meth:`kdforge.family.Family.from_teacher`: the TM family fits each TM block to the
teacher MLP it replaces).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.export import load_state_strict, read_meta
from kdforge.files import load_safetensors
from kdforge.models import model_spec

# teacher name -> student name, applied in order to dotted names ending in "."
RENAMES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^patch_embed\.proj\.", "patch_embed."),  # timm: the patch conv sits inside PatchEmbed
    (r"^patch_embed\.norm\.", "patch_norm."),
    (
        r"^layers\.(\d+)\.downsample\.",
        lambda m: f"stages.{int(m[1]) - 1}.downsample.",
    ),  # timm merges at a stage's start, we at the previous one's end
    (r"^layers\.", "stages."),
    (r"\.attn\.relative_position_bias_table\.$", ".rel_bias."),
    (r"\.mlp\.", ".ffn."),
    (r"^head\.fc\.", "head."),
]


def student_name(teacher_name: str) -> str:
    """The student's name for a teacher tensor or module under :data:`RENAMES`."""
    name = teacher_name + "."
    for pattern, replacement in RENAMES:
        name = re.sub(pattern, replacement, name)
    return name[:-1]


def counterparts(teacher_names: Iterable[str]) -> dict[str, str]:
    """student name -> teacher name: the same name first, else the renamed one."""
    names = list(teacher_names)
    found = {student_name(n): n for n in names}
    found.update({n: n for n in names})
    return found


@dataclass
class TransferReport:
    """What :func:`copy_matching` and :func:`fit_feedforwards` did, for results.json and the report."""

    copied: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, str] = field(default_factory=dict)  # student tensor -> "teacher [..] vs student [..]"
    not_in_teacher: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (
            f"copied {len(self.copied)} tensors from the teacher, {len(self.shape_mismatch)} differ in shape, "
            f"{len(self.not_in_teacher)} have no teacher counterpart"
        )


def copy_matching(student: nn.Module, teacher: nn.Module) -> TransferReport:
    """Copy every teacher tensor into the student tensor of the same (renamed) name and shape."""
    source = teacher.state_dict()
    lookup = counterparts(source)
    report = TransferReport()
    with torch.no_grad():
        for name, target in student.state_dict().items():
            origin = lookup.get(name)
            if origin is None:
                report.not_in_teacher.append(name)
            elif source[origin].shape != target.shape:
                report.shape_mismatch[name] = (
                    f"teacher {origin} {list(source[origin].shape)} vs student {list(target.shape)}"
                )
            else:
                target.copy_(source[origin])
                report.copied.append(name)
    return report


def start_from(student: nn.Module, path: str | Path) -> dict[str, Any]:
    """``student.init_from``: load the weights of an earlier kdforge student (a run directory
    or its ``student.safetensors``) of the same architecture: the first stage's student, which
    the second stage trains on. With another class count (a task head after a general stage)
    every tensor but the classifier's is loaded and the head starts anew."""
    weights = Path(path) / "student.safetensors" if Path(path).is_dir() else Path(path)
    theirs, ours = read_meta(weights).get("model") or {}, model_spec(student)
    state = load_safetensors(weights, what="student.init_from weights")
    same_model = (theirs.get("name"), theirs.get("options")) == (ours["name"], ours["options"])
    # options that leave every tensor as it is (a TM student's hard mode, a temperature) may change between stages
    if not same_model and not _same_tensors(student, state):
        raise KdforgeError(
            f"student.init_from '{weights}' is a '{theirs.get('name')}' with options {theirs.get('options')}, but "
            "this recipe's student is "
            f"'{ours['name']}' with options {ours['options']}; give student.model the first stage's model section"
        )
    if theirs.get("num_classes") == ours["num_classes"]:
        load_state_strict(student, state, str(weights))
        changed = {} if same_model else {"options_before": theirs.get("options"), "options_now": ours["options"]}
        return {"path": str(weights), "loaded": len(state), **changed}
    own = student.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    student.load_state_dict(kept, strict=False)
    return {
        "path": str(weights),
        "loaded": len(kept),
        "new": sorted(set(own) - set(kept)),
        "classes": [theirs.get("num_classes"), ours["num_classes"]],
    }


def _same_tensors(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` has exactly ``model``'s tensor names and shapes."""
    own = model.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == v.shape for k, v in state.items())
