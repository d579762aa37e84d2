"""What the benchmark scripts share: running a recipe quietly, mean ± std over seeds, and
where they write (``benchmarks/results/<name>.json``, every number, and ``<name>.md``, the
table people read)."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

from rich.console import Console

import kdforge

RESULTS = Path(__file__).parent / "results"


def run_quietly(raw: dict) -> kdforge.RunResult:
    """Run a recipe given as a dict, its console output discarded."""
    return kdforge.run(kdforge.Recipe.from_dict(raw), console=Console(file=io.StringIO()))


def mean_std(values: list[float], digits: int = 2) -> str:
    """'mean ± std' over seeds (the value alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def save(name: str, out: dict, text: str) -> None:
    """Write ``out`` as <name>.json and ``text`` as <name>.md, and print the text."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
