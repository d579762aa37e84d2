"""Token-level KD without the whole vocabulary: chunked losses against the plain loss on full logits.

For each vocabulary size V and number of tokens N, the forward KL (T = 1) of a student whose last
hidden states [N, 512] go through its LM head [V, 512], against a teacher's hidden states
[N, 768] through its head [V, 768] (``--terms ce+kd``: ½ CE + ½ forward KL), then the backward pass
to the hidden states and the head:

- plain: the student's logits [N, V] and the teacher's, then the losses and autograd;
- chunked: ``chunked_linear_losses`` (its default chunk: 2**22 // V tokens, at least 128), the teacher's
  logits made chunk by chunk from its hidden states too, every term in one pass over the chunks;
- separate: each term its own pass (``chunked_linear_loss`` per term: the student's logits made once per term);
- compiled: as chunked, the chunk step compiled (``train.compile``: the terms' elementwise work fused).

Peak memory: each variant in a fresh process, the growth of the resident set over what the inputs and weights
already take (VmHWM, reset after they are made). Time: one more process takes the variants' steps in turn,
``--rounds`` times (each round starts one variant later), after one warm-up step of each (which compiles): the
paired ratio variant / plain per round (median, mean ± std), and each variant's median step. Losses and gradients
agree (checked in tests/test_chunked_kd.py); CPU, fp32, 2 threads (``--device cuda``: a GPU, bf16 autocast over
float32 weights, peak memory from the allocator).

    uv run python benchmarks/lm_loss.py [--rounds 3]
    uv run python benchmarks/lm_loss.py --terms ce+kd --variants plain separate chunked compiled \
        --shapes 32768x1024 32768x4096 131072x1024 131072x2048 --name lm_loss_fused
    uv run python benchmarks/lm_loss.py --device cuda --terms ce+kd --variants plain chunked compiled \
        --shapes 32768x1024 32768x8192 131072x1024 --name lm_loss_gpu    # a GPU

Writes benchmarks/results/<name>.json and .md (default name: lm_loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from common import save
from kdforge.losses.chunked import default_chunk

# (V, tokens); 131,072 x 8,192 is left out here: its plain computation needs ~29 GB, past this machine's 24
VARIANTS = ["plain", "chunked", "separate", "compiled"]
SHAPES = [(32_768, 1024), (32_768, 4096), (32_768, 8192), (131_072, 1024), (131_072, 2048), (131_072, 4096)]

MEASURE = """
import contextlib, json, sys, time
from pathlib import Path
import torch
from kdforge.losses.chunked import LMHead, ce_chunks, chunked_linear_loss, chunked_linear_losses, kd_chunks
from kdforge.losses.functional import cross_entropy, kd_loss

torch.set_num_threads(2)
mode, (vocab, tokens, rounds) = sys.argv[1], map(int, sys.argv[2:5])
both, variants, device = sys.argv[5] == "ce+kd", sys.argv[6].split(","), torch.device(sys.argv[7])
gpu = device.type == "cuda"  # there: bf16 autocast over float32 weights, as training runs
g = torch.Generator().manual_seed(0)
hidden = torch.randn(tokens, 512, generator=g).to(device).requires_grad_(True)
weight = (torch.randn(vocab, 512, generator=g) / 512**0.5).to(device).requires_grad_(True)
teacher_hidden, teacher_weight = torch.randn(tokens, 768, generator=g), torch.randn(vocab, 768, generator=g) / 768**0.5
teacher = LMHead(teacher_hidden.to(device), teacher_weight.to(device))
targets = torch.randint(0, vocab, (tokens,), generator=g).to(device)
weights = [0.5, 0.5] if both else [1.0]

def step(variant):
    with torch.autocast("cuda", dtype=torch.bfloat16) if gpu else contextlib.nullcontext():
        loss = step_loss(variant)
    loss.backward()
    hidden.grad = weight.grad = None
    return float(loss.detach())

def step_loss(variant):
    if variant == "plain":
        with torch.no_grad():
            target = teacher.logits()
        logits = hidden @ weight.T
        losses = [kd_loss(logits, target, 1.0)] + ([cross_entropy(logits, targets)] if both else [])
        loss = sum(w * l for w, l in zip(weights, losses))
    else:
        terms = [kd_chunks(teacher.logits)] + ([ce_chunks(targets)] if both else [])
        head = LMHead(hidden, weight)
        if variant == "separate":
            loss = sum(w * chunked_linear_loss(head, t) for w, t in zip(weights, terms))
        else:
            loss = chunked_linear_losses(head, terms, weights, compiled=variant == "compiled")[0]
    return loss

def timed(variant):
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    step(variant)  # its float() waits for the device
    return time.perf_counter() - start

def status(field):
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields[field].split()[0]) * 1024

if mode == "time":
    for variant in variants:  # warm up: kernels, allocator, compilation
        step(variant)
    turns = [variants[r % len(variants):] + variants[:r % len(variants)] for r in range(rounds)]
    pairs = [{v: timed(v) for v in turn} for turn in turns]
    print(json.dumps({"pairs": pairs}))
elif gpu:
    step(mode)  # warm up
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = step(mode)
    print(json.dumps({"peak_bytes": torch.cuda.max_memory_allocated() - base, "loss": loss}))
else:
    step(mode)  # warm up
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from here
    base = status("VmRSS")
    loss = step(mode)
    print(json.dumps({"peak_bytes": status("VmHWM") - base, "loss": loss}))
"""


def measure(mode: str, vocab: int, tokens: int, args: argparse.Namespace, variants: list[str]) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE,
            mode,
            str(vocab),
            str(tokens),
            str(args.rounds),
            args.terms,
            ",".join(variants),
            args.device,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def shape_row(vocab: int, tokens: int, args: argparse.Namespace, variants: list[str]) -> dict:
    """One shape: each variant's peak memory (a process each), then their paired step times (one process)."""
    row: dict = {"vocab": vocab, "tokens": tokens, "chunk": default_chunk(vocab, torch.device(args.device))}
    for variant in variants:
        found = measure(variant, vocab, tokens, args, variants)
        row[f"{variant}_peak_bytes"], row[f"{variant}_loss"] = found["peak_bytes"], found["loss"]
    pairs = measure("time", vocab, tokens, args, variants)["pairs"]
    for variant in variants:
        row[f"{variant}_seconds"] = statistics.median(p[variant] for p in pairs)
    for variant in variants[1:]:
        ratios = [p[variant] / p["plain"] for p in pairs]
        key = "" if variants == ["plain", "chunked"] else f"{variant}_"  # the first results' names, kept
        row[f"{key}memory_ratio"] = row[f"{variant}_peak_bytes"] / row["plain_peak_bytes"]
        row[f"{key}time_ratio"], row[f"{key}time_ratio_mean"] = statistics.median(ratios), statistics.mean(ratios)
        row[f"{key}time_ratio_std"] = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    row["pairs"] = pairs
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="paired steps of the variants per shape")
    parser.add_argument("--terms", choices=["kd", "ce+kd"], default="kd", help="forward KL, or ½ CE + ½ forward KL")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["plain", "chunked"])
    parser.add_argument("--shapes", nargs="+", help="VxN: vocabulary and tokens (default: those of lm_loss.md)")
    parser.add_argument("--name", default="lm_loss", help="results file name")
    parser.add_argument("--device", default="cpu", help="cpu (float32, 2 threads), or cuda (bf16 autocast)")
    args = parser.parse_args()
    variants = ["plain", *[v for v in args.variants if v != "plain"]]  # every ratio is to the plain loss
    shapes = [tuple(map(int, shape.split("x"))) for shape in args.shapes] if args.shapes else SHAPES
    rows = []
    for vocab, tokens in shapes:
        rows.append(shape_row(vocab, tokens, args, variants))
        print(rows[-1], flush=True)
    command = "    uv run python benchmarks/lm_loss.py" + "".join(
        f" {flag} {value}"
        for flag, value, default in (
            ("--rounds", args.rounds, 3),
            ("--terms", args.terms, "kd"),
            ("--variants", " ".join(args.variants), "plain chunked"),
            ("--shapes", " ".join(args.shapes or []), ""),
            ("--name", args.name, "lm_loss"),
            ("--device", args.device, "cpu"),
        )
        if value != default
    )
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    first = variants == ["plain", "chunked"]
    table = first_table(rows, args.rounds) if first else table_of(rows, variants, args, device)
    out = {"benchmark": "lm_loss", "rounds": args.rounds, "terms": args.terms, "rows": rows, "timings": ["pairs"],
           "torch": torch.__version__, "device": device}  # fmt: skip
    save(args.name, out, "\n".join([*table, "", command, ""]))


def first_table(rows: list[dict], rounds: int) -> list[str]:
    mb = 2**20
    return [
        "# Token-level KD without the whole vocabulary (CPU, fp32)",
        "",
        "Forward KL of a student (hidden 512, LM head [V, 512]) against a teacher (hidden 768, head [V, 768]),",
        "loss and backward; peak memory above the inputs and weights, a fresh process per variant; time: the two",
        f"variants' steps in turn in one process, {rounds} rounds, each variant's median step and the paired",
        "ratio chunked / plain (median; mean ± std).",
        "Targets: chunked <= 0.25x the plain memory at <= 1.2x its time.",
        "",
        "| V | tokens | chunk | plain peak | chunked peak | memory ratio | plain time | chunked time "
        "| time ratio | mean ± std |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['vocab']:,} | {r['tokens']:,} | {r['chunk']} | {r['plain_peak_bytes'] / mb:,.0f} MB "
            f"| {r['chunked_peak_bytes'] / mb:,.0f} MB | {r['memory_ratio']:.3f} | {duration(r['plain_seconds'])} "
            f"| {duration(r['chunked_seconds'])} | {r['time_ratio']:.2f} "
            f"| {r['time_ratio_mean']:.2f} ± {r['time_ratio_std']:.2f} |"
            for r in rows
        ),
    ]


def duration(seconds: float) -> str:
    """A step's time, in milliseconds below a second (a GPU's steps)."""
    return f"{seconds:.2f} s" if seconds >= 1 else f"{1000 * seconds:.1f} ms"


def table_of(rows: list[dict], variants: list[str], args: argparse.Namespace, device: str) -> list[str]:
    mb = 2**20
    loss = "½ CE + ½ forward KL" if args.terms == "ce+kd" else "Forward KL"
    where = f"{device}, bf16 autocast" if args.device == "cuda" else "CPU, fp32"
    lines = [
        f"# Token-level KD without the whole vocabulary: {', '.join(variants)} ({where})",
        "",
        f"{loss} of a student (hidden 512, LM head [V, 512]) against a teacher (hidden 768, head [V, 768]), loss",
        "and backward; chunked: every term in one pass over the chunks (default chunk: "
        + ("2**25 // V tokens" if args.device == "cuda" else "2**22 // V tokens")
        + ", at least",
        "128); separate: a pass per term; compiled: one pass, its chunk step compiled (train.compile). Peak memory",
        "above the inputs and weights, a fresh process per variant; time: the variants' steps in turn in one process,",
        f"{args.rounds} rounds, each variant's median step and the paired ratio variant / plain (median; mean ± std).",
        "",
        "| V | tokens | variant | peak memory | memory ratio | time | time ratio | mean ± std |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for v in variants:
            if v == "plain":
                memory, measured = 1.0, "1.00 | 1.00 ± 0.00"
            else:
                memory = r[f"{v}_memory_ratio"]
                mean, std = r[f"{v}_time_ratio_mean"], r[f"{v}_time_ratio_std"]
                measured = f"{r[f'{v}_time_ratio']:.2f} | {mean:.2f} ± {std:.2f}"
            lines.append(
                f"| {r['vocab']:,} | {r['tokens']:,} | {v} | {r[f'{v}_peak_bytes'] / mb:,.0f} MB | {memory:.3f} "
                f"| {duration(r[f'{v}_seconds'])} | {measured} |"
            )
    return lines


if __name__ == "__main__":
    main()
