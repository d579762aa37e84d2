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

Cost of the next token at context lengths 128 to 2,048, batch 1, on the CPU: the teacher read two ways, over the whole
context (a plain forward) and one step from its key-value cache (``lm_transformer.step``, the cache holding the
context), against the student's one recurrent step from its state; the three take turns in 10 ms slices, 7 rounds
(``common.paired``). Their cost does not depend on their weights, so both are built by the recipe untrained, at
positions for the longest context. Tokens/s, peak memory of that computation, and the bytes each must keep between
tokens (the key-value cache; the student's state).

    uv run python benchmarks/lm.py [--seeds 0 1 2] [--contexts 128 512 2048] [--teacher
    RUN_DIR/teacher/teacher.safetensors]
    uv run python benchmarks/lm.py --costs-only      # the next-token costs again; the committed quality runs kept
    uv run python benchmarks/lm.py --spike-rate 0 0.1 1 10   # seed 0's KD student with a spike_rate term (target
                                                             # 0.3) of each weight: firing density and perplexity

Writes benchmarks/results/lm.json and .md (--spike-rate: lm_spike_rate.json and .md).

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

from common import earlier_results, mean_std, paired, run_quietly, save
from kdforge.bench import peak_memory_bytes
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


def quality(seeds: list[int], teacher_file: str | None) -> dict:
    """Per seed and for the non-spiking variant: perplexities and spike statistics."""
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
    return runs


def spike_rates(weights: list[float], teacher_file: str | None) -> dict:
    """Seed 0's distilled student (its split, its teacher: trained once here unless given) with a ``spike_rate``
    term of target 0.3 at each weight (0: the recipe as it is): firing density, validation and test perplexity."""
    base = yaml.safe_load(RECIPE.read_text())
    base["data"]["split_seed"], base["seed"] = 0, 0
    base["train"]["baseline"] = False
    log_dir = tempfile.mkdtemp(prefix="kdforge-lm-spikes-")
    if teacher_file:
        base["teacher"] = {"source": "checkpoint", "path": teacher_file}
    rows = {}
    for weight in weights:
        raw = copy.deepcopy(base)
        if weight:
            raw["losses"].append({"name": "spike_rate", "target": 0.3, "weight": weight})
        result = train(raw, log_dir)
        if "path" not in base["teacher"]:  # the first run trained it: the others read it
            trained = Path(result["run_dir"]) / "teacher" / "teacher.safetensors"
            base["teacher"] = {"source": "checkpoint", "path": str(trained)}
        student = result["student"]
        rows[str(weight)] = {
            "density": student["spikes"]["density"],
            "val_perplexity": student["val_best"]["perplexity"],
            "test_perplexity": student["test"]["perplexity"],
        }
        print(f"spike_rate weight {weight}: {rows[str(weight)]}", flush=True)
    return {"seed": 0, "target": 0.3, "rows": rows}


def spike_rate_markdown(out: dict) -> str:
    lines = [
        f"# The spiking student with a spike_rate term (target {out['target']}), seed {out['seed']}",
        "",
        "| `spike_rate` weight | density | validation PPL | test PPL |",
        "|---:|---:|---:|---:|",
    ]
    for weight, r in out["rows"].items():
        shown = "—" if float(weight) == 0 else f"{float(weight):g}"
        lines.append(f"| {shown} | {r['density']:.3f} | {r['val_perplexity']:.3f} | {r['test_perplexity']:.3f} |")
    return "\n".join([*lines, "", "    uv run python benchmarks/lm.py --spike-rate 0 0.1 1 10", ""])


class Step(torch.nn.Module):
    """One step of a model from a state it keeps, token [1] -> logits: the student's recurrent state, or the
    teacher's key-value cache, set back to the context's length before each step (every step reads the same
    context)."""

    def __init__(self, model: torch.nn.Module, context: int):
        super().__init__()
        self.model, self.state = model, model.empty_state(1)
        for token in torch.randint(1, 256, (context,)):  # a state that has read the context
            self.state = model.step(token[None], self.state)[1]
        self.length = getattr(self.state, "length", None)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        if self.length is not None:
            self.state.length = self.length
        logits, self.state = self.model.step(token, self.state)
        return logits


def recipe_models(longest: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The recipe's teacher (with positions for ``longest`` tokens) and student, untrained, in eval mode."""
    raw = yaml.safe_load(RECIPE.read_text())

    def built(spec: dict, length: int) -> torch.nn.Module:
        options = {k: v for k, v in spec.items() if k != "name"}
        return build_model(spec["name"], input_shape=(length,), num_classes=256, **options).eval()

    return built(raw["teacher"]["model"], longest), built(raw["student"]["model"], raw["data"]["length"])


@torch.no_grad()
def costs(contexts: list[int], rounds: int = 7) -> dict:
    teacher, student = recipe_models(max(contexts))
    options = yaml.safe_load(RECIPE.read_text())["teacher"]["model"]
    width, depth = options["width"], options["depth"]
    token = torch.tensor([65])
    step = Step(student, 64)  # its cost is the same after any number of tokens
    state_bytes = sum(
        t.numel() * t.element_size()
        for block in step.state
        for t in (block.time_input, block.channel_input, *block.wkv)
    )
    out: dict = {"student_state_bytes": state_bytes, "contexts": {}}
    for length in contexts:
        whole, cached = torch.randint(1, 256, (1, length)), Step(teacher, length - 1)
        variants = {
            "student": lambda: step(token),
            "teacher": lambda whole=whole: teacher(whole),
            "teacher_cached": lambda cached=cached: cached(token),
        }
        speeds = paired(variants, 1, rounds)
        out["contexts"][length] = {
            "teacher_tokens_per_s": speeds["teacher_samples_per_s"],
            "teacher_cached_tokens_per_s": speeds["teacher_cached_samples_per_s"],
            "student_tokens_per_s": speeds["student_samples_per_s"],
            # the median per-round ratio inverted: with an odd number of rounds, the median of the inverted ratios
            "student_over_teacher_cached": 1 / speeds["teacher_cached_over_student"],
            "teacher_peak_bytes": peak_memory_bytes(teacher, whole),
            "teacher_cached_peak_bytes": peak_memory_bytes(cached, token),
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
        "Next-token cost at batch 1 on this CPU, the three taking turns (teacher: a forward over the whole context, "
        "or one step from its key-value cache holding the context; student: one recurrent step from its state):",
        "",
        "| context | teacher tokens/s, whole context | teacher tokens/s, KV cache | student tokens/s | teacher peak "
        "memory, whole / cached | student peak memory | teacher KV cache | student state |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    c = out["costs"]
    for length, row in c["contexts"].items():
        lines.append(
            f"| {length} | {row['teacher_tokens_per_s']:,.0f} | {row['teacher_cached_tokens_per_s']:,.0f} | "
            f"{row['student_tokens_per_s']:,.0f} | {row['teacher_peak_bytes'] / 1024:,.0f} / "
            f"{row['teacher_cached_peak_bytes'] / 1024:,.0f} KiB | {row['student_peak_bytes'] / 1024:,.0f} KiB | "
            f"{row['teacher_kv_cache_bytes'] / 1024:,.0f} KiB | {c['student_state_bytes'] / 1024:,.1f} KiB |"
        )
    ratios = ", ".join(
        f"{row['student_over_teacher_cached']:.1f}× at {length}" for length, row in c["contexts"].items()
    )
    lines += ["", f"The student's tokens/s over the teacher's with its cache (median of the rounds' ratios): {ratios}."]
    lines += ["", f"Recipe `lm_rwkv_spiking.yaml`; teacher {out['teacher']}. {out['minutes']} minutes (quality runs)."]
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
    parser.add_argument(
        "--costs-only",
        action="store_true",
        help="measure the next-token costs again and keep the committed quality runs",
    )
    parser.add_argument("--spike-rate", type=float, nargs="+", help="weights of a spike_rate term (0: none) instead")
    args = parser.parse_args()
    if args.spike_rate:
        out = spike_rates(args.spike_rate, args.teacher)
        save("lm_spike_rate", out, spike_rate_markdown(out))
        return
    if args.costs_only:
        out = earlier_results("lm", "--costs-only")
        out["costs"] = costs(args.contexts)
        save("lm", out, markdown(out))
        return
    started = time.perf_counter()
    out = {
        "seeds": args.seeds,
        "runs": quality(args.seeds, args.teacher),
        "teacher": "trained beforehand by the recipe on the first seed's split (--teacher)"
        if args.teacher
        else "trained by the first seed's run",
    }
    out["minutes"] = round((time.perf_counter() - started) / 60, 1)
    out["costs"] = costs(args.contexts)
    save("lm", out, markdown(out))


if __name__ == "__main__":
    main()
