"""Sampling text from a language-model student (or teacher).

A model with a ``step(token, state)`` method reads the prompt and writes its continuation one token at a time:
``rwkv_spiking`` in recurrent mode (constant memory, constant time per token, whatever the context length),
``lm_transformer`` from its key-value cache (as long as the sequence fits its positions). A batch of prompts steps
together, each row reading its prompt and then writing. A Hugging Face student (``hf_causal_lm``) uses its own
``generate`` with its KV cache. Other causal LMs, and sequences longer than a model's positions, are run on the last
``window`` tokens for each new one. Writing ends at ``new_tokens`` tokens or at a ``stop`` token (kept as the
sequence's last), whichever comes first.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from kdforge.data.bundle import PAD_TARGET
from kdforge.families.lm.data import Tokenizer
from kdforge.families.lm.hf import HFCausalLM, hf_generate
from kdforge.teachers.hub import HFTeacher


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> torch.Tensor:
    """[B, V] logits -> [B] token ids: greedy at temperature 0, else sampled from the
    temperature-scaled softmax over the ``top_k`` most likely tokens (all when None)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        cutoff = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < cutoff, -torch.inf)
    return torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator)[:, 0].to(logits.device)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: list[int],
    new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    window: int | None = None,
    stop: Collection[int] = (),
) -> list[int]:
    """The ids of up to ``new_tokens`` tokens that continue ``prompt_ids``, ending at a ``stop`` token."""
    if not prompt_ids:
        raise ValueError("the prompt is empty: give at least one token of text to continue")
    model.eval()
    if (hf := _transformers_model(model)) is not None:
        return hf_generate(*hf, [prompt_ids], new_tokens, temperature, top_k, seed, stop)[0]
    if steps_through(model, len(prompt_ids) + new_tokens - 1, window):
        return stepped(model, [prompt_ids], new_tokens, temperature, top_k, seed, stop)[0]
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    out: list[int] = []
    context = list(prompt_ids)
    for _ in range(new_tokens):
        ids = torch.tensor([context[-window:] if window else context], device=device)
        token = int(sample_next(model(ids)[:, -1], temperature, top_k, generator))
        out.append(token)
        context.append(token)
        if token in stop:
            break
    return out


@torch.no_grad()
def generate_batch(
    model: nn.Module,
    prompts: list[list[int]],
    new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    window: int | None = None,
    stop: Collection[int] = (),
) -> list[list[int]]:
    """Up to ``new_tokens`` ids continuing each of ``prompts`` (each ending at a ``stop`` token): a Hugging Face
    model writes them all in one batch, so does a model that steps (its rows stepping together) where every
    sequence fits it, another model one prompt at a time (prompt i sampled with seed ``seed + i``, in a batch
    too)."""
    if (hf := _transformers_model(model)) is not None and all(prompts):
        model.eval()
        return hf_generate(*hf, prompts, new_tokens, temperature, top_k, seed, stop)
    longest = max(map(len, prompts), default=0)
    if all(prompts) and steps_through(model, longest + new_tokens - 1, window):
        return stepped(model, prompts, new_tokens, temperature, top_k, seed, stop)
    return [generate(model, p, new_tokens, temperature, top_k, seed + i, window, stop) for i, p in enumerate(prompts)]


def steps_through(model: nn.Module, tokens: int, window: int | None) -> bool:
    """Whether ``model`` reads ``tokens`` tokens of a sequence one at a time, as it would read them at once: it
    steps, and the sequence fits its positions (``max_tokens``, where it has a limit) and the ``window``."""
    if not hasattr(model, "step"):
        return False
    limit = getattr(model, "max_tokens", None)
    return limit is None or tokens <= min(limit, window or limit)


@torch.no_grad()
def stepped(
    model: nn.Module,
    prompts: list[list[int]],
    new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int,
    stop: Collection[int] = (),
) -> list[list[int]]:
    """Up to ``new_tokens`` ids after each prompt, the rows stepping together: at each step a row reads the next
    token of its prompt, or the one it wrote last; row i samples with its own generator, seeded ``seed + i``. A row
    that wrote a ``stop`` token is done; the steps end when every row is."""
    model.eval()
    device = next(model.parameters()).device
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    written: list[list[int]] = [[] for _ in prompts]
    state = model.empty_state(len(prompts), device)
    tokens = [p[0] for p in prompts]
    done = [False] * len(prompts)
    for position in range(max(map(len, prompts)) + new_tokens - 1):
        logits, state = model.step(torch.tensor(tokens, device=device), state)
        for row, prompt in enumerate(prompts):
            if position + 1 < len(prompt):
                tokens[row] = prompt[position + 1]
            elif not done[row]:  # a row that is done steps on, unread
                tokens[row] = int(sample_next(logits[row : row + 1], temperature, top_k, generators[row]))
                written[row].append(tokens[row])
                done[row] = len(written[row]) == new_tokens or tokens[row] in stop
        if all(done):
            break
    return written


def _transformers_model(model: nn.Module) -> tuple[nn.Module, int] | None:
    """A transformers causal LM inside ``model`` and the vocabulary it may write, when it has one."""
    if isinstance(model, HFCausalLM):
        return model.model, model.vocab
    if isinstance(model, HFTeacher) and model.output == "causal_lm":
        return model.model, model.model.config.vocab_size
    return None


def continue_text(model: nn.Module, tokenizer: Tokenizer, prompt: str, new_tokens: int, **options) -> str:
    return tokenizer.decode(generate(model, tokenizer.encode(prompt), new_tokens, **options))


PROMPT_TOKENS, SAMPLE_TOKENS = 16, 32


def test_samples(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, tokenizer: Tokenizer, window: int, stop: Collection[int] = ()
) -> list[dict[str, str]]:
    """Greedy continuations (up to ``SAMPLE_TOKENS``, ending at a ``stop`` token) of the first example of each row
    of ``x`` [N, T] (or packed [N, 2, T]): its prompt (the tokens before its first target, for chat and instruction
    data; else its first 16 tokens) and what the model writes after it, for the report."""
    samples = []
    for row, targets in zip(x.cpu(), y.cpu()):
        ids = row[0][row[1] == row[1, 0]] if row.dim() == 2 else row
        trained = (targets[: len(ids)] != PAD_TARGET).nonzero()
        start = int(trained[0]) + 1 if len(trained) and int(trained[0]) > 0 else min(PROMPT_TOKENS, len(ids))
        prompt = ids[:start].tolist()
        written = generate(model, prompt, SAMPLE_TOKENS, temperature=0.0, window=window, stop=stop)
        samples.append({"prompt": tokenizer.decode(prompt), "continuation": tokenizer.decode(written)})
    return samples
