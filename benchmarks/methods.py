"""Student test accuracy of the distillation methods, on mnist1d and digits, 3 seeds each.

Every method trains the same student (same initial weights per seed) from the same
teacher (trained once per dataset and seed, then reused from the cache) for the same
fixed number of epochs; the best epoch is chosen on validation, accuracy is reported on
test. Nothing here was tuned on the test split: the settings are the library's defaults
and the shipped recipes' values.

    uv run python benchmarks/methods.py [--student cnn|mlp] [--epochs 60] [--seeds 0 1 2] [--datasets digits mnist1d]
    [--methods ...]

``--methods`` runs only those; the others keep their numbers from the last run with the same
epochs, seeds and datasets.

Writes benchmarks/results/methods_<student>.json and .md.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

import kdforge

KD = {"name": "kd", "weight": 0.9, "temperature": 4.0}
CE = {"name": "ce", "weight": 0.1}
METHODS: dict[str, dict] = {
    "CE only": {"losses": [{"name": "ce"}]},
    "KD": {"losses": [CE, KD]},
    "DKD": {"losses": [{"name": "ce"}, {"name": "dkd", "temperature": 4.0, "alpha": 1.0, "beta": 8.0, "warmup": 5}]},
    "CTKD": {"losses": [CE, {**KD, "temperature": {"learnable": "ctkd", "init": 4.0, "ramp": 0.2, "reg": 0.01}}]},
    "hint + KD": {
        "losses": [CE, KD, {"name": "hint", "weight": {"schedule": "cosine", "start": 1.0, "end": 0.0}}]
    },  # layers per student
    "CKA + KD": {
        "losses": [CE, KD, {"name": "cka", "student": "head:input", "teacher": "head:input", "debiased": True}]
    },
    "RKD + KD": {"losses": [CE, KD, {"name": "rkd", "student": "head:input", "teacher": "head:input"}]},
    "CRD + KD": {"losses": [CE, KD, {"name": "crd", "weight": 0.8, "negatives": 1024}]},  # K below the split sizes
    "EMA self-distillation": {
        "teacher": {"source": "ema", "decay": 0.99},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
    },
    "POCL": {
        "losses": [CE, KD],
        "curriculum": {"name": "pocl", "partitions": [0.33, 0.66, 1.0], "temperatures": [1.0, 2.0, 4.0]},
    },
    "KD, SGD (DOT with Δ = 0)": {
        "losses": [CE, KD],
        "optim": {"name": "dot", "lr": 0.05, "weight_decay": 5e-4, "warmup_epochs": 1, "dot_delta": 0.0},
        "train": {"grad_clip": None},
    },
    "KD, DOT optimiser": {
        "losses": [CE, KD],
        "optim": {"name": "dot", "lr": 0.05, "weight_decay": 5e-4, "warmup_epochs": 1},
        "train": {"grad_clip": None},
    },
    "dual-head KD": {"losses": [CE, {**KD, "name": "dual_head_kd"}]},
    "KD + EMA self-distillation": {
        "teacher": lambda t: {"source": "ensemble", "members": [t, {"source": "ema", "decay": 0.99}]},
        "losses": [
            CE,
            {**KD, "weight": 0.6, "member": 0},
            {"name": "kd", "weight": 0.3, "temperature": 2.0, "member": 1},
        ],
    },
    "diverse_kd (CNN + MLP teachers)": {
        "teacher": lambda t: {
            "source": "ensemble",
            "members": [t, {"source": "train", "model": {"name": "mlp", "hidden": [256]}, "train": {"epochs": 30}}],
        },
        "losses": [CE, {"name": "diverse_kd", "weight": 0.9, "temperature": 4.0}],
    },
}
DATASETS = {
    "digits": {
        "data": {"name": "digits", "batch_size": 64},
        "teacher": {"model": {"name": "cnn", "width": 32, "depth": 3}, "train": {"epochs": 20}},
    },
    "mnist1d": {
        "data": {"name": "mnist1d", "batch_size": 128},
        "teacher": {"model": {"name": "cnn", "width": 32, "depth": 3}, "train": {"epochs": 30}},
    },
}
STUDENTS = {  # the student, and where its hint is taken: every CNN stage, or the MLP's penultimate features
    "cnn": (
        {"model": {"name": "cnn", "width": 8, "depth": 3}},
        {"student": "features", "teacher": "features", "mapping": "uniform", "projector": "conv1x1"},
    ),
    "mlp": (
        {"model": {"name": "mlp", "hidden": [64]}},
        {"student": "head:input", "teacher": "head:input", "projector": "linear"},
    ),
}


def recipe(dataset: str, method: str, student: str, seed: int, epochs: int, log_dir: str) -> kdforge.Recipe:
    base, spec = DATASETS[dataset], METHODS[method]
    model, hint_layers = STUDENTS[student]
    losses = [{**term, **hint_layers} if term["name"] == "hint" else term for term in spec["losses"]]
    teacher = {"source": "train", **base["teacher"]}
    teacher = (
        spec["teacher"](teacher) if "teacher" in spec else teacher
    )  # a method may wrap the dataset's teacher (an ensemble)
    return kdforge.Recipe.from_dict(
        {
            "name": f"{dataset}-{method.replace(' ', '')}",
            "seed": seed,
            "data": base["data"],
            "teacher": teacher,
            "student": model,
            "losses": losses,
            **({"curriculum": spec["curriculum"]} if "curriculum" in spec else {}),
            "optim": spec.get("optim", {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01, "warmup_epochs": 1}),
            "train": {"epochs": epochs, "grad_clip": 1.0, "baseline": False, **spec.get("train", {})},
            "log": {"dir": log_dir, "progress": False},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", choices=list(STUDENTS), default="cnn")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=list(METHODS),
        help="run these; the others keep their numbers from the last run with the same settings",
    )
    args = parser.parse_args()
    out = Path(__file__).parent / "results"
    log_dir = tempfile.mkdtemp(prefix="kdforge-methods-")
    rows: dict[str, dict[str, list[float]]] = {}
    teachers: dict[str, list[float]] = {}
    earlier = out / f"methods_{args.student}.json"
    if earlier.exists() and set(args.methods) != set(METHODS):
        last = json.loads(earlier.read_text())
        if (last["epochs"], last["seeds"], sorted(last["student_test_accuracy"])) == (
            args.epochs,
            args.seeds,
            sorted(args.datasets),
        ):
            rows, teachers = last["student_test_accuracy"], {d: [v] for d, v in last["teacher_test_accuracy"].items()}
    started = time.perf_counter()
    for dataset in args.datasets:
        for method in args.methods:
            accs = rows.setdefault(dataset, {}).setdefault(method, [])
            if method == "KD":  # the teacher's accuracy is read off the KD runs
                teachers[dataset] = []
            for seed in args.seeds:
                result = kdforge.run(
                    recipe(dataset, method, args.student, seed, args.epochs, log_dir),
                    console=Console(file=io.StringIO()),
                )
                accs.append(result.student_accuracy)
                if method == "KD":
                    teachers.setdefault(dataset, []).append(result.teacher_accuracy)
            accs[:] = accs[-len(args.seeds) :]  # this run's seeds replace earlier numbers
            print(
                f"{dataset:8s} {method:24s} {100 * statistics.mean(accs):6.2f} ± "
                f"{100 * statistics.stdev(accs) if len(accs) > 1 else 0:.2f}  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    out.mkdir(exist_ok=True)
    summary = {
        "benchmark": "methods",
        "epochs": args.epochs,
        "seeds": args.seeds,
        "student": STUDENTS[args.student][0],
        "teacher_test_accuracy": {d: statistics.mean(v) for d, v in teachers.items()},
        "student_test_accuracy": rows,
        "seconds": time.perf_counter() - started,
    }
    (out / f"methods_{args.student}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# Methods benchmark: {args.student} student {STUDENTS[args.student][0]['model']}, {args.epochs} epochs, "
        f"seeds {args.seeds}",
        "",
        "Test accuracy (%), mean ± std over seeds; best epoch chosen on validation.",
        "",
        "| method | " + " | ".join(args.datasets) + " |",
        "|---|" + "---:|" * len(args.datasets),
    ]
    for method in (m for m in METHODS if all(m in rows[d] for d in args.datasets)):
        cells = [
            f"{100 * statistics.mean(rows[d][method]):.2f} ± "
            f"{100 * statistics.stdev(rows[d][method]) if len(args.seeds) > 1 else 0:.2f}"
            for d in args.datasets
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append(
        "| *teacher (CNN width 32)* | "
        + " | ".join(f"{100 * summary['teacher_test_accuracy'][d]:.2f}" for d in args.datasets)
        + " |"
    )
    (out / f"methods_{args.student}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
