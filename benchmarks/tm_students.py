"""Tsetlin-machine benchmarks, the TM students on digits: ``accuracy``, ``accuracy_finish``, ``transfer``, ``features``,
``patch_norm`` (see ``tm.py``), and the finishing stage in hard mode that the ablation's studies share."""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import kdforge
from common import worker_pool
from kdforge.bench import latency_ms

VIT = {
    "patch_size": 8,
    "embed_dim": 64,
    "depth": 2,
    "heads": 4,
}  # the ViT teacher and the ViT-TM students share this shape


TEACHERS = {
    "cnn": {"source": "train", "model": {"name": "cnn", "width": 32, "depth": 3}, "train": {"epochs": 30}},
    "vit": {"source": "train", "model": {"name": "vit", **VIT, "mlp_ratio": 2.0}, "train": {"epochs": 60}},
}


GAIN_1 = {"literal_gain": 1.0}  # the default when these results were taken (now 4: see ``ablation``)


STUDENTS = {
    "tm_flat": {"model": {"name": "tm_flat", "clauses": 256, "lf": 8}},
    "vit_tm (ste)": {"model": {"name": "vit_tm", **VIT, "clauses": 64, "lf": 4, **GAIN_1}},
    "vit_tm (deeptm)": {"model": {"name": "vit_tm", **VIT, "clauses": 64, "lf": 4, "backend": "deeptm", **GAIN_1}},
    "swin_tm": {"model": {"name": "swin_tm_tiny", "lf": 4, **GAIN_1}},
}


SETTINGS = {  # (label, teacher, extra student options): alone, KD from each teacher, and ViT -> ViT-TM transfer
    "alone": ("cnn", {}),
    "KD from CNN": ("cnn", {}),
    "KD from ViT": ("vit", {}),
    "KD from ViT + init_from_teacher": ("vit", {"init_from_teacher": {"steps": 300}}),
}


# the committed hard-mode figures read every literal as one boolean: a run chooses no levels for itself
ONE_LEVEL = {"choose_levels": False}


def tm_recipe(student: str, setting: str, seed: int, epochs: int, log_dir: str) -> kdforge.Recipe:
    teacher, extra = SETTINGS[setting]
    losses = (
        [{"name": "ce"}]
        if setting == "alone"
        else [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 4.0}]
    )
    return kdforge.Recipe.from_dict(
        {
            "name": f"tm-{student.split()[0]}-{setting.split()[-1]}",
            "seed": seed,
            "data": {"name": "digits", "image_size": 32, "batch_size": 64, "augment": {"shift": 2}},
            "teacher": TEACHERS[teacher],
            "student": {**STUDENTS[student], **extra, **ONE_LEVEL},
            "losses": losses,
            "optim": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 2, "schedule": "cosine"},
            "train": {"epochs": epochs, "grad_clip": 1.0, "baseline": False},
            "log": {"dir": log_dir, "progress": False},
        }
    )


def accuracy(args: argparse.Namespace) -> dict:
    log_dir = tempfile.mkdtemp(prefix="kdforge-tm-")
    rows: dict[str, dict[str, dict[str, list[float]]]] = {}
    info: dict[str, dict] = {}
    teachers: dict[str, list[float]] = {}
    started = time.perf_counter()
    for student in STUDENTS:
        for setting, (teacher, _) in SETTINGS.items():
            if "init_from_teacher" in setting and not student.startswith("vit_tm"):
                continue
            cell = rows.setdefault(student, {}).setdefault(setting, {"test": [], "test_hard": []})
            for seed in args.seeds:
                result = kdforge.run(
                    tm_recipe(student, setting, seed, args.epochs, log_dir), console=Console(file=io.StringIO())
                )
                entry = result.results["student"]
                cell["test"].append(entry["test"]["accuracy"])
                cell["test_hard"].append(entry["test_hard"]["accuracy"])
                teachers.setdefault(teacher, []).append(result.teacher_accuracy)
                if student not in info:
                    model = kdforge.load_student(result.run_dir)
                    info[student] = {
                        "params": entry["params"],
                        "latency_ms_b1": latency_ms(model, torch.randn(1, 1, 32, 32)),
                        "latency_ms_b256": latency_ms(model, torch.randn(1, 1, 32, 32), batch_size=256, repeats=10),
                    }
            print(
                f"{student:16s} {setting:32s} {pm(cell['test'])}  hard {pm(cell['test_hard'])}  "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return {
        "epochs": args.epochs,
        "seeds": args.seeds,
        "threads": torch.get_num_threads(),
        "students": STUDENTS,
        "teachers": TEACHERS,
        "teacher_test_accuracy": {k: statistics.mean(v) for k, v in teachers.items()},
        "accuracy": rows,
        "size_and_speed": info,
        "seconds": time.perf_counter() - started,
    }


FINISH_EPOCHS = 3  # hard_finish: epochs of the second stage, in hard mode


def plain_and_finished(plain: kdforge.Recipe) -> dict:
    """``plain`` trained as it is, then with ``FINISH_EPOCHS`` more epochs in hard mode (``student.hard_finish``):
    the first run's test accuracy in soft and hard mode, the finished run's (its rules') and its best epoch."""
    raw = plain.to_dict()
    raw["student"]["hard_finish"] = FINISH_EPOCHS
    raw["train"]["epochs"] += FINISH_EPOCHS
    quiet = {"console": Console(file=io.StringIO())}
    before = kdforge.run(plain, **quiet).results["student"]
    after = kdforge.run(kdforge.Recipe.from_dict(raw), **quiet).results["student"]
    return {"soft": before["test"]["accuracy"], "hard": before["test_hard"]["accuracy"],
            "finished": after["test"]["accuracy"], "finished_epoch": after["best_epoch"]}  # fmt: skip


def finish_rows(cases: dict) -> list[str]:
    """The finishing tables' header and one row per case: soft, hard, finished (with each seed's), the gain (and
    each seed's)."""
    lines = ["| student | soft | hard | hard after finishing | finished − soft |", "|---|---:|---:|---:|---:|"]
    for case, cell in cases.items():
        seeds = " / ".join(f"{100 * v:.2f}" for v in cell["finished"])
        gap = 100 * (statistics.mean(cell["finished"]) - statistics.mean(cell["soft"]))
        gaps = " / ".join(f"{100 * (f - s):+.2f}" for f, s in zip(cell["finished"], cell["soft"]))
        lines.append(
            f"| {case} | {pm(cell['soft'])} | {pm(cell['hard'])} | {pm(cell['finished'])} ({seeds}) | {gap:+.2f} "
            f"({gaps}) |"
        )
    return lines


FINISH_CASES = [  # (student, setting): the accuracy table's students whose rules lost over 0.5 points
    ("swin_tm", "alone"),
    ("swin_tm", "KD from CNN"),
    ("swin_tm", "KD from ViT"),
    ("vit_tm (ste)", "KD from ViT + init_from_teacher"),
]


def train_finish_teachers(log_dir: str) -> None:
    """Train each teacher of ``FINISH_CASES`` once (a one-epoch student run trains and caches it in ``log_dir``), so
    that the workers reuse them rather than train them side by side."""
    one_per_teacher = {SETTINGS[setting][0]: (student, setting) for student, setting in FINISH_CASES}
    for student, setting in one_per_teacher.values():
        kdforge.run(tm_recipe(student, setting, 0, 1, log_dir), console=Console(file=io.StringIO()))


def accuracy_finish_run(job: tuple) -> dict:
    """One case and seed (a worker's job): the accuracy table's recipe, then the same with ``student.hard_finish``
    (its epochs plus the finishing ones)."""
    student, setting, seed, epochs, log_dir = job
    return plain_and_finished(tm_recipe(student, setting, seed, epochs, log_dir))


def accuracy_finish(args: argparse.Namespace) -> dict:
    """``FINISH_CASES`` trained as in the accuracy table, and with ``student.hard_finish: 3``."""
    log_dir = tempfile.mkdtemp(prefix="kdforge-tm-accuracy-finish-")
    train_finish_teachers(log_dir)
    jobs = [(*case, seed, args.epochs, log_dir) for case in FINISH_CASES for seed in args.seeds]
    cases: dict = {}
    started = time.perf_counter()
    with worker_pool(args.workers, one_thread=True) as pool:
        for job, out in zip(jobs, pool.map(accuracy_finish_run, jobs)):
            cell = cases.setdefault(f"{job[0]}, {job[1]}", {key: [] for key in out})
            for key, value in out.items():
                cell[key].append(value)
            print(f"{job[0]} / {job[1]} / seed {job[2]}: {out} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {"epochs": args.epochs, "finish_epochs": FINISH_EPOCHS, "seeds": args.seeds, "cases": cases,
            "seconds": time.perf_counter() - started}  # fmt: skip


def accuracy_finish_table(result: dict) -> str:
    return builtin_finish_table(result, "digits 32x32", "The recipes of `benchmarks/tm.py accuracy`; the finished run")


def builtin_finish_table(result: dict, students: str, recipes: str, note: str = "") -> str:
    """The table of a run finished with ``student.hard_finish`` beside the same recipe without it."""
    epochs, finish = result["epochs"], result["finish_epochs"]
    lines = [
        f"# Finishing in hard mode, built in: {students}, {epochs} epochs, or {epochs + finish} with "
        f"`student.hard_finish: {finish}`, seeds {result['seeds']}",
        "",
        f"Test accuracy (%), mean ± std over seeds (per seed in brackets). {recipes} trains {epochs} epochs in soft "
        f"mode and its last {finish} in hard mode, and chooses its best epoch on validation among the hard ones.{note}",
        "",
    ]
    return "\n".join(lines + finish_rows(result["cases"])) + "\n"


FEATURES = ("raw", "augmented", "convolutional")


TRANSFER_RECIPES = {"vit_tm_tiny": "digits_vit_tm_transfer.yaml", "swin_tm_tiny": "digits_swin_tm_transfer.yaml"}


def transfer(args: argparse.Namespace) -> dict:
    """The shipped one-to-one recipes (teacher with MLPs -> the same shape with TM blocks, ``init_from_teacher``,
    then CE + KD), ``args.epochs`` epochs, seeds alternating between the students: test accuracy (soft and hard
    mode) and the student's seconds per training epoch."""
    log_dir = tempfile.mkdtemp(prefix="kdforge-tm-transfer-")
    cells = {name: {"test": [], "test_hard": [], "epoch_seconds": [], "teacher": []} for name in TRANSFER_RECIPES}
    for seed in args.seeds:
        for name, file in TRANSFER_RECIPES.items():
            raw = kdforge.Recipe.from_yaml(Path(__file__).parent.parent / "recipes" / file).to_dict()
            raw.update(seed=seed, log={"dir": log_dir, "progress": False})
            raw["student"].update(ONE_LEVEL)
            raw["train"].update(epochs=args.epochs, baseline=False)
            result = kdforge.run(kdforge.Recipe.from_dict(raw), console=Console(file=io.StringIO()))
            entry, cell = result.results["student"], cells[name]
            epochs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
            epochs = [e for e in epochs if e.get("kind") == "epoch" and e.get("stage") == "distill"]
            cell["test"].append(entry["test"]["accuracy"])
            cell["test_hard"].append(entry["test_hard"]["accuracy"])
            cell["epoch_seconds"].append(epochs[-1]["seconds"] / len(epochs))
            cell["teacher"].append(result.teacher_accuracy)
            print(f"{name} seed {seed}: test {pm(cell['test'][-1:])}, hard {pm(cell['test_hard'][-1:])}, "
                  f"{cell['epoch_seconds'][-1]:.2f} s per epoch", flush=True)  # fmt: skip
    return {"epochs": args.epochs, "seeds": args.seeds, "threads": torch.get_num_threads(), "students": cells}


def transfer_table(result: dict) -> str:
    cells = result["students"]
    vit_seconds = statistics.mean(cells["vit_tm_tiny"]["epoch_seconds"])
    lines = [
        f"# One-to-one transfer recipes on digits 32x32, {result['epochs']} epochs, seeds {result['seeds']}",
        "",
        f"CPU, {result['threads']} threads. Test accuracy (%), mean ± std over seeds, best epoch on validation; hard "
        "mode: the exported rules. Epoch: the student's seconds per training epoch (KD with the teacher online), "
        "and as a multiple of ViT-TM tiny's.",
        "",
        "| student | recipe | teacher | test | hard mode | hard − soft | epoch s | × ViT-TM |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, cell in cells.items():
        seconds = statistics.mean(cell["epoch_seconds"])
        gap = 100 * (statistics.mean(cell["test_hard"]) - statistics.mean(cell["test"]))
        lines.append(
            f"| {name} | `{TRANSFER_RECIPES[name]}` | {100 * statistics.mean(cell['teacher']):.2f} | "
            f"{pm(cell['test'])} | {pm(cell['test_hard'])} | {gap:+.2f} | {seconds:.2f} | "
            f"{seconds / vit_seconds:.2f} |"
        )
    return "\n".join(lines) + "\n"


def features_run(preset: str, seed: int, epochs: int, log_dir: str) -> dict:
    """One seed of one preset: a ``tm_flat`` trained alone on booleanised digits ({test, test_hard, literals})."""
    recipe = {
        "name": f"tm-features-{preset}",
        "seed": seed,
        "data": {
            "name": "digits",
            "batch_size": 64,
            "booleanize": {"method": "thermometer", "levels": 3, "features": preset},
        },
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1}},  # unused
        "student": {"model": {"name": "tm_flat", "clauses": 256, "lf": 8}},
        "losses": [{"name": "ce"}],
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01, "warmup_epochs": 1, "schedule": "cosine"},
        "train": {"epochs": epochs, "baseline": False},
        "log": {"dir": log_dir, "progress": False},
    }
    result = kdforge.run(kdforge.Recipe.from_dict(recipe), console=Console(file=io.StringIO()))
    entry = result.results["student"]
    literals = 2 * int(np.prod(kdforge.load_student(result.run_dir).threshold.shape))
    return {"test": entry["test"]["accuracy"], "test_hard": entry["test_hard"]["accuracy"], "literals": literals}


def features(args: argparse.Namespace) -> dict:
    from kdforge.config import BooleanizeConfig
    from kdforge.data import build_dataset
    from kdforge.data.booleanize import booleanize_bundle

    log_dir = tempfile.mkdtemp(prefix="kdforge-tm-features-")
    rows: dict[str, dict] = {}
    for preset in FEATURES:
        cell = rows.setdefault(preset, {"test": [], "test_hard": []})
        for seed in args.seeds:
            found = features_run(preset, seed, args.epochs, log_dir)
            cell["test"].append(found["test"])
            cell["test_hard"].append(found["test_hard"])
            cell["literals"] = found["literals"]
        print(f"{preset:14s} {pm(cell['test'])}  hard {pm(cell['test_hard'])}  literals {cell['literals']}", flush=True)
    data = build_dataset("digits", seed=0, val_fraction=0.15, test_fraction=0.2, image_size=32)
    timing = {}
    for preset in FEATURES:
        cache = tempfile.mkdtemp(prefix="kdforge-bits-")
        cfg = BooleanizeConfig(levels=3, features=preset, cache=cache)
        computed, read = [], []
        for _ in range(5):
            for path in Path(cache).glob("*.npz"):
                path.unlink()
            for times in (computed, read):  # first computed (and stored), then read back
                start = time.perf_counter()
                booleanize_bundle(data, cfg)
                times.append(time.perf_counter() - start)
        timing[preset] = {"computed_s": statistics.median(computed), "cached_s": statistics.median(read)}
    return {
        "epochs": args.epochs,
        "seeds": args.seeds,
        "threads": torch.get_num_threads(),
        "accuracy": rows,
        "booleanize_digits32": timing,
    }


def features_table(result: dict) -> str:
    lines = [
        "# Booleanised-feature presets: tm_flat (256 clauses, lf 8) alone on digits 8x8, thermometer 3 levels, "
        f"{result['epochs']} epochs, seeds {result['seeds']}",
        "",
        "Test accuracy (%), mean ± std over seeds, best epoch on validation; hard mode is the exported rules. "
        "Booleanising digits at 32x32 (1,797 images), median of 5: computed, then read back from "
        "`data.booleanize.cache`.",
        "",
        "| features | literals | test | test (hard) | booleanise 32x32: computed | cached |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for preset, cell in result["accuracy"].items():
        t = result["booleanize_digits32"][preset]
        lines.append(
            f"| {preset} | {cell['literals']:,} | {pm(cell['test'])} | {pm(cell['test_hard'])} | "
            f"{1000 * t['computed_s']:.0f} ms | {1000 * t['cached_s']:.0f} ms |"
        )
    return "\n".join(lines) + "\n"


def pm(values: list[float]) -> str:
    """Fractions over seeds as 'mean ± std' in percent, the mean padded to the tables' width."""
    return f"{100 * statistics.mean(values):6.2f} ± {100 * statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def hard_and_gap(cell: dict) -> str:
    """A cell's hard-mode test accuracy (the exported rules) and its difference from soft mode, means in percent."""
    hard, soft = (100 * statistics.mean(cell[key]) for key in ("test_hard", "test"))
    return f"{hard:.2f}, {hard - soft:+.2f}"


def accuracy_table(result: dict) -> str:
    settings = list(SETTINGS)
    lines = [
        f"# TM students on digits 32x32: {result['epochs']} epochs, seeds {result['seeds']}",
        "",
        "Test accuracy (%), mean ± std over seeds; best epoch chosen on validation. In brackets, hard mode (the "
        "exported boolean rules) and its difference from soft mode.",
        "Teachers: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in result["teacher_test_accuracy"].items()) + ".",
        "",
        "| student | params | latency ms b1 / b256 | " + " | ".join(settings) + " |",
        "|---|---:|---:|" + "---:|" * len(settings),
    ]
    for student, cells in result["accuracy"].items():
        size = result["size_and_speed"][student]
        values = [f"{pm(cells[s]['test'])} (hard {hard_and_gap(cells[s])})" if s in cells else "-" for s in settings]
        lines.append(
            f"| {student} | {size['params']:,} | {size['latency_ms_b1']:.2f} / {size['latency_ms_b256']:.1f} | "
            + " | ".join(values)
            + " |"
        )
    return "\n".join(lines) + "\n"


def patch_norm(args: argparse.Namespace) -> dict:
    """ViT-TM tiny on digits 32 x 32, alone, ``patch_norm`` on and off, each seed both ways in turn."""
    log_dir = tempfile.mkdtemp(prefix="kdforge-tm-patch-norm-")
    found: dict[str, list[float]] = {"on": [], "off": []}
    for seed in args.seeds:
        for key, on in (("on", True), ("off", False)):
            recipe = tm_recipe("vit_tm (ste)", "alone", seed, args.epochs, log_dir).to_dict()
            recipe["student"]["model"].update(literal_gain=4.0, patch_norm=on)
            result = kdforge.run(kdforge.Recipe.from_dict(recipe), console=Console(file=io.StringIO()))
            found[key].append(result.results["student"]["test"]["accuracy"])
            print(f"seed {seed}, patch_norm {on}: {100 * found[key][-1]:.2f}", flush=True)
    return {"epochs": args.epochs, "seeds": args.seeds, "threads": torch.get_num_threads(), "test_accuracy": found}


def patch_norm_table(result: dict) -> str:
    rows = [f"| {key} | {pm(values)} | {' / '.join(f'{100 * v:.2f}' for v in values)} |"
            for key, values in result["test_accuracy"].items()]  # fmt: skip
    return "\n".join([
        f"# ViT-TM tiny on digits 32 x 32, alone, {result['epochs']} epochs: patch_norm on and off",
        "", "Test accuracy (%), best epoch on validation; seeds " + ", ".join(map(str, result["seeds"])) + ".", "",
        "| patch_norm | test accuracy | per seed |", "|---|---:|---|", *rows, "",
    ])  # fmt: skip
