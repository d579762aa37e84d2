"""The metrics encoder tasks are reported with, beside accuracy: macro F1 and Matthews correlation for classes,
Pearson and Spearman correlation for scores, and for tags the entity-level F1 that seqeval and conlleval compute
(an entity counts when its type and its whole span are right)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch


def class_metrics(predicted: np.ndarray, target: np.ndarray, classes: int) -> dict[str, float]:
    """Macro F1 (each class's F1, averaged; a class never predicted nor present counts 0, as scikit-learn's
    ``zero_division=0``) and Matthews correlation (multi-class, Gorodkin's R_K)."""
    confusion = np.zeros((classes, classes), dtype=np.float64)
    np.add.at(confusion, (target, predicted), 1)
    hits, predicted_count, true_count = np.diag(confusion), confusion.sum(0), confusion.sum(1)
    present = (predicted_count + true_count) > 0
    f1 = np.divide(2 * hits, predicted_count + true_count, out=np.zeros(classes), where=present)
    n, correct = confusion.sum(), hits.sum()
    covariance = correct * n - predicted_count @ true_count
    scale = math.sqrt((n**2 - predicted_count @ predicted_count) * (n**2 - true_count @ true_count))
    return {"f1_macro": float(f1[present].mean()), "mcc": float(covariance / scale) if scale else 0.0}


def score_metrics(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of predicted and true scores."""
    from scipy.stats import pearsonr, spearmanr

    return {"pearson": float(pearsonr(predicted, target)[0]), "spearman": float(spearmanr(predicted, target)[0])}


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """The (type, first, last) spans of a sentence's tags in the IOB2 / IOBES schemes, as conlleval reads them: an
    entity starts at B- or S-, or at an I- / E- whose type differs from the tag before it (or that follows O)."""
    found, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-") if "-" in tag else (tag, "", "")
        ends = start is not None and (prefix in ("O", "B", "S") or label != kind)
        if ends:
            found.add((kind, start, i - 1))
            start = kind = None
        if prefix in ("B", "S") or (prefix in ("I", "E") and start is None):
            start, kind = i, label
        if prefix in ("E", "S") and start is not None:
            found.add((kind, start, i))
            start = kind = None
    return found


def entity_f1(predicted: Iterable[list[str]], target: Iterable[list[str]]) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 over sentences (seqeval's default)."""
    right = guessed = true = 0
    for guess, gold in zip(predicted, target):
        found, wanted = entities(guess), entities(gold)
        right, guessed, true = right + len(found & wanted), guessed + len(found), true + len(wanted)
    precision, recall = right / guessed if guessed else 0.0, right / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}


def is_entity_scheme(names: list[str]) -> bool:
    """Whether tag names are an entity scheme (O and prefixed tags such as B-PER)."""
    return any(n.partition("-")[0] in ("B", "I", "E", "S") and "-" in n for n in names)


@torch.no_grad()
def encoder_metrics(model: torch.nn.Module, batches: Iterable, task: str, classes: int, names: list[str] | None,
                    autocast) -> dict[str, float]:  # fmt: skip
    """The task's metrics of ``model`` over ``batches`` (see the module docstring)."""
    from kdforge.data.bundle import PAD_TARGET

    was_training = model.training
    model.eval()
    outputs, targets = [], []
    try:
        for x, y, *_ in batches:
            with autocast:
                out = model(x).float()
            outputs.append(out.cpu())
            targets.append(y.cpu())
    finally:
        model.train(was_training)
    if task == "regression":
        return score_metrics(torch.cat(outputs).flatten().numpy(), torch.cat(targets).flatten().numpy())
    if task == "classification":
        return class_metrics(torch.cat(outputs).argmax(-1).numpy(), torch.cat(targets).numpy(), classes)
    rows = [(o.argmax(-1)[t != PAD_TARGET].tolist(), t[t != PAD_TARGET].tolist())
            for out, y in zip(outputs, targets) for o, t in zip(out, y)]  # fmt: skip
    flat = [np.concatenate([np.asarray(r, dtype=np.int64) for r, _ in rows]),
            np.concatenate([np.asarray(t, dtype=np.int64) for _, t in rows])]  # fmt: skip
    found = class_metrics(flat[0], flat[1], classes)
    if names and is_entity_scheme(names):
        found |= entity_f1(([names[i] for i in r] for r, _ in rows), ([names[i] for i in t] for _, t in rows))
    return found
