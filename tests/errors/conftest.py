"""The shared fixtures of the bad-input tests: ``fails`` runs the CLI and checks its one message."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def fails(invoke, capsys):
    """``fails(*args, names=[...])``: the CLI exits 2 with a message naming each of ``names``."""

    def check(*args, names):
        code = invoke(*args)
        captured = capsys.readouterr()
        out = " ".join((captured.out + captured.err).split())
        assert code == 2, f"exit code {code}; output: {out}"
        assert "Traceback" not in out and "internal error" not in out, out
        assert "error:" in out, out
        message = out[out.rindex("error:") :]
        for name in names:
            assert " ".join(str(name).split()) in message, f"{name!r} not in: {message}"
        return message

    return check


@pytest.fixture
def recipe(tiny_recipe, tmp_path):
    """``recipe(changes, text=None)``: the tiny recipe with ``changes`` merged per section,
    written to a YAML file whose path is returned (or ``text`` as it is)."""

    def write(changes=None, text=None, name="my.yaml"):
        path = tmp_path / name
        if text is not None:
            path.write_text(textwrap.dedent(text))
            return path
        raw = json.loads(json.dumps(tiny_recipe))
        for key, value in (changes or {}).items():
            if value is None:
                raw.pop(key, None)
            elif isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write
