"""What a run leaves for people: results.json, report.md, plots, the summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from kdforge.evaluate import score_gain, score_name, shown
from kdforge.family import families
from kdforge.files import save_figure, write_json, write_text

ROLES = (("teacher", "teacher"), ("student", "student + KD"), ("student_alone", "student alone"))


def roles() -> list[tuple[str, str]]:
    """(results key, label) of every model a run can report, in table order: the core's, then the baselines
    each family adds (:attr:`kdforge.family.Family.roles`)."""
    return [*ROLES, *(role for family in families() for role in family.roles)]


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    write_json(run_dir / "results.json", results)


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    alone = "teacher" not in results  # a recipe without a teacher: its one student trained alone
    return [
        ("student" if alone and key == "student" else label, results[key]) for key, label in roles() if key in results
    ]


def kd_gain(results: dict[str, Any]) -> str | None:
    """What the distilled student gains over the same student alone on test: accuracy points, or dB."""
    if "student_alone" not in results:
        return None
    return score_gain(results["student"]["test"], results["student_alone"]["test"])


def alone_budget(results: dict[str, Any]) -> str:
    """How long the student alone trained, when it was matched to the distilled student's steps."""
    steps = results["student_alone"].get("steps_as_distilled")
    return f" (as many optimiser steps, {steps:,}, on the labelled data only)" if steps else ""


def agreement_notes(results: dict[str, Any]) -> list[str]:
    """How closely each student follows the teacher on test (top-1 agreement, KL from the teacher)."""
    unit = "tokens" if "perplexity" in results["student"]["test"] else "samples"
    return [
        f"{label} agrees with the teacher's top-1 on {100 * a['top1_agreement']:.1f}% of test {unit}, "
        f"KL(teacher ‖ student) {a['kl_from_teacher']:.3f} nats"
        for label, entry in _rows(results)
        if (a := entry.get("teacher_agreement"))
    ]


def family_notes(results: dict[str, Any]) -> list[str]:
    """What each family says about each model (e.g. a TM student in hard mode, a spiking one's firing)."""
    return [note for family in families() for label, entry in _rows(results) for note in family.notes(label, entry)]


def _selected(results: dict[str, Any]) -> str:
    """What validation selected: each model's epoch, or its step when validating by steps."""
    return "step" if "best_step" in results["student"] else "epoch"


def summary_table(results: dict[str, Any]) -> Table:
    name = score_name(results["student"]["test"])
    notes = [f"val {name}: the selected {_selected(results)}; latency: batch of 1, median"]
    gain = kd_gain(results)
    if gain is not None:
        notes.insert(0, f"KD gain over the student alone{alone_budget(results)}: {gain} (test)")
    notes[:0] = family_notes(results) + agreement_notes(results)
    table = Table(
        title=escape(f"{results['name']} — test split of {results['dataset']}"), caption=escape("\n".join(notes))
    )
    for column in ("model", "arch", f"test {name}", f"val {name}", "params", "latency ms"):
        table.add_column(column, justify="left" if column in ("model", "arch") else "right")
    for label, entry in _rows(results):
        val = entry.get("val_best")
        table.add_row(
            label,
            escape(entry["model"]),
            shown(entry["test"]),
            shown(val) if val else "-",
            f"{entry['params']:,}",
            f"{entry['latency_ms']:.3f}",
        )
    return table


def transfer_section(entry: dict[str, Any]) -> list[str]:
    """What ``init_from_teacher`` copied, for report.md."""
    transfer = entry.get("init_from_teacher")
    if not transfer:
        return []
    lines = [
        "",
        "## Initialised from the teacher",
        "",
        f"Copied {len(transfer['copied'])} tensors: {', '.join(f'`{n}`' for n in transfer['copied'])}.",
        "",
    ]
    if transfer["shape_mismatch"]:
        lines += [
            "Not copied, shapes differ: "
            + "; ".join(f"`{n}` ({why})" for n, why in transfer["shape_mismatch"].items())
            + ".",
            "",
        ]
    return lines + [
        f"No teacher counterpart ({len(transfer['not_in_teacher'])}): "
        + ", ".join(f"`{n}`" for n in transfer["not_in_teacher"])
        + "."
    ]


#: a run's headline metric: (its name in words, its id among the Hub's metrics)
METRICS = {"acc": ("accuracy", "accuracy"), "PSNR": ("PSNR", "psnr"), "ρ": ("Spearman ρ", "spearmanr")}
METRICS["PPL"] = ("perplexity", "perplexity")


def _comparison(results: dict[str, Any]) -> list[str]:
    """The Markdown table of every model's scores, size and latency, and the KD gain under it."""
    metric = METRICS[score_name(results["student"]["test"])][0]
    lines = [
        f"| model | architecture | test {metric} | val {metric} (selected) | params | latency ms (batch 1) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, entry in _rows(results):
        val = entry.get("val_best")
        lines.append(
            f"| {label} | {entry['model']} | {shown(entry['test'])} | {shown(val) if val else '-'} | "
            f"{entry['params']:,} | {entry['latency_ms']:.3f} |"
        )
    gain = kd_gain(results)
    if gain is not None:
        lines += ["", f"KD gain over the same student trained alone{alone_budget(results)}: **{gain}**."]
    return lines


def write_report(run_dir: Path, results: dict[str, Any], plots: list[str]) -> None:
    metric = METRICS[score_name(results["student"]["test"])][0]
    lines = [
        f"# {results['name']}",
        "",
        f"Dataset `{results['dataset']}`; best {_selected(results)} chosen on validation, {metric} reported on test.",
        "",
        *_comparison(results),
    ]
    lines += [f"\n{note}." for note in family_notes(results) + agreement_notes(results)]
    lines += transfer_section(results["student"])
    lines += [line for family in families() for line in family.report_sections(results["student"])]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in results["timings"].items())
    lines += ["", f"Timings: {timings}.", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")


# The validation metrics a run's records can hold, each with its plot's axis label and scale for people.
METRIC_AXES = {
    "accuracy": ("val accuracy (%)", 100.0),
    "psnr_db": ("val PSNR (dB)", 1.0),
    "spearman": ("val Spearman ρ of similarities", 1.0),
    "recall_at_10": ("val neighbour recall@10", 1.0),
    "perplexity": ("val perplexity", 1.0),
}
# What a validation "loss" is, by the headline metric beside it (kdforge.evaluate)
VAL_LOSS = {
    "accuracy": "val cross-entropy",
    "psnr_db": "val MSE",
    "spearman": "val 1 − ρ",
    "perplexity": "val nats/token",
}


def plot_curves(run_dir: Path, histories: dict[str, list[dict[str, Any]]]) -> list[str]:
    """``plots/loss.png`` (train loss and validation loss per epoch, log scale) and one plot per
    validation metric the records hold (``plots/accuracy.png``, ``psnr_db.png``, ``spearman.png``, ...),
    one colour per stage; epochs without validation (``train.val_every``) are left out of the latter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    staged = [(stage, history) for stage, history in histories.items() if history]
    validated = [r["val"] for _, history in staged for r in history if "val" in r]
    metrics = [m for m in METRIC_AXES if any(m in val for val in validated)]
    val_loss = next((VAL_LOSS[m] for m in VAL_LOSS if m in metrics), "val loss")
    written = []
    for name in ["loss", *metrics]:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for colour, (stage, history) in enumerate(staged):
            if name == "loss":
                _curve(ax, history, ("train", "loss"), "-", colour, f"{stage} (train)")
                _curve(ax, history, ("val", "loss"), "--", colour, f"{stage} ({val_loss})")
            else:
                _curve(ax, history, ("val", name), "-", colour, stage, METRIC_AXES[name][1])
        if name == "loss":
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"train loss, {val_loss}" if name == "loss" else METRIC_AXES[name][0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        save_figure(fig, out / f"{name}.png", dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}.png")
    return written


def _curve(
    ax: Any, history: list[dict[str, Any]], key: tuple[str, str], style: str, colour: int, label: str, scale: float = 1
) -> None:
    """One line: ``record[part][metric]`` per epoch, for the epochs that have it (validation: ``train.val_every``;
    by steps, each of the epoch's validations where it was taken)."""
    part, metric = key
    records = history
    if part == "val" and _by_steps(history):
        records = [v for r in history for v in r.get("validations", [])]
    points = [(r["epoch"], scale * r[part][metric]) for r in records if metric in r.get(part, {})]
    if points:
        ax.plot(*zip(*points), style, color=f"C{colour}", label=label)


def _by_steps(history: list[dict[str, Any]]) -> bool:
    """Whether a fit validated by steps (``val_every: {steps: N}``): its epoch records list their validations."""
    return any("validations" in r for r in history)


def model_card(results: dict[str, Any], recipe: str, library: str = "kdforge") -> str:
    """The distilled student's model card, in the Hugging Face Hub's format: YAML front matter (``library_name``,
    ``base_model`` = the teacher when it came from the hub, ``datasets`` from the hub, ``metrics``, ``tags``), then
    the teacher, the data, the table of teacher / student + KD / student alone with the KD gain, size and latency,
    how to load it, and the recipe. ``library``: ``transformers`` for a ``save_pretrained`` folder, else kdforge."""
    import yaml

    sources = results.get("sources", [])
    teacher = results.get("teacher", {}).get("model")
    models = [s["id"] for s in sources if s["what"] in ("Hugging Face model", "timm weights")]
    base = next((found for found in models if teacher is not None and found in (teacher, f"timm/{teacher}")), None)
    meta: dict[str, Any] = {"library_name": library, **({"base_model": base} if base else {})}
    hub_data = [s["id"] for s in sources if s["what"] == "Hugging Face dataset"]
    meta |= {"datasets": hub_data} if hub_data else {}
    meta |= {
        "metrics": [METRICS[score_name(results["student"]["test"])][1]],
        "tags": ["knowledge-distillation", "kdforge"],
    }
    if "perplexity" in results["student"]["test"]:
        meta["pipeline_tag"] = "text-generation"
    student = results["student"]["model"]
    origin = f" from the teacher `{teacher}`" if teacher else ""
    load = (
        "from transformers import AutoModelForCausalLM\n"
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")'
        if library == "transformers"
        else 'import kdforge\nmodel = kdforge.load_student("path/to/this/folder")  # student.safetensors + student.json'
    )
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {results['name']}",
        "",
        f"A `{student}` student distilled{origin} with kdforge on "
        f"`{results['dataset']}`: chosen on the validation split, scored on the test split.",
        "",
        *_comparison(results),
        "",
        "## Use",
        "",
        "```python",
        load,
        "```",
        "",
        "## Recipe",
        "",
        "```yaml",
        recipe.strip(),
        "```",
        "",
    ]
    return "\n".join(lines)
