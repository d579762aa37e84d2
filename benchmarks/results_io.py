"""Where the benchmark scripts write: ``benchmarks/results/<name>.json`` (every number) and
``<name>.md`` (the table people read)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def save(name: str, out: dict, text: str) -> None:
    """Write ``out`` as <name>.json and ``text`` as <name>.md, and print the text."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
