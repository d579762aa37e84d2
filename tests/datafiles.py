"""Small data files in the formats kdforge reads, written by the tests."""

import gzip
import json

import numpy as np
from PIL import Image

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def write_images(folder, per_class, seed=0, size=(12, 10)):
    """``per_class`` PNGs of each class, the class's colour plus noise; returns the folder."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, size=(*size[::-1], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{i:03d}.png")
    return folder


def cifar_records(n, classes, seed, label_bytes=1):
    """n records of the binary version: label byte(s), then the red, green and blue planes; the
    image's red plane is filled with its label so that labels and pixels can be checked together."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n).astype(np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3, 32, 32)).astype(np.uint8)
    pixels[:, 0] = labels[:, None, None]
    heads = np.stack([labels // 5, labels] if label_bytes == 2 else [labels], 1)  # CIFAR-100: coarse, fine
    return np.concatenate([heads, pixels.reshape(n, -1)], 1).tobytes(), labels


def write_idx(path, array, compress=False):
    """``array`` (uint8) as an idx file (gzipped with ``compress``), the format of MNIST's files."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def write_mnist(folder, train_labels, test_labels, seed=0):
    """MNIST's four idx files in ``folder``, with random 28x28 images for the labels given; returns it."""
    rng = np.random.default_rng(seed)
    for part, labels in (("train", train_labels), ("t10k", test_labels)):
        labels = np.asarray(labels, dtype=np.uint8)
        write_idx(folder / f"{part}-images-idx3-ubyte", rng.integers(0, 256, size=(len(labels), 28, 28)))
        write_idx(folder / f"{part}-labels-idx1-ubyte", labels)
    return folder


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}<|end|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_tokenizer(folder, vocab_size=320):
    """A byte-level BPE tokenizer trained here on the docstrings of installed modules, with a chat template
    (roles as special tokens, ``<|end|>`` closing each answer), saved as a Hugging Face tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from kdforge.data.text import DEFAULT_MODULES, docstrings

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(sorted(set(docstrings(DEFAULT_MODULES))), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|end|>", pad_token="<|end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return folder


def write_causal_lm(folder, vocab_size, kind="llama", layers=2, width=32, seed=0):
    """A tiny randomly initialised causal LM of ``kind`` (llama, qwen2 or gpt2), saved with save_pretrained."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = {
        "llama": {
            "hidden_size": width,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "intermediate_size": 2 * width,
            "max_position_embeddings": 128,
        },
        "gpt2": {"n_embd": width, "n_layer": layers, "n_head": 2, "n_positions": 128},
    }
    sizes["qwen2"] = {**sizes["llama"], "num_key_value_heads": 2, "max_position_embeddings": 512}
    sizes = sizes[kind]
    torch.manual_seed(seed)
    config = AutoConfig.for_model(kind, vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, **sizes)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


def hf_llm_stand_ins(name, tmp_path):
    """A 2-block Qwen2 teacher (its vocabulary padded past its tokenizer's, as Qwen's), a 1-block one as the
    smaller student where the recipe names one, and texts or chat examples, in place of the hub's."""
    import datasets

    teacher = write_causal_lm(write_tokenizer(tmp_path / "teacher"), 384, "qwen2", layers=2)
    student = teacher if name == "hf_llm_kd" else write_causal_lm(tmp_path / "student", 384, "qwen2", layers=1, seed=1)
    given = [f"data.tokenizer={teacher}", f"teacher.model.name={teacher}", f"student.model.path={student}"]
    given += ["data.length=64", "data.batch_size=4"]
    if name.startswith("hf_chat_") or "gkd" in name:
        rows = [{"prompt": f"What is {i} plus {i}?", "completion": f"It is {2 * i}."} for i in range(40)]
        (tmp_path / "chats.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
        return [*given, f"data.files=[{tmp_path / 'chats.jsonl'}]", "data.max_length=32"]
    docs = [f"Document {i} of a parquet corpus says {i % 9} and {i % 4}." for i in range(200)]
    datasets.Dataset.from_dict({"text": docs}).to_parquet(str(tmp_path / "texts.parquet"))
    return [*given, f"data.files=[{tmp_path / 'texts.parquet'}]"]


def write_wordpiece(folder, vocab_size=400):
    """A BERT-style WordPiece tokenizer (lower-cased; [PAD] is id 0) trained here on the docstrings of installed
    modules, saved as a Hugging Face tokenizer folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    from kdforge.data.text import DEFAULT_MODULES, docstrings

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    tokenizer.train_from_iterator(sorted(set(docstrings(DEFAULT_MODULES))), trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=64)
    fast.save_pretrained(folder)
    return folder


def write_bert(folder, vocab_size, labels=3, layers=4, width=32, head="sequence", seed=0, **config):
    """A tiny randomly initialised BERT with a classification head (``sequence`` or ``token``), saved with
    save_pretrained (``config``: more of its config, e.g. ``initializer_range``)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    sizes = {
        "hidden_size": width,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * width,
    }
    config = BertConfig(
        vocab_size=vocab_size, **sizes, max_position_embeddings=64, num_labels=labels, pad_token_id=0, **config
    )
    torch.manual_seed(seed)
    model = (BertForTokenClassification if head == "token" else BertForSequenceClassification)(config)
    model.save_pretrained(folder)
    return folder


def encoder_stand_ins(name, tmp_path):
    """A tiny BERT (tokenizer trained here) and a few labelled sentences (or tagged words) in place of the hub's."""
    tokenizer = write_wordpiece(tmp_path / "tokenizer")
    tags = name == "conll_ner_kd"
    head = {"labels": 3, "head": "token"} if tags else {"labels": 2, "width": 48}  # 48: 12 relation heads
    teacher = write_bert(tmp_path / "teacher", 400, layers=2, **head)
    given = [f"data.tokenizer={tokenizer}", f"teacher.model.name={teacher}", f"student.model.path={teacher}",
             "data.max_length=32", "data.batch_size=8"]  # fmt: skip
    if tags:
        rows = [{"tokens": ["Ada", "moved", "to", "Paris"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]}] * 30
        (tmp_path / "tags.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        return [*given, f"data.path={tmp_path / 'tags.jsonl'}", "data.config=null"]
    rows = [{"sentence": f"a {'good' if i % 2 else 'bad'} film, number {i}", "label": i % 2} for i in range(60)]
    (tmp_path / "sst2.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return [*given, f"data.path={tmp_path / 'sst2.jsonl'}", "data.config=null", "data.drop_splits=null"]
