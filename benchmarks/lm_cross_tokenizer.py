"""Distillation across tokenizers: a Llama teacher on BPE tokens into Llama students on other tokens, with ULD.

A byte-level BPE tokenizer (``--vocab`` tokens) is trained here on the built-in docstring corpus; the teacher of
``lm_hf.py`` (same size) is trained by a recipe on the corpus in those tokens and saved as a Hugging Face folder
with its tokenizer. Two students learn from it with ½ CE + ½ ULD, the teacher reading each row's text in its own
tokens (``teacher.model.tokenizer``; positions paired by text offset), each against the same student trained
alone (same initial weights, same steps, CE only), seeds 0, 1, 2 on one split, one teacher:

* ``unigram``: a student on a Unigram tokenizer of 384 tokens trained here (another segmentation of about the same
  granularity: the case ULD was made for, e.g. a Llama teacher for a Qwen-tokenised student), 64-token windows;
* ``bytes``: the byte-level student of ``lm_hf.py`` (one byte per token, much finer than the teacher's), 128-byte
  windows.

Test perplexity per token of each student's own tokenizer (comparable within a student, not across), each student
at its best validation epoch.

    uv run python benchmarks/lm_cross_tokenizer.py [--seeds 0 1 2] [--students unigram bytes]

Writes benchmarks/results/lm_cross_tokenizer.json / .md.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from common import mean_std, run_quietly, save
from kdforge.data.text import DEFAULT_MODULES, docstrings
from kdforge.export import load_model
from lm_hf import MAX_CHARS, recipe

SUBWORD_LENGTH = 64  # windows in subword tokens (about as much text as 128 bytes and more)


def train_tokenizer(folder: Path, vocab: int, kind: str = "bpe") -> Path:
    """A byte-level BPE or Unigram tokenizer trained on the docstring corpus, saved as a Hugging Face tokenizer
    folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        trainer: object = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=alphabet)
    else:
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab, initial_alphabet=alphabet, unk_token="<unk>",
                                          special_tokens=["<unk>"])  # fmt: skip
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(docstrings(DEFAULT_MODULES), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(folder)
    return folder


def bpe_teacher(log_dir: str, vocab: int) -> tuple[Path, dict]:
    """The teacher trained on BPE windows, saved with save_pretrained beside its tokenizer."""
    folder = train_tokenizer(Path(log_dir) / "bpe-teacher", vocab)
    raw = recipe(0, log_dir)
    raw["data"].update(tokenizer=str(folder), length=SUBWORD_LENGTH)
    raw["losses"] = [{"name": "kd", "temperature": 1.0}]
    raw["train"]["epochs"] = 1  # the teacher is what this run is for: its student is a by-product
    result = run_quietly(raw)
    teacher = load_model(result.teacher_file)
    teacher.model.save_pretrained(folder)
    return folder, {"bpe_perplexity": result.results["teacher"]["test"]["perplexity"], "vocab": vocab}


def cross_tokenizer(seeds: list[int], vocab: int, students: list[str]) -> dict:
    log_dir = tempfile.mkdtemp(prefix="kdforge-lm-uld-")
    started = time.perf_counter()
    folder, out = bpe_teacher(log_dir, vocab)
    out.update(seeds=seeds, teacher_minutes=(time.perf_counter() - started) / 60, students={})
    data = {"bytes": {"tokenizer": "bytes"}}
    if "unigram" in students:
        unigram = train_tokenizer(Path(log_dir) / "unigram", 384, "unigram")
        data["unigram"] = {"tokenizer": str(unigram), "length": SUBWORD_LENGTH}
    for student in students:
        runs = out["students"].setdefault(student, {})
        for seed in seeds:
            raw = copy.deepcopy(recipe(seed, log_dir))
            raw["data"].update(data[student])
            model = {"name": str(folder), "output": "causal_lm", "tokenizer": str(folder)}
            raw["teacher"] = {"source": "hf", "model": model}
            raw["losses"] = [{"name": "ce", "weight": 0.5}, {"name": "uld", "weight": 0.5, "chunked": True}]
            raw["train"]["baseline"] = True
            result = run_quietly(raw)
            runs[f"seed {seed}"] = {
                "ULD": result.results["student"]["test"]["perplexity"],
                "alone": result.results["student_alone"]["test"]["perplexity"],
                "distill_minutes": result.results["timings"]["distill_s"] / 60,
                "alone_minutes": result.results["timings"]["baseline_s"] / 60,
                "params": result.results["student"]["params"],
            }
            out["teacher_params"] = result.results["teacher"]["params"]
            print(f"{student}, seed {seed}: {runs[f'seed {seed}']}", flush=True)
    return out


def markdown(out: dict) -> str:
    lines = [
        "# Distillation across tokenizers: a BPE teacher into students on other tokenizers, with ULD",
        "",
        f"Teacher {out['teacher_params']:,} parameters on a {out['vocab']}-token byte-level BPE trained here (test "
        f"perplexity {out['bpe_perplexity']:.2f} per BPE token); {MAX_CHARS:,} characters of docstrings; seeds "
        f"{out['seeds']}. Test perplexity per token of the student's own tokenizer (lower is better).",
        "",
        "| student tokens | student | PPL, mean ± std | per seed | better than alone | minutes per run |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for student, seeds in out["students"].items():
        runs = list(seeds.values())
        uld, alone = [r["ULD"] for r in runs], [r["alone"] for r in runs]
        wins = sum(u < a for u, a in zip(uld, alone))
        lines += [
            f"| {student} | alone (CE) | {mean_std(alone)} | {' / '.join(f'{p:.2f}' for p in alone)} | — | "
            f"{mean_std([r['alone_minutes'] for r in runs], 1)} |",
            f"| {student} | ½ CE + ½ ULD | {mean_std(uld)} | {' / '.join(f'{p:.2f}' for p in uld)} | "
            f"{wins} of {len(runs)} | {mean_std([r['distill_minutes'] for r in runs], 1)} |",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--vocab", type=int, default=512, help="the teacher's BPE vocabulary")
    parser.add_argument("--students", nargs="+", choices=["unigram", "bytes"], default=["unigram", "bytes"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = cross_tokenizer(args.seeds, args.vocab, args.students)
    save("lm_cross_tokenizer", out, markdown(out))


if __name__ == "__main__":
    main()
