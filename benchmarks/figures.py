"""Do the figures quoted in README.md and docs/ still match the committed benchmark results?

Each entry of ``FIGURES`` names a passage of a document, the results file its numbers come from and
the command that regenerates that file. A passage passes when it is still in the document word for
word, and every number in it is one of the file's numbers as the passage rounds it (to the passage's
decimals; a share may be quoted as a percentage). A benchmark re-run that moves a number makes
its passage fail here until the document says the new number.

    uv run python benchmarks/figures.py          # lists every passage that no longer matches; exit 1 if any

``tests/test_figures.py`` runs the same check.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "benchmarks/results"
NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")

# results file -> the command that writes it
COMMANDS = {
    "overhead.json": "uv run python benchmarks/overhead.py",
    "digits_kd_sweep.md": "uv run kdforge sweep digits_kd --seeds 3 (then copy its sweep.md and sweep.json here)",
    "teacher_cost_cnn.json": "uv run python benchmarks/teacher_cost.py --student cnn --epochs 13",
    "teacher_cost_mlp.json": "uv run python benchmarks/teacher_cost.py --student mlp --epochs 13",
    "methods.md": "uv run python benchmarks/methods.py run; uv run python benchmarks/methods.py tune",
    "ssm_sar.md": "uv run python benchmarks/ssm.py sar --presets compressed tiny",
    "ssm_sar.json": "uv run python benchmarks/ssm.py sar --presets compressed tiny",
    "embed.md": "uv run python benchmarks/embed.py",
    "lm.md": "uv run python benchmarks/lm.py",
    "lm_loss.md": "uv run python benchmarks/lm_loss.py",
    "lm_hf_step.md": "uv run python benchmarks/lm_hf.py",
    "lm_trl.md": "uv run python benchmarks/lm_trl.py",
}


@dataclass(frozen=True)
class Figure:
    doc: str  # the document, from the repository root
    passage: str  # quoted word for word
    source: str  # the results file (under benchmarks/results) its numbers come from
    numbers: tuple[str, ...] = ()  # the numbers to check (default: every number with a decimal point)


FIGURES = [
    Figure(
        "README.md",
        "KD gain of 1.57 ± 0.16\npoints (distilled 98.98 ± 0.80%, alone 97.41 ± 0.64%, teacher 99.17 ± 0.28%)",
        "digits_kd_sweep.md",
    ),
    Figure("README.md", "teacher       cnn     99.44%   99.26%", "digits_kd_sweep.md", ("99.44",)),
    Figure("README.md", "student + KD  mlp     98.06%", "digits_kd_sweep.md", ("98.06",)),
    Figure("README.md", "student alone mlp     96.67%", "digits_kd_sweep.md", ("96.67",)),
    Figure("docs/choosing.md", "it gains 1.57 ± 0.16 points over the student alone", "digits_kd_sweep.md"),
    Figure("README.md", "0.96–1.01x for a CNN student, 1.13–1.16x for an MLP student", "overhead.json"),
    Figure(
        "README.md",
        "online KD 113x the CNN-16\n  student alone, cached KD 1.14 ± 0.16x",
        "teacher_cost_cnn.json",
        ("113", "1.14", "0.16"),
    ),
    Figure("README.md", "cached KD\n  1.41 ± 0.16x", "teacher_cost_mlp.json"),
    Figure("README.md", "32 dims ρ 0.901 against\n  0.833", "embed.md"),
    Figure("README.md", "test perplexity 5.14 with KD\n  against 5.29 alone, the teacher 4.13", "lm.md"),
    Figure("README.md", "0.04–0.23x the memory at 0.80–0.99x the time", "lm_loss.md"),
    Figure("README.md", "online-KD epoch 0.98x a hand-written loop", "lm_hf_step.md"),
    Figure("README.md", "0.18x its time per step\n  supervised, 0.37x on-policy", "lm_trl.md"),
    Figure("docs/ssm.md", "| compressed | 9,042 | 32.12 ± 0.07 | 30.85 ± 0.23 | +1.27 ± 0.16 |", "ssm_sar.md"),
    Figure("docs/ssm.md", "| tiny | 1,202 | 23.78 ± 0.75 | 22.44 ± 1.00 | +1.34 ± 0.48 |", "ssm_sar.md"),
    Figure(
        "docs/ssm.md",
        "reaches 32.45 and 32.26 dB on seeds 0 and 1,\nwhere the distilled student has 32.19 and 32.05",
        "ssm_sar.json",
        ("32.45", "32.26", "32.19", "32.05"),
    ),
    Figure("docs/ssm.md", "(32.11 and 31.77 dB on those seeds)", "ssm_sar.json"),
    Figure("docs/choosing.md", "(+0.83 ± 0.25, where the default gives +1.47 ± 0.67)", "methods.md"),
    Figure("docs/choosing.md", "(−1.07 ± 1.19)", "methods.md"),
]


def numbers_in(text: str) -> list[float]:
    return [float(n.replace("−", "-").replace(",", "")) for n in NUMBER.findall(text)]


def matches(quoted: str, values: list[float]) -> bool:
    """Whether some value, rounded as ``quoted`` is written (or as a percentage), reads ``quoted``."""
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    wanted = quoted.replace("−", "-").lstrip("+")
    for value in values:
        for scaled in (value, 100 * value):
            for shown in (f"{scaled:.{decimals}f}", f"{abs(scaled):.{decimals}f}"):
                if shown == wanted.lstrip("-") or shown == wanted:
                    return True
    return False


def problems() -> list[str]:
    found = []
    for fig in FIGURES:
        doc = (ROOT / fig.doc).read_text()
        where = f"{fig.doc}: '{' '.join(fig.passage.split())}'"
        if fig.passage not in doc:
            found.append(f"{where} is no longer in the document (update FIGURES in benchmarks/figures.py)")
            continue
        source = ROOT / RESULTS / fig.source
        if fig.source not in COMMANDS or not source.exists():
            found.append(f"{where}: its source {source} is missing or has no command in COMMANDS")
            continue
        scripts = [ROOT / word for word in COMMANDS[fig.source].split() if word.endswith(".py")]
        if any(not script.exists() for script in scripts):
            found.append(f"{where}: the command for {fig.source} runs a script that does not exist")
        values = numbers_in(source.read_text())
        quoted = fig.numbers or tuple(n for n in NUMBER.findall(fig.passage) if "." in n)
        stale = [q for q in quoted if not matches(q.lstrip("+"), values)]
        if stale:
            found.append(f"{where}: {', '.join(stale)} not in {fig.source} (regenerate: {COMMANDS[fig.source]})")
    return found


def main() -> None:
    found = problems()
    for line in found:
        print(line)
    print(f"{len(FIGURES)} passages checked; {len(found)} problem(s)")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
