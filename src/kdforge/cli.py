"""The ``kdforge`` command line."""

from __future__ import annotations

import collections
import enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kdforge.errors import KdforgeError, RunInterrupted
from kdforge.family import add_commands

if TYPE_CHECKING:
    import torch

app = typer.Typer(
    help="kdforge: distill a frozen teacher into a smaller student, from a YAML recipe.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    epilog=(
        "Examples:\n\n"
        "  kdforge demo\n\n"
        "  kdforge check digits_kd\n\n"
        "  kdforge train digits_kd train.epochs=50 losses.1.temperature=2.0\n\n"
        "  kdforge train --resume runs/digits-kd-20261122-101500\n\n"
        "  kdforge sweep digits_kd --seeds 5\n\n"
        "  kdforge explain runs/digits-vit-tm-20261122-101500 --samples 8\n\n"
        "  kdforge bench ssm --input-shape 1,1024 -o model_dim=32 --batch-sizes 1,32\n\n"
        "  kdforge compare runs/sar-ssm-a runs/sar-ssm-b --lengths 256,1024,4096\n\n"
        "  kdforge --plugin my_parts.py train my_recipe.yaml"
    ),
)
console = Console()


class FeatureDtype(str, enum.Enum):
    float32 = "float32"
    float16 = "float16"


Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Overrides [bold]key.path=value[/], e.g. train.epochs=5 losses.1.temperature=2.0", show_default=False
    ),
]


@app.callback()
def load_plugins(
    plugin: Annotated[
        Optional[list[str]],
        typer.Option(
            "--plugin",
            "-p",
            metavar="FILE_OR_MODULE",
            help=(
                "A Python file or module to import first: your own models, losses and datasets register themselves "
                "there. Repeatable."
            ),
            show_default=False,
        ),
    ] = None,
) -> None:
    """kdforge: distill a frozen teacher into a smaller student, from a YAML recipe."""
    for name in plugin or []:
        import_plugin(name)


def import_plugin(name: str) -> None:
    """Import ``my_parts.py`` (a file) or ``package.module`` (importable) for its registrations."""
    import importlib
    import importlib.util
    import sys

    path = Path(name)
    if path.suffix == ".py":
        if not path.is_file():
            raise KdforgeError(f"plugin file '{name}' not found")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except KdforgeError:
            raise
        except Exception as err:
            sys.modules.pop(path.stem, None)
            raise KdforgeError(
                f"plugin file '{name}' failed while being imported: {_plugin_error(err, path)}"
            ) from None
        return
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise KdforgeError(
            f"plugin '{name}' cannot be imported ({err}); give a .py file or an importable module"
        ) from None


def _plugin_error(err: Exception, path: Path) -> str:
    """What went wrong in a user's plugin file, and where: its own line, not kdforge's frames."""
    import traceback

    if isinstance(err, SyntaxError):
        return f"{type(err).__name__} at line {err.lineno}: {err.msg}"
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f"{type(err).__name__} at line {lines[-1] if lines else '?'}: {err}"


def whole_numbers(text: str, option: str) -> list[int]:
    """``"1,32"`` -> [1, 32]: a comma-separated option of positive whole numbers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise KdforgeError(f"{option} takes positive whole numbers separated by commas (e.g. 1,32); got '{text}'")
    return values


def recipe_path(name: str) -> Path:
    """A recipe file, or the name of a recipe shipped with kdforge (``digits_kd``)."""
    path = Path(name)
    if path.exists():
        return path
    shipped = resources.files("kdforge") / "recipes" / f"{path.stem}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise KdforgeError(f"recipe '{name}' not found: give a YAML file or one of: {', '.join(shipped_recipes())}")


def shipped_recipes() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in (resources.files("kdforge") / "recipes").iterdir()
        if p.name.endswith(".yaml")
    )


@app.command()
def demo(
    epochs: Annotated[Optional[int], typer.Option(help="Student epochs (default: the recipe's).")] = None,
    log_dir: Annotated[str, typer.Option("--dir", help="Where the run directory goes.")] = "runs",
) -> None:
    """Distill a CNN into a small MLP on the built-in digits data and compare with the MLP trained alone."""
    from kdforge.config import Recipe
    from kdforge.run import run

    overrides = [f"log.dir={log_dir}"] + ([f"train.epochs={epochs}"] if epochs else [])
    recipe = Recipe.from_yaml(recipe_path("digits_kd"), overrides)
    console.print("[bold]kdforge demo[/]: teacher = CNN trained on digits; student = tiny MLP, with KD and alone.")
    run(recipe, console=console)


@app.command()
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
    from kdforge.run import load_run_recipe, run

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


@app.command()
def sweep(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file or shipped recipe name.", show_default=False)],
    overrides: Overrides = None,
    seeds: Annotated[int, typer.Option(min=1, help="How many seeds to run.")] = 5,
    first_seed: Annotated[int, typer.Option(help="The first seed; the others follow it.")] = 0,
) -> None:
    """Run a recipe under several seeds; write mean ± std of test accuracy (best and last epoch) and the KD gain to
    sweep.md."""
    from kdforge.config import Recipe
    from kdforge.sweep import sweep as run_sweep

    run_sweep(Recipe.from_yaml(recipe_path(recipe), overrides or []), seeds, first_seed, console)


@app.command()
def check(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file or shipped recipe name.", show_default=False)],
    overrides: Overrides = None,
) -> None:
    """Build everything and run one batch forward and backward: names, taps, shapes, class counts. No training."""
    from kdforge.config import Recipe
    from kdforge.run import check as run_check

    run_check(Recipe.from_yaml(recipe_path(recipe), overrides or []), console)


@app.command()
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
) -> None:
    """Run the teacher once over the training split and store its outputs (logits, and the layers the recipe's
    loss terms tap); then train with teacher.cache=OUT."""
    from kdforge.config import Recipe
    from kdforge.run import build_cache

    build_cache(Recipe.from_yaml(recipe_path(recipe), overrides or []), out, topk, views, feature_dtype.value, console)


@app.command("eval")
def evaluate_run(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)],
    split: Annotated[str, typer.Option(help="Which split to evaluate: test or val.")] = "test",
) -> None:
    """Re-evaluate a run's exported student (and its teacher, when saved) on a split."""
    from kdforge.data import make_loader, recipe_data
    from kdforge.evaluate import evaluate, shown
    from kdforge.export import load_run_teacher, load_student
    from kdforge.run import load_run_recipe

    if split not in ("test", "val"):
        raise KdforgeError(f"--split must be 'test' or 'val', got '{split}'")
    recipe = load_run_recipe(run_dir)
    data = recipe_data(recipe.data, recipe.seed)
    batches = make_loader(getattr(data, split), recipe.data.eval_batch_size)
    models = {"student": load_student(run_dir)}
    if (teacher := load_run_teacher(run_dir)) is not None:
        models["teacher"] = teacher
    table = Table(title=f"{escape(str(run_dir))} on {data.name} {split} ({len(getattr(data, split))} samples)")
    for column in ("model", "score", "loss"):
        table.add_column(column)
    for role, model in models.items():
        metrics = evaluate(model, batches, task=data.task)
        table.add_row(role, shown(metrics), f"{metrics['loss']:.4f}")
    console.print(table)


class Quantize(str, enum.Enum):
    int8 = "int8"


class PruneKind(str, enum.Enum):
    unstructured = "unstructured"
    structured = "structured"


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)],
    format: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            help="A format a family adds, e.g. tm-rules: every clause layer of a TM student as boolean rules (JSON).",
        ),
    ] = None,
    quantize: Annotated[
        Optional[Quantize],
        typer.Option(
            "--quantize",
            help=(
                "int8: post-training dynamic int8 quantisation of the student's linear layers, measured against the "
                "float student."
            ),
        ),
    ] = None,
    prune: Annotated[
        Optional[float],
        typer.Option(
            "--prune",
            min=0.0,
            max=1.0,
            help=(
                "Prune this fraction of the student's linear and convolution weights (torch.nn.utils.prune), "
                "measured against the unpruned student."
            ),
        ),
    ] = None,
    prune_kind: Annotated[
        PruneKind,
        typer.Option(
            "--prune-kind",
            help=(
                "unstructured: the smallest weights of all layers together (L1); structured: whole output rows of "
                "each layer by L2 norm (not the output layer)."
            ),
        ),
    ] = PruneKind.unstructured,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help=(
                "Output file (default: RUN_DIR/student.<format>.json, RUN_DIR/student.int8.pt or "
                "RUN_DIR/student.pruned.safetensors)."
            )
        ),
    ] = None,
) -> None:
    """Export a run's student in another form: a format a family adds (tm-rules: boolean rules that
    kdforge.families.tm.PackedTM evaluates bit-packed), an int8 student, or a pruned student, with its metric and
    speed next to the float one."""
    if sum(x is not None for x in (format, quantize, prune)) != 1:
        raise KdforgeError("give one of --format FORMAT (e.g. tm-rules), --quantize int8 or --prune FRACTION")
    if quantize is not None:
        _export_int8(run_dir, out or Path(run_dir) / "student.int8.pt")
        return
    if prune is not None:
        _export_pruned(run_dir, prune, prune_kind.value, out or Path(run_dir) / "student.pruned.safetensors")
        return
    from kdforge.export import EXPORT_FORMATS

    console.print(EXPORT_FORMATS.get(format)(Path(run_dir), out), markup=False)


def _export_int8(run_dir: Path, out: Path) -> None:
    """Quantise the student, save its int8 weights, and show what it costs: metric and speed."""
    from kdforge.export import load_student, quantize_int8
    from kdforge.files import save_torch

    student = load_student(run_dir)
    quantized, layers = quantize_int8(student)
    save_torch(quantized.state_dict(), out)
    _measure_variants(
        run_dir,
        {"float32": student, "int8": quantized},
        out.with_suffix(".json"),
        f"dynamic int8 ({len(layers)} linear layers)",
        {"quantized_layers": layers},
    )
    console.print(f"wrote {escape(str(out))} (load with kdforge.export.load_quantized)")


def _export_pruned(run_dir: Path, amount: float, kind: str, out: Path) -> None:
    """Prune the student, save it like any student, and show what it costs: metric, speed, zeros."""
    from kdforge.export import load_student, prune_student, save_model

    student = load_student(run_dir)
    pruned, layers = prune_student(student, amount, kind)
    stem = out.parent / out.name.removesuffix(".safetensors")
    weights = save_model(pruned, stem, {"pruned": {"amount": amount, "kind": kind, "layers": layers}})
    _measure_variants(
        run_dir,
        {"float32": student, f"pruned {kind} {amount:g}": pruned},
        stem.parent / f"{stem.name}.measured.json",
        f"{kind} pruning of {len(layers)} layers",
        {"pruned_layers": layers},
    )
    console.print(
        f"wrote {weights} (load with kdforge.load_student); zeros stay stored, so dense kernels run at the same speed: "
        "the gain is in size once compressed, or with sparse kernels",
        markup=False,
    )


def _nonzero_weights(model: torch.nn.Module) -> int:
    """Non-zero real weights of ``model``, its int8 ones too (a dynamic-quantised linear layer
    keeps them packed in a tuple, as quantised tensors)."""
    import torch

    def tensors(value: object) -> list[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return [value.dequantize() if value.is_quantized else value]
        return [t for item in value for t in tensors(item)] if isinstance(value, (tuple, list)) else []

    return sum(
        int(t.count_nonzero()) for value in model.state_dict().values() for t in tensors(value) if t.is_floating_point()
    )


def _measure_variants(run_dir: Path, models: dict[str, torch.nn.Module], out: Path, what: str, extra: dict) -> None:
    """Test metric, latency at batch 1 and 32, and non-zero weights of each variant of a run's
    student, as a table and a JSON file."""
    from kdforge.bench import latency_ms
    from kdforge.data import make_loader, recipe_data
    from kdforge.evaluate import evaluate, shown
    from kdforge.files import write_json
    from kdforge.run import load_run_recipe

    recipe = load_run_recipe(run_dir)
    data = recipe_data(recipe.data, recipe.seed)
    test = make_loader(data.test, recipe.data.eval_batch_size)
    example = data.test.x[:1]
    rows = {
        name: {
            "test": evaluate(model, test, task=data.task),
            "latency_ms_b1": latency_ms(model, example),
            "latency_ms_b32": latency_ms(model, example, batch_size=32),
            "nonzero_weights": _nonzero_weights(model),
        }
        for name, model in models.items()
    }
    table = Table(title=escape(f"{run_dir}: student, {what}, test split"))
    for column in ("weights", "test", "latency ms b1", "latency ms b32", "non-zero weights"):
        table.add_column(column)
    for name, row in rows.items():
        table.add_row(
            escape(name),
            shown(row["test"]),
            f"{row['latency_ms_b1']:.3f}",
            f"{row['latency_ms_b32']:.3f}",
            f"{row['nonzero_weights']:,}",
        )
    console.print(table)
    write_json(out, {**extra, **rows})
    console.print(f"wrote {escape(str(out))}")


@app.command()
def compare(
    targets: Annotated[
        list[str], typer.Argument(help="Finished run directories (or, with --models, recipes).", show_default=False)
    ],
    models: Annotated[
        bool, typer.Option("--models", help="Compare the recipes' teacher and student architectures, untrained.")
    ] = False,
    lengths: Annotated[
        Optional[str], typer.Option(help="Sequence lengths to measure sequence models at, e.g. 256,1024,4096.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch size of the speed measurements.")] = 1,
    warmup: Annotated[int, typer.Option(min=0)] = 3,
    iters: Annotated[int, typer.Option(min=1)] = 10,
    output: Annotated[Path, typer.Option(help="Where the JSON goes; the plot goes beside it (.png).")] = Path(
        "compare.json"
    ),
) -> None:
    """Teacher vs students: test score and retention (% of the teacher's), params, measured latency, throughput and
    peak memory at each sequence length; a table, a JSON and a plot."""
    from kdforge.compare import measure, plot, recipe_models, run_models
    from kdforge.config import Recipe
    from kdforge.evaluate import shown
    from kdforge.files import write_json

    sizes = whole_numbers(lengths, "--lengths") if lengths else None
    if models:
        entries, example = recipe_models([Recipe.from_yaml(recipe_path(t)) for t in targets])
    else:
        entries, example = run_models([Path(t) for t in targets])
    rows = measure(entries, example, sizes, batch_size, warmup, iters)
    table = Table(title=f"kdforge compare (batch {batch_size})")
    for column in ("model", "test", "retention", "params", "length", "latency ms", "samples / s", "peak MB"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        for length, speed in row["speed"].items():
            retention = f"{row['retention_pct']:.1f}%" if "retention_pct" in row else "-"
            table.add_row(
                escape(row["model"]),
                shown(row["test"]) if row["test"] else "-",
                retention,
                f"{row['params']:,}",
                length,
                f"{speed['latency_ms']:.3f}",
                f"{speed['samples_per_s']:,.0f}",
                f"{speed['peak_memory_mb']:.2f}",
            )
    console.print(table)
    write_json(output, {"batch_size": batch_size, "rows": rows})
    console.print(f"wrote {escape(str(output))} and {escape(str(plot(rows, output.with_suffix('.png'))))}")


@app.command()
def bench(
    target: Annotated[
        str,
        typer.Argument(
            help=(
                "A run directory (its student, and its teacher when it is a kdforge model) or a registered model name."
            ),
            show_default=False,
        ),
    ],
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")] = "1,32",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    warmup: Annotated[int, typer.Option(min=0, help="Untimed forward passes first.")] = 5,
    iters: Annotated[int, typer.Option(min=1, help="Timed forward passes per batch size.")] = 20,
    input_shape: Annotated[
        Optional[str],
        typer.Option("--input-shape", help="A model name needs its input shape without the batch, e.g. 1,40."),
    ] = None,
    num_classes: Annotated[int, typer.Option("--num-classes", help="A model name's number of outputs.")] = 10,
    option: Annotated[
        Optional[list[str]],
        typer.Option("--option", "-o", help="A model name's options, key=value (repeatable), e.g. -o model_dim=32."),
    ] = None,
    output: Annotated[Optional[Path], typer.Option(help="Also write the measurements as JSON here.")] = None,
) -> None:
    """Measure models: latency (median, p90), throughput and peak memory per batch size; parameters and exact FLOPs per
    sample. Nothing is estimated."""
    import torch

    from kdforge.bench import benchmark
    from kdforge.files import write_json
    from kdforge.trainer import resolve_device

    sizes = whole_numbers(batch_sizes, "--batch-sizes")
    target_device = resolve_device(device)
    models, example = _bench_models(target, input_shape, num_classes, option or [])
    results = {
        name: benchmark(model.to(target_device), example.to(target_device), sizes, warmup, iters)
        for name, model in models.items()
    }
    table = Table(title=f"kdforge bench: {escape(target)} on {target_device} ({torch.get_num_threads()} CPU threads)")
    for column in ("model", "params", "MFLOPs / sample", "batch", "latency ms (p90)", "samples / s", "peak MB"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for name, result in results.items():
        for row in result["batches"]:
            table.add_row(
                name,
                f"{result['params']:,}",
                f"{result['flops_per_sample'] / 1e6:,.2f}",
                str(row["batch"]),
                f"{row['latency_ms']:.3f} ({row['latency_p90_ms']:.3f})",
                f"{row['samples_per_s']:,.0f}",
                f"{row['peak_memory_mb']:.2f}",
            )
    console.print(table)
    if output is not None:
        write_json(
            output,
            {"target": target, "device": str(target_device), "threads": torch.get_num_threads(), "models": results},
        )
        console.print(f"wrote {escape(str(output))}")


def _bench_models(
    target: str, input_shape: str | None, num_classes: int, options: list[str]
) -> tuple[dict, torch.Tensor]:
    """The models ``kdforge bench`` measures, and an example input."""
    import torch
    import yaml

    from kdforge.models import build_model

    if Path(target).is_dir():
        from kdforge.data import recipe_data
        from kdforge.export import load_run_teacher, load_student
        from kdforge.run import load_run_recipe

        recipe = load_run_recipe(target)
        teacher = load_run_teacher(target)
        models = {**({"teacher": teacher} if teacher is not None else {}), "student": load_student(target)}
        return models, recipe_data(recipe.data, recipe.seed).test.x[:1]
    if input_shape is None:
        raise KdforgeError(
            f"'{target}' is not a run directory; to measure a model by name give --input-shape (e.g. --input-shape "
            "1,40)"
        )
    shape = tuple(whole_numbers(input_shape, "--input-shape"))
    kwargs = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise KdforgeError(f"--option takes key=value, got '{item}'")
        kwargs[key] = yaml.safe_load(value)
    return {target: build_model(target, input_shape=shape, num_classes=num_classes, **kwargs)}, torch.randn(1, *shape)


LISTABLE = {
    "models": "kdforge.models:MODELS",
    "losses": "kdforge.losses:LOSSES",
    "datasets": "kdforge.data:DATASETS",
    "teachers": "kdforge.teachers:TEACHER_SOURCES",
}


@app.command("list")
def list_entries(
    what: Annotated[
        Optional[str],
        typer.Argument(
            help="models, losses, datasets, teachers or recipes; nothing: the families.", show_default=False
        ),
    ] = None,
) -> None:
    """List the families, or what can be named in a recipe (grouped by family, with one line on each)."""
    from kdforge.family import declared

    if what is None:
        console.print("kdforge: the core (generic models, losses, datasets, teachers) and these families:")
        for family in declared():
            console.print(f"  [bold]{escape(family.name)}[/]: {escape(family.description)}")
        console.print("list what a recipe can name: kdforge list models | losses | datasets | teachers | recipes")
        return
    if what == "recipes":
        for name in shipped_recipes():
            console.print(name)
        return
    if what not in LISTABLE:
        from kdforge.errors import did_you_mean

        raise KdforgeError(f"cannot list '{what}'{did_you_mean(what, [*LISTABLE, 'recipes'])}")
    import importlib

    module, name = LISTABLE[what].split(":")
    console.print(_listing(what, getattr(importlib.import_module(module), name)))


def _listing(what: str, registry: Any) -> Table:
    """The registry's entries grouped by the family that registered them. Options most entries
    of a family take are listed once, on the family's line; an entry says "+ common" (and which
    of them it lacks, when they are few), or lists the ones it takes."""
    from kdforge.family import family_of

    groups: dict[str, list[str]] = {}
    for name in registry.names():
        groups.setdefault(family_of(registry.get(name)), []).append(name)
    table = Table(title=f"kdforge {what}")
    for column in ("name", "options", "description"):
        table.add_column(column, style="bold" if column == "name" else None)
    for family, names in groups.items():
        options = {n: list(registry.options_model(n).model_fields) if what != "teachers" else [] for n in names}
        counts = collections.Counter(o for taken in options.values() for o in taken)
        common = (
            [o for o in dict.fromkeys(o for taken in options.values() for o in taken) if counts[o] > len(names) / 2]
            if len(names) > 2
            else []
        )
        common = common if len(common) >= 4 else []  # worth a line of its own
        table.add_section()
        table.add_row(
            Text(family, style="bold magenta"),
            Text(f"common: {', '.join(common)}" if common else "", style="dim"),
            Text("the core" if family == "core" else "", style="dim"),
        )
        for n in names:
            own = [o for o in options[n] if o not in common]
            missing = [o for o in common if o not in options[n]]
            if not common:
                shown_options = own
            elif len(missing) <= len(common) / 3:
                shown_options = own + ["+ common" + (f" except {', '.join(missing)}" if missing else "")]
            else:
                shown_options = own + [o for o in options[n] if o in common]
            table.add_row(escape(n), escape(", ".join(shown_options)), escape(registry.summary(n)))
    return table


add_commands(app)  # each family's own subcommands (explain, generate, ...), declared without importing them


def say(label: str, style: str, message: object) -> None:
    """``label`` in ``style``, then ``message`` as plain text: paths, keys and values from the
    user are never read as rich markup (``[/home/me/x.yaml:3]`` would be a closing tag)."""
    console.print(Text.assemble((label, style), str(message)), soft_wrap=True)


def main() -> None:
    """The ``kdforge`` command: a user's mistake is one plain message and exit code 2; a bug in
    kdforge shows its traceback and asks to be reported (exit code 1)."""
    try:
        app()
    except RunInterrupted as err:
        say("stopped: ", "yellow", err)
        raise SystemExit(130) from None
    except KdforgeError as err:
        say("error: ", "red bold", err)
        raise SystemExit(2) from None
    except Exception:
        import traceback

        traceback.print_exc()
        say(
            "internal error: ",
            "red bold",
            "this is a bug in kdforge, not a problem with your input. Please report it with the traceback above, "
            "the command you ran and its recipe.",
        )
        raise SystemExit(1) from None
