"""BERT-style encoders, the job that made distillation famous (DistilBERT, TinyBERT, MiniLM): labelled text and
tagged words (:mod:`.data`), any Hugging Face encoder with a classification head as the student (:mod:`.models`),
the metrics these tasks are reported with (:mod:`.metrics`) and the family's run hooks (:mod:`.hooks`)."""

from __future__ import annotations

from kdforge.family import declare_family

declare_family(
    "encoder",
    "BERT-style encoders: text and token classification from a fine-tuned teacher into fewer layers",
    parts=(
        "kdforge.families.encoder.data",
        "kdforge.families.encoder.models",
        "kdforge.families.encoder.hooks",
    ),
)
