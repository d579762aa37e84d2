"""Every field of the recipe schema is read somewhere: a field nothing uses is a lie to users.

fieldreads.py records which fields the suite reads; this test runs last. When only part of
the suite ran, it runs the rest in a subprocess to find out. Under pytest-xdist (``make test``) no
worker sees what the others read: the controller checks their union instead (conftest.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from fieldreads import FIELD_READS, FIELD_TEST, schema_fields, whole_suite

TESTS = Path(__file__).parent


def reads_of_the_whole_suite(request, tmp_path) -> set[tuple[str, str]]:
    if whole_suite(request.session):
        return FIELD_READS
    out = tmp_path / "reads.json"
    env = {**os.environ, "KDFORGE_FIELD_READS_OUT": str(out)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            str(TESTS),
            "--deselect",
            f"{TESTS / FIELD_TEST}::test_every_recipe_field_is_read",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return {tuple(pair) for pair in json.loads(out.read_text())}


def test_every_recipe_field_is_read(request, tmp_path):
    unread = sorted(schema_fields() - reads_of_the_whole_suite(request, tmp_path))
    assert not unread, f"recipe fields that no code path of the suite reads: {unread}"


def test_the_schema_walk_finds_nested_sections():
    fields = schema_fields()
    assert {
        ("Recipe", "train"),
        ("TrainConfig", "ema_decay"),
        ("EarlyStoppingConfig", "patience"),
        ("ScheduleConfig", "start"),
        ("RandAugmentConfig", "m"),
    } <= fields
