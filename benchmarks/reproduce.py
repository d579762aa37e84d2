"""Re-run the command that wrote a results file, from a clean checkout, and compare the two cell by cell.

The commands come from the file (``measured_on.command``, which every results file records: several, separated by
"; ", where later runs added to the file, and they run in turn) or, for files
written before that and for a ``kdforge sweep``'s ``sweep.json`` copied here, from ``benchmarks/figures.py``'s
list. It runs in a clean checkout of ``--at`` (default: HEAD; the
committed code, not the working tree's changes) with its results written to a scratch folder, never over the
committed file. Then every number of the committed file is compared with the re-run's:

- **exact** where both were measured on the same machine class (the CPU model, PyTorch's CPU capability, the thread
  count and the GPU: :func:`kdforge.machine.machine_class`): on one machine class the runs are deterministic, so any
  difference is a change;
- **within the spread the file states** otherwise: a value with a standard deviation beside it (``x`` and
  ``x_std``, ``mean`` and ``std``) may move by that much, and a list of per-seed values may move its mean by their
  standard deviation; a value without a spread is not compared, and the summary says how many.

Times, memory and rates (``*_s``, ``*minutes*``, ``*ratio*``, ``*_over_*``, ``*peak*``, ``*_kb``, ``*per_s*`` ...,
and whatever the file lists under ``timings``) move from run to run on any machine: they are compared within their
spread where one is stated, never exactly.

    uv run python benchmarks/reproduce.py benchmarks/results/methods_seeds.json [--at COMMIT] [--keep]

Exit status 1 when a compared cell differs, 2 when the file cannot be re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# keys whose values are measured times, memory or rates: never deterministic
TIMED = re.compile(
    r"(^|_)(s|ms|us|seconds?|minutes?|time|times|wall|latency|wait|per_s|peak|bytes|kb|mb|gb|gib|rate|ratios?|speed"
    r"|speedup|throughput|over)(_|$)"  # "over": a's speed or time over b's, as packed_over_float
)
Path_ = tuple[str | int, ...]


@dataclass
class Comparison:
    """The outcome, cell by cell."""

    exact: bool  # same machine class: deterministic cells must be equal
    equal: list[str] = field(default_factory=list)
    within: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)
    uncompared: list[str] = field(default_factory=list)

    def summary(self) -> str:
        how = (
            "exactly (same machine class)"
            if self.exact
            else "within each value's stated spread (another machine class)"
        )
        lines = [
            f"compared {how}: {len(self.equal)} equal, {len(self.within)} within their spread, "
            f"{len(self.differ)} differ; {len(self.uncompared)} not compared (no spread stated)"
        ]
        lines += [f"  differs: {cell}" for cell in self.differ]
        return "\n".join(lines)


def numbers(obj: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every number of a results file and every list of numbers, with its path (``measured_on`` left out)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key not in ("measured_on", "timings"):
                yield from numbers(value, (*path, key))
    elif isinstance(obj, list):
        if len(obj) > 1 and all(_is_number(v) for v in obj):
            yield path, obj
        else:
            for i, value in enumerate(obj):
                yield from numbers(value, (*path, i))
    elif _is_number(obj):
        yield path, obj


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def stated_spread(committed: dict, path: Path_) -> float | None:
    """The standard deviation the file states for the value at ``path``: ``x_std`` beside ``x`` or ``x_mean``, or
    ``std`` beside ``mean``."""
    if not path or not isinstance(path[-1], str):
        return None
    parent: Any = committed
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    for name in (f"{key}_std", f"{key.removesuffix('_mean')}_std", "std" if key == "mean" else ""):
        if name and _is_number(parent.get(name)):
            return float(parent[name])
    return None


def compare(committed: dict, rerun: dict) -> Comparison:
    from kdforge.machine import machine_class

    mine, theirs = committed.get("measured_on", {}), rerun.get("measured_on", {})
    same = same_class(mine, machine_class(theirs))
    out = Comparison(exact=same)
    found = dict(numbers(rerun))
    listed = set(committed.get("timings", []))  # keys the file names as measured times, whatever their names
    for path, old in numbers(committed):
        name = "/".join(map(str, path))
        new = found.get(path)
        if new is None or isinstance(new, list) != isinstance(old, list):
            out.differ.append(f"{name}: {old} committed, {'nothing' if new is None else new} re-run")
            continue
        timed = any(isinstance(k, str) and (k in listed or TIMED.search(k.lower())) for k in path)
        if same and not timed:
            (out.equal if new == old else out.differ).append(f"{name}: {old} committed, {new} re-run")
            continue
        if isinstance(old, list):  # per-seed values: the mean may move by their standard deviation
            spread, old, new = statistics.stdev(old), statistics.mean(old), statistics.mean(new)
        else:
            spread = stated_spread(committed, path)
        if spread is None:
            out.uncompared.append(name)
        elif math.isclose(old, new) or abs(new - old) <= spread:
            out.within.append(f"{name}: {old:.6g} committed, {new:.6g} re-run, spread {spread:.3g}")
        else:
            out.differ.append(f"{name}: {old:.6g} committed, {new:.6g} re-run, beyond its spread {spread:.3g}")
    return out


def same_class(measured_on: dict, here: str | None) -> bool:
    """Whether results ``measured_on`` so were measured on the machine class ``here``. A record that does not say the
    CPU's own level (written before records did) and whose command forced the kernels (``ATEN_CPU_CAPABILITY``) may
    come from a CPU of a higher level, whose BLAS rounds otherwise: the TM ablation's six seeds forced to AVX2 on an
    AVX-512 EPYC came back different in every cell on an AVX2 EPYC. Such a record is of no class but its own."""
    from kdforge.machine import machine_class

    there = machine_class(measured_on)
    forced = "ATEN_CPU_CAPABILITY=" in (measured_on.get("command") or "")
    return there is not None and there == here and not (forced and "cpu_own_capability" not in measured_on)


def seed_agrees(committed: dict, values: list[float], seed: int, value: float) -> str | None:
    """One seed re-run here against ``values``, a committed file's per-seed list: None when it agrees under the rule
    (equal where the file was measured on this machine class, else within the seeds' standard deviation), else
    what differs and by which comparison."""
    from kdforge.machine import where_measured

    here = where_measured()["machine_class"]
    old = values[seed]
    if same_class(committed.get("measured_on", {}), here):
        return None if value == old else f"{value} here against {old} committed, on the same machine class ({here})"
    spread = statistics.stdev(values)
    if abs(value - old) <= spread:
        return None
    return f"{value} here against {old} committed, beyond the seeds' spread {spread:.3g} (another machine class)"


@dataclass
class Command:
    """How to re-run a results file here: the arguments for this interpreter, the environment it sets, and whether
    it is a ``kdforge sweep`` (whose ``sweep.json`` is the results file)."""

    args: list[str]
    env: dict[str, str]
    sweep: bool = False


def commands_of(path: Path, committed: dict) -> list[Command]:
    """The commands that wrote ``path``, to run in turn (a file that later runs added to records theirs after the
    first, separated by "; "): benchmark scripts, or a ``kdforge sweep`` whose sweep.json was copied here (with the
    environment each sets first, e.g. ``ATEN_CPU_CAPABILITY=avx2``)."""
    text = committed.get("measured_on", {}).get("command")
    if text is None:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from figures import COMMANDS

        text = COMMANDS.get(path.name) or COMMANDS.get(path.with_suffix(".md").name)
    # a note in brackets at the end: what to do by hand, or where it must run (not a bracket in a quoted argument)
    noted = re.fullmatch(r"(.*?) \(([^'\"]*)\)", text or "", re.DOTALL)
    command, note = noted.groups() if noted else (text or "", "")
    try:
        found = [_command(part, note) for part in command.split("; ")]
    except ValueError as error:  # shlex: an unclosed quotation
        raise Unreproducible(f"{path}: its command does not parse ({error}): {text}") from None
    if None in found or (len(found) > 1 and any(c.sweep for c in found if c)):
        raise Unreproducible(f"{path}: no command that re-runs it here ({text or 'none recorded'}); run it by hand")
    return [c for c in found if c]


def _command(text: str, note: str) -> Command | None:
    words = shlex.split(text)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if words[:3] == ["uv", "run", "python"] and not note:
        return Command([sys.executable, *words[3:]], env)
    if words[:4] == ["uv", "run", "kdforge", "sweep"]:  # its note says to copy the sweep's files here
        return Command([sys.executable, "-m", "kdforge", *words[3:]], env, sweep=True)
    return None


class Unreproducible(Exception):
    """A results file that cannot be re-run or read: one message, naming it."""


RUN_FOLDERS = ("--runs", "--root")  # where a benchmark keeps its runs, and finds them again to go on


def in_scratch(args: list[str], scratch: Path) -> list[str]:
    """``args`` with each folder of runs the command names moved under ``scratch``: given the recorded folder, a
    re-run on the machine that wrote the file would take its finished runs as they are, and re-run nothing."""
    moved = []
    for before, arg in zip(["", *args], args):
        option, equals, _ = arg.partition("=")
        if before in RUN_FOLDERS:
            arg = str(scratch / before.lstrip("-"))
        elif option in RUN_FOLDERS and equals:
            arg = f"{option}={scratch / option.lstrip('-')}"
        moved.append(arg)
    return moved


def rerun(path: Path, at: str, scratch: Path, repo: Path = ROOT) -> dict:
    """Run the file's command in a clean checkout of ``repo`` at ``at`` under ``scratch``; the re-written file."""
    committed = read_json(path)
    commands = commands_of(path, committed)
    checkout, results = scratch / "checkout", scratch / "results"
    added = subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(checkout), at], cwd=repo, capture_output=True, text=True
    )
    if added.returncode:
        raise Unreproducible(f"no clean checkout of {at}: {added.stderr.strip()}")
    try:
        for command in commands:  # each after the one before, adding to what it wrote
            args = [*command.args, f"log.dir={results}"] if command.sweep else in_scratch(command.args, scratch)
            env = {
                **os.environ,
                **command.env,
                "KDFORGE_RESULTS_DIR": str(results),
                "PYTHONPATH": os.pathsep.join([str(checkout / "src"), str(checkout / "benchmarks")]),
            }
            print(f"re-running in a clean checkout of {at}: {shlex.join(args[1:])}", flush=True)
            if subprocess.run(args, cwd=checkout, env=env).returncode:
                raise Unreproducible(f"{path}: its command failed in the clean checkout: {shlex.join(args[1:])}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=repo, capture_output=True)
    sweep = commands[0].sweep
    written = next(results.glob("*-sweep-*/sweep.json"), results) if sweep else results / path.name
    if not written.is_file():
        wrote = sorted(p.name for p in results.glob("*")) if results.is_dir() else []
        raise Unreproducible(f"{path}: its command ran but wrote no {path.name} (it wrote {wrote or 'nothing'})")
    return read_json(written)


def read_json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise Unreproducible(f"{path}: not a results file that can be read ({err})") from None
    if not isinstance(found, dict):
        raise Unreproducible(f"{path}: not a results file (a JSON object expected)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="a results file, benchmarks/results/<name>.json")
    parser.add_argument("--at", default="HEAD", help="the commit whose code re-runs it (default: HEAD)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kdforge-reproduce-"))
    try:
        result = compare(read_json(args.file), rerun(args.file.resolve(), args.at, scratch))
    except Unreproducible as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    finally:
        if args.keep:
            print(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(result.summary())
    sys.exit(1 if result.differ else 0)


if __name__ == "__main__":
    main()
