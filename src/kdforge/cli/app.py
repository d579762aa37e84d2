"""The ``kdforge`` command itself: its help, its plug-ins, and what every subcommand shares."""

from __future__ import annotations

import enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from kdforge.errors import KdforgeError, PluginError
from kdforge.family import import_user_module

if TYPE_CHECKING:
    pass


app = typer.Typer(
    help="kdforge: distill a frozen teacher into a smaller student, from a YAML recipe.",
    no_args_is_help=True,
    rich_markup_mode="markdown",  # a docstring's lines join into one paragraph, as in Markdown
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
        help="Overrides **key.path=value**, e.g. train.epochs=5 losses.1.temperature=2.0", show_default=False
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
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help=(
                "Download nothing: models, tokenizers and datasets named by hub id are read from the Hugging Face "
                "cache (as HF_HUB_OFFLINE=1 does); a name not there is an error that names it."
            ),
        ),
    ] = False,
) -> None:
    """kdforge: distill a frozen teacher into a smaller student, from a YAML recipe."""
    if offline:  # read by huggingface_hub and datasets when first imported, which is after this
        import os

        os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
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
        if spec is None or spec.loader is None:
            raise KdforgeError(f"plugin file '{name}' cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except KdforgeError:
            raise
        except Exception as err:
            sys.modules.pop(path.stem, None)
            raise PluginError.of(f"plugin file '{name}'", err, str(path)) from None
        return
    import_user_module(name, f"plugin '{name}' (give a .py file or an importable module)")


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


def heading(text: str) -> None:
    """A table's heading when it holds a path: on its own line, left to the terminal to wrap (a table title
    would be broken at the table's width, mid-path)."""
    console.print(Text(text, style="italic"), soft_wrap=True)


def say(label: str, style: str, message: object) -> None:
    """``label`` in ``style``, then ``message`` as plain text: paths, keys and values from the
    user are never read as rich markup (``[/home/me/x.yaml:3]`` would be a closing tag)."""
    console.print(Text.assemble((label, style), str(message)), soft_wrap=True)
