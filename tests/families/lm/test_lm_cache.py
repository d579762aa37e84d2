"""A language-model teacher cached as top-k token ids and log-probabilities per position: compact, read back
exactly, trained from with no teacher loaded, and giving the loss the online teacher gives at the same k."""

import io

import pytest
import torch
from rich.console import Console

from kdforge.config import Recipe
from kdforge.distiller import Distiller
from kdforge.losses.terms import build_losses
from kdforge.runner import build_cache, run
from kdforge.session import Session
from kdforge.teachers import TEACHER_SOURCES
from kdforge.teachers.cache import CachedTeacher
from kdforge.teachers.teacher import Teacher


@pytest.fixture
def recipe(tmp_path, lm_tokenizer, tiny_llama):
    return {
        "name": "lm-cache",
        "data": {"name": "text_lm", "tokenizer": str(lm_tokenizer), "length": 32, "batch_size": 8, "max_chars": 20_000},
        "teacher": {"source": "hf", "model": {"name": str(tiny_llama), "output": "causal_lm"}},
        "student": {"model": {"name": "hf_causal_lm", "hf_config": {"model_type": "llama", "hidden_size": 16,
                    "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}}},
        "losses": [{"name": "kd", "temperature": 1.0, "chunked": True}],
        "train": {"epochs": 1, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }  # fmt: skip


@pytest.mark.parametrize("bits", [16, 8])
def test_the_cache_holds_each_positions_top_k_in_a_few_bytes_and_gives_the_online_loss(recipe, tmp_path, bits):
    manifest = build_cache(
        Recipe.from_dict(recipe), tmp_path / "cache", topk=8, logprob_bits=bits, console=Console(file=io.StringIO())
    )
    assert manifest["id_bits"] == 9 and manifest["bytes_per_token"] == 8 * bits // 8 + 9  # 8 ids of 9 bits: 9 bytes
    session = Session(Recipe.from_dict(recipe), tmp_path / "runs" / "read", Console(file=io.StringIO()))
    live, _ = session.live_teacher()
    cached = CachedTeacher(tmp_path / "cache", session)
    index = torch.tensor([3, 0, 11, 7])
    x, y = session.data.train.x[index], session.data.train.y[index]
    sparse, _ = cached.lookup(index)
    online = torch.log_softmax(live(x).float(), -1).topk(8)  # the whole logits, made here to compare
    assert torch.equal(sparse.indices, online.indices)
    assert torch.allclose(sparse.log_probs, online.values, atol=1e-2 if bits == 16 else 0.04)
    losses = []
    for teacher, terms in (
        (cached, [{"name": "kd", "temperature": 1.0}]),
        (live, [{"name": "kd", "temperature": 1.0, "topk": 8}]),  # the online teacher kept to the same k
        (cached, [{"name": "kd", "temperature": 1.0, "chunked": True}]),
    ):
        torch.manual_seed(0)
        student = session.build_student()
        distiller = Distiller(student, teacher, build_losses(terms), x, per_token=True)
        losses.append(float(distiller(x, y, index=index).loss.detach()))
    assert losses[0] == pytest.approx(losses[1], rel=2e-3 if bits == 16 else 3e-2)
    assert losses[2] == pytest.approx(losses[0], rel=1e-5)


def test_a_student_trains_from_the_lm_cache_with_no_teacher_loaded(recipe, tmp_path, monkeypatch):
    build_cache(Recipe.from_dict(recipe), tmp_path / "cache", topk=16, console=Console(file=io.StringIO()))
    monkeypatch.setattr(TEACHER_SOURCES, "get", lambda name: pytest.fail("a teacher source was used"))
    monkeypatch.setattr(Teacher, "forward", lambda self, x: pytest.fail("the teacher ran"))
    raw = {**recipe, "teacher": {**recipe["teacher"], "cache": str(tmp_path / "cache")}}
    result = run(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    assert result.results["teacher"]["cache"] == str(tmp_path / "cache")
    assert 1 < result.results["student"]["test"]["perplexity"] < 400  # the teacher is untrained: near uniform


def test_the_shipped_cache_recipe_runs_its_two_commands_the_second_with_no_teacher_at_all(tmp_path, invoke):
    """``hf_llm_cache`` as its comment says: ``kdforge cache``, then ``kdforge train`` from the store; the teacher's
    weights are gone by then, and the student is still evaluated."""
    import json

    from datafiles import hf_llm_stand_ins

    given = [*hf_llm_stand_ins("hf_llm_cache", tmp_path), f"log.dir={tmp_path / 'runs'}", "log.progress=false"]
    assert invoke("cache", "hf_llm_cache", *given, "--topk", "8", "--out", tmp_path / "store") == 0
    (tmp_path / "teacher" / "model.safetensors").unlink()  # no teacher left to load
    assert invoke("train", "hf_llm_cache", *given, f"teacher.cache={tmp_path / 'store'}", "train.epochs=1") == 0
    (run_dir,) = (tmp_path / "runs").glob("hf-llm-cache-2*")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["teacher"]["cache"] == str(tmp_path / "store") and results["teacher"]["test"]["perplexity"] > 1
    assert results["student"]["test"]["perplexity"] > 1 and results["student_alone"]["test"]["perplexity"] > 1
