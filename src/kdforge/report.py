"""What a run leaves for people: results.json, report.md, plots, the summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

ROLES = (("teacher", "teacher"), ("student", "student + KD"), ("student_alone", "student alone"))


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(label, results[key]) for key, label in ROLES if key in results]


def kd_gain(results: dict[str, Any]) -> float | None:
    """Test-accuracy points the distilled student gains over the same student alone."""
    if "student_alone" not in results:
        return None
    return 100 * (results["student"]["test"]["accuracy"] - results["student_alone"]["test"]["accuracy"])


def summary_table(results: dict[str, Any]) -> Table:
    table = Table(title=f"{results['name']} — test split of {results['dataset']}")
    for column in ("model", "architecture", "test acc", "val acc (selected)", "params", "latency ms (batch 1)"):
        table.add_column(column, justify="left" if column in ("model", "architecture") else "right")
    for label, entry in _rows(results):
        val = entry.get("val_best", {}).get("accuracy")
        table.add_row(label, entry["model"], f"{100 * entry['test']['accuracy']:.2f}%", "-" if val is None else f"{100 * val:.2f}%", f"{entry['params']:,}", f"{entry['latency_ms']:.3f}")
    gain = kd_gain(results)
    if gain is not None:
        table.caption = f"KD gain over the student alone: {gain:+.2f} points"
    return table


def write_report(run_dir: Path, results: dict[str, Any], plots: list[str]) -> None:
    lines = [
        f"# {results['name']}",
        "",
        f"Dataset `{results['dataset']}`; best epoch chosen on validation, accuracy reported on test.",
        "",
        "| model | architecture | test accuracy | val accuracy (selected) | params | latency ms (batch 1) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, entry in _rows(results):
        val = entry.get("val_best", {}).get("accuracy")
        lines.append(f"| {label} | {entry['model']} | {100 * entry['test']['accuracy']:.2f}% | {'-' if val is None else f'{100 * val:.2f}%'} | {entry['params']:,} | {entry['latency_ms']:.3f} |")
    gain = kd_gain(results)
    if gain is not None:
        lines += ["", f"KD gain over the same student trained alone: **{gain:+.2f} points**."]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in results["timings"].items())
    lines += ["", f"Timings: {timings}.", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


def plot_curves(run_dir: Path, histories: dict[str, list[dict[str, Any]]], teacher_test: float | None) -> list[str]:
    """``plots/loss.png`` (train loss per epoch) and ``plots/accuracy.png`` (val accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for name, pick, ylabel in (("loss", lambda r: r["train"]["loss"], "train loss"), ("accuracy", lambda r: 100 * r["val"]["accuracy"], "val accuracy (%)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for stage, history in histories.items():
            if history:
                ax.plot([r["epoch"] for r in history], [pick(r) for r in history], marker="o", markersize=3, label=stage)
        if name == "accuracy" and teacher_test is not None:
            ax.axhline(100 * teacher_test, color="grey", linestyle="--", label="teacher (test)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}.png")
    return written
