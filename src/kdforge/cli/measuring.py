"""``kdforge compare`` and ``kdforge bench``: speed, memory and scores, measured."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from kdforge.cli.app import console, heading, recipe_path, whole_numbers
from kdforge.errors import KdforgeError

if TYPE_CHECKING:
    import torch


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
    from kdforge.machine import resolve_device

    sizes = whole_numbers(batch_sizes, "--batch-sizes")
    target_device = resolve_device(device)
    models, example = _bench_models(target, input_shape, num_classes, option or [])
    results = {
        name: benchmark(model.to(target_device), example.to(target_device), sizes, warmup, iters)
        for name, model in models.items()
    }
    heading(f"kdforge bench: {target} on {target_device} ({torch.get_num_threads()} CPU threads)")
    table = Table()
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
        from kdforge.runner import load_run_recipe

        recipe = load_run_recipe(target)
        teacher = load_run_teacher(target)
        models = {**({"teacher": teacher} if teacher is not None else {}), "student": load_student(target)}
        return models, recipe_data(recipe.data, recipe.seed).test.first(1)[0]
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
