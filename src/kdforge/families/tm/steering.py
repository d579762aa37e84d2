"""Steering a TM student from validation diagnostics: ``clause_specialize`` and ``auto_clause``.

A unit's importance is the first-order estimate of how much the validation loss would
change without it: the mean over validation batches of |∂L/∂g| for a gate g = 1 on the
unit's output (L the cross-entropy). For attention heads this is the head-importance
score of Michel et al. (2019); for clauses, the Taylor pruning criterion of Molchanov et
al. (2017). Only the validation split is read; decisions never look at the test split.

* ``clause_specialize`` (strength s ∈ [0, 1]): after a warm-up, each attention head's gain
  becomes (1 − s) + s · importance / (mean importance of its block's heads): heads that
  matter are amplified, idle ones muted, and each block's mean gain stays 1.
* ``auto_clause``: after a warm-up, the clause budget (the current number of active
  clauses, or ``total``) is shared across clause layers in proportion to their summed
  clause importance (D'Hondt, at least ``min_clauses`` and at most the layer's size); each
  layer keeps its most important clauses and masks the others (``ClauseLayer.clause_mask``).

Both are applied once, at the end of their warm-up epoch and before that epoch's
validation, so checkpoints, best-epoch selection and resumed runs all see them.

* ``hard_finish`` (N epochs): the last N epochs train in hard mode, the form the exported
  rules compute (a soft-trained student loses up to a few points when its rules are read
  hard). The switch comes at the end of epoch ``epochs − N``, before its validation, and
  restarts the selection there: a soft epoch's score says nothing of its rules.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.families.tm.blocks import TMAttention
from kdforge.families.tm.clause import ClauseLayer, clause_layers, set_hard

if TYPE_CHECKING:
    from kdforge.config import StudentConfig
    from kdforge.trainer import Trainer


@dataclass
class Diagnostics:
    """Importance per attention head and per clause, on the validation split."""

    heads: dict[str, torch.Tensor]  # attention module -> [heads]
    clauses: dict[str, torch.Tensor]  # clause layer -> [clauses]

    def as_record(self, model: nn.Module) -> dict[str, Any]:
        """Numbers for metrics.jsonl and the trackers (nested dicts of floats)."""
        layers = dict(model.named_modules())
        return {
            "head_importance": {
                name: {f"h{i}": float(v) for i, v in enumerate(values)} for name, values in self.heads.items()
            },
            "clause_importance": {name: float(values.sum()) for name, values in self.clauses.items()},
            "active_clauses": {name: int(layers[name].clause_mask.sum()) for name in self.clauses},
        }


def diagnose(model: nn.Module, batches: Any, limit: int | None = None) -> Diagnostics:
    """Head and clause importance of ``model`` over ``batches`` (the validation loader; its
    first ``limit`` batches). Only the probes get gradients: the model's own ``.grad`` is untouched."""
    attention = {n: m for n, m in model.named_modules() if isinstance(m, TMAttention)}
    layers = {n: m for n, m in model.named_modules() if isinstance(m, ClauseLayer)}
    device = next(model.parameters()).device
    heads = {n: torch.ones(m.heads, device=device, requires_grad=True) for n, m in attention.items()}
    clauses = {n: torch.ones(m.clauses, device=device, requires_grad=True) for n, m in layers.items()}
    probes = [*heads.values(), *clauses.values()]
    totals = [torch.zeros_like(p) for p in probes]
    samples, was_training = 0, model.training
    model.eval()
    with _probing(attention, heads, layers, clauses), torch.enable_grad():
        for x, y, *_ in itertools.islice(batches.epoch(0), limit):
            loss = F.cross_entropy(model(x).float(), y, reduction="sum")
            grads = torch.autograd.grad(loss, probes, allow_unused=True)
            for total, grad in zip(totals, grads):
                if grad is not None:
                    total += grad.abs()
            samples += len(y)
    model.train(was_training)
    values = [t / max(samples, 1) for t in totals]
    return Diagnostics(dict(zip(heads, values[: len(heads)])), dict(zip(clauses, values[len(heads) :])))


@contextlib.contextmanager
def _probing(
    attention: dict[str, TMAttention],
    heads: dict[str, torch.Tensor],
    layers: dict[str, ClauseLayer],
    clauses: dict[str, torch.Tensor],
) -> Iterator[None]:
    """Gates of 1 on each head's output (before the output projection) and each clause's score."""

    def gate_heads(probe: torch.Tensor) -> Any:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            x = args[0]  # [B, N, H · d]
            return ((x.unflatten(-1, (len(probe), -1)) * probe[:, None].to(x.dtype)).flatten(-2),)

        return hook

    hooks = [m.proj.register_forward_pre_hook(gate_heads(heads[n])) for n, m in attention.items()]
    hooks += [
        m.activations.register_forward_hook(lambda mod, args, out, p=clauses[n]: out * p.to(out.dtype))
        for n, m in layers.items()
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def specialize_heads(model: nn.Module, diagnostics: Diagnostics, strength: float) -> dict[str, dict[str, float]]:
    """Set each attention head's gain from its importance; returns the gains."""
    modules = dict(model.named_modules())
    gains = {}
    for name, importance in diagnostics.heads.items():
        relative = importance / importance.mean().clamp_min(1e-12)
        gain = (1.0 - strength) + strength * relative
        modules[name].head_gain.copy_(gain)
        gains[name] = {f"h{i}": float(g) for i, g in enumerate(gain)}
    return gains


def allocate_clauses(model: nn.Module, diagnostics: Diagnostics, total: int | None, min_clauses: int) -> dict[str, Any]:
    """Share the clause budget across clause layers by importance and mask the rest."""
    modules = dict(model.named_modules())
    layers = {name: modules[name] for name in diagnostics.clauses}
    before = {name: int(layer.clause_mask.sum()) for name, layer in layers.items()}
    budget = sum(before.values()) if total is None else total
    sizes = {name: layer.clauses for name, layer in layers.items()}
    if not min_clauses * len(layers) <= budget <= sum(sizes.values()):
        raise KdforgeError(
            f"auto_clause: a total of {budget} clauses cannot be shared by {len(layers)} clause layers of sizes "
            f"{list(sizes.values())} "
            f"with at least {min_clauses} each; set student.auto_clause.total between {min_clauses * len(layers)} and "
            f"{sum(sizes.values())}"
        )
    weight = {name: float(values.sum()) for name, values in diagnostics.clauses.items()}
    after = dhondt(weight, budget, {name: min(min_clauses, size) for name, size in sizes.items()}, sizes)
    for name, layer in layers.items():
        keep = diagnostics.clauses[name].argsort(descending=True)[: after[name]]
        layer.clause_mask.fill_(False)
        layer.clause_mask[keep] = True
    return {"total": budget, "before": before, "after": after, "importance": weight}


def dhondt(weight: dict[str, float], seats: int, floor: dict[str, int], cap: dict[str, int]) -> dict[str, int]:
    """Share ``seats`` in proportion to ``weight`` (D'Hondt: each next seat goes to the largest
    weight / (seats held + 1)), from ``floor`` seats each, never above ``cap``."""
    held = dict(floor)
    for _ in range(seats - sum(held.values())):
        open_ = [name for name in held if held[name] < cap[name]]
        best = max(open_, key=lambda name: (weight[name] / (held[name] + 1), -list(held).index(name)))
        held[best] += 1
    return held


class ClauseSteering:
    """Called by the Trainer at the end of each training epoch, before validation: logs
    diagnostics every ``diagnostics_every`` epochs and applies ``clause_specialize`` and
    ``auto_clause`` at the end of their warm-up. Returns what goes into the epoch's record."""

    def __init__(self, cfg: StudentConfig, val: Any):
        self.cfg, self.val = cfg, val

    @classmethod
    def wanted(cls, cfg: StudentConfig, model: nn.Module, val: Any) -> ClauseSteering | None:
        steers = cfg.diagnostics_every or cfg.clause_specialize is not None or cfg.auto_clause is not None
        has_tm = any(isinstance(m, (ClauseLayer, TMAttention)) for m in model.modules())
        if (cfg.clause_specialize is not None or cfg.auto_clause is not None) and not has_tm:
            raise KdforgeError(
                f"student.clause_specialize and student.auto_clause steer TM students; {cfg.model.name} has no clause "
                "layers or TM attention"
            )
        if cfg.hard_finish and not clause_layers(model):
            raise KdforgeError(f"student.hard_finish trains clause layers in hard mode; {cfg.model.name} has none")
        return cls(cfg, val) if (steers and has_tm) or cfg.hard_finish else None

    def switch_epoch(self, trainer: Trainer) -> int:
        """The epoch at whose end the student turns hard (``hard_finish``)."""
        if trainer.cfg.early_stopping is not None:
            raise KdforgeError(
                "student.hard_finish trains the last epochs in hard mode, which early stopping would skip: remove "
                "train.early_stopping, or set student.hard_finish to 0"
            )
        if self.cfg.hard_finish >= trainer.epochs:
            raise KdforgeError(
                f"student.hard_finish ({self.cfg.hard_finish}) must be below the number of epochs ({trainer.epochs}): "
                "the student first trains in soft mode, then finishes in hard mode"
            )
        return trainer.epochs - self.cfg.hard_finish

    def restore(self, trainer: Trainer, model: nn.Module) -> None:
        """On resume: what the weights do not hold (hard mode is a switch, not a tensor)."""
        if self.cfg.hard_finish and trainer.pos.epoch >= self.switch_epoch(trainer):
            self.harden(trainer, model)

    @staticmethod
    def harden(trainer: Trainer, model: nn.Module) -> None:
        """Hard mode for the student, its moving average (validated in its place) and its saved spec (what
        :func:`kdforge.load_student` rebuilds: every TM model takes ``hard``)."""
        for module in (model, trainer.ema.module if trainer.ema is not None else None):
            if module is not None:
                set_hard(module)
        if (spec := getattr(model, "kdforge_spec", None)) is not None:
            model.kdforge_spec = {**spec, "options": {**spec["options"], "hard": True}}

    def __call__(self, trainer: Trainer, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Steer after ``epoch`` epochs of training (0: before the first)."""
        record = self.steer(model, epoch)
        if self.cfg.hard_finish and epoch == self.switch_epoch(trainer):
            self.harden(trainer, model)
            soft = {"soft_best_epoch": trainer.pos.best_epoch, "soft_best_val": trainer.pos.best_val}
            record |= {"hard_finish": {"epoch": epoch, "epochs": self.cfg.hard_finish, **soft}}
            record["restart_selection"] = True
        return record

    def steer(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """clause_specialize, auto_clause and the diagnostics."""
        specialize, auto = self.cfg.clause_specialize, self.cfg.auto_clause
        now_specialize = specialize is not None and epoch == specialize.warmup_epochs
        now_auto = auto is not None and epoch == auto.warmup_epochs
        logged = self.cfg.diagnostics_every and epoch > 0 and epoch % self.cfg.diagnostics_every == 0
        if not (now_specialize or now_auto or logged):
            return {}
        diagnostics = diagnose(model, self.val, auto.batches if now_auto else None)
        record: dict[str, Any] = {"diagnostics": diagnostics.as_record(model)}
        with torch.no_grad():
            if now_specialize:
                record["clause_specialize"] = {
                    "epoch": epoch,
                    "strength": specialize.strength,
                    "gains": specialize_heads(model, diagnostics, specialize.strength),
                }
            if now_auto:
                record["auto_clause"] = {
                    "epoch": epoch,
                    **allocate_clauses(model, diagnostics, auto.total, auto.min_clauses),
                }
        return record


def steering_events(history: list[dict[str, Any]]) -> dict[str, Any]:
    """What was applied when, from a fit's history: for results.json and the report."""
    return {
        key: {"epoch": record["epoch"], **record[key]}
        for record in history
        for key in ("clause_specialize", "auto_clause", "hard_finish")
        if key in record
    }
