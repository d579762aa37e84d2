"""Language-model students: token windows of a local corpus (:mod:`.data`, the ``text_lm``
dataset) or of memory-mapped token shards (:mod:`.shards`, the ``tokens`` dataset), a small
GPT-style teacher (:mod:`.transformer`), the ternary-spiking recurrent
student (:mod:`.rwkv`) and its firing statistics and ``spike_rate`` term (:mod:`.losses`),
generation (:mod:`.generate`)."""

from __future__ import annotations

from kdforge.family import declare_family

declare_family(
    "lm",
    "language-model students: token-level distillation into a ternary-spiking recurrent student",
    parts=(
        "kdforge.families.lm.data",
        "kdforge.families.lm.shards",
        "kdforge.families.lm.transformer",
        "kdforge.families.lm.hf",
        "kdforge.families.lm.losses",
        "kdforge.families.lm.hooks",
    ),
    commands="kdforge.families.lm.commands",
)
