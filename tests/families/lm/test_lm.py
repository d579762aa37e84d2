"""Language-model distillation: token windows, token-level terms, perplexity, causal models."""

import io
import json
import math

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from kdforge import Recipe, run
from kdforge.check import check
from kdforge.data import build_dataset
from kdforge.data.bundle import PAD_TARGET
from kdforge.distiller import Distiller
from kdforge.errors import KdforgeError
from kdforge.evaluate import evaluate, score, score_gain, shown
from kdforge.families.lm.data import ByteTokenizer, windows
from kdforge.families.lm.generate import generate, generate_batch
from kdforge.losses import build_losses
from kdforge.models import build_model
from kdforge.teachers import Teacher


def test_windows_pair_each_token_with_the_next_and_pad_the_tail():
    x, y = windows(list(range(10)), 3)
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and y.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    x, y = windows(list(range(1, 9)), 3)  # 7 predictions: the last window has one real position
    assert x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 0]]
    assert y.tolist() == [[2, 3, 4], [5, 6, 7], [8, PAD_TARGET, PAD_TARGET]]
    with pytest.raises(KdforgeError, match="too few"):
        windows([1], 3)


def test_text_lm_splits_by_document_and_decodes_its_windows(tmp_path):
    docs = [f"document number {i} says {'abc' * (i % 5)} and ends." for i in range(60)]
    (tmp_path / "docs.txt").write_text("\n".join(docs))
    data = build_dataset("text_lm", seed=0, files=[str(tmp_path / "docs.txt")], length=16, max_chars=None)
    assert data.task == "lm" and data.num_classes == 256 and data.input_shape == (16,)
    texts = {split: "".join(data.decode(getattr(data, split).x)) for split in ("train", "val", "test")}
    numbers = {split: {int(w) for w in text.replace(".", " ").split() if w.isdigit()} for split, text in texts.items()}
    assert not numbers["train"] & numbers["test"] and not numbers["train"] & numbers["val"]  # no document in two splits
    real = data.train.y[:, :-1] != PAD_TARGET
    assert torch.equal(data.train.x[:, 1:][real], data.train.y[:, :-1][real])
    assert (data.train.y == PAD_TARGET).any() and (
        data.train.y[:-1] != PAD_TARGET
    ).all()  # only the last window is padded
    assert ByteTokenizer().decode(ByteTokenizer().encode("naïve ✓")) == "naïve ✓"


def test_token_level_kd_and_ce_see_every_position_as_a_sample():
    torch.manual_seed(0)
    student = build_model("rwkv_spiking", input_shape=(12,), num_classes=40, size="tiny")
    teacher_model = build_model("lm_transformer", input_shape=(12,), num_classes=40, width=32, depth=1, heads=2).eval()
    terms = build_losses([{"name": "ce"}, {"name": "kd", "temperature": 2.0}])
    x = torch.randint(0, 40, (3, 12))
    distiller = Distiller(student, Teacher(teacher_model), terms, x, per_token=True)
    y = x.roll(-1, 1)
    y[2, 7:] = PAD_TARGET  # the padded tail of a split's last window
    out = distiller(x, y)
    zs, zt = student(x), teacher_model(x)
    # reference: T² · KL(teacher ‖ student) at T = 2 at each real position, averaged over them
    kl = [
        (F.softmax(zt[b, t] / 2, -1) * (F.log_softmax(zt[b, t] / 2, -1) - F.log_softmax(zs[b, t] / 2, -1))).sum() * 4
        for b in range(3)
        for t in range(12)
        if y[b, t] != PAD_TARGET
    ]
    ce = [F.cross_entropy(zs[b, t][None], y[b, t][None]) for b in range(3) for t in range(12) if y[b, t] != PAD_TARGET]
    assert len(kl) == 31
    assert out.parts["kd"].item() == pytest.approx(torch.stack(kl).mean().item(), rel=1e-4)
    assert out.parts["ce"].item() == pytest.approx(torch.stack(ce).mean().item(), rel=1e-4)


@pytest.mark.parametrize(
    "term",
    [
        {"name": "kd", "temperature": {"learnable": "ctkd", "init": 4.0, "mode": "instance"}},
        {"name": "kd", "direction": "reverse", "temperature": {"schedule": "cosine", "start": 4.0, "end": 1.0}},
        {"name": "hint", "student": "blocks", "teacher": "blocks", "mapping": "uniform", "projector": "linear"},
        {"name": "fdd", "student": "blocks", "teacher": "blocks", "mapping": "uniform"},
        {"name": "cka", "student": "blocks.1", "teacher": "blocks.1"},
    ],
    ids=lambda term: term["name"] + "-" + str(term.get("direction") or term.get("mapping") or "block"),
)
def test_methods_library_terms_distil_a_language_model(term):
    torch.manual_seed(0)
    student = build_model("rwkv_spiking", input_shape=(16,), num_classes=40, size="tiny")
    teacher = build_model("lm_transformer", input_shape=(16,), num_classes=40, width=32, depth=2, heads=2).eval()
    x = torch.randint(0, 40, (4, 16))
    distiller = Distiller(student, Teacher(teacher), build_losses([term]), x, per_token=True)
    out = distiller(x, x.roll(-1, 1))
    out.loss.backward()
    assert out.loss.isfinite() and out.loss > 0
    assert student.embed.weight.grad.abs().sum() > 0 and all(p.grad is None for p in teacher.parameters())


def test_perplexity_is_e_to_the_mean_token_cross_entropy_and_lower_scores_higher():
    torch.manual_seed(0)
    model = build_model("lm_transformer", input_shape=(8,), num_classes=20, width=16, depth=1, heads=2)
    x = torch.randint(0, 20, (5, 8))
    y = x.roll(-1, 1)
    y[4, 5:] = PAD_TARGET
    metrics = evaluate(model, [(x[:3], y[:3]), (x[3:], y[3:])], task="lm")
    with torch.no_grad():
        expected = F.cross_entropy(model.eval()(x).flatten(0, 1), y.flatten(), ignore_index=PAD_TARGET)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected.item()), rel=1e-5)
    assert score({"perplexity": 4.0, "accuracy": 0.1, "loss": 1.0}) > score(
        {"perplexity": 5.0, "accuracy": 0.9, "loss": 1.0}
    )
    assert shown(metrics).startswith("PPL")
    assert score_gain(
        {"perplexity": 4.0, "accuracy": 0.1, "loss": 1.0}, {"perplexity": 5.0, "accuracy": 0.9, "loss": 1.0}
    ).startswith("+1.000 PPL")


def test_evaluation_makes_the_logits_a_chunk_of_tokens_at_a_time_with_the_same_metrics(monkeypatch):
    from kdforge import evaluate as evaluation
    from kdforge.losses.chunked import LMHead

    torch.manual_seed(0)
    options = {"input_shape": (8,), "num_classes": 20, "heads": 2}
    student = build_model("lm_transformer", width=16, depth=1, **options).eval()
    teacher = build_model("lm_transformer", width=32, depth=1, **options).eval()
    x = torch.randint(0, 20, (5, 8))
    y = x.roll(-1, 1)
    y[4, 5:] = PAD_TARGET
    keep = y.flatten() != PAD_TARGET
    with torch.no_grad():
        zs, zt = student(x).flatten(0, 1)[keep], teacher(x).flatten(0, 1)[keep]
    made = []
    logits = LMHead.logits
    monkeypatch.setattr(LMHead, "logits", lambda head, part=slice(None): made.append(part) or logits(head, part))
    monkeypatch.setattr(evaluation, "default_chunk", lambda vocab, device: 4)
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    metrics = evaluate(student, batches, task="lm")
    agreement = evaluation.teacher_agreement(student, Teacher(teacher), batches, per_token=True)
    assert made and all(part.stop - part.start == 4 for part in made)  # 37 tokens: never more than 4 at once
    assert metrics["loss"] == pytest.approx(F.cross_entropy(zs, y.flatten()[keep]).item(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((zs.argmax(-1) == y.flatten()[keep]).float().mean().item())
    expected_kl = F.kl_div(F.log_softmax(zs, -1), F.log_softmax(zt, -1), log_target=True, reduction="batchmean")
    assert agreement["kl_from_teacher"] == pytest.approx(expected_kl.item(), rel=1e-5)
    assert agreement["top1_agreement"] == pytest.approx((zs.argmax(-1) == zt.argmax(-1)).float().mean().item())


@pytest.mark.parametrize(
    "name, options", [("lm_transformer", {"width": 32, "depth": 2, "heads": 4}), ("rwkv_spiking", {"size": "tiny"})]
)
def test_language_models_are_causal(name, options):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(20,), num_classes=30, **options).eval()
    x = torch.randint(0, 30, (2, 20))
    changed = x.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % 30
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-5) and not torch.allclose(a[:, 12:], b[:, 12:])


STEPPING = [("rwkv_spiking", {"size": "tiny"}), ("lm_transformer", {"width": 32, "depth": 2, "heads": 4})]


def test_a_transformer_step_from_its_key_value_cache_gives_the_parallel_logits():
    torch.manual_seed(0)
    model = build_model("lm_transformer", input_shape=(12,), num_classes=30, width=32, depth=2, heads=4).eval()
    x = torch.randint(0, 30, (3, 12))
    state = model.empty_state(3)
    with torch.no_grad():
        stepped = torch.stack([model.step(x[:, t], state)[0] for t in range(12)], 1)
        assert torch.allclose(stepped, model(x), atol=1e-5) and state.length == 12
        with pytest.raises(ValueError, match="at most 12 tokens"):
            model.step(x[:, 0], state)


@pytest.mark.parametrize("name,options", STEPPING)
def test_stepped_generation_is_the_greedy_continuation_of_the_parallel_model(name, options):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(32,), num_classes=30, **options).eval()
    prompt = [3, 1, 4, 1, 5]
    recurrent = generate(model, prompt, 10, temperature=0)
    context = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            context.append(int(model(torch.tensor([context]))[0, -1].argmax()))
    assert recurrent == context[len(prompt) :]
    sampled = generate(model, prompt, 10, temperature=1.0, top_k=3, seed=1)
    assert sampled == generate(model, prompt, 10, temperature=1.0, top_k=3, seed=1) and all(
        0 <= t < 30 for t in sampled
    )


@pytest.mark.parametrize("name,options", STEPPING)
def test_a_batch_of_prompts_steps_together_as_each_prompt_would_alone(name, options):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(32,), num_classes=30, **options).eval()
    prompts = [[3, 1, 4, 1, 5, 9, 2], [7], [2, 7, 1]]
    for temperature in (0.0, 1.0):
        together = generate_batch(model, prompts, 6, temperature=temperature, top_k=5, seed=4)
        alone = [generate(model, p, 6, temperature=temperature, top_k=5, seed=4 + i) for i, p in enumerate(prompts)]
        assert together == alone and [len(w) for w in together] == [6, 6, 6]


@pytest.mark.parametrize("name,options", STEPPING)
def test_writing_ends_at_a_stop_token(name, options):
    """Stepped, batched and (past its positions) windowed writing all end a row at its first stop token, kept as
    its last; the tokens before it are those written without a stop."""
    torch.manual_seed(0)
    model = build_model(name, input_shape=(32,), num_classes=30, **options).eval()
    prompts = [[3, 1, 4, 1, 5, 9, 2], [7], [2, 7, 1]]
    free = generate_batch(model, prompts, 6, temperature=0.0)
    stop = {free[0][2], free[1][4]}
    ended = [w[: next((at + 1 for at, t in enumerate(w) if t in stop), len(w))] for w in free]
    assert generate_batch(model, prompts, 6, temperature=0.0, stop=stop) == ended
    assert [generate(model, p, 6, temperature=0.0, stop=stop, window=4) for p in prompts] == [
        generate(model, p, 6, temperature=0.0, window=4)[: len(e)] for p, e in zip(prompts, ended)
    ]


def test_past_its_positions_a_transformer_writes_from_the_last_window():
    torch.manual_seed(0)
    model = build_model("lm_transformer", input_shape=(8,), num_classes=30, width=32, depth=2, heads=4).eval()
    prompt = [3, 1, 4, 1, 5]
    context = list(prompt)
    with torch.no_grad():
        for _ in range(7):  # the sequence outgrows the 8 positions: each token from the last 8
            context.append(int(model(torch.tensor([context[-8:]]))[0, -1].argmax()))
    assert generate(model, prompt, 7, temperature=0, window=8) == context[len(prompt) :]
    assert generate(model, prompt, 4, temperature=0, window=8) == context[len(prompt) : len(prompt) + 4]  # stepped


def test_a_tiny_lm_run_reports_perplexities_and_spikes_and_generates(tmp_path, invoke, capsys):
    lines = [f"The function number {i} returns a list of {i % 7} items and never fails." for i in range(150)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines))
    raw = {
        "name": "lm",
        "seed": 0,
        "data": {"name": "text_lm", "files": [str(tmp_path / "corpus.txt")], "length": 32, "batch_size": 32},
        "teacher": {
            "source": "train",
            "model": {"name": "lm_transformer", "width": 32, "depth": 1, "heads": 2, "dropout": 0.0},
            "train": {"epochs": 3},
        },
        "student": {"model": {"name": "rwkv_spiking", "size": "tiny", "width": 32, "depth": 1}},
        "losses": [
            {"name": "ce", "weight": 0.5},
            {"name": "kd", "weight": 0.5, "temperature": 1.0},
            {"name": "spike_rate", "weight": 0.1, "target": 0.3},
        ],
        "optim": {"name": "adamw", "lr": 3e-3},
        "train": {"epochs": 3},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    result = run(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    for role in ("teacher", "student", "student_alone"):
        assert 1.0 < result.results[role]["test"]["perplexity"] < 256  # better than uniform over bytes
    data = build_dataset("text_lm", seed=0, files=raw["data"]["files"], length=32)
    untrained = build_model("rwkv_spiking", input_shape=(32,), num_classes=256, size="tiny", width=32, depth=1)
    assert (
        result.results["student"]["test"]["perplexity"]
        < 0.5 * evaluate(untrained, [(data.test.x, data.test.y)], task="lm")["perplexity"]
    )
    assert 0 < result.results["student"]["spikes"]["density"] < 1
    assert "spikes on test: density" in (result.run_dir / "report.md").read_text()
    assert invoke("generate", result.run_dir, "--prompt", "The function", "--tokens", "20", "--temperature", "0") == 0
    assert "The function" in capsys.readouterr().out


def test_a_hugging_face_causal_lm_teaches_through_a_vocabulary_map_and_its_hidden_states(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=1, n_head=2)).save_pretrained(
        tmp_path / "gpt"
    )
    (tmp_path / "corpus.txt").write_text("\n".join(f"line {i} of a small corpus" for i in range(80)))
    raw = {
        "name": "hf-lm",
        "seed": 0,
        "data": {"name": "text_lm", "files": [str(tmp_path / "corpus.txt")], "length": 16, "batch_size": 16},
        "teacher": {"source": "hf", "model": {"name": str(tmp_path / "gpt"), "output": "causal_lm"}},
        "student": {"model": {"name": "rwkv_spiking", "size": "tiny", "width": 16, "depth": 1}},
        "losses": [{"name": "kd", "temperature": 1.0}],
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    with pytest.raises(KdforgeError, match="300 tokens but the data's tokenizer has 256"):
        check(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    raw["teacher"]["model"]["vocab_map"] = "truncate"
    assert check(Recipe.from_dict(raw), console=Console(file=io.StringIO()))["loss"] > 0
    (tmp_path / "map.json").write_text(json.dumps(list(range(299, 43, -1))))  # data token i reads teacher logit 299 − i
    raw["teacher"]["model"]["vocab_map"] = str(tmp_path / "map.json")
    assert check(Recipe.from_dict(raw), console=Console(file=io.StringIO()))["loss"] > 0
    raw["losses"].append(
        {"name": "hint", "student": "blocks.0", "teacher": "model.transformer.h.0", "projector": "linear"}
    )  # its hidden states
    assert check(Recipe.from_dict(raw), console=Console(file=io.StringIO()))["parts"]["hint"] > 0


def test_two_stage_distillation_the_second_stage_has_its_own_teacher_and_starts_from_the_first_student(
    tmp_path, invoke, capsys
):
    """SpikeBERT's workflow: stage 1 distils a general teacher on general text; stage 2, with a
    task teacher on task text, starts from stage 1's student (and so does its student alone)."""
    import yaml

    from kdforge import load_student

    general = [f"The function number {i} returns a list of {i % 7} items." for i in range(120)]
    task = [f"Error {i}: the value {i % 5} is out of range." for i in range(120)]
    (tmp_path / "general.txt").write_text("\n".join(general))
    (tmp_path / "task.txt").write_text("\n".join(task))
    student = {"model": {"name": "rwkv_spiking", "size": "tiny", "width": 32, "depth": 1}}

    def stage(name, corpus, width, extra=None):
        return {
            "name": name,
            "seed": 0,
            "data": {"name": "text_lm", "files": [str(tmp_path / corpus)], "length": 32, "batch_size": 32},
            "teacher": {
                "source": "train",
                "model": {"name": "lm_transformer", "width": width, "depth": 1, "heads": 2, "dropout": 0.0},
                "train": {"epochs": 2},
            },
            "student": {**student, **(extra or {})},
            "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 1.0}],
            "optim": {"name": "adamw", "lr": 3e-3},
            "train": {"epochs": 1},
            "log": {"dir": str(tmp_path / "runs"), "progress": False},
        }

    first = run(Recipe.from_dict(stage("general", "general.txt", 32)), console=Console(file=io.StringIO()))
    second_recipe = stage("task", "task.txt", 48, {"init_from": str(first.run_dir)})  # another teacher, another corpus
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(second_recipe))
    assert invoke("check", tmp_path / "task.yaml") == 0
    assert invoke("train", tmp_path / "task.yaml") == 0
    (second_dir,) = (tmp_path / "runs").glob("task-*")
    results = json.loads((second_dir / "results.json").read_text())
    loaded = len(load_student(first.run_dir).state_dict())
    for role in ("student", "student_alone"):
        assert results[role]["init_from"] == {"path": str(first.run_dir / "student.safetensors"), "loaded": loaded}
    assert results["teacher"]["params"] != json.loads((first.run_dir / "results.json").read_text())["teacher"]["params"]

    capsys.readouterr()
    other = stage("task", "task.txt", 48, {"init_from": str(first.run_dir)})
    other["student"]["model"]["width"] = 16
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert invoke("check", tmp_path / "other.yaml") == 2
    assert "give student.model the first stage's model section" in capsys.readouterr().out.replace("\n", "")


def test_init_from_a_student_with_other_classes_keeps_all_but_the_head(tmp_path):
    from kdforge.export import save_model
    from kdforge.transfer import start_from

    torch.manual_seed(0)
    first = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    save_model(first, tmp_path / "student")
    second = build_model("mlp", input_shape=(1, 8, 8), num_classes=4, hidden=[16])
    report = start_from(second, tmp_path / "student.safetensors")
    assert report["classes"] == [10, 4] and report["new"] == ["head.bias", "head.weight"]
    assert all(
        torch.equal(p, first.state_dict()[n]) for n, p in second.state_dict().items() if not n.startswith("head.")
    )
    with pytest.raises(Exception, match="student.init_from and student.init_from_teacher"):
        Recipe.from_dict(
            {
                "student": {"model": {"name": "mlp"}, "init_from": "x", "init_from_teacher": True},
                "teacher": {"model": {"name": "mlp"}},
                "losses": [{"name": "ce"}],
            }
        )
