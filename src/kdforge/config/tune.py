"""What ``kdforge tune`` searches: dotted recipe keys (as in overrides) mapped to a range or a choice."""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import Field

from kdforge.config.sections import Section


class ParamSpec(Section):
    """One searched value: ``{low, high}`` (``log: true`` for a log scale, ``step`` for a grid; integers when both
    ends are), ``{factor: f}`` (log scale from the recipe's own value / f to its value · f), or ``{choice: [...]}``
    (any values: numbers, names, whole lists of loss terms)."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=False)

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    factor: float | None = Field(None, gt=1)
    choice: list[Any] | None = Field(None, min_length=1)
    integer: bool = False  # set from the YAML: both ends written as integers

    @pydantic.model_validator(mode="before")
    @classmethod
    def _integers(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("low"), int) and isinstance(raw.get("high"), int):
            return {**raw, "integer": not isinstance(raw.get("step"), float)}
        return raw

    @pydantic.model_validator(mode="after")
    def _one_form(self) -> ParamSpec:
        forms = [self.low is not None or self.high is not None, self.factor is not None, self.choice is not None]
        if sum(forms) != 1:
            raise ValueError("give {low, high}, {factor} or {choice: [...]}, exactly one of them")
        if forms[0] and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError(f"a range needs low < high, got low {self.low}, high {self.high}")
        if self.log and forms[0] and (self.low or 0) <= 0:
            raise ValueError("a log-scale range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step do not go together")
        return self


class TuneConfig(Section):
    """The recipe's search space for ``kdforge tune`` (without one, each loss term's and the optimiser's default)."""

    space: dict[str, ParamSpec] = Field(
        default_factory=dict,
        description="dotted recipe key -> {low, high[, log, step]} | {factor} | {choice: [...]}",
    )
