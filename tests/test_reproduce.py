"""benchmarks/reproduce.py: a results file re-run from a clean checkout and compared cell by cell, exactly on the
machine class that wrote it, within the spread it states elsewhere; and every results file says where it was
measured (benchmarks/common.py's write_json)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchscripts import BENCHMARKS, load


@pytest.fixture(scope="module")
def reproduce():
    return load("reproduce")


def on(machine_class, **cells):
    return {**cells, "measured_on": {"machine_class": machine_class, "command": "uv run python benchmarks/x.py"}}


def test_on_the_same_machine_class_every_deterministic_cell_must_be_equal(reproduce):
    gain = {"mean": 1.5, "std": 0.2}
    committed = on("AVX2, 2 threads", accuracy=[90.1, 91.2, 89.9], gain=gain, step_s=0.51)
    same = reproduce.compare(committed, on("AVX2, 2 threads", accuracy=[90.1, 91.2, 89.9], gain=gain, step_s=0.58))
    assert same.exact and not same.differ and len(same.equal) == 3  # the time is no cell to match exactly
    moved = reproduce.compare(committed, on("AVX2, 2 threads", accuracy=[90.1, 91.3, 89.9], gain=gain, step_s=0.51))
    assert moved.differ == ["accuracy: [90.1, 91.2, 89.9] committed, [90.1, 91.3, 89.9] re-run"]


def test_elsewhere_values_may_move_within_the_spread_they_state(reproduce):
    committed = on("AVX512, 2 threads", accuracy=[90.0, 92.0, 91.0], gain={"mean": 1.5, "std": 0.2}, loss=0.3)
    rerun = on("AVX2, 2 threads", accuracy=[91.5, 91.0, 91.5], gain={"mean": 1.6, "std": 0.1}, loss=0.31)
    near = reproduce.compare(committed, rerun)
    assert not near.exact and not near.differ and len(near.within) == 2 and near.uncompared == ["gain/std", "loss"]
    rerun = on("AVX2, 2 threads", accuracy=[93.0, 94.0, 93.5], gain={"mean": 1.1, "std": 0.1}, loss=0.31)
    far = reproduce.compare(committed, rerun)
    assert [cell.split(":")[0] for cell in far.differ] == ["accuracy", "gain/mean"]
    assert "compared within each value's stated spread (another machine class): 0 equal" in far.summary()


def test_a_file_may_name_the_keys_that_hold_times(reproduce):
    committed = {**on("AVX2, 1 threads", pairs=[{"plain": 0.2}], loss=1.0), "timings": ["pairs"]}
    found = reproduce.compare(committed, on("AVX2, 1 threads", pairs=[{"plain": 0.3}], loss=1.0))
    assert not found.differ and found.uncompared == ["pairs/0/plain"] and len(found.equal) == 1


def test_speed_ratios_minutes_and_memory_are_never_compared_exactly(reproduce):
    """On the machine that wrote them they still move: a ratio of speeds (a_over_b), a run's minutes, a microsecond
    latency, a peak in kB; compared within the spread stated beside them (the per-round std of a paired ratio)."""
    times = {"packed_over_float": 8.6, "packed_over_float_std": 0.9, "minutes": 74.0, "hard_us": 51, "hwm_kb": 9e5}
    moved = {"packed_over_float": 9.1, "packed_over_float_std": 1.1, "minutes": 80.0, "hard_us": 48, "hwm_kb": 8e5}
    here = "AVX2, 2 threads"
    found = reproduce.compare(on(here, accuracy=0.9, **times), on(here, accuracy=0.9, **moved))
    assert not found.differ and found.equal == ["accuracy: 0.9 committed, 0.9 re-run"]
    assert [cell.split(":")[0] for cell in found.within] == ["packed_over_float"]
    far = reproduce.compare(on(here, **times), on(here, **{**moved, "packed_over_float": 12}))
    assert [cell.split(":")[0] for cell in far.differ] == ["packed_over_float"]


def test_a_paired_speed_ratio_comes_with_its_spread_over_the_rounds(reproduce, monkeypatch):
    monkeypatch.setitem(sys.modules, "common", None)
    speeds = load("common").paired({"a": lambda: sum(range(200)), "b": lambda: sum(range(400))}, 1, 3, seconds=0.02)
    assert speeds["b_over_a"] > 0 and speeds["b_over_a_std"] >= 0
    assert reproduce.stated_spread(speeds, ("b_over_a",)) == speeds["b_over_a_std"]


def test_tm_s_int8_over_float32_ratios_come_with_their_spread(reproduce, monkeypatch):
    """tm.py packed's side figure (PyTorch's int8 products over float32 ones) states the spread reproduce.py compares
    it within; with no int8 kernel it is empty."""
    monkeypatch.setitem(sys.modules, "common", None)
    monkeypatch.setitem(sys.modules, "tm_speed", None)
    load("common")  # what tm_speed imports
    from kdforge.families.tm.rules import has_int8_kernel

    ratios = load("tm_speed").int8_against_float32(rounds=2)
    assert sorted(ratios) == (["rows 16", "rows 16_std", "rows 256", "rows 256_std"] if has_int8_kernel() else [])
    for rows in ("rows 16", "rows 256") if ratios else ():
        assert ratios[rows] > 0
        assert reproduce.stated_spread({"products": ratios}, ("products", rows)) == ratios[f"{rows}_std"]


def test_a_cell_the_rerun_lacks_differs(reproduce):
    found = reproduce.compare(on("AVX2, 1 threads", a=1, b=2), on("AVX2, 1 threads", a=1))
    assert found.differ == ["b: 2 committed, nothing re-run"]


def test_a_file_is_rerun_from_a_clean_checkout_into_a_scratch_folder(reproduce, tmp_path):
    """The command recorded in the file runs on the committed code (not the working tree's change) and writes into
    the scratch folder, never over the committed file."""
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    script = repo / "benchmarks" / "count.py"
    script.write_text(
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "out = Path(os.environ['KDFORGE_RESULTS_DIR']); out.mkdir(parents=True, exist_ok=True)\n"
        "n = int(sys.argv[2])\n"
        "cells = {'values': [i * 0.5 for i in range(n)], 'measured_on': {'machine_class': 'here'}}\n"
        "(out / 'count.json').write_text(json.dumps(cells))\n"
    )
    committed = repo / "benchmarks" / "results" / "count.json"
    record = {"machine_class": "here", "command": "uv run python benchmarks/count.py --n 3"}
    committed.write_text(json.dumps({"values": [0.0, 0.5, 1.0], "measured_on": record}))
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    script.write_text("raise SystemExit('the working tree, not the commit')\n")  # uncommitted: not what re-runs
    found = reproduce.compare(
        json.loads(committed.read_text()), reproduce.rerun(committed, "HEAD", tmp_path / "s", repo)
    )
    assert found.exact and found.equal == ["values: [0.0, 0.5, 1.0] committed, [0.0, 0.5, 1.0] re-run"]
    assert json.loads(committed.read_text())["values"] == [0.0, 0.5, 1.0] and not (tmp_path / "s" / "checkout").exists()
    record["command"] = "uv run python benchmarks/count.py --n 4"  # another command: one more value, a changed cell
    committed.write_text(json.dumps({"values": [0.0, 0.5, 1.0], "measured_on": record}))
    rerun = reproduce.rerun(committed, "HEAD", tmp_path / "t", repo)
    assert reproduce.compare(json.loads(committed.read_text()), rerun).differ
    record["command"] = "uv run python benchmarks/count.py --n 3 (on a GPU)"
    committed.write_text(json.dumps({"values": [0.0], "measured_on": record}))
    with pytest.raises(reproduce.Unreproducible, match="no command that re-runs it here"):
        reproduce.rerun(committed, "HEAD", tmp_path / "u", repo)


def test_every_results_file_written_says_where_and_how_it_was_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("KDFORGE_RESULTS_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "common", None)  # put back as it was after the test
    common = load("common")
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "lm_loss.py"), "--rounds", "1"])
    common.save("x", {"cells": [1, 2]}, "text")
    written = json.loads((tmp_path / "x.json").read_text())["measured_on"]
    assert written["command"] == "uv run python benchmarks/lm_loss.py --rounds 1"
    assert {"machine_class", "cpu", "cpu_capability", "threads", "gpu", "torch", "numpy", "commit"} <= set(written)
    assert written["machine_class"].startswith(f"{written['cpu']}, {written['cpu_capability']}, ")
    assert len(written["commit"]) >= 40


def test_the_recorded_commit_is_marked_changed_by_code_not_by_the_results_and_docs_benchmarks_write(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "common", None)  # put back as it was after the test
    common = load("common")
    monkeypatch.setattr(common, "ROOT", tmp_path)
    files = {
        "src/code.py": "x = 1\n",
        "docs/choosing.md": "table\n",
        "docs/a näive name.md": "text\n",  # git status would quote this path
        "benchmarks/results/r.json": "{}\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=k", "-c", "user.email=k@k"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run([*git, *args], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "docs/choosing.md").write_text("the table a benchmark rewrote\n")
    (tmp_path / "benchmarks/results/r.json").write_text('{"new": 1}\n')
    (tmp_path / "docs/a näive name.md").write_text("more text\n")
    assert common.commit() == head
    subprocess.run([*git, "mv", "src/code.py", "src/renamed.md"], check=True)  # code gone is a change too
    assert common.commit() == f"{head} with uncommitted changes"
    subprocess.run([*git, "mv", "src/renamed.md", "src/code.py"], check=True)
    (tmp_path / "src/code.py").write_text("x = 2\n")
    assert common.commit() == f"{head} with uncommitted changes"


def test_one_seed_rerun_here_agrees_exactly_on_this_machine_class_else_within_the_seeds_spread(reproduce):
    from kdforge.machine import where_measured

    values = [0.90, 0.92, 0.94]
    here = {"measured_on": where_measured()}
    assert reproduce.seed_agrees(here, values, 1, 0.92) is None
    assert "on the same machine class" in reproduce.seed_agrees(here, values, 1, 0.921)
    elsewhere = {"measured_on": {"machine_class": "another"}}
    assert reproduce.seed_agrees(elsewhere, values, 1, 0.935) is None  # the seeds' spread is 0.02
    assert "beyond the seeds' spread" in reproduce.seed_agrees(elsewhere, values, 1, 0.95)


def test_the_machine_class_is_the_cpu_model_its_kernels_threads_and_gpu_from_the_records_own_fields(reproduce):
    """An AMD and an Intel CPU with AVX-512 kernels are two classes (oneDNN rounds differently on them): compared
    within the spread, not exactly. A record without those fields is of the class it states."""
    from kdforge.machine import machine_class

    amd = {"machine_class": "AVX512, 2 threads", "cpu": "AMD EPYC", "cpu_capability": "AVX512", "threads": 2}
    intel = {**amd, "cpu": "Intel(R) Xeon(R) Processor"}
    assert machine_class(amd) == "AMD EPYC, AVX512, 2 threads" != machine_class(intel)
    assert machine_class({**amd, "gpu": "NVIDIA H200"}) == "AMD EPYC, AVX512, 2 threads, NVIDIA H200"
    assert machine_class({"machine_class": "here"}) == "here" and machine_class({}) is None
    committed = {"accuracy": [90.0, 92.0], "measured_on": amd}
    assert not reproduce.compare(committed, {"accuracy": [90.0, 92.0], "measured_on": intel}).exact
    assert reproduce.compare(committed, {"accuracy": [90.0, 92.0], "measured_on": dict(amd)}).exact


def test_kernels_forced_below_the_cpus_own_level_are_a_class_of_their_own(reproduce):
    """MKL follows the CPU, not ATEN_CPU_CAPABILITY: AVX2 kernels on an AVX-512 CPU and on an AVX2 CPU round
    differently, so their classes differ; a forced record that predates the CPU's own level is compared within its
    spread, and one that states it exactly on its class."""
    from kdforge.machine import machine_class, where_measured

    native = {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "cpu_own_capability": "AVX2", "threads": 1}
    forced = {**native, "cpu_own_capability": "AVX512"}
    assert machine_class(native) == "AMD EPYC, AVX2, 1 threads"
    assert machine_class(forced) == "AMD EPYC, AVX2 on an AVX512 CPU, 1 threads"
    here = where_measured()
    assert here["cpu_own_capability"] in (None, "AVX512", "AVX2", "DEFAULT")
    command = {"command": "ATEN_CPU_CAPABILITY=avx2 uv run python benchmarks/tm.py ablation"}
    old = {key: value for key, value in native.items() if key != "cpu_own_capability"} | command
    committed = {"accuracy": [90.0, 92.0], "measured_on": old}
    assert not reproduce.compare(committed, {"accuracy": [90.0, 92.0], "measured_on": native}).exact
    stated = {"accuracy": [90.0, 92.0], "measured_on": native | command}
    assert reproduce.compare(stated, {"accuracy": [90.0, 92.0], "measured_on": native}).exact
    assert reproduce.seed_agrees({"measured_on": old}, [0.90, 0.92, 0.94], 1, 0.921) is None  # within the spread


def test_a_file_whose_runs_ran_in_workers_records_their_thread_count_not_the_main_processs(monkeypatch):
    """The drift tests and reproduce.py re-run a cell at the thread count the file records: runs in one-thread
    workers (or the cores shared out between jobs) must be recorded as such to be compared exactly."""
    import os

    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    assert common.measured_on()["threads"] == torch.get_num_threads()
    with common.worker_pool(1, one_thread=True):
        pass
    assert common.measured_on()["threads"] == 1 and ", 1 threads" in common.measured_on()["machine_class"]
    assert common.job_threads(1) == (os.cpu_count() or 1) == common.measured_on()["threads"]


def test_a_rerun_keeps_its_runs_in_the_scratch_folder_not_in_the_recorded_one_it_would_resume_from(reproduce):
    scratch = Path("/scratch")
    args = ["python", "benchmarks/encoders.py", "--runs", "/work/runs/encoders", "--seeds", "0", "--root=/data"]
    assert reproduce.in_scratch(args, scratch) == [
        "python", "benchmarks/encoders.py", "--runs", "/scratch/runs", "--seeds", "0", "--root=/scratch/root"
    ]  # fmt: skip


def test_a_sweeps_command_and_the_environment_it_needs_come_from_the_figures_list(reproduce):
    """sweep.json files are written by kdforge sweep and copied here: figures.py's list says how, ATEN_CPU_CAPABILITY
    included; a line of several commands runs them in turn; one that must run elsewhere is left to be run by hand."""
    [command] = reproduce.commands_of(Path("digits_kd_sweep_avx2.json"), {})
    assert command.sweep and command.env == {"ATEN_CPU_CAPABILITY": "avx2"}
    assert command.args[1:] == ["-m", "kdforge", "sweep", "digits_kd", "--seeds", "10"]
    run, tune = reproduce.commands_of(Path("methods.md"), {})
    assert run.args[1:] == ["benchmarks/methods.py", "run"] and tune.args[2:] == ["tune", "--trial-seeds", "2"]
    with pytest.raises(reproduce.Unreproducible, match="run it by hand"):
        reproduce.commands_of(Path("lm_gpu.md"), {})


# Results files measured before they recorded where: each is to be regenerated whole (a run refuses to add to one),
# and leaves this list when it is (the last, tm_ablation_30ep, was regenerated in two hours on two cores).
NOT_YET_REGENERATED: list[str] = []


def test_every_committed_results_file_says_where_it_was_measured_and_by_which_command(reproduce):
    """The machine, kernels, thread count and libraries, and a command reproduce.py can find and parse (recorded,
    or for a copied sweep.json in figures.py's list); a file that lacks them is named, and so is one this list still
    holds after it was regenerated."""
    needed = {"machine_class", "cpu", "cpu_capability", "threads", "gpu", "torch", "numpy"}
    lacking = []
    for path in sorted((BENCHMARKS / "results").glob("*.json")):
        committed = json.loads(path.read_text())
        try:
            reproduce.commands_of(path, committed)
        except reproduce.Unreproducible:
            lacking.append(path.name)
            continue
        if not needed <= set(committed.get("measured_on") or {}):
            lacking.append(path.name)
    assert lacking == NOT_YET_REGENERATED


def test_a_recorded_command_is_taken_whole_though_an_argument_holds_a_bracket(reproduce):
    """A note in brackets ends a command (where it must run); a bracket inside a quoted argument is no note."""
    recorded = {"measured_on": {"command": "uv run python benchmarks/embed.py heads --rows 'sim_kl (before)' x"}}
    [command] = reproduce.commands_of(Path("embed_mixes.json"), recorded)
    assert command.args[1:] == ["benchmarks/embed.py", "heads", "--rows", "sim_kl (before)", "x"]
    unclosed = {"measured_on": {"command": "uv run python benchmarks/embed.py --rows 'sim_kl"}}
    with pytest.raises(reproduce.Unreproducible, match="embed_mixes.json: its command does not parse"):
        reproduce.commands_of(Path("embed_mixes.json"), unclosed)


def test_a_run_that_adds_to_a_results_file_records_its_command_after_the_earlier_ones(tmp_path, monkeypatch):
    """methods.py seeds at the default learning rates, then --tuned into the same file: the file names both, in
    turn, and reproduce.py re-runs both; a run on another machine class refuses to add to the file."""
    monkeypatch.setenv("KDFORGE_RESULTS_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    path = tmp_path / "x.json"
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "methods.py"), "seeds"])
    common.write_json(path, {"cells": [1]})
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "methods.py"), "seeds", "--tuned"])
    common.write_json(path, json.loads(path.read_text()))
    common.write_json(path, json.loads(path.read_text()))  # the same run again: named once
    found = json.loads(path.read_text())
    assert found["measured_on"]["command"] == (
        "uv run python benchmarks/methods.py seeds; uv run python benchmarks/methods.py seeds --tuned"
    )
    assert [c.args[1:] for c in load("reproduce").commands_of(path, found)] == [
        ["benchmarks/methods.py", "seeds"], ["benchmarks/methods.py", "seeds", "--tuned"]
    ]  # fmt: skip
    elsewhere = {**found["measured_on"], "cpu": "Another CPU"}
    with pytest.raises(SystemExit, match=r"x.json was measured on Another CPU, .* adding to it would mix the two"):
        common.write_json(path, {**found, "measured_on": elsewhere})
    assert json.loads(path.read_text()) == found  # left as it was


def test_a_stopped_benchmark_resumes_from_its_finished_runs_and_reruns_any_other_recipe(tiny_recipe, monkeypatch):
    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    first = common.run_quietly(tiny_recipe, resume=True)
    again = common.run_quietly(tiny_recipe, resume=True)
    assert again.run_dir == first.run_dir and again.results == first.results
    other = common.run_quietly({**tiny_recipe, "seed": 1}, resume=True)
    assert other.run_dir != first.run_dir
    assert common.run_quietly(tiny_recipe).run_dir not in (first.run_dir, other.run_dir)  # without resume: a new run


@pytest.mark.parametrize("stage", ["distill", "teacher"])
def test_a_run_the_benchmark_was_stopped_in_goes_on_from_its_last_checkpoint_to_the_uninterrupted_result(
    tiny_recipe, tmp_path, monkeypatch, stage
):
    """Stopped while the student or the teacher trains: the teacher's fit, too, goes on from its own last.pt."""
    import signal

    from kdforge.callbacks import Callback
    from kdforge.errors import RunInterrupted
    from kdforge.session import Session

    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    tiny_recipe["train"] = {"epochs": 2, "baseline": False}
    whole = common.run_quietly({**tiny_recipe, "log": {**tiny_recipe["log"], "dir": str(tmp_path / "whole")}})

    class CtrlC(Callback):
        def on_step_end(self, trainer, samples):
            if trainer.stage == stage and trainer.pos.step == 20:  # in its second epoch
                signal.raise_signal(signal.SIGINT)

    callbacks = Session.callbacks
    monkeypatch.setattr(Session, "callbacks", lambda self: [*callbacks(self), CtrlC()])
    with pytest.raises(RunInterrupted) as stopped:
        common.run_quietly(tiny_recipe, resume=True)
    monkeypatch.setattr(Session, "callbacks", callbacks)
    resumed = common.run_quietly(tiny_recipe, resume=True)
    assert resumed.run_dir == stopped.value.run_dir  # continued there, not started again beside it
    assert resumed.results["student"]["test"] == whole.results["student"]["test"]


def test_each_keys_first_job_runs_before_the_others_of_its_key_and_no_worker_waits_for_another_key(monkeypatch):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    events, lock = [], threading.Lock()

    def work(job):
        with lock:
            events.append(("start", job))
        time.sleep(0.2 if job == ("b", 0) else 0.02)  # b's teacher takes long: a's other jobs must not wait for it
        with lock:
            events.append(("end", job))
        return job[1] * 10

    jobs = [(key, i) for key in "ab" for i in range(3)]
    with ThreadPoolExecutor(2) as pool:
        done = dict(common.teacher_first(pool, work, jobs, key=lambda job: job[0]))
    assert done == {job: job[1] * 10 for job in jobs}
    for key in "ab":
        first_end = events.index(("end", (key, 0)))
        assert all(events.index(("start", (key, i))) > first_end for i in (1, 2))
    assert events.index(("start", ("a", 2))) < events.index(("end", ("b", 0)))


def test_the_suite_measured_with_forced_kernels_writes_and_resumes_beside_the_machines_own_files(tmp_path, monkeypatch):
    """methods.py writes its files itself (and reads them back to go on, and rewrites docs/choosing.md's table):
    under ATEN_CPU_CAPABILITY each goes beside the machine's own, and the docs stay as the machine's files say."""
    monkeypatch.setenv("KDFORGE_RESULTS_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "common", None)
    load("common")
    methods = load("methods")
    choosing = tmp_path / "docs" / "choosing.md"  # a copy: a failing check must not rewrite the real page
    choosing.parent.mkdir()
    choosing.write_text(methods.CHOOSING.read_text())
    monkeypatch.setattr(methods, "CHOOSING", choosing)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "AVX2")
    methods.save({"epochs": methods.EPOCHS, "pairs": {}})
    assert sorted(p.name for p in tmp_path.glob("*.*")) == ["methods_avx2.json", "methods_avx2.md"]
    assert choosing.read_text() == (BENCHMARKS.parent / "docs" / "choosing.md").read_text()
    assert "measured_on" in methods.load()  # read back from the file beside, as a stopped run's resume reads it
    seeds = methods.results_path(methods.seeds_name(methods.SEEDS), ".json")
    assert seeds == tmp_path / "methods_seeds_avx2.json"


def test_results_measured_with_forced_kernels_are_written_beside_the_machines_own(tmp_path, monkeypatch):
    monkeypatch.setenv("KDFORGE_RESULTS_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "tm.py"), "ablation"])
    common.save("x", {"cells": [1]}, "own")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "AVX2")
    common.save("x", {"cells": [2]}, "forced")
    assert json.loads((tmp_path / "x.json").read_text())["cells"] == [1]
    assert json.loads((tmp_path / "x_avx2.json").read_text())["cells"] == [2]
    assert (tmp_path / "x_avx2.md").read_text() == "forced"
    assert common.earlier_results("x", "a partial run")["cells"] == [2]  # a partial run adds to its own kernels' file
    with pytest.raises(SystemExit, match=r"lm_avx2.json does not exist: --costs-only adds to it"):
        common.earlier_results("lm", "--costs-only")
    forced = json.loads((tmp_path / "x_avx2.json").read_text())
    assert forced["measured_on"]["command"].startswith("ATEN_CPU_CAPABILITY=AVX2 uv run python benchmarks/tm.py")
    [command] = load("reproduce").commands_of(tmp_path / "x_avx2.json", forced)
    assert command.env == {"ATEN_CPU_CAPABILITY": "AVX2"}


def test_a_run_refuses_to_add_to_results_that_do_not_say_where_they_were_measured(tmp_path, monkeypatch):
    """A file written before results files said where they were measured may be another machine's: a partial run
    would mix the two under this machine's name. ``report`` only redraws the tables and stamps nothing."""
    monkeypatch.setenv("KDFORGE_RESULTS_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    methods = load("methods")
    choosing = tmp_path / "choosing.md"  # a copy: the report rewrites its table
    choosing.write_text(methods.CHOOSING.read_text())
    monkeypatch.setattr(methods, "CHOOSING", choosing)
    (tmp_path / "x.json").write_text(json.dumps({"cells": [1]}))
    with pytest.raises(SystemExit, match=r"x.json does not say where it was measured"):
        common.earlier_results("x", "a partial run")
    unsaid = json.dumps({"epochs": methods.EPOCHS, "pairs": {}})
    (tmp_path / "methods.json").write_text(unsaid)
    for command in ("run", "tune"):
        monkeypatch.setattr(sys, "argv", ["methods.py", command, "--pairs", "digits-mlp16", "--runs", str(tmp_path)])
        with pytest.raises(SystemExit, match=r"methods.json does not say where it was measured"):
            methods.main()  # before any training: the test would take minutes otherwise
    monkeypatch.setattr(sys, "argv", ["methods.py", "report", "--runs", str(tmp_path)])
    methods.main()
    assert (tmp_path / "methods.json").read_text() == unsaid
    assert (tmp_path / "methods.md").read_text().startswith("# Distillation suite")


def test_a_tm_ablation_of_some_tasks_keeps_the_others_and_goes_on_from_where_they_were_measured(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its neighbours
    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    ablation = load("tm_ablation")
    path = tmp_path / "tm_ablation.json"
    common.write_json(path, {"tasks": {"token parity": {"x": 1}, "two of four": {"x": 2}}})
    earlier = ablation.added_to(path, ["two of four"], "tasks")
    assert earlier["tasks"]["token parity"] == {"x": 1} and earlier["measured_on"]["command"]
    assert ablation.added_to(path, None, "tasks") == {"tasks": {}}  # all tasks: nothing kept, a fresh file
    found = json.loads(path.read_text())
    path.write_text(json.dumps({**found, "measured_on": {**found["measured_on"], "threads": 64}}))
    with pytest.raises(SystemExit, match="adding to it would mix the two"):
        ablation.added_to(path, ["two of four"], "tasks")


def test_a_tm_ablation_of_some_tasks_adds_to_its_own_one_thread_runs_from_a_process_of_more_threads(
    tmp_path, monkeypatch
):
    """The ablation's runs have one thread each and its own process more: a later ``--tasks`` run on the machine that
    wrote the file goes on from it (the check compares the runs' thread count, not the process's), before training."""
    monkeypatch.setenv("KDFORGE_RESULTS_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setitem(sys.modules, "common", None)
    common = load("common")
    ablation = load("tm_ablation")
    common.one_thread_runs()
    common.write_json(tmp_path / "tm_ablation_30ep.json", {"tasks": {"token parity": {"x": 1}}})
    common.RUN_THREADS.clear()  # as in the next command's new process
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # no mode: no run trains
        args = argparse.Namespace(epochs=30, tasks=["parity of six"], variants=None, modes=[], seeds=[0, 1, 2],
                                  workers=1, runs=str(tmp_path / "runs"))  # fmt: skip
        out = ablation.ablation(args)
    finally:
        torch.set_num_threads(threads)
    assert out["tasks"] == {"token parity": {"x": 1}} and out["measured_on"]["threads"] == 1


def test_every_method_rate_and_tuned_recipe_of_the_suite_distils_from_the_pairs_one_teacher(monkeypatch):
    """A method with its own optimiser (DOT), the seeds command's other learning rate and a tune's trials change the
    student's optimiser, never the teacher's: each pair and seed has one teacher, the one the default recipe trains,
    but for DOT's, trained without the gradient clipping DOT refuses (a teacher's fit takes the recipe's)."""
    from kdforge import Recipe
    from kdforge.teachers.sources import teacher_cache_key

    monkeypatch.setitem(sys.modules, "common", None)
    load("common")
    methods = load("methods")

    def key(raw):
        recipe = Recipe.from_dict(raw)
        return teacher_cache_key(recipe, recipe.teacher)

    pair = "digits32-vit"
    default = key(methods.default_recipe(pair, 0, "runs"))
    trained = [m for m in methods.METHODS if methods.method_recipe(pair, m, 0, "runs")["teacher"]["source"] == "train"]
    assert {key(methods.method_recipe(pair, m, 0, "runs")) for m in trained if "DOT" not in m} == {default}
    unclipped = methods.default_recipe(pair, 0, "runs")
    unclipped["train"]["grad_clip"] = None
    assert key(methods.method_recipe(pair, "KD, DOT optimiser", 0, "runs")) == key(unclipped) != default
    faster = methods.default_recipe(pair, 0, "runs")
    faster["optim"]["lr"] = 0.01
    assert key(faster) == default != key(methods.default_recipe(pair, 1, "runs"))


def test_the_suite_given_a_stopped_invocations_runs_goes_on_from_those_it_finished(tiny_recipe, monkeypatch):
    monkeypatch.setitem(sys.modules, "common", None)
    load("common")
    methods = load("methods")
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    first = methods.scores(tiny_recipe)
    monkeypatch.setattr(methods.kdforge, "run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert methods.scores(tiny_recipe) == first
    with pytest.raises(pytest.fail.Exception):  # another seed is another recipe: it trains
        methods.scores({**tiny_recipe, "seed": 1})
    from kdforge import machine

    monkeypatch.setattr(
        machine, "where_measured", lambda threads=None: {"machine_class": "Another CPU, AVX2, 1 threads"}
    )
    with pytest.raises(pytest.fail.Exception):  # a run finished with other kernels is another machine's measurement
        methods.scores(tiny_recipe)
