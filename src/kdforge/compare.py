"""``kdforge compare``: teacher and students side by side, measured.

From finished runs: each model's test score (accuracy or PSNR) and its retention (% of the
teacher's score), and from fresh measurements: params, latency, throughput and peak memory
at the given sequence lengths (sequence models take any length; other models are measured
at their own input size). From recipes (``--models``): the same measurements on the
untrained architectures, without a score. A plot of latency against length is written next
to the JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge.bench import benchmark
from kdforge.data import recipe_data
from kdforge.errors import KdforgeError
from kdforge.evaluate import score
from kdforge.export import load_run_teacher, load_student
from kdforge.family import student_options
from kdforge.files import read_json, save_figure
from kdforge.models import build_model
from kdforge.runner import load_run_recipe


def run_models(run_dirs: list[Path]) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Entries (label, model, test metrics) of the runs' teacher (the first run's) and
    students, and an example input of their data."""

    entries = []
    for i, run_dir in enumerate(run_dirs):
        results_file = run_dir / "results.json"
        if not results_file.exists():
            raise KdforgeError(
                f"'{run_dir}' has no results.json: compare finished runs (or architectures with --models)"
            )
        results = read_json(results_file, "run results")
        teacher = load_run_teacher(run_dir) if i == 0 else None
        if teacher is not None:
            entries.append({"label": "teacher", "model": teacher, "test": results["teacher"]["test"]})
        entries.append(
            {"label": f"student ({run_dir.name})", "model": load_student(run_dir), "test": results["student"]["test"]}
        )
    recipe = load_run_recipe(run_dirs[0])
    return entries, recipe_data(recipe.data, recipe.seed).test.first(1)[0]


def recipe_models(recipes: list[Any]) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Entries for the untrained teacher (``source: train``) and student of each recipe."""
    data = recipe_data(recipes[0].data, recipes[0].seed)
    entries = []
    for recipe in recipes:
        teacher = recipe.teacher
        built = teacher.model if teacher is not None and teacher.source == "train" else None
        for role, cfg in (("teacher", built), ("student", recipe.student.model)):
            if cfg is None:
                continue
            options = (
                student_options(recipe) if role == "student" else cfg.options
            )  # a preset sizes the student from its teacher
            model = build_model(cfg.name, input_shape=data.input_shape, num_classes=data.num_classes, **options).eval()
            entries.append({"label": f"{role} ({recipe.name})", "model": model, "test": None})
    return entries, data.test.first(1)[0]


def measure(
    entries: list[dict[str, Any]], example: torch.Tensor, lengths: list[int] | None, batch: int, warmup: int, iters: int
) -> list[dict[str, Any]]:
    """Rows for the table and the JSON: score, retention, params and speed per length."""
    teacher_score = next((score(e["test"]) for e in entries if e["label"] == "teacher" and e["test"]), None)
    rows = []
    for entry in entries:
        row: dict[str, Any] = {"model": entry["label"], "test": entry["test"]}
        if entry["test"] and teacher_score:
            row["retention_pct"] = 100 * score(entry["test"]) / teacher_score
        row["speed"] = {}
        for length in _lengths(entry["model"], example, lengths):
            x = example if length is None else _resized(example, length)
            measured = benchmark(entry["model"], x, [batch], warmup, iters)
            row["params"] = measured["params"]
            row["speed"][str(length or example.shape[-1])] = measured["batches"][0]
        rows.append(row)
    return rows


def _lengths(model: nn.Module, example: torch.Tensor, lengths: list[int] | None) -> list[int | None]:
    """The requested lengths for sequence models that say they run on any length (``any_length``)."""
    if not lengths or example.dim() != 3 or not getattr(model, "any_length", False):
        return [None]
    return list(lengths)


def _resized(example: torch.Tensor, length: int) -> torch.Tensor:
    """``example`` tiled or cut to ``length`` steps: real data statistics at any length."""
    reps = -(-length // example.shape[-1])
    return example.repeat(1, 1, reps)[..., :length].contiguous()


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Latency (ms) against sequence length, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in rows:
        lengths = sorted(row["speed"], key=int)
        ax.plot(
            [int(n) for n in lengths], [row["speed"][n]["latency_ms"] for n in lengths], marker="o", label=row["model"]
        )
    ax.set_xlabel("sequence length")
    ax.set_ylabel("latency ms (median)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
