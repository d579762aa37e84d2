"""The ssm family's hooks: what it adds to every run (see :class:`kdforge.family.Family`)."""

from __future__ import annotations

from typing import Any

from kdforge.errors import KdforgeError
from kdforge.families.ssm.model import compression_preset
from kdforge.family import Family, register_family
from kdforge.teachers.sources import teacher_architecture


class StateSpaceModels(Family):
    name = "ssm"
    description = "state-space students: S4D and selective SSMs distilled into small, fast non-selective ones"

    def student_options(self, recipe: Any, options: dict[str, Any]) -> dict[str, Any]:
        """With ``student.preset``, the student is sized from its ssm teacher (its own options win)."""
        if recipe.student.preset is None:
            return options
        name, teacher_options = teacher_architecture(recipe.teacher)
        if name != "ssm":
            raise KdforgeError(
                f"student.preset sizes an ssm student from an ssm teacher, but the teacher is '{name}'; drop "
                "student.preset"
            )
        return {**compression_preset(recipe.student.preset, teacher_options), **options}


register_family(StateSpaceModels())
