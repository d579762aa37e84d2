"""Hugging Face causal LMs as students: from a folder, from a config, shrunk from a teacher by layer drop; their
LM head handed to chunked losses; saved for the Hugging Face ecosystem."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from datafiles import write_causal_lm
from kdforge.errors import KdforgeError
from kdforge.export import load_model, save_model
from kdforge.losses.chunked import handing_heads
from kdforge.models import build_model

LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 64}  # fmt: skip


def ids(vocab=320, length=12, seed=0):
    return torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(seed))


def student(**options):
    return build_model("hf_causal_lm", input_shape=(12,), num_classes=320, **options).eval()


def test_a_student_from_a_config_is_causal_and_rebuilds_from_its_saved_files(tmp_path):
    torch.manual_seed(0)
    model = student(hf_config=LLAMA)
    x = ids()
    logits = model(x)
    assert logits.shape == (2, 12, 320) and model.model.config.vocab_size == 320  # the data's vocabulary
    changed = x.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 320
    assert torch.allclose(model(changed)[:, :8], logits[:, :8], atol=1e-6)  # no position sees a later token
    again = load_model(save_model(model, tmp_path / "student")).eval()
    assert torch.equal(again(x), logits)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_student_from_a_folder_is_that_model(tmp_path, kind):
    folder = write_causal_lm(tmp_path / kind, 330, kind)  # a vocabulary padded past the data's 320
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    model = student(path=str(folder))
    x = ids()
    assert torch.allclose(model(x), reference(x).logits[..., :320], atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_layer_drop_keeps_the_chosen_blocks_of_the_teacher_with_their_weights(tmp_path, kind):
    folder = write_causal_lm(tmp_path / kind, 320, kind, layers=4)
    teacher = AutoModelForCausalLM.from_pretrained(folder).eval()
    x = ids()
    assert torch.allclose(student(path=str(folder), layers=[0, 1, 2, 3])(x), teacher(x).logits, atol=1e-6)
    shrunk = student(path=str(folder), layers="::2")
    assert shrunk.model.config.num_hidden_layers == 2
    blocks = teacher.model.layers if kind == "llama" else teacher.transformer.h
    for block in (blocks[1], blocks[3]):  # the same model with blocks 1 and 3 made identities
        block.forward = lambda hidden, *args, **kwargs: hidden
    assert torch.allclose(shrunk(x), teacher(x).logits, atol=1e-5)


def test_layer_choices_and_sources_are_checked(tmp_path, tiny_llama):
    for layers, message in [([0, 9], r"in \[0, 4\)"), ("2-3", "neither a list"), ([1, 1], "distinct")]:
        with pytest.raises(KdforgeError, match=message):
            student(path=str(tiny_llama), layers=layers)
    with pytest.raises(KdforgeError, match="either path"):
        student()
    with pytest.raises(KdforgeError, match="needs model_type"):
        student(hf_config={"hidden_size": 8})
    with pytest.raises(KdforgeError, match="neither a folder on this machine nor a hub id"):
        student(path=str(tmp_path / "absent"))
    with pytest.raises(KdforgeError, match="has 100 tokens but the data's tokenizer has 320"):
        student(hf_config={**LLAMA, "vocab_size": 100})


@pytest.mark.parametrize("options", [{"hf_config": LLAMA}, {"hf_config": {**LLAMA, "tie_word_embeddings": True}}])
def test_the_handed_head_makes_the_same_logits(options):
    model = student(**options)
    x = ids()
    with handing_heads(model):
        head = model(x)
    assert head.shape == (2, 12, 320) and torch.allclose(head.logits(), model(x), atol=1e-5)
    assert not model.returns_head  # only inside


def test_a_chunked_step_equals_the_plain_one_and_never_makes_the_whole_logits(tiny_llama):
    from kdforge.data.bundle import PAD_TARGET
    from kdforge.distiller import Distiller
    from kdforge.losses.terms import build_losses
    from kdforge.teachers.hub import HFTeacher
    from kdforge.teachers.teacher import Teacher

    x, y = ids(), ids(seed=1)
    y[1, 9:] = PAD_TARGET
    teacher = Teacher(HFTeacher(AutoModelForCausalLM.from_pretrained(tiny_llama), "input_ids", "causal_lm"))
    steps = {}
    for chunked in (False, True):
        torch.manual_seed(0)
        model = student(hf_config=LLAMA).train()
        terms = [
            {"name": "ce", "label_smoothing": 0.1, "chunked": chunked},
            {
                "name": "kd",
                "temperature": 2.0,
                "direction": "skew_reverse",
                "chunked": chunked,
                **({"chunk": 5} if chunked else {}),
            },
            {"name": "uld", "temperature": 1.5, "chunked": chunked},
        ]
        distiller = Distiller(model, teacher, build_losses(terms), x, per_token=True)
        out = distiller(x, y)
        out.loss.backward()
        steps[chunked] = out, {n: p.grad for n, p in model.named_parameters()}
    (plain, plain_grads), (chunked, chunked_grads) = steps[False], steps[True]
    assert chunked.outputs is None and plain.outputs.shape == (21, 320)  # 24 positions, 3 padded
    for name in ("ce", "kd", "uld"):
        assert torch.allclose(chunked.parts[name], plain.parts[name], rtol=1e-5, atol=1e-6)
    for name, grad in plain_grads.items():
        assert torch.allclose(chunked_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_a_chunked_term_that_reads_no_top_k_gets_a_sparse_teachers_logits(tiny_llama):
    from kdforge.distiller import Distiller
    from kdforge.losses.functional import topk_log_probs, uld_loss
    from kdforge.losses.terms import build_losses
    from kdforge.teachers.hub import HFTeacher
    from kdforge.teachers.teacher import Teacher

    dense = HFTeacher(AutoModelForCausalLM.from_pretrained(tiny_llama), "input_ids", "causal_lm").eval()

    class Sparse(torch.nn.Module):  # a teacher kept to its top k = V tokens (as a cache gives them): exact
        def __init__(self):
            super().__init__()
            self.inner = dense

        def forward(self, x):
            return topk_log_probs(self.inner(x), 320)

    x = ids()
    distiller = Distiller(student(hf_config=LLAMA), Teacher(Sparse()), build_losses([{"name": "uld", "chunked": True}]),
                          x, per_token=True)  # fmt: skip
    out = distiller(x, ids(seed=1))
    with torch.no_grad():
        expected = uld_loss(distiller.student(x).flatten(0, 1), dense(x).flatten(0, 1))
    assert torch.allclose(out.parts["uld"], expected, rtol=1e-5, atol=1e-6)


def test_chunked_terms_need_a_student_that_hands_its_head():
    from kdforge.distiller import Distiller
    from kdforge.losses.terms import build_losses

    model = build_model("rwkv_spiking", input_shape=(12,), num_classes=320, size="tiny")
    with pytest.raises(KdforgeError, match="does not hand over; use hf_causal_lm or lm_transformer"):
        Distiller(model, None, build_losses([{"name": "ce", "chunked": True}]), ids(), per_token=True)


def test_a_run_distils_a_hugging_face_teacher_into_its_shrunk_self_and_exports_it(
    tmp_path, tiny_llama, lm_tokenizer, invoke, capsys
):
    import io

    from rich.console import Console
    from transformers import AutoTokenizer

    from kdforge.config import Recipe
    from kdforge.export import load_student
    from kdforge.runner import run

    raw = {
        "name": "hf-student",
        "seed": 0,
        "data": {
            "name": "text_lm",
            "tokenizer": str(lm_tokenizer),
            "length": 32,
            "batch_size": 16,
            "max_chars": 40_000,
        },
        "teacher": {"source": "hf", "model": {"name": str(tiny_llama), "output": "causal_lm"}},
        "student": {"model": {"name": "hf_causal_lm", "path": str(tiny_llama), "layers": "::2"}},
        "losses": [{"name": "ce", "weight": 0.5, "chunked": True}, {"name": "kd", "weight": 0.5, "chunked": True}],
        "optim": {"name": "adamw", "lr": 3e-3},
        "train": {"epochs": 1, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    result = run(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    assert result.results["student"]["test"]["perplexity"] < 320  # better than uniform
    folder = result.run_dir / "student_hf"
    exported = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert exported.config.num_hidden_layers == 2 and len(AutoTokenizer.from_pretrained(folder)) == 320
    x = ids()
    assert torch.allclose(exported(x).logits, load_student(result.run_dir)(x), atol=1e-5)
    assert invoke("export", result.run_dir, "--format", "hf", "--out", tmp_path / "again") == 0
    assert (tmp_path / "again" / "config.json").exists()
    agreement = result.results["student"]["teacher_agreement"]
    assert 0 < agreement["top1_agreement"] <= 1 and agreement["kl_from_teacher"] > 0
    report = (result.run_dir / "report.md").read_text()
    assert "agrees with the teacher's top-1 on" in report and report.count("**→**") == 3  # three samples
    assert invoke("generate", result.run_dir, "--prompt", "Return the", "--tokens", "6", "--temperature", "0") == 0
    end = AutoTokenizer.from_pretrained(lm_tokenizer).eos_token_id  # the samples stop at the end-of-text token
    assert result.results["student"]["sampling"] == {"temperature": 0.0, "max_new_tokens": 32, "stop": [end]}
    stop = ["--stop", "no such token"]
    assert invoke("generate", result.run_dir, "--prompt", "Return the", *stop) == 2
    assert "--stop: 'no such token' is" in capsys.readouterr().out.replace("\n", "")


def test_hugging_face_generation_with_its_kv_cache_is_the_greedy_continuation():
    from kdforge.families.lm.generate import generate

    torch.manual_seed(0)
    model = student(hf_config=LLAMA)
    prompt = [5, 17, 99, 3]
    context = list(prompt)
    for _ in range(6):
        context.append(int(model(torch.tensor([context]))[0, -1].argmax()))
    assert generate(model, prompt, 6, temperature=0.0) == context[len(prompt) :]
    sampled = generate(model, prompt, 6, temperature=1.0, seed=3)
    assert sampled == generate(model, prompt, 6, temperature=1.0, seed=3) and len(sampled) == 6


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_prompts_of_different_lengths_written_in_one_batch_get_their_own_greedy_continuations(tmp_path, kind):
    from kdforge.families.lm.generate import generate, generate_batch

    model = student(path=str(write_causal_lm(tmp_path / kind, 320, kind)))
    prompts = [[5, 17, 99, 3], [42], [7, 7, 8, 250, 11, 2, 19]]  # padded on the left to 7 tokens
    alone = [generate(model, prompt, 5, temperature=0.0) for prompt in prompts]
    assert generate_batch(model, prompts, 5, temperature=0.0) == alone
    stop = {alone[0][1], alone[2][3]}  # the first row stops after at most 2 tokens, the last after at most 4
    ended = [w[: next((at + 1 for at, t in enumerate(w) if t in stop), len(w))] for w in alone]
    assert generate_batch(model, prompts, 5, temperature=0.0, stop=stop) == ended and len(ended[0]) <= 2


def test_a_student_with_tied_embeddings_is_saved_once_and_loads_tied(tmp_path):
    folder = write_causal_lm(tmp_path / "gpt2", 320, "gpt2")  # GPT-2 ties its LM head to its embedding
    model = student(path=str(folder))
    x = ids()
    saved = save_model(model, tmp_path / "student")
    again = load_model(saved).eval()
    assert torch.equal(again(x), model(x))
    head, embedding = again.model.get_output_embeddings().weight, again.model.get_input_embeddings().weight
    assert head.data_ptr() == embedding.data_ptr()  # still one tensor
    assert saved.stat().st_size < 1.5 * 320 * 32 * 4 + sum(  # the 320 x 32 table once, not twice
        p.numel() * 4 for n, p in model.named_parameters() if "wte" not in n
    )


def test_gradient_checkpointing_recomputes_blocks_and_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = student(hf_config=LLAMA, gradient_checkpointing=checkpointing).train()
        model(ids()).logsumexp(-1).mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert student(hf_config=LLAMA, gradient_checkpointing=True).model.is_activation_checkpointing
    for name, grad in grads[0].items():
        assert torch.allclose(grads[1][name], grad, atol=1e-6), name


def hf_teacher(tmp_path, tokenizer, model, dtype=None):
    """The ``hf`` causal-LM teacher ``model`` as a run builds it, on ``text_lm`` data tokenised by ``tokenizer``."""
    import io

    from rich.console import Console

    from kdforge.config import Recipe
    from kdforge.session import Session
    from kdforge.teachers import TEACHER_SOURCES

    recipe = Recipe.from_dict({
        "name": "hf-teacher",
        "data": {"name": "text_lm", "tokenizer": str(tokenizer), "length": 12, "max_chars": 4_000},
        "teacher": {"source": "hf", "dtype": dtype, "model": {"name": str(model), "output": "causal_lm"}},
        "student": {"model": {"name": "mlp"}}, "losses": [{"name": "kd"}], "log": {"dir": str(tmp_path / "runs")},
    })  # fmt: skip
    session = Session(recipe, tmp_path / "run", Console(file=io.StringIO()))
    module, _ = TEACHER_SOURCES.get("hf")(session, recipe.teacher, tmp_path / "teacher")
    return module


def test_a_teacher_loaded_in_bfloat16_holds_bfloat16_weights_and_gives_its_logits(tmp_path, tiny_llama, lm_tokenizer):
    """``dtype: bfloat16`` loads the weights in that dtype (half the memory of float32) and the logits stay those of
    the float32 model to bfloat16's precision."""
    half, full = (
        hf_teacher(tmp_path, lm_tokenizer, tiny_llama, dtype="bfloat16"),
        hf_teacher(tmp_path, lm_tokenizer, tiny_llama),
    )
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    x = ids()
    with torch.no_grad():
        low, high = half(x), full(x)
    assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), high, atol=0.05, rtol=0.05)


def test_a_teacher_whose_vocabulary_is_padded_past_its_own_tokenizer_reads_the_tokenizers_logits(
    tmp_path, lm_tokenizer
):
    """Qwen's way: 336 logits for a 320-token tokenizer. On data tokenised by the teacher's own tokenizer the padding
    logits are dropped (views, no copy), in the plain and the chunked form; on another tokenizer's data it is an
    error that says what to do."""
    import shutil

    from kdforge.losses.chunked import handing_heads

    folder = write_causal_lm(shutil.copytree(lm_tokenizer, tmp_path / "padded"), 336, "llama")
    teacher, model = hf_teacher(tmp_path, folder, folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    x = ids()
    with torch.no_grad():
        assert torch.equal(teacher(x), model(x).logits[..., :320])
        with handing_heads(teacher):
            head = teacher(x)
        assert len(head.weight) == 320 and head.weight.data_ptr() == teacher.model.lm_head.weight.data_ptr()  # a view
        assert torch.allclose(head.hidden @ head.weight.T, model(x).logits[..., :320], atol=1e-5)
    with pytest.raises(KdforgeError, match="the teacher's vocabulary has 336 tokens but the data's tokenizer has 320"):
        hf_teacher(tmp_path, lm_tokenizer, folder)
