"""kdforge's GKD against TRL's GKDTrainer on the same models, data and settings, on this CPU.

Both train the same Llama student (saved once, so both start from the same weights) against the same Llama teacher
(trained here by a kdforge recipe on the same data, CE only) on the same chat examples (an instruction built from
each documented function of installed modules, the first sentence of its docstring as the answer; a BPE tokenizer
with a chat template trained here), with the generalised JSD at β = 0.5, T = 1, on the completion tokens only,
AdamW at a constant learning rate, batches of 8, no weight decay or clipping. λ = 0 is supervised KD; λ = 0.5 has
half the rows (kdforge: of each batch; TRL: each batch with probability ½) written by the student, 16 new tokens
sampled at temperature 1. TRL's loss is β KL(p_t‖m) + (1 − β) KL(p_s‖m) without kdforge's 1 / (β(1 − β)), so
kdforge's term has weight β(1 − β): the same loss, checked on seeded tensors first.

Like for like: both sides template and tokenise the examples once, before training (TRL is given the tokenised
rows, with their completion masks, and its collator pads every batch to the same 64 tokens kdforge's rows have);
both keep the weights of the last epoch (kdforge validates at the end only, so the last epoch is the one it
selects); both write on-policy rows until the end-of-turn token or 16 tokens.

Reported per λ: training time per optimiser step (the median over the steps, each framework measured by a callback
of its own around its step; runs of the two alternate) and, for both final students, the GKD loss and the
perplexity of the completions on held-out examples, computed by one function for both.

    uv run --with trl==1.16.0 --with accelerate python benchmarks/lm_trl.py [--epochs 3]

(trl and accelerate are not kdforge dependencies: ``--with`` adds them for this run only.) Writes
benchmarks/results/lm_trl.json / .md.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import Intervals, run_quietly, run_timed, save, write_text
from kdforge.data.text import DEFAULT_MODULES
from kdforge.export import load_model
from kdforge.losses.functional import kd_loss

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
TRAIN, VAL, TEST, BATCH, LENGTH, NEW_TOKENS, LR, BETA = 256, 32, 64, 8, 64, 16, 1e-3, 0.5
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}<|end|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TEACHER = {"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
           "intermediate_size": 344, "max_position_embeddings": 128}  # fmt: skip
STUDENT = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 172, "max_position_embeddings": 128}  # fmt: skip


def examples() -> list[dict]:
    """Chat examples: 'What does module.name do?' -> the first sentence of its docstring (short ones only)."""
    import importlib

    found = []
    for module_name in DEFAULT_MODULES:
        module = importlib.import_module(module_name)
        for name, member in sorted(vars(module).items()):
            doc = inspect.getdoc(member) if callable(member) and not name.startswith("_") else None
            first = doc.split("\n\n")[0].replace("\n", " ").split(". ")[0].strip() if doc else ""
            if 20 <= len(first) <= 90:
                question = f"What does {module_name}.{name} do?"
                found.append({"messages": [{"role": "user", "content": question},
                                           {"role": "assistant", "content": first}]})  # fmt: skip
    rng = np.random.default_rng(0)
    return [found[i] for i in rng.permutation(len(found))[: TRAIN + VAL + TEST]]


def write_tokenizer(folder: Path, texts: list[str]) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|end|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|end|>", pad_token="<|end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return folder


def prepare(workdir: Path) -> dict:
    """The data file, its split, the tokenizer, the trained teacher and the initial student, as folders."""
    rows = examples()
    data = workdir / "chat.jsonl"
    write_text(data, "".join(json.dumps(r) + "\n" for r in rows))
    split = workdir / "split.npz"
    np.savez(split, train=np.arange(TRAIN), val=np.arange(TRAIN, TRAIN + VAL), test=np.arange(TRAIN + VAL, len(rows)))
    tokenizer = write_tokenizer(workdir / "tokenizer", [m["content"] for r in rows for m in r["messages"]])
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    student = workdir / "student"
    AutoModelForCausalLM.from_config(AutoConfig.for_model(vocab_size=512, **STUDENT)).save_pretrained(student)
    base = kdforge_recipe(workdir, data, split, tokenizer, teacher=None)
    base["teacher"] = {"source": "train", "model": {"name": "hf_causal_lm", "hf_config": TEACHER},
                       "train": {"epochs": 30, "lr": 3e-3}}  # fmt: skip
    base["losses"] = [{"name": "ce"}]
    base["train"]["epochs"] = 1
    result = run_quietly(base)
    teacher = workdir / "teacher"
    load_model(result.teacher_file).model.save_pretrained(teacher)
    return {"rows": rows, "data": data, "split": split, "tokenizer": tokenizer, "teacher": teacher,
            "student": student, "teacher_test_perplexity": result.results["teacher"]["test"]["perplexity"]}  # fmt: skip


def kdforge_recipe(workdir: Path, data: Path, split: Path, tokenizer: Path, teacher: Path | None) -> dict:
    return {
        "name": "gkd",
        "data": {"name": "chat_lm", "files": [str(data)], "tokenizer": str(tokenizer), "length": LENGTH,
                 "pack": False, "batch_size": BATCH, "split_file": str(split)},
        "teacher": {"source": "hf", "model": {"name": str(teacher), "output": "causal_lm"}},
        "student": {"model": {"name": "hf_causal_lm", "path": str(workdir / "student")}},
        "losses": [{"name": "kd", "temperature": 1.0, "direction": "gjsd", "beta": BETA,
                    "weight": BETA * (1 - BETA)}],
        "optim": {"name": "adamw", "lr": LR, "weight_decay": 0.0, "schedule": "constant"},
        "train": {"epochs": 1, "baseline": False},
        "log": {"dir": str(workdir / "runs"), "progress": False},
    }  # fmt: skip


def tokenised(rows: list[dict], tokenizer_folder: Path) -> list[dict]:
    """Each example as TRL's collator takes it ready-made: its ids (the chat template rendered once) and which of
    them are the answer's, cut to LENGTH tokens as kdforge cuts them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)

    def render(messages: list[dict], prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)

    made = []
    for row in rows:
        prompt = render(row["messages"][:1], True)  # the collator reads it, then goes by the completion mask
        full = tokenizer(render(row["messages"], False), add_special_tokens=False)["input_ids"][:LENGTH]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        made.append(
            {"prompt": prompt, "input_ids": full, "completion_mask": [int(i >= start) for i in range(len(full))]}
        )
    return made


def padded_collator(tokenizer):  # noqa: ANN201 - TRL's ChatML collator, its batches padded to LENGTH
    """TRL's own collator, each batch then padded on its side (the left) to LENGTH tokens, kdforge's row width."""
    from trl.experimental.utils import DataCollatorForChatML

    collate = DataCollatorForChatML(tokenizer=tokenizer, max_length=LENGTH)
    fill = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "labels": -100}

    def call(examples: list[dict]) -> dict:
        batch = collate(examples)
        for key, value in fill.items():
            short = LENGTH - batch[key].shape[1]
            batch[key] = F.pad(batch[key], (short, 0), value=value)
        batch.pop("byte_offsets", None)  # ULD's, of the unpadded width
        return batch

    return call


def run_kdforge(prep: dict, workdir: Path, lmbda: float, epochs: int, seed: int) -> tuple[list[float], Path]:
    raw = kdforge_recipe(workdir, prep["data"], prep["split"], prep["tokenizer"], prep["teacher"])
    raw["seed"], raw["train"]["epochs"] = seed, epochs
    raw["train"]["val_every"] = epochs  # validated at the end only: the last epoch is the one kept, as TRL keeps it
    if lmbda:
        raw["train"]["on_policy"] = {"fraction": lmbda, "max_new_tokens": NEW_TOKENS, "temperature": 1.0}
    result, intervals = run_timed(raw)
    return intervals.times, Path(result.run_dir) / "student_hf"


def run_trl(prep: dict, workdir: Path, lmbda: float, epochs: int, seed: int) -> tuple[list[float], Path]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    intervals = Intervals()

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            intervals.tick()

        def on_epoch_begin(self, args, state, control, **kwargs):
            intervals.reset()

    out = workdir / f"trl-{lmbda}-{seed}"
    args = GKDConfig(
        output_dir=str(out), per_device_train_batch_size=BATCH, num_train_epochs=epochs, learning_rate=LR,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, lmbda=lmbda, beta=BETA,
        temperature=1.0, max_new_tokens=NEW_TOKENS, max_length=LENGTH, use_cpu=True, save_strategy="no",
        report_to=[], logging_steps=10, seed=seed, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(prep["tokenizer"])
    trainer = GKDTrainer(
        model=AutoModelForCausalLM.from_pretrained(prep["student"]),
        teacher_model=AutoModelForCausalLM.from_pretrained(prep["teacher"]),
        args=args,
        train_dataset=Dataset.from_list(tokenised(prep["rows"][:TRAIN], prep["tokenizer"])),
        processing_class=tokenizer,
        data_collator=padded_collator(tokenizer),
        callbacks=[Timer()],
    )
    trainer.train()
    trainer.model.save_pretrained(out / "student")
    return intervals.times, out / "student"


@torch.no_grad()
def held_out(prep: dict, student_folder: Path) -> dict:
    """GKD loss (TRL's units) and completion perplexity of a student on the test examples."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(prep["tokenizer"])
    student = AutoModelForCausalLM.from_pretrained(student_folder).eval()
    teacher = AutoModelForCausalLM.from_pretrained(prep["teacher"]).eval()

    def encode(messages: list[dict], **options) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, **options)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    jsd = nll = count = 0.0
    for row in prep["rows"][TRAIN + VAL :]:
        prompt = encode(row["messages"][:1], add_generation_prompt=True)
        full = encode(row["messages"])[:LENGTH]
        ids = torch.tensor([full])
        zs, zt = student(ids).logits[0, len(prompt) - 1 : -1], teacher(ids).logits[0, len(prompt) - 1 : -1]
        jsd += float(kd_loss(zs, zt, 1.0, "gjsd", BETA)) * BETA * (1 - BETA) * len(zs)
        nll += float(F.cross_entropy(zs, ids[0, len(prompt) :], reduction="sum"))
        count += len(zs)
    return {"gkd_loss": jsd / count, "perplexity": float(np.exp(nll / count))}


def parity() -> float:
    """The largest gap between kdforge's gjsd · β(1 − β) and TRL's generalized_jsd_loss on seeded logits."""
    from trl.experimental.gkd import GKDTrainer

    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 9, 50, generator=g) * 3, torch.randn(6, 9, 50, generator=g) * 3
    labels = torch.zeros(6, 9, dtype=torch.long)  # every position counts: TRL then averages over tokens
    gaps = []
    for beta in (0.1, 0.5, 0.9):
        theirs = GKDTrainer.generalized_jsd_loss(zs, zt, labels, beta=beta)
        ours = kd_loss(zs.flatten(0, 1), zt.flatten(0, 1), 1.0, "gjsd", beta) * beta * (1 - beta)
        gaps.append(abs(float(theirs - ours)))
    for beta, direction in ((0.0, "forward"), (1.0, "reverse")):
        theirs = GKDTrainer.generalized_jsd_loss(zs, zt, labels, beta=beta)
        gaps.append(abs(float(theirs - kd_loss(zs.flatten(0, 1), zt.flatten(0, 1), 1.0, direction))))
    return max(gaps)


def compare(epochs: int, seeds: list[int]) -> dict:
    import trl

    workdir = Path(tempfile.mkdtemp(prefix="kdforge-trl-"))
    prep = prepare(workdir)
    out: dict = {"trl": trl.__version__, "epochs": epochs, "seeds": seeds, "parity_max_gap": parity(),
                 "teacher_test_perplexity": prep["teacher_test_perplexity"], "runs": {}}  # fmt: skip
    for lmbda in (0.0, 0.5):
        for seed in seeds:
            order = [("kdforge", run_kdforge), ("TRL", run_trl)]
            for name, runner in order if seed % 2 == 0 else order[::-1]:
                times, folder = runner(prep, workdir, lmbda, epochs, seed)
                entry = {"step_s": statistics.median(times), "steps": len(times), **held_out(prep, folder)}
                out["runs"].setdefault(f"λ = {lmbda}", {}).setdefault(name, []).append(entry)
                print(f"λ {lmbda}, seed {seed}, {name}: {entry}", flush=True)
    return out


def markdown(out: dict) -> str:
    lines = [
        "# GKD: kdforge against TRL's GKDTrainer (same models, data and settings; CPU)",
        "",
        f"TRL {out['trl']}; {TRAIN} training examples, batches of {BATCH}, {out['epochs']} epochs, seeds "
        f"{out['seeds']}; teacher test perplexity {out['teacher_test_perplexity']:.2f}. kdforge's gjsd · β(1 − β) "
        f"equals TRL's generalized_jsd_loss to {out['parity_max_gap']:.1e} on seeded logits (β = 0, 0.1, 0.5, 0.9, "
        "1). Held-out: the test examples' completion tokens.",
        "",
        "| λ | framework | time per step (ms) | kdforge / TRL | held-out GKD loss | held-out perplexity |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def mean(entries: list[dict], key: str) -> float:
        return statistics.mean(e[key] for e in entries)

    for lmbda, frameworks in out["runs"].items():
        ratio = mean(frameworks["kdforge"], "step_s") / mean(frameworks["TRL"], "step_s")
        for name, entries in frameworks.items():
            lines.append(
                f"| {lmbda} | {name} | {1000 * mean(entries, 'step_s'):.1f} | "
                f"{f'{ratio:.2f}×' if name == 'kdforge' else ''} | {mean(entries, 'gkd_loss'):.4f} | "
                f"{mean(entries, 'perplexity'):.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = compare(args.epochs, args.seeds)
    save("lm_trl", out, markdown(out))


if __name__ == "__main__":
    main()
