"""Distillation across tokenizers: a Llama teacher on BPE tokens into a Llama student on UTF-8 bytes, with ULD.

A byte-level BPE tokenizer (``--vocab`` tokens) is trained here on the built-in docstring corpus; the teacher of
``lm_hf.py`` (same size) is trained by a recipe on the corpus in those tokens and saved as a Hugging Face folder
with its tokenizer. The byte-level student of ``lm_hf.py`` then learns with ½ CE + ½ ULD from that teacher, which
reads each row's text in its own tokens (``teacher.model.tokenizer``; positions paired by text offset), against
the same student trained alone (same initial weights, same steps, CE only); seeds 0, 1, 2 on one split, one
teacher. Test perplexity per byte, each student at its best validation epoch.

    uv run python benchmarks/lm_cross_tokenizer.py [--seeds 0 1 2]

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
from lm_hf import LENGTH, MAX_CHARS, recipe

BPE_LENGTH = 64  # the teacher's training windows, in BPE tokens (about as much text as 128 bytes and more)


def train_bpe(folder: Path, vocab: int) -> Path:
    """A byte-level BPE tokenizer trained on the docstring corpus, saved as a Hugging Face tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(docstrings(DEFAULT_MODULES), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(folder)
    return folder


def bpe_teacher(log_dir: str, vocab: int) -> tuple[Path, dict]:
    """The teacher trained on BPE windows, saved with save_pretrained beside its tokenizer."""
    folder = train_bpe(Path(log_dir) / "bpe-teacher", vocab)
    raw = recipe(0, log_dir)
    raw["data"].update(tokenizer=str(folder), length=BPE_LENGTH)
    raw["losses"] = [{"name": "kd", "temperature": 1.0}]
    raw["train"]["epochs"] = 1  # the teacher is what this run is for: its student is a by-product
    result = run_quietly(raw)
    teacher = load_model(Path(result.run_dir) / "teacher" / "teacher.safetensors")
    teacher.model.save_pretrained(folder)
    return folder, {"bpe_perplexity": result.results["teacher"]["test"]["perplexity"], "vocab": vocab}


def cross_tokenizer(seeds: list[int], vocab: int) -> dict:
    log_dir = tempfile.mkdtemp(prefix="kdforge-lm-uld-")
    started = time.perf_counter()
    folder, out = bpe_teacher(log_dir, vocab)
    out.update(seeds=seeds, teacher_minutes=(time.perf_counter() - started) / 60, runs={})
    for seed in seeds:
        raw = copy.deepcopy(recipe(seed, log_dir))
        model = {"name": str(folder), "output": "causal_lm", "tokenizer": str(folder)}
        raw["teacher"] = {"source": "hf", "model": model}
        raw["losses"] = [{"name": "ce", "weight": 0.5}, {"name": "uld", "weight": 0.5, "chunked": True}]
        raw["train"]["baseline"] = True
        started = time.perf_counter()
        result = run_quietly(raw)
        out["runs"][f"seed {seed}"] = {
            "ULD": result.results["student"]["test"]["perplexity"],
            "alone": result.results["student_alone"]["test"]["perplexity"],
            "minutes": (time.perf_counter() - started) / 60,
            "distill_minutes": result.results["timings"]["distill_s"] / 60,
            "alone_minutes": result.results["timings"]["baseline_s"] / 60,
        }
        out["params"] = {r: result.results[r]["params"] for r in ("teacher", "student")}
        print(f"seed {seed}: {out['runs'][f'seed {seed}']}", flush=True)
    return out


def markdown(out: dict) -> str:
    runs = list(out["runs"].values())
    uld, alone = [r["ULD"] for r in runs], [r["alone"] for r in runs]
    wins = sum(u < a for u, a in zip(uld, alone))
    teacher, student = out["params"]["teacher"], out["params"]["student"]
    lines = [
        "# Distillation across tokenizers: a BPE teacher into a byte-level student with ULD",
        "",
        f"Teacher {teacher:,} parameters on a {out['vocab']}-token byte-level BPE trained here (test perplexity "
        f"{out['bpe_perplexity']:.2f} per BPE token); student {student:,} on UTF-8 bytes, {LENGTH}-byte windows, "
        f"{MAX_CHARS:,} characters of docstrings; seeds {out['seeds']}. Test perplexity per byte (lower is better).",
        "",
        "| student | PPL, mean ± std | per seed | better than alone | minutes per run |",
        "|---|---:|---:|---:|---:|",
        f"| alone (CE) | {mean_std(alone)} | {' / '.join(f'{p:.2f}' for p in alone)} | — | "
        f"{mean_std([r['alone_minutes'] for r in runs], 1)} |",
        f"| ½ CE + ½ ULD | {mean_std(uld)} | {' / '.join(f'{p:.2f}' for p in uld)} | {wins} of {len(runs)} | "
        f"{mean_std([r['distill_minutes'] for r in runs], 1)} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--vocab", type=int, default=512, help="the teacher's BPE vocabulary")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = cross_tokenizer(args.seeds, args.vocab)
    save("lm_cross_tokenizer", out, markdown(out))


if __name__ == "__main__":
    main()
