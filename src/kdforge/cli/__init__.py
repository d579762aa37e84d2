"""The ``kdforge`` command line: one module per group of subcommands, each family's own
subcommands added from its light ``commands`` module (nothing heavy is imported until a
command runs)."""

from __future__ import annotations

from kdforge.cli import exporting, listing, measuring, training
from kdforge.cli.app import app, console, recipe_path, say
from kdforge.errors import KdforgeError, RunInterrupted
from kdforge.family import add_commands

#: optional packages (imported where they are used) -> the extra that installs them
OPTIONAL_PACKAGES = {
    "timm": "vision",
    "torchvision": "vision",
    "transformers": "text",
    "sentence_transformers": "text",
    "datasets": "datasets",
    "zarr": "zarr",
    "tensorboard": "tracking",
    "wandb": "tracking",
    "mlflow": "tracking",
}

# the subcommands, in the order --help shows them
app.command(rich_help_panel="Distil")(training.demo)
app.command(rich_help_panel="Distil")(training.train)
app.command(rich_help_panel="Distil")(training.sweep)
app.command(rich_help_panel="Distil")(training.tune)
app.command(rich_help_panel="Distil")(training.check)
app.command(rich_help_panel="Distil")(training.cache)
app.command(rich_help_panel="Distil")(training.fetch)
app.command("eval", rich_help_panel="Distil")(training.evaluate_run)
app.command(rich_help_panel="Export and measure")(exporting.export)
app.command(rich_help_panel="Export and measure")(measuring.compare)
app.command(rich_help_panel="Export and measure")(measuring.bench)
app.command("list", rich_help_panel="Look up")(listing.list_entries)
add_commands(app)  # each family's own subcommands (explain, generate, ...), declared without importing them


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
    except ModuleNotFoundError as err:
        extra = OPTIONAL_PACKAGES.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        say("error: ", "red bold", f"this needs {err.name}, an optional dependency: pip install 'kdforge[{extra}]'")
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


__all__ = ["app", "console", "main", "recipe_path"]
