"""Files kdforge cannot trust: teacher checkpoints, damaged run folders and teacher caches. Each is refused
with one message naming the file."""

from __future__ import annotations

import collections
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
import yaml

from errorkit import Payload, good_safetensors, npy_bytes, torch_bytes
from kdforge import files

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


def test_safetensors_whose_header_length_starts_like_a_pickle_loads(tmp_path):
    """The first byte of a safetensors file is its header's length mod 256: 0x80 there is not a pickle."""
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    for pad in range(256):  # metadata of growing length until the header's length ends in 0x80
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert torch.equal(files.load_safetensors(path)["w"], torch.ones(2))


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
    "last.pt pickled without torch": (
        "last.pt",
        lambda: pickle.dumps({"epoch": 3, "hook": Payload()}),
        ["last.pt", "pickled Python objects (posix.system)", "never loads"],
    ),
    "last.pt pickled at protocol 0": (
        "last.pt",
        lambda: pickle.dumps({"state": collections.OrderedDict(a=1)}, protocol=0),
        ["last.pt", "pickled Python objects (collections.OrderedDict)"],
    ),
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
    from kdforge.runner import build_cache

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
    return npy_bytes(np.load(path)[:-5])


SHARD = "shards/logits-v0-00000.npy"
CACHE_CASES = {
    "no manifest": ("manifest.json", None, ["has no manifest.json", "kdforge cache"]),
    "truncated manifest": (
        "manifest.json",
        lambda p: p.read_bytes()[:100],
        ["manifest.json", "not valid JSON", "line"],
    ),
    "manifest without views": ("manifest.json", manifest_without("views"), ["manifest.json", "lacks views"]),
    "object logits": (
        SHARD,
        lambda p: npy_bytes(np.array([None] * 3, dtype=object), allow_pickle=True),
        [SHARD, "object-dtype array"],
    ),
    "empty logits": (SHARD, lambda p: b"", [SHARD, "is empty"]),
    "truncated logits": (SHARD, lambda p: p.read_bytes()[:1000], [SHARD, "truncated or damaged"]),
    "logits of other samples": (SHARD, shorter_logits, [SHARD, "holds [1162, 10] float32", "kdforge cache"]),
    "a missing shard": (SHARD, None, [SHARD, "not found"]),
}


@pytest.mark.parametrize("case", CACHE_CASES, ids=list(CACHE_CASES))
def test_damaged_caches(case, fails, damaged_cache):
    name, data, names = CACHE_CASES[case]
    fails("train", damaged_cache(name, data), names=names)
