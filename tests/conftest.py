import os

import pytest
import torch

os.environ.setdefault("COLUMNS", "200")  # rich wraps at 80 columns otherwise; keep messages on one line
# the Python processes that tests start (torchrun ranks, a writer to kill) may cache bytecode: with
# PYTHONDONTWRITEBYTECODE set, as on our machines, each of them compiles torch and kdforge from source again
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# no test reaches the internet: those that download do it from a server of their own on 127.0.0.1, in a process
# whose environment turns downloads back on (set before huggingface_hub is imported, which reads it once)
os.environ["HF_HUB_OFFLINE"] = "1"
# under pytest-xdist the workers share the cores: one thread each (two pools that each take every core slow each
# other down many times over)
torch.set_num_threads(1 if "PYTEST_XDIST_WORKER" in os.environ else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_recipe(tmp_path):
    """A recipe that trains in seconds: tiny CNN teacher, tiny MLP student, 2 epochs."""
    return {
        "name": "tiny",
        "seed": 0,
        "data": {"name": "digits", "batch_size": 64},
        "teacher": {"source": "train", "model": {"name": "cnn", "width": 8, "depth": 2}, "train": {"epochs": 2}},
        "student": {"model": {"name": "mlp", "hidden": [16]}},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 4.0}],
        "optim": {"name": "adamw", "lr": 3.0e-3},
        "train": {"epochs": 2, "baseline": True},
        "log": {"dir": str(tmp_path / "runs"), "progress": False, "every_steps": 10},  # step lines in 2 epochs
    }


@pytest.fixture
def invoke():
    """Run the CLI through main() so errors get their exit code and message; returns the code."""
    import sys

    from kdforge.cli import main

    def call(*args):
        saved = sys.argv
        sys.argv = ["kdforge", *map(str, args)]
        try:
            main()
            return 0
        except SystemExit as exit:
            return exit.code or 0
        finally:
            sys.argv = saved

    return call


# ----------------------------------------------------------------------------- recipe fields read
# Every recipe field must be really used: fieldreads.py records the suite's reads of recipe fields, and
# test_recipe_fields.py, ordered last, checks that each field of the schema was read.

import json  # noqa: E402

from fieldreads import FIELD_READS, FIELD_TEST, schema_fields, whole_suite  # noqa: E402

FIELD_CHECK = "test_every_recipe_field_is_read"
WORKERS_SAW_ALL: list[bool] = []  # xdist controller: whether each worker's session ran the whole suite


def pytest_collection_modifyitems(session, config, items):
    # stable: the field check runs last; the longest tests (torchrun's, one worker's share under xdist) first, so that
    # the other workers are not left idle at the end
    items.sort(key=lambda item: (item.path.name == FIELD_TEST, item.path.name != "test_distributed.py"))
    session.kdforge_files = {item.path.name for item in items}
    if hasattr(config, "workerinput"):  # an xdist worker sees its share of the reads: the controller checks
        check = [item for item in items if item.name == FIELD_CHECK]
        items[:] = [item for item in items if item.name != FIELD_CHECK]
        config.hook.pytest_deselected(items=check)


def pytest_sessionfinish(session):
    out = os.environ.get("KDFORGE_FIELD_READS_OUT")
    if out:  # a suite run on behalf of test_recipe_fields.py: hand over what was read
        with open(out, "w") as f:
            json.dump(sorted(FIELD_READS), f)
    if hasattr(session.config, "workeroutput"):  # an xdist worker: what it read goes to the controller
        session.config.workeroutput["field_reads"] = sorted(FIELD_READS)
        session.config.workeroutput["whole_suite"] = whole_suite(session)
    elif WORKERS_SAW_ALL and all(WORKERS_SAW_ALL):  # the xdist controller, after a whole suite
        if unread := sorted(schema_fields() - FIELD_READS):
            report = session.config.pluginmanager.get_plugin("terminalreporter")
            report.ensure_newline()
            report.write_sep("=", f"FAILED {FIELD_TEST}::{FIELD_CHECK} (on every worker's reads)", red=True)
            report.write_line(f"recipe fields that no code path of the suite reads: {unread}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist controller: one worker's reads of recipe fields."""
    FIELD_READS.update(tuple(pair) for pair in node.workeroutput.get("field_reads", []))
    WORKERS_SAW_ALL.append(node.workeroutput.get("whole_suite", False))
