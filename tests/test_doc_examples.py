"""The docs' examples run as written. Every YAML example is a recipe (or part of one) that kdforge accepts: merged
into a small recipe, each passes the same validation as ``kdforge check`` (schema, option values, the families'
rules). Every ``kdforge`` command in a shell block parses (its command and options exist), and a shipped recipe it
names, with the command's overrides, is valid."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from kdforge.config.recipe import validate_recipe

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
#: what an example leaves out; its own sections replace these, its loss terms those of the same name
BASE = {
    "name": "doc-example",
    "data": {"name": "digits"},
    "teacher": {"source": "train", "model": {"name": "mlp"}},
    "student": {"model": {"name": "mlp", "hidden": [8]}},
    "losses": [{"name": "ce"}, {"name": "kd"}, {"name": "hint", "student": "net.0", "teacher": "net.0"}],
}


def examples() -> list[tuple[str, str]]:
    found = []
    for doc in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = doc.read_text()
        for block in re.finditer(r"```yaml\n(.*?)```", text, re.S):
            found.append((f"{doc.name}:{text[: block.start()].count(chr(10)) + 2}", block.group(1)))
    return found


def completed(example: object) -> dict:
    """The base recipe with the example's sections; a bare list of loss terms replaces the base's terms of the same
    names."""
    recipe = copy.deepcopy(BASE)
    if isinstance(example, list):
        named = {term["name"]: term for term in example}
        recipe["losses"] = [named.pop(term["name"], term) for term in recipe["losses"]] + list(named.values())
        return recipe
    assert isinstance(example, dict), f"a YAML example is a recipe, sections of one or loss terms: {example!r}"
    for key, value in example.items():
        merge = key == "student" and isinstance(value, dict) and "model" not in value
        recipe[key] = {**recipe[key], **value} if merge else value
    return recipe


EXAMPLES = examples()


def test_the_docs_have_yaml_examples():
    assert len(EXAMPLES) >= 30


@pytest.mark.parametrize("where,text", EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_each_yaml_example_is_accepted_as_written(where, text):
    validate_recipe(completed(yaml.safe_load(text)))


def commands() -> list[tuple[str, list[str]]]:
    """(file:line, arguments) of each ``kdforge`` command in the README's and the docs' shell blocks."""
    found = []
    for doc in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        fence = None
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("```"):
                fence = None if fence is not None else line[3:].strip()
                continue
            command = line.split("  #")[0].strip().removeprefix("uv run ")
            if fence in ("bash", "sh", "") and command.startswith("kdforge "):
                found.append((f"{doc.name}:{number}", shlex.split(command)[1:]))
    return found


COMMANDS = commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 40


@pytest.mark.parametrize("where,args", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_each_documented_command_parses_and_its_shipped_recipe_is_valid(where, args):
    import typer.main

    from kdforge.cli import app
    from kdforge.cli.app import recipe_path, shipped_recipes
    from kdforge.config import Recipe

    group = typer.main.get_command(app)
    if args[0].startswith("-"):  # an option of kdforge itself (--help, --plugin FILE)
        group.make_context("kdforge", list(args), resilient_parsing=True)
        return
    assert args[0] in group.commands, f"{where}: no command '{args[0]}'"
    params = group.commands[args[0]].make_context(args[0], args[1:]).params
    name = params.get("recipe")
    if name is not None and Path(name).stem in shipped_recipes():  # a user's own file is not here to check
        Recipe.from_yaml(recipe_path(Path(name).stem), params["overrides"] or [])
