"""Any Hugging Face encoder with a classification head as a student (``hf_encoder``): BERT, MiniLM, RoBERTa,
DeBERTa, ELECTRA, ...

Three ways to get one, as ``hf_causal_lm`` has:

- ``path``: a folder saved with ``save_pretrained``, or a hub id (at ``revision``; downloaded into the Hugging Face
  cache, read from it offline). A head of another size than the data's classes is built new;
- ``hf_config``: a config built from scratch, ``{model_type: bert, hidden_size: 128, ...}`` (the vocabulary size
  defaults to the tokenizer's);
- ``path`` and ``layers``: the model at ``path`` (typically the teacher) with only some of its blocks, copied with
  their weights: ``layers: "::2"`` (every other block, DistilBERT's initialisation), ``[0, 5]`` or ``"0:3"``;
- ``path`` and ``shrink``: narrower too, ``shrink: {hidden_size: 192, intermediate_size: 768,
  num_attention_heads: 6}`` (keep the head width: the leading heads are kept whole), each weight starting as the
  leading slice of the model's (weight selection, Xu et al. 2023), a new one where no slice fits.

The head follows the data: a sequence-classification head (one output per text, or one score for a regression) or,
for ``token_classification`` data, a token-classification head (one output per token). The student reads token rows
padded at their end (:func:`~kdforge.teachers.hub.encoder_inputs`: the padding masked, pairs with their segments).
A run saves it as every kdforge student and, for the Hugging Face ecosystem, as ``student_hf/``
(``save_pretrained``, with the data's tokenizer), which ``AutoModelForSequenceClassification`` (or
``AutoModelForTokenClassification``) and ``AutoTokenizer`` load as they are.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import NonNegativeInt
from torch import nn

from kdforge.models import MODELS
from kdforge.models.hf_blocks import config_options, new_config, shrunk
from kdforge.pretrained import load_pretrained
from kdforge.teachers.hub import encoder_inputs

Head = Literal["sequence", "token"]


def auto_class(head: Head) -> Any:
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if head == "token" else AutoModelForSequenceClassification


@MODELS.register("hf_encoder")
class HFEncoder(nn.Module):
    """A Hugging Face encoder with a classification head on token rows (see the module docstring); its modules
    are under ``model.`` (``model.bert.encoder.layer.0`` for taps)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        path: str | None = None,
        hf_config: dict[str, Any] | None = None,
        layers: list[NonNegativeInt] | str | None = None,
        shrink: dict[str, Any] | None = None,
        head: Head = "sequence",
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__()

        if (path is None) == (hf_config is None):
            raise ValueError("give the student either path (a model folder or hub id) or hf_config (a new model)")
        if path is None and (layers is not None or shrink or revision is not None or trust_remote_code):
            raise ValueError(
                "layers, shrink, revision and trust_remote_code are about the model at path: give path too"
            )
        auto = auto_class(head)
        labels = {"num_labels": num_classes}
        if num_classes == 1 and head == "sequence":
            labels["problem_type"] = "regression"
        if hf_config is not None:
            self.model = auto.from_config(new_config({**hf_config, **labels}, "bert, roberta, deberta-v2"))
        else:
            named = {"revision": revision, "trust_remote_code": trust_remote_code}
            loaded = load_pretrained(auto.from_pretrained, path, "Hugging Face model", **named, **labels,
                                     ignore_mismatched_sizes=True).float()  # fmt: skip
            if layers is None and not shrink:
                self.model = loaded
            else:
                config, state = shrunk(loaded, layers) if layers is not None else (loaded.config, loaded.state_dict())
                config.update(shrink or {})
                self.model = auto.from_config(config)
                self.model.load_state_dict(leading_slices(state, self.model.state_dict()))
        self.model.float()
        self.pad = self.model.config.pad_token_id
        self.rebuild_options = {"hf_config": config_options(self.model.config), "head": head}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token rows [B, T] (or pairs [B, 2, T]) -> logits [B, classes] (a token head: [B, T, classes])."""
        return self.model(**encoder_inputs(x, self.pad)).logits


def leading_slices(given: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``wanted``'s tensors, each replaced by the leading slice of ``given``'s of the same name where it is at
    least as large along every dimension (the same shape: the tensor itself)."""
    out = {}
    for name, tensor in wanted.items():
        source = given.get(name)
        fits = (
            source is not None
            and source.dim() == tensor.dim()
            and all(a >= b for a, b in zip(source.shape, tensor.shape))
        )
        out[name] = source[tuple(slice(0, n) for n in tensor.shape)].clone() if fits else tensor
    return out
