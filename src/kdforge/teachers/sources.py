"""Where teachers come from. ``train``: fit one from the recipe (cached by a hash of what
determines it). ``checkpoint``: load a kdforge model or a plain state dict. ``ensemble``:
combine several. ``ema``: the moving average of the student (self-distillation).

A source is ``fn(session, cfg, where, student) -> (module, info)``: ``cfg`` is its teacher
section, ``where`` the folder for what it saves, ``student`` the freshly built student when
there is one (only ``ema`` uses it, for its architecture)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdforge import distributed
from kdforge.config.recipe import teacher_data, teacher_optim
from kdforge.data.augment import student_only
from kdforge.errors import KdforgeError, required
from kdforge.export import load_model, load_state_strict, read_meta, read_state_dict, save_model
from kdforge.files import load_safetensors, read_json, save_safetensors, write_atomic, write_json
from kdforge.models import build_model
from kdforge.registry import TEACHER_SOURCES
from kdforge.taps import unwrap

if TYPE_CHECKING:
    from kdforge.config import Recipe, TeacherConfig
    from kdforge.session import Session

Source = tuple[nn.Module, dict[str, Any]]


@TEACHER_SOURCES.register("train")
def train_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """Train the teacher on the (augmented) training split first, with cross-entropy,
    selected on val; reuse a teacher trained earlier under ``log.dir`` with the same settings."""
    data = session.data
    torch.manual_seed(session.recipe.seed)
    spec = required(cfg.model, "teacher.model")
    module = build_model(spec.name, input_shape=data.input_shape, num_classes=data.num_classes, **spec.options)
    return cached_fit(session, cfg, where, module.to(session.device), cfg.train)


def cached_fit(
    session: Session,
    cfg: TeacherConfig,
    where: Path,
    module: nn.Module,
    fit: Any,
    head: nn.Module | None = None,
    adapter: nn.Module | None = None,
) -> Source:
    """Fit ``module`` with cross-entropy (``fit``: epochs, lr, label smoothing), selected on
    val, or reuse the weights of an earlier fit with the same settings (this run's
    ``where/teacher.safetensors``, or the newest match under ``log.dir``). With ``head``,
    only that submodule trains; ``adapter`` prepares the batches as the teacher expects."""
    key = teacher_cache_key(session.recipe, cfg)
    stem = where / "teacher"
    own = stem.with_suffix(".safetensors")
    # rank 0 decides, so that every rank takes the same branch (a rank that saw rank 0's copy land would skip the copy's
    # barrier)
    cached = distributed.on_main(lambda: own if own.exists() else _find_cached(Path(session.recipe.log.dir), key))
    if cached is not None:
        meta = dict(read_meta(cached).get("teacher") or {})
        origin = _origin(cached)
        if cached != own:
            distributed.on_main(lambda: _copy_teacher(cached, stem, {**meta, "cached_from": origin}))
        # the file kdforge wrote, read as it is: a module whose names all start with "model." (a Hugging Face teacher)
        # is no Lightning checkpoint to unwrap
        load_state_strict(module, load_safetensors(cached, what="trained teacher"), str(cached))
        session.console.print(f"teacher: reusing the one trained with the same settings in {origin}", markup=False)
        return module.eval(), {**meta, "cached_from": origin}
    session.console.print(
        f"teacher: training it for {fit.epochs} epochs (none trained with these settings under "
        f"{session.recipe.log.dir})" + _beside_init_from(session.recipe),
        markup=False,
    )
    info = session.fit_teacher(module, fit, where, head, adapter)  # the run trains it: teachers sit below the trainer
    meta = {"teacher": {**info, "cache_key": key}}
    if not distributed.is_main():  # every rank holds the same fitted weights; rank 0 writes them
        return module.eval(), info
    if hasattr(module, "kdforge_spec"):
        save_model(module, stem, meta)
    else:  # a zoo model: its source rebuilds the architecture, the weights come from here
        save_safetensors(module.state_dict(), stem.with_suffix(".safetensors"))
        write_json(stem.with_suffix(".json"), meta)
    return module.eval(), info


def _beside_init_from(recipe: Recipe) -> str:
    """A student continuing an earlier run is distilled from a teacher trained anew here, with this recipe's settings:
    a second stage with its own optimiser fits another teacher, often a weaker one. Say how to keep the first's."""
    if recipe.student.init_from is None:
        return ""
    return (
        f"; the student continues {recipe.student.init_from}: to distil it from that run's own teacher, give "
        "teacher: {source: checkpoint, path: <that run>/teacher/teacher.safetensors}"
    )


def _copy_teacher(cached: Path, stem: Path, teacher_meta: dict[str, Any]) -> None:
    """Copy a reused teacher into this run (weights, then its description with ``cached_from``)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    with cached.open("rb") as source:
        write_atomic(stem.with_suffix(".safetensors"), lambda handle: shutil.copyfileobj(source, handle))
    write_json(stem.with_suffix(".json"), {**read_meta(cached), "teacher": teacher_meta})


@TEACHER_SOURCES.register("checkpoint")
def checkpoint_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """Load a saved model: a kdforge ``.safetensors`` (+ ``.json``), a run directory (its
    student), or a plain PyTorch state dict (``.pt``/``.pth``; needs ``teacher.model``)."""
    data = session.data
    module = load_checkpoint_model(required(cfg.path, "teacher.path"), cfg.model, data.input_shape, data.num_classes)
    return module.to(session.device), {"path": str(cfg.path)}


def checkpoint_file(path: str | Path) -> Path:
    """A teacher checkpoint: a file, or a run directory (its student)."""
    path = Path(path)
    return path / "student.safetensors" if path.is_dir() else path


def teacher_architecture(cfg: TeacherConfig) -> tuple[str, dict[str, Any]]:
    """(model name, options) of the teacher: its model section, or the description kdforge
    saved beside a checkpoint (``teacher.json`` next to ``teacher.safetensors``)."""
    if cfg.model is not None:
        return cfg.model.name, cfg.model.options
    path = checkpoint_file(required(cfg.path, "teacher.path"))
    if path.suffix != ".safetensors" or not path.with_suffix(".json").exists():
        raise KdforgeError(
            f"teacher '{path}' has no kdforge description beside it ({path.with_suffix('.json').name}); set "
            "teacher.model (name and options)"
        )
    spec = read_meta(path)["model"]
    return spec["name"], spec["options"]


def load_checkpoint_model(
    path: str | Path, model_cfg: Any, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    path = checkpoint_file(path)
    if not path.exists():
        raise KdforgeError(
            f"teacher checkpoint '{path}' not found; set teacher.path to a .safetensors/.pt file or a run directory"
        )
    if path.suffix == ".safetensors" and path.with_suffix(".json").exists():
        spec = read_meta(path)["model"]
        if spec["num_classes"] != num_classes:
            raise KdforgeError(
                f"the teacher at '{path}' predicts {spec['num_classes']} classes but the dataset has {num_classes}; "
                "use a teacher trained on the same classes"
            )
        return load_model(path)
    if model_cfg is None:
        read_state_dict(path)  # a damaged file, or a pickle under another name, says so first
        raise KdforgeError(
            f"'{path}' holds weights only; set teacher.model (name and options) so kdforge can build the architecture"
        )
    module = build_model(model_cfg.name, input_shape=input_shape, num_classes=num_classes, **model_cfg.options)
    load_state_strict(module, read_state_dict(path), str(path))
    return module


# What a trained teacher's fit reads from the recipe's train section (Session.fit_teacher); the rest is about speed,
# placement or the student only (channels_last, compile, device, checkpointing, EMA, FSDP, on-policy batches).
TEACHER_FIT_SETTINGS = {"amp", "grad_clip", "accumulate", "early_stopping", "val_every"}


def teacher_cache_key(recipe: Recipe, cfg: TeacherConfig) -> str:
    """Hash of everything that determines a teacher kdforge trains (``source: train``, or a ``finetune``)."""
    fit_key = "train" if cfg.source == "train" else "finetune"
    teacher = _what_it_is(cfg)
    fit = getattr(cfg, fit_key)
    if teacher.get(fit_key):  # its optimiser and data count as resolved below: however they are spelled, one teacher
        for key in ("lr", "optim", "data"):
            teacher[fit_key].pop(key, None)
    optim = teacher_optim(recipe.optim, fit).model_dump(mode="json")
    data = teacher_data(recipe.data, fit)
    if student_only(data.augment):  # token changes its fit never reads
        data = data.model_copy(update={"augment": data.augment.model_copy(update={"tokens": None})})
    parts = {
        "teacher": teacher,
        # a dataset's unlabelled_* options only add inputs the teacher never trains on (DataBundle.unlabelled)
        "data": {
            k: v
            for k, v in data.model_dump(mode="json").items()
            if not k.startswith("unlabelled") and k not in ("eval_batch_size", "workers")
        },
        "seed": recipe.seed,
        "optim": optim,
        "train": recipe.train.model_dump(mode="json", include=TEACHER_FIT_SETTINGS),
    }
    return _digest(parts)


def teacher_outputs_key(recipe: Recipe, cfg: TeacherConfig) -> str:
    """Hash of what determines a teacher's outputs on given inputs: a teacher kdforge trains is its
    :func:`teacher_cache_key`; a loaded one is its section (and the checkpoint file's size and time), whatever
    the student's optimiser, batch size or memory layout."""
    if fitted(cfg):
        return teacher_cache_key(recipe, cfg)
    files = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in _weight_files(cfg) if f.is_file()]
    return _digest({"teacher": _what_it_is(cfg), "files": files})


def _weight_files(cfg: TeacherConfig) -> list[Path]:
    own = [checkpoint_file(f) for f in (cfg.path, cfg.checkpoint, cfg.pretrained_file) if f]
    return own + [f for member in cfg.members or [] for f in _weight_files(member)]


def fitted(cfg: TeacherConfig) -> list[TeacherConfig]:
    """The teacher sections kdforge fits before distilling: this one, its members, or none."""
    own = [cfg] if cfg.source == "train" or cfg.finetune is not None else []
    return own + [fit for member in cfg.members or [] for fit in fitted(member)]


def _what_it_is(cfg: TeacherConfig) -> dict[str, Any]:
    """The teacher section without how it is used (cached, co-trained, its learning rate and task weight)."""
    return cfg.model_dump(mode="json", exclude={"cache", "trainable", "lr", "ce_weight"})


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def trained_teacher(recipe: Recipe, cfg: TeacherConfig) -> str | None:
    """Where the teacher that ``train`` will reuse for ``cfg`` was trained (None: ``train`` trains one)."""
    found = _find_cached(Path(recipe.log.dir), teacher_cache_key(recipe, cfg))
    return None if found is None else _origin(found)


def _origin(weights: Path) -> str:
    """The folder a saved teacher was trained in: its own, or the one its copy names."""
    return str(read_meta(weights).get("teacher", {}).get("cached_from", weights.parent))


def _find_cached(log_dir: Path, key: str) -> Path | None:
    """The newest ``teacher.safetensors`` under ``<log_dir>/*/teacher/`` trained with ``key``."""
    candidates = sorted(log_dir.glob("*/teacher/**/teacher.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for meta in candidates:
        try:
            found = read_json(meta, "teacher description")
        except KdforgeError:  # a damaged teacher from another run is not reused, and not our error
            continue
        if (
            isinstance(found, dict)
            and isinstance(found.get("teacher"), dict)
            and found["teacher"].get("cache_key") == key
        ):
            return meta.with_suffix(".safetensors")
    return None


@TEACHER_SOURCES.register("ensemble")
def ensemble_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """Several teachers (any source that predicts logits, and at most one ``ema`` member: the
    moving average of the student) whose logits are averaged (``combine: mean``) or weighted
    (``combine: weighted``, ``weights``). Each member is also a tappable submodule
    ``members.i`` (its own logits: ``ensemble_kd``'s gate, a term's ``member: i``) and sees the
    batch as it expects (its ``adapt``, or a timm model's own pretrained config)."""
    members, infos = [], []
    for i, member in enumerate(required(cfg.members, "teacher.members")):
        module, info = TEACHER_SOURCES.get(member.source)(session, member, where / f"member{i}", student)
        members.append(module)
        infos.append({k: v for k, v in info.items() if k != "history"})
    return ensemble(session, cfg, members), {"members": infos, "combine": cfg.combine}


def ensemble(session: Session, cfg: TeacherConfig, members: list[nn.Module]) -> EnsembleTeacher:
    """The ensemble of ``members`` (built from ``cfg.members``), each with its input adapter."""
    member_cfgs = required(cfg.members, "teacher.members")
    adapters = [session.adapter(member_cfg, module) for member_cfg, module in zip(member_cfgs, members)]
    return EnsembleTeacher(members, cfg.weights, adapters).to(session.device)


@TEACHER_SOURCES.register("ema")
def ema_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """Self-distillation: the teacher is an exponential moving average of the student
    (``decay`` per optimiser step). Built with the student's architecture; its weights are the
    student's when training starts (:meth:`Teacher.start_ema`)."""
    if student is not None:
        return copy.deepcopy(unwrap(student)), {"decay": cfg.decay}
    with torch.random.fork_rng(devices=[]):  # building it must not shift what the recipe's seed draws next
        return session.build_student(), {"decay": cfg.decay}


class EnsembleTeacher(nn.Module):
    """Combined logits of several models: Σ_m w_m z_m with w normalised to sum to one
    (equal weights by default). [B, ...] -> [B, ..., K]. ``adapters`` (one per member, None
    for none) turn the batch into what each member expects."""

    def __init__(
        self,
        members: list[nn.Module],
        weights: list[float] | None = None,
        adapters: Sequence[nn.Module | None] | None = None,
    ):
        super().__init__()
        classes = {c for m in members if (c := getattr(m, "kdforge_spec", {}).get("num_classes")) is not None}
        if len(classes) > 1:
            raise KdforgeError(f"ensemble members predict different class counts: {sorted(classes)}")
        self.members = nn.ModuleList(members)
        self.adapters = nn.ModuleList(a if a is not None else nn.Identity() for a in adapters or [None] * len(members))
        w = torch.tensor(weights if weights is not None else [1.0] * len(members), dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(adapt(x)).float() for m, adapt in zip(self.members, self.adapters)])  # [M, B, ..., K]
        return torch.tensordot(self.weights, logits, dims=1)
