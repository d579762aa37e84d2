"""Bad input, as a new user would give it, through the real ``kdforge`` entry point.

Every case must end with exit code 2, one plain message that names the culprit (file, key,
line or option), and no traceback. Then: a full disk and a kill during a write lose nothing.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import yaml

from kdforge import files

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


def torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


class Payload:
    """Pickled as a call of os.system: what a malicious checkpoint holds."""

    def __reduce__(self):
        return (os.system, ("echo owned",))


# ----------------------------------------------------------------------------- recipes

RECIPE_CASES = {
    "unknown section": ({"traim": {"epochs": 1}}, ["traim", "did you mean 'train'?"]),
    "unknown loss option": (
        {"losses": [{"name": "kd", "temprature": 2.0}]},
        ["losses.0.temprature", "did you mean 'temperature'?"],
    ),
    "epochs as text": ({"train": {"epochs": "ten"}}, ["train.epochs", "'ten'"]),
    "negative epochs": ({"train": {"epochs": -3}}, ["train.epochs", "greater than 0"]),
    "zero learning rate": ({"optim": {"lr": 0}}, ["optim.lr"]),
    "unknown loss": ({"losses": [{"name": "kdd"}]}, ["losses.0.name", "unknown loss 'kdd'"]),
    "unknown student model": (
        {"student": {"model": {"name": "mlpp"}}},
        ["student.model.name", "unknown model 'mlpp'", "did you mean 'mlp'?"],
    ),
    "unknown dataset": ({"data": {"name": "digitz"}}, ["data.name", "did you mean 'digits'?"]),
    "unknown teacher source": ({"teacher": {"source": "zoo"}}, ["teacher.source", "'zoo'"]),
    "one-member ensemble": (
        {
            "teacher": {
                "source": "ensemble",
                "members": [{"source": "checkpoint", "path": "t.pt"}],
                "model": None,
                "train": None,
            }
        },
        ["at least two members"],
    ),
    "stage names a missing term": (
        {"stages": [{"epochs": 1, "weights": {"kdd": 1.0}}, {}]},
        ["stage 0", "'kdd'", "did you mean 'kd'?"],
    ),
    "curriculum partitions": ({"curriculum": {"partitions": [0.5, 0.9]}}, ["curriculum", "exactly 1"]),
    "teacher.lr without trainable": ({"teacher": {"lr": 0.1}}, ["teacher.lr", "trainable: true"]),
    "unknown device": ({"train": {"device": "gpu"}}, ["train.device", "'gpu'"]),
    "negative loss weight": ({"losses": [{"name": "kd", "weight": -1.0}]}, ["losses.0.weight", ">= 0"]),
    "name with parent folders": ({"name": "../../../elsewhere"}, ["name", "'/'", "one folder"]),
    "absolute name": ({"name": "/tmp/elsewhere"}, ["name", "'/'"]),
    "name with a backslash": ({"name": "a\\b"}, ["name", "'\\\\'"]),
    "dot-dot name": ({"name": ".."}, ["name", "empty or dot name"]),
    "fractions leave no training split": (
        {"data": {"val_fraction": 0.5, "test_fraction": 0.5}},
        ["data", "val_fraction + test_fraction is 1"],
    ),
    "hidden width negative": (
        {"student": {"model": {"name": "mlp", "hidden": [-4]}}},
        ["student.model.hidden.0", "greater than 0"],
    ),
    "hidden width zero": (
        {"student": {"model": {"name": "mlp", "hidden": [0]}}},
        ["student.model.hidden.0", "greater than 0"],
    ),
    "teacher width negative": (
        {"teacher": {"model": {"name": "cnn", "width": -1}}},
        ["teacher.model.width", "greater than 0"],
    ),
    "unknown model option": (
        {"student": {"model": {"name": "mlp", "widht": 3}}},
        ["student.model.widht", "unknown key"],
    ),
    "model option of the wrong type": (
        {"student": {"model": {"name": "mlp", "hidden": "big"}}},
        ["student.model.hidden", "'big'"],
    ),
    "missing teacher and a loss typo": (
        {"teacher": None, "losses": [{"name": "kd", "temprature": 2.0}]},
        ["teacher: missing required key", "losses.0.temprature"],
    ),
}


@pytest.mark.parametrize("case", RECIPE_CASES, ids=list(RECIPE_CASES))
def test_recipe_mistakes(case, fails, recipe):
    changes, names = RECIPE_CASES[case]
    fails("check", recipe(changes), names=names)


def test_every_problem_of_a_recipe_is_reported_at_once(fails, recipe):
    fails(
        "check",
        recipe(
            {
                "teacher": None,
                "losses": [{"name": "kd", "temprature": 2.0}],
                "train": {"epochs": "x"},
                "student": {"model": {"name": "mlp", "hidden": [-1]}},
            }
        ),
        names=["teacher: missing required key", "losses.0.temprature", "train.epochs", "student.model.hidden.0"],
    )


def test_the_location_survives_an_absolute_recipe_path(fails, recipe, tmp_path, monkeypatch):
    path = recipe({"losses": [{"name": "kd", "temprature": 2.0}]}).resolve()
    fails("check", str(path), names=[f"[{path}:", "temprature"])
    monkeypatch.chdir(tmp_path)
    fails("check", path.name, names=[f"[{path.name}:", "temprature"])
    fails("check", path.name, "train.epoch=1", names=["[from override 'train.epoch=1']", "did you mean 'epochs'?"])


def test_markup_characters_in_values_are_printed_as_they_are(fails, recipe):
    fails("check", recipe({"name": "[bold]x[/bold]/y"}), names=["[bold]x[/bold]/y"])


YAML_CASES = {
    "duplicate key": ("name: a\nseed: 0\nname: b\n", ["my.yaml:3", "key 'name' is given twice", "lines 1 and 3"]),
    "duplicate nested key": ("train:\n  epochs: 1\n  epochs: 2\n", ["my.yaml:3", "'epochs'", "lines 2 and 3"]),
    "broken YAML": ("name: [a, b\nseed: 0\n", ["my.yaml", "not valid YAML"]),
    "a list, not a mapping": ("- name\n- seed\n", ["my.yaml", "mapping of sections"]),
    "empty file": ("", ["my.yaml", "mapping of sections"]),
}


@pytest.mark.parametrize("case", YAML_CASES, ids=list(YAML_CASES))
def test_recipe_files_that_are_not_recipes(case, fails, recipe):
    text, names = YAML_CASES[case]
    fails("check", recipe(text=text), names=names)


def test_recipe_in_another_encoding(fails, tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    fails("check", path, names=[str(path), "not utf-8 text", "byte 0xe9"])


def test_recipe_not_found(fails):
    fails("check", "no/such/recipe.yaml", names=["recipe 'no/such/recipe.yaml' not found"])


OVERRIDE_CASES = {
    "no equals sign": (["train.epochs"], ["override 'train.epochs'", "key.path=value"]),
    "unknown key": (["train.epoch=3"], ["[from override 'train.epoch=3']", "did you mean 'epochs'?"]),
    "index out of range": (["losses.5.weight=1"], ["losses.5.weight=1", "not an index of a list of 2 items"]),
    "wrong type": (["train.epochs=abc"], ["train.epochs", "[from override 'train.epochs=abc']"]),
    "into a value": (["seed.x=1"], ["override 'seed.x=1'", "'seed' is not a section"]),
    "bad name": (["name=../x"], ["name", "[from override 'name=../x']"]),
}


@pytest.mark.parametrize("case", OVERRIDE_CASES, ids=list(OVERRIDE_CASES))
def test_override_mistakes(case, fails, recipe):
    overrides, names = OVERRIDE_CASES[case]
    fails("check", recipe(), *overrides, names=names)


CLI_ARGUMENT_CASES = {
    "input shape not numbers": (["bench", "mlp", "--input-shape", "a,b"], ["--input-shape", "'a,b'"]),
    "batch sizes not numbers": (
        ["bench", "mlp", "--input-shape", "1,4", "--batch-sizes", "x"],
        ["--batch-sizes", "'x'"],
    ),
    "lengths not numbers": (["compare", "--models", "digits_kd", "--lengths", "0"], ["--lengths", "'0'"]),
    "model option negative": (
        ["bench", "mlp", "--input-shape", "1,4", "-o", "hidden=[-1]"],
        ["model 'mlp'", "hidden.0", "greater than 0"],
    ),
    "model option unknown": (
        ["bench", "mlp", "--input-shape", "1,4", "-o", "widht=3"],
        ["model 'mlp'", "unknown option 'widht'"],
    ),
    "model option without value": (
        ["bench", "mlp", "--input-shape", "1,4", "-o", "hidden"],
        ["--option takes key=value", "'hidden'"],
    ),
    "model name unknown": (["bench", "mlpp", "--input-shape", "1,4"], ["unknown model 'mlpp'", "did you mean 'mlp'?"]),
    "list of what": (["list", "[red]modles"], ["cannot list '[red]modles'"]),
    "eval of no run": (["eval", "/nonexistent-run"], ["'/nonexistent-run' is not a kdforge run directory"]),
}


@pytest.mark.parametrize("case", CLI_ARGUMENT_CASES, ids=list(CLI_ARGUMENT_CASES))
def test_command_line_arguments(case, fails):
    args, names = CLI_ARGUMENT_CASES[case]
    fails(*args, names=names)


def test_model_that_cannot_be_built_says_which(fails, recipe):
    fails(
        "check",
        recipe({"student": {"model": {"name": "vit", "embed_dim": 30, "heads": 4}}}),
        names=["model 'vit'", "embed_dim"],
    )


# ----------------------------------------------------------------------------- teacher files


def teacher_file(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return {
        "teacher": {
            "source": "checkpoint",
            "path": str(path),
            "model": {"name": "cnn", "width": 8, "depth": 2},
            "train": None,
        }
    }


def good_safetensors():
    from safetensors.torch import save

    return save({"w": torch.randn(8, 8)})


TEACHER_FILE_CASES = {
    "truncated safetensors": (
        "t.safetensors",
        lambda: good_safetensors()[:40],
        ["t.safetensors", "not a valid safetensors file"],
    ),
    "random bytes safetensors": (
        "t.safetensors",
        lambda: np.random.default_rng(0).bytes(500),
        ["t.safetensors", "not a valid safetensors file"],
    ),
    "pickle named safetensors": (
        "t.safetensors",
        lambda: torch_bytes({"w": torch.ones(2)}),
        ["t.safetensors", "is a PyTorch pickle file"],
    ),
    "empty safetensors": ("t.safetensors", lambda: b"", ["t.safetensors", "is empty (0 bytes)"]),
    "truncated pt": ("t.pt", lambda: torch_bytes({"w": torch.ones(100, 100)})[:3000], ["t.pt", "truncated or damaged"]),
    "empty pt": ("t.pt", lambda: b"", ["t.pt", "is empty (0 bytes)"]),
    "pickled code": (
        "t.pt",
        lambda: torch_bytes({"w": torch.ones(2), "hook": Payload()}),
        ["t.pt", "pickled Python objects", "never loads"],
    ),
    "not a state dict": ("t.pt", lambda: torch_bytes([torch.ones(2)]), ["t.pt", "does not hold a state dict"]),
    "wrong architecture": ("t.pt", lambda: torch_bytes({"w": torch.ones(2)}), ["t.pt", "does not fit", "missing keys"]),
    "random bytes pt": ("t.pt", lambda: np.random.default_rng(1).bytes(2000), ["t.pt", "not a readable PyTorch file"]),
}


@pytest.mark.parametrize("case", TEACHER_FILE_CASES, ids=list(TEACHER_FILE_CASES))
def test_teacher_files_that_cannot_be_trusted(case, fails, recipe, tmp_path):
    name, data, names = TEACHER_FILE_CASES[case]
    fails("check", recipe(teacher_file(tmp_path, name, data())), names=names)


def test_pickle_named_safetensors_without_a_model_is_not_called_weights(fails, recipe, tmp_path):
    changes = teacher_file(tmp_path, "t.safetensors", torch_bytes({"w": torch.ones(2)}))
    changes["teacher"]["model"] = None
    out = fails("check", recipe(changes), names=["is a PyTorch pickle file"])
    assert "holds weights only" not in out


def test_missing_teacher_file(fails, recipe, tmp_path):
    fails(
        "check",
        recipe(
            {
                "teacher": {
                    "source": "checkpoint",
                    "path": str(tmp_path / "none.pt"),
                    "model": {"name": "cnn"},
                    "train": None,
                }
            }
        ),
        names=["none.pt", "not found"],
    )


# ----------------------------------------------------------------------------- resume and run files


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run (teacher, student; no baseline) to damage in copies."""
    import kdforge

    root = tmp_path_factory.mktemp("finished")
    raw = {
        "name": "tiny",
        "data": {"name": "digits", "batch_size": 128},
        "teacher": {"source": "train", "model": {"name": "cnn", "width": 4, "depth": 1}, "train": {"epochs": 1}},
        "student": {"model": {"name": "mlp", "hidden": [8]}},
        "losses": [{"name": "kd"}],
        "train": {"epochs": 1, "baseline": False},
        "log": {"dir": str(root / "runs"), "progress": False},
    }
    return kdforge.run(kdforge.Recipe.from_dict(raw)).run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


RUN_FILE_CASES = {
    "random last.pt": (
        "last.pt",
        lambda: np.random.default_rng(2).bytes(4000),
        ["resume", "last.pt", "not a readable PyTorch file"],
    ),
    "pickled last.pt": ("last.pt", lambda: torch_bytes({"hook": Payload()}), ["last.pt", "pickled Python objects"]),
    "empty last.pt": ("last.pt", lambda: b"", ["last.pt", "is empty"]),
    "someone else's last.pt": (
        "last.pt",
        lambda: torch_bytes({"model": torch.ones(2)}),
        ["last.pt", "is not one kdforge wrote"],
    ),
    "damaged teacher": (
        "teacher/teacher.safetensors",
        lambda: good_safetensors()[:30],
        ["teacher/teacher.safetensors", "not a valid safetensors file"],
    ),
    "truncated config": (
        "config.yaml",
        lambda: b"name: tiny\nteacher: {source: train, model: {name: cnn",
        ["config.yaml", "not valid YAML"],
    ),
}


@pytest.mark.parametrize("case", RUN_FILE_CASES, ids=list(RUN_FILE_CASES))
def test_resume_refuses_damaged_run_files(case, fails, run_copy):
    name, data, names = RUN_FILE_CASES[case]
    (run_copy / name).write_bytes(data())
    fails("train", "--resume", run_copy, names=names)


def test_resume_of_a_stage_with_another_model(fails, run_copy):
    state = files.load_torch(run_copy / "last.pt")
    state["trainable"] = {"student.layers.0.weight": torch.ones(3, 3)}
    files.save_torch(state, run_copy / "last.pt")
    fails("train", "--resume", run_copy, names=["last.pt", "does not fit this run"])


def test_resume_of_a_folder_that_is_not_a_run(fails, tmp_path):
    fails("train", "--resume", tmp_path, names=[str(tmp_path), "no config.yaml"])


@pytest.mark.parametrize("damage", ["weights", "description"])
def test_eval_refuses_a_damaged_student(damage, fails, run_copy):
    target = run_copy / ("student.safetensors" if damage == "weights" else "student.json")
    target.write_bytes(target.read_bytes()[:25])
    fails("eval", run_copy, names=[target.name, "truncated or damaged"])


# ----------------------------------------------------------------------------- datasets


def arrays_recipe(path):
    return {
        "data": {"name": "arrays", "path": str(path)},
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [8]}},
    }


def npy_bytes(array, **options) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **options)
    return buffer.getvalue()


X, Y = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3
ARRAY_CASES = {
    "empty x.npy": ({"x.npy": b"", "y.npy": npy_bytes(Y)}, ["x.npy", "is empty (0 bytes)"]),
    "object x.npy": (
        {"x.npy": npy_bytes(np.array([{"a": 1}] * 60, dtype=object), allow_pickle=True), "y.npy": npy_bytes(Y)},
        ["x.npy", "object-dtype array"],
    ),
    "truncated x.npy": ({"x.npy": npy_bytes(X)[:300], "y.npy": npy_bytes(Y)}, ["x.npy", "truncated or damaged"]),
    "text x.npy": (
        {"x.npy": npy_bytes(np.array(["a"] * 60)), "y.npy": npy_bytes(Y)},
        ["x in", "<U1 values", "must be numbers"],
    ),
    "1-D x.npy": ({"x.npy": npy_bytes(X[:, 0]), "y.npy": npy_bytes(Y)}, ["x in", "shape [60]", "x[:, None]"]),
    "rows differ": ({"x.npy": npy_bytes(X[:50]), "y.npy": npy_bytes(Y)}, ["x in", "50 rows but y has 60"]),
    "no y": ({"x.npy": npy_bytes(X)}, ["must hold 'x' and 'y'"]),
}


@pytest.mark.parametrize("case", ARRAY_CASES, ids=list(ARRAY_CASES))
def test_array_folders(case, fails, recipe, tmp_path):
    found, names = ARRAY_CASES[case]
    folder = tmp_path / "arrays"
    folder.mkdir()
    for name, data in found.items():
        (folder / name).write_bytes(data)
    fails("check", recipe(arrays_recipe(folder)), names=names)


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


NPZ_CASES = {
    "empty npz": (lambda: b"", ["d.npz", "is empty"]),
    "truncated npz": (lambda: npz_bytes(x=X, y=Y)[:200], ["d.npz", "truncated or damaged"]),
    "object npz": (lambda: npz_bytes(x=np.array([{"a": 1}] * 60, dtype=object), y=Y), ["d.npz", "object-dtype array"]),
}


@pytest.mark.parametrize("case", NPZ_CASES, ids=list(NPZ_CASES))
def test_npz_files(case, fails, recipe, tmp_path):
    data, names = NPZ_CASES[case]
    (tmp_path / "d.npz").write_bytes(data())
    fails("check", recipe(arrays_recipe(tmp_path / "d.npz")), names=names)


def table_recipe(path):
    return {
        "data": {"name": "embedding_table", "path": str(path)},
        "teacher": {"source": "table", "model": None, "train": None},
        "student": {"model": {"name": "embed_proj"}},
        "losses": [{"name": "cosine"}],
    }


TABLE_CASES = {
    "empty npy table": ("t.npy", lambda: b"", ["t.npy", "is empty"]),
    "object npy table": (
        "t.npy",
        lambda: npy_bytes(np.array([None] * 4, dtype=object), allow_pickle=True),
        ["t.npy", "object-dtype array"],
    ),
    "truncated npz table": ("t.npz", lambda: npz_bytes(embeddings=X)[:100], ["t.npz", "truncated or damaged"]),
    "damaged safetensors table": (
        "t.safetensors",
        lambda: good_safetensors()[:20],
        ["t.safetensors", "not a valid safetensors file"],
    ),
    "pickled pt table": (
        "t.pt",
        lambda: torch_bytes({"embeddings": torch.ones(4, 2), "hook": Payload()}),
        ["t.pt", "pickled Python objects"],
    ),
    "table without embeddings": ("t.npz", lambda: npz_bytes(vectors=X), ["t.npz", "must hold 'embeddings'"]),
}


@pytest.mark.parametrize("case", TABLE_CASES, ids=list(TABLE_CASES))
def test_embedding_tables(case, fails, recipe, tmp_path):
    name, data, names = TABLE_CASES[case]
    (tmp_path / name).write_bytes(data())
    fails("check", recipe(table_recipe(tmp_path / name)), names=names)


def test_an_embedding_table_with_texts_is_read(tmp_path):
    from kdforge.families.embedding.teachers import read_table

    (tmp_path / "t.npz").write_bytes(npz_bytes(embeddings=X, texts=np.array([f"text {i}" for i in range(60)])))
    embeddings, texts = read_table(tmp_path / "t.npz")
    assert embeddings.shape == (60, 4) and texts[3] == "text 3"


def test_arrays_path_missing(fails, recipe, tmp_path):
    fails(
        "check",
        recipe(arrays_recipe(tmp_path / "nothing.npz")),
        names=["nothing.npz", "neither an .npz file nor a directory"],
    )


def text_recipe(path, dataset="text_corpus", **options):
    if dataset == "text_lm":
        return {
            "data": {"name": "text_lm", "files": [str(path)], "length": 16, **options},
            "teacher": {"source": "train", "model": {"name": "lm_transformer"}},
            "student": {"model": {"name": "lm_transformer"}},
        }
    return {
        "data": {"name": "text_corpus", "files": [str(path)], **options},
        "teacher": {"source": "table", "model": None, "train": None},
        "student": {"model": {"name": "embed_text"}},
        "losses": [{"name": "cosine"}],
    }


TEXT_CASES = {
    "broken jsonl line": ("t.jsonl", '{"text": "one"}\n{"text": "two"\n', {}, ["t.jsonl", "line 2 is not valid JSON"]),
    "jsonl line without text": (
        "t.jsonl",
        '{"text": "one"}\n{"body": "two"}\n',
        {},
        ["t.jsonl", "line 2 has no 'text' field"],
    ),
    "jsonl line not an object": (
        "t.jsonl",
        '{"text": "one"}\n[1, 2]\n',
        {},
        ["t.jsonl", "line 2 is not a JSON object"],
    ),
    "csv without text column": ("t.csv", "id,body\n1,x\n", {}, ["t.csv", "row 1 has no 'text' field"]),
    "unknown suffix": ("t.md", "# hello\n", {}, ["t.md", ".txt, .jsonl or .csv"]),
    "unknown encoding name": (
        "t.txt",
        "hello\n",
        {"file_encoding": "klingon"},
        ["t.txt", "unknown text encoding 'klingon'"],
    ),
}


@pytest.mark.parametrize("case", TEXT_CASES, ids=list(TEXT_CASES))
def test_text_files(case, fails, recipe, tmp_path):
    name, text, options, names = TEXT_CASES[case]
    (tmp_path / name).write_text(text)
    fails("check", recipe(text_recipe(tmp_path / name, **options)), names=names)


@pytest.mark.parametrize("dataset", ["text_corpus", "text_lm"])
def test_latin1_text_names_the_encoding_option(dataset, fails, recipe, tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    fails(
        "check", recipe(text_recipe(path, dataset)), names=["t.txt", "not utf-8 text", "latin-1", "data.file_encoding"]
    )


def test_latin1_text_reads_with_the_option(tmp_path):
    from kdforge.data.text import read_texts

    path = tmp_path / "t.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    assert read_texts(path, "latin-1") == ["café"]


def tiny_vit_folder(folder):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=10,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    return folder


HF_FOLDER_CASES = {
    "truncated config.json": (
        "config.json",
        lambda p: p.read_bytes()[:50],
        ["vit", "cannot be read", "never downloads"],
    ),
    "damaged weights": ("model.safetensors", lambda p: p.read_bytes()[:100], ["vit", "cannot be read"]),
    "no weights": ("model.safetensors", None, ["vit", "cannot be read"]),
}


@pytest.mark.parametrize("case", HF_FOLDER_CASES, ids=list(HF_FOLDER_CASES))
def test_damaged_hugging_face_model_folders(case, fails, recipe, tmp_path):
    name, data, names = HF_FOLDER_CASES[case]
    folder = tiny_vit_folder(tmp_path / "vit")
    if data is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(data(folder / name))
    fails("check", recipe({"teacher": {"source": "hf", "model": {"name": str(folder)}, "train": None}}), names=names)


def test_a_tokenizer_folder_without_a_tokenizer(fails, recipe, tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "t.txt").write_text("some text\n" * 50)
    fails(
        "check",
        recipe(text_recipe(tmp_path / "t.txt", "text_lm", tokenizer=str(tmp_path / "tok"))),
        names=["tokenizer", "tok", "cannot be read"],
    )


# ----------------------------------------------------------------------------- caches


CACHE_RECIPE = {
    "name": "tiny",
    "data": {"name": "digits"},
    "teacher": {"source": "train", "model": {"name": "cnn", "width": 4, "depth": 1}, "train": {"epochs": 1}},
    "student": {"model": {"name": "mlp", "hidden": [8]}},
    "losses": [{"name": "kd"}],
    "log": {"progress": False},
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    from kdforge.config import Recipe
    from kdforge.run import build_cache

    root = tmp_path_factory.mktemp("cache")
    build_cache(
        Recipe.from_dict({**CACHE_RECIPE, "log": {"dir": str(root / "runs"), "progress": False}}), root / "cache"
    )
    return root


@pytest.fixture
def damaged_cache(cache_dir, tmp_path):
    """``damaged_cache(file, new_bytes)``: a copy of the cache with ``file`` replaced (or
    removed, for None), and a recipe file that trains from it."""

    def make(name, data):
        copy = tmp_path / "cache"
        shutil.copytree(cache_dir / "cache", copy)
        if data is None:
            (copy / name).unlink()
        else:
            (copy / name).write_bytes(data(copy / name))
        raw = {
            **CACHE_RECIPE,
            "teacher": {**CACHE_RECIPE["teacher"], "cache": str(copy)},
            "log": {"dir": str(tmp_path / "runs"), "progress": False},
        }
        path = tmp_path / "cached.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return make


def manifest_without(key):
    def change(path):
        manifest = json.loads(path.read_text())
        manifest.pop(key)
        return json.dumps(manifest).encode()

    return change


def shorter_logits(path):
    logits = np.load(path)
    return npy_bytes(logits[:, :-5])


CACHE_CASES = {
    "no manifest": ("manifest.json", None, ["has no manifest.json", "kdforge cache"]),
    "truncated manifest": (
        "manifest.json",
        lambda p: p.read_bytes()[:100],
        ["manifest.json", "not valid JSON", "line"],
    ),
    "manifest without views": ("manifest.json", manifest_without("views"), ["manifest.json", "lacks views"]),
    "object logits": (
        "logits.npy",
        lambda p: npy_bytes(np.array([None] * 3, dtype=object), allow_pickle=True),
        ["logits.npy", "object-dtype array"],
    ),
    "empty logits": ("logits.npy", lambda p: b"", ["logits.npy", "is empty"]),
    "truncated logits": ("logits.npy", lambda p: p.read_bytes()[:1000], ["logits.npy", "truncated or damaged"]),
    "logits of other samples": ("logits.npy", shorter_logits, ["logits.npy", "has shape", "kdforge cache"]),
}


@pytest.mark.parametrize("case", CACHE_CASES, ids=list(CACHE_CASES))
def test_damaged_caches(case, fails, damaged_cache):
    name, data, names = CACHE_CASES[case]
    fails("train", damaged_cache(name, data), names=names)


# ----------------------------------------------------------------------------- output folders


def test_log_dir_blocked_by_a_file(fails, recipe, tmp_path):
    (tmp_path / "blocked").write_text("a file")
    fails(
        "train",
        recipe({"log": {"dir": str(tmp_path / "blocked")}}),
        names=["log.dir", "blocked", "a file of that name is in the way"],
    )


def test_log_dir_below_a_file(fails, recipe, tmp_path):
    (tmp_path / "blocked").write_text("a file")
    fails("train", recipe({"log": {"dir": str(tmp_path / "blocked" / "runs")}}), names=["log.dir", "not writable"])


def test_log_dir_on_a_pseudo_filesystem(fails, recipe):
    fails(
        "train", recipe({"log": {"dir": "/proc/kdforge-runs"}}), names=["log.dir", "/proc/kdforge-runs", "not writable"]
    )


def test_cache_out_blocked_by_a_file(fails, recipe, tmp_path):
    (tmp_path / "out").write_text("a file")
    fails("cache", recipe(), "--out", tmp_path / "out", names=["cache folder", "a file of that name is in the way"])


def test_log_dir_is_checked_before_anything_trains(fails, recipe, tmp_path, monkeypatch):
    from kdforge.session import Session

    def no_training(*args, **kwargs):
        raise AssertionError("the teacher started training before log.dir was checked")

    monkeypatch.setattr(Session, "fit_teacher", no_training)
    (tmp_path / "blocked").write_text("a file")
    fails("train", recipe({"log": {"dir": str(tmp_path / "blocked")}}), names=["log.dir"])


# ----------------------------------------------------------------------------- plugins

PLUGIN_CASES = {
    "syntax error": ("x = (\n", ["bad_plugin.py", "SyntaxError at line 1"]),
    "raises while imported": (
        "import os\n\nraise RuntimeError('no GPU here')\n",
        ["bad_plugin.py", "RuntimeError at line 3", "no GPU here"],
    ),
    "registers a taken name": (
        "from kdforge.models import MODELS\n\n@MODELS.register('mlp')\nclass Mine:\n    pass\n",
        ["bad_plugin.py", "already registered"],
    ),
}


@pytest.mark.parametrize("case", PLUGIN_CASES, ids=list(PLUGIN_CASES))
def test_plugin_files(case, fails, tmp_path):
    text, names = PLUGIN_CASES[case]
    (tmp_path / "bad_plugin.py").write_text(text)
    fails("--plugin", tmp_path / "bad_plugin.py", "list", "models", names=names)


def test_plugin_not_found(fails, tmp_path):
    fails("--plugin", tmp_path / "none.py", "list", names=["plugin file", "none.py", "not found"])


def test_plugin_module_not_importable(fails):
    fails("--plugin", "no_such_module_xyz", "list", names=["plugin 'no_such_module_xyz' cannot be imported"])


# ----------------------------------------------------------------------------- the Python API and bugs


def test_run_raises_the_same_clear_error(tiny_recipe, tmp_path):
    import kdforge
    from kdforge.errors import KdforgeError

    with pytest.raises(KdforgeError, match="one folder"):
        kdforge.Recipe.from_dict({**tiny_recipe, "name": "../../escape"})
    (tmp_path / "blocked").write_text("a file")
    recipe = kdforge.Recipe.from_dict({**tiny_recipe, "log": {"dir": str(tmp_path / "blocked")}})
    with pytest.raises(KdforgeError, match="log.dir"):
        kdforge.run(recipe)


def test_a_bug_in_kdforge_keeps_its_traceback_and_asks_for_a_report(invoke, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    import kdforge.check

    monkeypatch.setattr(kdforge.check, "check", broken)
    assert invoke("check", "digits_kd") == 1
    captured = capsys.readouterr()
    assert "Traceback" in captured.err and "ZeroDivisionError" in captured.err
    assert "bug in kdforge" in captured.out and "report it" in captured.out


def test_there_are_at_least_sixty_bad_inputs():
    cases = [
        RECIPE_CASES,
        YAML_CASES,
        OVERRIDE_CASES,
        CLI_ARGUMENT_CASES,
        TEACHER_FILE_CASES,
        RUN_FILE_CASES,
        ARRAY_CASES,
        NPZ_CASES,
        TEXT_CASES,
        TABLE_CASES,
        HF_FOLDER_CASES,
        CACHE_CASES,
        PLUGIN_CASES,
    ]
    singles = [
        name
        for name in globals()
        if name.startswith("test_") and name not in ("test_there_are_at_least_sixty_bad_inputs",)
    ]
    assert sum(map(len, cases)) + len(singles) >= 60


# ----------------------------------------------------------------------------- writes that fail


class FullDisk:
    """Replaces files._open_tmp: once ``full`` is set, every write fails with ENOSPC."""

    def __init__(self, fill_after=lambda path: False):
        self.full, self.fill_after, self.refused = False, fill_after, []

    def __call__(self, path):
        if self.full:
            self.refused.append(path.name.removesuffix(files.TMP_SUFFIX))
            return _NoSpace(path)
        self.full = self.fill_after(path)
        return open(path, "wb")


class _NoSpace(io.FileIO):
    def __init__(self, path):
        super().__init__(path, "wb")

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    best = tmp_path / "best.pt"
    files.save_torch({"epoch": 1, "w": torch.ones(3)}, best)
    before = best.read_bytes()
    disk = FullDisk()
    disk.full = True
    monkeypatch.setattr(files, "_open_tmp", disk)
    with pytest.raises(files.FileWriteError) as failed:
        files.save_torch({"epoch": 2, "w": torch.zeros(1000)}, best)
    message = str(failed.value)
    assert "best.pt" in message and "no space left" in message and "the previous 'best.pt' is intact" in message
    assert re.search(r"it needs [\d.,]+ (KB|bytes)", message)
    assert best.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_while_logging_metrics_is_a_message(tmp_path):
    from types import SimpleNamespace

    from kdforge.callbacks import JsonlLogger

    logger = JsonlLogger("/dev/full")  # every write to it fails with ENOSPC
    trainer = SimpleNamespace(stage="distill", pos=SimpleNamespace(step=1))
    with pytest.raises(
        files.FileWriteError,
        match="could not append to '/dev/full': No space left on device; the lines already there are intact",
    ):
        logger.on_epoch_end(trainer, {"epoch": 1, "train": {"loss": 1.0}, "val": {"accuracy": 0.5}})


def test_a_full_disk_during_training_loses_nothing_and_the_run_resumes(tiny_recipe, tmp_path, monkeypatch):
    import kdforge
    from kdforge.files import FileWriteError

    raw = {
        **tiny_recipe,
        "teacher": {**tiny_recipe["teacher"], "train": {"epochs": 1}},
        "train": {"epochs": 3, "baseline": False, "checkpoint_interval": 0},
    }
    # the disk fills once the student's first last.pt is written (the teacher's files are already there)
    disk = FullDisk(lambda path: path.name == "last.pt.tmp" and path.parent.name.startswith("tiny-"))
    monkeypatch.setattr(files, "_open_tmp", disk)
    with pytest.raises(FileWriteError, match=r"last\.pt': no space left on device .*the previous 'last\.pt' is intact"):
        kdforge.run(kdforge.Recipe.from_dict(raw))
    assert disk.refused[:2] == ["last.pt", "best.pt"]  # best.pt was tried too, and failed alike
    run_dir = next((tmp_path / "runs").glob("tiny-*"))
    assert files.load_torch(run_dir / "last.pt")["position"]["epoch"] == 1  # the previous checkpoint, whole
    assert files.load_torch(run_dir / "teacher" / "best.pt")["epoch"] == 1  # the teacher's best weights
    assert not list(run_dir.rglob("*.tmp"))
    monkeypatch.setattr(files, "_open_tmp", lambda path: open(path, "wb"))  # space again
    (run_dir / "stale.pt.tmp").write_bytes(b"left by a kill")
    result = kdforge.run(kdforge.Recipe.from_yaml(run_dir / "config.yaml"), resume=run_dir)
    assert result.results["student"]["epochs_run"] == 3 and not (run_dir / "stale.pt.tmp").exists()


WRITER = """
import sys, torch
from kdforge import files
path = sys.argv[1]
for step in range(10**6):
    files.save_torch({"step": step, "w": torch.full((500_000,), float(step))}, path)
    print(step, flush=True)
"""


def test_a_kill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    for delay in (0.05, 0.2, 0.45):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # one checkpoint is complete; kill it while it writes the next ones
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = files.load_torch(path)
        assert torch.equal(state["w"], torch.full((500_000,), float(state["step"])))
    files.remove_stale_tmp(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
