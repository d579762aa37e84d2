"""Cached teacher outputs: run the teacher once over the training split, train many times.

``kdforge cache RECIPE`` writes a folder with the teacher's logits for every training
sample, dense (``logits.npy``, float32, exact) or top-k compressed (``topk_log_probs.npy``
+ ``topk_indices.npy``), memory-mapped when read, beside ``manifest.json``: the teacher's
hash, the training data's hash, shapes and format. A recipe with ``teacher.cache: PATH``
then trains without running the teacher; a manifest that does not match the recipe's
teacher or data is refused.

With ``data.augment``, the cache holds ``views`` fixed augmented versions of every sample
(:class:`~kdforge.data.augment.FixedViews`, drawn from the seed) and training shows the
student view ``epoch % views``: teacher and student always see the same input, exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kdforge.data.augment import BatchAugment, FixedViews
from kdforge.errors import KdforgeError
from kdforge.losses.functional import TopK, topk_log_probs

if TYPE_CHECKING:
    from kdforge.run import Session
    from kdforge.teachers.teacher import Teacher

FORMAT_VERSION = 1
IN_MEMORY_BYTES = 2**30  # caches up to 1 GiB are loaded whole; larger ones stay memory-mapped


def data_hash(x: torch.Tensor, y: torch.Tensor) -> str:
    """Hash of a split's inputs and targets, as the trainer sees them."""
    digest = hashlib.sha256()
    for t in (x, y):
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def teacher_hash(session: Session) -> str:
    """Identity of the recipe's teacher: its section, and for a trained teacher everything
    that determines its training (the same key that reuses trained teachers)."""
    from kdforge.teachers.sources import teacher_cache_key

    return teacher_cache_key(session.recipe, session.recipe.teacher)


def expected_manifest(session: Session) -> dict[str, Any]:
    data = session.data
    return {
        "teacher_hash": teacher_hash(session),
        "data_hash": data_hash(data.train.x, data.train.y),
        "split": "train",
        "samples": len(data.train),
        "num_classes": data.num_classes,
        "augment": session.recipe.data.augment.model_dump(),
        "seed": session.recipe.seed,
    }


def fixed_views(session: Session, views: int) -> FixedViews | None:
    """The augmented views a cache is made of (None without augmentation)."""
    augment = BatchAugment(**session.recipe.data.augment.model_dump())
    if not augment:
        return None
    return FixedViews(augment, len(session.data.train), tuple(session.data.input_shape), views, session.recipe.seed)


@torch.no_grad()
def write_cache(session: Session, teacher: Teacher, teacher_entry: dict[str, Any], out: Path, topk: int | None = None, views: int = 1, batch_size: int = 512) -> dict[str, Any]:
    """Run ``teacher`` once over every view of the training split and write the cache;
    ``teacher_entry`` (its results.json row) is kept for the runs that use the cache."""
    augmented = fixed_views(session, views)
    if augmented is None and views != 1:
        raise KdforgeError(f"views={views} needs data.augment: without augmentation every view is the same input")
    x = session.data.train.x
    per_view = []
    for v in range(views):
        chunks = []
        for i in range(0, len(x), batch_size):
            index = torch.arange(i, min(i + batch_size, len(x)))
            batch = x[index].to(session.device)
            chunks.append(teacher(batch if augmented is None else augmented(batch, index, v)).float().cpu())
        per_view.append(torch.cat(chunks))
    logits = torch.stack(per_view)  # [views, N, K]
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**expected_manifest(session), "version": FORMAT_VERSION, "format": "dense" if topk is None else "topk", "k": topk, "views": views, "teacher": teacher_entry}
    if topk is None:
        np.save(out / "logits.npy", logits.numpy())
    else:
        sparse = topk_log_probs(logits, topk)
        np.save(out / "topk_log_probs.npy", sparse.log_probs.numpy())
        np.save(out / "topk_indices.npy", sparse.indices.to(torch.int32).numpy())
    manifest["bytes_per_sample"] = sum(p.stat().st_size for p in out.glob("*.npy")) / len(x)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


class CachedTeacher(nn.Module):
    """A teacher read from a cache: :meth:`lookup` gives the outputs of samples by index
    ([B] training indices -> logits [B, K] or a TopK form). It has no weights to run."""

    cached = True
    trainable, evolves, ema_decay = False, False, None  # a cache never changes

    def __init__(self, path: str | Path, session: Session):
        super().__init__()
        self.path = Path(path)
        manifest_file = self.path / "manifest.json"
        if not manifest_file.is_file():
            raise KdforgeError(f"teacher.cache '{self.path}' has no manifest.json; create it with: kdforge cache RECIPE --out {self.path}")
        self.manifest = json.loads(manifest_file.read_text())
        expected = expected_manifest(session)
        stale = [f"{k}: cache {self.manifest.get(k)!r}, recipe {v!r}" for k, v in expected.items() if self.manifest.get(k) != v]
        if stale:
            raise KdforgeError(f"teacher.cache '{self.path}' was made for another teacher or data ({'; '.join(stale)}); rebuild it with: kdforge cache RECIPE --out {self.path}")
        self.module = nn.Module()  # nothing to tap: a cache holds outputs only
        names = ["logits"] if self.manifest["format"] == "dense" else ["topk_log_probs", "topk_indices"]
        arrays = [np.load(self.path / f"{name}.npy", mmap_mode="r") for name in names]
        if sum(a.nbytes for a in arrays) <= IN_MEMORY_BYTES:  # small: hold it on the device, index like the data
            self.arrays = [torch.from_numpy(np.array(a)).to(session.device) for a in arrays]
        else:  # large: rows are read from the memory-mapped files on demand
            self.arrays = arrays

    def lookup(self, index: torch.Tensor, device: torch.device | str = "cpu", epoch: int = 0) -> torch.Tensor | TopK:
        """The outputs of samples ``index`` in the view training shows at ``epoch``."""
        view = epoch % self.manifest["views"]
        found = []
        for a in self.arrays:
            rows = a[view][index.to(a.device)] if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a[view][index.cpu().numpy()]))
            found.append(rows.to(device, non_blocking=True))
        return found[0] if len(found) == 1 else TopK(found[0], found[1].long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise KdforgeError("a cached teacher has outputs for training samples only (by index), it cannot run on new inputs")
