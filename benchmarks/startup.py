"""How long the kdforge command takes to start: whole-process wall time of ``kdforge --help``,
``kdforge list models`` and ``kdforge check digits_kd``, run one after another in fresh
processes (the median of ``--repeats``), and which heavy libraries each one imports
(from ``python -X importtime``). Bytecode caching is on (``PYTHONDONTWRITEBYTECODE`` unset)
after one warm-up run, as on a user's machine after the first call.

"after" is this checkout; "before" is an earlier commit (``--before``; by default f0c550b, the last one before
the heavy imports were deferred to what uses them), its ``src`` exported by ``git archive`` into a temporary folder
and put first on ``PYTHONPATH``, with this environment's libraries: both measured here, one after the other.

    uv run python benchmarks/startup.py [--before f0c550b] [--repeats 5]

Writes benchmarks/results/startup.json (and .md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, command, commit, save

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


def timed(label: str, env: dict[str, str], repeats: int) -> dict[str, dict]:
    """Each command's median and least wall time over ``repeats`` runs, and the heavy libraries it imports."""
    rows = {}
    for name, argv in COMMANDS.items():
        run(argv, env)  # warm-up: bytecode written
        times = [run(argv, env) for _ in range(repeats)]
        rows[name] = {"median_s": statistics.median(times), "min_s": min(times), "imports": imported(argv, env)}
        print(
            f"{label:8s} {name:18s} {rows[name]['median_s']:6.2f} s (min {rows[name]['min_s']:.2f})  imports "
            f"{', '.join(rows[name]['imports']) or 'none of them'}",
            flush=True,
        )
    return rows


def exported_source(revision: str, into: Path) -> Path:
    """The ``src`` folder of ``revision``, written under ``into``."""
    archive = subprocess.run(["git", "archive", revision, "src"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="f0c550b", help="the earlier commit to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    before = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{args.before}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    if before.returncode != 0:
        parser.error(f"--before {args.before}: not a commit of this checkout ({ROOT}); give a commit id, branch or tag")
    with tempfile.TemporaryDirectory() as scratch:
        source = exported_source(args.before, Path(scratch))
        rows_before = timed("before", {**env, "PYTHONPATH": str(source)}, args.repeats)
    found = {
        "before": {"commit": before.stdout.strip(), "repeats": args.repeats, "commands": rows_before},
        "after": {"commit": commit(), "repeats": args.repeats, "commands": timed("after", env, args.repeats)},
    }
    lines = [
        "# Start-up: whole-process wall time (median of runs, bytecode cached)",
        "",
        f"before: {found['before']['commit'][:7]}; after: {found['after']['commit'][:7]}; {args.repeats} runs each.",
        "",
        "| command | before | after |",
        "|---|---:|---:|",
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
    lines += ["", f"    {command()}"]
    save("startup", found, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
