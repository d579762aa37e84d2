"""Recipe plumbing: YAML with line numbers for error messages, and dotted overrides.

Private to :mod:`kdforge.config`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from kdforge.errors import ConfigError

Loc = tuple[Union[str, int], ...]


class DuplicateKey(yaml.YAMLError):
    """A mapping gives the same key twice (YAML would silently keep the later value)."""

    def __init__(self, key: Any, first: int, second: int):
        super().__init__(f"key '{key}' is given twice in the same section, at lines {first} and {second}; keep one")
        self.line = second


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2 numbers) and refuses a key
    given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    raise DuplicateKey(key_node.value, seen[key_node.value], line)
                seen[key_node.value] = line
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """A YAML scalar/flow value as typed Python (``1e-3`` -> float, ``[1, 2]`` -> list)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


@dataclass
class YamlSource:
    """Where a recipe came from, with the line of each key for error messages."""

    path: str
    text: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lines = _key_lines(yaml.compose(self.text, Loader=_Loader))

    def line_of(self, loc: Loc) -> int | None:
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None


def _key_lines(node: Any, loc: Loc = ()) -> dict[Loc, int]:
    lines: dict[Loc, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = loc + (key.value,)
            lines[child] = key.start_mark.line + 1
            lines.update(_key_lines(value, child))
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            lines[loc + (i,)] = value.start_mark.line + 1
            lines.update(_key_lines(value, loc + (i,)))
    return lines


def load_yaml(text: str, path: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_Loader)
    except DuplicateKey as err:
        raise ConfigError(f"{path}:{err.line}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of sections (name, data, teacher, ...)")
    return data


@dataclass(frozen=True)
class Override:
    text: str
    loc: Loc


def apply_override(raw: dict[str, Any], text: str) -> Override:
    """Set ``key.path=value`` in ``raw`` (list items by index: ``losses.1.weight=0.5``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' must look like key.path=value (e.g. train.epochs=5)")
    loc: Loc = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
    target: Any = raw
    for depth, part in enumerate(loc[:-1]):
        target = _child(target, part, loc[: depth + 1], text)
    last = loc[-1]
    if isinstance(target, list):
        _check_index(target, last, text)
    elif not isinstance(target, dict):
        raise ConfigError(f"override '{text}': '{'.'.join(map(str, loc[:-1]))}' is not a section")
    target[last] = parse_value(value)
    return Override(text, loc)


def _child(target: Any, part: str | int, loc: Loc, text: str) -> Any:
    if isinstance(target, list):
        _check_index(target, part, text)
        return target[int(part)]
    if not isinstance(target, dict):
        raise ConfigError(f"override '{text}': '{'.'.join(map(str, loc[:-1]))}' is not a section")
    if target.get(part) is None:
        target[part] = {}
    return target[part]


def _check_index(items: list[Any], part: str | int, text: str) -> None:
    if not isinstance(part, int) or part >= len(items):
        raise ConfigError(f"override '{text}': '{part}' is not an index of a list of {len(items)} items")


def describe_issue(loc: Loc, msg: str, source: YamlSource | None, overrides: Sequence[Override]) -> str:
    where = ".".join(str(p) for p in loc) or "recipe"
    for override in reversed(overrides):
        if loc[: len(override.loc)] == override.loc or override.loc[: len(loc)] == loc:
            return f"{where}: {msg} [from override '{override.text}']"
    line = source.line_of(loc) if source else None
    if source is not None and line is not None:
        return f"{where}: {msg} [{source.path}:{line}]"
    return f"{where}: {msg}"
