"""The search space of ``kdforge tune``: dotted recipe keys mapped to ranges, factors and choices; each loss term's
own defaults; the trial values that give back the recipe as written."""

from __future__ import annotations

import copy
import inspect
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pydantic
import yaml

from kdforge._recipe_yaml import apply_override
from kdforge.config import Recipe
from kdforge.config.recipe import pydantic_message
from kdforge.config.tune import ParamSpec
from kdforge.errors import ConfigError, did_you_mean
from kdforge.registry import LOSSES

if TYPE_CHECKING:
    import optuna


Space = dict[str, ParamSpec]
DEFAULT_LR_FACTOR = 5.0


def parse_space(texts: Sequence[str]) -> Space:
    """``--space`` arguments, ``key={low: 1, high: 8}`` each, as a space."""
    space = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--space '{text}' must look like key.path={{low: 1, high: 8}}")
        space[key.strip()] = _spec(yaml.safe_load(value), f"--space '{text}'")
    return space


def _spec(raw: Any, where: str) -> ParamSpec:
    try:
        return ParamSpec.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = [
            ".".join(map(str, e["loc"])) + ": " * bool(e["loc"]) + pydantic_message(e, ParamSpec.model_fields)
            for e in error.errors()
        ]
        raise ConfigError(f"{where}: {'; '.join(problems)}") from None


def default_space(raw: dict[str, Any], prefix: str = "") -> Space:
    """The learning rate's and every loss term's own search space, for the recipe ``raw``."""
    space = {f"{prefix}optim.lr": ParamSpec(factor=DEFAULT_LR_FACTOR)} if not prefix else {}
    for i, term in enumerate(raw["losses"]):
        for option, spec in getattr(LOSSES.get(term["name"]), "search_space", {}).items():
            space[f"{prefix}losses.{i}.{option}"] = ParamSpec.model_validate(spec)
    return space


def recipe_space(recipe: Recipe, extra: Space) -> Space:
    """The space searched: ``--space`` over the recipe's ``tune.space``; the defaults when neither has one."""
    declared = {**(recipe.tune.space if recipe.tune else {}), **extra}
    return declared or default_space(recipe.to_dict())


def _current(raw: dict[str, Any], key: str) -> Any:
    """The recipe's value at ``key`` (a loss option it does not set: the term's default)."""
    target: Any = raw
    parts = key.split(".")
    for part in parts:
        if isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        elif isinstance(target, dict) and part in target:
            target = target[part]
        else:
            break
    else:
        return target
    if len(parts) == 3 and parts[0] == "losses" and parts[1].isdigit():  # an option left at the term's default
        if parts[2] == "weight":
            return 1.0
        defaults = _term_defaults(raw["losses"][int(parts[1])]["name"])
        if parts[2] in defaults:
            return defaults[parts[2]]
    raise ConfigError(
        f"tune: the search space names '{key}', which the recipe does not have{did_you_mean(key, _keys(raw))}"
    )


def _keys(raw: Any, prefix: str = "") -> list[str]:
    """Every dotted key of the recipe ``raw``, and each loss term's options it leaves at their defaults."""
    if isinstance(raw, dict):
        items = list(raw.items())
        if "name" in raw and prefix.startswith("losses.") and raw["name"] in LOSSES:
            items += [(k, v) for k, v in {"weight": 1.0, **_term_defaults(raw["name"])}.items() if k not in raw]
    elif isinstance(raw, list):
        items = list(enumerate(raw))
    else:
        return [prefix.removesuffix(".")]
    return [key for name, value in items for key in _keys(value, f"{prefix}{name}.")]


def _label(choice: Any) -> str:
    """A short name for a choice: a list of loss terms by their names (ce+kd), anything else as JSON."""
    if isinstance(choice, list) and all(isinstance(t, dict) and "name" in t for t in choice):
        return "+".join(t["name"] for t in choice)
    return json.dumps(choice, sort_keys=True)


def suggest(trial: optuna.Trial | optuna.trial.FixedTrial, raw: dict[str, Any], space: Space) -> dict[str, Any]:
    """The trial's recipe (a dict) with every searched key set to the trial's value."""
    raw = copy.deepcopy(raw)
    for key, spec in space.items():
        name = key.split(":", 1)[-1]  # a chosen loss list's own options are named "<label>:losses.i.option"
        current = _current(raw, name)
        if isinstance(current, dict) and spec.choice is None:
            continue  # a schedule or a learnable temperature: left as the recipe has it
        value = _value(trial, key, spec, current)
        apply_override(raw, f"{name}={json.dumps(value)}")
        if spec.choice is not None and name == "losses":
            prefix = f"{_label(value)}:"
            chosen = {k: v for k, v in default_space(raw, prefix).items() if k not in space}
            for option_key, option_spec in chosen.items():
                option = option_key.split(":", 1)[1]
                current = _current(raw, option)
                if not isinstance(current, dict):
                    apply_override(raw, f"{option}={json.dumps(_value(trial, option_key, option_spec, current))}")
    return raw


def _labels(choices: list[Any]) -> list[str]:
    """The names Optuna knows a choice's values by (numbered where two would read the same)."""
    labels = [_label(c) for c in choices]
    return labels if len(set(labels)) == len(labels) else [f"{i}: {label}" for i, label in enumerate(labels)]


def _value(trial: optuna.Trial | optuna.trial.FixedTrial, key: str, spec: ParamSpec, current: Any) -> Any:
    if spec.choice is not None:
        labels = _labels(spec.choice)
        return spec.choice[labels.index(trial.suggest_categorical(key, labels))]
    if spec.factor is not None:
        if not isinstance(current, (int, float)) or current <= 0:
            raise ConfigError(
                f"tune: '{key}' has {{factor}}, which needs a positive number in the recipe, not {current}"
            )
        return trial.suggest_float(key, current / spec.factor, current * spec.factor, log=True)
    assert spec.low is not None and spec.high is not None
    if spec.integer:
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)


def recipe_params(raw: dict[str, Any], space: Space) -> dict[str, Any] | None:
    """The trial values that give back the recipe ``raw`` as written, or None when one of its searched values lies
    outside the space (a range that leaves it out, a choice that does not list it). The study's first trial has
    them: the search starts from the user's recipe, and its best trial is never one that scored below it."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        current = _current(raw, key.split(":", 1)[-1])
        if spec.choice is not None:
            chosen = next((i for i, c in enumerate(spec.choice) if _same_choice(raw, key, c, current)), None)
            if chosen is None:
                return None
            params[key] = _labels(spec.choice)[chosen]
            if key == "losses":  # the chosen terms' own options, as suggest() adds them
                options = default_space(raw, f"{_label(spec.choice[chosen])}:")
                found = recipe_params(raw, {k: v for k, v in options.items() if k not in space})
                if found is None:
                    return None
                params.update(found)
        elif isinstance(current, dict):  # a schedule or a learnable temperature: suggest() leaves it as it is
            continue
        elif _within(spec, current):
            params[key] = current
        else:
            return None
    return params


def _same_choice(raw: dict[str, Any], key: str, choice: Any, current: Any) -> bool:
    """Whether ``choice`` is the recipe's value at ``key``; loss lists compared with every option spelled out."""
    if key != "losses" or not isinstance(choice, list):
        return bool(choice == current)
    try:
        chosen = Recipe.from_dict({**raw, "losses": choice}).to_dict()["losses"]
    except ConfigError:
        return False
    return _spelled_out(chosen) == _spelled_out(current)


def _spelled_out(terms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Loss terms with the options they leave out at the terms' defaults."""
    return [{**_term_defaults(term["name"]), **term} for term in terms]


def _term_defaults(name: str) -> dict[str, Any]:
    """A loss term's options that have a default, with it."""
    parameters = inspect.signature(LOSSES.get(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _within(spec: ParamSpec, value: Any) -> bool:
    """Whether a number lies in a range (on its grid, if it has a step), or may be scaled by a factor."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if spec.factor is not None:
        return value > 0
    assert spec.low is not None and spec.high is not None
    if not spec.low <= value <= spec.high or (spec.integer and value != int(value)):
        return False
    return spec.step is None or math.isclose((value - spec.low) / spec.step, round((value - spec.low) / spec.step))
