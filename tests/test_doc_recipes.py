"""Every YAML example in the docs is a recipe (or part of one) that kdforge accepts as written: merged into a small
recipe, each passes the same validation as ``kdforge check`` (schema, option values, the families' rules)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from kdforge.config.recipe import validate_recipe

DOCS = Path(__file__).parents[1] / "docs"
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
    for doc in sorted(DOCS.glob("*.md")):
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
