"""Staged training and progressive curricula.

A :class:`Curriculum` is a list of stages. Each stage may change loss weights and
temperatures (by term name) and the training subset, and ends after a number of epochs,
when the training loss flattens (``loss_plateau``) or when validation accuracy stops
improving (``val_plateau``); the last stage runs to the end of training. A two-stage
distillation (general, then task) is a two-stage recipe.

``pocl`` builds its stages itself: it ranks the training samples by difficulty, fusing
the teacher's and the student's per-sample losses by reciprocal ranks, and trains on
cumulative easy-to-hard partitions with a rising temperature.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from kdforge.config import CurriculumConfig, PlateauConfig, StageConfig, StageDataConfig, ValPlateauConfig
from kdforge.data.bundle import PAD_TARGET
from kdforge.errors import KdforgeError, required
from kdforge.evaluate import score
from kdforge.losses import LossTerm
from kdforge.schedules import CTKDTemperature, Temperature

if TYPE_CHECKING:
    from kdforge.distiller import Distiller
    from kdforge.trainer import Trainer


def loss_slope(losses: list[float]) -> float:
    """Least-squares slope of ``losses`` against their index (change per epoch)."""
    n = len(losses)
    mean_x, mean_y = (n - 1) / 2, sum(losses) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(losses))
    return num / sum((i - mean_x) ** 2 for i in range(n))


def stage_finished(stage: StageConfig, records: list[dict[str, Any]]) -> bool:
    """Whether ``stage`` is over after the epochs ``records`` (its own, oldest first)."""
    if stage.epochs is not None:
        return len(records) >= stage.epochs
    if isinstance(stage.loss_plateau, PlateauConfig):
        window = stage.loss_plateau.window
        return (
            len(records) >= window
            and abs(loss_slope([r["train"]["loss"] for r in records[-window:]])) < stage.loss_plateau.eps
        )
    if isinstance(stage.val_plateau, ValPlateauConfig):
        return _epochs_without_gain(records, stage.val_plateau.min_delta) >= stage.val_plateau.patience
    return False


def _epochs_without_gain(records: list[dict[str, Any]], min_delta: float) -> int:
    best, since = None, 0
    for record in (r for r in records if "val" in r):  # validated epochs only (train.val_every)
        value = score(record["val"])
        if best is None or value > best + min_delta:
            best, since = value, 0
        else:
            since += 1
    return since


class Curriculum:
    """The stages of one training run, applied to a Distiller and its training batches."""

    def __init__(self, stages: list[StageConfig], seed: int = 0, pocl: CurriculumConfig | None = None):
        if not stages:
            raise KdforgeError("a curriculum needs at least one stage")
        self.stages, self.seed, self.pocl = stages, seed, pocl
        self.order: torch.Tensor | None = None  # pocl: training indices, easiest first
        self.order_stage = -1  # the stage the order was computed for
        self.base: dict[str, tuple[Any, Any]] = {}  # term name -> (weight, temperature spec) from the recipe

    @classmethod
    def from_recipe(cls, recipe: Any) -> Curriculum | None:
        if recipe.curriculum is not None:
            stages = CURRICULA[recipe.curriculum.name](recipe.curriculum, recipe.train.epochs)
            if recipe.stages:  # the recipe's stages say how each ends and what else changes; the curriculum, which data
                stages = [_combined(own, made) for own, made in zip(recipe.stages, stages)]
            return cls(stages, recipe.seed, recipe.curriculum)
        if recipe.stages:
            return cls(recipe.stages, recipe.seed)
        return None

    def __len__(self) -> int:
        return len(self.stages)

    def finished(self, index: int, records: list[dict[str, Any]]) -> bool:
        return index < len(self.stages) - 1 and stage_finished(self.stages[index], records)

    def enter(self, index: int, trainer: Trainer, train_batches: Any) -> Any:
        """Apply stage ``index`` to the trainer's distiller; returns its training batches."""
        stage, distiller = self.stages[index], trainer.distiller
        terms = {term.name: term for term in distiller.loss_terms}
        if not self.base:
            self.base = {name: (t.weight, getattr(_temperature(t), "spec", None)) for name, t in terms.items()}
        every = self.pocl.temperatures[index] if self.pocl is not None and self.pocl.temperatures is not None else None
        for name, term in terms.items():
            weight, temperature = self.base[name]
            term.weight = stage.weights.get(name, weight)
            fixed = _temperature(term)  # a learnable one keeps learning
            if temperature is not None and fixed is not None and not isinstance(fixed, CTKDTemperature):
                fixed.spec = stage.temperatures.get(name, every if every is not None else temperature)
        if self.pocl is not None and self.order_stage != index:  # re-rank on entering each stage
            self.order = difficulty_order(
                distiller, train_batches, self.pocl.fusion_k, with_student=trainer.pos.step > 0
            )
            self.order_stage = index
        return train_batches.subset(self.subset(stage.data, train_batches))

    def subset(self, data: StageDataConfig | None, batches: Any) -> torch.Tensor | None:
        if data is None:
            return None
        if not hasattr(batches, "y"):
            raise KdforgeError("stage data subsets need an in-memory dataset")
        n = len(batches.y)
        if data.classes is not None:
            return torch.nonzero(torch.isin(batches.y.cpu(), torch.tensor(data.classes))).flatten()
        kept = math.ceil(required(data.fraction, "a stage's data.fraction") * n)
        if self.order is not None:
            return self.order[:kept]
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randperm(n, generator=generator)[:kept].sort().values

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "order_stage": self.order_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.order_stage = state["order"], state["order_stage"]


def _temperature(term: LossTerm) -> Temperature | None:
    """A logit term's temperature; None for a term without one."""
    found = getattr(term, "temperature", None)
    return found if isinstance(found, Temperature) else None


def pocl_stages(cfg: CurriculumConfig, epochs: int) -> list[StageConfig]:
    """One stage per partition: the easiest share of the data, its temperature, its epochs."""
    per_stage = cfg.epochs or _split_evenly(epochs, len(cfg.partitions))
    stages = []
    for i, share in enumerate(cfg.partitions):
        last = i == len(cfg.partitions) - 1
        stages.append(
            StageConfig(
                name=f"pocl {i + 1}: easiest {share:.0%}",
                epochs=None if last else per_stage[i],
                data=None if share >= 1.0 else StageDataConfig(fraction=share),
            )
        )
    return stages


def _combined(own: StageConfig, made: StageConfig) -> StageConfig:
    """A recipe stage over a curriculum stage: its own end (epochs, loss or validation
    plateau) and data, when it gives them, else the curriculum's."""
    return own.model_copy(
        update={
            "name": own.name or made.name,
            "data": own.data or made.data,
            "epochs": made.epochs if own.open_ended else own.epochs,
        }
    )


#: curriculum kinds (``curriculum.name``) -> the stages they make
CURRICULA = {"pocl": pocl_stages}


def _split_evenly(total: int, parts: int) -> list[int]:
    if total < parts:
        raise KdforgeError(f"a curriculum of {parts} stages needs at least {parts} epochs, got {total}")
    return [total // parts + (i < total % parts) for i in range(parts)]


@torch.no_grad()
def difficulty_order(distiller: Distiller, batches: Any, k: float, with_student: bool = True) -> torch.Tensor:
    """Training indices from easiest to hardest: per-sample cross-entropy of the teacher and
    of the student (both in eval mode, no augmentation; a sequence's mean over its real
    tokens), ranked separately (rank 0 = lowest loss) and fused by reciprocal ranks,
    Σ 1/(k + rank). Language models add a third rank, the text overlap of the student's
    predictions with the reference (1 − unigram F1, ROUGE-1 style). An untrained student
    says nothing about difficulty, so before its first step (``with_student=False``) the
    teacher ranks alone."""
    if not hasattr(batches, "x"):
        raise KdforgeError("pocl ranks samples of an in-memory training split")
    was_training = distiller.training
    distiller.eval()
    measures: dict[str, list[torch.Tensor]] = {"teacher": [], "student": [], "overlap": []}
    with torch.no_grad():
        for i in range(0, len(batches.y), 512):
            x, y = batches.x[i : i + 512], batches.y[i : i + 512]
            student = distiller.student(x).float()
            measures["student"].append(sample_cross_entropy(student, y))
            teacher = required(distiller.teacher, "a teacher")
            measures["teacher"].append(sample_cross_entropy(teacher(x).float(), y))
            if student.dim() == 3:  # token logits [B, T, V]
                measures["overlap"].append(1 - unigram_f1(student.argmax(-1), y))
    distiller.train(was_training)
    fused = torch.zeros(len(batches.y), device=batches.y.device)
    for role, values in measures.items():
        if not values or (role != "teacher" and not with_student):
            continue
        ranks = torch.empty_like(fused)
        ranks[torch.cat(values).argsort()] = torch.arange(len(fused), dtype=fused.dtype, device=fused.device)
        fused += 1.0 / (k + ranks)
    return fused.argsort(descending=True).cpu()


def sample_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample [B]: of class logits [B, K], or the mean over the real
    (not ``PAD_TARGET``) tokens of token logits [B, T, V]."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, targets, reduction="none")
    tokens = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none", ignore_index=PAD_TARGET).view(
        targets.shape
    )
    real = (targets != PAD_TARGET).sum(1).clamp(min=1)
    return tokens.sum(1) / real


def unigram_f1(predicted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """ROUGE-1 F1 per row [B] of token ids [B, T]: clipped unigram overlap between the
    predicted tokens and the reference's real (not ``PAD_TARGET``) tokens, at the same positions."""
    real = reference != PAD_TARGET
    f1 = torch.zeros(len(reference), device=reference.device)
    vocab = int(max(predicted.max(), reference.max())) + 1
    rows = max(1, (1 << 22) // vocab)  # bag-of-tokens counts [rows, vocab] per chunk
    for i in range(0, len(reference), rows):
        p, r, m = predicted[i : i + rows], reference[i : i + rows].clamp(min=0), real[i : i + rows]
        offsets = torch.arange(len(p), device=p.device).unsqueeze(1) * vocab
        bags = [torch.bincount((ids + offsets)[m], minlength=len(p) * vocab).view(len(p), vocab) for ids in (p, r)]
        overlap = torch.minimum(*bags).sum(1).float()
        f1[i : i + rows] = overlap / m.sum(1).clamp(min=1)  # both bags hold the real positions: precision = recall = F1
    return f1
