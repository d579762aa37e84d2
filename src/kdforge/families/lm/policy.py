"""Sequences written during distillation (``train.on_policy``).

On-policy distillation (GKD, Agarwal et al. 2024): in each batch a share λ of the rows is replaced by what
the student itself writes after their prompts (sampled at a temperature, up to ``max_new_tokens`` or the data's
stop token: the end of text or of a turn, which ends the row and its targets); the
teacher then scores those tokens and the chosen divergence trains the student where its own samples go, not
only where the data goes. λ = 0 is ordinary supervised KD. With ``by: teacher`` the teacher writes them
instead: sequence-level KD (Kim & Rush, 2016), the student learning the teacher's own outputs.

A row's prompt is its tokens before its first target (the prompt of chat and instruction data, whose prompt
tokens carry no loss), or its first ``prompt_tokens`` tokens (plain text). The rewritten row is the prompt and
the written tokens; the prompt keeps its own targets (none for a masked prompt, the text's next tokens for
plain text, so a long prompt leaves most of a row's data trained on) and the written tokens carry theirs. A
Hugging Face writer writes a batch's rows together (its ``generate``, prompts padded on the left). Rows and
samples are drawn from the run's seed and the step, so a resumed run writes the same sequences.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdforge.config.training import OnPolicyConfig
from kdforge.data.bundle import PAD_TARGET
from kdforge.errors import KdforgeError
from kdforge.families.lm.chat import data_stops
from kdforge.families.lm.generate import generate_batch
from kdforge.schedules import Clock
from kdforge.taps import unwrap


class WrittenSequences:
    """The batch rewrite: ``(inputs [B, T], targets [B, T], clock) -> (inputs, targets)``."""

    def __init__(self, cfg: OnPolicyConfig, writer: nn.Module, seed: int, window: int, stop: list[int]):
        self.cfg, self.writer, self.seed, self.window, self.stop = cfg, writer, seed, window, stop

    def __call__(self, x: torch.Tensor, y: torch.Tensor, clock: Clock) -> tuple[torch.Tensor, torch.Tensor]:
        draw = torch.Generator().manual_seed(self.seed * 1_000_003 + clock.step)
        share = self.cfg.fraction * len(x)
        count = int(share) + int(torch.rand((), generator=draw) < share - int(share))  # λB rows, on average
        chosen = torch.randperm(len(x), generator=draw)[:count].tolist()
        prompts = {row: self.prompt(x[row], y[row]) for row in chosen}
        room = {row: min(self.cfg.max_new_tokens, x.shape[1] + 1 - len(p)) for row, p in prompts.items()}
        rows = [row for row in chosen if room[row] > 0]  # a prompt that fills its row leaves it as it is
        if not rows:
            return x, y
        seed = int(torch.randint(0, 2**31 - 1, (), generator=draw))
        model = unwrap(self.writer)
        was_training = model.training
        try:  # the rows in one batch, each written as long as the longest may be, then cut to its own room
            written = generate_batch(
                model, [prompts[row] for row in rows], max(room[row] for row in rows), self.cfg.temperature,
                self.cfg.top_k, seed, self.window, self.stop,
            )  # fmt: skip
        finally:
            model.train(was_training)
        x, y = x.clone(), y.clone()
        for row, tokens in zip(rows, written):
            x[row], y[row] = written_row(prompts[row], tokens[: room[row]], y[row], x.device)
        return x, y

    def prompt(self, inputs: torch.Tensor, targets: torch.Tensor) -> list[int]:
        trained = (targets != PAD_TARGET).nonzero()
        first = int(trained[0]) if len(trained) else len(targets)
        length = first + 1 if first > 0 else self.cfg.prompt_tokens
        return inputs[: min(length, len(inputs))].tolist()


def written_row(
    prompt: list[int], written: list[int], targets: torch.Tensor, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a row holding ``prompt`` then ``written``: the row's own ``targets`` within the
    prompt, the written tokens after it, nothing past them."""
    length = len(targets)
    sequence = torch.tensor(prompt + written, device=device)[: length + 1]
    inputs = torch.zeros(length, dtype=torch.long, device=device)
    kept = targets.clone()
    kept[len(prompt) - 1 :] = PAD_TARGET
    inputs[: len(sequence) - 1] = sequence[:-1]
    kept[len(prompt) - 1 : len(sequence) - 1] = sequence[len(prompt) :]
    return inputs, kept


def on_policy(session: Any, student: nn.Module, teacher: Any) -> WrittenSequences | None:
    """The recipe's ``train.on_policy`` rewrite, its writer checked: the student, or a live teacher that speaks
    the data's vocabulary."""
    cfg = session.recipe.train.on_policy
    if cfg is None or session.data.task != "lm":
        return None
    writer = student if cfg.by == "student" else getattr(teacher, "module", None)
    foreign = getattr(writer, "vocab", None) is not None or getattr(writer, "own_tokens", False)
    if writer is None or (cfg.by == "teacher" and foreign):
        raise KdforgeError(
            "train.on_policy by: teacher needs a live teacher (no cache) that writes the data's tokens (no vocab_map "
            "or tokenizer of its own)"
        )
    _, stop = data_stops(session.recipe.data)
    return WrittenSequences(cfg, writer, session.recipe.seed, session.data.input_shape[-1], stop)
