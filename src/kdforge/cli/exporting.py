"""``kdforge export``: the student in another form, measured against the float one."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from kdforge.cli.app import console, heading
from kdforge.errors import KdforgeError, required

if TYPE_CHECKING:
    import torch


class Quantize(str, enum.Enum):
    int8 = "int8"


class PruneKind(str, enum.Enum):
    unstructured = "unstructured"
    structured = "structured"


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
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            help="--format hf on a LoRA student (student.peft): the model with its adapters merged, not the adapters.",
        ),
    ] = False,
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
    kdforge.families.tm.PackedTM evaluates in integers), an int8 student, or a pruned student, with its metric and
    speed next to the float one."""
    if sum(x is not None for x in (format, quantize, prune)) != 1:
        raise KdforgeError("give one of --format FORMAT (e.g. tm-rules), --quantize int8 or --prune FRACTION")
    if merge and format is None:
        raise KdforgeError("--merge goes with --format hf (a LoRA student's adapters merged into its model)")
    if quantize is not None:
        _export_int8(run_dir, out or Path(run_dir) / "student.int8.pt")
        return
    if prune is not None:
        _export_pruned(run_dir, prune, prune_kind.value, out or Path(run_dir) / "student.pruned.safetensors")
        return
    import inspect

    from kdforge.export import EXPORT_FORMATS

    exporter = EXPORT_FORMATS.get(required(format, "--format"))
    if merge and "merge" not in inspect.signature(exporter).parameters:
        raise KdforgeError(f"--format {format} has nothing to merge: drop --merge")
    console.print(exporter(Path(run_dir), out, **({"merge": True} if merge else {})), markup=False)


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
    from kdforge.runner import load_run_recipe

    recipe = load_run_recipe(run_dir)
    data = recipe_data(recipe.data, recipe.seed)
    test = make_loader(data.test, recipe.data.eval_batch_size)
    example = data.test.first(1)[0]
    rows: dict[str, dict[str, Any]] = {
        name: {
            "test": evaluate(model, test, task=data.task),
            "latency_ms_b1": latency_ms(model, example),
            "latency_ms_b32": latency_ms(model, example, batch_size=32),
            "nonzero_weights": _nonzero_weights(model),
        }
        for name, model in models.items()
    }
    heading(f"{run_dir}: student, {what}, test split")
    table = Table()
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
