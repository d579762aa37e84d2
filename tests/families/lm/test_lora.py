"""LoRA students (``student.peft``): only the adapters train, checkpoints hold them alone and a resumed run equals
an uninterrupted one, the merged student computes what the adapted one did, and the export is peft's own adapter
folder (or the merged model)."""

import io
import signal

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kdforge.adapters import adapt, is_adapted, merge
from kdforge.callbacks import Callback
from kdforge.config import Recipe
from kdforge.config.student import PeftConfig
from kdforge.errors import ConfigError, KdforgeError, RunInterrupted
from kdforge.export import load_student
from kdforge.models import build_model
from kdforge.runner import run
from kdforge.session import Session


def ids(seed=0):
    return torch.randint(0, 320, (2, 12), generator=torch.Generator().manual_seed(seed))


def adapted_student(path, **peft):
    torch.manual_seed(0)
    model = build_model("hf_causal_lm", input_shape=(12,), num_classes=320, path=str(path))
    return adapt(model, PeftConfig(**peft))


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_only_the_adapters_learn_and_merged_they_compute_the_same(tiny_llama, method):
    model = adapted_student(tiny_llama, method=method, r=4, target_modules=["q_proj", "v_proj"])
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    kinds = {"lora_A", "lora_B", *(["lora_magnitude_vector"] if method == "dora" else [])}
    found = {next(part for part in name.split(".") if part.startswith("lora_")) for name in trainable}
    assert trainable and found == kinds
    assert {name.split(".lora_")[0].rpartition(".")[2] for name in trainable} == {"q_proj", "v_proj"}
    for parameter in model.parameters():  # B starts at zero: give it weights, so that merging has work to do
        if parameter.requires_grad:
            torch.nn.init.normal_(parameter, std=0.1)
    model(ids()).logsumexp(-1).mean().backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())  # frozen: no gradient at all
    with torch.no_grad():
        adapted = model(ids())
        plain = merge(model)
        assert not is_adapted(plain) and torch.allclose(plain(ids()), adapted, atol=1e-5)
    every = adapted_student(tiny_llama)  # all-linear: every linear layer but the output head
    names = {n.split(".lora_")[0].rpartition(".")[2] for n, p in every.named_parameters() if p.requires_grad}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_target_modules_that_match_nothing_are_named(tiny_llama):
    with pytest.raises(ConfigError, match=r"target_modules: qkv match no linear layer .*q_proj"):
        adapted_student(tiny_llama, target_modules=["q_proj", "qkv"])


def lora_recipe(tmp_path, lm_tokenizer, tiny_llama, **student):
    return {
        "name": "lora",
        "seed": 0,
        "data": {"name": "text_lm", "tokenizer": str(lm_tokenizer), "length": 32, "batch_size": 16,
                 "max_chars": 12_000},
        "teacher": {"source": "hf", "model": {"name": str(tiny_llama), "output": "causal_lm"}},
        "student": {"model": {"name": "hf_causal_lm", "path": str(tiny_llama), **student},
                    "peft": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
        "optim": {"lr": 3e-2},
        "train": {"epochs": 2, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }  # fmt: skip


def test_a_resumed_lora_run_equals_an_uninterrupted_one_and_leaves_as_adapters_or_merged(
    tmp_path, lm_tokenizer, tiny_llama, invoke, monkeypatch
):
    from peft import PeftModel

    raw = lora_recipe(tmp_path, lm_tokenizer, tiny_llama)
    whole = run(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    checkpoint = torch.load(whole.run_dir / "last.pt", weights_only=True)
    assert set(checkpoint["trainable"]["student"]) == set(load_file(whole.run_dir / "student_adapter.safetensors"))
    assert all(".lora_" in name for name in checkpoint["trainable"]["student"])  # adapters only, not the model

    class CtrlC(Callback):  # stop in the second epoch, then resume
        def on_step_end(self, trainer, samples):
            if trainer.stage == "distill" and trainer.pos.step == trainer.steps_per_epoch + 2:
                signal.raise_signal(signal.SIGINT)

    callbacks = Session.callbacks
    monkeypatch.setattr(Session, "callbacks", lambda self: [*callbacks(self), CtrlC()])
    stopped_raw = {**raw, "log": {**raw["log"], "dir": str(tmp_path / "stopped")}}
    with pytest.raises(RunInterrupted) as stopped:
        run(Recipe.from_dict(stopped_raw), console=Console(file=io.StringIO()))
    monkeypatch.setattr(Session, "callbacks", callbacks)
    resumed = run(Recipe.from_dict(stopped_raw), resume=stopped.value.run_dir, console=Console(file=io.StringIO()))
    expected, got = (load_file(r.run_dir / "student_adapter.safetensors") for r in (whole, resumed))
    assert expected.keys() == got.keys() and all(torch.allclose(expected[k], got[k], atol=1e-6) for k in expected)

    student = load_student(whole.run_dir)  # the merged student: a plain model
    assert not is_adapted(student)
    assert invoke("export", whole.run_dir, "--format", "hf") == 0
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama), whole.run_dir / "student_adapter"
    ).eval()
    x = ids()
    with torch.no_grad():
        assert torch.allclose(adapted(x).logits[..., :320], student(x), atol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
        assert not torch.allclose(base(x).logits[..., :320], student(x), atol=1e-2)  # the adapters changed it
    assert invoke("export", whole.run_dir, "--format", "hf", "--merge", "--out", tmp_path / "merged") == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(merged(x).logits[..., :320], student(x), atol=1e-5)


def test_a_layer_dropped_lora_student_leaves_merged(tmp_path, lm_tokenizer, tiny_llama, invoke, capsys):
    raw = lora_recipe(tmp_path, lm_tokenizer, tiny_llama, layers="::2")
    raw["train"]["epochs"] = 1
    result = run(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    assert invoke("export", result.run_dir, "--format", "hf") == 2
    assert "export it with --merge" in capsys.readouterr().out.replace("\n", "")
    assert invoke("export", result.run_dir, "--format", "hf", "--merge", "--out", tmp_path / "merged") == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged").config.num_hidden_layers == 2


def test_lora_with_fsdp_or_without_peft_is_one_message(tmp_path, lm_tokenizer, tiny_llama, monkeypatch):
    raw = lora_recipe(tmp_path, lm_tokenizer, tiny_llama)
    with pytest.raises(ConfigError, match="student.peft trains adapters only.*drop train.fsdp"):
        Recipe.from_dict({**raw, "train": {**raw["train"], "fsdp": True}})
    monkeypatch.setitem(__import__("sys").modules, "peft", None)  # as if it were not installed
    with pytest.raises(KdforgeError, match=r"student.peft needs the peft library: pip install 'kdforge\[peft\]'"):
        adapted_student(tiny_llama)


def test_lora_with_an_ema_teacher_is_refused():
    raw = {
        "name": "lora-ema",
        "data": {"name": "digits"},
        "teacher": {"source": "ema", "decay": 0.99},
        "student": {"model": {"name": "mlp"}, "peft": {"r": 2}},
        "losses": [{"name": "kd"}],
    }
    with pytest.raises(ConfigError, match="an ema teacher is the moving average of the whole student"):
        Recipe.from_dict(raw)
