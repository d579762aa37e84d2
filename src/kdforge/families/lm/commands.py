"""The lm family's subcommands: ``kdforge generate``. Nothing heavy is imported here: the
``kdforge`` command lists it without loading PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from kdforge.errors import KdforgeError

console = Console()
LANGUAGE_DATA = ("text_lm", "chat_lm", "tokens")


def register(app: typer.Typer) -> None:
    """Add the family's commands to ``app``."""
    app.command(rich_help_panel="Families")(generate)


def generate(
    run_dir: Annotated[
        Path, typer.Argument(help="A finished language-model run directory (text_lm data).", show_default=False)
    ],
    prompt: Annotated[str, typer.Option(help="The text to continue.")],
    tokens: Annotated[int, typer.Option(min=1, help="The most tokens to write.")] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature; 0 is greedy.")] = 0.8,
    top_k: Annotated[
        Optional[int], typer.Option("--top-k", min=1, help="Sample among the k most likely tokens only.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    teacher: Annotated[
        bool, typer.Option("--teacher", help="Sample from the run's teacher instead of its student.")
    ] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="chat_lm runs: continue the text as it is, not as a user's turn.")
    ] = False,
    stop: Annotated[
        Optional[list[str]],
        typer.Option(
            "--stop",
            help="Stop after this token (its text, such as '<|im_end|>'; repeat for several). Default: the run's "
            "data.stop, else the end-of-text token and, after chat data, the end-of-turn token.",
        ),
    ] = None,
) -> None:
    """Continue a prompt with a run's student: a recurrent student (rwkv_spiking) reads and
    writes one token at a time, in constant memory; a Hugging Face student uses its KV cache. After
    chat data, the prompt is a user's turn through the chat template, and the student answers it. Writing
    ends at --tokens tokens or at a stop token."""
    import time

    from kdforge.export import load_run_teacher, load_student
    from kdforge.families.lm.chat import as_user_turn, data_stops
    from kdforge.families.lm.data import stop_ids
    from kdforge.families.lm.generate import generate
    from kdforge.runner import load_run_recipe

    recipe = load_run_recipe(run_dir)
    named = recipe.data.name == "text_lm" or "tokenizer" in recipe.data.options
    if recipe.data.name not in LANGUAGE_DATA or not named:
        raise KdforgeError(
            f"'{run_dir}' trained on '{recipe.data.name}'"
            + (" without a tokenizer" if recipe.data.name in LANGUAGE_DATA else "")
            + "; generate needs a language-model run with text (data: text_lm, chat_lm, or tokens with a tokenizer)"
        )
    tokenizer, stops = data_stops(recipe.data)
    if stop is not None:
        stops = stop_ids(tokenizer, stop, key="--stop")
    model = load_run_teacher(run_dir) if teacher else load_student(run_dir)
    if model is None:
        raise KdforgeError(f"'{run_dir}' has no saved kdforge teacher to sample from; drop --teacher")
    if recipe.data.name == "chat_lm" and not raw:  # what the model learnt to answer: a user turn
        prompt = as_user_turn(tokenizer, prompt)
    start = time.perf_counter()
    window = recipe.data.options.get("length", 128)
    written = generate(model, tokenizer.encode(prompt), tokens, temperature, top_k, seed, window, stops)
    seconds = time.perf_counter() - start
    console.print(Text.assemble((prompt, "bold"), tokenizer.decode(written)))
    ended = "stopped at its stop token" if written and written[-1] in stops else "the most asked for"
    console.print(
        f"[dim]{len(written)} tokens ({ended}) in {seconds:.2f} s ({len(written) / seconds:.0f} tokens/s, prompt "
        "included)[/]"
    )
