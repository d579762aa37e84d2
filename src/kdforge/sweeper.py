"""``kdforge sweep RECIPE --seeds 5``: the same recipe under several seeds, summarised as
mean ± standard deviation — the reproducibility protocol of the field: one run's gain is
not evidence; the spread across seeds says how much of it is noise.

Each seed is a normal run (``<sweep dir>/<name>-seed<k>-<time>``, resumable on its own);
the sweep directory gets ``sweep.json`` and ``sweep.md``.
"""

from __future__ import annotations

import multiprocessing
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kdforge.config import Recipe
from kdforge.errors import KdforgeError
from kdforge.files import write_json, write_text
from kdforge.machine import threads_per_job, where_measured
from kdforge.processes import exit_on_sigterm
from kdforge.report import roles
from kdforge.runner import run


@dataclass
class SweepResult:
    sweep_dir: Path
    summary: dict[str, Any]


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per role (teacher, student, student alone): test accuracy of the selected (best
    validation) epoch and of the last epoch, the best epoch; and the KD gain in points."""
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "roles": {}}
    for key, _ in roles():
        entries = [r[key] for r in runs if key in r]
        if len(entries) != len(runs):
            continue
        role = {"test_accuracy": mean_std([e["test"]["accuracy"] for e in entries])}
        if all("test_last" in e for e in entries):
            role["test_accuracy_last"] = mean_std([e["test_last"]["accuracy"] for e in entries])
        if all("best_epoch" in e for e in entries):
            role["best_epoch"] = mean_std([float(e["best_epoch"]) for e in entries])
        summary["roles"][key] = role
    if "student_alone" in summary["roles"]:
        summary["kd_gain_points"] = mean_std(
            [100 * (r["student"]["test"]["accuracy"] - r["student_alone"]["test"]["accuracy"]) for r in runs]
        )
    return summary


def sweep(
    recipe: Recipe, seeds: int = 5, first_seed: int = 0, console: Console | None = None, jobs: int = 1
) -> SweepResult:
    """Run ``recipe`` with seeds ``first_seed .. first_seed + seeds - 1`` and summarise; ``jobs`` > 1 runs the
    seeds in that many processes, each with its share of the cores."""
    console = console or Console()
    if jobs < 1:
        raise KdforgeError(f"sweep: --jobs must be at least 1, got {jobs}")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    sweep_dir = Path(recipe.log.dir) / f"{recipe.name}-sweep-{stamp}"
    seeded = [
        recipe.model_copy(
            update={
                "seed": seed,
                "name": f"{recipe.name}-seed{seed}",
                "log": recipe.log.model_copy(update={"dir": str(sweep_dir)}),
            }
        )
        for seed in range(first_seed, first_seed + seeds)
    ]
    if jobs > 1:  # each seed has its own split and teacher: nothing to share between them but the cores
        runs = _in_processes(seeded, jobs, console)
    else:
        runs = []
        for i, one in enumerate(seeded):
            console.rule(f"[bold]sweep {escape(recipe.name)}: seed {one.seed} ({i + 1}/{seeds})")
            runs.append({**run(one, console=console).results, "seed": one.seed})
    # each run records its own machine and threads (a worker process's under jobs); the sweep, how it ran them
    measured_on = {**where_measured(threads_per_job(jobs) if jobs > 1 else None), "jobs": jobs}
    summary = {"name": recipe.name, **aggregate(runs), "runs": runs, "measured_on": measured_on}
    write_json(sweep_dir / "sweep.json", summary)
    write_text(sweep_dir / "sweep.md", sweep_report(summary))
    console.print(sweep_table(summary))
    console.print(
        f"sweep directory: [bold]{escape(str(sweep_dir))}[/] (sweep.md, sweep.json, one run directory per seed)"
    )
    return SweepResult(sweep_dir, summary)


def _seed_results(job: tuple[Recipe, int]) -> dict[str, Any]:
    recipe, threads = job
    torch.set_num_threads(threads)
    return {**run(recipe, console=Console(quiet=True)).results, "seed": recipe.seed}


def _in_processes(recipes: list[Recipe], jobs: int, console: Console) -> list[dict[str, Any]]:
    """The seeds' runs in ``jobs`` processes whose thread counts add up to the cores, in seed order. Leaving the
    pool's block for any reason (an error, Ctrl-C, SIGTERM) terminates its processes: no seed keeps training after
    the command ends."""
    threads = threads_per_job(jobs)
    console.rule(f"[bold]seeds {', '.join(str(r.seed) for r in recipes)}: {jobs} processes × {threads} threads")
    found: dict[int, dict[str, Any]] = {}
    with exit_on_sigterm(), multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for results in pool.imap_unordered(_seed_results, [(recipe, threads) for recipe in recipes]):
            found[seed := results["seed"]] = results
            console.print(f"seed {seed}: student {100 * results['student']['test']['accuracy']:.2f}% on test")
    return [found[recipe.seed] for recipe in recipes]


def _pm(stat: dict[str, float] | None, scale: float = 100.0, digits: int = 2) -> str:
    return "-" if stat is None else f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def _role_rows(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    labels = dict(roles())
    return [
        (
            labels[key],
            _pm(role["test_accuracy"]),
            _pm(role.get("test_accuracy_last")),
            _pm(role.get("best_epoch"), 1.0, 1),
        )
        for key, role in summary["roles"].items()
    ]


def sweep_table(summary: dict[str, Any]) -> Table:
    seeds = summary["seeds"]
    gain = summary.get("kd_gain_points")
    caption = f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); mean ± sample std" + (
        f"; KD gain {_pm(gain, 1.0)} points" if gain else ""
    )
    table = Table(title=escape(f"{summary['name']} — test accuracy %, seed sweep"), caption=escape(caption))
    for column in ("model", "best epoch's weights", "last epoch's weights", "best epoch"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in _role_rows(summary):
        table.add_row(*row)
    return table


def sweep_report(summary: dict[str, Any]) -> str:
    lines = [
        f"# {summary['name']}: seed sweep",
        "",
        f"Seeds {', '.join(map(str, summary['seeds']))}; mean ± sample standard deviation of test accuracy (%).",
        "The best epoch is selected on validation; the last epoch's weights are reported beside it.",
        "",
        "| model | best epoch's weights | last epoch's weights | best epoch |",
        "|---|---:|---:|---:|",
        *(f"| {' | '.join(row)} |" for row in _role_rows(summary)),
    ]
    if "kd_gain_points" in summary:
        lines += ["", f"KD gain over the same student alone: **{_pm(summary['kd_gain_points'], 1.0)} points**."]
    lines += [
        "",
        "| seed | " + " | ".join(label for key, label in roles() if key in summary["roles"]) + " |",
        "|---|" + "---:|" * len(summary["roles"]),
    ]
    for r in summary["runs"]:
        lines.append(
            f"| {r['seed']} | "
            + " | ".join(f"{100 * r[key]['test']['accuracy']:.2f}" for key in summary["roles"])
            + " |"
        )
    return "\n".join(lines) + "\n"
