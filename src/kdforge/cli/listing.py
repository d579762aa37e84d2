"""``kdforge list``: the families, and what a recipe can name, grouped by family."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kdforge.cli.app import console, shipped_recipes
from kdforge.errors import KdforgeError

if TYPE_CHECKING:
    pass


LISTABLE = {
    "models": "kdforge.models:MODELS",
    "losses": "kdforge.losses:LOSSES",
    "datasets": "kdforge.data:DATASETS",
    "teachers": "kdforge.teachers:TEACHER_SOURCES",
}


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
        if len(groups) > 1 or common:  # a heading only where it tells entries apart or lists what they share
            table.add_row(
                Text(family, style="bold magenta"),
                Text(f"common: {', '.join(common)}" if common else "", style="dim"),
                Text("kdforge's core" if family == "core" else f"the {family} family", style="dim"),
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
