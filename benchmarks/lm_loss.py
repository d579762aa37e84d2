"""Token-level KD without the whole vocabulary: chunked_linear_kd against the plain loss on full logits.

For each vocabulary size V and number of tokens N, the forward KL (T = 1) of a student whose last
hidden states [N, 512] go through its LM head [V, 512], against a teacher's hidden states
[N, 768] through its head [V, 768], then the backward pass to the hidden states and the head:

- plain: the student's logits [N, V] and the teacher's, then ``kd_loss`` and autograd;
- chunked: ``chunked_linear_kd`` (its default chunk: 2**22 // V tokens, at least 128), the teacher's
  logits made chunk by chunk from its hidden states too.

Each variant runs in a fresh process: peak memory is the growth of the resident set over what
the inputs and weights already take (VmHWM, reset after they are made), the time is the median
of 3 repeats. Both losses and gradients agree (checked in tests/test_chunked_kd.py); CPU, fp32.

    uv run python benchmarks/lm_loss.py

Writes benchmarks/results/lm_loss.json and .md.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from common import save

# (V, tokens); 131,072 x 8,192 is left out here: its plain computation needs ~29 GB, past this machine's 24
SHAPES = [(32_768, 1024), (32_768, 4096), (32_768, 8192), (131_072, 1024), (131_072, 2048), (131_072, 4096)]

MEASURE = """
import json, statistics, sys, time
from pathlib import Path
import torch
from kdforge.losses.chunked import LMHead, chunked_linear_kd
from kdforge.losses.functional import kd_loss

torch.set_num_threads(2)
variant, vocab, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
hidden = torch.randn(tokens, 512, generator=g, requires_grad=True)
weight = (torch.randn(vocab, 512, generator=g) / 512**0.5).requires_grad_(True)
teacher_hidden, teacher_weight = torch.randn(tokens, 768, generator=g), torch.randn(vocab, 768, generator=g) / 768**0.5

def step():
    if variant == "plain":
        with torch.no_grad():
            target = teacher_hidden @ teacher_weight.T
        loss = kd_loss(hidden @ weight.T, target, 1.0)
    else:
        loss = chunked_linear_kd(LMHead(hidden, weight), LMHead(teacher_hidden, teacher_weight).logits)
    loss.backward()
    hidden.grad = weight.grad = None
    return float(loss.detach())

def status(field):
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields[field].split()[0]) * 1024

step()  # warm up: kernels, allocator
Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from here
base = status("VmRSS")
times = []
for _ in range(3):
    start = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - start)
print(json.dumps({"peak_bytes": status("VmHWM") - base, "seconds": statistics.median(times), "loss": loss}))
"""


def measure(variant: str, vocab: int, tokens: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, variant, str(vocab), str(tokens)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    for vocab, tokens in SHAPES:
        found = {variant: measure(variant, vocab, tokens) for variant in ("plain", "chunked")}
        row = {
            "vocab": vocab,
            "tokens": tokens,
            "chunk": max(128, 2**22 // vocab),
            **{f"{v}_{k}": found[v][k] for v in found for k in found[v]},
        }
        row["memory_ratio"] = row["chunked_peak_bytes"] / row["plain_peak_bytes"]
        row["time_ratio"] = row["chunked_seconds"] / row["plain_seconds"]
        rows.append(row)
        print(row)
    mb = 2**20
    text = "\n".join(
        [
            "# Token-level KD without the whole vocabulary (CPU, fp32)",
            "",
            "Forward KL of a student (hidden 512, LM head [V, 512]) against a teacher (hidden 768, head [V, 768]),",
            "loss and backward; peak memory above the inputs and weights, median time of 3, a fresh process each.",
            "Targets: chunked <= 0.25x the plain memory at <= 1.2x its time.",
            "",
            "| V | tokens | chunk | plain peak | chunked peak | memory ratio | plain time | chunked time "
            "| time ratio |",
            "|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['vocab']:,} | {r['tokens']:,} | {r['chunk']} | {r['plain_peak_bytes'] / mb:,.0f} MB "
                f"| {r['chunked_peak_bytes'] / mb:,.0f} MB | {r['memory_ratio']:.3f} | {r['plain_seconds']:.2f} s "
                f"| {r['chunked_seconds']:.2f} s | {r['time_ratio']:.2f} |"
                for r in rows
            ),
            "",
            "    uv run python benchmarks/lm_loss.py",
            "",
        ]
    )
    save("lm_loss", {"benchmark": "lm_loss", "rows": rows, "torch": torch.__version__}, text)


if __name__ == "__main__":
    main()
