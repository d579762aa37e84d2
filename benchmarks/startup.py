"""How long the kdforge command takes to start: whole-process wall time of ``kdforge --help``,
``kdforge list models`` and ``kdforge check digits_kd``, run one after another in fresh
processes (the median of ``--repeats``), and which heavy libraries each one imports
(from ``python -X importtime``). Bytecode caching is on (``PYTHONDONTWRITEBYTECODE`` unset)
after one warm-up run, as on a user's machine after the first call.

    uv run python benchmarks/startup.py --label before|after [--repeats 5]

Adds the label's numbers to benchmarks/results/startup.json (and .md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import results_path, write_json, write_text

COMMANDS = {"--help": ["--help"], "list models": ["list", "models"], "check digits_kd": ["check", "digits_kd"]}
HEAVY = ("torch", "sklearn", "timm", "transformers", "torch.distributed.checkpoint", "scipy", "matplotlib")


def run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdforge", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def imported(args: list[str], env: dict[str, str]) -> list[str]:
    """The heavy top-level libraries the command imports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kdforge", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    names = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [name for name in HEAVY if name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    rows = {}
    for name, argv in COMMANDS.items():
        run(argv, env)  # warm-up: bytecode written
        times = [run(argv, env) for _ in range(args.repeats)]
        rows[name] = {"median_s": statistics.median(times), "min_s": min(times), "imports": imported(argv, env)}
        print(
            f"{args.label:8s} {name:18s} {rows[name]['median_s']:6.2f} s (min {rows[name]['min_s']:.2f})  imports "
            f"{', '.join(rows[name]['imports']) or 'none of them'}",
            flush=True,
        )
    path = results_path("startup", ".json")
    found = json.loads(path.read_text()) if path.exists() else {}
    found[args.label] = {"repeats": args.repeats, "python": sys.version.split()[0], "commands": rows}
    write_json(path, found)
    lines = [
        "# Start-up: whole-process wall time (median of runs, bytecode cached)",
        "",
        "| command | " + " | ".join(found) + " |",
        "|---|" + "---:|" * len(found),
    ]
    for name in COMMANDS:
        lines.append(
            f"| `kdforge {name}` | "
            + " | ".join(f"{found[label]['commands'][name]['median_s']:.2f} s" for label in found)
            + " |"
        )
    lines += ["", "Heavy libraries imported:", ""]
    for label, entry in found.items():
        lines += [
            f"- {label}: "
            + "; ".join(f"`{name}`: {', '.join(row['imports']) or 'none'}" for name, row in entry["commands"].items())
        ]
    write_text(results_path("startup", ".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
