"""State-space benchmarks.

``sar``: the shipped recipe ``recipes/sar_ssm.yaml`` (a selective, gated, bidirectional SSM
teacher trained by the recipe on simulated SAR azimuth lines) with each compression preset
(``standard``, ``compressed``, ``tiny``), each student trained with distillation and alone
(the recipe's baseline; the distilled ``standard`` student starts from the teacher's weights,
``init_from_teacher``), seeds 0-2: test PSNR (epoch chosen on validation), retention
(% of the teacher's PSNR), params, and measured latency at batch 1 for sequence lengths 256
and 1024 (teacher / student ratio = speed-up). The teacher is trained once per seed (cached).

    uv run python benchmarks/ssm.py sar [--seeds 0 1 2]

``mnist1d``: an SSM teacher (gated, 4 layers of width 64) and a small SSM student
(``compressed`` preset) on mnist1d as sequence classification, with KD (CE + KD, T = 1:
chosen on validation, where T = 2 and 4 did worse) and alone, seeds 0-2: test accuracy.

    uv run python benchmarks/ssm.py mnist1d [--seeds 0 1 2]

Each writes benchmarks/results/ssm_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

import kdforge
from common import mean_std, run_quietly, save
from kdforge.bench import latency_ms
from kdforge.export import load_run_teacher

SAR_RECIPE = Path(__file__).parents[1] / "src" / "kdforge" / "recipes" / "sar_ssm.yaml"
LENGTHS = (256, 1024)


def latencies(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, float]:
    return {str(n): latency_ms(model.eval(), torch.randn(1, 1, n, dtype=dtype), repeats=20) for n in LENGTHS}


# the standard student has the teacher's shapes: it starts from the teacher's weights (all but the gates)
START = {
    "standard": {"preset": "standard", "init_from_teacher": True},
    "compressed": {"preset": "compressed"},
    "tiny": {"preset": "tiny"},
}


def sar(args: argparse.Namespace) -> dict:
    base = yaml.safe_load(SAR_RECIPE.read_text())
    log_dir = tempfile.mkdtemp(prefix="kdforge-ssm-")
    teacher: dict = {"psnr": []}
    rows: dict[str, dict] = {"teacher": teacher}
    run_dirs: dict[str, Path] = {}
    for preset in ("standard", "compressed", "tiny"):
        row = rows.setdefault(preset, {"kd": [], "alone": [], "retention_pct": []})
        for seed in args.seeds:
            raw = {
                **base,
                "seed": seed,
                "student": {**base["student"], **START[preset]},
                "log": {"dir": log_dir, "progress": False},
            }
            result = run_quietly(raw)
            psnr = result.results["teacher"]["test"]["psnr_db"]  # one teacher per seed, trained once (cached)
            if preset == "standard":
                teacher["psnr"].append(psnr)
            row["kd"].append(result.results["student"]["test"]["psnr_db"])
            row["alone"].append(result.results["student_alone"]["test"]["psnr_db"])
            row["retention_pct"].append(100 * row["kd"][-1] / psnr)
            teacher["params"], row["params"], run_dirs[preset] = (
                result.results["teacher"]["params"],
                result.results["student"]["params"],
                result.run_dir,
            )
            print(
                f"{preset:10s} seed {seed}: teacher {psnr:.2f} dB, student + KD {row['kd'][-1]:.2f} dB, alone "
                f"{row['alone'][-1]:.2f} dB",
                flush=True,
            )
    # latencies last, one model after the other, with no training beside them
    teacher["latency_ms_b1"] = latencies(load_run_teacher(run_dirs["standard"]), torch.cfloat)
    for preset, run_dir in run_dirs.items():
        rows[preset]["latency_ms_b1"] = latencies(kdforge.load_student(run_dir), torch.cfloat)
        rows[preset]["speedup"] = {
            n: teacher["latency_ms_b1"][n] / rows[preset]["latency_ms_b1"][n] for n in teacher["latency_ms_b1"]
        }
    return {"recipe": str(SAR_RECIPE.relative_to(SAR_RECIPE.parents[3])), "seeds": args.seeds, "rows": rows}


def sar_markdown(out: dict) -> str:
    rows = out["rows"]
    teacher = rows["teacher"]
    lines = [
        f"# SSM on sar_azimuth (`{out['recipe']}`, seeds {out['seeds']})",
        "",
        "| model | params | test PSNR + KD (dB) | alone (dB) | retention | latency b1 L256 / L1024 (ms) | speed-up "
        "L256 / L1024 |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| teacher (gate) | {teacher['params']:,} | {mean_std(teacher['psnr'])} | | 100 % | "
        f"{teacher['latency_ms_b1']['256']:.2f} / {teacher['latency_ms_b1']['1024']:.2f} | 1 / 1 |",
    ]
    for preset in ("standard", "compressed", "tiny"):
        r = rows[preset]
        lines.append(
            f"| {preset} | {r['params']:,} | {mean_std(r['kd'])} | {mean_std(r['alone'])} | "
            f"{statistics.mean(r['retention_pct']):.1f} % | "
            f"{r['latency_ms_b1']['256']:.2f} / {r['latency_ms_b1']['1024']:.2f} | {r['speedup']['256']:.1f}× / "
            f"{r['speedup']['1024']:.1f}× |"
        )
    lines += [
        "",
        "The distilled `standard` student starts from the teacher's weights (`init_from_teacher`: all but the gates); "
        "latency is measured at batch 1 after all training, one model after the other.",
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


def mnist1d(args: argparse.Namespace) -> dict:
    log_dir = tempfile.mkdtemp(prefix="kdforge-ssm-")
    out: dict = {"recipe": MNIST1D, "seeds": args.seeds, "teacher": [], "kd": [], "alone": []}
    for seed in args.seeds:
        result = run_quietly({**MNIST1D, "seed": seed, "log": {"dir": log_dir, "progress": False}})
        for key, role in (("teacher", "teacher"), ("kd", "student"), ("alone", "student_alone")):
            out[key].append(100 * result.results[role]["test"]["accuracy"])
        out["params"] = {"teacher": result.results["teacher"]["params"], "student": result.results["student"]["params"]}
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
                f"# SSM on mnist1d (seeds {out['seeds']})",
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
    parser.add_argument("benchmark", choices=["sar", "mnist1d"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    started = time.perf_counter()
    out = sar(args) if args.benchmark == "sar" else mnist1d(args)
    out["minutes"] = round((time.perf_counter() - started) / 60, 1)
    save(f"ssm_{args.benchmark}", out, (sar_markdown if args.benchmark == "sar" else mnist1d_markdown)(out))


if __name__ == "__main__":
    main()
