"""Tsetlin-machine benchmarks.

``accuracy``: TM students on digits at 32x32, 3 seeds, a fixed budget of epochs: ``tm_flat``,
``vit_tm`` (backends ste and deeptm), ``swin_tm``, each trained alone and distilled (CE + KD)
from a CNN teacher and from a ViT teacher, both trained by the recipe; ``vit_tm`` also
initialised from the ViT teacher (``init_from_teacher``: the ViT teacher has the student's
shape, so attention, norms and embeddings are copied and each TM block first learns its
MLP). Test accuracy (best epoch on validation), hard-mode accuracy, params, measured
latency at batch 1 and 256. Teachers and students see the same augmented views.

    uv run python benchmarks/tm.py accuracy [--epochs 20] [--seeds 0 1 2]

Writes benchmarks/results/tm_accuracy.json and .md.

``accuracy_finish``: the accuracy table's students whose rules lost over 0.5 points in hard mode (Swin-TM in every
setting, ViT-TM initialised from its teacher), trained again by the same recipes, then with
``student.hard_finish: 3`` (3 more epochs, in hard mode, the best chosen among them on validation): how far the
exported rules stay from soft mode, before and after finishing.

    uv run python benchmarks/tm.py accuracy_finish [--epochs 20] [--workers 2]

Writes benchmarks/results/tm_accuracy_finish.json and .md.

``packed``: an exported clause layer evaluated in integers (:class:`kdforge.families.tm.PackedTM`)
against the same layer in hard mode in PyTorch (float, ``inference_mode``): outputs must be
identical; throughput ratio at several batch sizes (target >= 10x on CPU). The two take
turns in 10 ms slices in one process, several rounds, median per-round ratio (and its spread over the rounds).

The layer is the clause layer of a ``tm_flat`` student on 32x32 digits (1,024 inputs,
2,048 literals); its weights are spread as training spreads them (random thresholds and
votes), since speed and exactness do not depend on what was learned.

    uv run python benchmarks/tm.py packed [--rounds 7] [--clauses 256]

Writes benchmarks/results/tm_packed_vnni.json on a CPU with int8 dot products (VNNI), else tm_packed_no_vnni.json.

``blocks``: the shipped TM students with their clause blocks in integers (:func:`kdforge.families.tm.packed_model`:
the attention and everything else stays float) against the same students in hard mode in PyTorch, on digits 32x32
test images (``tm_flat`` on booleanised 8x8 digits) at batch 1 and 256: every clause block on its own captured
inputs, one after the other; the whole student end to end (float soft mode, float hard mode, packed); and the time
spent inside its clause blocks during those forward passes (a hook before and after each). Weights are spread as
training spreads them. The logits must be identical to hard mode; ratios are medians of paired rounds in which the
variants take turns in 10 ms slices (the JSON adds each one's standard deviation over the rounds, ``_std``).

    uv run python benchmarks/tm.py blocks [--rounds 7] [--levels 8]

Writes benchmarks/results/tm_blocks_vnni.json and .md on a CPU with int8 dot products (VNNI), else tm_blocks_no_vnni;
with ``--levels`` L > 1 (every clause layer's literals read at L levels; ``tm_flat``, whose inputs are booleans, left
out) ``tm_blocks_<cpu>_levels<L>``.

``paths``: every way :class:`kdforge.families.tm.PackedTM` can multiply on this CPU (float32; PyTorch's int8 products
where the CPU has VNNI; oneDNN's int8 layers in x86 builds), each forced in turn on every clause-layer shape of the
same students at batch 1 and 256, against the layer in hard mode, paired; and the way it takes by default. Its
thresholds are chosen from these tables.

    uv run python benchmarks/tm.py paths [--rounds 7]

Writes benchmarks/results/tm_paths_vnni.json and .md, or tm_paths_no_vnni.

``ablation``: do the clause layers carry the model? On generated tasks where a feed-forward block matters (a 4 x 4 grid
of tokens, each six noisy ±1 bits; a token's class needs a non-linear function of its own bits, which attention alone
computes poorly: the parity of four bits, "exactly two of four bits", the parity of all six; the label is how many
tokens hold it, in 5 bins), ``vit_tm_tiny`` with its TM feed-forward (``literal_gain`` 1 and 4, ``strict``, with a norm
after the patch embedding (``patch_norm``) and once without it) and a one-stage ``swin_tm`` with the TM feed-forward,
each against the same student with an MLP of about the same size (``feed_forward: mlp``) and with none (``feed_forward:
none``, which is also the TM retrained with its output forced to zero); each trained alone and distilled (½ CE + ½ KD,
T = 1; at T = 4, distilled ViT-TMs scored 67-88% on token parity against 83-97% alone) from a ViT with MLPs trained by
the recipe, 3 seeds. For the TM students trained alone, the test accuracy with each TM block's output replaced by its
mean over the training split. The share of the none -> MLP gap a TM variant recovers is (TM − none) / (MLP − none). Runs
go ``--workers`` at a time, one thread each.

    uv run python benchmarks/tm.py ablation [--epochs 15] [--seeds 0 1 2] [--workers 2] [--variants ...] [--tasks ...]
        [--modes alone distilled] [--runs DIR]

Writes benchmarks/results/tm_ablation.json and .md (at another budget, tm_ablation_<epochs>ep.json and .md);
``--variants`` keeps only those TM rows (MLP and none always run); ``--tasks`` runs only those tasks and keeps the
others' results of the same budget; ``--modes alone`` trains the students alone only, and seeds other than 0-2 write
beside the committed file (e.g. tm_ablation_30ep_alone_seeds0-7.json).

``hard_finish``: the ablation's runs whose exported rules lost more than 0.5 points to the float student when the
ablation was first measured, on a machine its file did not record (at 15 epochs: on token parity, the one-stage
Swin-TM alone and distilled, the ViT-TM alone; at 30: the strict ViT-TM on token parity and two of four, and both
students on the parity of six), each followed by a second stage of 3 epochs in hard
mode (``init_from`` the first run, its teacher loaded, ``hard: true``, lr 2e-4): test accuracy soft, hard, and hard
after finishing.

    uv run python benchmarks/tm.py hard_finish [--epochs 15 | --epochs 30]

Writes benchmarks/results/tm_hard_finish.json and .md (at 30 epochs, tm_hard_finish_30ep.json and .md).

``hard_literals``: the same cases trained with ``hard_literals: 0.8`` (80% of each clause layer's inputs, drawn afresh
each step, read in training as the booleans hard mode reads), beside the same recipes and seeds without it (from
``hard_finish``'s results at that budget): test accuracy soft and of the rules, and the rules' gain paired by seed.

    uv run python benchmarks/tm.py hard_literals [--epochs 30] [--tasks ...]

Writes benchmarks/results/tm_hard_literals_30ep.json and .md; ``--tasks`` runs only those tasks' cases and keeps the
others'.

``levels``: every case whose exported rules lost more than 0.5 points to the float student (the token tasks' cases of
``hard_finish`` at 30 epochs, and the digits 32x32 students of ``accuracy_finish`` at 20), trained once as there and
read in hard mode with each literal at 1, 2, 3, 4 and 8 levels (``set_levels``; soft training does not depend on them):
validation and test accuracy, soft and at each level.

    uv run python benchmarks/tm.py levels

Writes benchmarks/results/tm_levels.json and .md. The table's last column is what ``student.choose_levels`` (on by
default) does in each run: the fewest levels within 0.25 points of soft mode on that run's validation split.

``strict_finish``: the ``strict`` cases of ``levels`` (clauses that are ANDs of booleans, read at one level), trained
as there, and the same recipes with ``student.hard_finish: 3`` (3 more epochs, in hard mode, the best chosen among them
on validation): test accuracy soft, hard, and of the finished rules.

    uv run python benchmarks/tm.py strict_finish

Writes benchmarks/results/tm_strict_finish.json and .md.

Every benchmark here but ``levels`` measures hard mode with one boolean per literal (``student.choose_levels:
false``), as its committed figures were taken.

``patch_norm``: ``vit_tm_tiny`` (patch 8) on digits at 32 x 32 trained alone, with and without a norm after its patch
embedding, seeds interleaved, 2 threads: test accuracy.

    uv run python benchmarks/tm.py patch_norm --epochs 15

Writes benchmarks/results/tm_patch_norm.json and .md.

``transfer``: the shipped one-to-one recipes, ``digits_vit_tm_transfer`` and ``digits_swin_tm_transfer`` (a teacher
with MLP blocks -> the same shape with TM blocks, ``init_from_teacher``, then CE + KD), 15 epochs, 3 seeds: test
accuracy in soft and hard mode, and each student's seconds per epoch.

    uv run python benchmarks/tm.py transfer --epochs 15

Writes benchmarks/results/tm_transfer.json and .md.

``features``: the booleanised-feature presets (``data.booleanize.features``: raw, augmented,
convolutional; thermometer with 3 levels) for a ``tm_flat`` student on digits trained alone
(cross-entropy), 3 seeds: test accuracy (best epoch on validation) in hard mode, literals
per sample; and how long booleanising digits at 32x32 takes, computed and read back from
``data.booleanize.cache`` (median of 5, one process).

    uv run python benchmarks/tm.py features [--epochs 30] [--seeds 0 1 2]

Writes benchmarks/results/tm_features.json and .md.
"""

from __future__ import annotations

import argparse

from common import RESULTS, results_path, save, write_json
from tm_ablation import (
    ABLATION_TASKS,
    ABLATION_VARIANTS,
    HARD_FINISH_CASES,
    ablation,
    ablation_name,
    ablation_table,
    hard_finish,
    hard_finish_name,
    hard_finish_table,
    hard_literals,
    hard_literals_table,
    levels,
    levels_table,
    strict_finish,
    strict_finish_table,
)
from tm_speed import blocks, blocks_table, cpu_class, packed, paths, paths_table
from tm_students import (
    accuracy,
    accuracy_finish,
    accuracy_finish_table,
    accuracy_table,
    features,
    features_table,
    patch_norm,
    patch_norm_table,
    transfer,
    transfer_table,
)

# The budgets the committed results were taken at (else 30 epochs).
DEFAULT_EPOCHS = {
    **dict.fromkeys(("ablation", "hard_finish", "patch_norm", "transfer"), 15),
    **dict.fromkeys(("accuracy", "accuracy_finish"), 20),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "what",
        choices=[
            "accuracy",
            "accuracy_finish",
            "packed",
            "blocks",
            "paths",
            "ablation",
            "hard_finish",
            "hard_literals",
            "levels",
            "strict_finish",
            "patch_norm",
            "transfer",
            "features",
        ],
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="default: 15 (ablation, hard_finish, patch_norm, transfer), 20 (accuracy, accuracy_finish), else 30",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="ablation, hard_finish, hard_literals, accuracy_finish, strict_finish, levels: runs at once, one thread "
        "each",
    )
    parser.add_argument("--clauses", type=int, default=256)
    parser.add_argument("--levels", type=int, default=1, help="blocks: the clause layers' levels")
    parser.add_argument(
        "--variants", nargs="+", choices=list(ABLATION_VARIANTS), help="ablation: these TM variants (MLP, none always)"
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=list(ABLATION_TASKS),
        help="ablation, hard_literals: these tasks (the others' results are kept)",
    )
    parser.add_argument(
        "--runs", help="ablation: the runs' folder (default: a new temporary one); a stopped ablation's resumes there"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["alone", "distilled"],
        default=["alone", "distilled"],
        help="ablation: train the students these ways (one alone writes beside the committed results)",
    )
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 64, 256, 1024])
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS.get(args.what, 30)
    if args.what in ("hard_finish", "hard_literals", "strict_finish") and args.epochs not in HARD_FINISH_CASES:
        parser.error(f"{args.what} has cases for --epochs {' or '.join(map(str, HARD_FINISH_CASES))}")
    RESULTS.mkdir(exist_ok=True)
    tabled = {
        "accuracy": (accuracy, accuracy_table),
        "features": (features, features_table),
        "blocks": (blocks, blocks_table),
        "paths": (paths, paths_table),
        "ablation": (ablation, ablation_table),
        "hard_finish": (hard_finish, hard_finish_table),
        "hard_literals": (hard_literals, hard_literals_table),
        "levels": (levels, levels_table),
        "strict_finish": (strict_finish, strict_finish_table),
        "accuracy_finish": (accuracy_finish, accuracy_finish_table),
        "patch_norm": (patch_norm, patch_norm_table),
        "transfer": (transfer, transfer_table),
    }
    if args.what in tabled:
        measure, table = tabled[args.what]
        result = measure(args)
        name = hard_finish_name(args.epochs) if args.what == "hard_finish" else f"tm_{args.what}"
        name += f"_{args.epochs}ep" if args.what == "hard_literals" else ""
        name += f"_{cpu_class()}" if args.what in ("blocks", "paths") else ""
        name += f"_levels{args.levels}" if args.what == "blocks" and args.levels > 1 else ""
        save(ablation_name(args) if args.what == "ablation" else name, result, table(result))
        return
    result = packed(args)
    path = results_path(f"tm_packed_{cpu_class()}", ".json")
    write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
