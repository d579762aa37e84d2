"""The tm family's subcommands: ``kdforge explain``. Nothing heavy is imported here: the
``kdforge`` command lists it without loading PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def register(app: typer.Typer) -> None:
    """Add the family's commands to ``app``."""
    app.command(rich_help_panel="Families")(explain)


def explain(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory of a TM student.", show_default=False)],
    samples: Annotated[int, typer.Option(min=1, help="How many test images to draw.")] = 8,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Predictions shown per image.")] = 3,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: RUN_DIR/explain).")] = None,
) -> None:
    """Draw what a TM student looked at (attention and clause-activation maps over the input, top-k predictions) and
    list its most used clauses with their literals."""
    from kdforge.families.tm.explain import explain_run

    folder = explain_run(run_dir, samples, top_k, out)
    console.print(
        f"wrote {samples} overlays (sample_NN.png) and the clause report (clauses.md) to {escape(str(folder))}"
    )
