"""Which recipe fields the test suite reads: attribute access on the config models is recorded (dumps for
hashing or saving do not count). Installed by conftest.py on import; read by test_recipe_fields.py."""

from kdforge import config as _config
from kdforge import schedules as _schedules

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
