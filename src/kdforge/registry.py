"""One small registry used by models, losses, datasets, teacher sources and export formats,
and those five registries.

An entry is a callable (class or function). Its keyword arguments are the options a
recipe may set; ``options_model`` turns the signature into a strict pydantic model so
that a typo or a wrong type in the recipe fails before anything is built.

A registry fills itself the first time it is read: it imports its ``home`` (the core module
whose files register the generic entries) and every family's parts (:mod:`kdforge.family`).
So the recipe can check names against the registries without importing models, losses or
datasets itself, and nothing is imported before it is needed.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import pydantic

from kdforge.bounds import Rule
from kdforge.errors import KdforgeError, did_you_mean
from kdforge.family import load_parts


class Registry:
    """Name -> factory, with a decorator to add entries and strict option checking.

    ``injected`` names arguments the framework supplies (e.g. ``num_classes`` of a
    model comes from the dataset); the recipe may not set them. With ``positive_ints``,
    every whole-number option (alone or in a list) must be above 0: a model's integers
    count units, layers, heads or tokens, and 0 or -4 of them fails deep inside torch.
    """

    def __init__(self, kind: str, injected: Iterable[str] = (), positive_ints: bool = False, home: str | None = None):
        self.kind, self.home = kind, home
        self.injected = frozenset(injected)
        self.positive_ints = positive_ints
        self._entries: dict[str, Callable[..., Any]] = {}
        self._models: dict[str, type[pydantic.BaseModel]] = {}
        self._rules: dict[str, tuple[Rule, ...]] = {}
        self._filled = False

    def register(self, name: str, rules: Iterable[Rule] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Add the decorated factory as ``name``; ``rules`` (:mod:`kdforge.bounds`) say which option values go
        together, checked with the rest of the options."""

        def add(factory: Callable[..., Any]) -> Callable[..., Any]:
            known = self._entries.get(name)
            if known is not None and _origin(known) != _origin(factory):
                raise ValueError(f"{self.kind} '{name}' is already registered by {_origin(known)}; choose another name")
            self._entries[name] = factory  # the same definition again (a re-run notebook cell) replaces it
            self._rules[name] = tuple(rules)
            self._models.pop(name, None)
            return factory

        return add

    def _fill(self) -> None:
        """Import what registers the entries: the core home module, then the families' parts
        (once: a lookup in a hot loop costs a flag test)."""
        if self._filled:
            return
        if self.home is not None:
            importlib.import_module(self.home)
        self._filled = load_parts()

    def names(self) -> list[str]:
        self._fill()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._fill()
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        self._fill()
        if name not in self._entries:
            raise KdforgeError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}")
        return self._entries[name]

    def summary(self, name: str) -> str:
        """First paragraph of the entry's docstring, on one line."""
        doc = inspect.getdoc(self.get(name)) or ""
        return " ".join(doc.split("\n\n")[0].split()).replace("``", "")

    def options_model(self, name: str) -> type[pydantic.BaseModel]:
        """A strict pydantic model of the options ``name`` accepts (its keyword args)."""
        if name not in self._models:
            self._models[name] = _signature_model(
                f"{name}_options", self.get(name), self.injected, self.positive_ints, self._rules.get(name, ())
            )
        return self._models[name]

    def validate_options(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """Check ``options`` against the entry's signature; return them typed."""
        model = self.options_model(name)
        validated = model.model_validate(options)
        return {k: getattr(validated, k) for k in options}

    def checked_options(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """:meth:`validate_options` outside a recipe: every problem in one :class:`KdforgeError`."""
        try:
            return self.validate_options(name, options)
        except pydantic.ValidationError as err:
            valid = self.options_model(name).model_fields
            raise KdforgeError(
                f"{self.kind} '{name}': " + "; ".join(_problem(e, valid) for e in err.errors())
            ) from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)


def _problem(error: Any, valid: Iterable[str]) -> str:
    where = ".".join(map(str, error["loc"]))
    if error["type"] == "extra_forbidden":
        return f"unknown option '{where}'{did_you_mean(where, valid)}"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def _origin(factory: Callable[..., Any]) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


class _Options(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


def _signature_model(
    model_name: str, factory: Callable[..., Any], injected: frozenset[str], positive_ints: bool, rules: tuple[Rule, ...]
) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    hints = _type_hints(factory)
    for param in inspect.signature(factory).parameters.values():
        if param.name in injected or param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        annotation = _lists_as_tuples(_positive(annotation) if positive_ints else annotation)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)

    def follow_rules(options: Any) -> Any:
        if problems := [p for rule in rules if (p := rule(options)) is not None]:
            raise ValueError("; ".join(problems))
        return options

    validators: Any = {"rules": pydantic.model_validator(mode="after")(follow_rules)} if rules else None
    return pydantic.create_model(model_name, __base__=_Options, __validators__=validators, **fields)


def _positive(annotation: Any) -> Any:
    """``annotation`` with every ``int`` in it (``list[int]``, ``int | None``, ...) made ``PositiveInt``."""
    if annotation is int:
        return pydantic.PositiveInt
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None or not args or origin in (typing.Annotated, typing.Literal):
        return annotation
    changed = tuple(_positive(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[changed]
    return origin[changed] if len(changed) > 1 else origin[changed[0]]


def _lists_as_tuples(annotation: Any) -> Any:
    """YAML and overrides give lists: a tuple option (``depths: tuple[int, ...]``) takes one too."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        return typing.Annotated[annotation, pydantic.BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_lists_as_tuples(a) for a in args)]
    return annotation


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    import typing

    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)  # Annotated constraints (NonNegativeInt) kept
    except Exception:  # unresolvable annotations: fall back to untyped options
        return {}


MODELS = Registry("model", injected=("input_shape", "num_classes"), positive_ints=True, home="kdforge.models")
LOSSES = Registry("loss", home="kdforge.losses")
DATASETS = Registry("dataset", injected=("seed", "val_fraction", "test_fraction"), home="kdforge.data")
TEACHER_SOURCES = Registry("teacher source", home="kdforge.teachers")
#: ``kdforge export RUN --format NAME``: name -> fn(run_dir, out or None) -> what was written (one line)
EXPORT_FORMATS = Registry("export format", home="kdforge.export")
