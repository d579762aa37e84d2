"""Cached teacher outputs: run the teacher once over the training split, train many times.

``kdforge cache RECIPE`` writes a folder with the teacher's logits for every training
sample, dense (float32, exact) or top-k compressed (log-probabilities in float16 or 8 bits,
class or token ids packed at the bits the vocabulary needs, :mod:`._topk_codec`: a
1.28M-sample, 1000-class cache with top-10 is ~38 MB; a language model's top 32 of a 128k
vocabulary takes 132 bytes per token, 100 with 8-bit log-probabilities), and the
outputs of the teacher layers the recipe's loss terms tap (float32 or float16). The arrays
are written in shards while the teacher runs (an interrupted ``kdforge cache`` resumes from
its last finished shard), memory-mapped when read, beside ``manifest.json``: the teacher's
hash, the training data's hash, shapes, format, and the teacher's module names. A recipe
with ``teacher.cache: PATH`` then trains without running the teacher (feature terms resolve
their layer names against an empty copy of the teacher's module tree); a manifest that does
not match the recipe's teacher or data, or that lacks a layer the recipe reads, is refused.

With ``data.augment`` (in-memory data), the cache holds ``views`` fixed augmented versions of
every sample (:class:`~kdforge.data.augment.FixedViews`, drawn from the seed); for data read
from disk, view v is the sample as its dataset's random transforms (crops, flips) draw it at
epoch v. Training shows the student view ``epoch % views``: teacher and student always see
the same input, exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from kdforge.data.augment import BatchAugment, FixedViews
from kdforge.data.bundle import Split
from kdforge.errors import KdforgeError
from kdforge.files import read_json, remove_stale_tmp, write_json
from kdforge.losses.chunked import LMHead, default_chunk, handing_heads
from kdforge.losses.functional import TopK, topk_log_probs
from kdforge.taps import FeatureTap
from kdforge.teachers._shards import ShardBuffer, ShardedArray, shard_count, shards_done
from kdforge.teachers._topk_codec import decode_log_probs, encode_log_probs, id_bits, pack_ids, unpack_ids
from kdforge.teachers.sources import teacher_outputs_key

if TYPE_CHECKING:
    from kdforge.session import Session
    from kdforge.teachers.teacher import Teacher

FORMAT_VERSION = 4  # 3: sharded arrays, top-k in float16; 4: top-k ids packed, log-probs in 16 or 8 bits
IN_MEMORY_BYTES = 2**30  # caches up to 1 GiB are loaded whole; larger ones stay memory-mapped
SHARD_BYTES = 64 * 2**20  # about this much teacher output per shard file
NOT_DATA = {"batch_size", "eval_batch_size", "workers", "augment"}  # data settings that do not change the samples


def data_hash(session: Session) -> str:
    """Hash of the training split as the teacher sees it: of its inputs and targets when in memory; of
    the recipe's data section and the labels when read from disk (hashing every decoded sample would
    cost a pass over the data)."""
    train = session.data.train
    digest = hashlib.sha256()
    if isinstance(train, Split):
        tensors = [train.x, train.y]
    else:
        data = session.recipe.data.model_dump(mode="json", exclude=NOT_DATA)
        digest.update(json.dumps([data, len(train)], sort_keys=True).encode())
        tensors = [] if train.labels is None else [torch.as_tensor(train.labels)]
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def teacher_hash(session: Session) -> str:
    """Identity of the recipe's teacher: what determines its outputs (:func:`teacher_outputs_key`)."""
    return teacher_outputs_key(session.recipe, session.teacher_config)


def expected_manifest(session: Session) -> dict[str, Any]:
    """What a cache must say of itself to serve this recipe; the seed only where it draws the cached views."""
    augment = session.recipe.data.augment
    random_views = bool(augment.shift or augment.noise) or not isinstance(session.data.train, Split)
    return {
        "teacher_hash": teacher_hash(session),
        "data_hash": data_hash(session),
        "split": "train",
        "samples": len(session.data.train),
        "num_classes": session.data.num_classes,
        "augment": session.recipe.data.augment.model_dump(mode="json"),
        **({"seed": session.recipe.seed} if random_views else {}),
    }


def fixed_views(session: Session, views: int) -> FixedViews | None:
    """The augmented views a cache of in-memory data is made of (None without ``data.augment``)."""
    augment = BatchAugment.from_config(session.recipe.data.augment, session.data.scaling)
    if augment.randaugment is not None:
        raise KdforgeError(
            "a teacher cache stores fixed views drawn from data.augment.shift and noise; RandAugment views are not "
            "cached: remove data.augment.randaugment"
        )
    if not augment:
        return None
    if not isinstance(session.data.train, Split):
        raise KdforgeError(
            "a teacher cache of data read from disk stores the views the dataset's own random transforms draw "
            "(for images: data.image.train_crop and flip); data.augment views are for data held in memory: "
            "remove data.augment"
        )
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


class _Outputs:
    """What the cache keeps of one batch: the teacher's logits (dense, or top-k: log-probabilities in float16
    or 8 bits and token ids packed at the bits the vocabulary needs, :mod:`._topk_codec`) and its tapped
    layers, as NumPy rows. A language-model teacher that hands its LM head has its top k taken a chunk of
    tokens at a time: its whole logits never exist."""

    def __init__(
        self, teacher: Teacher, layers: Sequence[str], topk: int | None, feature_dtype: str, logprob_bits: int = 16
    ):
        self.teacher, self.layers, self.topk, self.logprob_bits = teacher, list(layers), topk, logprob_bits
        self.feature_dtype = getattr(torch, feature_dtype)
        self.tap = FeatureTap(teacher.module, {name: name for name in layers})
        self.vocab = 0

    def __call__(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        self.tap.clear()
        if self.topk is None:
            out = {"logits": self.teacher(x).float().cpu().numpy()}
        else:
            sparse = self._top(x)
            out = {
                "topk_log_probs": encode_log_probs(sparse.log_probs, self.logprob_bits),
                "topk_ids": pack_ids(sparse.indices.cpu().numpy(), id_bits(self.vocab)),
            }
        for i, name in enumerate(self.layers):
            out[f"feature_{i}"] = self.tap.features[name].to("cpu", self.feature_dtype).numpy()
        return out

    def _top(self, x: torch.Tensor) -> TopK:
        topk = cast(int, self.topk)
        with handing_heads(self.teacher.module):
            out = self.teacher(x)
        self.vocab = out.shape[-1]
        if not isinstance(out, LMHead):
            return topk_log_probs(out.float(), topk)
        rows = out.rows()
        chunk = default_chunk(self.vocab, rows.hidden.device)
        parts = [
            topk_log_probs(rows.logits(slice(a, a + chunk)).float(), topk) for a in range(0, len(rows.hidden), chunk)
        ]
        shape = (*out.hidden.shape[:-1], topk)
        return TopK(*(torch.cat([getattr(p, f) for p in parts]).view(shape) for f in TopK._fields))


def _begin(out: Path, plan: dict[str, Any]) -> None:
    """Start (or resume) writing a cache to ``out``; what is there must be a part of the same cache."""
    (out / "shards").mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)
    plan_file = out / "plan.json"
    if plan_file.is_file():
        before = read_json(plan_file, "teacher cache plan")
        changed = [k for k in plan if not isinstance(before, dict) or before.get(k) != plan[k]]
        if changed:
            raise KdforgeError(
                f"'{out}' holds (part of) a teacher cache made with other settings ({', '.join(changed)}); "
                "remove it or choose another --out"
            )
    elif (out / "manifest.json").exists() or any((out / "shards").iterdir()):
        raise KdforgeError(f"'{out}' holds a teacher cache of an older format; remove it or choose another --out")
    write_json(plan_file, plan)


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
    shard_bytes: int | None = None,
    logprob_bits: int = 16,
) -> dict[str, Any]:
    """Run ``teacher`` once over every view of the training split and write the cache: its
    logits and the outputs of ``layers`` (module names in the teacher), shard by shard;
    shards already in ``out`` from an interrupted run of the same cache are kept.
    ``teacher_entry`` (its results.json row) is kept for the runs that use the cache. A shard holds
    about ``shard_bytes`` (default :data:`SHARD_BYTES`) of outputs, in whole batches."""
    if getattr(teacher.module, "own_tokens", False):
        raise KdforgeError(
            "this teacher reads the data in its own tokens: its outputs name no token of the data's, and it is "
            "distilled online (drop the cache)"
        )
    augmented = fixed_views(session, views)
    if augmented is None and views != 1 and isinstance(session.data.train, Split):
        raise KdforgeError(f"views={views} needs data.augment: without augmentation every view is the same input")
    loader = session.batches(session.data.train, batch_size)  # closed with the session
    loader.indexed, loader.fixed_views, loader.cached_views = True, augmented, views
    outputs = _Outputs(teacher, layers, topk, feature_dtype, logprob_bits)
    try:
        probe = outputs(next(iter(loader.epoch(0)))[0])  # the rows' shapes and sizes
        row_bytes = sum(rows[0].nbytes for rows in probe.values())
        batches_per_shard = max(1, (shard_bytes or SHARD_BYTES) // (row_bytes * batch_size))
        plan = {
            **expected_manifest(session),
            "version": FORMAT_VERSION,
            "format": "dense" if topk is None else "topk",
            "k": topk,
            **({"id_bits": id_bits(outputs.vocab), "logprob_bits": logprob_bits} if topk is not None else {}),
            "views": views,
            "arrays": {name: {"shape": list(rows.shape[1:]), "dtype": str(rows.dtype)} for name, rows in probe.items()},
            "features": {name: f"feature_{i}" for i, name in enumerate(layers)},
            "shard_samples": batches_per_shard * batch_size,
        }
        plan = json.loads(json.dumps(plan))  # as it reads back from plan.json
        _begin(out, plan)
        for view in range(views):
            _write_view(session, loader, outputs, out, plan, view, batches_per_shard)
    finally:
        outputs.tap.remove()
    samples = len(session.data.train)
    manifest = {
        **plan,
        "modules": module_tree(teacher.module),
        "teacher": teacher_entry,
        "bytes_per_sample": sum(p.stat().st_size for p in (out / "shards").glob("*.npy")) / samples,
    }
    if topk is not None and session.data.task == "lm":  # per token position: what a corpus of N tokens takes
        manifest["bytes_per_token"] = sum(
            np.dtype(a["dtype"]).itemsize * a["shape"][-1] for n, a in plan["arrays"].items() if n.startswith("topk")
        )
    write_json(out / "manifest.json", manifest)  # last: a cache without it is incomplete
    return manifest


def _write_view(
    session: Session, loader: Any, outputs: _Outputs, out: Path, plan: dict[str, Any], view: int, per_shard: int
) -> None:
    """Write the shards of one view that ``out`` does not have yet."""
    samples, shard_samples = plan["samples"], plan["shard_samples"]
    total = shard_count(samples, shard_samples)
    shard = shards_done(out, list(plan["arrays"]), view, samples, shard_samples)
    if shard == total:
        return
    if shard:
        session.console.print(
            f"view {view + 1}: {shard} of {total} shards were already written, going on", markup=False
        )
    buffer = ShardBuffer()
    start = shard * per_shard
    batches = loader.epoch(view, start=start)
    for x, _, _ in session.track(batches, f"caching view {view + 1}/{plan['views']}", total=len(loader) - start):
        for name, rows in outputs(x).items():
            buffer.add(name, rows)
        if len(buffer) == shard_samples:
            buffer.flush(out, view, shard)
            shard += 1
    if len(buffer):
        buffer.flush(out, view, shard)


class CachedTeacher(nn.Module):
    """A teacher read from a cache: :meth:`lookup` gives the outputs of samples by index
    ([B] training indices -> logits [B, K] or a TopK form, and the cached layers' outputs).
    It has no weights to run; :attr:`module` is an empty copy of the teacher's module tree."""

    trainable, evolves, ema_decay = False, False, None  # a cache never changes
    arrays: dict[str, torch.Tensor | ShardedArray]  # on the device when small, else memory-mapped shards

    def __init__(self, path: str | Path, session: Session):
        super().__init__()
        self.path = Path(path)
        manifest_file = self.path / "manifest.json"
        if not manifest_file.is_file():
            raise KdforgeError(
                f"teacher.cache '{self.path}' has no manifest.json (an unfinished cache: run kdforge cache again to "
                f"finish it); create it with: kdforge cache RECIPE --out {self.path}"
            )
        self.manifest = read_json(manifest_file, "teacher cache manifest")
        rebuild = f"rebuild it with: kdforge cache RECIPE --out {self.path}"
        if not isinstance(self.manifest, dict) or self.manifest.get("version") != FORMAT_VERSION:
            found = self.manifest.get("version") if isinstance(self.manifest, dict) else None
            raise KdforgeError(
                f"teacher.cache '{self.path}' has format version {found}, this kdforge reads {FORMAT_VERSION}; "
                f"{rebuild}"
            )
        needed = {"format", "views", "features", "modules", "teacher", "samples", "arrays", "shard_samples"}
        if lacking := sorted(needed - set(self.manifest)):
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
        m = self.manifest
        sharded = {
            name: ShardedArray(self.path, name, m["views"], m["samples"], m["shard_samples"], a["shape"], a["dtype"])
            for name, a in m["arrays"].items()
        }
        if sum(a.nbytes for a in sharded.values()) <= IN_MEMORY_BYTES:  # small: on the device, indexed like the data
            self.arrays = {name: torch.from_numpy(a.whole()).to(session.device) for name, a in sharded.items()}
        else:  # large: rows are read from the memory-mapped shards on demand
            self.arrays = dict(sharded)

    def describe(self) -> str:
        m = self.manifest
        return f"its outputs read from the cache {self.path} ({m['samples']:,} samples x {m['views']} view(s))"

    @property
    def layers(self) -> list[str]:
        """The teacher layers whose outputs the cache holds."""
        return list(self.manifest["features"])

    def _rows(self, name: str, view: int, index: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        a = self.arrays[name]
        rows = (
            a[view][index.to(a.device)]
            if isinstance(a, torch.Tensor)
            else torch.from_numpy(a.rows(view, index.cpu().numpy()))
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
            k, bits = self.manifest["k"], self.manifest["id_bits"]
            logits = TopK(
                decode_log_probs(self._rows("topk_log_probs", view, index, device)),
                unpack_ids(self._rows("topk_ids", view, index, device), k, bits),
            )
        features = self.manifest["features"]
        return logits, {name: self._rows(features[name], view, index, device).float() for name in self.layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise KdforgeError(
            "a cached teacher has outputs for training samples only (by index), it cannot run on new inputs"
        )
