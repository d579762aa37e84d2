"""Any Hugging Face causal language model as a student (``hf_causal_lm``).

Three ways to get one:

- ``path``: a local folder saved with ``save_pretrained`` (config and weights), or a hub id (``org/name``, at
  ``revision``), downloaded into the Hugging Face cache and read from it offline (:mod:`kdforge.pretrained`);
- ``hf_config``: a config built from scratch, ``{model_type: llama, hidden_size: 256, ...}`` (the vocabulary
  size defaults to the data's);
- ``path`` and ``layers``: the model at ``path`` shrunk to a subset of its blocks, copied with their weights
  (layer-drop initialisation, as in DistilBERT and Minitron): ``layers: [0, 2, 4]`` or a slice, ``"::2"``
  (every other block).

The student reads token ids [B, T] and returns next-token logits [B, T, V], V the data's vocabulary (a model
whose embedding table is padded past its tokenizer has its extra logits cut off). Under a chunked term it
hands its last hidden states and LM head instead (:class:`~kdforge.losses.chunked.LMHead`). It is saved like
every kdforge student (``student.safetensors`` and the config that rebuilds it) and, for the Hugging Face
ecosystem, as a ``save_pretrained`` folder (``kdforge export RUN --format hf``; a run writes ``student_hf/``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from pydantic import NonNegativeInt
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.export import EXPORT_FORMATS, TRANSFORMERS_FOLDER, load_student, save_transformers
from kdforge.files import load_safetensors, read_json, save_safetensors, write_folder_atomic, write_text
from kdforge.losses.chunked import LMHead
from kdforge.models import MODELS
from kdforge.models.hf_blocks import config_options, new_config, shrunk
from kdforge.pretrained import load_pretrained
from kdforge.report import model_card
from kdforge.teachers.hub import hf_inputs, plain_head


@MODELS.register("hf_causal_lm")
class HFCausalLM(nn.Module):
    """A Hugging Face causal LM on token ids (see the module docstring); its modules are under ``model.``
    (``model.model.layers.0`` for taps)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        path: str | None = None,
        hf_config: dict[str, Any] | None = None,
        layers: list[NonNegativeInt] | str | None = None,
        gradient_checkpointing: bool = False,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        from transformers import AutoModelForCausalLM

        if (path is None) == (hf_config is None):
            raise ValueError("give the student either path (a model folder or hub id) or hf_config (a new model)")
        if path is None and (layers is not None or revision is not None or trust_remote_code):
            raise ValueError("layers, revision and trust_remote_code are about the model at path: give path too")
        state, loaded = None, None
        if hf_config is not None:
            config = new_config(hf_config, "llama, gpt2, qwen2", vocab_size=num_classes)
        else:
            named = {"revision": revision, "trust_remote_code": trust_remote_code}
            loaded = load_pretrained(AutoModelForCausalLM.from_pretrained, path, "Hugging Face model", **named).float()
            config, state = shrunk(loaded, layers) if layers is not None else (loaded.config, None)
        if config.vocab_size < num_classes:
            raise ValueError(
                f"the model's vocabulary has {config.vocab_size} tokens but the data's tokenizer has {num_classes}"
            )
        if loaded is not None and layers is None:
            self.model = loaded
        else:
            self.model = AutoModelForCausalLM.from_config(config).float()
            if state is not None:
                self.model.load_state_dict(state)
        if gradient_checkpointing:  # the name transformers 5 gives it, else the older one
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            (enable or self.model.gradient_checkpointing_enable)()
        self.vocab = num_classes
        if plain_head(self.model.config):
            self.returns_head = False  # the chunked losses may ask for the LM head's input instead of logits
        self.rebuild_options = {
            "hf_config": config_options(self.model.config),
            "gradient_checkpointing": gradient_checkpointing,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor | LMHead:
        """Ids [B, T] or packed rows [B, 2, T] (:mod:`kdforge.models.tokens`) -> logits [B, T, V] (or the head)."""
        inputs = hf_inputs(x)
        if self.returns_head:
            base = getattr(self.model, self.model.base_model_prefix)
            hidden = base(**inputs, use_cache=False).last_hidden_state
            head = self.model.get_output_embeddings()
            bias = head.bias[: self.vocab] if getattr(head, "bias", None) is not None else None
            return LMHead(hidden, head.weight[: self.vocab], bias)
        return self.model(**inputs, use_cache=False).logits[..., : self.vocab]


@torch.no_grad()
def hf_generate(
    model: Any,
    vocab: int,
    prompts: list[list[int]],
    new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int,
    stop: Collection[int] = (),
) -> list[list[int]]:
    """Up to ``new_tokens`` ids continuing each of ``prompts``, by a transformers model's own ``generate`` (KV
    cache) in one batch (prompts of different lengths padded on the left, the padding masked out), never a token
    past the data's ``vocab``; a row ends at its first ``stop`` token (none: exactly ``new_tokens``, whatever the
    model's own end-of-text token)."""
    model.eval()
    device = next(model.parameters()).device
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :], mask[row, width - len(prompt) :] = torch.tensor(prompt), 1
    torch.manual_seed(seed)
    out = model.generate(
        ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=new_tokens,
        min_new_tokens=None if stop else new_tokens,
        eos_token_id=sorted(stop) or None,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_k=top_k if temperature > 0 else None,
        top_p=None,
        suppress_tokens=list(range(vocab, model.config.vocab_size)) or None,
        use_cache=True,
        pad_token_id=model.config.eos_token_id or 0,
    )
    return [until_stop(row, stop) for row in out[:, width:].tolist()]


def until_stop(ids: list[int], stop: Collection[int]) -> list[int]:
    """``ids`` up to and with its first ``stop`` token (what follows it is padding)."""
    end = next((at + 1 for at, token in enumerate(ids) if token in stop), len(ids))
    return ids[:end]


def save_adapters(adapters: Path, recipe: Any, out: Path) -> Path:
    """A run's LoRA adapters (``student_adapter.safetensors``) as the adapter folder ``peft`` writes and reads
    (``adapter_config.json``, ``adapter_model.safetensors``), its base the student's ``path``."""
    from peft import LoraConfig

    options, peft = recipe.student.model.options, recipe.student.peft
    if options.get("layers") is not None or options.get("path") is None:
        raise KdforgeError(
            "this student's adapters sit on a model built by the run (layers dropped, or from hf_config), which no "
            "hub or folder holds: export it with --merge"
        )
    state = load_safetensors(adapters, what="LoRA adapters")
    # kdforge's names (model.<transformers name>.lora_A.default.weight) -> peft's (base_model.model.<...>.lora_A.weight)
    renamed = {"base_model." + key.replace(".default.", "."): value for key, value in state.items()}
    adapted = sorted({key.split(".lora_")[0].removeprefix("model.") for key in state})
    config = LoraConfig(
        r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout, target_modules=adapted, task_type="CAUSAL_LM",
        use_dora=peft.method == "dora",
        base_model_name_or_path=options["path"], revision=options.get("revision"),
    )  # fmt: skip

    def fill(folder: Path) -> None:
        config.save_pretrained(folder)
        save_safetensors(renamed, folder / "adapter_model.safetensors")

    return write_folder_atomic(out, fill)


@EXPORT_FORMATS.register("hf")
def export_hf(run_dir: Path, out: Path | None = None, merge: bool = False) -> str:
    """A run's ``hf_causal_lm`` student as a Hugging Face model folder (default ``RUN_DIR/student_hf``), with the
    data's tokenizer when it is a folder. A LoRA student (``student.peft``) leaves as its adapter folder (default
    ``RUN_DIR/student_adapter``, for ``peft.PeftModel.from_pretrained`` on its base model), or with ``merge`` as
    the model with its adapters merged."""
    from kdforge.runner import load_run_recipe

    model = load_student(run_dir)
    if not isinstance(model, HFCausalLM):
        raise KdforgeError(
            f"'{run_dir}' has a {type(model).__name__} student; the hf format saves hf_causal_lm students"
        )
    recipe = load_run_recipe(run_dir)
    adapters = Path(run_dir) / "student_adapter.safetensors"
    if merge and not adapters.is_file():
        raise KdforgeError(f"--merge merges a LoRA student's adapters; '{run_dir}' trained no adapters: drop --merge")
    if adapters.is_file() and not merge:
        folder = save_adapters(adapters, recipe, out or Path(run_dir) / "student_adapter")
        return f"wrote {folder} (load it with peft.PeftModel.from_pretrained on its base model; --merge: one model)"
    tokenizer = recipe.data.options.get("tokenizer")
    folder = save_transformers(model.model, out or Path(run_dir) / TRANSFORMERS_FOLDER, tokenizer)
    if (Path(run_dir) / "results.json").is_file():  # a finished run: its model card, for the Hub
        results = read_json(Path(run_dir) / "results.json", "run results")
        write_text(folder / "README.md", model_card(results, recipe.to_yaml(), "transformers"))
    return f"wrote {folder} (load it with transformers.AutoModelForCausalLM.from_pretrained)"
