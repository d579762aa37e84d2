"""Online LM distillation at scale on one GPU: tokens/s and peak memory, a 110M-parameter Llama teacher into a
35M Llama student at 1k context, and the chunk size at which chunked losses pay there.

Both models are built from configs (random weights: speed and memory do not depend on them) on a 32,000-token
vocabulary; the data are token shards of random ids written here (``tokens`` dataset, 1,024-token rows, batches of
8). Each variant is a kdforge recipe (½ CE + ½ forward KL at T = 1, AdamW) run for one short epoch; the variants run
in turn, round after round (``--rounds``; each round starts one variant later, so none always runs first on a warm
or a cold device), and each variant's speed is compared with the first variant's in the same round: paired ratios,
so that a device whose clock drifts between rounds moves both sides of a ratio. Reported per variant: the median
time of its training steps (whole steps, batch loading included, the first of the epoch left out) as tokens/s, its
median and mean ± std paired ratio of tokens/s to the first variant's, and the peak GPU memory of training (the most
allocated up to the last step's end, loading the models included, less what earlier runs still held: the evaluations
after training are left out). Variants: bf16 autocast with the plain losses, with chunked losses (the whole [tokens,
vocabulary] logits never made) at their default chunk and at chunks of 131 (the CPU's default at this vocabulary) to
8,192 tokens (the whole batch), and chunked with gradient checkpointing; the plain losses with the student compiled
(``train.compile``; the median leaves out the few steps that compile), and the chunked losses compiled alike
(``train.compile`` compiles their chunk step too); fp32 with the plain losses.

    uv run python benchmarks/lm_gpu.py [--steps 40] [--rounds 3] [--variants ...] [--name lm_gpu]   # a CUDA GPU
    uv run python benchmarks/lm_gpu.py --tiny              # a CPU smoke test of the same code, tiny models

Writes benchmarks/results/<name>.json / .md (not with --tiny).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common import run_timed, save
from kdforge.losses.chunked import default_chunk

SIZES = {
    "full": {
        "vocab": 32_000, "length": 1024, "batch": 8,
        "teacher": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "intermediate_size": 2048},
        "student": {"hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8,
                    "intermediate_size": 1376},
    },
    "tiny": {
        "vocab": 512, "length": 64, "batch": 4,
        "teacher": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
        "student": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    },
}  # fmt: skip
VARIANTS = {  # chunk: tokens per chunk of a chunked loss (None: the default for the device)
    "bf16, plain losses": {"amp": "bf16", "chunked": False, "checkpointing": False},
    "bf16, chunked losses": {"amp": "bf16", "chunked": True, "checkpointing": False},
    "bf16, chunked losses, 131-token chunks": {"amp": "bf16", "chunked": True, "chunk": 131, "checkpointing": False},
    "bf16, chunked losses, 512-token chunks": {"amp": "bf16", "chunked": True, "chunk": 512, "checkpointing": False},
    "bf16, chunked losses, 2,048-token chunks": {"amp": "bf16", "chunked": True, "chunk": 2048,
                                                 "checkpointing": False},
    "bf16, chunked losses, one 8,192-token chunk": {"amp": "bf16", "chunked": True, "chunk": 8192,
                                                    "checkpointing": False},
    "bf16, chunked + gradient checkpointing": {"amp": "bf16", "chunked": True, "checkpointing": True},
    "bf16, plain losses, compiled student": {"amp": "bf16", "chunked": False, "checkpointing": False,
                                             "compile": True},
    "bf16, chunked losses, compiled (student and chunk step)": {"amp": "bf16", "chunked": True,
                                                                "checkpointing": False, "compile": True},
    "fp32, plain losses": {"amp": "off", "chunked": False, "checkpointing": False},
}  # fmt: skip


def llama(size: dict, part: str) -> dict:
    return {"model_type": "llama", "vocab_size": size["vocab"], "max_position_embeddings": size["length"],
            "tie_word_embeddings": True, **size[part]}  # fmt: skip


def prepare(workdir: Path, size: dict, steps: int) -> dict:
    """Token shards of random ids (train: ``steps`` batches; val and test: one) and the teacher's folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    rng = np.random.default_rng(0)
    shards = {}
    for split, batches in (("train", steps), ("val", 1), ("test", 1)):
        tokens = batches * size["batch"] * size["length"] + 1
        shards[split] = workdir / f"{split}.bin"
        rng.integers(0, size["vocab"], tokens, dtype=np.uint16).tofile(shards[split])
    teacher = AutoModelForCausalLM.from_config(AutoConfig.for_model(**llama(size, "teacher")))
    teacher.save_pretrained(workdir / "teacher")
    return {"shards": shards, "teacher": workdir / "teacher", "teacher_params": teacher.num_parameters()}


def recipe(workdir: Path, size: dict, prep: dict, variant: dict) -> dict:
    chunked = {"chunked": True} if variant["chunked"] else {}
    if variant.get("chunk"):
        chunked["chunk"] = variant["chunk"]
    return {
        "name": "lm-gpu",
        "data": {"name": "tokens", "path": str(prep["shards"]["train"]), "val": str(prep["shards"]["val"]),
                 "test": str(prep["shards"]["test"]), "dtype": "uint16", "vocab_size": size["vocab"],
                 "length": size["length"], "batch_size": size["batch"]},
        "teacher": {"source": "hf", "model": {"name": str(prep["teacher"]), "output": "causal_lm"}},
        "student": {"model": {"name": "hf_causal_lm", "hf_config": llama(size, "student"),
                              "gradient_checkpointing": variant["checkpointing"]}},
        "losses": [{"name": "ce", "weight": 0.5, **chunked},
                   {"name": "kd", "weight": 0.5, "temperature": 1.0, **chunked}],
        "optim": {"name": "adamw", "lr": 3e-4},
        "train": {"epochs": 1, "baseline": False, "amp": variant["amp"], "compile": variant.get("compile", False)},
        "log": {"dir": str(workdir / "runs"), "progress": False},
    }  # fmt: skip


def measure(
    size_name: str, steps: int, variants: list[str], rounds: int, on_round: Callable[[dict], None] | None = None
) -> dict:
    """Every variant in turn, ``rounds`` times; ``on_round(out)`` after each round with the rounds so far (so a run
    stopped by a time limit keeps what it measured)."""
    size = SIZES[size_name]
    workdir = Path(tempfile.mkdtemp(prefix="kdforge-lm-gpu-"))
    prep = prepare(workdir, size, steps)
    out: dict = {"size": size_name, "steps": steps, "teacher_params": prep["teacher_params"]}
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name()
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(rounds):
        for name in variants[r % len(variants) :] + variants[: r % len(variants)]:
            started = time.perf_counter()
            run = one_run(workdir, size, prep, VARIANTS[name])
            run["wall_s"] = time.perf_counter() - started
            out["student_params"] = run.pop("student_params")
            runs[name].append(run)
            print(f"round {r + 1}/{rounds}, {name}: {run}", flush=True)
        out["rounds"] = r + 1
        out["variants"] = {name: summary(runs[name], runs[variants[0]]) for name in variants}
        if on_round:
            on_round(out)
    return out


def one_run(workdir: Path, size: dict, prep: dict, variant: dict) -> dict:
    """One short run of ``variant``: its median step time, tokens/s and peak training memory."""
    held = 0  # what earlier runs still hold: not this run's
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the previous run's blocks (kdforge.run frees its models as it returns)
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
    result, intervals = run_timed(recipe(workdir, size, prep, variant))
    step = statistics.median(intervals.times)
    return {
        "tokens_per_s": size["batch"] * size["length"] / step,
        "step_ms": 1000 * step,
        "peak_gib": (intervals.peak_bytes - held) / 2**30 if torch.cuda.is_available() else None,
        "held_before_gib": held / 2**30,
        "student_params": result.results["student"]["params"],
    }


def summary(runs: list[dict], first: list[dict]) -> dict:
    """A variant's medians over its rounds, and its tokens/s over the first variant's in each round (paired)."""
    ratios = [run["tokens_per_s"] / base["tokens_per_s"] for run, base in zip(runs, first)]
    peaks = [run["peak_gib"] for run in runs if run["peak_gib"] is not None]
    return {
        "tokens_per_s": statistics.median(run["tokens_per_s"] for run in runs),
        "step_ms": statistics.median(run["step_ms"] for run in runs),
        "peak_gib": max(peaks) if peaks else None,
        "ratio": statistics.median(ratios),
        "ratio_mean": statistics.mean(ratios),
        "ratio_std": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
        "rounds": runs,
    }


def held(out: dict) -> str:
    """What the peaks leave out: the memory earlier runs still held when a run began (results that record it)."""
    before = [
        run["held_before_gib"]
        for v in out["variants"].values()
        for run in v.get("rounds", [])
        if "held_before_gib" in run
    ]
    return f", beyond what was allocated before the run (at most {max(before):.2f} GiB)" if before else ""


def markdown(out: dict) -> str:
    size = SIZES[out["size"]]
    paired = "rounds" in out  # results from before the rounds have one run per variant and no ratios
    names = list(out["variants"])
    how = (
        f"{out['rounds']} round{'s' if out['rounds'] != 1 else ''} of every variant in turn; per variant the medians "
        "over the rounds of its step "
        f"time (each the median of {out['steps'] - 1} steps) and its tokens/s relative to the first variant's "
        f"({names[0]}) in the same round"
        if paired
        else f"median of {out['steps'] - 1} steps"
    )
    lines = [
        f"# Online LM distillation on {out.get('device', 'CPU')}: tokens/s and peak memory",
        "",
        f"Teacher {out['teacher_params'] / 1e6:.0f}M parameters, student {out['student_params'] / 1e6:.0f}M (Llama, "
        f"vocabulary {size['vocab']:,}); rows of {size['length']} tokens, batches of {size['batch']}; ½ CE + ½ "
        f"forward KL; {how} (the device synchronised at each step's end); peak memory "
        f"of the training steps{held(out)}. The default chunk on a GPU: "
        f"{default_chunk(size['vocab'], torch.device('cuda')):,} "
        "tokens at this vocabulary.",
        "",
        "| variant | tokens/s | ms per step | paired ratio, median | mean ± std | peak training memory (GiB) |"
        if paired
        else "| variant | tokens/s | ms per step | peak training memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|" if paired else "|---|---:|---:|---:|",
    ]
    for name, v in out["variants"].items():
        peak = f"{v['peak_gib']:.2f}" if v["peak_gib"] is not None else "-"
        ratio = f" {v['ratio']:.3f} | {v['ratio_mean']:.3f} ± {v['ratio_std']:.3f} |" if paired else ""
        lines.append(f"| {name} | {v['tokens_per_s']:,.0f} | {v['step_ms']:.1f} |{ratio} {peak} |")
    lines += ["", f"    {out['command']}"] if "command" in out else []
    lines += ["", out["note"]] if "note" in out else []
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps per variant")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every variant, in turn")
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU: a check that the code runs")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--name", default="lm_gpu", help="results file name (benchmarks/results/NAME.json / .md)")
    args = parser.parse_args()
    command = "uv run python benchmarks/lm_gpu.py " + shlex.join(sys.argv[1:])

    def report(out: dict) -> None:
        out["command"] = command
        if args.tiny:
            print(markdown(out))
        else:
            save(args.name, out, markdown(out))

    measure("tiny" if args.tiny else "full", args.steps, args.variants, args.rounds, on_round=report)


if __name__ == "__main__":
    main()
