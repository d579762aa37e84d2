"""Start a student from its teacher: copy what matches, then teach each TM feed-forward
block to do what the teacher MLP it replaces did (students without TM blocks only copy, e.g.
an ``ssm`` student of the ``standard`` preset takes all of a gated teacher but its gates).

* :func:`copy_matching` copies every teacher tensor whose name (after the renames below)
  and shape match a student tensor: patch embedding, positions, attention, norms, head.
  Our own ``vit`` maps onto ``vit_tm`` name for name; timm's ViT and Swin spell a few
  modules differently (``patch_embed.proj``, ``layers.S``, ``mlp``, ``head.fc``, the
  relative position table), which :data:`RENAMES` translates.
* :func:`fit_feedforwards` is module-wise distillation: the teacher runs on training
  batches, each of its MLPs' inputs and outputs is recorded, and the student's TM block
  in the same place learns to map those inputs to those outputs (MSE over the output
  variance), for a set number of steps, before end-to-end distillation starts.
* :func:`kdforge.models.mlp_to_tm.mlp_to_tm` (the model ``mlp_to_tm``) makes a TM student
  of any model's architecture, whose weights this module can then transfer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.models.mlp_to_tm import is_mlp
from kdforge.models.tm_blocks import TMFeedForward

# teacher name -> student name, applied in order to dotted names ending in "."
RENAMES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^patch_embed\.proj\.", "patch_embed."),  # timm: the patch conv sits inside PatchEmbed
    (r"^patch_embed\.norm\.", "patch_norm."),
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) - 1}.downsample."),  # timm merges at a stage's start, we at the previous one's end
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


def _counterparts(teacher_names: Iterable[str]) -> dict[str, str]:
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
    feedforward: dict[str, dict[str, Any]] = field(default_factory=dict)  # student block -> teacher MLP, fit

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        fits = ", ".join(f"{name} R² {fit['r2_val']:.2f}" for name, fit in self.feedforward.items())
        return (f"copied {len(self.copied)} tensors from the teacher, {len(self.shape_mismatch)} differ in shape, "
                f"{len(self.not_in_teacher)} have no teacher counterpart" + (f"; TM blocks fitted to the teacher MLPs: {fits}" if fits else ""))


def copy_matching(student: nn.Module, teacher: nn.Module) -> TransferReport:
    """Copy every teacher tensor into the student tensor of the same (renamed) name and shape."""
    source = teacher.state_dict()
    lookup = _counterparts(source)
    report = TransferReport()
    with torch.no_grad():
        for name, target in student.state_dict().items():
            origin = lookup.get(name)
            if origin is None:
                report.not_in_teacher.append(name)
            elif source[origin].shape != target.shape:
                report.shape_mismatch[name] = f"teacher {origin} {list(source[origin].shape)} vs student {list(target.shape)}"
            else:
                target.copy_(source[origin])
                report.copied.append(name)
    return report


def feedforward_pairs(student: nn.Module, teacher: nn.Module) -> dict[str, tuple[TMFeedForward, str, nn.Module]]:
    """student TM block name -> (block, teacher MLP name, teacher MLP), matched by (renamed) name;
    empty for a student without TM blocks (then ``init_from_teacher`` only copies)."""
    lookup = _counterparts(name for name, _ in teacher.named_modules())
    teacher_modules = dict(teacher.named_modules())
    pairs = {}
    for name, block in student.named_modules():
        if isinstance(block, TMFeedForward) and name in lookup and is_mlp(teacher_modules[lookup[name]]):
            origin = lookup[name]
            mlp = teacher_modules[origin]
            width = next(m for m in mlp.modules() if isinstance(m, nn.Linear)).in_features
            if width != block.proj_in.in_features:
                raise KdforgeError(f"init_from_teacher: the student's {name} is {block.proj_in.in_features} wide but the teacher's {origin} is {width}; give the student the teacher's embed_dim")
            pairs[name] = (block, origin, mlp)
    blocks = [n for n, m in student.named_modules() if isinstance(m, TMFeedForward)]
    if blocks and not pairs:
        mlps = [n for n, m in teacher.named_modules() if is_mlp(m)]
        raise KdforgeError(f"init_from_teacher: no TM block of the student has a teacher MLP in the same place (student TM blocks {blocks[:6]}, "
                           f"teacher MLPs {mlps[:6]}); give the student the teacher's architecture (vit -> vit_tm, swin -> swin_tm, or mlp_to_tm with base: the teacher's model)")
    return pairs


def fit_feedforwards(pairs: dict[str, tuple[TMFeedForward, str, nn.Module]], teacher: Callable[[torch.Tensor], Any], train: Any, val: Any,
                     steps: int, lr: float, track: Callable[[Any, str], Any] = lambda it, _: it) -> dict[str, dict[str, Any]]:
    """Train each TM block on its teacher MLP's recorded inputs -> outputs for ``steps`` steps
    of ``train`` batches (Adam, ``lr``); returns per block the relative MSE before and the R²
    on ``val`` after. ``teacher`` is called on inputs; hooks record its MLPs."""
    blocks = {name: block for name, (block, _, _) in pairs.items()}
    optimizer = torch.optim.Adam([p for block in blocks.values() for p in block.parameters()], lr=lr)
    first: dict[str, float] = {}
    with _recording(pairs) as seen:
        for block in blocks.values():
            block.train()
        batches = _forever(train)
        for _ in track(range(steps), "init_from_teacher: TM blocks learn the teacher MLPs"):
            x, *_ = next(batches)
            with torch.no_grad():
                teacher(x)
            errors = {name: _relative_mse(block(seen[name][0]), seen[name][1]) for name, block in blocks.items()}
            first = first or {name: float(e.detach()) for name, e in errors.items()}
            optimizer.zero_grad(set_to_none=True)
            torch.stack(list(errors.values())).sum().backward()  # blocks are independent: one sum trains each on its own error
            optimizer.step()
        fit = _r2(blocks, seen, teacher, val)
    return {name: {"teacher_mlp": origin, "steps": steps, "relative_mse_start": first.get(name), "r2_val": fit[name]} for name, (_, origin, _) in pairs.items()}


def _forever(batches: Any) -> Iterator[Any]:
    for epoch in itertools.count():
        yield from batches.epoch(epoch)


def _relative_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction.float() - target.float()).square().mean() / target.float().var().clamp_min(1e-8)


@contextlib.contextmanager
def _recording(pairs: dict[str, tuple[TMFeedForward, str, nn.Module]]) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Forward hooks on the teacher MLPs: ``seen[block] = (input, output)`` of their last call."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [mlp.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, (args[0].detach(), out.detach()))) for name, (_, _, mlp) in pairs.items()]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def _r2(blocks: dict[str, TMFeedForward], seen: dict[str, Any], teacher: Callable[[torch.Tensor], Any], val: Any) -> dict[str, float]:
    """1 − Σ squared error / Σ squared deviation of the teacher MLP outputs, over ``val``."""
    error = {name: 0.0 for name in blocks}
    spread = {name: 0.0 for name in blocks}
    for block in blocks.values():
        block.eval()
    for x, *_ in val.epoch(0):
        teacher(x)
        for name, block in blocks.items():
            inputs, target = seen[name]
            target = target.float().flatten(0, -2)  # [samples · tokens, D]
            error[name] += float((block(inputs).float().flatten(0, -2) - target).square().sum())
            spread[name] += float((target - target.mean(0)).square().sum())
    return {name: 1.0 - error[name] / max(spread[name], 1e-12) for name in blocks}


def start_from(student: nn.Module, path: str | Path) -> dict[str, Any]:
    """``student.init_from``: load the weights of an earlier kdforge student (a run directory
    or its ``student.safetensors``) of the same architecture: the first stage's student, which
    the second stage trains on. With another class count (a task head after a general stage)
    every tensor but the classifier's is loaded and the head starts anew."""
    from kdforge.export import load_state_strict, read_meta
    from kdforge.files import load_safetensors

    weights = Path(path) / "student.safetensors" if Path(path).is_dir() else Path(path)
    theirs, ours = read_meta(weights).get("model") or {}, student.kdforge_spec
    if (theirs.get("name"), theirs.get("options")) != (ours["name"], ours["options"]):
        raise KdforgeError(f"student.init_from '{weights}' is a '{theirs.get('name')}' with options {theirs.get('options')}, but this recipe's student is "
                           f"'{ours['name']}' with options {ours['options']}; give student.model the first stage's model section")
    state = load_safetensors(weights, what="student.init_from weights")
    if theirs.get("num_classes") == ours["num_classes"]:
        load_state_strict(student, state, str(weights))
        return {"path": str(weights), "loaded": len(state)}
    own = student.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    student.load_state_dict(kept, strict=False)
    return {"path": str(weights), "loaded": len(kept), "new": sorted(set(own) - set(kept)), "classes": [theirs.get("num_classes"), ours["num_classes"]]}
