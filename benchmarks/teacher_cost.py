"""What the teacher costs: seconds per epoch of the student alone, online KD, and KD from a
teacher cache, in one process, on the same student and data.

The teacher is a timm ViT-Small (12 blocks, 22M parameters, random weights: only its cost
matters here) that sees digits resized to 64x64 RGB; the student is a CNN (width 16) or
the demo's MLP-64 (``--student``). The three trainers are built once and run epoch by epoch in
turn (who goes first rotates each epoch), so each epoch of a KD loop has an epoch of the student
alone beside it, run under the same load; the ratios are taken per epoch (paired) and reported as
median and mean ± std. Target: cached KD <= 1.10x the student alone.

Beside them, in the same rotation, the same student alone and with KD from the same cached outputs in
the fastest loop written by hand (benchmarks/common.py's HandLoop): its cached-KD / alone ratio is
what the KD loss's own arithmetic costs, the floor of kdforge's. With a student whose whole step
takes well under 1 ms (the MLP), that arithmetic (some twenty tensor operations on a 64 x 10 batch)
is a large share of the step. A third hand loop puts the cheapest term that can read the cached outputs
in KD's place (the sum of the student's logits times the teacher's: one product, one sum, and their
backward): what any extra term costs, whatever its formula. With ``--compiled``, two more hand loops:
the student alone and cached KD with the student's forward and the loss compiled together
(``torch.compile``, which fuses KD's operations into the student's).

    uv run python benchmarks/teacher_cost.py [--student cnn|mlp] [--epochs 61] [--online-epochs 2] [--compiled]

Writes benchmarks/results/teacher_cost_<student>.json.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from common import HandLoop, results_path, write_json
from kdforge import Recipe
from kdforge.distiller import Distiller
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.session import Session
from kdforge.teachers.cache import CachedTeacher, write_cache
from kdforge.trainer import Trainer

TEACHER = {
    "source": "timm",
    "model": {"name": "vit_small_patch16_224", "img_size": 64},
    "adapt": {"size": 64, "channels": 3},
}


STUDENTS = {"mlp": {"name": "mlp", "hidden": [64]}, "cnn": {"name": "cnn", "width": 16, "depth": 3}}


def student(session: Session, spec: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = dict(spec)
    return build_model(spec.pop("name"), input_shape=session.data.input_shape, num_classes=10, **spec)


def trainer(session: Session, student_spec: dict, teacher, losses: list[dict], epochs: int, workdir: Path) -> Trainer:
    distiller = Distiller(
        student(session, student_spec).to(memory_format=session.memory_format),
        teacher,
        build_losses(losses),
        session.example,
    )
    cfg = session.recipe.train.model_copy(update={"epochs": epochs})
    return Trainer(distiller, session.recipe.optim, cfg, steps_per_epoch=len(session.train), checkpoint_dir=workdir)


def one_epoch(loop: Trainer | HandLoop, session: Session) -> float:
    """One epoch of ``loop`` as Trainer.fit runs it (train, then validate, log and checkpoint), timed."""
    if isinstance(loop, HandLoop):
        return loop.run_epoch()
    start = time.perf_counter()
    loop._train_epoch(session.train)
    loop._end_epoch(session.val)
    return time.perf_counter() - start


def paired(times: dict[str, list[float]], name: str, alone: str = "student alone") -> dict[str, float]:
    """``name``'s epochs over ``alone``'s, epoch by epoch (each pair ran in the same rotation)."""
    ratios = [a / b for a, b in zip(times[name], times[alone])]
    return {"median": statistics.median(ratios), "mean": statistics.mean(ratios), "std": statistics.stdev(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=61, help="epochs of each loop (the first one untimed)")
    parser.add_argument("--online-epochs", type=int, default=2, help="timed epochs of online KD (~50x slower)")
    parser.add_argument("--student", choices=list(STUDENTS), default="cnn")
    parser.add_argument("--compiled", action="store_true", help="also the hand loops compiled (torch.compile)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kdforge-teacher-cost-"))
    recipe = Recipe.from_dict(
        {
            "name": "teacher-cost",
            "data": {"name": "digits", "batch_size": 64},
            "teacher": TEACHER,
            "student": {"model": {"name": "mlp", "hidden": [64]}},
            "losses": [{"name": "kd"}],
            "train": {"epochs": args.epochs, "baseline": False, "checkpoint_interval": 60.0},
            "log": {"dir": str(tmp), "progress": False},
        }
    )
    session = Session(recipe, tmp, Console(file=io.StringIO()))
    teacher, info = session.live_teacher()
    write_cache(session, teacher, {"params": sum(p.numel() for p in teacher.parameters())}, tmp / "cache")
    cached = CachedTeacher(tmp / "cache", session)
    session.train.indexed = True  # the cache is looked up by sample index
    kd = [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "temperature": 4.0}]
    specs = {"student alone": (None, [{"name": "ce"}]), "online KD": (teacher, kd), "cached KD": (cached, kd)}
    loops: dict[str, Trainer | HandLoop] = {
        name: trainer(session, STUDENTS[args.student], source, losses, args.epochs, tmp / name)
        for name, (source, losses) in specs.items()
    }
    table = cached.arrays["logits"]
    assert isinstance(table, torch.Tensor)  # a small dense cache is held in memory: view 0 is what epoch 0 reads

    def rows(_: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return table[0][idx]

    hand = [("hand alone", None, "kd", False), ("hand cached KD", rows, "kd", False)]
    hand += [("hand cached, one product", rows, "product", False)]
    if args.compiled:
        hand += [("hand alone, compiled", None, "kd", True), ("hand cached KD, compiled", rows, "kd", True)]
    for name, teacher_rows, term, compiled in hand:
        model = student(session, STUDENTS[args.student])
        loops[name] = HandLoop(session, model, teacher_rows, args.epochs, term=term, compiled=compiled)
    for loop in loops.values():  # a first epoch each, not timed: first calls, allocator, kernels
        one_epoch(loop, session)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for epoch in range(1, args.epochs):
        order = list(loops)[epoch % len(loops) :] + list(loops)[: epoch % len(loops)]
        online = "online KD" in order and epoch <= args.online_epochs  # the slow one: a few of its epochs suffice
        for name in order:
            if name != "online KD" or online:
                times[name].append(one_epoch(loops[name], session))
        print(f"epoch {epoch}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items() if t), flush=True)
    online_alone = [a / b for a, b in zip(times["online KD"], times["student alone"])]
    result = {
        "benchmark": "teacher_cost",
        "seconds_per_epoch": {name: statistics.median(t) for name, t in times.items()},
        "online_over_alone": statistics.median(online_alone),
        "cached_over_alone": paired(times, "cached KD"),
        "hand_cached_over_hand_alone": paired(times, "hand cached KD", "hand alone"),
        "hand_product_over_hand_alone": paired(times, "hand cached, one product", "hand alone"),
        **(
            {
                "compiled_cached_over_compiled_alone": paired(
                    times, "hand cached KD, compiled", "hand alone, compiled"
                ),
                "compiled_cached_over_hand_alone": paired(times, "hand cached KD, compiled", "hand alone"),
                "compiled_alone_over_hand_alone": paired(times, "hand alone, compiled", "hand alone"),
            }
            if args.compiled
            else {}
        ),
        "alone_over_hand_alone": paired(times, "student alone", "hand alone"),
        "target_cached_over_alone": 1.10,
        "teacher": TEACHER,
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "student": STUDENTS[args.student],
        "data": "digits 1167 train, batch 64",
        "paired_epochs": len(times["cached KD"]),
        "online_paired_epochs": len(online_alone),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    print(
        f"online KD / alone = {result['online_over_alone']:.2f}x; cached KD / alone = "
        f"{result['cached_over_alone']['median']:.3f}x median, {result['cached_over_alone']['mean']:.3f} ± "
        f"{result['cached_over_alone']['std']:.3f} (paired epochs; target <= 1.10); by hand: "
        f"{result['hand_cached_over_hand_alone']['median']:.3f}x median, "
        f"{result['hand_cached_over_hand_alone']['mean']:.3f} ± {result['hand_cached_over_hand_alone']['std']:.3f}; "
        f"the cheapest extra term by hand: {result['hand_product_over_hand_alone']['median']:.3f}x median"
    )
    for key in ("compiled_cached_over_compiled_alone", "compiled_cached_over_hand_alone"):
        if key in result:
            print(f"{key.replace('_', ' ')}: {result[key]['median']:.3f}x median")
    write_json(results_path(f"teacher_cost_{args.student}", ".json"), result)


if __name__ == "__main__":
    main()
