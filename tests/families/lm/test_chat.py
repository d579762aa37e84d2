"""chat_lm: conversations through the chat template with the loss on the assistant's turns only, instructions,
texts, packing several examples per row without any attending to another."""

import json

import pytest
import torch

from kdforge.data.bundle import PAD_TARGET, build_dataset
from kdforge.errors import KdforgeError
from kdforge.families.lm.chat import ExampleEncoder
from kdforge.families.lm.data import HFTokenizer
from kdforge.models import build_model
from kdforge.models.tokens import document_positions, token_inputs

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Return the sum of two numbers."},
    {"role": "assistant", "content": "Add them."},
    {"role": "user", "content": "And the product?"},
    {"role": "assistant", "content": "Multiply them."},
]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return str(path)


def trained_text(tokenizer, ids, trainable):
    return tokenizer.inner.decode([t for t, keep in zip(ids, trainable) if keep])


def test_only_the_assistants_turns_carry_loss(lm_tokenizer):
    tokenizer = HFTokenizer(str(lm_tokenizer))
    ids, trainable = ExampleEncoder(tokenizer).encode({"messages": CONVERSATION}, "chat")
    assert tokenizer.inner.decode(ids).startswith("<|system|>Answer briefly.<|user|>Return the sum")
    assert trained_text(tokenizer, ids, trainable) == "Add them.<|end|>Multiply them.<|end|>"


def test_instructions_train_on_the_completion_with_or_without_a_template(lm_tokenizer):
    tokenizer = HFTokenizer(str(lm_tokenizer))
    encoder = ExampleEncoder(tokenizer)
    row = {"prompt": "Name a colour.", "completion": "Blue."}
    ids, trainable = encoder.encode(row, "instruction")
    assert tokenizer.inner.decode(ids) == "<|user|>Name a colour.<|assistant|>Blue.<|end|>"
    assert trained_text(tokenizer, ids, trainable) == "Blue.<|end|>"
    encoder.has_template = False  # a base model's tokenizer: the texts joined, end of text after
    ids, trainable = encoder.encode(row, "instruction")
    assert tokenizer.inner.decode(ids) == "Name a colour.Blue.<|end|>"
    assert trained_text(tokenizer, ids, trainable) == "Blue.<|end|>"
    with pytest.raises(KdforgeError, match="need a tokenizer with a chat template"):
        encoder.encode({"messages": CONVERSATION}, "chat")


def examples(count):
    return [
        {"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f"It is {2 * i}." * (1 + i % 3)}
        for i in range(count)
    ]


@pytest.mark.parametrize("pack", [False, True])
def test_rows_hold_whole_examples_and_targets_only_on_completions(tmp_path, lm_tokenizer, pack):
    files = [write_jsonl(tmp_path / "train.jsonl", examples(40))]
    data = build_dataset("chat_lm", files=files, tokenizer=str(lm_tokenizer), length=128, pack=pack, seed=0)
    x, y = data.train.x, data.train.y
    assert data.input_shape == ((2, 128) if pack else (128,)) and data.num_classes == 320
    ids = x[:, 0] if pack else x
    documents = x[:, 1] if pack else torch.zeros_like(x)
    tokenizer = HFTokenizer(str(lm_tokenizer)).inner
    learned = y != PAD_TARGET
    same_document = documents[:, 1:] == documents[:, :-1]
    # a target is the next input token wherever that token is in the row, in the same example
    follows = learned[:, :-1] & same_document
    assert torch.equal(y[:, :-1][follows], ids[:, 1:][follows])
    for row_targets, row_learned in zip(y, learned):
        text = tokenizer.decode(row_targets[row_learned].tolist())
        assert "Question" not in text and "It is" in text and "<|assistant|>" not in text
    starts = torch.ones_like(learned)
    starts[:, 1:] = ~same_document
    real = ids != 0
    user = ids == tokenizer.convert_tokens_to_ids("<|user|>")
    assert torch.equal(user, starts & real)  # each example starts its own document, whole
    if pack:
        assert len(x) < int(user.sum())  # several examples share a row
        assert bool((documents[:, 1:] >= documents[:, :-1]).all())


def test_max_length_cuts_examples_and_bad_files_are_refused(tmp_path, lm_tokenizer):
    options = {"tokenizer": str(lm_tokenizer), "length": 32, "seed": 0}
    long = [{"text": "A long text about numbers and lists. " * 20}] * 10
    data = build_dataset(
        "chat_lm", files=[write_jsonl(tmp_path / "a.jsonl", long)], max_length=16, pack=False, **options
    )
    assert bool((data.train.y[:, 16:] == PAD_TARGET).all()) and bool((data.train.y[:, :16] != PAD_TARGET).all())
    with pytest.raises(
        KdforgeError, match=r"has fields \['question'\]; expected messages or prompt\+completion or text"
    ):
        build_dataset("chat_lm", files=[write_jsonl(tmp_path / "b.jsonl", [{"question": "?"}] * 9)], **options)
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"text": ')
    with pytest.raises(KdforgeError, match="c.jsonl' is not valid JSON"):
        build_dataset("chat_lm", files=[str(tmp_path / "c.jsonl")], **options)
    with pytest.raises(KdforgeError, match=r"max_length must be in \[1, length = 32\]"):
        build_dataset("chat_lm", files=[str(tmp_path / "a.jsonl")], max_length=33, **options)


def test_positions_restart_at_each_document():
    documents = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])
    assert document_positions(documents).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("lm_transformer", {"width": 16, "depth": 2, "heads": 2, "dropout": 0.0}),
        ("hf_causal_lm", {"hf_config": {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 2,
                                        "num_attention_heads": 2, "intermediate_size": 32}}),
        ("hf_causal_lm", {"hf_config": {"model_type": "gpt2", "n_embd": 16, "n_layer": 2, "n_head": 2}}),
    ],
)  # fmt: skip
def test_a_packed_row_gives_each_document_the_logits_it_has_alone(name, options):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(2, 12), num_classes=50, **options).eval()
    a, b = torch.randint(0, 50, (1, 5)), torch.randint(0, 50, (1, 7))
    packed = torch.stack([torch.cat([a, b], 1), torch.tensor([[0] * 5 + [1] * 7])], 1)
    together = model(packed)
    assert torch.allclose(together[:, :5], model(a), atol=1e-5)
    assert torch.allclose(together[:, 5:], model(b), atol=1e-5)
    assert token_inputs(packed).mask.shape == (1, 1, 12, 12)


def test_a_recipe_distils_on_packed_chat_data_and_a_recurrent_student_is_refused(tmp_path, lm_tokenizer, tiny_llama):
    import io

    from rich.console import Console

    from kdforge.check import check
    from kdforge.config import Recipe

    conversations = [{"messages": CONVERSATION}] * 6 + examples(20)
    raw = {
        "name": "chat",
        "data": {"name": "chat_lm", "files": [write_jsonl(tmp_path / "chat.jsonl", conversations)],
                 "tokenizer": str(lm_tokenizer), "format": "auto", "length": 128, "batch_size": 4},
        "teacher": {"source": "hf", "model": {"name": str(tiny_llama), "output": "causal_lm"}},
        "student": {"model": {"name": "hf_causal_lm", "path": str(tiny_llama), "layers": [0, 3]}},
        "losses": [{"name": "kd", "temperature": 1.0, "direction": "skew_forward", "chunked": True}],
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }  # fmt: skip
    with pytest.raises(KdforgeError, match="an example has fields"):  # auto reads the first example's format
        check(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    raw["data"]["format"] = "chat"
    with pytest.raises(KdforgeError, match=r"expected messages"):
        check(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    turns = [[{"role": "user", "content": e["prompt"]}, {"role": "assistant", "content": e["completion"]}]
             for e in examples(20)]  # fmt: skip
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}] * 6 + [{"messages": m} for m in turns])
    assert check(Recipe.from_dict(raw), console=Console(file=io.StringIO()))["loss"] > 0
    raw["student"] = {"model": {"name": "rwkv_spiking", "size": "tiny"}}
    raw["losses"] = [{"name": "kd"}]
    with pytest.raises(KdforgeError, match="packed rows"):
        check(Recipe.from_dict(raw), console=Console(file=io.StringIO()))


def test_a_prompt_after_chat_data_is_a_users_turn(lm_tokenizer):
    from kdforge.families.lm.chat import as_user_turn

    assert as_user_turn(HFTokenizer(str(lm_tokenizer)), "Name a colour.") == "<|user|>Name a colour.<|assistant|>"


def test_writing_after_chat_data_stops_at_the_end_of_turn_token_or_at_the_stop_asked_for(lm_tokenizer, tmp_path):
    from kdforge.config.sections import DataConfig
    from kdforge.families.lm.chat import data_stops, end_of_turn

    tokenizer = HFTokenizer(str(lm_tokenizer))
    closing = tokenizer.inner.convert_tokens_to_ids("<|end|>")  # the template closes each answer with it
    assert end_of_turn(tokenizer) == closing and tokenizer.end_of_text == closing
    chat = {"name": "chat_lm", "tokenizer": str(lm_tokenizer), "files": []}
    assert data_stops(DataConfig.model_validate(chat))[1] == [closing]
    asked = data_stops(DataConfig.model_validate({**chat, "stop": ["<|user|>", "<|end|>"]}))[1]
    assert asked == [tokenizer.inner.convert_tokens_to_ids("<|user|>"), closing]
    assert data_stops(DataConfig.model_validate({"name": "text_lm"}))[1] == []  # bytes: no end-of-text token
    with pytest.raises(KdforgeError, match=r"data.stop: 'the end' is \d+ tokens of this tokenizer, not one"):
        data_stops(DataConfig.model_validate({**chat, "stop": ["the end"]}))


def test_a_run_distils_on_policy_on_chat_data(tmp_path, lm_tokenizer, tiny_llama):
    import io

    from rich.console import Console

    from kdforge.config import Recipe
    from kdforge.runner import run

    raw = {
        "name": "gkd",
        "data": {"name": "chat_lm", "files": [write_jsonl(tmp_path / "chat.jsonl", examples(30))],
                 "tokenizer": str(lm_tokenizer), "length": 64, "pack": False, "batch_size": 8},
        "teacher": {"source": "hf", "model": {"name": str(tiny_llama), "output": "causal_lm"}},
        "student": {"model": {"name": "hf_causal_lm", "path": str(tiny_llama), "layers": [0]}},
        "losses": [{"name": "kd", "temperature": 1.0, "direction": "gjsd", "beta": 0.5}],
        "train": {"epochs": 1, "baseline": False, "on_policy": {"fraction": 0.5, "max_new_tokens": 8}},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }  # fmt: skip
    result = run(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
    assert result.results["student"]["test"]["perplexity"] > 1
    raw["data"] = {"name": "digits"}
    raw["student"] = {"model": {"name": "mlp"}}
    raw["teacher"] = {"source": "train", "model": {"name": "mlp"}, "train": {"epochs": 1}}
    with pytest.raises(KdforgeError, match="train.on_policy: writes sequences with a language model"):
        run(Recipe.from_dict(raw), console=Console(file=io.StringIO()))
