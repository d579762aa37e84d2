"""The lm family's hooks: what it adds to every run (see :class:`kdforge.family.Family`)."""

from __future__ import annotations

from typing import Any

from kdforge import distributed
from kdforge.export import TRANSFORMERS_FOLDER, save_transformers
from kdforge.families.lm.chat import data_stops
from kdforge.families.lm.commands import LANGUAGE_DATA
from kdforge.families.lm.generate import SAMPLE_TOKENS, test_samples
from kdforge.families.lm.hf import HFCausalLM
from kdforge.families.lm.policy import on_policy
from kdforge.families.lm.rwkv import spike_statistics
from kdforge.family import Family, register_family
from kdforge.taps import unwrap

SAMPLES = 3  # test prompts the report shows continued


def _line(text: str) -> str:
    """Text on one Markdown line, shown literally."""
    return "`" + text.replace("`", "'").replace("\n", "⏎") + "`"


class LanguageModels(Family):
    name = "lm"
    description = (
        "language models: token-level distillation into Hugging Face causal LMs and a ternary-spiking recurrent student"
    )

    rewrites_data = LANGUAGE_DATA

    def recipe_problems(self, recipe: Any) -> list[tuple[str, str]]:
        policy = recipe.train.on_policy
        if policy is None or recipe.data.name not in LANGUAGE_DATA:
            return []
        found = []
        if recipe.data.name == "chat_lm" and recipe.data.options.get("pack", True):
            found.append(("data.pack", "train.on_policy writes one example per row: set data.pack: false"))
        if policy.by == "teacher" and (recipe.teacher is None or recipe.teacher.cache is not None):
            found.append(
                ("train.on_policy.by", "by: teacher needs a live teacher to write (a teacher section, no cache)")
            )
        sharded = recipe.train.fsdp if policy.by == "student" else recipe.teacher and recipe.teacher.shard
        if sharded:  # each process writes its own rows, for as long as they take: a sharded writer's steps would part
            key = "train.fsdp" if policy.by == "student" else "teacher.shard"
            found.append(
                (key, f"train.on_policy writes with the {policy.by}, which {key} shards across processes that write "
                      "rows of different lengths; drop one of them")
            )  # fmt: skip
        return found

    def batch_rewrite(self, session: Any, student: Any, teacher: Any) -> Any | None:
        return on_policy(session, student, teacher)

    def after_fit(self, session: Any, stage: str, student: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
        if stage == "distill" and isinstance(unwrap(student), HFCausalLM) and distributed.is_main():  # for HF tools
            tokenizer = session.recipe.data.options.get("tokenizer")
            save_transformers(unwrap(student).model, session.run_dir / TRANSFORMERS_FOLDER, tokenizer)
        found: dict[str, Any] = {}
        named = session.data.name == "text_lm" or "tokenizer" in session.recipe.data.options
        if stage == "distill" and session.data.task == "lm" and named:
            x, y = session.data.test.first(SAMPLES)
            tokenizer, stop = data_stops(session.recipe.data)
            found["samples"] = test_samples(unwrap(student), x, y, tokenizer, session.data.input_shape[-1], stop)
            found["sampling"] = {"temperature": 0.0, "max_new_tokens": SAMPLE_TOKENS, "stop": stop}
        if spikes := spike_statistics(student, session.test):
            found["spikes"] = spikes
        return found

    def report_sections(self, entry: dict[str, Any]) -> list[str]:
        if not entry.get("samples"):
            return []
        lines = ["", "## Samples", "", "Greedy continuations of test prompts by the distilled student:", ""]
        for sample in entry["samples"]:
            lines += [f"- {_line(sample['prompt'])} **→** {_line(sample['continuation'])}"]
        return lines

    def notes(self, label: str, entry: dict[str, Any]) -> list[str]:
        s = entry.get("spikes")
        if not s:
            return []
        return [
            f"{label} spikes on test: density {s['density']:.3f}, dead channels {100 * s['dead_channels']:.1f}%, "
            f"saturated {100 * s['saturated_channels']:.1f}%"
        ]


register_family(LanguageModels())
