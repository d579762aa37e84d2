"""Tsetlin-machine students: clause layers that learn by gradient (:mod:`.clause`), ``tm_flat`` (:mod:`.flat`), the TM
feed-forward block (:mod:`.blocks`), ViT-TM / Swin-TM / ResNet-TM / pyramid students
(:mod:`.transformer`), any model's MLPs as TM blocks (:mod:`.convert`), clause-aware loss
terms (:mod:`.losses`), steering from validation (:mod:`.steering`), starting from the
teacher's MLPs (:mod:`.transfer`), boolean rules and integer inference (:mod:`.rules`,
:mod:`.packed`) and pictures of what a student looks at (:mod:`.explain`).
"""

from __future__ import annotations

import importlib
from typing import Any

from kdforge.family import declare_family

declare_family(
    "tm",
    "Tsetlin-machine students: clause layers trained by gradient, exported to boolean rules evaluated in integers",
    parts=(
        "kdforge.families.tm.flat",
        "kdforge.families.tm.transformer",
        "kdforge.families.tm.convert",
        "kdforge.families.tm.losses",
        "kdforge.families.tm.rules",
        "kdforge.families.tm.hooks",
    ),
    commands="kdforge.families.tm.commands",
)


_PUBLIC = {
    "ClauseLayer": "clause",
    "DeepTM": "flat",
    "clause_layers": "clause",
    "clause_usage": "clause",
    "hard_mode": "clause",
    "set_hard": "clause",
    "set_levels": "clause",
    "mlp_to_tm": "convert",
    "PackedTM": "rules",
    "packed_model": "packed",
    "export_rules": "rules",
    "load_rules": "rules",
    "model_rules": "rules",
}


def __getattr__(name: str) -> Any:  # the public names, imported when first used (this package stays light)
    if name not in _PUBLIC:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)


__all__ = sorted(_PUBLIC)
