"""The recipe: typed, strict sections (pydantic v2), YAML load/dump, dotted overrides.

YAML holds values only. Every key is checked before anything is built: an unknown key
fails with the closest valid one, a wrong type names the field, and when the value came
from a YAML file the message gives the file and line; when it came from an override, the
override is named.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

import pydantic
import yaml
from pydantic import BaseModel, Field

from kdforge._recipe_yaml import Loc, Override, YamlSource, apply_override, describe_issue, load_yaml
from kdforge.config.sections import (
    Component,
    DataConfig,
    ModelConfig,
    Section,
)
from kdforge.config.student import (
    CurriculumConfig,
    LossConfig,
    StageConfig,
    StudentConfig,
)
from kdforge.config.teacher import HFModelOptions, TeacherConfig, TeacherTrainConfig
from kdforge.config.training import LogConfig, OptimConfig, TrainConfig
from kdforge.config.tune import TuneConfig
from kdforge.errors import ConfigError, did_you_mean
from kdforge.family import recipe_problems
from kdforge.files import read_text
from kdforge.registry import DATASETS, LOSSES, MODELS


class Recipe(Section):
    """A whole distillation job."""

    name: str = Field("kdforge", description="the run directory is log.dir/<name>-<time>: one folder name, no path")
    seed: int = 0
    data: DataConfig = DataConfig()
    teacher: TeacherConfig | None = Field(
        None,
        description=(
            "where the frozen teacher comes from; without one the student trains alone on its task (its terms must "
            "learn from the data: ce, reg_task, ...) and the run folder is the same, without the teacher's rows"
        ),
    )
    student: StudentConfig
    losses: list[LossConfig] = Field(min_length=1)
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()
    stages: list[StageConfig] | None = Field(
        None, description="staged training; each stage changes weights, temperatures, data"
    )
    tune: TuneConfig | None = Field(None, description="what kdforge tune searches (default: each term's own space)")
    curriculum: CurriculumConfig | None = Field(
        None,
        description=(
            "a progressive curriculum (pocl); with stages (one per partition), each stage's own end (epochs, "
            "loss_plateau, val_plateau) and settings apply on top"
        ),
    )

    @pydantic.field_validator("name")
    @classmethod
    def _one_folder_name(cls, value: str) -> str:
        bad = [c for c in ("/", "\\", "\0") if c in value]
        if not value.strip() or value in (".", "..") or bad or Path(value).is_absolute():
            shown = ", ".join("NUL" if c == "\0" else repr(c) for c in bad) or "an empty or dot name"
            raise ValueError(
                f"the name becomes one folder under log.dir, so it cannot contain {shown}; choose a plain name such "
                "as 'my-run' (set log.dir for where runs go)"
            )
        return value

    @pydantic.model_validator(mode="after")
    def _stages_fit(self) -> Recipe:
        if (
            self.stages is not None
            and self.curriculum is not None
            and len(self.stages) != len(self.curriculum.partitions)
        ):
            raise ValueError(
                "stages and a curriculum together: one stage per curriculum partition "
                f"({len(self.curriculum.partitions)}), got {len(self.stages)}"
            )
        if (
            self.curriculum is not None
            and self.curriculum.epochs is not None
            and sum(self.curriculum.epochs) != self.train.epochs
        ):
            raise ValueError(
                f"curriculum.epochs sum to {sum(self.curriculum.epochs)} but train.epochs is {self.train.epochs}"
            )
        names = term_names([c.name for c in self.losses])
        stages = self.stages or []
        for i, stage in enumerate(stages):
            if stage.open_ended and i < len(stages) - 1 and self.curriculum is None:  # a curriculum's stages end alone
                raise ValueError(
                    f"stage {i} needs an end (epochs, loss_plateau or val_plateau); only the last stage runs to the end"
                )
            for key in (*stage.weights, *stage.temperatures):
                if key not in names:
                    raise ValueError(
                        f"stage {i} names loss term '{key}', which the recipe does not have{did_you_mean(key, names)}"
                    )
        if self.train.fsdp and self.train.ema_decay is not None:
            raise ValueError(
                "train.ema_decay keeps a whole copy of the student, which train.fsdp shards; use one or the other"
            )
        if self.student.peft is not None and self.teacher is not None and self.teacher.follows_student:
            raise ValueError(
                "student.peft trains adapters on a frozen model, but an ema teacher is the moving average of the whole "
                "student; use one or the other"
            )
        if self.train.fsdp and self.student.peft is not None:
            raise ValueError(
                "student.peft trains adapters only: its frozen weights are replicated under torchrun (DDP), not "
                "sharded; drop train.fsdp"
            )
        teacher = self.teacher
        described = teacher is not None and (
            teacher.model is not None or teacher.source == "checkpoint"
        )  # a checkpoint may carry its description
        if self.student.preset is not None and not (
            self.student.model.name == "ssm"
            and described
            and (teacher is None or teacher.model is None or teacher.model.name == "ssm")
        ):
            named = "none" if teacher is None else f"'{teacher.model.name if teacher.model else teacher.source}'"
            raise ValueError(
                "student.preset sizes an ssm student from an ssm teacher; here the student is "
                f"'{self.student.model.name}' and the teacher {named} (set both model names to ssm, or drop "
                "student.preset)"
            )
        if self.student.init_from_teacher is not None and self.student.init_from is not None:
            raise ValueError(
                "student.init_from and student.init_from_teacher both give the student its first weights; keep one"
            )
        if self.student.init_from_teacher is not None and (
            teacher is None or teacher.cache is not None or teacher.source in ("ema", "ensemble")
        ):
            raise ValueError(
                "student.init_from_teacher copies the teacher's own modules: it needs one online teacher (no "
                "teacher.cache, not 'ema' or 'ensemble')"
            )
        if self.optim.name == "dot" and (
            self.train.amp == "fp16" or self.train.grad_clip is not None or self.optim.grad_centralization
        ):
            raise ValueError(
                "optim.name dot keeps the task and distillation gradients apart until its step, so it takes no "
                "gradient scaler, clipping or centralisation: "
                "use train.amp bf16 or off, and drop train.grad_clip and optim.grad_centralization"
            )
        if self.train.fsdp and teacher is not None and teacher.follows_student:
            raise ValueError(
                "train.fsdp shards the student, which an EMA teacher must copy whole every step; use DDP (train.fsdp: "
                "false)"
            )
        self._close_tokens_known()
        return self

    def _close_tokens_known(self) -> None:
        """``data.augment.tokens.neighbours`` draws from the teacher's token-embedding table once the teacher is
        ready: it needs a teacher, whose own fit reads no rows changed that way."""
        tokens = self.data.augment.tokens
        if tokens is None or not tokens.neighbours:
            return
        teacher = self.teacher
        if teacher is None:
            raise ValueError(
                "data.augment.tokens.neighbours finds close tokens in the teacher's token-embedding table: it needs a "
                "teacher (or set neighbours: 0)"
            )
        fit = (teacher.train or TeacherTrainConfig()) if teacher.source == "train" else teacher.finetune
        own = teacher_data(self.data, fit).augment.tokens if fit is not None else None
        if own is not None and own.neighbours and own.teacher == "changed":
            raise ValueError(
                "data.augment.tokens.neighbours: the close tokens come from the teacher once it is fitted, so its own "
                "fit cannot read rows changed that way: give its fit rows as they are (teacher.finetune.data: "
                "{augment: {}}) or change the student's rows only (tokens.teacher: original)"
            )

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe file '{path}' not found")
        text = read_text(path, "recipe file")
        return cls.from_dict(load_yaml(text, str(path)), overrides, YamlSource(str(path), text))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], overrides: Sequence[str] = (), source: YamlSource | None = None) -> Recipe:
        raw = copy.deepcopy(raw)
        applied = [apply_override(raw, text) for text in overrides]
        return validate_recipe(raw, source, applied)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: Sequence[str]) -> Recipe:
        return Recipe.from_dict(self.to_dict(), overrides)


# ---------------------------------------------------------------- validation


def validate_recipe(raw: Any, source: YamlSource | None = None, overrides: Sequence[Override] = ()) -> Recipe:
    """The typed recipe, or one :class:`ConfigError` listing every problem found in ``raw``."""
    if not isinstance(raw, dict):
        raise ConfigError("a recipe is a mapping of sections (name, data, teacher, student, losses, ...)")
    recipe: Recipe | None = None
    issues: list[tuple[Loc, str]] = []
    try:
        recipe = Recipe.model_validate(raw)
    except pydantic.ValidationError as err:
        recipe, issues = None, [(e["loc"], pydantic_message(e)) for e in err.errors()]
    issues += component_issues(raw)  # also when other sections failed: every problem in one run
    if recipe is not None and not issues:  # what the families see in a recipe that is otherwise whole
        issues = [(_loc(key), message) for key, message in recipe_problems(recipe)] + _without_teacher(recipe)
    if issues or recipe is None:
        lines = [describe_issue(loc, msg, source, overrides) for loc, msg in issues]
        raise ConfigError("invalid recipe:\n  " + "\n  ".join(lines))
    return recipe


def _without_teacher(recipe: Recipe) -> list[tuple[Loc, str]]:
    """A recipe without a teacher trains the student alone: a term that reads a teacher has none to read."""
    if recipe.teacher is not None:
        return []
    return [
        (
            ("losses", i, "name"),
            f"'{term.name}' learns from a teacher, and the recipe has no teacher section: add one, or keep the terms "
            "that learn from the data alone (ce, reg_task, ...)",
        )
        for i, term in enumerate(recipe.losses)
        if getattr(LOSSES.get(term.name), "uses_teacher", True)
    ]


def _loc(key: str) -> Loc:
    return tuple(int(part) if part.isdigit() else part for part in key.split("."))


def teacher_data(data: DataConfig, fit: TeacherTrainConfig | None) -> DataConfig:
    """The data a teacher's fit (``teacher.train`` or ``teacher.finetune``) learns from: the recipe's ``data``, with
    the keys of the fit's own ``data`` changed."""
    if fit is None or fit.data is None:
        return data
    return DataConfig.model_validate({**data.model_dump(mode="json"), **fit.data})


def teacher_optim(optim: OptimConfig, fit: TeacherTrainConfig | None) -> OptimConfig:
    """The optimiser a teacher's fit uses: the recipe's ``optim``, with the keys of the fit's own ``optim`` changed,
    and its ``lr`` when set."""
    own = {**(fit.optim or {}), **({"lr": fit.lr} if fit.lr is not None else {})} if fit is not None else {}
    return OptimConfig.model_validate({**optim.model_dump(mode="json"), **own}) if own else optim


def with_teacher_optim_pinned(recipe: Recipe) -> Recipe:
    """``recipe`` with the optimiser that fits each teacher it trains written out in full (``train.optim`` and
    ``train.lr``, or ``finetune``'s; an ensemble's members' too): a change to ``optim`` then leaves that teacher as it
    is, and a change to the teacher's own ``lr`` still reaches it."""

    def pinned(cfg: TeacherConfig) -> TeacherConfig:
        update: dict[str, Any] = {}
        for key in ("train", "finetune"):
            if (fit := getattr(cfg, key)) is not None:
                written = teacher_optim(recipe.optim, fit).model_dump(mode="json")
                update[key] = fit.model_copy(update={"lr": written.pop("lr"), "optim": written})
        if cfg.members:
            update["members"] = [pinned(member) for member in cfg.members]
        return cfg.model_copy(update=update)

    return recipe if recipe.teacher is None else recipe.model_copy(update={"teacher": pinned(recipe.teacher)})


def term_names(kinds: list[str]) -> list[str]:
    """Names of terms in recipe order: a repeated kind gets a suffix (``hint``, ``hint_2``)."""
    seen: Counter[str] = Counter()
    names = []
    for kind in kinds:
        seen[kind] += 1
        names.append(kind if seen[kind] == 1 else f"{kind}_{seen[kind]}")
    return names


def component_issues(raw: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Check each registry-backed section's options against its entry's signature. Reads the
    raw recipe, so that it runs even when other sections are invalid; a section that is
    itself malformed is left to the recipe's own validation."""
    issues: list[tuple[Loc, str]] = []
    for loc, kind, registry in _component_sections(raw):
        try:
            section = kind.model_validate(_at(raw, loc))
        except pydantic.ValidationError:
            continue
        issues += [(loc + sub, msg) for sub, msg in component_issues_for(section, registry)]
    return issues + _teacher_fit_issues(raw) + _hf_model_issues(raw)


def _hf_model_issues(raw: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Problems of the options of ``source: hf`` teachers' models (the model's folder is read when it is built)."""
    issues: list[tuple[Loc, str]] = []
    for loc, section in _teacher_sections(raw):
        model = section.get("model")
        if section.get("source") != "hf" or not isinstance(model, dict):
            continue
        try:
            HFModelOptions.model_validate({k: v for k, v in model.items() if k != "name"})
        except pydantic.ValidationError as err:
            fields = {"name", *HFModelOptions.model_fields}
            issues += [(loc + ("model", *e["loc"]), pydantic_message(e, fields)) for e in err.errors()]
    return issues


def _teacher_sections(raw: dict[str, Any]) -> list[tuple[Loc, dict[str, Any]]]:
    """The recipe's teacher section and its ensemble members, where each is a mapping."""
    teacher = raw.get("teacher")
    if not isinstance(teacher, dict):
        return []
    members = teacher.get("members")
    members = members if isinstance(members, list) else []
    found = [(("teacher", "members", i), m) for i, m in enumerate(members) if isinstance(m, dict)]
    return [(("teacher",), teacher), *found]


def _teacher_fit_issues(raw: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Problems of what a teacher's fit changes (``teacher.train.data``, ``teacher.train.optim``): the recipe's data
    and optim sections with those keys changed must be such sections too, and its learning rate is set in one place.
    Each is left alone while the recipe's own section is invalid."""
    teacher = raw.get("teacher")
    if not isinstance(teacher, dict):
        return []
    issues: list[tuple[Loc, str]] = []
    for fit_key in ("train", "finetune"):
        fit = teacher.get(fit_key)
        if not isinstance(fit, dict):
            continue
        for key, kind in (("data", DataConfig), ("optim", OptimConfig)):
            loc: Loc = ("teacher", fit_key, key)
            changed, found = _changed_section(raw.get(key, {}), fit.get(key), kind, loc)
            issues += found
            if isinstance(changed, DataConfig):
                issues += [(loc + sub, msg) for sub, msg in component_issues_for(changed, DATASETS)]
        if fit.get("lr") is not None and isinstance(fit.get("optim"), dict) and "lr" in fit["optim"]:
            once = f"set the teacher's learning rate once: teacher.{fit_key}.lr or teacher.{fit_key}.optim.lr"
            issues.append((("teacher", fit_key, "lr"), once))
    return issues


def _changed_section(
    section: Any, changes: Any, kind: type[Section], loc: Loc
) -> tuple[Section | None, list[tuple[Loc, str]]]:
    """``section`` with the keys of ``changes`` changed, or the problems of that, named at ``loc`` (neither while
    ``section`` itself is invalid: the recipe's own validation names that)."""
    if not isinstance(changes, dict) or not isinstance(section, dict):
        return None, []
    try:
        kind.model_validate(section)
    except pydantic.ValidationError:
        return None, []
    try:
        return kind.model_validate({**section, **changes}), []
    except pydantic.ValidationError as err:
        return None, [(loc + tuple(e["loc"]), pydantic_message(e, kind.model_fields)) for e in err.errors()]


def _component_sections(raw: dict[str, Any]) -> Iterable[tuple[Loc, type[Component], Any]]:

    if isinstance(raw.get("data"), dict):
        yield ("data",), DataConfig, DATASETS
    for loc, section in _teacher_sections(raw):
        if section.get("source", "train") in ("train", "checkpoint") and isinstance(section.get("model"), dict):
            yield loc + ("model",), ModelConfig, MODELS
    student = raw.get("student")
    if isinstance(student, dict) and isinstance(student.get("model"), dict):
        yield ("student", "model"), ModelConfig, MODELS
    losses = raw.get("losses")
    for i, term in enumerate(losses if isinstance(losses, list) else []):
        if isinstance(term, dict):
            yield ("losses", i), LossConfig, LOSSES


def _at(raw: Any, loc: Loc) -> Any:
    for key in loc:
        raw = raw[key]
    return raw


def component_issues_for(section: Component, registry: Any) -> list[tuple[Loc, str]]:
    """Problems of one registry-backed section: unknown name, unknown or mistyped options."""
    if section.name not in registry:
        return [(("name",), f"unknown {registry.kind} '{section.name}'{did_you_mean(section.name, registry.names())}")]
    try:
        registry.validate_options(section.name, section.options)
    except pydantic.ValidationError as err:
        fields = set(type(section).model_fields) | set(registry.options_model(section.name).model_fields)
        return [(tuple(e["loc"]), pydantic_message(e, fields)) for e in err.errors()]
    return []


def pydantic_message(error: Any, fields: Iterable[str] | None = None) -> str:
    """One of pydantic's errors in plain words (an unknown key with the closest valid one), without its URL."""
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        valid = fields if fields is not None else _fields_at(Recipe, loc[:-1])
        return f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), valid)}"
    if error["type"] == "missing":
        return "missing required key"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error.get("input"), dict):  # a rule of the whole section: the file:line says where it is
        return message
    shown = repr(error.get("input"))
    shown = shown if len(shown) < 60 else shown[:57] + "..."
    return f"{message} (got {shown})"


def _fields_at(model: Any, loc: Loc) -> list[str]:
    """Field names of the section reached by ``loc`` from ``model``."""
    for key in loc:
        if isinstance(key, int):
            continue
        annotation = model.model_fields[key].annotation if key in model.model_fields else None
        model = _section_type(annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _section_type(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _section_type(arg)
        if found is not None:
            return found
    return None
