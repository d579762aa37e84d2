"""Tsetlin-machine benchmarks on generated token tasks where a feed-forward block matters: ``ablation``,
``hard_finish``, ``hard_literals``, ``strict_finish``, ``levels`` (see ``tm.py``)."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kdforge
from common import (
    earlier_results,
    going_on_from,
    one_thread_runs,
    refuse_adding,
    results_path,
    run_quietly,
    teacher_first,
    worker_pool,
)
from kdforge.families.tm.clause import set_hard
from kdforge.families.tm.hooks import level_choice
from tm_students import (
    FINISH_CASES,
    FINISH_EPOCHS,
    ONE_LEVEL,
    builtin_finish_table,
    finish_rows,
    hard_and_gap,
    plain_and_finished,
    pm,
    tm_recipe,
    train_finish_teachers,
)

ABLATION_TASKS = {  # per token: a boolean function of its bits
    "token parity": lambda bits: bits[:, :4].sum(1) % 2,  # of the first four channels
    "two of four": lambda bits: bits[:, :4].sum(1) == 2,
    "parity of six": lambda bits: bits.sum(1) % 2,  # of all six: attention alone is near chance
}


ABLATION_VARIANTS = {
    "TM, literal_gain 1": {"literal_gain": 1.0},
    "TM, literal_gain 4": {"literal_gain": 4.0},
    "TM strict, literal_gain 4": {"literal_gain": 4.0, "strict": True},
    "TM, literal_gain 4, no patch norm": {"literal_gain": 4.0, "patch_norm": False},
    "MLP": {"feed_forward": "mlp"},
    "none": {"feed_forward": "none"},
}


ABLATION_STUDENTS = {  # name: (model, options, variants), on a 4 x 4 grid of tokens, one token per position
    "vit_tm_tiny": (  # the label counts tokens: the mean token, not a class token, is what to read it from
        "vit_tm_tiny",
        {"patch_size": 1, "pool": "mean", "patch_norm": True},  # a norm after the patch embedding, as Swin-TM's
        [
            "TM, literal_gain 1",
            "TM, literal_gain 4",
            "TM strict, literal_gain 4",
            "TM, literal_gain 4, no patch norm",
            "MLP",
            "none",
        ],  # fmt: skip
    ),
    # one stage whose window covers the grid: merging the 4 x 4 tokens into 2 x 2 leaves the clauses unused
    "swin_tm (one stage, dim 64)": (
        "swin_tm_tiny",
        {"patch_size": 1, "depths": [2], "heads": [4], "embed_dim": 64},
        ["TM, literal_gain 4", "MLP", "none"],
    ),
}


TOKEN_TEACHER = {"name": "vit", "patch_size": 1, "embed_dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 2.0}


def token_task(path: Path, rule, side: int = 4, channels: int = 6, noise: float = 0.25) -> Path:
    """An ``arrays`` dataset (.npz) of images [channels, side, side]: noisy ±1 bits; the label is how many positions
    satisfy ``rule`` on their bits, in 5 bins of about equal size (train 8,000, test 2,000)."""
    splits = {}
    for split, (n, seed) in {"train": (8000, 0), "test": (2000, 1)}.items():
        rng = np.random.default_rng(seed)
        bits = rng.integers(0, 2, (n, channels, side, side))
        splits[f"x_{split}"] = (2.0 * bits - 1.0 + noise * rng.standard_normal(bits.shape)).astype(np.float32)
        splits[f"count_{split}"] = np.asarray(rule(bits)).sum((1, 2))
    edges = np.quantile(splits["count_train"], [0.2, 0.4, 0.6, 0.8])
    np.savez(
        path, **{f"y_{s}": np.digitize(splits.pop(f"count_{s}"), edges).astype(np.int64) for s in ("train", "test")},
        **splits,
    )  # fmt: skip
    return path


def ablation_recipe(
    task: Path, student: str, variant: str, distilled: bool, seed: int, epochs: int, log_dir: str
) -> kdforge.Recipe:
    model, options, _ = ABLATION_STUDENTS[student]
    losses = (
        [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 1.0}]
        if distilled
        else [{"name": "ce"}]
    )
    return kdforge.Recipe.from_dict(
        {
            "name": f"tm-ablation-{task.stem}",
            "seed": seed,
            "data": {"name": "arrays", "path": str(task), "batch_size": 64},
            "teacher": {"source": "train", "model": TOKEN_TEACHER, "train": {"epochs": 30}},
            "student": {"model": {"name": model, **options, "lf": 4, **ABLATION_VARIANTS[variant]}, **ONE_LEVEL},
            "losses": losses,
            "optim": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 2, "schedule": "cosine"},
            "train": {"epochs": epochs, "grad_clip": 1.0, "baseline": False},
            "log": {"dir": log_dir, "progress": False},
        }
    )


def run_student_and_data(run_dir: Path) -> tuple[torch.nn.Module, Any]:
    """A run's student (eval mode) and its dataset, split as the run split it."""
    from kdforge.data import build_dataset, data_seed
    from kdforge.runner import load_run_recipe

    recipe = load_run_recipe(run_dir)
    cfg = recipe.data
    data = build_dataset(cfg.name, seed=data_seed(cfg, recipe.seed), val_fraction=cfg.val_fraction,
                         test_fraction=cfg.test_fraction, **cfg.options)  # fmt: skip
    return kdforge.load_student(run_dir).eval(), data


@torch.inference_mode()
def mean_replaced_accuracy(result: kdforge.RunResult) -> float:
    """Test accuracy with each TM block's output replaced by its mean over the training split."""
    from kdforge.families.tm.blocks import TMFeedForward

    model, data = run_student_and_data(result.run_dir)
    blocks = [m for m in model.modules() if isinstance(m, TMFeedForward)]
    outputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(blocks))}
    hooks = [b.register_forward_hook(lambda m, a, out, i=i: outputs[i].append(out.flatten(0, -2)))
             for i, b in enumerate(blocks)]  # fmt: skip
    model(data.train.first(10**9)[0])
    for hook in hooks:
        hook.remove()
    for i, b in enumerate(blocks):  # every token of every training input, one mean vector per block
        mean = torch.cat(outputs[i]).mean(0)
        b.register_forward_hook(lambda m, a, out, mean=mean: mean.expand_as(out))
    x, y = data.test.first(10**9)[:2]
    return float((model(x).argmax(-1) == y).float().mean())


def ablation_run(job: tuple) -> dict:
    """One run of the ablation (a worker's job): its test accuracies and, for a TM student alone, the mean-replaced
    one."""
    task, student, variant, mode, seed, epochs, log_dir = job
    recipe = ablation_recipe(task, student, variant, mode == "distilled", seed, epochs, log_dir)
    result = run_quietly(recipe, resume=True)
    entry = result.results["student"]
    replaced = mean_replaced_accuracy(result) if variant.startswith("TM") and mode == "alone" else None
    test_hard = (entry.get("test_hard") or entry["test"])["accuracy"]
    return {"test": entry["test"]["accuracy"], "test_hard": test_hard, "mean_replaced": replaced,
            "params": entry["params"], "teacher": result.teacher_accuracy}  # fmt: skip


def ablation(args: argparse.Namespace) -> dict:
    """Every run of the ablation, ``args.workers`` at a time (one thread each), in ``args.runs`` (a new temporary
    folder by default; a folder of a stopped ablation: its finished runs are taken as they are). The first run of each
    task and seed, distilled, trains that seed's teacher before any other run that uses it starts."""
    one_thread_runs()  # before the file it adds to is checked: that file's runs had one thread each too
    earlier = added_to(results_path(ablation_name(args), ".json"), args.tasks, "tasks")
    log_dir = args.runs or tempfile.mkdtemp(prefix="kdforge-tm-ablation-")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    tasks = {name: Path(log_dir) / f"{name.replace(' ', '-')}.npz" for name in args.tasks or ABLATION_TASKS}
    for name, path in tasks.items():
        if not path.is_file():
            token_task(path, ABLATION_TASKS[name])
    jobs = [
        (name, student, variant, mode, seed)
        for name in tasks
        for student, (_, _, variants) in ABLATION_STUDENTS.items()
        for variant in variants
        if variant in (args.variants or variants) or variant in ("MLP", "none")
        for mode in ("distilled", "alone")
        if mode in args.modes
        for seed in args.seeds
    ]
    runs = [(tasks[name], student, variant, mode, seed, args.epochs, log_dir)
            for name, student, variant, mode, seed in jobs]  # fmt: skip
    outcome: dict[tuple, dict] = {}
    with worker_pool(args.workers, one_thread=True) as pool:  # a task's and seed's first run trains its teacher
        for run, out in teacher_first(pool, ablation_run, runs, key=lambda run: (run[0], run[4])):
            job = jobs[runs.index(run)]
            outcome[job] = out
            print(f"{' / '.join(map(str, job))}: test {100 * out['test']:.2f}, hard {100 * out['test_hard']:.2f}"
                  + (f", mean-replaced {100 * out['mean_replaced']:.2f}" if out["mean_replaced"] else ""),
                  flush=True)  # fmt: skip
    cells: dict = {}
    for (name, student, variant, mode, _), out in sorted(outcome.items(), key=lambda item: jobs.index(item[0])):
        cell = cells.setdefault(name, {}).setdefault(student, {}).setdefault(variant, {})
        cell = cell.setdefault(mode, {"test": [], "test_hard": [], "mean_replaced": []})
        for key in ("test", "test_hard", "mean_replaced"):
            if out[key] is not None:
                cell[key].append(out[key])
        cell["params"] = out["params"]
        cells[name]["teacher"] = out["teacher"]
    kept = {k: v for k, v in earlier.pop("tasks").items() if k not in cells}
    return {"epochs": args.epochs, "seeds": args.seeds, "modes": args.modes, "workers": args.workers,
            "tasks": {**kept, **cells}, **earlier}  # fmt: skip


def added_to(path: Path, tasks: list[str] | None, key: str) -> dict:
    """With ``--tasks``, the results file ``path`` that the run adds to: its ``key`` entries (the other tasks' numbers
    of the same budget, kept as they were) and where they were measured, which the new file's ``measured_on`` goes on
    from (another machine's file stops the run here, before it trains anything). Without, or with no file: none."""
    found = json.loads(path.read_text()) if tasks and path.exists() else {}
    if found:
        refuse_adding(found, path)
    return {key: found.get(key, {})} | going_on_from(found)


def ablation_name(args: argparse.Namespace) -> str:
    """The results' name: ``tm_ablation`` at the committed budget of 15 epochs, ``tm_ablation_<epochs>ep`` beside it;
    a run of one mode or of other seeds than 0-2 writes beside those (``_alone``, ``_seeds0-7``), never over them."""
    name = "tm_ablation" if args.epochs == 15 else f"tm_ablation_{args.epochs}ep"
    if len(args.modes) == 1:
        name += f"_{args.modes[0]}"
    if args.seeds != [0, 1, 2]:
        consecutive = args.seeds == list(range(args.seeds[0], args.seeds[-1] + 1))
        name += f"_seeds{args.seeds[0]}-{args.seeds[-1]}" if consecutive else "_seeds" + "_".join(map(str, args.seeds))
    return name


def ablation_table(result: dict) -> str:
    lines = [
        f"# Do the clause layers carry the model? Token tasks, {result['epochs']} epochs, seeds {result['seeds']}",
        "",
        "Test accuracy (%), mean ± std over seeds, best epoch on validation (in brackets, hard mode, the exported "
        "rules, and its difference from soft mode). Gap recovered: (variant − none) / (MLP − none), none being the "
        "student with no feed-forward block, which is also the TM student retrained with its output forced to zero. "
        "Mean-replaced: trained alone, each TM block's output replaced by its mean over the training split at test "
        "time.",
        "",
    ]
    for task, students in result["tasks"].items():
        teacher = f"teacher {100 * students['teacher']:.2f}%" if students.get("teacher") is not None else "no teacher"
        lines += [f"## {task} ({teacher})", ""]
        modes = [m for m in ("alone", "distilled") if m in result.get("modes", ("alone", "distilled"))]
        lines += [
            "| student | feed-forward | params | " + "".join(f"{m} | gap recovered | " for m in modes)
            + "mean-replaced (alone) |",
            "|---|---|---:|" + "---:|---:|" * len(modes) + "---:|",
        ]  # fmt: skip
        for student, rows in ((k, v) for k, v in students.items() if k != "teacher"):
            mean = {k: {m: statistics.mean(v[m]["test"]) for m in modes} for k, v in rows.items()}
            for variant, cell in rows.items():
                columns = "".join(
                    f"{pm(cell[m]['test'])} ({hard_and_gap(cell[m])}) | {_recovered(mean, variant, m)} | "
                    for m in modes
                )
                replaced = cell.get("alone", {}).get("mean_replaced")
                params = cell[modes[0]]["params"]
                lines.append(f"| {student} | {variant} | {params:,} | {columns}{pm(replaced) if replaced else '-'} |")
        lines.append("")
    return "\n".join([*lines, *paired_summary(result)])


def paired_summary(result: dict) -> list[str]:
    """What the conclusions rest on, with their uncertainty: per task and student, each TM variant's share of the
    none -> MLP gap (the ratio of the seeds' means, ± its standard error from 2,000 resamplings of the seeds, the
    same seeds for the three rows) and what replacing its blocks by their mean costs (paired by seed, ± the
    standard error of the mean)."""
    modes = [m for m in ("alone", "distilled") if m in result.get("modes", ("alone", "distilled"))]
    lines = [
        "## The conclusions, with their standard errors",
        "",
        "Gap recovered: ratio of the seeds' means, ± standard error over 2,000 resamplings of the seeds; in "
        "brackets, variant − none and MLP − none in points (the seeds' means). Mean-replacing costs: test accuracy "
        "alone minus mean-replaced, paired by seed, ± standard error.",
        "",
        "| task | student | feed-forward | "
        + "".join(f"gap recovered ({m}) | " for m in modes)
        + "mean-replacing costs |",
        "|---|---|---|" + "---:|" * len(modes) + "---:|",
    ]
    rng = np.random.default_rng(0)
    for task, students in result["tasks"].items():
        for student, rows in ((k, v) for k, v in students.items() if k != "teacher"):
            for variant, cell in ((k, v) for k, v in rows.items() if k.startswith("TM")):
                shares = []
                for m in modes:
                    runs = np.array([rows[k][m]["test"] for k in (variant, "none", "MLP")])  # [3, seeds]
                    draws = rng.integers(0, runs.shape[1], (2000, runs.shape[1]))
                    tm, none, mlp = runs.mean(1)
                    sampled = runs[:, draws].mean(2)  # [3, 2000]
                    spread = np.std((sampled[0] - sampled[1]) / (sampled[2] - sampled[1]), ddof=1)
                    shares.append(
                        f"{100 * (tm - none) / (mlp - none):.0f}% ± {100 * spread:.0f} "
                        f"({100 * (tm - none):.2f} / {100 * (mlp - none):.2f})"
                    )
                replaced = cell.get("alone", {}).get("mean_replaced") or []
                cost = [100 * (a - r) for a, r in zip(cell["alone"]["test"], replaced)] if replaced else []
                costs = (
                    f"{np.mean(cost):.1f} ± {np.std(cost, ddof=1) / np.sqrt(len(cost)):.1f}" if len(cost) > 1 else "-"
                )
                lines.append(f"| {task} | {student} | {variant} | {' | '.join(shares)} | {costs} |")
    return [*lines, ""]


def _recovered(mean: dict, variant: str, mode: str) -> str:
    """The share of the none -> MLP gap that ``variant`` recovers, as a percentage ("-" when there is no gap)."""
    gap = mean["MLP"][mode] - mean["none"][mode]
    return f"{100 * (mean[variant][mode] - mean['none'][mode]) / gap:.0f}%" if gap > 0 else "-"


HARD_LITERALS = 0.8  # hard_literals: the fraction of clause inputs read as booleans in training


HARD_FINISH_CASES = {  # epochs: the (task, student, variant, mode) of the ablation at that budget whose rules lost
    # more than 0.5 points to the float student when tm_ablation*.json were first measured (on a machine they did not
    # record); the cases stay fixed, so that the hard_finish, hard_literals, strict_finish and levels files regenerate
    # on their own machine class (each reruns its first stages; the ablation regenerated on a Xeon loses otherwise)
    15: [
        ("token parity", "swin_tm (one stage, dim 64)", "TM, literal_gain 4", "alone"),
        ("token parity", "swin_tm (one stage, dim 64)", "TM, literal_gain 4", "distilled"),
        ("token parity", "vit_tm_tiny", "TM, literal_gain 4", "alone"),
    ],
    30: [
        ("token parity", "vit_tm_tiny", "TM strict, literal_gain 4", "alone"),
        ("two of four", "vit_tm_tiny", "TM strict, literal_gain 4", "alone"),
        ("two of four", "vit_tm_tiny", "TM strict, literal_gain 4", "distilled"),
        ("parity of six", "vit_tm_tiny", "TM, literal_gain 4", "alone"),
        ("parity of six", "vit_tm_tiny", "TM, literal_gain 4", "distilled"),
        ("parity of six", "swin_tm (one stage, dim 64)", "TM, literal_gain 4", "alone"),
        ("parity of six", "swin_tm (one stage, dim 64)", "TM, literal_gain 4", "distilled"),
    ],
}


def hard_finish_run(job: tuple) -> dict:
    """One case and seed (a worker's job): the ablation's run on its token task, then a second stage from it in hard
    mode (``init_from``, ``hard: true``, a few epochs at a lower learning rate) with the first stage's teacher."""
    task, student, variant, mode, seed, epochs, log_dir = job
    recipe = ablation_recipe(task, student, variant, mode == "distilled", seed, epochs, log_dir)
    first = run_quietly(recipe)
    raw = recipe.to_dict()
    raw["student"]["model"]["hard"] = True
    raw["student"]["init_from"] = str(first.run_dir)
    raw["train"]["epochs"] = FINISH_EPOCHS
    raw["optim"].update(lr=2e-4, warmup_epochs=0)
    # the first stage's teacher, loaded: one trained anew would be fitted with this stage's optimiser, a weaker one
    raw["teacher"] = {"source": "checkpoint", "path": str(first.teacher_file)}
    second = run_quietly(raw)
    before, after = first.results["student"], second.results["student"]  # a student in hard mode has one test
    return {"soft": before["test"]["accuracy"], "hard": before["test_hard"]["accuracy"],
            "finished": after["test"]["accuracy"], "teacher": first.teacher_accuracy}  # fmt: skip


def strict_finish_run(job: tuple) -> dict:
    """One case and seed (a worker's job): the ablation's run on its token task, then the same recipe with
    ``student.hard_finish`` (its epochs plus the finishing ones)."""
    task, student, variant, mode, seed, epochs, log_dir = job
    return plain_and_finished(ablation_recipe(task, student, variant, mode == "distilled", seed, epochs, log_dir))


def strict_finish(args: argparse.Namespace) -> dict:
    """The `strict` cases of ``HARD_FINISH_CASES`` at ``args.epochs``, as they are and with ``student.hard_finish``."""
    cases = case_runs(args, strict_finish_run, "strict-finish", strict_only=True)
    return {"epochs": args.epochs, "finish_epochs": FINISH_EPOCHS, "seeds": args.seeds, "cases": cases}


def strict_finish_table(result: dict) -> str:
    return builtin_finish_table(
        result,
        "the `strict` students of the token tasks",
        "The ablation's recipes; the finished run",
        " A `strict` clause is an AND of booleans: its literals are read at one level.",
    )


def hard_literals_run(job: tuple) -> dict:
    """One case and seed (a worker's job): the ablation's run with ``hard_literals`` on its clause layers."""
    task, student, variant, mode, seed, epochs, log_dir = job
    raw = ablation_recipe(task, student, variant, mode == "distilled", seed, epochs, log_dir).to_dict()
    raw["student"]["model"]["hard_literals"] = HARD_LITERALS
    result = run_quietly(raw).results["student"]
    return {"soft": result["test"]["accuracy"], "hard": result["test_hard"]["accuracy"]}


def case_runs(
    args: argparse.Namespace, run, prefix: str, tasks: list[str] | None = None, strict_only: bool = False
) -> dict:
    """``run`` on each of ``HARD_FINISH_CASES`` at ``args.epochs`` (those of ``tasks`` if given; the `strict` ones
    only with ``strict_only``) and seed: {case: {key: [per seed]}}. The first job of each task and seed trains that
    seed's teacher before the others."""
    log_dir = tempfile.mkdtemp(prefix=f"kdforge-tm-{prefix}-")
    cases = [
        case
        for case in HARD_FINISH_CASES[args.epochs]
        if (not tasks or case[0] in tasks) and (not strict_only or "strict" in case[2])
    ]
    paths = {name: token_task(Path(log_dir) / f"{name.replace(' ', '-')}.npz", ABLATION_TASKS[name])
             for name in dict.fromkeys(case[0] for case in cases)}  # fmt: skip
    jobs = [(paths[task], *case, seed, args.epochs, log_dir) for task, *case in cases for seed in args.seeds]
    first = list({(job[0], job[4]): job for job in reversed(jobs)}.values())  # one job per task and seed
    runs: dict = {}  # (label, seed) -> out
    with worker_pool(args.workers, one_thread=True) as pool:
        for phase in (first, [job for job in jobs if job not in first]):
            for job, out in zip(phase, pool.map(run, phase)):
                label = case_label(job[0].stem.replace("-", " "), *job[1:4])
                runs[label, job[4]] = out
                print(f"{label}, seed {job[4]}: {out}", flush=True)
    labels = [case_label(*case) for case in cases]  # values in the order of args.seeds
    return {label: {key: [runs[label, seed][key] for seed in args.seeds] for key in runs[label, args.seeds[0]]}
            for label in labels}  # fmt: skip


def case_label(task: str, student: str, variant: str, mode: str) -> str:
    return f"{task}: {student}, {variant}, {mode}"


def hard_finish(args: argparse.Namespace) -> dict:
    """The ablation's runs of ``HARD_FINISH_CASES`` at ``args.epochs``, each followed by 3 epochs in hard mode."""
    return {"epochs": args.epochs, "finish_epochs": FINISH_EPOCHS, "seeds": args.seeds,
            "cases": case_runs(args, hard_finish_run, "hard-finish")}  # fmt: skip


def hard_literals(args: argparse.Namespace) -> dict:
    """The ablation's runs of ``HARD_FINISH_CASES`` at ``args.epochs`` trained with ``hard_literals``, beside the same
    runs without it (``tm_hard_finish`` at that budget: the same recipes and seeds). With ``--tasks``, the other
    tasks' cases of an earlier result are kept."""
    one_thread_runs()  # before the files it reads and adds to are checked (their runs had one thread each)
    plain = earlier_results(hard_finish_name(args.epochs), "hard_literals")
    if plain["seeds"] != args.seeds:
        seeds = " ".join(map(str, plain["seeds"]))
        raise SystemExit(f"the runs without hard_literals are of seeds {seeds}: run with --seeds {seeds}")
    earlier = added_to(results_path(f"tm_hard_literals_{args.epochs}ep", ".json"), args.tasks, "cases")
    cases = case_runs(args, hard_literals_run, "hard-literals", args.tasks)
    kept = earlier.pop("cases")
    merged = {label: cases.get(label) or kept[label] for label in plain["cases"] if label in cases or label in kept}
    return {"epochs": args.epochs, "seeds": args.seeds, "hard_literals": HARD_LITERALS, "cases": merged,
            "plain": {label: plain["cases"][label] for label in merged}, **earlier}  # fmt: skip


def hard_finish_name(epochs: int) -> str:
    return "tm_hard_finish" + (f"_{epochs}ep" if epochs != 15 else "")


def hard_literals_table(result: dict) -> str:
    lines = [
        f"# Clauses trained on boolean literals: the ablation's token tasks, {result['epochs']} epochs, "
        f"`hard_literals: {result['hard_literals']}`, seeds {result['seeds']}",
        "",
        f"Test accuracy (%), mean ± std over seeds; best epoch on validation (soft mode). With `hard_literals`, a "
        f"fraction {result['hard_literals']} of each clause layer's inputs, drawn afresh each step, is read as the "
        "booleans of hard mode during training. Without: the same recipes and seeds "
        f"(`{hard_finish_name(result['epochs'])}.json`). Rules: the exported boolean rules (hard mode). Gain: rules "
        "with the option minus rules without, paired by seed.",
        "",
        "| case | soft, without | rules, without | soft, with | rules, with | rules − soft, with | rules gain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, cell in result["cases"].items():
        plain = result["plain"][case]
        gap = 100 * (statistics.mean(cell["hard"]) - statistics.mean(cell["soft"]))
        gains = [with_ - without for with_, without in zip(cell["hard"], plain["hard"])]
        lines.append(
            f"| {case} | {pm(plain['soft'])} | {pm(plain['hard'])} | {pm(cell['soft'])} | {pm(cell['hard'])} "
            f"| {gap:+.2f} | {pm(gains)} |"
        )
    return "\n".join(lines) + "\n"


def hard_finish_table(result: dict) -> str:
    lines = [
        f"# Finishing in hard mode: the ablation's token tasks, {result['epochs']} epochs then "
        f"{result['finish_epochs']} in hard mode, seeds {result['seeds']}",
        "",
        "Test accuracy (%), mean ± std over seeds (per seed in brackets). Second stage: `init_from` the first run, "
        "distilled from the first run's teacher (loaded, not trained again), `hard: true`, lr 2e-4, no warm-up; its "
        "best epoch on validation.",
        "",
    ]
    return "\n".join(lines + finish_rows(result["cases"])) + "\n"


LEVELS = [1, 2, 3, 4, 8]  # levels: the hard-mode readings of each literal evaluated


@torch.inference_mode()
def levels_accuracy(run_dir: Path) -> dict[str, dict[str, float]]:
    """A trained run's student on its validation and test splits: accuracy in soft mode and in hard mode at each of
    ``LEVELS`` (soft training does not depend on them)."""
    from kdforge.families.tm.clause import clause_layers, set_levels

    model, data = run_student_and_data(run_dir)
    strict = any(layer.lf == 1 for layer in clause_layers(model))  # ANDs of booleans: one level only
    out = {}
    for split in ("val", "test"):
        x, y = getattr(data, split).first(10**9)[:2]
        row = {"soft": float((set_hard(model, False)(x).argmax(-1) == y).float().mean())}
        for levels in LEVELS[:1] if strict else LEVELS:
            row[str(levels)] = float((set_hard(set_levels(model, levels))(x).argmax(-1) == y).float().mean())
        out[split] = row
    return out


def levels_run(job: tuple) -> dict:
    """One case and seed (a worker's job): a token task's ablation run or a digits run of the accuracy table, then
    its student read at each of ``LEVELS``."""
    kind, *rest = job
    if kind == "token":
        task, student, variant, mode, seed, epochs, log_dir = rest
        recipe = ablation_recipe(task, student, variant, mode == "distilled", seed, epochs, log_dir)
    else:
        student, setting, seed, epochs, log_dir = rest
        recipe = tm_recipe(student, setting, seed, epochs, log_dir)
    return levels_accuracy(run_quietly(recipe).run_dir)


def levels(args: argparse.Namespace) -> dict:
    """The cases whose rules lost more than 0.5 points to their float student: the token tasks' at 30 epochs
    (``HARD_FINISH_CASES``) and the digits students' at 20 (``FINISH_CASES``), soft and in hard mode at each of
    ``LEVELS``. The first run of each token task and seed, and one run per digits teacher, train the teachers
    before the others start."""
    log_dir = tempfile.mkdtemp(prefix="kdforge-tm-levels-")
    tokens = HARD_FINISH_CASES[30]
    paths = {name: token_task(Path(log_dir) / f"{name.replace(' ', '-')}.npz", ABLATION_TASKS[name])
             for name in dict.fromkeys(case[0] for case in tokens)}  # fmt: skip
    token_jobs = [("token", paths[task], *case, seed, 30, log_dir) for task, *case in tokens for seed in args.seeds]
    first = list({(job[1], job[5]): job for job in reversed(token_jobs)}.values())  # one per task and seed
    digit_jobs = [("digits", *case, seed, 20, log_dir) for case in FINISH_CASES for seed in args.seeds]
    train_finish_teachers(log_dir)
    runs: dict = {}
    started = time.perf_counter()
    with worker_pool(args.workers, one_thread=True) as pool:
        for phase in (first, [job for job in token_jobs + digit_jobs if job not in first]):
            for job, out in zip(phase, pool.map(levels_run, phase)):
                label = (case_label(job[1].stem.replace("-", " "), *job[2:5]) if job[0] == "token"
                         else f"digits 32x32: {job[1]}, {job[2]}")  # fmt: skip
                runs[label, job[-3]] = out
                print(f"{label}, seed {job[-3]}: {out} ({time.perf_counter() - started:.0f} s)", flush=True)
    labels = dict.fromkeys(label for label, _ in runs)
    cases = {label: {split: {key: [runs[label, seed][split][key] for seed in args.seeds]
                             for key in runs[label, args.seeds[0]][split]} for split in ("val", "test")}
             for label in labels}  # fmt: skip
    return {"seeds": args.seeds, "levels": LEVELS, "cases": cases, "seconds": time.perf_counter() - started}


def levels_table(result: dict) -> str:
    heads = " | ".join(f"{n} level{'s' if n > 1 else ''}" for n in result["levels"])
    lines = [
        f"# Literals read at several levels in hard mode: the cases whose rules lost over 0.5 points, seeds "
        f"{result['seeds']}",
        "",
        "Test accuracy (%), mean ± std over seeds, of each run's student (best epoch on validation, soft mode) in "
        "soft mode and in hard mode with each literal read at L levels (`levels`: L = 1 is one boolean, u > 0.5; L "
        "levels read u as k / L, where k of the thresholds (2j − 1) / 2L lie below it). The same trained student in "
        "every column: soft training does not depend on the levels. Token tasks: the ablation's recipes, 30 epochs; "
        "digits 32x32: the recipes of `benchmarks/tm.py accuracy`, 20 epochs. A `strict` student's clauses are ANDs of "
        "booleans, read at one level only. In brackets: hard mode − soft mode. Last column: what "
        "`student.choose_levels` (on by default) picks in each run, the fewest levels within 0.25 points of soft "
        "mode on that run's *validation* split (the best if none is), per seed, and the mean test gap of the rules so "
        "read.",
        "",
        f"| case | soft | {heads} | levels chosen per run on validation: test − soft |",
        "|---|---:|" + "---:|" * len(result["levels"]) + "---|",
    ]
    for case, cell in result["cases"].items():
        val, test = cell["val"], cell["test"]
        read = [n for n in result["levels"] if str(n) in val]  # a strict student: one level only
        chosen = [level_choice({n: val[str(n)][i] for n in read}, val["soft"][i]) for i in range(len(val["soft"]))]
        gap = 100 * statistics.mean(test[str(n)][i] - test["soft"][i] for i, n in enumerate(chosen))
        soft = statistics.mean(test["soft"])
        cells = " | ".join(
            f"{pm(test[str(n)])} ({100 * (statistics.mean(test[str(n)]) - soft):+.2f})" if str(n) in test else "-"
            for n in result["levels"]
        )
        lines.append(f"| {case} | {pm(test['soft'])} | {cells} | {' / '.join(map(str, chosen))}: {gap:+.2f} |")
    return "\n".join(lines) + "\n"
