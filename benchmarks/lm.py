"""Language-model distillation: a GPT-style ``lm_transformer`` teacher trained on the built-in
docstring corpus (UTF-8 bytes), distilled into the ternary-spiking ``rwkv_spiking`` student
(``recipes/lm_rwkv_spiking.yaml``).

Quality, on the test documents (each model at its best validation epoch): perplexity of the
teacher, of the spiking student with KD and alone (the run's baseline: same initial weights,
same schedule, cross-entropy only), for each seed. The data split is the first seed's in
every run (``data.split_seed``) and the teacher is trained once, on that split, and loaded by
the other runs: only the students vary, and no run's test documents were seen by its teacher. Once, the non-spiking
student
(``spiking: false``) with and without KD. Firing density and dead / saturated channels of the
spiking students.

Cost of the next token at context lengths 128 to 2,048, batch 1, measured side by side in this
process on the CPU: the teacher runs over the whole context (its positions are learned, so for
contexts beyond its trained 128 an untrained ``lm_transformer`` of the same shape stands in:
its cost does not depend on its weights); the student takes one recurrent step from its state.
Tokens/s, peak memory of that computation, and the bytes the model must keep between tokens
(the student's state; a key-value cache, were the teacher given one).

    uv run python benchmarks/lm.py [--seeds 0 1 2] [--contexts 128 512 2048] [--teacher
    RUN_DIR/teacher/teacher.safetensors]

Writes benchmarks/results/lm.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

import kdforge
from common import mean_std, run_quietly, save
from kdforge.bench import latency_ms, peak_memory_bytes
from kdforge.models import build_model

RECIPE = Path(__file__).parents[1] / "src" / "kdforge" / "recipes" / "lm_rwkv_spiking.yaml"
ROLES = {"teacher": "teacher", "student": "KD", "student_alone": "alone"}


def train(raw: dict, log_dir: str) -> dict:
    raw = copy.deepcopy(raw)
    raw["log"] = {"dir": log_dir, "progress": False}
    result = run_quietly(raw)
    return {**result.results, "run_dir": str(result.run_dir)}


def summary(result: dict) -> dict:
    out = {role: result[role]["test"]["perplexity"] for role in ROLES}
    out["spikes"] = result["student"].get("spikes")
    out["spikes_alone"] = result["student_alone"].get("spikes")
    out["params"] = {role: result[role]["params"] for role in ROLES}
    out["minutes"] = round(result["timings"]["total_s"] / 60, 1)
    return out


def quality(seeds: list[int], teacher_file: str | None) -> tuple[dict, str, str]:
    """Per seed and for the non-spiking variant: perplexities and spike statistics; the first
    run's directory (its student) and the teacher's file."""
    base = yaml.safe_load(RECIPE.read_text())
    base["data"]["split_seed"] = seeds[0]
    log_dir = tempfile.mkdtemp(prefix="kdforge-lm-")
    if teacher_file:
        base["teacher"] = {"source": "checkpoint", "path": teacher_file}
    first = train({**base, "seed": seeds[0]}, log_dir)
    teacher = {
        "source": "checkpoint",
        "path": teacher_file or str(Path(first["run_dir"]) / "teacher" / "teacher.safetensors"),
    }
    runs = {f"seed {seeds[0]}": summary(first)}
    print(f"seed {seeds[0]}: {runs[f'seed {seeds[0]}']}", flush=True)
    for seed in seeds[1:]:
        runs[f"seed {seed}"] = summary(train({**base, "seed": seed, "teacher": teacher}, log_dir))
        print(f"seed {seed}: {runs[f'seed {seed}']}", flush=True)
    plain = copy.deepcopy(base)
    plain["student"]["model"]["spiking"] = False
    runs["non-spiking"] = summary(train({**plain, "seed": seeds[0], "teacher": teacher}, log_dir))
    print(f"non-spiking: {runs['non-spiking']}", flush=True)
    return runs, first["run_dir"], teacher["path"]


class Step(torch.nn.Module):
    """One recurrent step of a student from a state it keeps: token [1] -> logits."""

    def __init__(self, student: torch.nn.Module):
        super().__init__()
        self.student, self.state = student, student.empty_state(1)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        logits, self.state = self.student.step(token, self.state)
        return logits


@torch.no_grad()
def costs(run_dir: str, teacher_file: str, contexts: list[int]) -> dict:
    teacher = kdforge.load_student(teacher_file)
    student = kdforge.load_student(run_dir)
    options = yaml.safe_load(RECIPE.read_text())["teacher"]["model"]
    width, depth = options["width"], options["depth"]
    step = Step(student).eval()
    for token in torch.randint(1, 256, (64,)):  # a state that has read some text
        step(token[None])
    state_bytes = sum(
        t.numel() * t.element_size()
        for block in step.state
        for t in (block.time_input, block.channel_input, *block.wkv)
    )
    token = torch.tensor([65])
    out = {"student_state_bytes": state_bytes, "contexts": {}}
    for length in contexts:
        model = (
            teacher
            if length <= teacher.positions.shape[1]
            else build_model(
                "lm_transformer",
                input_shape=(length,),
                num_classes=256,
                **{k: v for k, v in options.items() if k != "name"},
            ).eval()
        )
        x = torch.randint(1, 256, (1, length))
        teacher_ms = latency_ms(model, x, warmup=3, repeats=max(5, 2048 // length))
        student_ms = latency_ms(step, token, warmup=50, repeats=300)
        out["contexts"][length] = {
            "teacher_tokens_per_s": 1000 / teacher_ms,
            "student_tokens_per_s": 1000 / student_ms,
            "teacher_peak_bytes": peak_memory_bytes(model, x),
            "student_peak_bytes": peak_memory_bytes(step, token),
            "teacher_kv_cache_bytes": 2 * depth * length * width * 4,
        }
        print(f"context {length}: {out['contexts'][length]}", flush=True)
    return out


def markdown(out: dict) -> str:
    seeds = [r for name, r in out["runs"].items() if name.startswith("seed")]
    teacher = statistics.mean(r["teacher"] for r in seeds)
    lines = [
        "# Language-model distillation: lm_transformer → rwkv_spiking (docstring corpus, bytes, test split, seeds "
        f"{out['seeds']})",
        "",
        "| run | teacher PPL | student + KD PPL | student alone PPL | KD / teacher | alone / teacher | KD firing "
        "density |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in out["runs"].items():
        density = f"{r['spikes']['density']:.3f}" if r["spikes"] else "—"
        lines.append(
            f"| {name} | {r['teacher']:.2f} | {r['student']:.2f} | {r['student_alone']:.2f} | "
            f"{r['student'] / r['teacher']:.2f}× | "
            f"{r['student_alone'] / r['teacher']:.2f}× | {density} |"
        )
    kd, alone = [r["student"] for r in seeds], [r["student_alone"] for r in seeds]
    params = seeds[0]["params"]
    lines += [
        "",
        f"Spiking student over seeds: KD {mean_std(kd)}, alone {mean_std(alone)} (teacher {teacher:.2f}); "
        f"KD better on {sum(k < a for k, a in zip(kd, alone))} of {len(seeds)} seeds. "
        f"Parameters: teacher {params['teacher']:,}, student {params['student']:,}.",
        "",
        "Next-token cost at batch 1 on this CPU (teacher: a forward over the whole context; student: one recurrent "
        "step):",
        "",
        "| context | teacher tokens/s | student tokens/s | teacher peak memory | student peak memory | teacher KV "
        "cache (if cached) | student state |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    c = out["costs"]
    for length, row in c["contexts"].items():
        lines.append(
            f"| {length} | {row['teacher_tokens_per_s']:,.0f} | {row['student_tokens_per_s']:,.0f} | "
            f"{row['teacher_peak_bytes'] / 1024:,.0f} KiB | "
            f"{row['student_peak_bytes'] / 1024:,.0f} KiB | {row['teacher_kv_cache_bytes'] / 1024:,.0f} KiB | "
            f"{c['student_state_bytes'] / 1024:,.1f} KiB |"
        )
    lines += ["", f"Recipe `lm_rwkv_spiking.yaml`; teacher {out['teacher']}. {out['minutes']} minutes."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument(
        "--teacher",
        help=(
            "a teacher the recipe trained on the first seed's split (RUN_DIR/teacher/teacher.safetensors): skips "
            "training one"
        ),
    )
    args = parser.parse_args()
    started = time.perf_counter()
    runs, first, teacher = quality(args.seeds, args.teacher)
    out = {
        "seeds": args.seeds,
        "runs": runs,
        "costs": costs(first, teacher, args.contexts),
        "teacher": "trained beforehand by the recipe on the first seed's split (--teacher)"
        if args.teacher
        else "trained by the first seed's run",
    }
    out["minutes"] = round((time.perf_counter() - started) / 60, 1)
    save("lm", out, markdown(out))


if __name__ == "__main__":
    main()
