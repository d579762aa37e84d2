"""Teachers: the frozen wrapper and where teachers come from (sources)."""

from kdforge.teachers import hub as _hub  # noqa: F401,E402  (registers timm, torchvision, callable)
from kdforge.teachers.sources import TEACHER_SOURCES, load_checkpoint_model, teacher_cache_key
from kdforge.teachers.teacher import Teacher

__all__ = ["Teacher", "TEACHER_SOURCES", "load_checkpoint_model", "teacher_cache_key"]
