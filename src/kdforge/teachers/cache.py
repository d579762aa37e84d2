"""Cached teacher outputs: run the teacher once over the training split, train many times.

``kdforge cache RECIPE`` writes a folder with the teacher's logits for every training
sample, dense (``logits.npy``, float32, exact) or top-k compressed (``topk_log_probs.npy``
+ ``topk_indices.npy``), and the teacher layers the recipe's loss terms tap
(``feature_<i>.npy``, float32 or float16), memory-mapped when read, beside
``manifest.json``: the teacher's hash, the training data's hash, shapes, format, and the
teacher's module names. A recipe with ``teacher.cache: PATH`` then trains without running
the teacher (feature terms resolve their layer names against an empty copy of the
teacher's module tree); a manifest that does not match the recipe's teacher or data, or
that lacks a layer the recipe reads, is refused.

With ``data.augment``, the cache holds ``views`` fixed augmented versions of every sample
(:class:`~kdforge.data.augment.FixedViews`, drawn from the seed) and training shows the
student view ``epoch % views``: teacher and student always see the same input, exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kdforge.data.augment import BatchAugment, FixedViews
from kdforge.data.bundle import in_memory
from kdforge.errors import KdforgeError
from kdforge.files import load_npy, read_json, remove_stale_tmp, save_npy, write_json
from kdforge.losses.functional import TopK, topk_log_probs
from kdforge.taps import FeatureTap
from kdforge.teachers.sources import teacher_cache_key

if TYPE_CHECKING:
    from kdforge.session import Session
    from kdforge.teachers.teacher import Teacher

FORMAT_VERSION = 2  # 2: tapped teacher layers and the module tree
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
    return teacher_cache_key(session.recipe, session.recipe.teacher)


def expected_manifest(session: Session) -> dict[str, Any]:
    data = session.data
    train = in_memory(data.train, "teacher.cache")
    return {
        "teacher_hash": teacher_hash(session),
        "data_hash": data_hash(train.x, train.y),
        "split": "train",
        "samples": len(data.train),
        "num_classes": data.num_classes,
        "augment": session.recipe.data.augment.model_dump(),
        "seed": session.recipe.seed,
    }


def fixed_views(session: Session, views: int) -> FixedViews | None:
    """The augmented views a cache is made of (None without augmentation)."""
    augment = BatchAugment.from_config(session.recipe.data.augment, session.data.scaling)
    if augment.randaugment is not None:
        raise KdforgeError(
            "a teacher cache stores fixed views drawn from data.augment.shift and noise; RandAugment views are not "
            "cached: remove data.augment.randaugment"
        )
    if not augment:
        return None
    return FixedViews(augment, len(session.data.train), tuple(session.data.input_shape), views, session.recipe.seed)


def module_tree(module: nn.Module) -> list[list[str]]:
    """The teacher's module names, each with its container kind ("ModuleList",
    "Sequential" or ""), in order: what resolving layer names needs."""
    kinds = (nn.ModuleList, nn.Sequential)
    return [[name, next((k.__name__ for k in kinds if isinstance(m, k)), "")] for name, m in module.named_modules()]


def skeleton(tree: list[list[str]]) -> nn.Module:
    """Empty modules named and nested like a cached teacher's (see :func:`module_tree`), so
    that layer names, block lists and layer mappings resolve as they would online."""
    make = {"ModuleList": nn.ModuleList, "Sequential": nn.Sequential, "": nn.Module}
    nodes: dict[str, nn.Module] = {}
    for name, kind in tree:
        nodes[name] = make[kind]()
        if name:
            parent, _, child = name.rpartition(".")
            nodes[parent].add_module(child, nodes[name])
    return nodes[""]


@torch.no_grad()
def write_cache(
    session: Session,
    teacher: Teacher,
    teacher_entry: dict[str, Any],
    out: Path,
    topk: int | None = None,
    views: int = 1,
    layers: Sequence[str] = (),
    feature_dtype: str = "float32",
    batch_size: int = 512,
) -> dict[str, Any]:
    """Run ``teacher`` once over every view of the training split and write the cache: its
    logits and the outputs of ``layers`` (module names in the teacher); ``teacher_entry``
    (its results.json row) is kept for the runs that use the cache."""
    augmented = fixed_views(session, views)
    if augmented is None and views != 1:
        raise KdforgeError(f"views={views} needs data.augment: without augmentation every view is the same input")
    tap = FeatureTap(teacher.module, {name: name for name in layers})
    x = in_memory(session.data.train, "kdforge cache").x
    outputs: dict[str, list[list[torch.Tensor]]] = {name: [] for name in ("logits", *layers)}  # name -> view -> chunks
    for v in range(views):
        for found in outputs.values():
            found.append([])
        for i in session.track(range(0, len(x), batch_size), f"caching view {v + 1}/{views}"):
            index = torch.arange(i, min(i + batch_size, len(x)))
            batch = x[index].to(session.device)
            tap.clear()
            outputs["logits"][v].append(
                teacher(batch if augmented is None else augmented(batch, index, v)).float().cpu()
            )
            for name in layers:
                outputs[name][v].append(tap.features[name].to("cpu", getattr(torch, feature_dtype)))
    tap.remove()
    stacked = {
        name: torch.stack([torch.cat(chunks) for chunks in per_view]) for name, per_view in outputs.items()
    }  # [views, N, ...]
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)
    logits = stacked.pop("logits")
    if topk is None:
        save_npy(out / "logits.npy", logits.numpy())
    else:
        sparse = topk_log_probs(logits, topk)
        save_npy(out / "topk_log_probs.npy", sparse.log_probs.numpy())
        save_npy(out / "topk_indices.npy", sparse.indices.to(torch.int32).numpy())
    features = {}
    for i, (name, values) in enumerate(stacked.items()):
        save_npy(out / f"feature_{i}.npy", values.numpy())
        features[name] = {"file": f"feature_{i}.npy", "shape": list(values.shape[2:]), "dtype": feature_dtype}
    manifest = {
        **expected_manifest(session),
        "version": FORMAT_VERSION,
        "format": "dense" if topk is None else "topk",
        "k": topk,
        "views": views,
        "features": features,
        "modules": module_tree(teacher.module),
        "teacher": teacher_entry,
    }
    manifest["bytes_per_sample"] = sum(p.stat().st_size for p in out.glob("*.npy")) / len(x)
    write_json(out / "manifest.json", manifest)  # last: a cache without it is incomplete
    return manifest


class CachedTeacher(nn.Module):
    """A teacher read from a cache: :meth:`lookup` gives the outputs of samples by index
    ([B] training indices -> logits [B, K] or a TopK form, and the cached layers' outputs).
    It has no weights to run; :attr:`module` is an empty copy of the teacher's module tree."""

    trainable, evolves, ema_decay = False, False, None  # a cache never changes
    arrays: dict[str, torch.Tensor | np.ndarray]  # on the device when small, else memory-mapped

    def __init__(self, path: str | Path, session: Session):
        super().__init__()
        self.path = Path(path)
        manifest_file = self.path / "manifest.json"
        if not manifest_file.is_file():
            raise KdforgeError(
                f"teacher.cache '{self.path}' has no manifest.json; create it with: kdforge cache RECIPE --out "
                f"{self.path}"
            )
        self.manifest = read_json(manifest_file, "teacher cache manifest")
        rebuild = f"rebuild it with: kdforge cache RECIPE --out {self.path}"
        if not isinstance(self.manifest, dict) or self.manifest.get("version") != FORMAT_VERSION:
            found = self.manifest.get("version") if isinstance(self.manifest, dict) else None
            raise KdforgeError(
                f"teacher.cache '{self.path}' has format version {found}, this kdforge reads {FORMAT_VERSION}; "
                f"{rebuild}"
            )
        lacking = sorted({"format", "views", "features", "modules", "teacher", "samples"} - set(self.manifest))
        if lacking:
            raise KdforgeError(f"teacher.cache manifest '{manifest_file}' lacks {', '.join(lacking)}; {rebuild}")
        expected = expected_manifest(session)
        stale = [
            f"{k}: cache {self.manifest.get(k)!r}, recipe {v!r}"
            for k, v in expected.items()
            if self.manifest.get(k) != v
        ]
        if stale:
            raise KdforgeError(
                f"teacher.cache '{self.path}' was made for another teacher or data ({'; '.join(stale)}); {rebuild}"
            )
        self.module = skeleton(self.manifest["modules"])
        files = (
            {"logits": "logits.npy"}
            if self.manifest["format"] == "dense"
            else {"topk_log_probs": "topk_log_probs.npy", "topk_indices": "topk_indices.npy"}
        )
        files.update({name: f["file"] for name, f in self.manifest["features"].items()})
        arrays: dict[str, torch.Tensor | np.ndarray] = {
            name: load_npy(self.path / file, mmap_mode="r", what="teacher cache array") for name, file in files.items()
        }
        rows = (self.manifest["views"], self.manifest["samples"])
        for name, array in arrays.items():
            if tuple(array.shape[:2]) != rows:
                raise KdforgeError(
                    f"teacher cache array '{self.path / files[name]}' has shape {list(array.shape)}, but the manifest "
                    "promises "
                    f"{rows[0]} view(s) of {rows[1]} samples first; {rebuild}"
                )
        if (
            sum(a.nbytes for a in arrays.values()) <= IN_MEMORY_BYTES
        ):  # small: hold it on the device, index like the data
            self.arrays = {name: torch.from_numpy(np.array(a)).to(session.device) for name, a in arrays.items()}
        else:  # large: rows are read from the memory-mapped files on demand
            self.arrays = arrays

    @property
    def layers(self) -> list[str]:
        """The teacher layers whose outputs the cache holds."""
        return list(self.manifest["features"])

    def _rows(self, name: str, view: int, index: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        a = self.arrays[name]
        rows = (
            a[view][index.to(a.device)]
            if isinstance(a, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(a[view][index.cpu().numpy()]))
        )
        return rows.to(device, non_blocking=True)

    def lookup(
        self, index: torch.Tensor, device: torch.device | str = "cpu", epoch: int = 0
    ) -> tuple[torch.Tensor | TopK, dict[str, torch.Tensor]]:
        """The outputs of samples ``index`` in the view training shows at ``epoch``: logits
        (or their top-k form), and each cached layer's output (float32)."""
        view = epoch % self.manifest["views"]
        if self.manifest["format"] == "dense":
            logits: torch.Tensor | TopK = self._rows("logits", view, index, device)
        else:
            logits = TopK(
                self._rows("topk_log_probs", view, index, device),
                self._rows("topk_indices", view, index, device).long(),
            )
        return logits, {name: self._rows(name, view, index, device).float() for name in self.layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise KdforgeError(
            "a cached teacher has outputs for training samples only (by index), it cannot run on new inputs"
        )
