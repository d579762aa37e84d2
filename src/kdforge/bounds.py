"""What an option of a registered entry may hold, said in its signature so that the recipe check refuses the
rest: ranges (``chunk: AtLeastOne | None``, ``min_scale: Share``) as annotated types, and rules between
options (``stride`` means nothing without ``window``) as :data:`Rule` functions given at registration.

The annotated types are plain ``int`` and ``float`` to the code that receives them; the registry's option
model (:meth:`kdforge.registry.Registry.options_model`) reads their bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

#: a count of things: 1 or more
AtLeastOne = Annotated[int, Field(ge=1)]
#: 0 or more (a number of epochs to wait, a weight)
NonNegative = Annotated[float, Field(ge=0)]
#: above 0 (a temperature, a scale, a standard deviation)
Positive = Annotated[float, Field(gt=0)]
#: a probability or mixing weight: 0 to 1, both included
Probability = Annotated[float, Field(ge=0, le=1)]
#: 0 or more, below 1 (label smoothing, a skew: 1 would leave nothing of what it mixes into)
BelowOne = Annotated[float, Field(ge=0, lt=1)]
#: a share of a whole that cannot be empty: above 0, at most 1 (the least area a random crop keeps)
Share = Annotated[float, Field(gt=0, le=1)]

#: the validated options (attributes, and ``model_fields_set``: the ones the caller gave) -> a problem, or None
Rule = Callable[[Any], "str | None"]


def needs(option: str, other: str, what: str, value: Any = None) -> Rule:
    """A rule: ``option``, when given, means nothing unless ``other`` is set (to ``value``, or to anything
    true without one); ``what`` says what ``option`` does, for the message."""
    wanted = other if value is None else f"{other}: {value}"

    def rule(options: Any) -> str | None:
        found = getattr(options, other)
        if option in options.model_fields_set and (not found if value is None else found != value):
            return f"{option} {what}, which needs {wanted}: set {wanted} too, or drop {option}"
        return None

    return rule
