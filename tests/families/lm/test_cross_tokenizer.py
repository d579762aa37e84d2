"""A teacher with its own tokenizer: the data's text read in the teacher's tokens, its predictions gathered at the
data's positions by text offset, distilled with ULD; what cannot work with it is refused with a message."""

import io

import pytest
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from kdforge.config import Recipe
from kdforge.errors import KdforgeError
from kdforge.families.lm.data import ByteTokenizer, HFTokenizer, text_readers
from kdforge.losses.chunked import handing_heads
from kdforge.runner import build_cache, run
from kdforge.teachers.hub import HFTeacher
from kdforge.teachers.retokenize import OwnTokens, aligned_positions

TEXTS = ["Return the sum of the values in the array.", "Split the string at each comma and strip it."]


def test_each_data_token_reads_the_last_teacher_token_that_ends_with_it_or_before():
    pieces = ["Hel", "lo", " wor", "ld"]  # ends 3, 5, 9, 11
    assert aligned_positions(pieces, [5, 11]).tolist() == [0, 0, 0, 1]  # "Hello", " world"
    assert aligned_positions(pieces, [0, 5, 11]).tolist() == [0, 1, 1, 2]  # after a start token ending at 0
    assert aligned_positions(pieces, [0, 5, 11, 0]).tolist() == [0, 1, 1, 2]  # a closing token (offsets 0, 0)


def test_token_pieces_join_into_the_decoded_text(lm_tokenizer):
    text = "Größe: 3 × 4 — fine"
    for tok in (ByteTokenizer(), HFTokenizer(str(lm_tokenizer))):
        ids = tok.encode(text)
        assert "".join(tok.pieces(ids)) == text == tok.decode(ids)
    special = tok.inner.convert_tokens_to_ids("<|user|>")  # roles and padding stand for no text
    assert tok.pieces([special, *ids, 0]) == ["", *tok.pieces(ids), ""]


def rows_of(tok, length):
    return torch.tensor([tok.encode(text)[:length] for text in TEXTS])


def test_with_the_datas_own_tokenizer_the_teacher_is_unchanged(lm_tokenizer, tiny_llama):
    tok = HFTokenizer(str(lm_tokenizer))
    rows = rows_of(tok, 9)
    plain = HFTeacher(AutoModelForCausalLM.from_pretrained(tiny_llama), "input_ids", "causal_lm").eval()
    teacher = OwnTokens(plain, tok.inner, text_readers(tok.decode, tok.pieces)["token_texts"]).eval()
    ids, where = teacher.retokenize(rows)
    assert torch.equal(ids, rows) and torch.equal(where, torch.arange(9).expand(2, 9))
    with torch.no_grad():
        logits = teacher(rows)
        assert torch.allclose(logits, plain(rows), atol=1e-6)
        with handing_heads(teacher):
            assert torch.allclose(teacher(rows).logits(), logits, atol=1e-5)


def test_byte_rows_read_a_bpe_teacher_at_the_matching_places_in_the_text(lm_tokenizer, tiny_llama):
    bpe, data = AutoTokenizer.from_pretrained(lm_tokenizer), ByteTokenizer()
    rows = rows_of(data, 40)
    plain = HFTeacher(AutoModelForCausalLM.from_pretrained(tiny_llama), "input_ids", "causal_lm").eval()
    teacher = OwnTokens(plain, bpe, text_readers(data.decode, data.pieces)["token_texts"]).eval()
    with torch.no_grad():
        found = teacher(rows)
        for row, text in zip(range(2), TEXTS):
            encoded = bpe(text[:40], return_offsets_mapping=True)
            own = plain(torch.tensor([encoded["input_ids"]]))[0]
            for i in range(40):  # the byte i ends the text's first i + 1 characters (ASCII)
                j = max([k for k, (_, end) in enumerate(encoded["offset_mapping"]) if end <= i + 1], default=0)
                assert torch.allclose(found[row, i], own[j], atol=1e-5)
    assert found.shape == (2, 40, 320)  # over the teacher's vocabulary
    with pytest.raises(KdforgeError, match="packed ones"):
        teacher(torch.zeros(1, 2, 8, dtype=torch.long))


def test_a_run_distils_bytes_from_a_bpe_teacher_with_uld(tmp_path, lm_tokenizer, tiny_llama):
    raw = {
        "name": "uld",
        "data": {"name": "text_lm", "tokenizer": "bytes", "length": 32, "max_chars": 6000, "batch_size": 16},
        "teacher": {"source": "hf", "model": {"name": str(tiny_llama), "output": "causal_lm"}},
        "student": {"model": {"name": "lm_transformer", "width": 16, "depth": 1, "heads": 2}},
        "losses": [{"name": "ce"}],
        "train": {"epochs": 1, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    raw["losses"].append({"name": "uld", "chunked": True})
    quiet = Console(file=io.StringIO())
    with pytest.raises(KdforgeError, match="give teacher.model.tokenizer"):
        run(Recipe.from_dict(raw), console=quiet)
    raw["teacher"]["model"]["tokenizer"] = str(lm_tokenizer)
    result = run(Recipe.from_dict(raw), console=quiet).results
    assert result["teacher"]["test"] == {} and "teacher_agreement" not in result["student"]  # not on its tokens
    assert result["student"]["test"]["perplexity"] > 1 and result["teacher"]["tokenizer"] == str(lm_tokenizer)
    with pytest.raises(KdforgeError, match="distilled online"):
        build_cache(Recipe.from_dict(raw), tmp_path / "cache", topk=4, console=quiet)
    raw["losses"] = [{"name": "kd"}]
    with pytest.raises(KdforgeError, match="with uld"):
        run(Recipe.from_dict(raw), console=quiet)
