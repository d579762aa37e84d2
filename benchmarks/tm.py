"""Tsetlin-machine benchmarks.

``accuracy``: TM students on digits at 32x32, 3 seeds, a fixed budget of epochs: ``tm_flat``,
``vit_tm`` (backends ste and deeptm), ``swin_tm``, each trained alone and distilled (CE + KD)
from a CNN teacher and from a ViT teacher, both trained by the recipe; ``vit_tm`` also
initialised from the ViT teacher (``init_from_teacher``: the ViT teacher has the student's
shape, so attention, norms and embeddings are copied and each TM block first learns its
MLP). Test accuracy (best epoch on validation), hard-mode accuracy, params, measured
latency at batch 1 and 256. Teachers and students see the same augmented views.

    uv run python benchmarks/tm.py accuracy [--epochs 30] [--seeds 0 1 2]

Writes benchmarks/results/tm_accuracy.json and .md.

``accuracy_finish``: the accuracy table's students whose rules lost over 0.5 points in hard mode (Swin-TM in every
setting, ViT-TM initialised from its teacher), trained again by the same recipes, then with
``student.hard_finish: 3`` (3 more epochs, in hard mode, the best chosen among them on validation): how far the
exported rules stay from soft mode, before and after finishing.

    uv run python benchmarks/tm.py accuracy_finish [--epochs 20] [--workers 2]

Writes benchmarks/results/tm_accuracy_finish.json and .md.

``packed``: an exported clause layer evaluated in integers (:class:`kdforge.families.tm.PackedTM`)
against the same layer in hard mode in PyTorch (float, ``inference_mode``): outputs must be
identical; throughput ratio at several batch sizes (target >= 10x on CPU). The two take
turns in 10 ms slices in one process, several rounds, median per-round ratio.

The layer is the clause layer of a ``tm_flat`` student on 32x32 digits (1,024 inputs,
2,048 literals); its weights are spread as training spreads them (random thresholds and
votes), since speed and exactness do not depend on what was learned.

    uv run python benchmarks/tm.py packed [--rounds 7] [--clauses 256]

Writes benchmarks/results/tm_packed_vnni.json on a CPU with int8 dot products (VNNI), else tm_packed_no_vnni.json.

``blocks``: the shipped TM students with their clause blocks in integers (:func:`kdforge.families.tm.packed_model`:
the attention and everything else stays float) against the same students in hard mode in PyTorch, on digits 32x32
test images (``tm_flat`` on booleanised 8x8 digits) at batch 1 and 256: every clause block on its own captured
inputs, one after the other; the whole student end to end (float soft mode, float hard mode, packed); and the time
spent inside its clause blocks during those forward passes (a hook before and after each). Weights are spread as
training spreads them. The logits must be identical to hard mode; ratios are medians of paired rounds in which the
variants take turns in 10 ms slices.

    uv run python benchmarks/tm.py blocks [--rounds 7] [--levels 8]

Writes benchmarks/results/tm_blocks_vnni.json and .md on a CPU with int8 dot products (VNNI), else tm_blocks_no_vnni;
with ``--levels`` L > 1 (every clause layer's literals read at L levels; ``tm_flat``, whose inputs are booleans, left
out) ``tm_blocks_<cpu>_levels<L>``.

``paths``: every way :class:`kdforge.families.tm.PackedTM` can multiply on this CPU (float32; PyTorch's int8 products
where the CPU has VNNI; oneDNN's int8 layers in x86 builds), each forced in turn on every clause-layer shape of the
same students at batch 1 and 256, against the layer in hard mode, paired; and the way it takes by default. Its
thresholds are chosen from these tables.

    uv run python benchmarks/tm.py paths [--rounds 7]

Writes benchmarks/results/tm_paths_vnni.json and .md, or tm_paths_no_vnni.

``ablation``: do the clause layers carry the model? On generated tasks where a feed-forward block matters (a 4 x 4 grid
of tokens, each six noisy ±1 bits; a token's class needs a non-linear function of its own bits, which attention alone
computes poorly: the parity of four bits, "exactly two of four bits", the parity of all six; the label is how many
tokens hold it, in 5 bins), ``vit_tm_tiny`` with its TM feed-forward (``literal_gain`` 1 and 4, ``strict``, with a norm
after the patch embedding (``patch_norm``) and once without it) and a one-stage ``swin_tm`` with the TM feed-forward,
each against the same student with an MLP of about the same size (``feed_forward: mlp``) and with none (``feed_forward:
none``, which is also the TM retrained with its output forced to zero); each trained alone and distilled (½ CE + ½ KD,
T = 1; at T = 4, distilled ViT-TMs scored 67-88% on token parity against 83-97% alone) from a ViT with MLPs trained by
the recipe, 3 seeds. For the TM students trained alone, the test accuracy with each TM block's output replaced by its
mean over the training split. The share of the none -> MLP gap a TM variant recovers is (TM − none) / (MLP − none). Runs
go ``--workers`` at a time, one thread each.

    uv run python benchmarks/tm.py ablation [--epochs 15] [--seeds 0 1 2] [--workers 2] [--variants ...] [--tasks ...]

Writes benchmarks/results/tm_ablation.json and .md (at another budget, tm_ablation_<epochs>ep.json and .md);
``--variants`` keeps only those TM rows (MLP and none always run); ``--tasks`` runs only those tasks and keeps the
others' results of the same budget.

``hard_finish``: the ablation's runs whose exported rules lost more than 0.5 points to the float student (at 15
epochs: on token parity, the one-stage Swin-TM alone and distilled, the ViT-TM alone; at 30: the strict ViT-TM on token
parity and two of four, and both students on the parity of six), each followed by a second stage of 3 epochs in hard
mode (``init_from`` the first run, ``hard: true``, lr 2e-4): test accuracy soft, hard, and hard after finishing.

    uv run python benchmarks/tm.py hard_finish [--epochs 15 | --epochs 30]

Writes benchmarks/results/tm_hard_finish.json and .md (at 30 epochs, tm_hard_finish_30ep.json and .md).

``hard_literals``: the same cases trained with ``hard_literals: 0.8`` (80% of each clause layer's inputs, drawn afresh
each step, read in training as the booleans hard mode reads), beside the same recipes and seeds without it (from
``hard_finish``'s results at that budget): test accuracy soft and of the rules, and the rules' gain paired by seed.

    uv run python benchmarks/tm.py hard_literals [--epochs 30] [--tasks ...]

Writes benchmarks/results/tm_hard_literals_30ep.json and .md; ``--tasks`` runs only those tasks' cases and keeps the
others'.

``levels``: every case whose exported rules lost more than 0.5 points to the float student (the token tasks' cases of
``hard_finish`` at 30 epochs, and the digits 32x32 students of ``accuracy_finish`` at 20), trained once as there and
read in hard mode with each literal at 1, 2, 3, 4 and 8 levels (``set_levels``; soft training does not depend on them):
validation and test accuracy, soft and at each level.

    uv run python benchmarks/tm.py levels

Writes benchmarks/results/tm_levels.json and .md. The table's last column is what ``student.choose_levels`` (on by
default) does in each run: the fewest levels within 0.25 points of soft mode on that run's validation split.

``strict_finish``: the ``strict`` cases of ``levels`` (clauses that are ANDs of booleans, read at one level), trained
as there, and the same recipes with ``student.hard_finish: 3`` (3 more epochs, in hard mode, the best chosen among them
on validation): test accuracy soft, hard, and of the finished rules.

    uv run python benchmarks/tm.py strict_finish

Writes benchmarks/results/tm_strict_finish.json and .md.

Every benchmark here but ``levels`` measures hard mode with one boolean per literal (``student.choose_levels:
false``), as its committed figures were taken.

``patch_norm``: ``vit_tm_tiny`` (patch 8) on digits at 32 x 32 trained alone, with and without a norm after its patch
embedding, seeds interleaved, 2 threads: test accuracy.

    uv run python benchmarks/tm.py patch_norm --epochs 15

Writes benchmarks/results/tm_patch_norm.json and .md.

``transfer``: the shipped one-to-one recipes, ``digits_vit_tm_transfer`` and ``digits_swin_tm_transfer`` (a teacher
with MLP blocks -> the same shape with TM blocks, ``init_from_teacher``, then CE + KD), 15 epochs, 3 seeds: test
accuracy in soft and hard mode, and each student's seconds per epoch.

    uv run python benchmarks/tm.py transfer --epochs 15

Writes benchmarks/results/tm_transfer.json and .md.

``features``: the booleanised-feature presets (``data.booleanize.features``: raw, augmented,
convolutional; thermometer with 3 levels) for a ``tm_flat`` student on digits trained alone
(cross-entropy), 3 seeds: test accuracy (best epoch on validation) in hard mode, literals
per sample; and how long booleanising digits at 32x32 takes, computed and read back from
``data.booleanize.cache`` (median of 5, one process).

    uv run python benchmarks/tm.py features [--epochs 30] [--seeds 0 1 2]

Writes benchmarks/results/tm_features.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

import kdforge
from common import paired, save, worker_pool, write_text
from kdforge.bench import latency_ms
from kdforge.families.tm.clause import set_hard
from kdforge.families.tm.hooks import level_choice
from kdforge.families.tm.rules import PackedTM, fast_int8, has_int8_kernel, model_rules
from kdforge.models import build_model

RESULTS = Path(__file__).parent / "results"


def cpu_class() -> str:
    """The packed results are named by it: "vnni" where ``PackedTM`` multiplies in int8 (CPUs with int8 dot products),
    else "no_vnni" (oneDNN's int8 layers on many rows, float32 on few)."""
    return "vnni" if fast_int8() else "no_vnni"


def machine() -> dict:
    """The CPU the speeds were measured on: its name, and how ``PackedTM`` multiplies on it."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):  # not Linux: the platform's name
        pass
    return {"cpu": name, "capability": torch.backends.cpu.get_cpu_capability(), "products": PackedTM.products()}


def int8_against_float32(rounds: int) -> dict[str, float]:
    """Speed of PyTorch's int8 matrix product (int32 sums) over a float32 one on the same 64 x 64 layer, at 16 and 256
    rows: what :func:`fast_int8` decides on (without VNNI the int8 kernel is a slow fallback). Empty where PyTorch has
    no int8 CPU kernel."""
    if not has_int8_kernel():
        return {}
    ratios = {}
    for rows in (16, 256):
        bits, signs = (
            torch.randint(0, 2, (rows, 64), dtype=torch.int8),
            torch.randint(-1, 2, (64, 64), dtype=torch.int8),
        )
        variants = {
            "float32": lambda a=bits.float(), b=signs.float(): a @ b,
            "int8": lambda a=bits, b=signs: torch._int_mm(a, b),
        }
        speeds = paired(variants, rows, rounds, 0.1)
        ratios[f"rows {rows}"] = speeds["int8_over_float32"]
    return ratios


def packed(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = build_model("tm_flat", input_shape=(1, 32, 32), num_classes=10, clauses=args.clauses, lf=8)
    with torch.no_grad():
        model.threshold.normal_(0, 0.3)
        model.tm.votes.normal_(0, 2)
        model.tm.bias.normal_()
    set_hard(model.eval())
    layer = PackedTM(model_rules(model)["layers"]["tm"])
    rows = []
    print(", ".join(f"{k}: {v}" for k, v in machine().items()))
    for batch in args.batch_sizes:
        x = torch.randn(batch, 1, 32, 32)
        x_np = x.numpy()
        with torch.inference_mode():
            identical = bool(np.array_equal(layer(x_np), model(x).numpy()))
            speeds = paired(
                {"float": lambda x=x: model(x), "packed": lambda x_np=x_np: layer(x_np)}, batch, args.rounds
            )
        row = {
            "batch": batch,
            "identical": identical,
            "float_samples_per_s": speeds["float_samples_per_s"],
            "packed_samples_per_s": speeds["packed_samples_per_s"],
            "ratio": speeds["packed_over_float"],
        }
        rows.append(row)
        print(
            f"batch {batch:5d}: float {row['float_samples_per_s']:>10,.0f}/s  packed "
            f"{row['packed_samples_per_s']:>10,.0f}/s  ratio {row['ratio']:.1f}x  identical {identical}"
        )
    return {
        "int8_over_float32_products": int8_against_float32(args.rounds),
        "layer": {
            "inputs": 1024,
            "literals": 2048,
            "clauses": args.clauses,
            "outputs": 10,
            "mean_included_literals": float(layer.sizes.mean()),
        },
        "threads": torch.get_num_threads(),
        **machine(),
        "rows": rows,
    }


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
                f"{student:16s} {setting:32s} {_pm(cell['test'])}  hard {_pm(cell['test_hard'])}  "
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
    result = kdforge.run(recipe, console=Console(file=io.StringIO()))
    entry = result.results["student"]
    replaced = mean_replaced_accuracy(result) if variant.startswith("TM") and mode == "alone" else None
    test_hard = (entry.get("test_hard") or entry["test"])["accuracy"]
    return {"test": entry["test"]["accuracy"], "test_hard": test_hard, "mean_replaced": replaced,
            "params": entry["params"], "teacher": result.teacher_accuracy}  # fmt: skip


def ablation(args: argparse.Namespace) -> dict:
    """Every run of the ablation, ``args.workers`` at a time (one thread each). The first run of each task and seed,
    distilled, trains that seed's teacher before any other run that uses it starts."""
    log_dir = tempfile.mkdtemp(prefix="kdforge-tm-ablation-")
    tasks = {name: token_task(Path(log_dir) / f"{name.replace(' ', '-')}.npz", ABLATION_TASKS[name])
             for name in args.tasks or ABLATION_TASKS}  # fmt: skip
    jobs = [
        (name, student, variant, mode, seed)
        for name in tasks
        for student, (_, _, variants) in ABLATION_STUDENTS.items()
        for variant in variants
        if variant in (args.variants or variants) or variant in ("MLP", "none")
        for mode in ("distilled", "alone")
        for seed in args.seeds
    ]
    first: dict[tuple, tuple] = {}  # (task, seed): the run that trains that teacher
    for job in jobs:
        first.setdefault((job[0], job[4]), job)
    phases = [list(first.values()), [job for job in jobs if job not in first.values()]]
    outcome: dict[tuple, dict] = {}
    with worker_pool(args.workers, one_thread=True) as pool:
        for phase in phases:
            runs = [(tasks[name], student, variant, mode, seed, args.epochs, log_dir)
                    for name, student, variant, mode, seed in phase]  # fmt: skip
            for job, out in zip(phase, pool.map(ablation_run, runs)):
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
    kept = {}  # with --tasks: the other tasks' numbers of the same budget, as they were
    if args.tasks and (earlier := RESULTS / f"{ablation_name(args.epochs)}.json").exists():
        kept = {k: v for k, v in json.loads(earlier.read_text())["tasks"].items() if k not in cells}
    return {"epochs": args.epochs, "seeds": args.seeds, "workers": args.workers, "tasks": {**kept, **cells}}


def ablation_name(epochs: int) -> str:
    """The results' name: ``tm_ablation`` at the committed budget of 15 epochs, ``tm_ablation_<epochs>ep`` beside it."""
    return "tm_ablation" if epochs == 15 else f"tm_ablation_{epochs}ep"


def ablation_table(result: dict) -> str:
    lines = [
        f"# Do the clause layers carry the model? Token tasks, {result['epochs']} epochs, seeds {result['seeds']}",
        "",
        "Test accuracy (%), mean ± std over seeds, best epoch on validation (hard mode, the exported rules, in "
        "brackets). Gap recovered: (variant − none) / (MLP − none), none being the student with no feed-forward "
        "block, which is also the TM student retrained with its output forced to zero. Mean-replaced: trained alone, "
        "each TM block's output replaced by its mean over the training split at test time.",
        "",
    ]
    for task, students in result["tasks"].items():
        lines += [f"## {task} (teacher {100 * students['teacher']:.2f}%)", ""]
        lines += [
            "| student | feed-forward | params | alone | gap recovered | distilled | gap recovered | "
            "mean-replaced (alone) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for student, rows in ((k, v) for k, v in students.items() if k != "teacher"):
            mean = {k: {m: statistics.mean(v[m]["test"]) for m in ("alone", "distilled")} for k, v in rows.items()}
            for variant, cell in rows.items():
                recovered = [_recovered(mean, variant, m) for m in ("alone", "distilled")]
                replaced = cell["alone"]["mean_replaced"]
                lines.append(
                    f"| {student} | {variant} | {cell['alone']['params']:,} | {_pm(cell['alone']['test'])} "
                    f"({100 * statistics.mean(cell['alone']['test_hard']):.2f}) | {recovered[0]} | "
                    f"{_pm(cell['distilled']['test'])} ({100 * statistics.mean(cell['distilled']['test_hard']):.2f})"
                    f" | {recovered[1]} | {_pm(replaced) if replaced else '-'} |"
                )
        lines.append("")
    return "\n".join(lines)


def _recovered(mean: dict, variant: str, mode: str) -> str:
    """The share of the none -> MLP gap that ``variant`` recovers, as a percentage ("-" when there is no gap)."""
    gap = mean["MLP"][mode] - mean["none"][mode]
    return f"{100 * (mean[variant][mode] - mean['none'][mode]) / gap:.0f}%" if gap > 0 else "-"


FINISH_EPOCHS = 3  # hard_finish: epochs of the second stage, in hard mode
HARD_LITERALS = 0.8  # hard_literals: the fraction of clause inputs read as booleans in training
HARD_FINISH_CASES = {  # epochs: the (task, student, variant, mode) of the ablation at that budget whose rules lost
    # more than 0.5 points to the float student
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
    mode (``init_from``, ``hard: true``, a few epochs at a lower learning rate)."""
    task, student, variant, mode, seed, epochs, log_dir = job
    recipe = ablation_recipe(task, student, variant, mode == "distilled", seed, epochs, log_dir)
    first = kdforge.run(recipe, console=Console(file=io.StringIO()))
    raw = recipe.to_dict()
    raw["student"]["model"]["hard"] = True
    raw["student"]["init_from"] = str(first.run_dir)
    raw["train"]["epochs"] = FINISH_EPOCHS
    raw["optim"].update(lr=2e-4, warmup_epochs=0)
    second = kdforge.run(kdforge.Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    before, after = first.results["student"], second.results["student"]  # a student in hard mode has one test
    return {"soft": before["test"]["accuracy"], "hard": before["test_hard"]["accuracy"],
            "finished": after["test"]["accuracy"]}  # fmt: skip


def strict_finish_run(job: tuple) -> dict:
    """One case and seed (a worker's job): the ablation's run on its token task, then the same recipe with
    ``student.hard_finish`` (its epochs plus the finishing ones)."""
    task, student, variant, mode, seed, epochs, log_dir = job
    return plain_and_finished(ablation_recipe(task, student, variant, mode == "distilled", seed, epochs, log_dir))


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
    result = kdforge.run(kdforge.Recipe.from_dict(raw), console=Console(file=io.StringIO())).results["student"]
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
    plain = json.loads((RESULTS / f"{hard_finish_name(args.epochs)}.json").read_text())
    if plain["seeds"] != args.seeds:
        seeds = " ".join(map(str, plain["seeds"]))
        raise SystemExit(f"the runs without hard_literals are of seeds {seeds}: run with --seeds {seeds}")
    cases = case_runs(args, hard_literals_run, "hard-literals", args.tasks)
    earlier = RESULTS / f"tm_hard_literals_{args.epochs}ep.json"
    kept = json.loads(earlier.read_text())["cases"] if args.tasks and earlier.exists() else {}
    merged = {label: cases.get(label) or kept[label] for label in plain["cases"] if label in cases or label in kept}
    return {"epochs": args.epochs, "seeds": args.seeds, "hard_literals": HARD_LITERALS, "cases": merged,
            "plain": {label: plain["cases"][label] for label in merged}}  # fmt: skip


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
            f"| {case} | {_pm(plain['soft'])} | {_pm(plain['hard'])} | {_pm(cell['soft'])} | {_pm(cell['hard'])} "
            f"| {gap:+.2f} | {_pm(gains)} |"
        )
    return "\n".join(lines) + "\n"


def finish_rows(cases: dict) -> list[str]:
    """The finishing tables' header and one row per case: soft, hard, finished (with each seed's), the gain."""
    lines = ["| student | soft | hard | hard after finishing | finished − soft |", "|---|---:|---:|---:|---:|"]
    for case, cell in cases.items():
        seeds = " / ".join(f"{100 * v:.2f}" for v in cell["finished"])
        gap = 100 * (statistics.mean(cell["finished"]) - statistics.mean(cell["soft"]))
        lines.append(
            f"| {case} | {_pm(cell['soft'])} | {_pm(cell['hard'])} | {_pm(cell['finished'])} ({seeds}) | {gap:+.2f} |"
        )
    return lines


def hard_finish_table(result: dict) -> str:
    lines = [
        f"# Finishing in hard mode: the ablation's token tasks, {result['epochs']} epochs then "
        f"{result['finish_epochs']} in hard mode, seeds {result['seeds']}",
        "",
        "Test accuracy (%), mean ± std over seeds (per seed in brackets). Second stage: `init_from` the first run, "
        "`hard: true`, lr 2e-4, no warm-up; its best epoch on validation.",
        "",
    ]
    return "\n".join(lines + finish_rows(result["cases"])) + "\n"


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
    return levels_accuracy(kdforge.run(recipe, console=Console(file=io.StringIO())).run_dir)


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
        "booleans, read at one level only. Last column: what `student.choose_levels` (on by default) picks in each "
        "run, the fewest levels within 0.25 points of soft mode on that run's *validation* split (the best if none "
        "is), per seed, and the mean test gap of the rules so read.",
        "",
        f"| case | soft | {heads} | levels chosen per run on validation: test − soft |",
        "|---|---:|" + "---:|" * len(result["levels"]) + "---|",
    ]
    for case, cell in result["cases"].items():
        val, test = cell["val"], cell["test"]
        read = [n for n in result["levels"] if str(n) in val]  # a strict student: one level only
        chosen = [level_choice({n: val[str(n)][i] for n in read}, val["soft"][i]) for i in range(len(val["soft"]))]
        gap = 100 * statistics.mean(test[str(n)][i] - test["soft"][i] for i, n in enumerate(chosen))
        cells = " | ".join(_pm(test[str(n)]) if str(n) in test else "-" for n in result["levels"])
        lines.append(f"| {case} | {_pm(test['soft'])} | {cells} | {' / '.join(map(str, chosen))}: {gap:+.2f} |")
    return "\n".join(lines) + "\n"


PACKED_STUDENTS = {  # the shipped presets and recipes' students, on the inputs they are made for
    "vit_tm_tiny (patch 8)": ("vit_tm_tiny", {"patch_size": 8, "lf": 4}, (1, 32, 32)),
    "vit_tm_tiny (patch 4)": ("vit_tm_tiny", {"patch_size": 4, "lf": 4}, (1, 32, 32)),
    "vit_tm_small (patch 4)": ("vit_tm_small", {"patch_size": 4, "lf": 4}, (1, 32, 32)),
    "swin_tm_tiny (patch 2)": ("swin_tm_tiny", {"lf": 4}, (1, 32, 32)),
    "swin_tm_tiny (patch 4)": ("swin_tm_tiny", {"patch_size": 4, "lf": 4}, (1, 32, 32)),
    "tm_flat (digits 8x8, 3 levels)": ("tm_flat", {"clauses": 256, "lf": 4}, (3, 8, 8)),
}


def trained_looking(name: str, options: dict, shape: tuple[int, ...]) -> torch.nn.Module:
    """A student whose include logits and votes are spread as training spreads them."""
    from kdforge.families.tm.clause import clause_layers

    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=10, **options).eval()
    with torch.no_grad():
        for layer in clause_layers(model):
            layer.votes.normal_(0, 2)
    return model


class ClauseTime:
    """Seconds a model spends inside its clause layers (a hook before and after each) while it runs."""

    def __init__(self, layers: list[torch.nn.Module]):
        self.seconds = self.started = 0.0
        for layer in layers:
            layer.register_forward_pre_hook(self.start)
            layer.register_forward_hook(self.stop)

    def start(self, *_: object) -> None:
        self.started = time.perf_counter()

    def stop(self, *_: object) -> None:
        self.seconds += time.perf_counter() - self.started


def blocks(args: argparse.Namespace) -> dict:
    rows = {}
    for label, (name, options, shape) in PACKED_STUDENTS.items():
        if args.levels > 1 and name == "tm_flat":  # its inputs are booleans already: one level only
            continue
        model = trained_looking(name, {**options, "levels": args.levels}, shape)
        row: dict = {"params": sum(p.numel() for p in model.parameters())}
        for batch in (1, 256):
            row[f"batch {batch}"] = packed_against_float(model, digits_like(shape, batch), batch, args.rounds)
            row["identical"] = row.get("identical", True) and row[f"batch {batch}"].pop("identical")
            row["clause_layers"] = row[f"batch {batch}"].pop("clause_layers")
            b = row[f"batch {batch}"]
            print(
                f"{label:32s} b{batch:<4d} blocks packed/float {b['clause_blocks']['packed_over_float_hard']:.1f}x  "
                f"student packed/float-hard {b['student']['packed_over_float_hard']:.2f}x"
                f"  identical {row['identical']}",
                flush=True,
            )
        rows[label] = row
    return {
        "threads": torch.get_num_threads(),
        **machine(),
        "rounds": args.rounds,
        "levels": args.levels,
        "students": rows,
    }


@torch.inference_mode()
def packed_against_float(model: torch.nn.Module, x: torch.Tensor, batch: int, rounds: int) -> dict:
    """The clause blocks on their captured inputs and inside the student's forward passes, and the whole student,
    packed against float (hard and soft)."""
    from kdforge.families.tm.clause import clause_layers
    from kdforge.families.tm.packed import PackedClauseLayer, packed_model

    packed = packed_model(model)
    hard, soft = set_hard(copy.deepcopy(model), True), set_hard(copy.deepcopy(model), False)
    floats = clause_layers(hard)
    packs = [m for m in packed.modules() if isinstance(m, PackedClauseLayer)]
    captured, expected = clause_inputs(hard, x)
    pairs = list(zip(captured, floats, packs))

    def run_blocks(which: int) -> None:
        # each output is dropped before the next block runs, as in the model: kept all alive, their memory is given
        # back to the system and faulted in again on every call, which costs the light packed blocks far more
        for u, *layers in pairs:
            layers[which](u)

    blocks = paired({"float_hard": lambda: run_blocks(0), "packed": lambda: run_blocks(1)}, batch, rounds)
    # the same blocks timed where they run, inside each student's forward passes, between the ops around them; the
    # soft student is timed too, so that all three pay the hooks
    timers = {"float_hard": ClauseTime(floats), "packed": ClauseTime(packs)}
    timers["float_soft"] = ClauseTime(clause_layers(soft))
    student = paired(
        {"float_hard": lambda: hard(x), "packed": lambda: packed(x), "float_soft": lambda: soft(x)},
        batch,
        rounds,
        timers=timers,
    )
    in_model = {
        "float_hard_ms": student.pop("float_hard_clause_ms"),
        "packed_ms": student.pop("packed_clause_ms"),
        "packed_over_float_hard": student.pop("packed_clause_over_float_hard"),
    }
    for key in [key for key in student if "_clause_" in key]:  # the soft student's: not reported
        del student[key]
    tokens = captured[0].numel() // captured[0].shape[-1] // batch
    return {
        "identical": bool(torch.equal(packed(x), expected)),
        "clause_layers": len(floats),
        "tokens_per_sample": tokens,
        "clause_blocks": blocks,
        "clause_blocks_in_model": in_model,
        "student": student,
    }


def clause_inputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The inputs each clause layer of ``model`` receives while it runs on ``x`` (in order), and its outputs."""
    from kdforge.families.tm.clause import clause_layers

    captured: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda m, a: captured.append(a[0])) for layer in clause_layers(model)]
    try:
        return captured, model(x)
    finally:
        for hook in hooks:
            hook.remove()


def digits_like(shape: tuple[int, ...], batch: int) -> torch.Tensor:
    """``batch`` standardised digits at ``shape`` (32x32 resized; 3x8x8: thermometer bits as ±1)."""
    from kdforge.data import build_dataset

    if shape == (1, 32, 32):
        data = build_dataset("digits", seed=0, val_fraction=0.15, test_fraction=0.2, image_size=32)
        x = data.test.first(512)[0]
    else:
        data = build_dataset("digits", seed=0, val_fraction=0.15, test_fraction=0.2)
        x8 = data.test.first(512)[0]
        x = torch.cat([(x8 > t).float() * 2 - 1 for t in (-0.5, 0.0, 0.5)], dim=1)
    return x[torch.arange(batch) % len(x)].contiguous()


def blocks_table(result: dict) -> str:
    lines = [
        "# Packed clause blocks: shipped TM students, clause layers in integers against hard mode in PyTorch"
        + (f", literals read at {result['levels']} levels" if result.get("levels", 1) > 1 else ""),
        "",
        f"CPU: {result['cpu']} ({result['capability']}; PackedTM multiplies with {result['products']}), "
        f"{result['threads']} threads, {result['rounds']} paired rounds (median). Blocks: every clause layer of "
        "the student on its own captured inputs, one after the other. In model: the time spent inside the clause "
        "layers during the student's own forward passes. Student: the whole forward pass, samples per second in "
        "float soft mode / float hard mode / packed. Ratios: packed over float hard mode (higher is faster).",
        "",
        "| student | clause layers | tokens | identical logits | blocks b1 | blocks b256 | in model b1 | in model b256 "
        "| student b1 | student b256 |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in result["students"].items():
        b1, b256 = row["batch 1"], row["batch 256"]

        def whole(b: dict) -> str:
            s = b["student"]
            return (
                f"{s['float_soft_samples_per_s']:,.0f} / {s['float_hard_samples_per_s']:,.0f} / "
                f"{s['packed_samples_per_s']:,.0f} ({s['packed_over_float_hard']:.2f}x)"
            )

        lines.append(
            f"| {label} | {row['clause_layers']} | {b1['tokens_per_sample']} | {row['identical']} | "
            f"{b1['clause_blocks']['packed_over_float_hard']:.1f}x | "
            f"{b256['clause_blocks']['packed_over_float_hard']:.1f}x | "
            f"{b1['clause_blocks_in_model']['packed_over_float_hard']:.1f}x | "
            f"{b256['clause_blocks_in_model']['packed_over_float_hard']:.1f}x | "
            f"{whole(b1)} | {whole(b256)} |"
        )
    return "\n".join(lines) + "\n"


def paths(args: argparse.Namespace) -> dict:
    """Every way PackedTM can multiply on this CPU, per clause-layer shape of the shipped students, against the layer
    in hard mode: what its thresholds (``INT8_VALUES``, ``INT_LINEAR_VALUES``, ``INT_LINEAR_VALUES_VNNI``) are chosen
    from."""
    from kdforge.families.tm.clause import clause_layers
    from kdforge.families.tm.rules import layer_rules

    rows = []
    for label, (name, options, shape) in PACKED_STUDENTS.items():
        hard = set_hard(trained_looking(name, options, shape), True)
        for batch in (1, 256):
            with torch.inference_mode():
                captured, _ = clause_inputs(hard, digits_like(shape, batch))
            seen = set()
            for u, layer in zip(captured, clause_layers(hard)):
                x = u.reshape(-1, u.shape[-1])
                if x.shape in seen:  # layers of one shape run alike: the first stands for them
                    continue
                seen.add(x.shape)
                packed = PackedTM(layer_rules(layer))
                row = {"student": label, "batch": batch, "rows": len(x), "features": x.shape[1]}
                row |= {"clauses": len(packed.sizes), "chosen": packed.way(x.numel())}
                row |= path_speeds(layer, packed, u, x, args.rounds)
                rows.append(row)
                print(f"{label:32s} b{batch:<4d} {len(x):6d} x {x.shape[1]:3d}  {row}", flush=True)
    return {"threads": torch.get_num_threads(), **machine(), "rounds": args.rounds, "layers": rows}


def forced(packed: PackedTM, path: str) -> PackedTM:
    """A copy of ``packed`` that multiplies only one way: "float32", "int8" (PyTorch's int8 products) or "oneDNN"."""
    copy_ = copy.copy(packed)
    copy_.int8 = path == "int8"
    copy_.INT8_VALUES = copy_.INT_LINEAR_VALUES = copy_.INT_LINEAR_VALUES_VNNI = 0
    copy_.int_linear = packed.int_linear if path == "oneDNN" else None
    return copy_


@torch.inference_mode()
def path_speeds(layer: torch.nn.Module, packed: PackedTM, u: torch.Tensor, x: torch.Tensor, rounds: int) -> dict:
    """µs per call of the hard-mode layer, and each path's speed over it, paired; every path's outputs checked equal."""
    expected = layer(u).reshape(len(x), -1)
    variants = {"hard": lambda: layer(u)}
    available = ["float32"] + ["int8"] * packed.int8 + ["oneDNN"] * (packed.int_linear is not None)
    for path in available:
        one_way = forced(packed, path)
        if not torch.equal(one_way.evaluate(x), expected):
            raise AssertionError(f"PackedTM's {path} path differs from hard mode")
        variants[path] = lambda one_way=one_way: one_way.evaluate(x)
    speeds = paired(variants, 1, rounds, seconds=0.1)
    return {"hard_us": 1e6 / speeds["hard_samples_per_s"]} | {path: speeds[f"{path}_over_hard"] for path in available}


def paths_table(result: dict) -> str:
    lines = [
        "# PackedTM's ways of multiplying, per clause layer of the shipped TM students",
        "",
        f"CPU: {result['cpu']} ({result['capability']}; by default PackedTM multiplies with {result['products']}), "
        f"{result['threads']} threads, {result['rounds']} paired rounds (median). One row per clause-layer shape "
        "(rows = tokens × batch); each way's speed over the same layer in hard mode in PyTorch (higher is faster), "
        "outputs equal; — where this CPU lacks the way; chosen: the way PackedTM takes by default.",
        "",
        "| student | batch | rows × features → clauses | hard mode µs | float32 | int8 products | oneDNN int8 layers "
        "| chosen |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in result["layers"]:
        cells = " | ".join(f"{r[path]:.1f}x" if path in r else "—" for path in ("float32", "int8", "oneDNN"))
        lines.append(
            f"| {r['student']} | {r['batch']} | {r['rows']:,} × {r['features']} → {r['clauses']} | "
            f"{r['hard_us']:,.0f} | {cells} | {r['chosen']} |"
        )
    return "\n".join(lines) + "\n"


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
            print(f"{name} seed {seed}: test {_pm(cell['test'][-1:])}, hard {_pm(cell['test_hard'][-1:])}, "
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
            f"{_pm(cell['test'])} | {_pm(cell['test_hard'])} | {gap:+.2f} | {seconds:.2f} | "
            f"{seconds / vit_seconds:.2f} |"
        )
    return "\n".join(lines) + "\n"


def features(args: argparse.Namespace) -> dict:
    from kdforge.config import BooleanizeConfig
    from kdforge.data import build_dataset
    from kdforge.data.booleanize import booleanize_bundle

    log_dir = tempfile.mkdtemp(prefix="kdforge-tm-features-")
    rows: dict[str, dict] = {}
    for preset in FEATURES:
        cell = rows.setdefault(preset, {"test": [], "test_hard": []})
        for seed in args.seeds:
            result = kdforge.run(
                kdforge.Recipe.from_dict(
                    {
                        "name": f"tm-features-{preset}",
                        "seed": seed,
                        "data": {
                            "name": "digits",
                            "batch_size": 64,
                            "booleanize": {"method": "thermometer", "levels": 3, "features": preset},
                        },
                        "teacher": {
                            "source": "train",
                            "model": {"name": "mlp", "hidden": [16]},
                            "train": {"epochs": 1},
                        },  # unused: the student trains alone
                        "student": {"model": {"name": "tm_flat", "clauses": 256, "lf": 8}},
                        "losses": [{"name": "ce"}],
                        "optim": {
                            "name": "adamw",
                            "lr": 3e-3,
                            "weight_decay": 0.01,
                            "warmup_epochs": 1,
                            "schedule": "cosine",
                        },
                        "train": {"epochs": args.epochs, "baseline": False},
                        "log": {"dir": log_dir, "progress": False},
                    }
                ),
                console=Console(file=io.StringIO()),
            )
            entry = result.results["student"]
            cell["test"].append(entry["test"]["accuracy"])
            cell["test_hard"].append(entry["test_hard"]["accuracy"])
            cell["literals"] = 2 * int(np.prod(kdforge.load_student(result.run_dir).threshold.shape))
        print(
            f"{preset:14s} {_pm(cell['test'])}  hard {_pm(cell['test_hard'])}  literals {cell['literals']}", flush=True
        )
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
            f"| {preset} | {cell['literals']:,} | {_pm(cell['test'])} | {_pm(cell['test_hard'])} | "
            f"{1000 * t['computed_s']:.0f} ms | {1000 * t['cached_s']:.0f} ms |"
        )
    return "\n".join(lines) + "\n"


def _pm(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):6.2f} ± {100 * statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def accuracy_table(result: dict) -> str:
    settings = list(SETTINGS)
    lines = [
        f"# TM students on digits 32x32: {result['epochs']} epochs, seeds {result['seeds']}",
        "",
        "Test accuracy (%), mean ± std over seeds; best epoch chosen on validation. Hard mode: the exported boolean "
        "rules.",
        "Teachers: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in result["teacher_test_accuracy"].items()) + ".",
        "",
        "| student | params | latency ms b1 / b256 | " + " | ".join(settings) + " |",
        "|---|---:|---:|" + "---:|" * len(settings),
    ]
    for student, cells in result["accuracy"].items():
        size = result["size_and_speed"][student]
        values = [
            f"{_pm(cells[s]['test'])} (hard {100 * statistics.mean(cells[s]['test_hard']):.2f})" if s in cells else "-"
            for s in settings
        ]
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
    rows = [f"| {key} | {_pm(values)} | {' / '.join(f'{100 * v:.2f}' for v in values)} |"
            for key, values in result["test_accuracy"].items()]  # fmt: skip
    return "\n".join([
        f"# ViT-TM tiny on digits 32 x 32, alone, {result['epochs']} epochs: patch_norm on and off",
        "", "Test accuracy (%), best epoch on validation; seeds " + ", ".join(map(str, result["seeds"])) + ".", "",
        "| patch_norm | test accuracy | per seed |", "|---|---:|---|", *rows, "",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "what",
        choices=[
            "accuracy",
            "accuracy_finish",
            "packed",
            "blocks",
            "paths",
            "ablation",
            "hard_finish",
            "hard_literals",
            "levels",
            "strict_finish",
            "patch_norm",
            "transfer",
            "features",
        ],
    )
    parser.add_argument(
        "--epochs", type=int, help="default: 15 (ablation, hard_finish, patch_norm), 20 (accuracy_finish), else 30"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="ablation, hard_finish, hard_literals, accuracy_finish, strict_finish, levels: runs at once, one thread "
        "each",
    )
    parser.add_argument("--clauses", type=int, default=256)
    parser.add_argument("--levels", type=int, default=1, help="blocks: the clause layers' levels")
    parser.add_argument(
        "--variants", nargs="+", choices=list(ABLATION_VARIANTS), help="ablation: these TM variants (MLP, none always)"
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=list(ABLATION_TASKS),
        help="ablation, hard_literals: these tasks (the others' results are kept)",
    )
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 64, 256, 1024])
    args = parser.parse_args()
    if args.epochs is None:  # the budgets the committed results were taken at
        args.epochs = {"ablation": 15, "hard_finish": 15, "patch_norm": 15, "accuracy_finish": 20}.get(args.what, 30)
    if args.what in ("hard_finish", "hard_literals", "strict_finish") and args.epochs not in HARD_FINISH_CASES:
        parser.error(f"{args.what} has cases for --epochs {' or '.join(map(str, HARD_FINISH_CASES))}")
    RESULTS.mkdir(exist_ok=True)
    tabled = {
        "accuracy": (accuracy, accuracy_table),
        "features": (features, features_table),
        "blocks": (blocks, blocks_table),
        "paths": (paths, paths_table),
        "ablation": (ablation, ablation_table),
        "hard_finish": (hard_finish, hard_finish_table),
        "hard_literals": (hard_literals, hard_literals_table),
        "levels": (levels, levels_table),
        "strict_finish": (strict_finish, strict_finish_table),
        "accuracy_finish": (accuracy_finish, accuracy_finish_table),
        "patch_norm": (patch_norm, patch_norm_table),
        "transfer": (transfer, transfer_table),
    }
    if args.what in tabled:
        measure, table = tabled[args.what]
        result = measure(args)
        name = hard_finish_name(args.epochs) if args.what == "hard_finish" else f"tm_{args.what}"
        name += f"_{args.epochs}ep" if args.what == "hard_literals" else ""
        name += f"_{cpu_class()}" if args.what in ("blocks", "paths") else ""
        name += f"_levels{args.levels}" if args.what == "blocks" and args.levels > 1 else ""
        save(ablation_name(args.epochs) if args.what == "ablation" else name, result, table(result))
        return
    result = packed(args)
    path = RESULTS / f"tm_packed_{cpu_class()}.json"
    write_text(path, json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
