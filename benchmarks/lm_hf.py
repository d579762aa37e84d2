"""Language-model distillation between Hugging Face causal LMs (``hf_causal_lm``), on the built-in docstring
corpus (UTF-8 bytes, 128-token windows), on this CPU.

Quality (``--quality``): a Llama teacher trained by the recipe, then a Llama student a quarter its width and half
its depth, distilled at T = 1 with ½ CE + ½ KD in forward KL, reverse KL and JSD, with 0.8 CE + 0.2 reverse KL, and
on-policy (half of each batch's rows continued by the student for 32 tokens after a 96-token prompt: the JSD alone
as in GKD, and ½ CE + ½ forward KL), against the same student trained alone (same initial weights, same steps, CE
only); seeds 0, 1, 2 on one split, one teacher. Once (seed 0): the forward-KL
student from a top-32 teacher cache (``kdforge cache --topk 32``, no teacher loaded while training) against the
same student online, at equal steps. Test perplexity, each student at its best validation epoch, and its top-1
agreement with the teacher.

Pretrained students (``--students``): the teacher's every other block kept with its weights (layer-drop, as
``hf_llm_kd`` does), trained whole or through LoRA adapters (r = 8 on every linear layer; ``student.peft``), each
distilled in forward KL and JSD (½ CE + ½ KD), on-policy (λ = 0.5, forward KL) and from a top-32 teacher cache,
against the same student trained alone (CE); seeds 0, 1, 2. Test perplexity and top-1 agreement with the teacher.

Step time (``--step``): kdforge's distillation loop (Trainer + Distiller, CE + KD, AdamW, cosine schedule, a
validation pass and a checkpoint per epoch) against a hand-written loop doing the same work on the same models and
batches; the two alternate epoch by epoch (who goes first alternates too), and the ratio is the median of the
paired per-round ratios.

    uv run python benchmarks/lm_hf.py --quality [--seeds 0 1 2]
    uv run python benchmarks/lm_hf.py --students [--seeds 0 1 2] [--teacher-epochs 8]
    uv run python benchmarks/lm_hf.py --step [--rounds 6]

Writes benchmarks/results/lm_hf.json / .md (quality), lm_hf_students.json / .md and lm_hf_step.json / .md (step
time).
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

import kdforge
from common import mean_std, run_quietly, save
from kdforge.runner import build_cache

LENGTH, MAX_CHARS = 128, 300_000
TEACHER = {"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
           "intermediate_size": 344, "max_position_embeddings": LENGTH}  # fmt: skip
STUDENT = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 172, "max_position_embeddings": LENGTH}  # fmt: skip
HALF_CE = {"name": "ce", "weight": 0.5}
ON_POLICY = {"fraction": 0.5, "max_new_tokens": 32, "temperature": 1.0, "prompt_tokens": 96}
VARIANTS = {
    "forward KL": {"losses": [HALF_CE, {"name": "kd", "weight": 0.5, "temperature": 1.0}]},
    "reverse KL, ½": {"losses": [HALF_CE, {"name": "kd", "weight": 0.5, "temperature": 1.0, "direction": "reverse"}]},
    "reverse KL, 0.2": {
        "losses": [
            {"name": "ce", "weight": 0.8},
            {"name": "kd", "weight": 0.2, "temperature": 1.0, "direction": "reverse"},
        ]
    },
    "JSD": {"losses": [HALF_CE, {"name": "kd", "weight": 0.5, "temperature": 1.0, "direction": "jsd"}]},
    "on-policy λ = 0.5, JSD alone (GKD)": {
        "losses": [{"name": "kd", "temperature": 1.0, "direction": "jsd"}],
        "on_policy": ON_POLICY,
    },
    "on-policy λ = 0.5, forward KL": {
        "losses": [HALF_CE, {"name": "kd", "weight": 0.5, "temperature": 1.0}],
        "on_policy": ON_POLICY,
    },
}


def recipe(seed: int, log_dir: str) -> dict:
    return {
        "name": "lm-hf",
        "seed": seed,
        "data": {"name": "text_lm", "length": LENGTH, "max_chars": MAX_CHARS, "batch_size": 32, "split_seed": 0},
        "teacher": {"source": "train", "model": {"name": "hf_causal_lm", "hf_config": TEACHER},
                    "train": {"epochs": 8, "lr": 3.0e-3}},
        "student": {"model": {"name": "hf_causal_lm", "hf_config": STUDENT}},
        "optim": {"name": "adamw", "lr": 3.0e-3, "schedule": "cosine"},
        "train": {"epochs": 4, "baseline": False},
        "log": {"dir": log_dir, "progress": False},
    }  # fmt: skip


def measured(result: kdforge.RunResult, role: str = "student") -> dict:
    entry = result.results[role]
    agreement = entry.get("teacher_agreement") or {}
    return {"perplexity": entry["test"]["perplexity"], "top1_agreement": agreement.get("top1_agreement")}


def quality(seeds: list[int]) -> dict:
    log_dir = tempfile.mkdtemp(prefix="kdforge-lm-hf-")
    out: dict = {"seeds": seeds, "runs": {}}
    teacher_file = None
    for seed in seeds:
        base = recipe(seed, log_dir)
        if teacher_file:
            base["teacher"] = {"source": "checkpoint", "path": teacher_file}
        for name, variant in VARIANTS.items():
            raw = copy.deepcopy(base)
            raw["losses"] = variant["losses"]
            raw["train"]["baseline"] = name == "forward KL"  # the student alone, once per seed
            if "on_policy" in variant:
                raw["train"]["on_policy"] = variant["on_policy"]
            started = time.perf_counter()
            result = run_quietly(raw)
            runs = out["runs"].setdefault(f"seed {seed}", {})
            runs[name] = {**measured(result), "minutes": (time.perf_counter() - started) / 60}
            if raw["train"]["baseline"]:
                runs["alone"] = measured(result, "student_alone")
                runs["teacher"] = result.results["teacher"]["test"]["perplexity"]
                out["params"] = {r: result.results[r]["params"] for r in ("teacher", "student")}
            teacher_file = teacher_file or str(result.teacher_file)
            base["teacher"] = {"source": "checkpoint", "path": teacher_file}
            print(f"seed {seed}, {name}: {runs[name]}", flush=True)
    out["cache"] = cache_against_online(seeds[0], teacher_file, log_dir)
    return out


def cache_against_online(seed: int, teacher_file: str | None, log_dir: str) -> dict:
    """The forward-KL student from a top-32 cache and online, at equal steps (KD only, T = 1)."""
    raw = recipe(seed, log_dir)
    raw["teacher"] = {"source": "checkpoint", "path": teacher_file}
    raw["losses"] = [HALF_CE, {"name": "kd", "weight": 0.5, "temperature": 1.0}]
    cache_dir = Path(log_dir) / "cache-top32"
    started = time.perf_counter()
    manifest = build_cache(kdforge.Recipe.from_dict(raw), cache_dir, topk=32, console=Console(file=io.StringIO()))
    cache_minutes = (time.perf_counter() - started) / 60
    online = run_quietly(raw)
    cached = run_quietly({**raw, "teacher": {**raw["teacher"], "cache": str(cache_dir)}})
    result = {
        "online": measured(online),
        "cache top-32": measured(cached),
        "bytes_per_token": manifest["bytes_per_token"],
        "cache_minutes": cache_minutes,
        "minutes": {
            "online": online.results["timings"]["distill_s"] / 60,
            "cache": cached.results["timings"]["distill_s"] / 60,
        },
    }
    print(f"cache against online: {result}", flush=True)
    return result


KD = [HALF_CE, {"name": "kd", "weight": 0.5, "temperature": 1.0}]
STUDENT_METHODS = {
    "alone": {"losses": [{"name": "ce"}]},
    "forward KL": {"losses": KD},
    "JSD": {"losses": [HALF_CE, {"name": "kd", "weight": 0.5, "temperature": 1.0, "direction": "jsd"}]},
    "on-policy λ = 0.5, forward KL": {"losses": KD, "on_policy": ON_POLICY},
    "top-32 cache, forward KL": {"losses": KD, "cache": True},
}
PRETRAINED = {
    "layer-drop": {"optim": {"name": "adamw", "lr": 1.0e-3, "schedule": "cosine"}},
    "layer-drop + LoRA": {
        "peft": {"r": 8, "alpha": 16, "target_modules": "all-linear"},
        "optim": {"name": "adamw", "lr": 1.0e-2, "schedule": "cosine"},
    },
}


def students(seeds: list[int], teacher_epochs: int) -> dict:
    """Layer-dropped students of the teacher trained for ``teacher_epochs``, whole or LoRA, each method against
    alone."""
    from kdforge.export import load_model

    log_dir = tempfile.mkdtemp(prefix="kdforge-lm-students-")
    base = recipe(0, log_dir)
    base["losses"], base["train"] = [{"name": "ce"}], {**base["train"], "epochs": 1}
    base["teacher"]["train"] = {**base["teacher"]["train"], "epochs": teacher_epochs}
    trained = run_quietly(base)  # the teacher, trained by the recipe (the student of this run is not used)
    teacher_file = str(trained.teacher_file)
    folder = Path(log_dir) / "teacher_hf"
    load_model(teacher_file).model.save_pretrained(folder)
    out: dict = {"seeds": seeds, "teacher": trained.results["teacher"]["test"]["perplexity"], "runs": {},
                 "teacher_epochs": teacher_epochs}  # fmt: skip
    teacher = {"source": "hf", "model": {"name": str(folder), "output": "causal_lm"}}
    cache_dir = Path(log_dir) / "cache-top32"
    build_cache(kdforge.Recipe.from_dict({**base, "teacher": teacher}), cache_dir, topk=32,
                console=Console(file=io.StringIO()))  # fmt: skip
    for kind, setting in PRETRAINED.items():
        for seed in seeds:
            for method, variant in STUDENT_METHODS.items():
                raw = {**recipe(seed, log_dir), "teacher": teacher, "optim": setting["optim"],
                       "losses": variant["losses"]}  # fmt: skip
                raw["student"] = {"model": {"name": "hf_causal_lm", "path": str(folder), "layers": "::2"},
                                  **({"peft": setting["peft"]} if "peft" in setting else {})}  # fmt: skip
                if "on_policy" in variant:
                    raw["train"] = {**raw["train"], "on_policy": variant["on_policy"]}
                if variant.get("cache"):
                    raw["teacher"] = {**teacher, "cache": str(cache_dir)}
                result = run_quietly(raw)
                entry = measured(result)  # from the cache: no top-1 agreement (no live teacher to compare with)
                out["runs"].setdefault(kind, {}).setdefault(method, []).append(entry)
                out.setdefault("params", {})[kind] = result.results["student"]["params"]
                print(f"{kind}, seed {seed}, {method}: {entry}", flush=True)
    return out


def students_markdown(out: dict) -> str:
    lines = [
        "# Pretrained Hugging Face students: layer-drop, whole or LoRA (docstring corpus, bytes, test split)",
        "",
        f"The teacher ({out['teacher_epochs']} epochs; test perplexity {out['teacher']:.2f}) with every other block "
        f"kept; seeds {out['seeds']}. "
        "Test perplexity (lower is better) and the share of test tokens where the student's top-1 is the "
        "teacher's (— from the cache: no live teacher to compare with).",
        "",
        "| student | method | PPL, mean ± std | per seed | KD better than alone | top-1 agreement |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for kind, methods in out["runs"].items():
        alone = [e["perplexity"] for e in methods["alone"]]
        for method, entries in methods.items():
            ppl = [e["perplexity"] for e in entries]
            agree = [e["top1_agreement"] for e in entries if e["top1_agreement"] is not None]
            wins = "—" if method == "alone" else f"{sum(p < a for p, a in zip(ppl, alone))} of {len(ppl)}"
            shown = f"{100 * statistics.mean(agree):.1f}%" if agree else "—"
            lines.append(
                f"| {kind} | {method} | {mean_std(ppl)} | {' / '.join(f'{p:.2f}' for p in ppl)} | {wins} | {shown} |"
            )
    return "\n".join(lines) + "\n"


def quality_markdown(out: dict) -> str:
    seeds = list(out["runs"].values())
    names = ["alone", *VARIANTS]
    lines = [
        "# Language-model distillation between Hugging Face Llamas (docstring corpus, bytes, test split)",
        "",
        f"Teacher {out['params']['teacher']:,} parameters (test perplexity {seeds[0]['teacher']:.2f}), student "
        f"{out['params']['student']:,}; seeds {out['seeds']}. Test perplexity (lower is better) and the share of "
        "test tokens where the student's top-1 is the teacher's.",
        "",
        "| student | PPL, mean ± std | per seed | KD better than alone | top-1 agreement |",
        "|---|---:|---:|---:|---:|",
    ]
    alone = [s["alone"]["perplexity"] for s in seeds]
    for name in names:
        ppl = [s[name]["perplexity"] for s in seeds]
        agree = [s[name]["top1_agreement"] for s in seeds]
        wins = "—" if name == "alone" else f"{sum(p < a for p, a in zip(ppl, alone))} of {len(seeds)}"
        lines.append(
            f"| {name} | {mean_std(ppl)} | {' / '.join(f'{p:.2f}' for p in ppl)} | {wins} | "
            f"{100 * statistics.mean(agree):.1f}% |"
        )
    c = out["cache"]
    lines += [
        "",
        f"Seed {out['seeds'][0]}, forward KL (½ CE + ½ KD), equal steps: online teacher PPL "
        f"{c['online']['perplexity']:.3f} ({c['minutes']['online']:.1f} min), top-32 cache "
        f"{c['cache top-32']['perplexity']:.3f} ({c['minutes']['cache']:.1f} min; the cache took "
        f"{c['cache_minutes']:.1f} min to write, {c['bytes_per_token']} bytes per token).",
    ]
    return "\n".join(lines) + "\n"


def step_models(seed: int = 0):
    from kdforge.models import build_model

    torch.manual_seed(seed)
    teacher = build_model("hf_causal_lm", input_shape=(LENGTH,), num_classes=256, hf_config=TEACHER)
    student = build_model("hf_causal_lm", input_shape=(LENGTH,), num_classes=256, hf_config=STUDENT)
    return teacher.eval().requires_grad_(False), student


def kdforge_epoch(data, workdir: Path) -> float:
    from kdforge.callbacks import JsonlLogger
    from kdforge.config import OptimConfig, TrainConfig
    from kdforge.data import make_loader
    from kdforge.distiller import Distiller
    from kdforge.losses import build_losses
    from kdforge.teachers import Teacher
    from kdforge.trainer import Trainer

    teacher, student = step_models()
    terms = build_losses([HALF_CE, {"name": "kd", "weight": 0.5, "temperature": 1.0}])
    distiller = Distiller(student, Teacher(teacher), terms, data.train.x[:2], per_token=True)
    train, val = make_loader(data.train, 32, shuffle=True), make_loader(data.val, 128)
    trainer = Trainer(
        distiller,
        OptimConfig(lr=3e-3, weight_decay=0.01),
        TrainConfig(epochs=1),
        steps_per_epoch=len(train),
        checkpoint_dir=workdir,
        callbacks=[JsonlLogger(workdir / "metrics.jsonl")],
        task="lm",
    )
    start = time.perf_counter()
    trainer.fit(train, val)
    return time.perf_counter() - start


def handwritten_epoch(data) -> float:
    """The same work written by hand: batches sliced from the tensors, token-level CE + KD, AdamW, cosine, a
    validation pass."""
    teacher, student = step_models()
    x, y = data.train.x, data.train.y
    steps = math.ceil(len(y) / 32)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.perf_counter()
    student.train()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    for i in range(0, len(y), 32):
        idx = order[i : i + 32]
        xb, yb = x[idx], y[idx].flatten()
        keep = yb != -100
        with torch.no_grad():
            zt = teacher(xb).flatten(0, 1)[keep]
        zs = student(xb).flatten(0, 1)[keep]
        kd = F.kl_div(F.log_softmax(zs, -1), F.log_softmax(zt, -1), reduction="batchmean", log_target=True)
        loss = 0.5 * F.cross_entropy(zs, yb[keep]) + 0.5 * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    student.eval()
    with torch.no_grad():
        for i in range(0, len(data.val.y), 128):
            zs, yv = student(data.val.x[i : i + 128]).flatten(0, 1), data.val.y[i : i + 128].flatten()
            F.cross_entropy(zs[yv != -100], yv[yv != -100]).item()
    return time.perf_counter() - start


def step_time(rounds: int) -> dict:
    from kdforge.data import build_dataset

    data = build_dataset("text_lm", seed=0, length=LENGTH, max_chars=MAX_CHARS)
    with tempfile.TemporaryDirectory() as tmp:
        kdforge_epoch(data, Path(tmp))  # warm-up both paths once
    handwritten_epoch(data)
    kd_times, hand_times = [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            first_kd = r % 2 == 0
            for which in ("kdforge", "hand") if first_kd else ("hand", "kdforge"):
                if which == "kdforge":
                    kd_times.append(kdforge_epoch(data, Path(tmp)))
                else:
                    hand_times.append(handwritten_epoch(data))
        print(f"round {r + 1}: kdforge {kd_times[-1]:.2f} s, hand-written {hand_times[-1]:.2f} s", flush=True)
    ratio = statistics.median(a / b for a, b in zip(kd_times, hand_times))
    return {
        "kdforge_s_per_epoch": statistics.median(kd_times),
        "handwritten_s_per_epoch": statistics.median(hand_times),
        "ratio": ratio,
        "target_ratio": 1.05,
        "rounds": rounds,
        "train_rows": len(data.train),
        "setup": f"text_lm bytes, {LENGTH}-token rows, batch 32; Llama teacher {TEACHER['hidden_size']}x"
        f"{TEACHER['num_hidden_layers']} -> Llama student {STUDENT['hidden_size']}x{STUDENT['num_hidden_layers']}, "
        "1/2 CE + 1/2 KD (T = 1), AdamW + cosine, one epoch with a validation pass, CPU",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def step_markdown(out: dict) -> str:
    return (
        "# kdforge's online LM-distillation epoch against a hand-written loop\n\n"
        f"{out['setup']}; {out['train_rows']} training rows, threads {out['threads']}.\n\n"
        "| loop | s per epoch (median) |\n|---|---:|\n"
        f"| kdforge | {out['kdforge_s_per_epoch']:.2f} |\n| hand-written | {out['handwritten_s_per_epoch']:.2f} |\n\n"
        f"Median paired ratio over {out['rounds']} alternating rounds: **{out['ratio']:.3f}** "
        f"(target ≤ {out['target_ratio']}).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", action="store_true", help="KD against alone, 3 seeds; cache against online")
    parser.add_argument("--step", action="store_true", help="kdforge's epoch against a hand-written one")
    parser.add_argument("--students", action="store_true", help="layer-drop students, whole or LoRA, against alone")
    parser.add_argument("--teacher-epochs", type=int, default=8, help="--students: the teacher's training epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.step:
        out = step_time(args.rounds)
        save("lm_hf_step", out, step_markdown(out))
    if args.students:
        started = time.perf_counter()
        out = students(args.seeds, args.teacher_epochs)
        out["minutes"] = (time.perf_counter() - started) / 60
        name = "lm_hf_students" if args.teacher_epochs == 8 else f"lm_hf_students_{args.teacher_epochs}"
        save(name, out, students_markdown(out))
    if args.quality:
        started = time.perf_counter()
        out = quality(args.seeds)
        out["minutes"] = (time.perf_counter() - started) / 60
        save("lm_hf", out, quality_markdown(out))


if __name__ == "__main__":
    main()
