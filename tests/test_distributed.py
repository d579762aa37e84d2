"""Data-parallel training: two gloo processes on CPU (launched with torchrun, as users do)
follow the single-process run with the same global batch, and a run interrupted on one
process resumes on two; with the student replicated (DDP) or sharded (FSDP2)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kdforge import Recipe, run
from kdforge.callbacks import Callback
from kdforge.errors import KdforgeError, RunInterrupted
from kdforge.session import Session

# under pytest-xdist these run one after the other, in one worker: each takes both cores for its two processes
pytestmark = pytest.mark.xdist_group("torchrun")


def torchrun(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port of its own
        "--nproc-per-node",
        "2",
        "-m",
        "kdforge",
        *map(str, args),
    ]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


DDP = {
    "name": "ddp",
    "seed": 0,
    "data": {"name": "digits", "batch_size": 64},
    "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [32]}, "train": {"epochs": 2}},
    "student": {"model": {"name": "mlp", "hidden": [16]}},
    "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 4.0}],
    "optim": {"lr": 3e-3},
    "train": {"epochs": 2, "baseline": False},
}
FSDP = {  # a student with a block list (sharded block by block), a projector outside it, clipped gradients
    **DDP,
    "name": "fsdp",
    "student": {"model": {"name": "vit", "patch_size": 4, "embed_dim": 16, "depth": 2, "heads": 2}},
    "losses": [
        *DDP["losses"],
        {"name": "hint", "student": "head:input", "teacher": "features.0", "projector": "linear", "weight": 0.1},
    ],
    "train": {**DDP["train"], "fsdp": True, "grad_clip": 0.5},
    "optim": {
        "name": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
    },  # AdamW's normalised steps amplify summation-order rounding in a ViT to ~1e-3
}


FSDP_LM = {  # a Hugging Face student sharded block by block, its chunked losses reading the head outside forward
    **DDP,
    "name": "fsdp-lm",
    "data": {"name": "text_lm", "length": 32, "batch_size": 16},  # files, tokenizer: written by the test
    "teacher": {"source": "hf", "model": {"output": "causal_lm"}},  # name: a GPT-2 written by the test
    "student": {"model": {"name": "hf_causal_lm", "hf_config": {"model_type": "llama", "hidden_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}}},
    "losses": [{"name": "ce", "weight": 0.5, "chunked": True},
               {"name": "kd", "weight": 0.5, "chunked": True, "topk": 8}],  # the teacher's top-8 targets
    "train": {**DDP["train"], "fsdp": True},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
}  # fmt: skip


def gpt2_run(tmp_path):
    """FSDP_LM on a corpus file and a GPT-2 teacher written here, which both processes read alike."""
    from datafiles import write_causal_lm, write_tokenizer

    # the built-in docstring corpus depends on what the process has imported: both runs read this file instead
    lines = [f"Line {i} says that {i % 7} items are kept and {i % 5} are dropped." for i in range(300)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines))
    # GPT-2 ties its head to its embeddings: stored once, loaded by each process into both, its own shard of them
    gpt2 = write_causal_lm(write_tokenizer(tmp_path / "gpt2"), 320, "gpt2", layers=2)
    return {
        **FSDP_LM,
        "data": {**FSDP_LM["data"], "files": [str(tmp_path / "corpus.txt")], "tokenizer": str(gpt2)},
        "teacher": {**FSDP_LM["teacher"], "model": {**FSDP_LM["teacher"]["model"], "name": str(gpt2)}},
        "log": {"dir": str(tmp_path / "single"), "progress": False},
    }


def whole_then_sharded(raw, tmp_path):
    """``raw`` run in one process with its teacher whole, then on two with it sharded: both train the same student
    (to 1e-5). (The single run, the two processes' run folder, the sharded recipe.)"""
    single = run(Recipe.from_dict(raw))
    sharded = {**raw, "teacher": {**raw["teacher"], "shard": True}, "log": {**raw["log"], "dir": str(tmp_path / "two")}}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(sharded))
    torchrun("train", tmp_path / "two.yaml", cwd=tmp_path)
    two = next((tmp_path / "two").glob("fsdp-lm-*"))
    expected, got = load_file(single.run_dir / "student.safetensors"), load_file(two / "student.safetensors")
    assert all(torch.allclose(expected[k], got[k], atol=1e-5) for k in expected)
    return single, two, sharded


def test_a_sharded_student_and_a_sharded_teacher_on_two_processes_match_one_process_with_both_whole(tmp_path):
    """A Hugging Face student (FSDP, its chunked losses reading the head outside forward) and a Hugging Face
    teacher (teacher.shard: built empty, each process loading half of it from the weight file and gathering a block
    at a time), against one process."""
    raw = gpt2_run(tmp_path)
    single, two, sharded = whole_then_sharded(raw, tmp_path)
    assert (two / "student_hf" / "config.json").exists()
    teacher = json.loads((two / "results.json").read_text())["teacher"]
    assert (
        teacher["sharded_over"] == 2 and abs(teacher["test"]["loss"] - single.results["teacher"]["test"]["loss"]) < 1e-6
    )
    with pytest.raises(KdforgeError, match="teacher.shard shards the teacher across torchrun's processes"):
        run(Recipe.from_dict(sharded))  # one process: nothing to shard over


def test_a_sharded_teacher_gives_the_top_k_targets_of_the_students_own_rows_as_a_whole_one_does(tmp_path):
    """GKD with teacher.shard: each process's student writes its rows (greedy, every row: a row is the same whichever
    process writes it, and its length its own), and the teacher, sharded over the two processes, gives their top-8
    targets. Two processes match one whose teacher is whole."""
    on_policy = {"fraction": 1.0, "temperature": 0.0, "max_new_tokens": 8, "prompt_tokens": 8}
    raw = gpt2_run(tmp_path)
    raw["train"] = {**raw["train"], "fsdp": False, "epochs": 1, "on_policy": on_policy}
    whole_then_sharded(raw, tmp_path)


@pytest.mark.parametrize("raw", [DDP, FSDP], ids=["ddp", "fsdp"])
def test_two_processes_match_one_and_resume_across_world_sizes(raw, tmp_path, monkeypatch):
    raw = {**raw, "log": {"dir": str(tmp_path / "single"), "progress": False}}
    single = run(Recipe.from_dict(raw))

    # DDP: the two processes run in the single run's folder and reuse its teacher: rank 0 copies it once, and says
    # from where (a teacher reused trains the same student as one trained)
    log_dir = tmp_path / ("two" if raw["train"].get("fsdp") else "single")
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({**raw, "log": {**raw["log"], "dir": str(log_dir)}}))
    torchrun("train", tmp_path / "two.yaml", cwd=tmp_path)
    (two,) = [p for p in log_dir.glob(f"{raw['name']}-*") if p != single.run_dir]  # rank 0 alone writes
    expected = load_file(single.run_dir / "student.safetensors")
    got = load_file(two / "student.safetensors")
    assert all(torch.allclose(expected[k], got[k], atol=1e-5) for k in expected)  # same global batch, same steps
    assert (two / "results.json").exists()
    if not raw["train"].get("fsdp"):
        reused = json.loads((two / "results.json").read_text())["teacher"]
        assert (
            reused["cached_from"]
            == str(single.run_dir / "teacher")
            == json.loads((two / "teacher" / "teacher.json").read_text())["teacher"]["cached_from"]
        )
        assert (
            load_file(two / "teacher" / "teacher.safetensors").keys()
            == load_file(single.run_dir / "teacher" / "teacher.safetensors").keys()
        )
        assert not list(two.rglob("*.tmp"))

    class CtrlC(Callback):  # interrupt a single-process run in its second epoch...
        def on_step_end(self, trainer, samples):
            if trainer.stage == "distill" and trainer.pos.step == 25:
                signal.raise_signal(signal.SIGINT)

    callbacks = Session.callbacks
    monkeypatch.setattr(Session, "callbacks", lambda self: [*callbacks(self), CtrlC()])
    with pytest.raises(RunInterrupted) as stopped:
        run(Recipe.from_dict({**raw, "log": {**raw["log"], "dir": str(tmp_path / "resumed")}}))
    torchrun("train", "--resume", stopped.value.run_dir, cwd=tmp_path)  # ...and finish it on two processes
    resumed = load_file(stopped.value.run_dir / "student.safetensors")
    assert all(torch.allclose(expected[k], resumed[k], atol=1e-5) for k in expected)


def test_a_teacher_that_cannot_be_sharded_is_one_message():
    from kdforge.distributed import shard_teacher
    from kdforge.errors import ConfigError

    with pytest.raises(KdforgeError, match="teacher.shard shards a teacher block by block, but this one has no block"):
        shard_teacher(torch.nn.Linear(4, 2), torch.device("cpu"))  # refused before any process group is needed
    for wrong in ({"trainable": True}, {"cache": "teacher-cache"}):
        with pytest.raises(ConfigError, match="teacher.shard shards a frozen teacher that runs live"):
            Recipe.from_dict({**DDP, "teacher": {**DDP["teacher"], "shard": True, **wrong}})
