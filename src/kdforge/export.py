"""Student-only export: ``<stem>.safetensors`` (weights) + ``<stem>.json`` (how to rebuild).

``load_student(run_dir)`` rebuilds the student in its own class from these two files;
no pickle is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge._version import __version__
from kdforge.errors import KdforgeError
from kdforge.files import load_safetensors, load_torch, read_json, save_safetensors, write_folder_atomic, write_json
from kdforge.models import build_model, model_spec
from kdforge.registry import EXPORT_FORMATS  # noqa: F401  (its home: re-exported for the families)
from kdforge.taps import unwrap


def save_model(model: nn.Module, stem: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write ``stem.safetensors`` and ``stem.json``; returns the weights path."""
    stem = Path(stem)
    model = unwrap(model)
    weights = stem.parent / f"{stem.name}.safetensors"  # a dotted stem (student.pruned) keeps its dots
    save_safetensors(model.state_dict(), weights)
    meta = {
        "model": model_spec(model),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "kdforge_version": __version__,
        **(info or {}),
    }
    write_json(weights.with_suffix(".json"), meta)
    return weights


#: a run's folder of its student as transformers loads it, for the families whose students are transformers models
TRANSFORMERS_FOLDER = "student_hf"


def save_transformers(module: nn.Module, out: str | Path, tokenizer: str | None) -> Path:
    """A transformers model as the folder its ``save_pretrained`` writes (safetensors), written atomically, with the
    tokenizer ``tokenizer`` (a folder, a hub id or ``minilm``; kdforge's own ``bytes`` has none) beside it: what the
    Auto classes and ``AutoTokenizer`` load as they are."""
    from transformers.utils import logging

    from kdforge.data.text import load_tokenizer

    def fill(folder: Path) -> None:
        shown = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # a run's summary, not a bar per file written
        try:
            module.save_pretrained(folder)  # type: ignore[operator]
        finally:
            if shown:
                logging.enable_progress_bar()
        if tokenizer not in (None, "bytes"):
            load_tokenizer(tokenizer).save_pretrained(folder)

    return write_folder_atomic(out, fill)


def read_meta(weights: str | Path) -> dict[str, Any]:
    meta = Path(weights).with_suffix(".json")
    if not meta.exists():
        raise KdforgeError(f"'{meta}' is missing: kdforge needs it beside '{weights}' to know the architecture")
    found = read_json(meta, "model description")
    if not isinstance(found, dict):
        raise KdforgeError(
            f"model description '{meta}' is not a JSON object; write it again with kdforge.export.save_model"
        )
    return found


def load_model(weights: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model` and load its weights strictly."""
    spec = read_meta(weights).get("model")
    if not isinstance(spec, dict) or not {"name", "input_shape", "num_classes", "options"} <= set(spec):
        raise KdforgeError(
            f"'{Path(weights).with_suffix('.json')}' does not describe a kdforge model (no 'model' entry with name, "
            "input_shape, num_classes and options)"
        )
    model = build_model(
        spec["name"], input_shape=spec["input_shape"], num_classes=spec["num_classes"], **spec["options"]
    )
    load_state_strict(model, load_safetensors(weights), str(weights))
    return model.to(device)


def load_student(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The distilled student of a run directory (or a ``.safetensors`` file), in eval mode."""
    path = Path(path)
    weights = path / "student.safetensors" if path.is_dir() else path
    if not weights.exists():
        raise KdforgeError(f"no student at '{weights}': give a finished run directory or a .safetensors file")
    return load_model(weights, device).eval()


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """What a checkpoint file holds, never unpickling code: a ``.safetensors`` file (a dict
    of tensors), or a torch file read with ``weights_only=True`` (tensors, numbers, strings
    and containers of them). A file that pickles Python objects is refused with a clear error."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path, map_location, what="checkpoint")
    return load_torch(path, map_location, what="checkpoint")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in ``path`` (see :func:`read_checkpoint`). Lightning-style checkpoints (a
    ``state_dict`` entry, keys prefixed ``model.``) and wrapper prefixes (``module.`` from
    DDP, ``_orig_mod.`` from torch.compile) are unwrapped."""
    state = read_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KdforgeError(f"'{path}' does not hold a state dict of tensors")
    for prefix in ("model.", "module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a readable report of every mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"'{source}' does not fit {type(model).__name__}:"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        lines.append("  check that the model section (name and options, class count) matches the checkpoint")
        raise KdforgeError("\n".join(lines))
    model.load_state_dict(state)


def quantize_int8(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Post-training dynamic int8 quantisation of ``model``'s real-valued linear layers
    (weights int8, activations quantised on the fly; CPU inference). Returns a quantised
    copy and the names of the layers it changed."""
    import copy
    import warnings

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not m.weight.is_complex()]
    if not names:
        raise KdforgeError(f"{type(model).__name__} has no real-valued linear layers to quantise to int8")
    with (
        warnings.catch_warnings()
    ):  # torch.ao.quantization is deprecated in favour of torchao, which we do not depend on
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).cpu().eval(), set(names), dtype=torch.qint8
        )
    return quantized, names


def prune_student(model: nn.Module, amount: float, kind: str = "unstructured") -> tuple[nn.Module, list[str]]:
    """A pruned copy of ``model`` and the names of the layers pruned (real-valued linear and
    convolution weights), made permanent: ``unstructured`` zeroes the ``amount`` fraction of
    smallest-magnitude weights over all layers together (global L1); ``structured`` zeroes that
    fraction of each layer's output rows by L2 norm, sparing the last layer (its rows are the
    outputs themselves)."""
    import copy

    from torch.nn.utils import prune

    if not 0 <= amount <= 1:
        raise KdforgeError(f"the pruned fraction must be in [0, 1], got {amount}")
    pruned = copy.deepcopy(model).cpu().eval()
    layers = [
        (n, m)
        for n, m in pruned.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and not m.weight.is_complex()
    ]
    if kind == "structured":
        layers = layers[:-1]
    if not layers:
        raise KdforgeError(
            f"{type(model).__name__} has no real-valued linear or convolution layers to prune"
            + (" besides its output layer" if kind == "structured" else "")
        )
    if kind == "unstructured":
        prune.global_unstructured(
            [(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured, amount=amount
        )
    elif kind == "structured":
        for _, m in layers:
            prune.ln_structured(m, "weight", amount=amount, n=2, dim=0)
    else:
        raise KdforgeError(f"pruning kind must be 'unstructured' or 'structured', got '{kind}'")
    for _, m in layers:
        prune.remove(m, "weight")  # the mask is applied to the weight for good
    return pruned, [n for n, _ in layers]


def load_quantized(path: str | Path) -> nn.Module:
    """A student saved by ``kdforge export --quantize int8``: rebuilt from its float spec
    (``student.json``), quantised the same way, then given the saved int8 weights."""
    import warnings

    path = Path(path)
    model, _ = quantize_int8(load_model(path.parent / "student.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_state_dict(load_torch(path, what="int8 student"))
    return model.eval()


def load_run_teacher(run_dir: str | Path) -> nn.Module | None:
    """A run's trained teacher, in eval mode, when it was saved as a kdforge model (zoo
    teachers need their source to be rebuilt, so they give None)."""
    weights = Path(run_dir) / "teacher" / "teacher.safetensors"
    if not weights.exists() or "model" not in read_meta(weights):
        return None
    return load_model(weights).eval()
