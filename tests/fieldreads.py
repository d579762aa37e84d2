"""Which recipe fields the test suite reads: attribute access on the config models is recorded (dumps for
hashing or saving do not count). Installed by conftest.py on import; read by test_recipe_fields.py."""

import typing
from pathlib import Path

import pydantic

from kdforge import config as _config
from kdforge import schedules as _schedules
from kdforge.config import Recipe

FIELD_READS: set[tuple[str, str]] = set()
FIELD_TEST = "test_recipe_fields.py"


def _recording(original):
    def getattribute(self, name):
        if name in type(self).__pydantic_fields__:
            FIELD_READS.add((type(self).__name__, name))
        return original(self, name)

    return getattribute


for _model in (_config.Section, _schedules.ScheduleConfig, _schedules.LearnableTemperatureConfig):
    _model.__getattribute__ = _recording(_model.__getattribute__)


def schema_fields(model: type[pydantic.BaseModel] = Recipe, seen: set | None = None) -> set[tuple[str, str]]:
    """(model name, field name) for every field reachable from the recipe."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    fields = set()
    for name, info in model.model_fields.items():
        fields.add((model.__name__, name))
        stack = [info.annotation]
        while stack:
            t = stack.pop()
            stack.extend(typing.get_args(t))
            if isinstance(t, type) and issubclass(t, pydantic.BaseModel):
                fields |= schema_fields(t, seen)
    return fields


def whole_suite(session) -> bool:
    """Whether ``session`` ran every test file, unfiltered (its reads are then the whole suite's)."""
    everything = {p.name for p in Path(__file__).parent.glob("test_*.py")}
    return getattr(session, "kdforge_files", set()) >= everything and not session.config.option.keyword
