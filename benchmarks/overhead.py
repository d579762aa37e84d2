"""kdforge's training loop against the fastest hand-written PyTorch KD loop, epoch by epoch.

Two setups: an MLP-64 student of a CNN teacher on 8×8 digits, and a CNN-8 student of a CNN teacher
on 32×32 digits. Both loops train the same student (same initial weights) from the same frozen
teacher, with CE + Hinton KD, AdamW and a cosine schedule over the same number of batches, and
validate after every epoch. kdforge runs as a user runs it: its Session's loaders (and memory
layout), the Trainer with a run's callbacks (metrics log, console lines) and its default
checkpointing; the hand loop slices tensors held in memory in the fastest layout (channels-last for
convolutions), steps a fused AdamW with kdforge's update (no weight decay on biases and norms: one
kernel per parameter group, as kdforge's) and does nothing else.

The two are interleaved epoch by epoch in one process: a callback at the end of each kdforge epoch
runs one hand-written epoch, so each pair ran back to back and a shared machine's drift cancels
within it. Reported per setup and thread count: the median and mean ± std of the paired epoch
ratios, and the whole-fit ratio (Trainer.fit's wall time, start-up and end included, over the same
number of hand epochs). Target: <= 1.05.

    uv run python benchmarks/overhead.py [--rounds 12] [--epochs 8] [--threads 1 2]
    uv run python benchmarks/overhead.py --profile     # cProfile of kdforge's epochs (printed)

Writes benchmarks/results/overhead.json and overhead.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from common import HandLoop, results_path, write_json, write_text
from kdforge.callbacks import Callback
from kdforge.config import Recipe
from kdforge.distiller import Distiller
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.session import Session
from kdforge.trainer import Trainer

LR, T = 3e-3, 4.0
SETUPS = {  # data section, teacher, student
    "mlp": (
        {"name": "digits", "batch_size": 64},
        {"name": "cnn", "width": 32, "depth": 3},
        {"name": "mlp", "hidden": [64]},
    ),
    "cnn": (
        {"name": "digits", "batch_size": 64, "image_size": 32},
        {"name": "cnn", "width": 32, "depth": 3},
        {"name": "cnn", "width": 8, "depth": 3},
    ),
}


def recipe(setup: str, epochs: int, log_dir: str) -> Recipe:
    data, teacher, student = SETUPS[setup]
    return Recipe.from_dict(
        {
            "name": f"overhead-{setup}",
            "data": data,
            "teacher": {"source": "train", "model": teacher},
            "student": {"model": student},
            "losses": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "temperature": T}],
            "optim": {"name": "adamw", "lr": LR, "weight_decay": 0.01},
            "train": {"epochs": epochs},
            "log": {"dir": log_dir},
        }
    )


class Interleave(Callback):
    """After each kdforge epoch, one hand-written epoch; the time of each, paired."""

    def __init__(self, hand: HandLoop):
        self.hand, self.pairs, self.hand_total = hand, [], 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.mark = time.perf_counter()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        kdforge = time.perf_counter() - self.mark
        hand = self.hand.run_epoch()
        self.pairs.append((kdforge, hand))
        self.hand_total += hand
        self.mark = time.perf_counter()


def one_fit(
    setup: str, epochs: int, profile: cProfile.Profile | None = None
) -> tuple[list[tuple[float, float]], float]:
    """One Trainer.fit of ``epochs`` with a hand epoch after each: (the paired epoch times, the whole-fit ratio)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = recipe(setup, epochs, tmp)
        session = Session(r, Path(tmp) / "run", Console(file=io.StringIO()))  # its lines are printed, as in a run
        data, teacher_spec, student_spec = SETUPS[setup]
        torch.manual_seed(0)
        teacher_net = build_model(teacher_spec["name"], input_shape=session.data.input_shape, num_classes=10,
                                  **{k: v for k, v in teacher_spec.items() if k != "name"})  # fmt: skip
        hand_teacher = build_model(teacher_spec["name"], input_shape=session.data.input_shape, num_classes=10,
                                   **{k: v for k, v in teacher_spec.items() if k != "name"})  # fmt: skip
        hand_teacher.load_state_dict(teacher_net.state_dict())
        torch.manual_seed(1)
        student = session.build_student().to(memory_format=session.memory_format)
        hand_student = session.build_student()
        hand_student.load_state_dict(student.state_dict())
        hand_teacher = hand_teacher.eval().requires_grad_(False).to(memory_format=session.memory_format)
        hand = HandLoop(session, hand_student, lambda x, _: hand_teacher(x), epochs, temperature=T)
        pairing = Interleave(hand)
        teacher = session.wrap_teacher(teacher_net)
        distiller = Distiller(student, teacher, build_losses([c.model_dump() for c in r.losses]), session.example)
        trainer = Trainer(
            distiller,
            r.optim,
            r.train,
            steps_per_epoch=len(session.train),
            checkpoint_dir=session.run_dir,
            callbacks=[*session.callbacks(), pairing],
        )
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        trainer.fit(session.train, session.val)
        wall = time.perf_counter() - start
        if profile is not None:
            profile.disable()
        session.__exit__()
    return pairing.pairs, (wall - pairing.hand_total) / pairing.hand_total


def measure(setup: str, threads: int, rounds: int, epochs: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    one_fit(setup, 1)  # warm-up: first calls, allocator, kernels
    pairs: list[tuple[float, float]] = []
    fits = []
    for r in range(rounds):
        found, fit_ratio = one_fit(setup, epochs)
        pairs += found
        fits.append(fit_ratio)
        print(f"  {setup}, {threads} thread(s), round {r + 1}: whole fit {fit_ratio:.3f}x", flush=True)
    ratios = [k / h for k, h in pairs]
    return {
        "setup": setup,
        "threads": threads,
        "pairs": len(pairs),
        "kdforge_s_per_epoch": statistics.median(k for k, _ in pairs),
        "hand_s_per_epoch": statistics.median(h for _, h in pairs),
        "epoch_ratio_median": statistics.median(ratios),
        "epoch_ratio_mean": statistics.mean(ratios),
        "epoch_ratio_std": statistics.stdev(ratios),
        "fit_ratio_median": statistics.median(fits),
        "fit_ratios": fits,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Training-loop overhead: kdforge vs the fastest hand-written loop",
        "",
        f"`uv run python benchmarks/overhead.py` — {results['rounds']} fits of {results['epochs']} epochs per row, "
        "each kdforge epoch paired with a hand-written epoch run right after it; torch "
        f"{results['torch']}, {results['machine']}. Target: ≤ 1.05.",
        "",
        "| setup | threads | kdforge s/epoch | hand s/epoch | paired epoch ratio, median | mean ± std | whole fit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"mlp": "MLP-64 from CNN, digits 8×8", "cnn": "CNN-8 from CNN, digits 32×32"}
    for row in results["rows"]:
        lines.append(
            f"| {names[row['setup']]} | {row['threads']} | {row['kdforge_s_per_epoch']:.4f} | "
            f"{row['hand_s_per_epoch']:.4f} | {row['epoch_ratio_median']:.3f} | "
            f"{row['epoch_ratio_mean']:.3f} ± {row['epoch_ratio_std']:.3f} | {row['fit_ratio_median']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def profile(setup: str, epochs: int) -> None:
    """Where kdforge's epochs spend their time, by function (the hand epochs in between excluded)."""
    torch.set_num_threads(1)
    one_fit(setup, 1)
    prof = cProfile.Profile()
    one_fit(setup, epochs, prof)
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    print(text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--profile", action="store_true", help="profile kdforge's epochs instead")
    args = parser.parse_args()
    if args.profile:
        for setup in args.setups:
            profile(setup, args.epochs)
        return
    rows = [measure(s, t, args.rounds, args.epochs) for s in args.setups for t in args.threads]
    results = {
        "benchmark": "overhead",
        "rounds": args.rounds,
        "epochs": args.epochs,
        "target_ratio": 1.05,
        "rows": rows,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    text = markdown(results)
    print(text)
    write_json(results_path("overhead", ".json"), results)
    write_text(results_path("overhead", ".md"), text)


if __name__ == "__main__":
    main()
