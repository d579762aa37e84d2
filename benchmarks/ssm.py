"""State-space benchmarks.

``sar``: the shipped recipe ``recipes/sar_ssm.yaml`` (a selective, gated, bidirectional SSM
teacher trained by the recipe on simulated SAR azimuth lines) with each compression preset
(``standard``, ``compressed``, ``tiny``), each student trained with distillation (on the
labelled and the recipe's unlabelled lines) and alone (the recipe's baseline, labelled lines
only; the distilled ``standard`` student starts from the teacher's weights,
``init_from_teacher``), seeds 0-2: test PSNR (epoch chosen on validation), the gain paired by
seed, retention (% of the teacher's PSNR), params, and measured latency at batch 1 for
sequence lengths 256 and 1024 (teacher / student ratio = speed-up). The teacher is trained
once per seed and reused from ``--runs``; seeds run in ``--jobs`` processes.

    uv run python benchmarks/ssm.py sar [--seeds 0 1 2] [--presets compressed tiny] [--jobs 2]

It ends with a control: each student alone for as many optimiser steps as the distilled one
takes over labelled and unlabelled lines, on the labelled lines only (is the gain the teacher's, or only more steps?);
``sar-control`` runs only that, into the committed results.

``sar-few``: ``recipes/sar_ssm_few.yaml``, few focused references (40 labelled lines, validation and test 90 each)
beside 1,680 raw ones, and a teacher trained on 420 focused lines of its own (other lines); the student alone trained
as the recipe's baseline is, for as many optimiser steps as the distilled student, on the 40: does a teacher that
learnt from more focused lines pay where the student's are scarce?

    uv run python benchmarks/ssm.py sar-few [--presets compressed tiny] [--seeds 0 1 2] [--jobs 2]

``mnist1d``: an SSM teacher (gated, 4 layers of width 64) and a small SSM student
(``compressed`` preset) on mnist1d as sequence classification, with KD (CE + KD, T = 1:
chosen on validation, where T = 2 and 4 did worse) and alone, seeds 0-2: test accuracy.

    uv run python benchmarks/ssm.py mnist1d [--seeds 0 1 2] [--epochs 2]

At ``--epochs`` E (teacher and students; ssm_mnist1d_<E>ep.json), a budget small enough for the test suite to re-run
a seed of it: ``--epochs 2`` is the SSM family's drift check (tests/test_drift.py).

Each writes benchmarks/results/ssm_<name>.json and .md (``sar-few``: ssm_sar_few), or ``--out``'s name:
``ssm.py mnist1d --out ssm_mnist1d_xeon`` on an Intel AVX-512 Xeon, beside the AMD EPYC's ssm_mnist1d.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

import kdforge
from common import earlier_results, job_threads, mean_std, run_quietly, save, worker_pool
from kdforge.bench import latency_ms
from kdforge.data import recipe_data
from kdforge.export import load_run_teacher
from kdforge.families.ssm.model import compression_preset

SAR_RECIPE = Path(__file__).parents[1] / "src" / "kdforge" / "recipes" / "sar_ssm.yaml"
FEW_RECIPE = SAR_RECIPE.with_name("sar_ssm_few.yaml")


def shown(recipe: Path) -> str:
    """A recipe's path as the results name it."""
    return str(recipe.relative_to(recipe.parents[3]))


LENGTHS = (256, 1024)


def latencies(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, float]:
    return {str(n): latency_ms(model.eval(), torch.randn(1, 1, n, dtype=dtype), repeats=20) for n in LENGTHS}


# the standard student has the teacher's shapes: it starts from the teacher's weights (all but the gates)
PRESETS = ("standard", "compressed", "tiny")
START = {
    "standard": {"preset": "standard", "init_from_teacher": True},
    "compressed": {"preset": "compressed"},
    "tiny": {"preset": "tiny"},
}


def sar_seed(
    seed: int, presets: list[str], runs: str, threads: int, recipe: Path = SAR_RECIPE, budget: str = "epochs"
) -> dict[str, dict]:
    """One seed of every preset (one process: the seed's teacher is trained by its first run, then reused) of
    ``recipe``, the student alone trained for ``budget`` (the recipe's epochs, or as many steps as the distilled
    student)."""
    torch.set_num_threads(threads)
    base = yaml.safe_load(recipe.read_text())
    found = {}
    for preset in presets:
        raw = {
            **base,
            "seed": seed,
            "student": {**base["student"], **START[preset]},
            "train": {**base["train"], "baseline_budget": budget},
            "log": {"dir": runs, "progress": False},
        }
        run = run_quietly(raw)
        result = run.results
        found[preset] = {
            "teacher": result["teacher"]["test"]["psnr_db"],
            "teacher_params": result["teacher"]["params"],
            "kd": result["student"]["test"]["psnr_db"],
            "alone": result["student_alone"]["test"]["psnr_db"],
            "params": result["student"]["params"],
            "run_dir": str(run.run_dir),
        }
        print(
            f"{preset:10s} seed {seed}: teacher {found[preset]['teacher']:.2f} dB, student + KD "
            f"{found[preset]['kd']:.2f} dB, alone {found[preset]['alone']:.2f} dB",
            flush=True,
        )
    return found


def seed_rows(per_seed: list[dict[str, dict]], presets: list[str]) -> dict[str, dict]:
    """The teacher's row and each preset's, over the seeds: scores, paired gains, retention."""
    teacher: dict = {
        "psnr": [r[presets[0]]["teacher"] for r in per_seed],
        "params": per_seed[0][presets[0]]["teacher_params"],
    }
    rows: dict[str, dict] = {"teacher": teacher}
    for preset in presets:
        runs = [r[preset] for r in per_seed]
        rows[preset] = {
            "params": runs[0]["params"],
            "kd": [r["kd"] for r in runs],
            "alone": [r["alone"] for r in runs],
            "gain": [r["kd"] - r["alone"] for r in runs],
            "retention_pct": [100 * r["kd"] / r["teacher"] for r in runs],
        }
    return rows


def sar_few(args: argparse.Namespace) -> dict:
    """The few-references recipe, the student alone trained as its baseline is (as many optimiser steps as the
    distilled student, on the labelled lines): does a teacher that learnt from more focused lines pay?"""
    per_seed = over_seeds(sar_seed, args, recipe=FEW_RECIPE, budget="steps")
    return {"recipe": shown(FEW_RECIPE), "seeds": args.seeds, "rows": seed_rows(per_seed, args.presets)}


def _pays(row: dict) -> str:
    """A check mark where the paired gain's mean exceeds both its std and the spread of the student alone over seeds."""
    pays = statistics.mean(row["gain"]) > max(statistics.stdev(row["gain"]), statistics.stdev(row["alone"]))
    return " ✓" if pays else ""


def few_markdown(out: dict) -> str:
    rows = out["rows"]
    lines = [
        f"# SSM on sar_azimuth with few focused lines (`{out['recipe']}`, seeds {out['seeds']})",
        "",
        "| model | params | test PSNR + KD (dB) | alone, as many steps (dB) | gain (dB, paired) | retention |",
        "|---|---:|---:|---:|---:|---:|",
        f"| teacher (gate) | {rows['teacher']['params']:,} | {mean_std(rows['teacher']['psnr'])} | | | 100 % |",
    ]
    for preset in (p for p in PRESETS if p in rows):
        r = rows[preset]
        lines.append(
            f"| {preset} | {r['params']:,} | {mean_std(r['kd'])} | {mean_std(r['alone'])} | "
            f"{mean_std(r['gain'])}{_pays(r)} | {statistics.mean(r['retention_pct']):.1f} % |"
        )
    lines += [
        "",
        "The teacher learnt from 420 focused lines of its own (`teacher.train.data`: other lines); the student alone "
        "from the run's 40 labelled lines, for as many optimiser steps as the distilled student "
        "(`train.baseline_budget: steps`), validated as many steps apart; the distilled student also from the "
        "recipe's 1,680 unlabelled lines against the teacher's outputs. Test PSNR on the run's 90 test lines, "
        "which no model trained on. Gains are paired by seed, ✓ where the mean exceeds both their std and the "
        "spread of the student alone over seeds.",
    ]
    return "\n".join(lines) + "\n"


def sar(args: argparse.Namespace) -> dict:
    per_seed = over_seeds(sar_seed, args)
    rows = seed_rows(per_seed, args.presets)
    teacher = rows["teacher"]
    add_control(args, rows)
    # latencies last, one model after the other, with no training beside them (the first seed's models)
    first = per_seed[0]
    teacher["latency_ms_b1"] = latencies(load_run_teacher(Path(first[args.presets[0]]["run_dir"])), torch.cfloat)
    for preset in args.presets:
        rows[preset]["latency_ms_b1"] = latencies(kdforge.load_student(Path(first[preset]["run_dir"])), torch.cfloat)
        rows[preset]["speedup"] = {
            n: teacher["latency_ms_b1"][n] / rows[preset]["latency_ms_b1"][n] for n in teacher["latency_ms_b1"]
        }
    return {"recipe": shown(SAR_RECIPE), "seeds": args.seeds, "rows": rows}


def as_many_steps_seed(seed: int, presets: list[str], runs: str, threads: int) -> dict[str, float]:
    """The student alone trained for as many optimiser steps as the distilled student takes over the labelled
    and unlabelled lines, on the labelled lines only: is the gain the teacher's, or only more steps? No term reads
    a teacher: an EMA of the student stands in for the recipe's, which would otherwise be trained."""
    torch.set_num_threads(threads)
    base = yaml.safe_load(SAR_RECIPE.read_text())
    data = recipe_data(kdforge.Recipe.from_dict(base).data, seed)
    labelled, everything = len(data.train), len(data.train) + (len(data.unlabelled) if data.unlabelled else 0)
    batch = base["data"]["batch_size"]
    epochs = round(base["train"]["epochs"] * math.ceil(everything / batch) / math.ceil(labelled / batch))
    teacher_options = {k: v for k, v in base["teacher"]["model"].items() if k != "name"}
    found = {}
    for preset in presets:
        raw = {
            **base,
            "seed": seed,
            "data": {**base["data"], "unlabelled_lines": 0},
            "teacher": {"source": "ema", "decay": 0.99},
            "student": {"model": {"name": "ssm", **compression_preset(preset, teacher_options)}},
            "losses": [loss for loss in base["losses"] if loss["name"] == "reg_task"],
            "train": {**base["train"], "epochs": epochs, "baseline": False},
            "log": {"dir": runs, "progress": False},
        }
        found[preset] = run_quietly(raw).results["student"]["test"]["psnr_db"]
        print(f"{preset:10s} seed {seed}: alone for {epochs} epochs {found[preset]:.2f} dB", flush=True)
    return {"epochs": epochs, **found}


def over_seeds(job: Callable[..., Any], args: argparse.Namespace, **options: Any) -> list[Any]:
    """``job`` for each of ``args.seeds`` (with the presets and run folder asked for) in ``args.jobs`` processes."""
    with worker_pool(args.jobs) as pool:
        work = functools.partial(job, presets=args.presets, runs=args.runs, threads=job_threads(args.jobs), **options)
        return list(pool.map(work, args.seeds))


def add_control(args: argparse.Namespace, rows: dict[str, dict]) -> None:
    """Each preset's row gains ``alone_same_steps`` (per seed) and ``same_steps_epochs``."""
    found = over_seeds(as_many_steps_seed, args)
    for preset in args.presets:
        rows[preset]["alone_same_steps"] = [f[preset] for f in found]
        rows[preset]["same_steps_epochs"] = found[0]["epochs"]


def sar_control(args: argparse.Namespace) -> dict:
    """Only the as-many-steps control, added to the committed sar results (same seeds)."""
    out = earlier_results("ssm_sar", "sar-control")
    add_control(args, out["rows"])
    return out


def _control_cell(row: dict, seeds: list[int]) -> str:
    measured = row["alone_same_steps"]
    fewer = f", seeds {', '.join(map(str, seeds[: len(measured)]))}" if len(measured) < len(seeds) else ""
    kd_minus = [kd - alone for kd, alone in zip(row["kd"], measured)]
    return f"{mean_std(measured)} ({row['same_steps_epochs']} epochs{fewer}; KD − it, paired: {mean_std(kd_minus)})"


def sar_markdown(out: dict) -> str:
    rows = out["rows"]
    teacher = rows["teacher"]
    lines = [
        f"# SSM on sar_azimuth (`{out['recipe']}`, seeds {out['seeds']})",
        "",
        "| model | params | test PSNR + KD (dB) | alone (dB) | gain (dB, paired) | alone, as many steps (dB) | "
        "retention | latency b1 L256 / L1024 (ms) | speed-up L256 / L1024 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| teacher (gate) | {teacher['params']:,} | {mean_std(teacher['psnr'])} | | | | 100 % | "
        f"{teacher['latency_ms_b1']['256']:.2f} / {teacher['latency_ms_b1']['1024']:.2f} | 1 / 1 |",
    ]
    for preset in (p for p in PRESETS if p in rows):
        r = rows[preset]
        lines.append(
            f"| {preset} | {r['params']:,} | {mean_std(r['kd'])} | {mean_std(r['alone'])} | "
            f"{mean_std(r['gain'])}{_pays(r)} | "
            + (_control_cell(r, out["seeds"]) if "alone_same_steps" in r else "")
            + f" | {statistics.mean(r['retention_pct']):.1f} % | "
            f"{r['latency_ms_b1']['256']:.2f} / {r['latency_ms_b1']['1024']:.2f} | {r['speedup']['256']:.1f}× / "
            f"{r['speedup']['1024']:.1f}× |"
        )
    lines += [
        "",
        "Gains are paired by seed (mean ± std of the per-seed differences), ✓ where the mean exceeds both that std "
        "and the spread of the student alone over seeds. The distilled student also trains on the recipe's "
        "unlabelled lines, against the teacher's outputs; the teacher and the student alone see the labelled lines "
        "only. A distilled `standard` student starts from the teacher's weights (`init_from_teacher`: all but the "
        "gates); latency is measured at batch 1 after all training, one model after the other. The control column: "
        "the student alone, task loss only, on the labelled lines for as many optimiser steps as the distilled "
        "student takes over labelled and unlabelled lines (`sar-control`).",
    ]
    return "\n".join(lines) + "\n"


MNIST1D = {
    "name": "mnist1d-ssm",
    "data": {"name": "mnist1d", "batch_size": 128},
    "teacher": {
        "source": "train",
        "model": {
            "name": "ssm",
            "model_dim": 64,
            "state_dim": 32,
            "num_layers": 4,
            "selectivity": "gate",
            "pool": "mean",
        },
        "train": {"epochs": 30},
    },
    "student": {"preset": "compressed", "model": {"name": "ssm"}},
    "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 1.0}],
    "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01, "warmup_epochs": 1, "schedule": "cosine"},
    "train": {"epochs": 100, "grad_clip": 1.0, "baseline": True},
}


def mnist1d_recipe(epochs: int | None) -> dict:
    """The mnist1d recipe; at ``epochs`` (the teacher's and the students'), a smaller budget than its 30 and 100."""
    if epochs is None:
        return MNIST1D
    return {**MNIST1D, "teacher": {**MNIST1D["teacher"], "train": {"epochs": epochs}},
            "train": {**MNIST1D["train"], "epochs": epochs}}  # fmt: skip


def mnist1d_seed(recipe: dict, seed: int, log_dir: str) -> dict:
    """One seed: {teacher, kd, alone: test accuracy (%), params}."""
    result = run_quietly({**recipe, "seed": seed, "log": {"dir": log_dir, "progress": False}})
    found = {key: 100 * result.results[role]["test"]["accuracy"]
             for key, role in (("teacher", "teacher"), ("kd", "student"), ("alone", "student_alone"))}  # fmt: skip
    found["params"] = {"teacher": result.results["teacher"]["params"], "student": result.results["student"]["params"]}
    return found


def mnist1d(args: argparse.Namespace) -> dict:
    log_dir = tempfile.mkdtemp(prefix="kdforge-ssm-")
    recipe = mnist1d_recipe(args.epochs)
    out: dict = {"recipe": recipe, "seeds": args.seeds, "teacher": [], "kd": [], "alone": []}
    for seed in args.seeds:
        found = mnist1d_seed(recipe, seed, log_dir)
        for key in ("teacher", "kd", "alone"):
            out[key].append(found[key])
        out["params"] = found["params"]
        print(
            f"seed {seed}: teacher {out['teacher'][-1]:.2f} %, student + KD {out['kd'][-1]:.2f} %, alone "
            f"{out['alone'][-1]:.2f} %",
            flush=True,
        )
    return out


def mnist1d_markdown(out: dict) -> str:
    return (
        "\n".join(
            [
                f"# SSM on mnist1d (seeds {out['seeds']}; epochs: teacher "
                f"{out['recipe']['teacher']['train']['epochs']}, students {out['recipe']['train']['epochs']})",
                "",
                "| model | params | test accuracy (%) |",
                "|---|---:|---:|",
                f"| teacher (gate, 4 × 64) | {out['params']['teacher']:,} | {mean_std(out['teacher'])} |",
                f"| student (compressed) + KD | {out['params']['student']:,} | {mean_std(out['kd'])} |",
                f"| student (compressed) alone | {out['params']['student']:,} | {mean_std(out['alone'])} |",
            ]
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["sar", "sar-control", "sar-few", "mnist1d"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS), help="sar: the students")
    parser.add_argument("--jobs", type=int, default=2, help="sar: seeds run in this many processes")
    parser.add_argument(
        "--epochs", type=int, help="mnist1d: the teacher's and the students' epochs (default: 30 and 100)"
    )
    parser.add_argument(
        "--runs", default=str(Path(tempfile.gettempdir()) / "kdforge-ssm"), help="sar: run folder (teachers reused)"
    )
    parser.add_argument("--out", help="the results name (benchmarks/results/OUT.json), e.g. beside another machine's")
    args = parser.parse_args()
    started = time.perf_counter()
    out = {"sar": sar, "sar-control": sar_control, "sar-few": sar_few, "mnist1d": mnist1d}[args.benchmark](args)
    out["minutes"] = out.get("minutes", 0) + round((time.perf_counter() - started) / 60, 1)
    name, markdown = {
        "mnist1d": ("mnist1d", mnist1d_markdown),
        "sar-few": ("sar_few", few_markdown),
    }.get(args.benchmark, ("sar", sar_markdown))
    save(args.out or f"ssm_{name}" + (f"_{args.epochs}ep" if args.epochs else ""), out, markdown(out))


if __name__ == "__main__":
    main()
