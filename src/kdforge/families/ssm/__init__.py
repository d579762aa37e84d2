"""State-space students: S4D and selective SSM layers and the ``ssm`` model (:mod:`.model`),
compression presets sized from an ssm teacher, and the simulated SAR focusing task
(:mod:`.sar`, the ``sar_azimuth`` dataset)."""

from __future__ import annotations

from kdforge.family import declare_family

declare_family(
    "ssm",
    "state-space students: S4D and selective SSMs distilled into small, fast non-selective ones",
    parts=("kdforge.families.ssm.sar", "kdforge.families.ssm.hooks"),
)
