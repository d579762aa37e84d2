"""Compact embedding students: texts and tables whose targets are a sentence encoder's
embeddings (:mod:`.data`), the teachers that give them (:mod:`.teachers`), the students that
learn them (:mod:`.models`), the embedding terms (:mod:`.losses`), the projections they must
beat (:mod:`.baselines`) and the function API of older embedding code (:mod:`.api`, also
importable as ``kdforge.embed``)."""

from __future__ import annotations

from kdforge.family import declare_family

declare_family(
    "embedding",
    "compact embedding students: a sentence encoder's vectors in a few dimensions, with their neighbourhoods",
    parts=(
        "kdforge.families.embedding.data",
        "kdforge.families.embedding.models",
        "kdforge.families.embedding.losses",
        "kdforge.families.embedding.hooks",
    ),
)
