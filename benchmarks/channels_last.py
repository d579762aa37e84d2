"""Channels-last against NCHW for a convolutional KD step, through kdforge's Trainer, on the CPU or a GPU.

What ``train.channels_last: auto`` decides (on for convolutions) is measured here: the same student, teacher and
batches train once with the batches and models in NCHW and once channels-last, in fp32 and (on a GPU) under bf16
autocast. Cases: a CNN-8 student of a CNN-32 teacher on 3×32×32 images, batches of 64 (the size of kdforge's
digits recipes), and a 4-stage CNN-32 student of a ResNet-50 teacher (timm, random weights) on 3×224×224 images,
batches of 64 (an ImageNet-sized teacher). Each fit is one epoch of ``--steps`` steps (CE + Hinton KD, AdamW,
kdforge's defaults otherwise); its step time is the median of its steps (the device synchronised at each step's
end, the first steps left out). Each round runs every variant once, the two layouts in alternating order, so each
channels-last fit is paired with the NCHW fit of its round: reported are the median and mean ± std of the paired
ratios NCHW / channels-last (above 1: channels-last is faster).

    uv run python benchmarks/channels_last.py [--cases cnn32 resnet224] [--rounds 5] [--steps 30]

Writes benchmarks/results/channels_last_<device>.json / .md (cpu or cuda).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
from typing import Any

import torch

from common import Intervals, Ticking, save
from kdforge.config.training import OptimConfig, TrainConfig
from kdforge.data.bundle import Split
from kdforge.data.loaders import make_loader
from kdforge.distiller import Distiller
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.teachers.teacher import Teacher
from kdforge.trainer import Trainer

CASES = {  # what it is, input shape, batch, teacher (a kdforge model or "timm:<name>"), student
    "cnn32": ("CNN-8 from CNN-32, 3×32×32", (3, 32, 32), 64, {"name": "cnn", "width": 32, "depth": 3},
              {"name": "cnn", "width": 8, "depth": 3}),
    "resnet224": ("CNN-32 (4 stages) from ResNet-50, 3×224×224", (3, 224, 224), 64, {"name": "timm:resnet50"},
                  {"name": "cnn", "width": 32, "depth": 4}),
}  # fmt: skip
LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}
SKIPPED_STEPS = 3  # the first steps of a fit: allocator, kernel selection


def build(spec: dict, shape: tuple[int, ...], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    options = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"].startswith("timm:"):
        import timm

        return timm.create_model(spec["name"][5:], pretrained=False, num_classes=10, in_chans=shape[0], **options)
    return build_model(spec["name"], input_shape=shape, num_classes=10, **options)


def one_fit(case: str, layout: str, amp: str, steps: int, data: Split, device: torch.device) -> float:
    """The median step time (s) of one epoch of ``steps`` steps."""
    _, shape, batch, teacher_spec, student_spec = CASES[case]
    fmt = LAYOUTS[layout]
    teacher = Teacher(build(teacher_spec, shape, 0).to(device).to(memory_format=fmt))
    student = build(student_spec, shape, 1).to(device).to(memory_format=fmt)
    train = make_loader(data, batch, shuffle=True, device=device, memory_format=fmt)
    val = make_loader(Split(data.x[:batch], data.y[:batch]), batch, device=device, memory_format=fmt)
    terms = build_losses([{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "temperature": 4.0}])
    distiller = Distiller(student, teacher, terms, data.x[:2].to(device).contiguous(memory_format=fmt)).to(device)
    timer = Ticking(Intervals())  # the device synchronised at each step's end
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            distiller,
            OptimConfig(name="adamw", lr=1e-3),
            TrainConfig(epochs=1, amp=amp, channels_last=layout == "channels-last"),
            steps_per_epoch=len(train),
            checkpoint_dir=tmp,
            callbacks=[timer],
        )
        trainer.fit(train, val)
    return statistics.median(timer.intervals.times[SKIPPED_STEPS:])


def measure(case: str, amp: str, rounds: int, steps: int, device: torch.device) -> dict[str, Any]:
    _, shape, batch, _, _ = CASES[case]
    gen = torch.Generator().manual_seed(0)
    data = Split(
        torch.randn(steps * batch, *shape, generator=gen), torch.randint(0, 10, (steps * batch,), generator=gen)
    )
    one_fit(case, "NCHW", amp, SKIPPED_STEPS + 2, data, device)  # warm-up: first calls, libraries, kernels
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for r in range(rounds):
        for layout in list(LAYOUTS)[:: 1 if r % 2 == 0 else -1]:
            times[layout].append(one_fit(case, layout, amp, steps, data, device))
        print(f"  {case}, {amp}, round {r + 1}: NCHW {1000 * times['NCHW'][-1]:.2f} ms, channels-last "
              f"{1000 * times['channels-last'][-1]:.2f} ms", flush=True)  # fmt: skip
    ratios = [a / b for a, b in zip(times["NCHW"], times["channels-last"])]
    return {
        "case": case,
        "amp": amp,
        "nchw_ms": 1000 * statistics.median(times["NCHW"]),
        "channels_last_ms": 1000 * statistics.median(times["channels-last"]),
        "ratio_median": statistics.median(ratios),
        "ratio_mean": statistics.mean(ratios),
        "ratio_std": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
        "ratios": ratios,
    }


def markdown(out: dict[str, Any]) -> str:
    lines = [
        f"# Channels-last vs NCHW for a convolutional KD step: {out['device']}",
        "",
        f"`{out['command']}` on {out['device']} (torch {out['torch']}). Median step time of each layout over "
        f"{out['rounds']} rounds; the ratio NCHW / channels-last paired by round (above 1: channels-last is faster).",
        "",
        "| case | precision | NCHW ms/step | channels-last ms/step | ratio, median | mean ± std |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in out["rows"]:
        lines.append(
            f"| {CASES[row['case']][0]}, batch {CASES[row['case']][2]} | {row['amp']} | {row['nchw_ms']:.2f} | "
            f"{row['channels_last_ms']:.2f} | {row['ratio_median']:.2f} | {row['ratio_mean']:.2f} ± "
            f"{row['ratio_std']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="steps per fit")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amps = ["off", "bf16"] if device.type == "cuda" else ["off"]
    rows = [measure(case, amp, args.rounds, args.steps, device) for case in args.cases for amp in amps]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or 'x86-64'}, " \
        f"{torch.get_num_threads()} threads)"  # fmt: skip
    command = "uv run python benchmarks/channels_last.py " + shlex.join(sys.argv[1:])
    out = {"device": name, "torch": torch.__version__, "rounds": args.rounds, "steps": args.steps, "rows": rows,
           "command": command}  # fmt: skip
    save(f"channels_last_{device.type}", out, markdown(out))


if __name__ == "__main__":
    main()
