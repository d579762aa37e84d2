"""Subcommands that train, check and evaluate: demo, train, sweep, tune, check, cache, eval."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from kdforge.cli.app import FeatureDtype, Overrides, console, heading, recipe_path
from kdforge.errors import KdforgeError

if TYPE_CHECKING:
    pass


def demo(
    epochs: Annotated[Optional[int], typer.Option(help="Student epochs (default: the recipe's).")] = None,
    log_dir: Annotated[str, typer.Option("--dir", help="Where the run directory goes.")] = "runs",
) -> None:
    """Distill a CNN into a small MLP on the built-in digits data and compare with the MLP trained alone."""
    from kdforge.config import Recipe
    from kdforge.runner import run

    overrides = [f"log.dir={log_dir}"] + ([f"train.epochs={epochs}"] if epochs else [])
    recipe = Recipe.from_yaml(recipe_path("digits_kd"), overrides)
    console.print("[bold]kdforge demo[/]: teacher = CNN trained on digits; student = tiny MLP, with KD and alone.")
    run(recipe, console=console)


def train(
    recipe: Annotated[
        Optional[str], typer.Argument(help="Recipe YAML file or shipped recipe name.", show_default=False)
    ] = None,
    overrides: Overrides = None,
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue an interrupted run directory (uses its config.yaml).")
    ] = None,
) -> None:
    """Train: teacher (if needed), distilled student, and the student alone; write the run directory."""
    from kdforge.config import Recipe
    from kdforge.runner import load_run_recipe, run

    if resume is not None:
        if recipe or overrides:
            raise KdforgeError(
                "--resume continues a run with its saved config.yaml; give no recipe or overrides with it"
            )
        run(load_run_recipe(resume), resume=resume, console=console)
        return
    if recipe is None:
        raise KdforgeError("give a recipe (a YAML file or a shipped name such as digits_kd), or --resume RUN_DIR")
    run(Recipe.from_yaml(recipe_path(recipe), overrides or []), console=console)


def sweep(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file or shipped recipe name.", show_default=False)],
    overrides: Overrides = None,
    seeds: Annotated[int, typer.Option(min=1, help="How many seeds to run.")] = 5,
    first_seed: Annotated[int, typer.Option(help="The first seed; the others follow it.")] = 0,
    jobs: Annotated[
        int,
        typer.Option(min=1, help="Processes running seeds at once, each with cores / jobs threads."),
    ] = 1,
) -> None:
    """Run a recipe under several seeds; write mean ± std of test accuracy (best and last epoch) and the KD gain to
    sweep.md."""
    from kdforge.config import Recipe
    from kdforge.sweeper import sweep as run_sweep

    run_sweep(Recipe.from_yaml(recipe_path(recipe), overrides or []), seeds, first_seed, console, jobs)


def tune(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file or shipped recipe name.", show_default=False)],
    overrides: Overrides = None,
    trials: Annotated[int, typer.Option(min=1, help="Finished trials the study should have (resumes count).")] = 30,
    space: Annotated[
        Optional[list[str]],
        typer.Option(
            help="A searched key, **key={low: 1, high: 8}** (also log, step), **key={factor: 5}** or "
            "**key={choice: [...]}**; repeat it. Default: the recipe's tune.space, else each term's own.",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Trial processes on this machine; they share its cores.")] = 1,
    storage: Annotated[
        Optional[str],
        typer.Option(help="Optuna storage: an RDB URL or a journal file (default: study.journal in the tune folder)."),
    ] = None,
    pruner: Annotated[str, typer.Option(help="median, halving (successive halving) or none.")] = "median",
    seeds: Annotated[
        int, typer.Option(min=0, help="Seeds to train the best recipe over, beside the student alone (0: none).")
    ] = 3,
    trial_seeds: Annotated[
        int,
        typer.Option(
            min=1, help="Seeds (splits) each trial is trained on; its score is their mean (for small validation sets)."
        ),
    ] = 1,
) -> None:
    """Search a recipe's hyper-parameters with Optuna on the validation split (pruning poor trials); write tune.md,
    plots and best.yaml; train the best recipe over seeds beside the student alone. Interrupted: run it again."""
    from kdforge.config import Recipe
    from kdforge.tuner import parse_space
    from kdforge.tuner import tune as run_tune

    run_tune(
        Recipe.from_yaml(recipe_path(recipe), overrides or []),
        trials,
        space=parse_space(space or []),
        jobs=jobs,
        storage=storage,
        pruner=pruner,
        seeds=seeds,
        trial_seeds=trial_seeds,
        console=console,
    )


def check(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file or shipped recipe name.", show_default=False)],
    overrides: Overrides = None,
) -> None:
    """Build everything and run one batch forward and backward: names, taps, shapes, class counts. No training."""
    from kdforge.check import check as run_check
    from kdforge.config import Recipe

    run_check(Recipe.from_yaml(recipe_path(recipe), overrides or []), console)


def fetch(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file or shipped recipe name.", show_default=False)],
    overrides: Overrides = None,
) -> None:
    """Download everything the recipe names (models, tokenizers and datasets by hub id, timm and torchvision
    weights, files of download: true datasets) into their libraries' caches without training, and list each with
    its size and resolved commit or checksum: run it where there is a network, then the job offline
    (HF_HUB_OFFLINE=1 or kdforge --offline) with the same HF_HOME and TORCH_HOME."""
    from rich.table import Table
    from rich.text import Text

    from kdforge.check import fetch as run_fetch
    from kdforge.config import Recipe
    from kdforge.pretrained import cached_size

    loaded = run_fetch(Recipe.from_yaml(recipe_path(recipe), overrides or []), console)
    if not loaded:
        console.print("the recipe names nothing by hub id: nothing to fetch")
        return
    table = Table("name", "as", "revision", "commit / checksum", "size", title="downloaded, or found in the caches")
    for source in loaded:
        size = f"{cached_size(source) / 2**20:,.1f} MiB"
        cells = (
            source["id"],
            source["what"],
            source["revision"],
            source.get("commit", source.get("sha256", ""))[:12],
            size,
        )
        table.add_row(*map(Text, cells))  # names as they are, never read as markup
    console.print(table)


def cache(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file or shipped recipe name.", show_default=False)],
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option(help="Folder for the cache (manifest.json and .npy files).")] = Path(
        "teacher-cache"
    ),
    topk: Annotated[
        Optional[int],
        typer.Option(min=1, help="Keep only the top-k log-probabilities per sample (default: dense logits)."),
    ] = None,
    views: Annotated[
        int,
        typer.Option(
            min=1, help="Augmented views per sample (recipes with data.augment); training shows view epoch % views."
        ),
    ] = 1,
    feature_dtype: Annotated[
        FeatureDtype, typer.Option(help="How tapped teacher layers are stored: float16 halves their size.")
    ] = FeatureDtype.float32,
    logprob_bits: Annotated[
        int,
        typer.Option(
            min=8, max=16, help="With --topk: 16 keeps log-probabilities in float16; 8 quantises them (±4 % each)."
        ),
    ] = 16,
) -> None:
    """Run the teacher once over the training split and store its outputs (logits, and the layers the recipe's
    loss terms tap); then train with teacher.cache=OUT."""
    from kdforge.config import Recipe
    from kdforge.runner import build_cache

    if logprob_bits not in (8, 16):
        raise KdforgeError(f"--logprob-bits is 8 or 16, not {logprob_bits}")
    build_cache(
        Recipe.from_yaml(recipe_path(recipe), overrides or []),
        out,
        topk,
        views,
        feature_dtype.value,
        console,
        logprob_bits,
    )


def evaluate_run(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)],
    split: Annotated[str, typer.Option(help="Which split to evaluate: test or val.")] = "test",
) -> None:
    """Re-evaluate a run's exported student (and its teacher, when saved) on a split."""
    from kdforge.data import make_loader, recipe_data
    from kdforge.evaluate import evaluate, shown
    from kdforge.export import load_run_teacher, load_student
    from kdforge.runner import load_run_recipe

    if split not in ("test", "val"):
        raise KdforgeError(f"--split must be 'test' or 'val', got '{split}'")
    recipe = load_run_recipe(run_dir)
    data = recipe_data(recipe.data, recipe.seed)
    batches = make_loader(getattr(data, split), recipe.data.eval_batch_size)
    models = {"student": load_student(run_dir)}
    if (teacher := load_run_teacher(run_dir)) is not None:
        models["teacher"] = teacher
    heading(f"{run_dir} on {data.name} {split} ({len(getattr(data, split))} samples)")
    table = Table()
    for column in ("model", "score", "loss"):
        table.add_column(column)
    for role, model in models.items():
        metrics = evaluate(model, batches, task=data.task)
        table.add_row(role, shown(metrics), f"{metrics['loss']:.4f}")
    console.print(table)
