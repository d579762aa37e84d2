"""text_lm's splits and token streams: the user's own split (document indices), validation and test documents
from files of their own, documents joined by the end-of-text token; and a teacher's perplexity on kdforge's test
split equal to the one computed outside kdforge on the same documents joined the same way."""

import io
import json
import math

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from kdforge.config import Recipe
from kdforge.data import build_dataset
from kdforge.data.bundle import PAD_TARGET
from kdforge.errors import KdforgeError
from kdforge.runner import run

DOCS = [f"Document {i} counts {i % 7} apples and {i % 3} pears; it ends here." for i in range(40)]


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "docs.txt").write_text("\n".join(DOCS))
    return str(tmp_path / "docs.txt")


def stream_of(x, y):
    """The token stream a split's windows were cut from."""
    real = y != PAD_TARGET
    return [int(x[0, 0])] + y[real].tolist()


def test_a_split_file_gives_each_split_its_documents_by_index(corpus, tmp_path):
    split = {"train": list(range(10, 40)), "val": [3, 1], "test": [0, 2, 4]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    data = build_dataset("text_lm", files=[corpus], length=16, split_file=str(tmp_path / "split.json"))
    for name, rows in split.items():
        assert stream_of(getattr(data, name).x, getattr(data, name).y) == list(
            "\n\n".join(DOCS[i] for i in sorted(rows)).encode()  # bytes: no end-of-text token, a blank line
        )
    (tmp_path / "bad.json").write_text(json.dumps({**split, "test": [0, 40]}))
    with pytest.raises(KdforgeError, match="'test' holds row 40, but the rows to split are 0 to 39"):
        build_dataset("text_lm", files=[corpus], length=16, split_file=str(tmp_path / "bad.json"))


def test_validation_and_test_documents_from_files_of_their_own(corpus, tmp_path):
    (tmp_path / "test.txt").write_text("A held-out text.\nAnother one.")
    data = build_dataset("text_lm", files=[corpus], test_files=[str(tmp_path / "test.txt")], length=8, seed=0)
    assert data.decode(data.test.x[:1])[0].startswith("A held-o")
    drawn = "".join(data.decode(data.train.x)) + "".join(data.decode(data.val.x))
    assert all(f"Document {i} " in drawn for i in range(40))  # every document in train or val, none held out
    (tmp_path / "val.txt").write_text("Checked along the way.")
    both = build_dataset("text_lm", files=[corpus], val_files=[str(tmp_path / "val.txt")],
                         test_files=[str(tmp_path / "test.txt")], length=8, max_chars=None)  # fmt: skip
    assert stream_of(both.train.x, both.train.y) != [] and "".join(both.decode(both.val.x)).startswith("Checked")
    assert all(f"Document {i} " in "".join(both.decode(both.train.x)) for i in range(40))


def test_documents_are_joined_by_the_end_of_text_token_or_the_separator_asked_for(corpus, lm_tokenizer):
    tokenizer = AutoTokenizer.from_pretrained(lm_tokenizer)
    split = dict(files=[corpus], tokenizer=str(lm_tokenizer), length=16, seed=0)
    data = build_dataset("text_lm", **split)
    stream = stream_of(data.test.x, data.test.y)
    pieces = tokenizer.decode(stream).split(tokenizer.eos_token)
    assert all(piece in DOCS for piece in pieces) and len(pieces) == stream.count(tokenizer.eos_token_id) + 1
    spaced = build_dataset("text_lm", **split, separator="\n\n")
    assert tokenizer.eos_token_id not in stream_of(spaced.test.x, spaced.test.y)
    assert tokenizer.decode(stream_of(spaced.test.x, spaced.test.y)).split("\n\n") == pieces


def test_a_teachers_perplexity_on_kdforges_split_is_its_perplexity_on_the_same_documents(
    corpus, tmp_path, lm_tokenizer, tiny_llama
):
    """The test documents, joined by the end-of-text token and cut into windows of 33 tokens overlapping by one,
    computed here with transformers alone."""
    test = [5, 11, 23, 31]
    split = {"train": [i for i in range(40) if i not in test + [7]], "val": [7], "test": test}
    (tmp_path / "split.json").write_text(json.dumps(split))
    raw = {
        "name": "perplexity",
        "data": {"name": "text_lm", "files": [corpus], "tokenizer": str(lm_tokenizer), "length": 32,
                 "split_file": str(tmp_path / "split.json")},
        "teacher": {"source": "hf", "model": {"name": str(tiny_llama), "output": "causal_lm"}},
        "student": {"model": {"name": "hf_causal_lm", "path": str(tiny_llama), "layers": [0]}},
        "losses": [{"name": "kd"}],
        "train": {"epochs": 1, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }  # fmt: skip
    reported = run(Recipe.from_dict(raw), console=Console(file=io.StringIO())).results["teacher"]["test"]
    tokenizer = AutoTokenizer.from_pretrained(lm_tokenizer)
    ids = tokenizer(tokenizer.eos_token.join(DOCS[i] for i in test), add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(ids) - 1, 32):
            window = torch.tensor([ids[start : start + 33]])
            logits = model(window[:, :-1]).logits[0]
            losses.append(F.cross_entropy(logits, window[0, 1:], reduction="none"))
    assert math.isclose(reported["perplexity"], math.exp(torch.cat(losses).mean().item()), rel_tol=1e-5)
