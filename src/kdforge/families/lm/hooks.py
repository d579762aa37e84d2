"""The lm family's hooks: what it adds to every run (see :class:`kdforge.family.Family`)."""

from __future__ import annotations

from typing import Any

from kdforge import distributed
from kdforge.families.lm.hf import HFCausalLM, save_hf
from kdforge.families.lm.rwkv import spike_statistics
from kdforge.family import Family, register_family
from kdforge.taps import unwrap


class LanguageModels(Family):
    name = "lm"
    description = (
        "language models: token-level distillation into Hugging Face causal LMs and a ternary-spiking recurrent student"
    )

    def after_fit(self, session: Any, stage: str, student: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
        if stage == "distill" and isinstance(unwrap(student), HFCausalLM) and distributed.is_main():  # for HF tools
            save_hf(unwrap(student), session.run_dir / "student_hf", session.recipe.data.options.get("tokenizer"))
        spikes = spike_statistics(student, session.test)
        return {"spikes": spikes} if spikes else {}

    def notes(self, label: str, entry: dict[str, Any]) -> list[str]:
        s = entry.get("spikes")
        if not s:
            return []
        return [
            f"{label} spikes on test: density {s['density']:.3f}, dead channels {100 * s['dead_channels']:.1f}%, "
            f"saturated {100 * s['saturated_channels']:.1f}%"
        ]


register_family(LanguageModels())
