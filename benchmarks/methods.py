"""The distillation suite: on each teacher/student pair, does distilling pay over training the student alone?

Nine pairs: digits 8×8, digits 32×32 and MNIST-1D, each with a CNN teacher (width 32) and MLP, CNN and ViT
students of 1k-50k parameters; 60 epochs, 3 seeds. On every pair:

- **alone**: the student trained with cross-entropy only;
- **default**: the shipped ``digits_kd`` recipe with only the data, the student and the epochs swapped (when a
  method's recipe is that same recipe, as DIST's is, their runs are the same runs);
- **tuned**: ``kdforge tune`` of the default recipe (its default space; each trial scored by its mean
  validation accuracy over ``--trial-seeds`` seeds, each its own split), then the best recipe trained over the
  seeds;
- every method of ``METHODS``; the **best single method** is the one with the best mean *validation* accuracy.

The best epoch of every run is chosen on validation and its test accuracy reported. Gains are paired by seed
(a seed fixes the split and the student's initial weights): mean ± std of the per-seed differences; a gain
*pays* when its mean is positive and at least its std.

    uv run python benchmarks/methods.py run [--pairs ...] [--methods ...] [--jobs 2]
    uv run python benchmarks/methods.py tune [--pairs ...] [--trials 30] [--trial-seeds 2] [--jobs 2]
    uv run python benchmarks/methods.py report     # both tables again from their JSON
    uv run python benchmarks/methods.py seeds [--pairs ...] [--seeds 0 ... 9] [--lrs 0.003 0.01 | --tuned]

``seeds`` asks what three seeds cannot tell: over more seeds (ten by default), the student alone and distilled by
the default recipe at each learning rate of ``--lrs`` (or, ``--tuned``, by the pair's tuned recipe), the mean gain
with its standard error, and how many of the triples of those seeds would pass the suite's test
(results/methods_seeds.json and .md; what is not run keeps its numbers).

``run`` and ``tune`` keep the numbers of the pairs and methods they do not run (results/methods.json, written
after every finished job; a file measured on another machine class, or one that does not say where, is refused
before any training) and rewrite results/methods.md and the table in docs/choosing.md. Teachers are trained
once per dataset and seed and reused from ``--runs`` (default: a temporary folder of the invocation's own,
removed after); every method, learning rate and tuned recipe distils from that one teacher, trained with the
default recipe's optimiser. Given the ``--runs`` of a stopped invocation, a command goes on from the runs it
finished there (and a tune from its study's journal) instead of training them again.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

import kdforge
from common import (
    RESULTS,
    forced_kernels,
    job_threads,
    refuse_adding,
    results_path,
    run_quietly,
    worker_pool,
    write_json,
    write_text,
)

CHOOSING = Path(__file__).parents[1] / "docs" / "choosing.md"  # its main table is the suite's
TABLE_MARKS = ("<!-- suite table: benchmarks/results/methods.md -->", "<!-- end of suite table -->")
DEFAULT_RECIPE = Path(kdforge.__file__).parent / "recipes" / "digits_kd.yaml"
EPOCHS = 60
SEEDS = list(range(10))  # the seeds command's committed results
ALONE, DEFAULT, TUNED = "alone", "default recipe", "tuned"

KD = {"name": "kd", "weight": 0.9, "temperature": 4.0}
CE = {"name": "ce", "weight": 0.1}
# Each method overrides sections of the pair's default recipe; "teacher" may wrap the pair's teacher.
METHODS: dict[str, dict[str, Any]] = {
    ALONE: {"losses": [{"name": "ce"}]},
    "KD": {"losses": [CE, KD]},
    "DKD": {"losses": [{"name": "ce"}, {"name": "dkd", "temperature": 4.0, "alpha": 1.0, "beta": 8.0, "warmup": 5}]},
    "DIST": {"losses": [{"name": "ce"}, {"name": "dist", "temperature": 4.0, "beta": 2.0, "gamma": 2.0}]},
    "DIST, β 3.5 γ 0.6": {
        "losses": [{"name": "ce"}, {"name": "dist", "temperature": 4.0, "beta": 3.5, "gamma": 0.6}]
    },  # where the tunes of the 8×8 MLPs landed
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
        "teacher": lambda t: {"source": "ema", "decay": 0.99},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
    },
    "POCL": {
        "losses": [CE, KD],
        "curriculum": {"name": "pocl", "partitions": [0.33, 0.66, 1.0], "temperatures": [1.0, 2.0, 4.0]},
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
}

CNN_TEACHER = {"name": "cnn", "width": 32, "depth": 3}
DATASETS = {  # data section, teacher epochs
    "digits": ({"name": "digits", "batch_size": 64}, 20),
    "digits32": ({"name": "digits", "batch_size": 64, "image_size": 32}, 20),
    "mnist1d": ({"name": "mnist1d", "batch_size": 128}, 30),
}
# where a hint is taken: every CNN stage, or the penultimate features of the others
CNN_HINT = {"student": "features", "teacher": "features", "mapping": "uniform", "projector": "conv1x1"}
FLAT_HINT = {"student": "head:input", "teacher": "head:input", "projector": "linear"}
PAIRS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "digits-mlp64": ("digits", {"name": "mlp", "hidden": [64]}, FLAT_HINT),
    "digits-mlp16": ("digits", {"name": "mlp", "hidden": [16]}, FLAT_HINT),
    "digits-cnn4": ("digits", {"name": "cnn", "width": 4, "depth": 3}, CNN_HINT),
    "digits32-cnn8": ("digits32", {"name": "cnn", "width": 8, "depth": 3}, CNN_HINT),
    "digits32-mlp32": ("digits32", {"name": "mlp", "hidden": [32]}, FLAT_HINT),
    "digits32-vit": (
        "digits32",
        {"name": "vit", "patch_size": 8, "embed_dim": 32, "depth": 2, "heads": 2, "mlp_ratio": 2.0},
        FLAT_HINT,
    ),
    "mnist1d-mlp64": ("mnist1d", {"name": "mlp", "hidden": [64]}, FLAT_HINT),
    "mnist1d-mlp32": ("mnist1d", {"name": "mlp", "hidden": [32]}, FLAT_HINT),
    "mnist1d-cnn8": ("mnist1d", {"name": "cnn", "width": 8, "depth": 3}, CNN_HINT),
}


# ------------------------------------------------------------------ recipes


def default_recipe(pair: str, seed: int, runs: str) -> dict[str, Any]:
    """The shipped default recipe with the pair's data, teacher and student, at the suite's budget."""
    dataset, student, _ = PAIRS[pair]
    data, teacher_epochs = DATASETS[dataset]
    raw = kdforge.Recipe.from_yaml(DEFAULT_RECIPE).to_dict()
    raw["name"] = pair
    raw["seed"] = seed
    raw["data"] = {**raw["data"], **data}
    # the teacher fits with the default optimiser, whatever a method's or a learning rate's: one teacher a seed
    raw["teacher"] = {
        "source": "train",
        "model": CNN_TEACHER,
        "train": {"epochs": teacher_epochs, "optim": {**raw["optim"]}},
    }
    raw["student"] = {**raw["student"], "model": student}
    raw["train"] = {**raw["train"], "epochs": EPOCHS, "baseline": False}
    raw["log"] = {**raw["log"], "dir": runs, "progress": False}
    return raw


def method_recipe(pair: str, method: str, seed: int, runs: str) -> dict[str, Any]:
    raw = default_recipe(pair, seed, runs)
    spec = METHODS[method]
    hint = PAIRS[pair][2]
    raw["name"] += "-" + method.replace(" ", "").replace(",", "")
    raw["losses"] = [{**term, **hint} if term["name"] == "hint" else term for term in spec["losses"]]
    if "teacher" in spec:
        raw["teacher"] = spec["teacher"](raw["teacher"])
    for section in ("optim", "train"):
        raw[section] = {**raw[section], **spec.get(section, {})}
    if "curriculum" in spec:
        raw["curriculum"] = spec["curriculum"]
    return raw


def default_twin(pair: str) -> str | None:
    """The method whose recipe is the default recipe (names aside): its runs are the default recipe's runs."""

    def normal(raw: dict[str, Any]) -> dict[str, Any]:  # every option spelled out, the run's name left out
        return {**kdforge.Recipe.from_dict(raw).to_dict(), "name": None}

    default = normal(default_recipe(pair, 0, "runs"))
    return next((m for m in METHODS if normal(method_recipe(pair, m, 0, "runs")) == default), None)


def scores(raw: dict[str, Any]) -> dict[str, float]:
    """Train a recipe quietly (or take its finished run in its log folder: a stopped invocation given the same
    ``--runs`` goes on where it stopped): the student's test accuracy at its best validation epoch, and that
    validation."""
    result = run_quietly(raw, resume=True)
    student, teacher = result.results["student"], result.results.get("teacher", {})
    return {
        "test": student["test"]["accuracy"],
        "val": student["val_best"]["accuracy"],
        "params": student["params"],
        **({"teacher": teacher["test"]["accuracy"]} if "test" in teacher else {}),
    }


# ------------------------------------------------------------------ jobs (one process each)


def method_job(pair: str, method: str, seeds: list[int], runs: str, threads: int) -> list[dict[str, float]]:
    torch.set_num_threads(threads)
    return [scores(method_recipe(pair, method, seed, runs)) for seed in seeds]


def default_job(pair: str, _: str, seeds: list[int], runs: str, threads: int) -> list[dict[str, float]]:
    torch.set_num_threads(threads)
    return [scores(default_recipe(pair, seed, runs)) for seed in seeds]


def tune_job(pair: str, trials: int, seeds: list[int], runs: str, threads: int, trial_seeds: int) -> dict[str, Any]:
    """Search the default recipe on the validation splits of ``trial_seeds`` seeds from the first one, then train the
    best recipe over every seed."""
    from kdforge.tuner import tune

    torch.set_num_threads(threads)
    base = kdforge.Recipe.from_dict(default_recipe(pair, seeds[0], runs))
    found = tune(base, trials, seeds=0, trial_seeds=trial_seeds, console=Console(file=io.StringIO()))
    best = found.best_recipe.to_dict()
    alone = {**best, "losses": METHODS[ALONE]["losses"]}  # alone at the tuned optimiser and budget: no free gain
    return {
        "params": found.best_params,
        "trial_seeds": trial_seeds,
        "recipe_trial": recipe_trial_rank(found.tune_dir, base.name),
        "seeds": [scores({**best, "seed": seed, "name": f"{pair}-tuned"}) for seed in seeds],
        ALONE: [scores({**alone, "seed": seed, "name": f"{pair}-tuned-alone"}) for seed in seeds],
    }


def seeds_job(pair: str, which: str, recipe: str, seeds: list[int], runs: str, threads: int) -> list[dict[str, float]]:
    """The student alone or distilled (``which``: ``ALONE`` or ``recipe``'s kind) over ``seeds``: the default recipe
    at learning rate ``recipe``, or the pair's tuned recipe (``TUNED``: its settings from results/methods.json; the
    student alone at its learning rate)."""
    torch.set_num_threads(threads)
    settings = tunes()[pair][TUNED]["params"] if recipe == TUNED else {"optim.lr": float(recipe)}
    if which == ALONE:  # the student alone takes the learning rate; the other settings are the losses'
        settings = {"optim.lr": settings["optim.lr"]}

    def raw(seed: int) -> dict[str, Any]:
        base = default_recipe(pair, seed, runs)
        if which == ALONE:
            base["losses"] = METHODS[ALONE]["losses"]
        made = kdforge.Recipe.from_dict(base, overrides=[f"{key}={value}" for key, value in settings.items()])
        return {**made.to_dict(), "name": f"{pair}-{which}-{recipe}".replace(" ", "")}

    return [scores(raw(seed)) for seed in seeds]


def recipe_trial_rank(tune_dir: Path, name: str) -> dict[str, Any] | None:
    """Where the study's first trial, the default recipe itself, ranked on validation among the finished trials."""
    import optuna

    from kdforge.tuner import RECIPE_ITSELF, open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(str(tune_dir / "study.journal")))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    recipe = next((t for t in complete if t.user_attrs.get(RECIPE_ITSELF)), None)
    if recipe is None:
        return None
    return {"rank": 1 + sum(t.value > recipe.value for t in complete), "of": len(complete), "value": recipe.value}


# ------------------------------------------------------------------ results


def load(path: Path | None = None) -> dict[str, Any]:
    """The suite's results (by default this run's file: :func:`common.results_path`)."""
    path = path or results_path("methods", ".json")
    return json.loads(path.read_text()) if path.exists() else {"epochs": EPOCHS, "pairs": {}}


def tunes() -> dict[str, Any]:
    """Each pair's tuned settings, as the machine's own tune found them (whatever kernels this run forces)."""
    return load(RESULTS / "methods.json")["pairs"]


def merged(results: dict[str, Any], new: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results`` with the pairs' entries measured anew in place of the old ones."""
    for pair, entry in new.items():
        old = results["pairs"].setdefault(pair, {})
        old.update({k: v for k, v in entry.items() if k != "methods"})
        old.setdefault("methods", {}).update(entry.get("methods", {}))
    return results


def save(results: dict[str, Any], measured: bool = True) -> str:
    """methods.json (when ``measured``: the file then says where and by which command) and methods.md; and the
    main table in docs/choosing.md, between its markers (not for a run with forced kernels, whose files lie beside:
    :func:`common.results_path`). Returns methods.md's text."""
    text = markdown(results)
    if measured:
        write_json(results_path("methods", ".json"), results)
    write_text(results_path("methods", ".md"), text)
    if forced_kernels():
        return text
    table = "\n".join(line for line in text.split("## Every method")[0].splitlines() if line.startswith("|"))
    doc = CHOOSING.read_text()
    start, end = doc.index(TABLE_MARKS[0]) + len(TABLE_MARKS[0]), doc.index(TABLE_MARKS[1])
    write_text(CHOOSING, doc[:start] + "\n" + table + "\n" + doc[end:])
    return text


def _values(runs: list[dict[str, float]], split: str = "test") -> list[float]:
    return [100 * r[split] for r in runs]


def pays(diffs: list[float]) -> bool:
    """The suite's test of a gain: its mean is positive and at least the std of the per-seed differences."""
    mean = statistics.mean(diffs)
    return mean > 0 and mean >= statistics.stdev(diffs)


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}"


def _diffs(runs: list[dict[str, float]], alone: list[dict[str, float]], split: str = "test") -> list[float]:
    """The per-seed accuracy differences on ``split`` (points)."""
    return [a - b for a, b in zip(_values(runs, split), _values(alone, split), strict=True)]


def gain(runs: list[dict[str, float]], alone: list[dict[str, float]]) -> tuple[float, float]:
    """Mean and std of the per-seed test-accuracy differences (points)."""
    diffs = _diffs(runs, alone)
    return statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0


def _gain(runs: list[dict[str, float]], alone: list[dict[str, float]]) -> str:
    """The test gain over ``alone``: mean ± std of the per-seed differences, ✓ where it pays (:func:`pays`)."""
    mean, std = gain(runs, alone)
    mark = " ✓" if len(runs) > 1 and pays(_diffs(runs, alone)) else ""
    return f"{round(mean, 2) + 0.0:+.2f} ± {std:.2f}{mark}"  # no "-0.00"


def _gain_cell(runs: list[dict[str, float]], alone: list[dict[str, float]]) -> str:
    return f"{_mean_std(_values(runs))} ({_gain(runs, alone)})"


def _tuned_cell(tuned: dict[str, Any] | None) -> str:
    """The tuned recipe against the student alone trained with the tuned optimiser and budget."""
    return _gain_cell(tuned["seeds"], tuned[ALONE]) if tuned else "—"


def best_method(methods: dict[str, list[dict[str, float]]]) -> str | None:
    """The distillation method with the best mean validation accuracy; the student alone is no method, and a
    method with its own optimiser is not compared with a student alone trained with AdamW."""
    candidates = [m for m in methods if m != ALONE and "optim" not in METHODS.get(m, {"optim": None})]
    return max(candidates, key=lambda m: statistics.mean(_values(methods[m], "val"))) if candidates else None


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Distillation suite: {results['epochs']} epochs, 3 seeds",
        "",
        "Test accuracy (%) at the best validation epoch, mean ± std over seeds; in brackets the gain over the same "
        "student alone, paired by seed (mean ± std of the per-seed differences), ✓ where its mean is positive "
        "and at least its std; the tuned recipe is compared with the student alone trained at the tuned learning "
        "rate. The best single method is chosen on mean validation accuracy. "
        "`uv run python benchmarks/methods.py run` and `... tune --trials 30`.",
        "",
        f"| pair | params | teacher | {ALONE} | {DEFAULT} | {TUNED} | best single method |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for pair, found in results["pairs"].items():
        methods, alone = found.get("methods", {}), found.get("methods", {}).get(ALONE)
        if alone is None:
            continue

        twin = default_twin(pair)
        default = found.get(DEFAULT) or (methods.get(twin) if twin else None)

        def cell(runs: list[dict[str, float]] | None, alone: list[dict[str, float]] = alone) -> str:
            return _gain_cell(runs, alone) if runs else "—"

        best = best_method(methods)
        plain = [m for m in methods if "teacher" not in METHODS.get(m, {})]  # the others wrap the teacher
        teacher = next(([100 * r["teacher"] for r in methods[m]] for m in plain if "teacher" in methods[m][0]), [])
        lines.append(
            f"| {pair} | {alone[0]['params']:,} | {f'{statistics.mean(teacher):.2f}' if teacher else '—'} | "
            f"{_mean_std(_values(alone))} | "
            f"{cell(default)} | {_tuned_cell(found.get('tuned'))} | "
            + (f"{best}: {cell(methods[best])}" if best else "—")
            + " |"
        )
    pairs = {p: found["methods"] for p, found in results["pairs"].items() if ALONE in found.get("methods", {})}
    lines += ["", "## Every method", "", *_method_table(pairs, METHODS, lambda r, _: _mean_std(_values(r)))]
    methods = [m for m in METHODS if m != ALONE]
    lines += [
        "",
        "## Every method's gain on test",
        "",
        "The gain over the student alone on the test splits, paired by seed, as in the first table (DOT's against "
        "the student alone trained with AdamW, not with its SGD).",
        "",
        *_method_table(pairs, methods, _gain),
        "",
        "## Every method's gain on validation",
        "",
        "The mean gain over the student alone on the validation splits (where methods are chosen), paired by seed.",
        "",
        *_method_table(pairs, methods, _val_gain),
    ]
    tuned = {p: f["tuned"] for p, f in results["pairs"].items() if "tuned" in f}
    if tuned:
        lines += ["", "## Tuned settings", ""]
        lines += [
            f"- {p} (trials scored on {found.get('trial_seeds', 1)} seed(s)): "
            + ", ".join(
                f"`{k}` = {v:.3g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in found["params"].items()
            )
            + _recipe_trial_note(found.get("recipe_trial"))
            for p, found in tuned.items()
        ]
    return "\n".join(lines) + "\n"


def _method_table(
    pairs: dict[str, dict[str, list[dict[str, float]]]],
    methods: Iterable[str],
    cell: Callable[[list[dict[str, float]], list[dict[str, float]]], str],
) -> list[str]:
    """A row per method, a column per pair: ``cell(runs, alone)``, or "—" where the method has no runs there."""
    lines = ["| method | " + " | ".join(pairs) + " |", "|---|" + "---:|" * len(pairs)]
    for method in methods:
        row = (cell(found[method], found[ALONE]) if method in found else "—" for found in pairs.values())
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return lines


def _val_gain(runs: list[dict[str, float]], alone: list[dict[str, float]]) -> str:
    return f"{round(statistics.mean(_diffs(runs, alone, 'val')), 2) + 0.0:+.2f}"  # no "-0.00"


def _distilled(config: str) -> str:
    """The name a ``seeds`` configuration keeps its distilled runs under: the tuned recipe's, or the default's."""
    return TUNED if config == TUNED else DEFAULT


def seeds_markdown(found: dict[str, Any]) -> str:
    """Per pair and recipe: alone, distilled, the gain over all seeds, and the share of the seeds' triples on which
    the suite's three-seed test passes."""
    seeds = found["seeds"]
    lines = [
        f"# Distillation suite over {len(seeds)} seeds: is the gain real, can three seeds show it?",
        "",
        f"The student alone and distilled at the suite's {found['epochs']} epochs, seeds {seeds[0]}–{seeds[-1]} "
        "(each its own split and initial weights), by the default recipe at each learning rate and by the pair's "
        "tuned recipe (the student alone at the tuned learning rate); test accuracy (%) at the best validation "
        "epoch, mean ± std. Gain: the per-seed differences, mean ± std and the standard error of the mean (std / "
        f"√n). Triples: of the {math.comb(len(seeds), 3)} sets of three of these seeds, how many pass the suite's "
        "test (mean gain positive and at least its std). `uv run python benchmarks/methods.py seeds` and `... seeds "
        "--tuned`.",
        "",
        "| pair | recipe | alone | distilled | gain | standard error | triples that pass |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for pair, configs in found["pairs"].items():
        for config, runs in configs.items():
            kind = _distilled(config)
            if ALONE not in runs or kind not in runs:  # not measured (yet)
                continue
            diffs = _diffs(runs[kind], runs[ALONE])
            triples = list(itertools.combinations(diffs, 3))
            lr = runs["lr"] if kind == TUNED else float(config)
            alone, distilled = _mean_std(_values(runs[ALONE])), _mean_std(_values(runs[kind]))
            lines.append(
                f"| {pair} | {kind}, lr {lr:.2g} | {alone} | {distilled} | "
                f"{statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} | "
                f"{statistics.stdev(diffs) / math.sqrt(len(diffs)):.2f} | "
                f"{sum(map(pays, triples))} of {len(triples)} |"
            )
    return "\n".join(lines + _same_triples(found)) + "\n"


def _same_triples(found: dict[str, Any]) -> list[str]:
    """Per recipe measured on every pair: on each set of three seeds, how many pairs pass the suite's test, the
    same three seeds for all of them (as when the suite is run once)."""
    pairs = found["pairs"].values()
    configs = [c for c in next(iter(pairs), {}) if all(_distilled(c) in p.get(c, {}) for p in pairs)]
    if not configs:
        return []
    lines = [
        "",
        "## One run of the suite: the same three seeds on every pair",
        "",
        f"For each set of three of the seeds, the number of the {len(pairs)} pairs whose gain passes the test on "
        "those seeds.",
        "",
        "| recipe | fewest pairs | median | most | triples that pass on every pair |",
        "|---|---:|---:|---:|---:|",
    ]
    for config in configs:
        kind = _distilled(config)
        diffs = [_diffs(p[config][kind], p[config][ALONE]) for p in pairs]
        counts = [
            sum(pays([d[i] for i in triple]) for d in diffs)
            for triple in itertools.combinations(range(len(found["seeds"])), 3)
        ]
        name = TUNED if kind == TUNED else f"default recipe, lr {float(config):.2g}"
        lines.append(
            f"| {name} | {min(counts)} | {statistics.median(counts):g} | {max(counts)} | "
            f"{counts.count(len(diffs))} of {len(counts)} |"
        )
    return lines


def _recipe_trial_note(rank: dict[str, Any] | None) -> str:
    """Where the default recipe ranked among the trials, for a search that started from it (older ones did not)."""
    if rank is None:
        return " (an earlier search, which did not start from the default recipe)"
    return f"; the default recipe, trial 0, ranked {rank['rank']} of {rank['of']} finished trials on validation"


# ------------------------------------------------------------------ the commands


def _pool(jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]], workers: int, done: Callable[..., None]) -> None:
    started = time.perf_counter()
    with worker_pool(workers) as pool:
        futures = {pool.submit(fn, *args): args for fn, args in jobs}
        for future in as_completed(futures):
            done(futures[future], future.result())
            print(f"  {futures[future][:2]} done ({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "tune", "report", "seeds"])
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--methods", nargs="+", choices=[*METHODS, DEFAULT], default=[*METHODS, DEFAULT])
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (seeds: 0 to 9)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2], help="seeds: the learning rates")
    parser.add_argument("--tuned", action="store_true", help="seeds: each pair's tuned recipe instead")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--trial-seeds", type=int, default=2, help="seeds (splits) each tune trial is scored on")
    parser.add_argument("--jobs", type=int, default=2, help="processes; each gets cores / jobs threads")
    parser.add_argument("--runs", help="where the runs go (default: a new temporary folder, this invocation's own)")
    args = parser.parse_args()
    if args.runs is None:  # this invocation's own folder, removed after: no other run's teachers, none left behind
        with tempfile.TemporaryDirectory(prefix="kdforge-methods-") as runs:
            args.runs = runs
            return measure(args)
    return measure(args)


def measure(args: argparse.Namespace) -> None:
    threads = job_threads(args.jobs)
    if args.command == "seeds":
        over_seeds(args, threads)
        return
    args.seeds = args.seeds or [0, 1, 2]
    if args.command == "report":  # the tables again, from the file as it is: nothing measured, nothing stamped
        print(save(load(), measured=False))
        if (seeds := RESULTS / "methods_seeds.json").exists():
            print(write_seeds_table(json.loads(seeds.read_text())))
        return
    if (path := results_path("methods", ".json")).exists():  # results this run adds to
        refuse_adding(load(), path)
    mine: dict[str, dict[str, Any]] = {}  # what this invocation measured, merged into the file after each job

    def record(job: tuple[Any, ...], found: Any) -> None:
        pair, what = job[0], job[1]
        entry = mine.setdefault(pair, {})
        if args.command == "tune":
            entry["tuned"] = found
        elif what == DEFAULT:
            entry[DEFAULT] = found
        else:
            entry.setdefault("methods", {})[what] = found
        save(merged(load(), mine))  # read again: a run and a tune may be writing the file at the same time

    if args.command == "run":
        jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        for pair in args.pairs:
            twin = default_twin(pair)  # the default recipe is also a method's recipe: run it once
            for method in (m for m in args.methods if not (m == DEFAULT and twin in args.methods)):
                jobs.append(
                    (default_job if method == DEFAULT else method_job, (pair, method, args.seeds, args.runs, threads))
                )
        _pool(jobs, args.jobs, record)
    else:
        _pool(
            [(tune_job, (pair, args.trials, args.seeds, args.runs, threads, args.trial_seeds)) for pair in args.pairs],
            args.jobs,
            record,
        )
    print(markdown(load()))


def over_seeds(args: argparse.Namespace, threads: int) -> None:
    """The ``seeds`` command: alone and distilled per pair, by the default recipe at each learning rate or by the
    tuned recipe, over many seeds."""
    seeds = args.seeds or SEEDS
    path = results_path(seeds_name(seeds), ".json")  # fewer seeds than the committed file's write beside it
    found: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if (found.get("epochs"), found.get("seeds")) != (EPOCHS, seeds):  # other runs: start afresh
        found = {"epochs": EPOCHS, "seeds": seeds, "pairs": {}}
    if found["pairs"]:  # results this run adds to: stop before any run if they are another machine's
        refuse_adding(found, path)
    configs = [TUNED] if args.tuned else [str(lr) for lr in args.lrs]
    tuned = tunes() if args.tuned else {}
    for pair in args.pairs:  # entries made now, emptied if run before: the table keeps this order, other pairs stay
        for config in configs:
            found["pairs"].setdefault(pair, {})[config] = (
                {"lr": tuned[pair][TUNED]["params"]["optim.lr"]} if config == TUNED else {}
            )

    def record(job: tuple[Any, ...], runs: list[dict[str, float]]) -> None:
        pair, which, config = job[:3]
        found["pairs"][pair][config][which] = runs
        write_json(path, found)

    jobs = [
        (seeds_job, (p, w, config, seeds, args.runs, threads))
        for p in args.pairs
        for config in configs
        for w in (ALONE, _distilled(config))
    ]
    _pool(jobs, args.jobs, record)
    print(write_seeds_table(found))


def seeds_name(seeds: list[int]) -> str:
    """The ten seeds' results are methods_seeds; a run on other seeds is named for them, and leaves those alone."""
    return "methods_seeds" if seeds == SEEDS else f"methods_seeds_{'_'.join(map(str, seeds))}"


def write_seeds_table(found: dict[str, Any]) -> str:
    text = seeds_markdown(found)
    write_text(results_path(seeds_name(found["seeds"]), ".md"), text)
    return text


if __name__ == "__main__":
    main()
