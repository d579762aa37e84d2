"""Tsetlin-machine benchmarks.

``packed``: an exported clause layer evaluated bit-packed (:class:`kdforge.tm.PackedTM`)
against the same layer in hard mode in PyTorch (float, ``inference_mode``): outputs must be
identical; throughput ratio at several batch sizes (target >= 10x on CPU). The two
alternate in one process, several rounds, median per-round ratio.

The layer is the clause layer of a ``tm_flat`` student on 32x32 digits (1,024 inputs,
2,048 literals); its weights are spread as training spreads them (random thresholds and
votes), since speed and exactness do not depend on what was learned.

    uv run python benchmarks/tm.py packed [--rounds 7] [--clauses 256]

Writes benchmarks/results/tm_packed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kdforge.models import build_model
from kdforge.models.tm import set_hard
from kdforge.tm import PackedTM, model_rules

RESULTS = Path(__file__).parent / "results"


def per_second(fn, batch: int, min_time: float = 0.3) -> float:
    """Samples per second of ``fn()`` on ``batch`` samples, timed over >= ``min_time`` s."""
    fn()
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_time:
        fn()
        runs += 1
    return runs * batch / elapsed


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
    for batch in args.batch_sizes:
        x = torch.randn(batch, 1, 32, 32)
        x_np = x.numpy()
        with torch.inference_mode():
            identical = bool(np.array_equal(layer(x_np), model(x).numpy()))
            ratios, floats, packs = [], [], []
            for r in range(args.rounds):
                order = [("float", lambda: model(x)), ("packed", lambda: layer(x_np))]
                speeds = dict((name, per_second(fn, batch)) for name, fn in (order if r % 2 == 0 else order[::-1]))
                floats.append(speeds["float"])
                packs.append(speeds["packed"])
                ratios.append(speeds["packed"] / speeds["float"])
        row = {"batch": batch, "identical": identical, "float_samples_per_s": statistics.median(floats), "packed_samples_per_s": statistics.median(packs), "ratio": statistics.median(ratios)}
        rows.append(row)
        print(f"batch {batch:5d}: float {row['float_samples_per_s']:>10,.0f}/s  packed {row['packed_samples_per_s']:>10,.0f}/s  ratio {row['ratio']:.1f}x  identical {identical}")
    return {
        "layer": {"inputs": 1024, "literals": 2048, "clauses": args.clauses, "outputs": 10, "mean_included_literals": float(layer.sizes.mean())},
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["packed"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clauses", type=int, default=256)
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 64, 256, 1024])
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    result = packed(args)
    (RESULTS / "tm_packed.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'tm_packed.json'}")


if __name__ == "__main__":
    main()
