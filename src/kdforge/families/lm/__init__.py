"""Language models: token windows of a local corpus (:mod:`.data`, the ``text_lm`` dataset), chat,
instruction and text examples with prompt masking and packing (:mod:`.chat`, ``chat_lm``) or memory-mapped
token shards (:mod:`.shards`, ``tokens``); a small GPT-style teacher (:mod:`.transformer`), any Hugging Face
causal LM as a student (:mod:`.hf`), the ternary-spiking recurrent student (:mod:`.rwkv`) and its firing
statistics and ``spike_rate`` term (:mod:`.losses`), generation (:mod:`.generate`)."""

from __future__ import annotations

from kdforge.family import declare_family

declare_family(
    "lm",
    "language models: token-level distillation into Hugging Face causal LMs and a ternary-spiking recurrent student",
    parts=(
        "kdforge.families.lm.data",
        "kdforge.families.lm.chat",
        "kdforge.families.lm.shards",
        "kdforge.families.lm.transformer",
        "kdforge.families.lm.hf",
        "kdforge.families.lm.losses",
        "kdforge.families.lm.hooks",
    ),
    commands="kdforge.families.lm.commands",
)
