"""Token-level KD without the whole vocabulary: chunked_linear_kd against the plain loss on full logits.

For each vocabulary size V and number of tokens N, the forward KL (T = 1) of a student whose last
hidden states [N, 512] go through its LM head [V, 512], against a teacher's hidden states
[N, 768] through its head [V, 768], then the backward pass to the hidden states and the head:

- plain: the student's logits [N, V] and the teacher's, then ``kd_loss`` and autograd;
- chunked: ``chunked_linear_kd`` (its default chunk: 2**22 // V tokens, at least 128), the teacher's
  logits made chunk by chunk from its hidden states too.

Peak memory: each variant in a fresh process, the growth of the resident set over what the inputs and weights
already take (VmHWM, reset after they are made). Time: one more process takes the two variants' steps in turn,
``--rounds`` times (which goes first alternates), after one warm-up step of each: the paired ratio chunked / plain
per round (median, mean ± std), and each variant's median step. Both losses and gradients agree (checked in
tests/test_chunked_kd.py); CPU, fp32, 2 threads.

    uv run python benchmarks/lm_loss.py [--rounds 3]

Writes benchmarks/results/lm_loss.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from common import save

# (V, tokens); 131,072 x 8,192 is left out here: its plain computation needs ~29 GB, past this machine's 24
SHAPES = [(32_768, 1024), (32_768, 4096), (32_768, 8192), (131_072, 1024), (131_072, 2048), (131_072, 4096)]

MEASURE = """
import json, sys, time
from pathlib import Path
import torch
from kdforge.losses.chunked import LMHead, chunked_linear_kd
from kdforge.losses.functional import kd_loss

torch.set_num_threads(2)
mode, vocab, tokens, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
g = torch.Generator().manual_seed(0)
hidden = torch.randn(tokens, 512, generator=g, requires_grad=True)
weight = (torch.randn(vocab, 512, generator=g) / 512**0.5).requires_grad_(True)
teacher_hidden, teacher_weight = torch.randn(tokens, 768, generator=g), torch.randn(vocab, 768, generator=g) / 768**0.5

def step(variant):
    if variant == "plain":
        with torch.no_grad():
            target = teacher_hidden @ teacher_weight.T
        loss = kd_loss(hidden @ weight.T, target, 1.0)
    else:
        loss = chunked_linear_kd(LMHead(hidden, weight), LMHead(teacher_hidden, teacher_weight).logits)
    loss.backward()
    hidden.grad = weight.grad = None
    return float(loss.detach())

def timed(variant):
    start = time.perf_counter()
    step(variant)
    return time.perf_counter() - start

def status(field):
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields[field].split()[0]) * 1024

if mode == "time":
    step("plain"), step("chunked")  # warm up: kernels, allocator
    order = ("plain", "chunked")
    pairs = [{v: timed(v) for v in (order if r % 2 == 0 else order[::-1])} for r in range(rounds)]
    print(json.dumps({"pairs": pairs}))
else:
    step(mode)  # warm up
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from here
    base = status("VmRSS")
    loss = step(mode)
    print(json.dumps({"peak_bytes": status("VmHWM") - base, "loss": loss}))
"""


def measure(mode: str, vocab: int, tokens: int, rounds: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, mode, str(vocab), str(tokens), str(rounds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def shape_row(vocab: int, tokens: int, rounds: int) -> dict:
    """One shape: each variant's peak memory (a process each), then their paired step times (one process)."""
    row: dict = {"vocab": vocab, "tokens": tokens, "chunk": max(128, 2**22 // vocab)}
    for variant in ("plain", "chunked"):
        found = measure(variant, vocab, tokens, rounds)
        row[f"{variant}_peak_bytes"], row[f"{variant}_loss"] = found["peak_bytes"], found["loss"]
    pairs = measure("time", vocab, tokens, rounds)["pairs"]
    ratios = [p["chunked"] / p["plain"] for p in pairs]
    for variant in ("plain", "chunked"):
        row[f"{variant}_seconds"] = statistics.median(p[variant] for p in pairs)
    row["memory_ratio"] = row["chunked_peak_bytes"] / row["plain_peak_bytes"]
    row["time_ratio"], row["time_ratio_mean"] = statistics.median(ratios), statistics.mean(ratios)
    row["time_ratio_std"] = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    row["pairs"] = pairs
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="paired steps of the two variants per shape")
    args = parser.parse_args()
    rows = []
    for vocab, tokens in SHAPES:
        rows.append(shape_row(vocab, tokens, args.rounds))
        print(rows[-1], flush=True)
    mb = 2**20
    text = "\n".join(
        [
            "# Token-level KD without the whole vocabulary (CPU, fp32)",
            "",
            "Forward KL of a student (hidden 512, LM head [V, 512]) against a teacher (hidden 768, head [V, 768]),",
            "loss and backward; peak memory above the inputs and weights, a fresh process per variant; time: the two",
            f"variants' steps in turn in one process, {args.rounds} rounds, each variant's median step and the paired",
            "ratio chunked / plain (median; mean ± std).",
            "Targets: chunked <= 0.25x the plain memory at <= 1.2x its time.",
            "",
            "| V | tokens | chunk | plain peak | chunked peak | memory ratio | plain time | chunked time "
            "| time ratio | mean ± std |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['vocab']:,} | {r['tokens']:,} | {r['chunk']} | {r['plain_peak_bytes'] / mb:,.0f} MB "
                f"| {r['chunked_peak_bytes'] / mb:,.0f} MB | {r['memory_ratio']:.3f} | {r['plain_seconds']:.2f} s "
                f"| {r['chunked_seconds']:.2f} s | {r['time_ratio']:.2f} "
                f"| {r['time_ratio_mean']:.2f} ± {r['time_ratio_std']:.2f} |"
                for r in rows
            ),
            "",
            "    uv run python benchmarks/lm_loss.py" + (f" --rounds {args.rounds}" if args.rounds != 3 else ""),
            "",
        ]
    )
    out = {"benchmark": "lm_loss", "rounds": args.rounds, "rows": rows, "torch": torch.__version__}
    save("lm_loss", out, text)


if __name__ == "__main__":
    main()
