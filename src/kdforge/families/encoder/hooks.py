"""The encoder family's hooks (see :class:`kdforge.family.Family`): a student head that follows the data, checks of
the teacher against the data before anything loads, the metrics encoder tasks report, and the student saved as a
Hugging Face folder."""

from __future__ import annotations

from typing import Any

from kdforge import distributed
from kdforge.errors import KdforgeError
from kdforge.export import TRANSFORMERS_FOLDER, save_transformers
from kdforge.families.encoder.metrics import encoder_metrics
from kdforge.families.encoder.models import HFEncoder
from kdforge.family import Family, register_family
from kdforge.pretrained import load_pretrained

TASKS = ("classification", "regression", "token_classification")  # of text data (it decodes its rows)
HEADS = ("ForSequenceClassification", "ForTokenClassification")


def labelled_text(data: Any) -> bool:
    """Whether the run's data are texts with classes, scores or tags (the tasks this family measures)."""
    return data.decode is not None and data.task in TASKS


def unwrap(model: Any) -> Any:
    return getattr(model, "module", model)


class Encoders(Family):
    name = "encoder"
    description = "BERT-style encoders: text and token classification from a fine-tuned teacher into fewer layers"

    def student_options(self, recipe: Any, options: dict[str, Any]) -> dict[str, Any]:
        if recipe.student.model.name == "hf_encoder" and recipe.data.name == "token_classification":
            return {"head": "token", **options}
        return options

    def check_run(self, session: Any) -> None:
        """The teacher reads the data's tokens and predicts its classes: its vocabulary holds the tokenizer's, it
        pads as the tokenizer does, and a classification head it was fine-tuned with has the data's class count."""
        recipe, data = session.recipe, session.data
        if data.task == "token_classification" and recipe.teacher is not None and recipe.teacher.cache is not None:
            raise KdforgeError(  # the cache holds each row's outputs at full width; batches are cut to their rows
                "teacher.cache stores a teacher's outputs per row, but token_classification batches are cut to their "
                "longest row: distil tags from the live teacher (drop teacher.cache)"
            )
        if not labelled_text(data) or recipe.teacher is None or recipe.teacher.source != "hf":
            return
        from transformers import AutoConfig

        from kdforge.data.text import load_tokenizer

        name, options = recipe.teacher.model.name, recipe.teacher.model.options
        config = load_pretrained(AutoConfig.from_pretrained, name, "Hugging Face model", options.get("revision"))
        tokenizer = recipe.data.options["tokenizer"]
        tok = load_tokenizer(tokenizer)
        if len(tok) > config.vocab_size or tok.pad_token_id != config.pad_token_id:
            raise KdforgeError(
                f"data.tokenizer '{tokenizer}' ({len(tok)} tokens, padding id {tok.pad_token_id}) does not match the "
                f"teacher '{name}' ({config.vocab_size} tokens, padding id {config.pad_token_id}): tokenize with the "
                "teacher's own tokenizer (data.tokenizer: its name)"
            )
        headed = any(a.endswith(HEADS) for a in getattr(config, "architectures", None) or [])
        if headed and config.num_labels != data.num_classes and recipe.teacher.finetune is None:
            raise KdforgeError(
                f"the teacher '{name}' was fine-tuned for {config.num_labels} labels but the data has "
                f"{data.num_classes} classes ({', '.join(map(str, (data.class_names or [])[:8]))}): give the data "
                "the teacher was fine-tuned on, or teacher.finetune to fit a new head"
            )

    def after_fit(self, session: Any, stage: str, student: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
        data = session.data
        if not labelled_text(data):
            return {}
        model = unwrap(student)
        if stage == "distill" and isinstance(model, HFEncoder) and distributed.is_main():
            tokenizer = session.recipe.data.options.get("tokenizer")
            save_transformers(model.model, session.run_dir / TRANSFORMERS_FOLDER, tokenizer)
        test = session.track(session.test, f"{stage}: {data.name} metrics")
        return {"test_metrics": encoder_metrics(student, test, data.task, data.num_classes, data.class_names,
                                                session.autocast())}  # fmt: skip

    def notes(self, label: str, entry: dict[str, Any]) -> list[str]:
        found = entry.get("test_metrics")
        if not found:
            return []
        return [f"{label} on test: " + ", ".join(f"{k} {v:.4f}" for k, v in found.items())]


register_family(Encoders())
