"""Teachers from model zoos: timm and torchvision by name, Hugging Face models by hub id or from local
folders, or any function returning a module.

Names resolve as the zoos resolve them (:mod:`kdforge.pretrained`): a Hugging Face id, and timm's pretrained
weights, are downloaded into the Hugging Face cache, torchvision's into the torch cache, and read from there
offline; ``pretrained_file`` gives the zoo's weights as a file instead, and ``checkpoint`` (your fine-tuned
weights, loaded strictly after them) overrides them. When the classifier had
to be rebuilt for the dataset's class count, the head is random: kdforge says so loudly, and ``finetune`` fits
the teacher (head only or whole) on the training split before distillation.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from kdforge import distributed
from kdforge.config.teacher import HFModelOptions
from kdforge.errors import KdforgeError, did_you_mean, required
from kdforge.export import load_state_strict, read_state_dict
from kdforge.files import read_json
from kdforge.losses.chunked import LMHead
from kdforge.models.tokens import token_inputs
from kdforge.pretrained import (
    from_hub,
    hub_problem,
    is_local,
    load_pretrained,
    note_loaded,
    torchvision_weights,
    unpinned,
)
from kdforge.teachers.retokenize import OwnTokens
from kdforge.teachers.sources import TEACHER_SOURCES, Source, cached_fit
from kdforge.teachers.text import TextTeacher, mean_pooled_encode

if TYPE_CHECKING:
    from kdforge.config import TeacherConfig
    from kdforge.session import Session


@TEACHER_SOURCES.register("timm")
def timm_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """A timm model by name; ``model`` options go to ``timm.create_model`` (``num_classes``
    defaults to the dataset's; ``img_size``, ``in_chans``, ``drop_rate``, ...). ``pretrained: true``
    without ``pretrained_file`` has timm download its weights from the hub into the Hugging Face cache
    (read from it offline). Its inputs are adapted to what its pretrained config expects (size,
    channels, mean, std) unless ``teacher.adapt`` says otherwise (``adapt: {}``: none)."""
    spec = required(cfg.model, "teacher.model")
    import timm

    name, options = spec.name, {"num_classes": session.data.num_classes, **spec.options}
    if not timm.is_model(name):
        raise KdforgeError(f"timm has no model '{name}'{did_you_mean(name, timm.list_models())}")
    overlay = {"file": cfg.pretrained_file} if cfg.pretrained_file else None
    downloads = bool(cfg.pretrained) and not cfg.pretrained_file
    weights = timm.models.get_pretrained_cfg_value(name, "hf_hub_id") if downloads else None
    try:
        module: Any = timm.create_model(
            name, pretrained=bool(cfg.pretrained), pretrained_cfg_overlay=overlay, **options
        )
    except (RuntimeError, OSError, ValueError, TypeError) as err:
        if weights and from_hub(err):
            raise hub_problem(err, weights, "timm weights", None, local=False) from None
        raise KdforgeError(f"timm could not build '{name}' with {options}: {err}") from None
    if weights:  # downloaded by timm into the Hugging Face cache, or read from it
        note_loaded(weights, None, "timm weights")
    expects = list(module.pretrained_cfg.get("input_size") or ())
    if len(expects) == 3:  # what it was built for: the adapter's default (teacher.adapt overrides)
        expects[0] = options.get("in_chans", expects[0])
        if isinstance(options.get("img_size"), int):
            expects[1:] = [options["img_size"]] * 2
        module.pretrained_cfg = {**module.pretrained_cfg, "input_size": tuple(expects)}
    trained_classes = module.pretrained_cfg.get("num_classes")
    random_head = bool(cfg.pretrained) and trained_classes is not None and trained_classes != options["num_classes"]
    return _finish(session, cfg, where, module, module.get_classifier(), random_head)


@TEACHER_SOURCES.register("torchvision")
def torchvision_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """A torchvision model by name (``torchvision.models.get_model``); ``model`` options go to
    the builder (``num_classes`` defaults to the dataset's), except ``weights``: with
    ``pretrained: true``, the member of the model's weights enum to load (default ``DEFAULT``;
    ``IMAGENET1K_V2``, ...), downloaded by torchvision into the torch cache, or
    ``pretrained_file``, a saved state dict. A classifier of another class count is left random."""
    spec = required(cfg.model, "teacher.model")
    import torchvision

    name, options = spec.name, {"num_classes": session.data.num_classes, **spec.options}
    weights = options.pop("weights", None)
    if weights is not None and not (cfg.pretrained and not cfg.pretrained_file):
        raise KdforgeError(
            "teacher.model.weights picks the pretrained weights torchvision downloads: set teacher.pretrained: true "
            "(and no pretrained_file), or drop weights"
        )
    if name not in torchvision.models.list_models():
        raise KdforgeError(f"torchvision has no model '{name}'{did_you_mean(name, torchvision.models.list_models())}")
    module = built("torchvision", name, lambda: torchvision.models.get_model(name, weights=None, **options), options)
    random_head = False
    if cfg.pretrained:
        state, source = (
            (read_state_dict(cfg.pretrained_file), cfg.pretrained_file)
            if cfg.pretrained_file
            else torchvision_weights(name, str(weights or "DEFAULT"))
        )
        random_head = _load_except_head(module, state, source)
    return _finish(session, cfg, where, module, _last_linear(module), random_head)


def built(zoo: str, name: str, build: Callable[[], Any], options: dict[str, Any]) -> Any:
    """What ``build`` returns; a constructor that refuses the recipe's ``teacher.model`` options (a misspelled or
    unknown keyword, a value out of range) is the recipe's problem, told as such."""
    try:
        return build()
    except (TypeError, ValueError) as err:
        raise KdforgeError(f"teacher.model: {zoo} could not build '{name}' with options {options}: {err}") from None


@TEACHER_SOURCES.register("callable")
def callable_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """Any function that returns a module: ``model: {name: "package.module:function", **kwargs}``."""
    spec = required(cfg.model, "teacher.model")
    target = spec.name
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise KdforgeError(
            f"teacher.model.name '{target}' must be 'package.module:function' importable here ({err})"
        ) from None
    module = built("callable", target, lambda: factory(**spec.options), spec.options)
    if not isinstance(module, nn.Module):
        raise KdforgeError(f"'{target}' returned a {type(module).__name__}, not a torch.nn.Module")
    return _finish(session, cfg, where, module, _last_linear(module), random_head=False)


@TEACHER_SOURCES.register("hf")
def hf_source(session: Session, cfg: TeacherConfig, where: Path, student: nn.Module | None = None) -> Source:
    """A Hugging Face transformers model, ``model: {name, input, output, revision, trust_remote_code}``, loaded in
    ``teacher.dtype``:
    ``name`` is a local folder or a hub id (``org/name``, downloaded at ``revision`` into the Hugging Face cache, or
    read from it offline; its resolved commit is recorded). ``logits`` loads the image (``pixel_values``) or
    sequence (``input_ids``) classification model with the dataset's class count (a head of another size is
    rebuilt: random); ``hidden`` / ``pooled`` load the bare encoder and return its last hidden state / pooled
    output; ``mean`` (text datasets) embeds each text as the mean of its last hidden states over real tokens;
    ``causal_lm`` (``text_lm`` data) loads an ``AutoModelForCausalLM``: next-token logits [B, T, vocab] on the
    data's token ids (see :func:`vocab_index` for ``vocab_map``), or with ``tokenizer`` (its own tokenizer) on the
    data's text in its own tokens, at the data's positions and over its own vocabulary
    (:class:`~kdforge.teachers.retokenize.OwnTokens`: for ``uld``)."""
    spec = required(cfg.model, "teacher.model")
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    hf = HFModelOptions.model_validate(spec.options)  # checked with the recipe: its problems named there
    output, input_name = hf.output, hf.input or ("input_ids" if session.data.decode is not None else hf.reads)

    def load(auto: Any, **options: Any) -> Any:
        """``auto.from_pretrained`` on the named model, at its revision, in its dtype."""
        dtype = {"dtype": getattr(torch, cfg.dtype)} if cfg.dtype and auto is not AutoConfig else {}
        return load_pretrained(
            auto.from_pretrained, spec.name, "Hugging Face model", hf.revision, hf.trust_remote_code, **dtype, **options
        )

    config = load(AutoConfig)
    random_head = False
    info: dict[str, Any] = {"model": spec.name}
    if output == "logits":
        auto = (
            AutoModelForImageClassification
            if input_name == "pixel_values"
            else AutoModelForTokenClassification
            if session.data.task == "token_classification"
            else AutoModelForSequenceClassification
        )
        classes = session.data.num_classes
        random_head = config.num_labels != classes
        model = load(auto, num_labels=classes, ignore_mismatched_sizes=random_head)
    elif output == "causal_lm":
        if session.data.task != "lm":
            raise KdforgeError(
                "hf output 'causal_lm' predicts next tokens: use it with a language-model dataset (text_lm)"
            )
        sharded = cfg.shard and hf.tokenizer is None  # built empty: each process then loads its shard alone
        model = empty_model(AutoModelForCausalLM, config, cfg.dtype) if sharded else load(AutoModelForCausalLM)
        info["vocab_size"] = config.vocab_size
        if hf.tokenizer is not None:
            retokenized = own_tokens(session, HFTeacher(model, input_name, output), hf.tokenizer, hf.vocab_map, config)
            return retokenized.to(session.device).eval(), {**info, "tokenizer": hf.tokenizer}
        data_vocab, data_tokenizer = session.data.num_classes, session.recipe.data.options.get("tokenizer")
        vocab_map = hf.vocab_map or padded(spec.name, data_tokenizer, config.vocab_size, data_vocab)
        index = vocab_index(vocab_map, config.vocab_size, data_vocab)
        teacher = HFTeacher(model, input_name, output, index)
        if sharded:
            files = weight_files(spec.name, hf.revision)
            distributed.shard_teacher(teacher, session.device, whole_weights(files, model, cfg.dtype, "model."))
            return teacher.eval(), info
        return teacher.to(session.device).eval(), info
    else:
        model = load(AutoModel)
    if output == "mean":
        if session.data.decode is None:
            raise KdforgeError(
                "hf output 'mean' pools a text encoder over texts: use it with a text dataset (text_corpus)"
            )
        from transformers import AutoTokenizer

        tokenizer = load_pretrained(AutoTokenizer.from_pretrained, spec.name, "tokenizer", hf.revision)
        encode = mean_pooled_encode(model, tokenizer)
        return TextTeacher(session.data.decode, encode, model).to(session.device).eval(), {
            **info,
            "embedding_dim": config.hidden_size,
        }
    order = label_order(config, session.data.class_names) if output == "logits" and not random_head else None
    module = HFTeacher(model, input_name, output, order)
    head = _last_linear(module) if output == "logits" else None
    finished, more = _finish(session, cfg, where, module, head, random_head)
    return finished, {**info, **more}


def download_hf(cfg: TeacherConfig) -> None:
    """An ``hf`` teacher's config, tokenizer and weight files, downloaded into the Hugging Face cache (and recorded)
    without building the model: what ``kdforge fetch`` does for a teacher too large to hold whole."""
    from transformers import AutoConfig, AutoTokenizer

    spec = required(cfg.model, "teacher.model")
    hf = HFModelOptions.model_validate(spec.options)
    load_pretrained(AutoConfig.from_pretrained, spec.name, "Hugging Face model", hf.revision, hf.trust_remote_code)
    if hf.tokenizer is not None:
        load_pretrained(AutoTokenizer.from_pretrained, hf.tokenizer, "tokenizer")
    weight_files(spec.name, hf.revision)


def empty_model(auto: Any, config: Any, dtype: str | None) -> nn.Module:
    """``auto.from_config(config)`` with its parameters on the meta device: nothing allocated for them (buffers, such
    as rotary frequencies, are made as usual)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, parameter: nn.Parameter | None) -> None:
        if parameter is not None and not parameter.is_meta:  # one already there is kept as is: ties stay ties
            parameter = nn.Parameter(parameter.to("meta"), False)
        register(module, name, parameter)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign,assignment]
    try:
        return auto.from_config(config, **({"dtype": getattr(torch, dtype)} if dtype else {}))
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def weight_files(name: str, revision: str | None) -> list[Path]:
    """The safetensors files of the model ``name``: in its folder, or downloaded from the hub into the Hugging Face
    cache (read from there offline)."""
    if is_local(name):
        files = sorted(Path(name).expanduser().glob("*.safetensors"))
    else:
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(name, revision=revision, allow_patterns=["*.safetensors"])
        except (OSError, ValueError) as err:
            raise hub_problem(err, name, "Hugging Face model", revision, local=False) from None
        files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise KdforgeError(f"teacher.shard loads a model's weights from .safetensors files: '{name}' has none")
    return files


def whole_weights(
    files: list[Path], model: nn.Module, dtype: str | None, prefix: str, part_bytes: int = 1 << 28
) -> Iterator[dict[str, Any]]:
    """The weights of ``files`` in parts of about ``part_bytes`` (read a tensor at a time, in ``dtype``), named as in
    the module holding ``model`` under ``prefix``; a tensor the model uses under two names (a head tied to the
    embeddings, stored once) under both."""
    from safetensors import safe_open

    first = {id(p): n for n, p in reversed(list(model.named_parameters(remove_duplicate=False)))}
    aliases: dict[str, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(first[id(parameter)], []).append(name)
    also = {name: names for names in aliases.values() for name in names}  # every name of each tensor
    part: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), "pt") as stored:
            for name in stored.keys():  # noqa: SIM118 (a safetensors file is not a dict)
                value = stored.get_tensor(name)
                value = value.to(getattr(torch, dtype)) if dtype else value
                part.update({prefix + alias: value for alias in also.get(name, [name])})
                if sum(t.numel() * t.element_size() for t in part.values()) >= part_bytes:
                    yield part
                    part = {}
    if part:
        yield part


def padded(model: str, data_tokenizer: Any, teacher_vocab: int, data_vocab: int) -> str | None:
    """``truncate`` when the data is tokenised by the teacher's own tokenizer (the same folder or hub id) and the
    teacher has more logits than it has tokens: those past its last token are padding (Qwen, GPT-NeoX and others
    round their vocabulary up for faster matrix products), never a token of the data."""
    same = isinstance(data_tokenizer, str) and unpinned(data_tokenizer, None, "tokenizer")[0] == model
    return "truncate" if same and teacher_vocab > data_vocab else None


def vocab_index(vocab_map: str | None, teacher_vocab: int, data_vocab: int) -> torch.Tensor | None:
    """Which teacher logit each of the data's token ids reads, or None when they coincide.
    ``truncate``: the first ``data_vocab`` (a teacher whose vocabulary is padded beyond its
    tokenizer's); a ``.json`` file: a list, entry i = the teacher id of data token i."""
    if vocab_map is None:
        if teacher_vocab != data_vocab:
            raise KdforgeError(
                f"the teacher's vocabulary has {teacher_vocab} tokens but the data's tokenizer has {data_vocab}: "
                "tokenise the data with the "
                "teacher's own tokenizer (data.tokenizer: the model's folder), or give teacher.model.vocab_map: "
                "truncate (its first tokens are the data's) or a .json list of the teacher id of each data token, "
                "or give teacher.model.tokenizer (its tokenizer's folder: it reads the data's text in its own "
                "tokens) and distil with the uld loss, which compares distributions over different vocabularies"
            )
        return None
    if vocab_map == "truncate":
        if teacher_vocab < data_vocab:
            raise KdforgeError(
                f"vocab_map truncate keeps the teacher's first {data_vocab} logits, but it has only {teacher_vocab}"
            )
        return torch.arange(data_vocab)
    path = Path(vocab_map)
    if path.suffix != ".json" or not path.is_file():
        raise KdforgeError(f"vocab_map must be 'truncate' or an existing .json file, got '{vocab_map}'")
    ids = read_json(path, "vocab_map")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise KdforgeError(
            f"vocab_map '{path}' must be a JSON list of whole numbers (the teacher id of each data token)"
        )
    index = torch.tensor(ids, dtype=torch.long)
    if index.shape != (data_vocab,) or int(index.min()) < 0 or int(index.max()) >= teacher_vocab:
        raise KdforgeError(
            f"'{path}' must list {data_vocab} teacher ids (one per data token), each in [0, {teacher_vocab}); got "
            f"{list(index.shape)} entries"
        )
    return index


def own_tokens(session: Session, teacher: HFTeacher, tokenizer: str, vocab_map: Any, config: Any) -> OwnTokens:
    """The causal LM ``teacher`` reading the data's text with the tokenizer in the folder ``tokenizer``."""
    from transformers import AutoTokenizer

    if vocab_map is not None:
        raise KdforgeError(
            "teacher.model: vocab_map maps the data's token ids and tokenizer re-tokenises the text; give one"
        )
    if session.data.token_texts is None:
        raise KdforgeError(
            f"the {session.data.name} data has no tokenizer to turn its rows back into text for the teacher's "
            "tokenizer: give the dataset its tokenizer"
        )
    loaded = load_pretrained(AutoTokenizer.from_pretrained, tokenizer, "tokenizer")
    if not loaded.is_fast:
        raise KdforgeError(
            f"the tokenizer in '{tokenizer}' is not a fast tokenizer, which the alignment by text offsets needs: "
            "save it with a tokenizer.json"
        )
    return OwnTokens(teacher, loaded, session.data.token_texts, getattr(config, "max_position_embeddings", None))


def hf_inputs(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A causal LM's keyword inputs for token rows: ids, and for packed rows the positions and the
    block-diagonal causal mask that keep each document to itself (:mod:`kdforge.models.tokens`)."""
    ids, positions, mask = token_inputs(x)
    if mask is None or positions is None:
        return {"input_ids": ids}
    return {"input_ids": ids, "position_ids": positions, "attention_mask": mask}


def label_order(config: Any, names: list[str] | None) -> torch.Tensor | None:
    """The teacher's output index of each of the data's classes, where the teacher names its labels (its config's
    ``id2label``) as the data names its classes but in another order (a NER teacher's tags, say); else None."""
    given = getattr(config, "id2label", None) or {}
    labels = [given[i] for i in sorted(given)]
    if names is None or labels == list(names) or sorted(labels) != sorted(names):
        return None
    return torch.tensor([labels.index(name) for name in names])


def encoder_inputs(x: torch.Tensor, pad: int | None) -> dict[str, torch.Tensor]:
    """A text encoder's keyword inputs for rows of token ids padded at their end with ``pad``: ids [B, T], or
    ids and segments [B, 2, T] (sentence pairs, ``token_type_ids``); the attention mask hides the padding."""
    ids, segments = (x[:, 0], x[:, 1]) if x.dim() == 3 else (x, None)
    inputs = {"input_ids": ids}
    if pad is not None:
        inputs["attention_mask"] = (ids != pad).long()
    if segments is not None:
        inputs["token_type_ids"] = segments
    return inputs


def plain_head(config: Any) -> bool:
    """Whether the model's logits are its LM head applied to its last hidden states, and nothing more (no
    soft-capping or scaling after the head), so that a chunked loss may apply the head itself."""
    after = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
    return all(getattr(config, name, None) in (None, 1, 1.0) for name in after)


class HFTeacher(nn.Module):
    """A transformers model called on one tensor: [B, ...] -> logits [B, K] (or [B, T, V]
    for a causal LM, optionally re-indexed to the data's vocabulary; a classifier's re-indexed to the data's
    class order, see :func:`label_order`), hidden [B, N, D] or pooled [B, D]. Its modules are under ``model.``
    for taps (``model.vit.layers.0``)."""

    def __init__(self, model: nn.Module, input_name: str, output: str, vocab: torch.Tensor | None = None):
        super().__init__()
        self.model, self.input_name, self.output = model, input_name, output
        self.pad = getattr(model.config, "pad_token_id", None)  # token rows: the padding the attention mask hides
        self.sharded = False  # teacher.shard: set once its weights are spread over the processes
        self.prefix: int | None = None
        if vocab is not None and torch.equal(vocab, torch.arange(len(vocab))):
            self.prefix, vocab = len(vocab), None  # the first logits: read through views, nothing copied
        self.register_buffer("vocab", vocab, persistent=False)
        if output == "causal_lm" and plain_head(model.config):
            self.returns_head = False  # a chunked loss may ask for its LM head's input instead of its logits

    def forward(self, x):
        if self.output == "causal_lm":
            inputs = hf_inputs(x)
        else:
            inputs = encoder_inputs(x, self.pad) if self.input_name == "input_ids" else {self.input_name: x}
        if getattr(self, "returns_head", False):
            base = getattr(self.model, self.model.base_model_prefix)
            head = self.model.get_output_embeddings()
            weight, bias = head.weight, getattr(head, "bias", None)
            rows = self.vocab if self.vocab is not None else slice(self.prefix)
            weight, bias = weight[rows], bias if bias is None else bias[rows]
            if self.sharded:  # its weights are freed once its forward ends, before the loss reads the head: a copy
                weight, bias = weight.clone(), bias if bias is None else bias.clone()
            return LMHead(base(**inputs, use_cache=False).last_hidden_state, weight, bias)
        out = self.model(**inputs)
        if self.output in ("logits", "causal_lm"):
            if self.vocab is not None:
                return out.logits.index_select(-1, self.vocab)
            return out.logits if self.prefix is None else out.logits[..., : self.prefix]
        return out.last_hidden_state if self.output == "hidden" else out.pooler_output


def _finish(
    session: Session, cfg: TeacherConfig, where: Path, module: nn.Module, head: nn.Module | None, random_head: bool
) -> Source:
    """Checkpoint over the pretrained weights, the random-head warning, the optional fine-tune."""
    spec = required(cfg.model, "teacher.model")
    module = module.to(session.device)
    if cfg.checkpoint:
        load_state_strict(module, read_state_dict(cfg.checkpoint), cfg.checkpoint)
        random_head = False
    info: dict[str, Any] = {"model": spec.name, "random_head": random_head and cfg.finetune is None}
    if cfg.finetune is not None:
        if cfg.finetune.head_only and head is None:
            raise KdforgeError(f"finetune.head_only: no classifier head found in {type(module).__name__}")
        module, fitted = cached_fit(
            session,
            cfg,
            where,
            module,
            cfg.finetune,
            head if cfg.finetune.head_only else None,
            session.adapter(cfg, module),
        )
        info.update(fitted, finetuned="head" if cfg.finetune.head_only else "all")
    elif random_head:
        Console(stderr=True).print(
            f"[bold red]warning:[/] the teacher '{escape(spec.name)}' got a new, randomly initialised classifier "
            "for "
            f"{session.data.num_classes} classes: distilling from it teaches noise. Add teacher.finetune "
            "(e.g. {epochs: 5, head_only: true}) or a fine-tuned teacher.checkpoint."
        )
    return module.eval(), info


def _last_linear(module: nn.Module) -> nn.Module | None:
    """The classifier: the last ``nn.Linear`` in registration order (fc, head, classifier[-1])."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _load_except_head(module: nn.Module, state: dict[str, Any], source: str) -> bool:
    """Load ``state``; entries whose shape differs (a classifier for other classes) are
    skipped and reported as a random head. Returns whether any were skipped."""
    own = module.state_dict()
    skipped = {k for k in state if k in own and state[k].shape != own[k].shape}
    load_state_strict(module, {k: (own[k] if k in skipped else v) for k, v in state.items()}, source)
    return bool(skipped)
