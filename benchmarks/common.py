"""What the benchmark scripts share: running a recipe quietly, mean ± std over seeds, and
where they write (``benchmarks/results/<name>.json``, every number, and ``<name>.md``, the
table people read)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import multiprocessing
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from rich.console import Console

import kdforge
from kdforge.callbacks import Callback
from kdforge.files import write_atomic
from kdforge.machine import threads_per_job
from kdforge.processes import exit_on_sigterm
from kdforge.session import Session

# where results are written: the committed folder, or a scratch one (benchmarks/reproduce.py re-runs into one)
RESULTS = Path(os.environ.get("KDFORGE_RESULTS_DIR") or Path(__file__).parent / "results")
ROOT = Path(__file__).resolve().parent.parent


class HandLoop:
    """The fastest training loop written by hand, to time kdforge's against: the session's training and validation
    tensors held in memory in its fastest layout (channels-last for convolutions), sliced into batches; a fused AdamW
    with kdforge's update (no weight decay on biases and norms: one kernel per parameter group) under a cosine
    schedule; validation after every epoch; nothing else. ``teacher(x, index)`` gives the teacher's logits for a
    batch (a frozen model, or a table of cached outputs); then the loss is 0.1 · CE + 0.9 · Hinton KD at
    ``temperature``, otherwise CE alone. ``term="product"`` puts the cheapest term that can read the teacher in
    KD's place, the sum of the student's logits times the teacher's (one product, one sum): what any extra loss
    term costs at the least. ``compiled``: the student's forward and the loss compiled together
    (``torch.compile``), so that the loss's operations fuse with the student's."""

    def __init__(
        self,
        session: Session,
        student: torch.nn.Module,
        teacher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
        epochs: int,
        temperature: float = 4.0,
        term: Literal["kd", "product"] = "kd",
        compiled: bool = False,
    ):
        fmt, optim = session.memory_format, session.recipe.optim
        self.x, self.y = session.data.train.x.contiguous(memory_format=fmt), session.data.train.y
        self.val_x, self.val_y = session.data.val.x.contiguous(memory_format=fmt), session.data.val.y
        self.student, self.teacher = student.to(memory_format=fmt), teacher
        self.temperature, self.term = temperature, term
        self.step_loss = torch.compile(self.loss) if compiled else self.loss
        self.batch = session.recipe.data.batch_size
        steps = math.ceil(len(self.y) / self.batch) * epochs
        groups = [
            {"params": [p for p in self.student.parameters() if p.ndim > 1]},
            {"params": [p for p in self.student.parameters() if p.ndim <= 1], "weight_decay": 0.0},
        ]
        self.opt = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        self.epoch = 0

    def loss(self, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        s_logits = self.student(xb)
        if self.teacher is None:
            return F.cross_entropy(s_logits, yb)
        with torch.no_grad():
            t_logits = self.teacher(xb, idx).float()
        if self.term == "product":
            return F.cross_entropy(s_logits, yb) + (s_logits * t_logits).sum()
        t = self.temperature
        kd = F.kl_div(F.log_softmax(s_logits / t, -1), F.log_softmax(t_logits / t, -1), reduction="batchmean",
                      log_target=True)  # fmt: skip
        return 0.1 * F.cross_entropy(s_logits, yb) + 0.9 * kd * t * t

    def run_epoch(self) -> float:
        """One epoch and its validation, timed (seconds)."""
        start = time.perf_counter()
        self.student.train()
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.epoch))
        for i in range(0, len(self.y), self.batch):
            idx = order[i : i + self.batch]
            loss = self.step_loss(self.x[idx], self.y[idx], idx)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
        self.student.eval()
        with torch.no_grad():
            (self.student(self.val_x).argmax(-1) == self.val_y).float().mean().item()
        self.epoch += 1
        return time.perf_counter() - start


# the thread count of the measured runs where they run in worker processes with their own (worker_pool's one thread,
# job_threads's share of the cores): measured_on records theirs, which a re-run must use to be exact
RUN_THREADS: dict[str, int] = {}


def job_threads(jobs: int) -> int:
    """The threads each of ``jobs`` runs at once gets (the cores shared out between them), recorded for
    :func:`measured_on`."""
    RUN_THREADS["threads"] = threads_per_job(jobs)
    return RUN_THREADS["threads"]


def one_thread_runs() -> None:
    """Say that the measured runs have one thread each (in :func:`worker_pool`'s one-thread workers) before the
    pool starts: a partial run's check of the file it adds to (:func:`refuse_adding`) then compares their machine
    class, not this process's own thread count."""
    RUN_THREADS["threads"] = 1


@contextlib.contextmanager
def worker_pool(workers: int, one_thread: bool = False) -> Iterator[ProcessPoolExecutor]:
    """Spawned worker processes that do not outlive the benchmark: when it is stopped (Ctrl-C, ``kill``, a
    scheduler's SIGTERM) the running workers are terminated, not waited for, and the queued runs dropped. With
    ``one_thread`` each worker runs PyTorch on one thread, so that ``workers`` of them share the cores."""
    if one_thread:
        one_thread_runs()
    pool = ProcessPoolExecutor(
        workers,
        multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads if one_thread else None,
        initargs=(1,) if one_thread else (),
    )
    with exit_on_sigterm():
        try:
            yield pool
        except BaseException:
            workers_now = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on them
            pool.shutdown(wait=False, cancel_futures=True)
            for process in workers_now:
                process.terminate()
            raise
        pool.shutdown()


def teacher_first(
    pool: Executor, work: Callable[[Any], Any], jobs: list, key: Callable[[Any], Any]
) -> Iterator[tuple[Any, Any]]:
    """``work(job)`` for every job in ``pool``, yielding (job, result) as each finishes. The first job of each key (a
    seed, say) trains the teacher the others of that key reuse, so it runs before them, and they are queued as soon
    as it is done: the other keys' first jobs keep the workers busy meanwhile, with no barrier between them."""
    firsts: dict[Any, int] = {}
    for at, job in enumerate(jobs):
        firsts.setdefault(key(job), at)
    pending = {pool.submit(work, jobs[at]): at for at in firsts.values()}
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            at = pending.pop(future)
            if firsts[key(jobs[at])] == at:  # its teacher is there: the rest of its key
                others = [i for i, job in enumerate(jobs) if key(job) == key(jobs[at]) and i != at]
                pending.update({pool.submit(work, jobs[i]): i for i in others})
            yield jobs[at], future.result()


def run_quietly(raw: dict | kdforge.Recipe, resume: bool = False) -> kdforge.RunResult:
    """Run a recipe (a dict, or one built), its console output discarded; with ``resume``, a finished run of the same
    recipe in its log folder is taken as it is and a stopped one continued from its last.pt (a stopped benchmark
    given that folder again goes on where each run stopped)."""
    recipe = raw if isinstance(raw, kdforge.Recipe) else kdforge.Recipe.from_dict(raw)
    finished, stopped = earlier_runs(recipe) if resume else (None, None)
    return finished or kdforge.run(recipe, resume=stopped, console=Console(file=io.StringIO()))


def earlier_runs(recipe: kdforge.Recipe) -> tuple[kdforge.RunResult | None, Path | None]:
    """A finished run of ``recipe`` in its log folder, measured on this machine class (another's, with AVX2 kernels
    forced say, would be another measurement), else the folder of a stopped one that saved a last.pt (its
    student's, or its teacher's fit's: stopped while the teacher fitted)."""
    from kdforge.files import read_json
    from kdforge.machine import machine_class, where_measured
    from kdforge.runner import load_run_recipe

    here, stopped = where_measured()["machine_class"], None
    for run_dir in sorted(Path(recipe.log.dir).glob(f"{recipe.name}-*")):
        if not (run_dir / "config.yaml").is_file() or load_run_recipe(run_dir).to_dict() != recipe.to_dict():
            continue
        if (run_dir / "results.json").is_file():
            results = read_json(run_dir / "results.json", "run results")
            if machine_class(results.get("measured_on", {})) == here:
                return kdforge.RunResult(run_dir, results), None
            continue
        if (run_dir / "last.pt").is_file() or (run_dir / "teacher" / "last.pt").is_file():
            stopped = run_dir
    return None, stopped


class Intervals:
    """Step times as the intervals between consecutive step ends within an epoch: whole steps, the batch's
    loading included (on a GPU, until the device has done them); an epoch's end (its validation pass) is no
    step."""

    def __init__(self):
        self.times: list[float] = []
        self.last: float | None = None
        self.peak_bytes = 0  # on a GPU: the most memory allocated up to a step's end (evaluations after excluded)

    def tick(self) -> None:
        if torch.cuda.is_initialized():  # the device's work is asynchronous: a step ends when it is done
            torch.cuda.synchronize()
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated())
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now

    def reset(self) -> None:
        self.last = None


class Ticking(Callback):
    """Ticks ``intervals`` at each step's end; a new epoch starts a new run of intervals."""

    def __init__(self, intervals: Intervals):
        self.intervals = intervals

    def on_step_end(self, trainer, samples) -> None:
        self.intervals.tick()

    def on_epoch_end(self, trainer, record) -> None:
        self.intervals.reset()


def run_timed(raw: dict) -> tuple[kdforge.RunResult, Intervals]:
    """:func:`run_quietly`, and the time of each training step after the first of each epoch (``.times``)."""
    intervals = Intervals()
    callbacks = Session.callbacks
    Session.callbacks = lambda self: [*callbacks(self), Ticking(intervals)]  # type: ignore[method-assign]
    try:
        return run_quietly(raw), intervals
    finally:
        Session.callbacks = callbacks  # type: ignore[method-assign]


def paired(
    variants: dict, batch: int, rounds: int, seconds: float = 0.2, slice_s: float = 0.01, timers: dict | None = None
) -> dict[str, float]:
    """Median samples/s of each variant, and the median per-round ratio of each to the first, with the standard
    deviation of those ratios over the rounds (``<ratio>_std``: the spread a re-run elsewhere may move the ratio by).
    Within a round the variants take turns in slices of ``slice_s`` until each has run ``seconds``, so that a burst of
    load on this shared machine falls on all of them alike; the order of the turns alternates from round to round.
    ``timers`` (variant: an object whose ``seconds`` a variant's calls add to, as ``tm.py``'s ``ClauseTime``): also
    the milliseconds per call those add, and the median per-round ratio of that time to the first variant's."""
    timers = timers or {}
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    inner: dict[str, list[float]] = {name: [] for name in timers}
    for fn in variants.values():
        fn()  # warm-up
    for r in range(rounds):
        names = list(variants)[:: 1 if r % 2 == 0 else -1]
        spent, runs = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
        for timer in timers.values():
            timer.seconds = 0.0
        while min(spent.values()) < seconds:
            for name in names:
                start = time.perf_counter()
                while (elapsed := time.perf_counter() - start) < slice_s:
                    variants[name]()
                    runs[name] += 1
                spent[name] += elapsed
        for name in names:
            speeds[name].append(runs[name] * batch / spent[name])
        for name, timer in timers.items():
            inner[name].append(timer.seconds / runs[name])
    first = next(iter(variants))
    out = {f"{name}_samples_per_s": statistics.median(v) for name, v in speeds.items()}

    def ratio(key: str, ratios: list[float]) -> None:
        out[key] = statistics.median(ratios)
        out[f"{key}_std"] = statistics.stdev(ratios) if len(ratios) > 1 else 0.0

    for name in list(variants)[1:]:
        ratio(f"{name}_over_{first}", [a / b for a, b in zip(speeds[name], speeds[first])])
    for name, times in inner.items():
        out[f"{name}_clause_ms"] = 1e3 * statistics.median(times)
        ratio(f"{name}_clause_over_{first}", [a / b for a, b in zip(inner[first], times)])
    return out


def mean_std(values: list[float], digits: int = 2) -> str:
    """'mean ± std' over seeds (the value alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def write_text(path: Path, text: str) -> None:
    """``text`` as the whole of ``path``, written atomically: a run stopped mid-write leaves the old file whole."""
    write_atomic(path, lambda handle: handle.write(text.encode()))


def rendered(table: Any, command: str) -> str:
    """A rich table as a results file shows it: its plain text in a code block, then the command that made it."""
    console = Console(record=True, width=110, file=io.StringIO())
    console.print(table)
    return f"```\n{console.export_text()}```\n\n`{command}`\n"


def results_path(name: str, suffix: str) -> Path:
    """The results file <name><suffix>; with kernels forced by ``ATEN_CPU_CAPABILITY`` (``avx2``, say),
    <name>_avx2<suffix>: what a run so measured writes, and reads back to go on, lies beside the results of the
    machine's own kernels, never over them."""
    forced = forced_kernels()
    return RESULTS / (f"{name}_{forced}{suffix}" if forced and not name.endswith(f"_{forced}") else f"{name}{suffix}")


def forced_kernels() -> str:
    """The CPU kernels ``ATEN_CPU_CAPABILITY`` forces (``avx2``, say), or "" for the machine's own."""
    return os.environ.get("ATEN_CPU_CAPABILITY", "").lower()


def earlier_results(name: str, to_do: str) -> dict:
    """The results file ``name`` (:func:`results_path`) that a partial run adds to, or one message saying which
    run must come first: with forced kernels, that file's own run with them."""
    path = results_path(name, ".json")
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: {to_do} adds to it, so run the benchmark whole first")
    found = json.loads(path.read_text())
    refuse_adding(found, path)  # stop now, not when the file is written
    return found


def save(name: str, out: dict, text: str) -> None:
    """Write ``out`` as <name>.json (with where it was measured: :func:`measured_on`) and ``text`` as <name>.md
    (each atomically, named by :func:`results_path`), and print the text."""
    write_json(results_path(name, ".json"), out)
    write_text(results_path(name, ".md"), text)
    print(text)


def write_json(path: Path, out: dict) -> None:
    """``out`` as the JSON file ``path`` (atomically), with ``measured_on``: every results file says where it was
    measured and by which command, which ``benchmarks/reproduce.py`` re-runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    where = measured_on(adds_to=out.get("measured_on"), path=path)
    write_text(path, json.dumps({**out, "measured_on": where}, indent=2) + "\n")


def measured_on(adds_to: dict | None = None, path: Path | None = None) -> dict:
    """This machine and libraries (:func:`kdforge.machine.where_measured`), the commit and the command. ``adds_to``:
    the ``measured_on`` of the results file ``path`` that this run adds to (a partial run, or one of another
    learning rate or recipe): the earlier commands come first, separated by "; ", so that running them in turn
    rebuilds the file; and a run on another machine class than the file's stops here, rather than mix the two."""
    from kdforge.machine import where_measured

    here = {**where_measured(RUN_THREADS.get("threads")), "commit": commit(), "command": command()}
    if adds_to:
        refuse_mixing(adds_to, path, here["machine_class"])
        earlier = [c for c in (adds_to.get("command") or "").split("; ") if c]
        here["command"] = "; ".join(earlier + [here["command"]] * (here["command"] not in earlier))
    return here


def refuse_mixing(adds_to: dict | None, path: Path | None, here: str | None = None) -> None:
    """Stop a run that would add to results measured on another machine class (``adds_to``: the ``measured_on`` of
    the file ``path``; ``here``: this machine's class, where the caller has it), before it trains anything where it
    can: one file, one machine class."""
    from kdforge.machine import machine_class, where_measured

    there = machine_class(adds_to or {})
    if there is None:
        return
    here = here or where_measured(RUN_THREADS.get("threads"))["machine_class"]
    if there != here:
        raise SystemExit(
            f"{path or 'the results file'} was measured on {there}, this machine is {here}: adding to it would mix "
            "the two. Run the whole benchmark here, or move the file aside first."
        )


def refuse_adding(found: dict, path: Path) -> None:
    """Stop a run that would add to the results ``found`` in ``path`` measured on another machine class, or written
    before results files said where they were measured (nothing tells whose machine they came from)."""
    if "measured_on" not in found:
        raise SystemExit(
            f"{path} does not say where it was measured (it was written before results files did): adding to it "
            "would mix machines without saying so. Run the whole benchmark here, or move the file aside first."
        )
    refuse_mixing(found["measured_on"], path)


def going_on_from(found: dict) -> dict:
    """The ``measured_on`` of results a run adds to, to put in what it writes, which :func:`write_json` goes on
    from; {} where they record none."""
    return {"measured_on": found["measured_on"]} if "measured_on" in found else {}


def command() -> str:
    """The command this process runs, as a user types it (with any ``ATEN_CPU_CAPABILITY`` it runs under)."""
    script = Path(sys.argv[0]).resolve()
    where = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    forced = [f"ATEN_CPU_CAPABILITY={os.environ['ATEN_CPU_CAPABILITY']}"] if "ATEN_CPU_CAPABILITY" in os.environ else []
    return " ".join([*forced, shlex.join(["uv", "run", "python", str(where), *sys.argv[1:]])])


def commit() -> str:
    """The checkout's commit, marked when its tracked files differ from it; results files and Markdown aside: they
    change no number, and benchmarks write them (``methods.py`` rewrites docs/choosing.md's table)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    # -z: paths unquoted (a space or an accent makes `git status` quote them); both sides of a rename
    paths = git("diff", "HEAD", "--name-only", "--no-renames", "-z").split("\0")
    changed = [
        path for path in paths if path and not path.startswith("benchmarks/results/") and not path.endswith(".md")
    ]
    return f"{head} with uncommitted changes" if changed else head
