"""What simple projections of the teacher's embeddings keep, next to an embedding student:
PCA to the student's width (fitted on the training split's teacher embeddings), the same
without centring (an uncentred SVD) and a seeded Gaussian random projection. All need the
teacher at inference; a distilled student must beat them to be worth having."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from kdforge.evaluate import EMBEDDING_ROWS, embedding_metrics

if TYPE_CHECKING:
    from kdforge.session import Session


PCA_ROWS = 20_000  # the training rows PCA is fitted on (all of them when fewer)


def targets(loader: Any, rows: int) -> torch.Tensor:
    """The first ``rows`` targets of a split's batches (all of an in-memory split's, which it holds)."""
    if hasattr(loader, "y"):
        return loader.y[:rows]
    found, count = [], 0
    for _, y, *_ in loader.epoch(0):
        found.append(y)
        count += len(y)
        if count >= rows:
            break
    return torch.cat(found)[:rows]


def pca_projection(train: torch.Tensor, k: int, centred: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], components [D, k]) of the top-k principal directions of ``train`` [N, D]; not ``centred``:
    the top-k right singular vectors of ``train`` itself (mean zero), which keep the direction all the vectors
    share — cosines between them depend on it."""
    mean = train.double().mean(0) if centred else torch.zeros(train.shape[1], dtype=torch.float64)
    _, _, vh = torch.linalg.svd(train.double() - mean, full_matrices=False)
    return mean, vh[:k].T


def random_projection(dim: int, k: int, seed: int) -> torch.Tensor:
    """[D, k] Gaussian matrix scaled by 1/√k (Johnson–Lindenstrauss)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dim, k, generator=g, dtype=torch.float64) / math.sqrt(k)


def projection_baselines(session: Session, width: int, teacher_latency_ms: float) -> dict[str, dict[str, Any]]:
    """Result rows ``pca``, ``uncentred_svd`` and ``random_projection`` at the student's output ``width``."""
    train, val, test = (
        targets(loader, rows).double().cpu()
        for loader, rows in ((session.train, PCA_ROWS), (session.val, EMBEDDING_ROWS), (session.test, EMBEDDING_ROWS))
    )
    dim = train.shape[1]
    mean, components = pca_projection(train, width)
    _, singular = pca_projection(train, width, centred=False)
    rows = {
        "pca": (lambda x: (x - mean) @ components, dim * width + dim),
        "uncentred_svd": (lambda x: x @ singular, dim * width),
        "random_projection": (lambda x: x @ random_projection(dim, width, session.recipe.seed), dim * width),
    }
    return {
        name: {
            "model": f"{name.replace('_', ' ')} of the teacher to {width} dims",
            "params": params,
            "test": embedding_metrics(project(test), test),
            "val_best": embedding_metrics(project(val), val),
            "latency_ms": teacher_latency_ms,
        }
        for name, (project, params) in rows.items()
    }
