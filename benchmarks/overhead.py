"""kdforge's training-loop overhead against a minimal hand-written PyTorch KD loop.

Both loops train the same student (same initial weights) from the same frozen teacher
on the same digits batches, with CE + Hinton KD, AdamW and a cosine LR schedule, and
validate once per epoch. kdforge's epoch also writes its checkpoint (last.pt, with the
best weights) and its metrics log, as a real run does. The two alternate in one process
(who goes first alternates too), several rounds; the reported ratio is the median of the
per-round ratios, so slow drifts of a shared machine cancel. Target: ratio <= 1.10.

    uv run python benchmarks/overhead.py [--rounds 10] [--epochs 5]

Writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdforge.callbacks import JsonlLogger
from kdforge.config import OptimConfig, TrainConfig
from kdforge.data import build_dataset, make_loader
from kdforge.distiller import Distiller
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.teachers import Teacher
from kdforge.trainer import Trainer

BATCH, LR, T = 64, 3e-3, 4.0


def models(seed: int = 0):
    torch.manual_seed(seed)
    teacher = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=32, depth=3).eval().requires_grad_(False)
    student = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[64])
    return teacher, student


def kdforge_epochs(data, epochs: int, workdir: Path) -> float:
    teacher, student = models()
    distiller = Distiller(
        student,
        Teacher(teacher),
        build_losses([{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "temperature": T}]),
        data.train.x[:2],
    )
    train, val = make_loader(data.train, BATCH, shuffle=True), make_loader(data.val, 512)
    trainer = Trainer(
        distiller,
        OptimConfig(lr=LR, weight_decay=0.01),
        TrainConfig(epochs=epochs),
        steps_per_epoch=len(train),
        checkpoint_dir=workdir,
        callbacks=[JsonlLogger(workdir / "metrics.jsonl")],
    )
    start = time.perf_counter()
    trainer.fit(train, val)
    return (time.perf_counter() - start) / epochs


def handwritten_epochs(data, epochs: int) -> float:
    """What a careful engineer writes by hand: slicing batches, no framework."""
    teacher, student = models()
    x, y = data.train.x, data.train.y
    steps = math.ceil(len(y) / BATCH)
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (steps * epochs))))
    start = time.perf_counter()
    for epoch in range(epochs):
        student.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(y), BATCH):
            idx = order[i : i + BATCH]
            xb, yb = x[idx], y[idx]
            with torch.no_grad():
                t_logits = teacher(xb)
            s_logits = student(xb)
            kd = (
                F.kl_div(
                    F.log_softmax(s_logits / T, -1),
                    F.log_softmax(t_logits / T, -1),
                    reduction="batchmean",
                    log_target=True,
                )
                * T
                * T
            )
            loss = 0.1 * F.cross_entropy(s_logits, yb) + 0.9 * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        student.eval()
        with torch.no_grad():
            (student(data.val.x).argmax(-1) == data.val.y).float().mean().item()
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    data = build_dataset("digits")
    kdforge_times, hand_times = [], []
    kdforge_epochs(data, 1, Path(tempfile.mkdtemp()))  # warm-up both paths once
    handwritten_epochs(data, 1)
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            run_kdforge = lambda: kdforge_times.append(kdforge_epochs(data, args.epochs, Path(tmp)))  # noqa: E731
            run_hand = lambda: hand_times.append(handwritten_epochs(data, args.epochs))  # noqa: E731
            for run in (run_kdforge, run_hand) if r % 2 == 0 else (run_hand, run_kdforge):  # alternate who goes first
                run()
        print(f"round {r + 1}: kdforge {kdforge_times[-1]:.4f} s/epoch, hand-written {hand_times[-1]:.4f} s/epoch")
    k, h = statistics.median(kdforge_times), statistics.median(hand_times)
    # paired ratios: each round's two loops ran back to back, so machine drift cancels within a pair
    ratio = statistics.median(a / b for a, b in zip(kdforge_times, hand_times))
    result = {
        "benchmark": "overhead",
        "kdforge_s_per_epoch": k,
        "handwritten_s_per_epoch": h,
        "ratio": ratio,
        "target_ratio": 1.10,
        "rounds": args.rounds,
        "epochs_per_round": args.epochs,
        "setup": "digits 1167 train / 270 val, batch 64, CNN(width 32) teacher -> MLP(64) student, CE+KD, "
        "AdamW+cosine, CPU",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    print(
        f"median: kdforge {k:.4f} s/epoch, hand-written {h:.4f} s/epoch; median paired ratio {ratio:.3f} (target <= "
        "1.10)"
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
