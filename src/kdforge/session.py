"""What the stages of one run share (:class:`Session`: recipe, data, loaders, device,
callbacks, trackers) and what it does with them: acquire the teacher, fit a teacher, build,
fit and measure a student."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rich.progress
import torch
from rich.console import Console

from kdforge import distributed
from kdforge.adapters import adapt, adapter_state, is_adapted, merge
from kdforge.bench import count_params, latency_ms
from kdforge.callbacks import Callback, ConsoleProgress, EpochTest, JsonlLogger
from kdforge.config import DataConfig, Recipe, TrainConfig
from kdforge.config.recipe import teacher_data, teacher_optim
from kdforge.config.teacher import TeacherConfig, TeacherTrainConfig
from kdforge.config.training import StepsConfig
from kdforge.curriculum import Curriculum
from kdforge.data import DataBundle, example_inputs, make_loader, recipe_data
from kdforge.data.augment import BatchAugment, Mixer, TokenAugment, closest_tokens, student_only, token_table
from kdforge.data.bundle import PER_TOKEN_TASKS, Split
from kdforge.distiller import Distiller
from kdforge.errors import KdforgeError, RunInterrupted, required
from kdforge.evaluate import evaluate
from kdforge.family import families, steering, student_options
from kdforge.files import read_json, save_safetensors, write_json
from kdforge.layout import memory_format
from kdforge.losses import LossTerm, build_loss
from kdforge.machine import autocast_for, check_dtype, compiled, resolve_device
from kdforge.models import build_model
from kdforge.teachers import TEACHER_SOURCES, Teacher
from kdforge.teachers.adapt import DEFAULT_ADAPT, InputAdapter, expected_input
from kdforge.teachers.cache import CachedTeacher, fixed_views
from kdforge.tracking import Tracker, build_trackers
from kdforge.trainer import Trainer
from kdforge.transfer import copy_matching, start_from


class Session:
    """What the stages of one run share: recipe, data, loaders, device, callbacks."""

    def __init__(self, recipe: Recipe, run_dir: Path, console: Console, callbacks: Sequence[Callback] = ()):
        self.recipe, self.run_dir, self.console = recipe, run_dir, console
        self.extra_callbacks = list(callbacks)  # the caller's, in every stage
        if recipe.teacher is not None and recipe.teacher.shard and distributed.launched_world() == 1:
            raise KdforgeError(  # before anything is read or loaded
                "teacher.shard shards the teacher across torchrun's processes: launch with torchrun --nproc-per-node "
                "N -m kdforge train ... (or drop teacher.shard)"
            )
        self.device = resolve_device(recipe.train.device)
        self.data: DataBundle = recipe_data(recipe.data, recipe.seed)
        self.memory_format = memory_format(recipe, self.data)
        self.made: list[Any] = []  # every batch source made here: closed with the session (their workers stop)
        self.shard = distributed.setup()  # (rank, world): this process's share of every global batch
        # token changes made here, and the close tokens they draw from (tokens.neighbours), known with the teacher
        self.token_changes: list[TokenAugment] = []
        self.close_tokens: torch.Tensor | None = None
        # the teacher and the student alone learn from the labelled samples; the distilled student also from the
        # unlabelled ones, if the data has any (self.data then counts them in its training split)
        self.labelled = self.train = self.training_batches(self.data, recipe.data)
        if self.data.unlabelled is not None:
            self.data = self.data.with_unlabelled()
            self.train = self.training_batches(self.data, recipe.data)
        self.val = self.batches(self.data.val, recipe.data.eval_batch_size)
        self.test = self.batches(self.data.test, recipe.data.eval_batch_size)
        self.example = example_inputs(self.train)
        self.autocast = lambda: autocast_for(recipe.train.amp, self.device)
        self.trackers: list[Tracker] | None = None

    def batches(self, data: Any, batch_size: int, **options: Any) -> Any:
        """A batch source of ``data`` on the run's device, in its memory layout (see :func:`make_loader`)."""
        made = make_loader(
            data,
            batch_size,
            device=self.device,
            memory_format=self.memory_format,
            num_workers=self.recipe.data.workers,
            **options,
        )
        self.made.append(made)
        return made

    def training_batches(self, data: DataBundle, cfg: DataConfig) -> Any:
        """Shuffled, augmented batches of ``data``'s training split (this process's share of each); token changes
        that the student alone reads are not the batches' (:meth:`student_view`)."""
        augment = BatchAugment.from_config(cfg.augment, data.scaling, data.token_ids)
        if student_only(cfg.augment):
            augment.tokens = None
        self.with_close_tokens(augment)
        loader = self.batches(
            data.train, cfg.batch_size, shuffle=True, seed=self.recipe.seed, transform=augment or None
        )
        loader.shard = self.shard
        return loader

    def student_view(self) -> TokenAugment | None:
        """The token changes that the student alone reads (``data.augment.tokens.teacher: original``): the teacher
        reads each row as it is, the student the same row changed (made in the training step, after the batch)."""
        augment = self.recipe.data.augment
        if not student_only(augment):
            return None
        return self.with_close_tokens(BatchAugment.from_config(augment, self.data.scaling, self.data.token_ids)).tokens

    def with_close_tokens(self, augment: BatchAugment) -> BatchAugment:
        """``augment``, whose token changes draw from the teacher's close tokens once they are known
        (:meth:`learn_close_tokens`)."""
        if augment.tokens is not None:
            augment.tokens.close = self.close_tokens
            self.token_changes.append(augment.tokens)
        return augment

    def learn_close_tokens(self, teacher: torch.nn.Module) -> None:
        """With ``data.augment.tokens.neighbours``: each token's closest in the ready ``teacher``'s token-embedding
        table, for every token change (the same table whether the teacher was fitted now or reused)."""
        tokens = self.recipe.data.augment.tokens
        if tokens is None or not tokens.neighbours or self.data.token_ids is None:
            return
        self.close_tokens = closest_tokens(token_table(teacher), tokens.neighbours, self.data.token_ids.special)
        for change in self.token_changes:
            change.close = self.close_tokens

    def teacher_batches(self, fit: TeacherTrainConfig) -> tuple[Any, Any]:
        """The training and validation batches a teacher's fit learns from: the run's labelled ones, or those of
        the data its ``data`` names (:func:`teacher_data`), which must give the student's inputs and targets."""
        if fit.data is None:
            return self.labelled, self.val
        cfg = teacher_data(self.recipe.data, fit)
        data = recipe_data(cfg, self.recipe.seed)
        if (data.input_shape, data.num_classes, data.task) != (
            self.data.input_shape,
            self.data.num_classes,
            self.data.task,
        ):
            raise KdforgeError(
                f"the teacher's own data ({data.describe()}) must give the same inputs and targets as the run's "
                f"({self.data.describe()}): the teacher reads the student's batches"
            )
        inherited = cfg.split_file is not None and "split_file" not in fit.data
        split = (
            f"; split by the run's split_file {cfg.split_file} (give its data a split_file of its own to change that)"
        )
        self.console.print(
            f"teacher: learns from its own data: {data.describe()}{split if inherited else ''}", markup=False
        )
        return self.training_batches(data, cfg), self.batches(data.val, cfg.eval_batch_size)

    def callbacks(self) -> list[Callback]:
        """Fresh loggers for one training stage, and the run's trackers (made on first use,
        on rank 0, and closed with the session)."""
        if self.trackers is None:
            self.trackers = build_trackers(self.recipe, self.run_dir) if distributed.is_main() else []
        callbacks: list[Callback] = [
            JsonlLogger(self.run_dir / "metrics.jsonl", self.recipe.log.every_steps),
            *self.trackers,
        ]
        if self.recipe.log.progress:
            callbacks.append(ConsoleProgress(self.console))
        return callbacks + self.extra_callbacks

    def track(self, batches: Any, description: str, total: int | None = None) -> Any:
        """``batches`` (``total`` of them, default ``len(batches)``) with a transient progress bar (when
        ``log.progress``): for evaluations."""
        if not self.recipe.log.progress:
            return batches
        return rich.progress.track(
            batches,
            description=description,
            total=len(batches) if total is None else total,
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *error: Any) -> None:
        for tracker in self.trackers or []:
            tracker.close()
        for made in self.made:
            made.close()

    def evaluate(self, model: Any, batches: Any, description: str) -> dict[str, float]:
        """The task's metrics of ``model`` over ``batches``, with a progress bar."""
        return evaluate(model, self.track(batches, description), self.autocast(), self.data.task)

    @property
    def teacher_config(self) -> TeacherConfig:
        """The recipe's teacher section (asked for only where a recipe has one)."""
        return required(self.recipe.teacher, "the recipe's teacher section")

    def teacher_entry(self, teacher: Teacher | CachedTeacher, info: dict[str, Any]) -> dict[str, Any]:
        if isinstance(teacher, CachedTeacher):  # measured when the cache was written
            return {**teacher.manifest["teacher"], "cache": str(teacher.path)}
        module = teacher.module
        test: dict[str, float] = {}
        val: dict[str, float] = {}
        if not getattr(module, "own_tokens", False):  # one that predicts its own tokens has no score on the data's
            test = self.evaluate(teacher, self.test, "teacher: test split")
            val = info.get("val_best") or self.evaluate(teacher, self.val, "teacher: validation split")
        extra = {k: v for k, v in info.items() if k not in ("history", "val_best")}
        spec = getattr(module, "kdforge_spec", None)
        name = extra.pop("model", None) or (spec["name"] if spec else type(module).__name__)
        with getattr(
            module, "forgetting", contextlib.nullcontext
        )():  # a teacher that remembers its outputs: time real encoding, not recall
            return self.entry(
                teacher, name, test, val, source=self.teacher_config.source, **extra
            )  # latency with its input adapter

    def entry(
        self, model: torch.nn.Module, name: str, test: dict[str, float], val_best: dict[str, float], **extra: Any
    ) -> dict[str, Any]:
        """One row of results.json: what the model is, how good, how big, how fast."""
        return {
            "model": name,
            "params": count_params(model),
            "test": test,
            "val_best": val_best,
            "latency_ms": latency_ms(model, self.example),
            **extra,
        }

    def acquire_teacher(self) -> tuple[Teacher | CachedTeacher, dict[str, Any]]:
        """The recipe's teacher: its stored outputs when it has a ``teacher.cache``, else :meth:`live_teacher`."""
        cfg = self.teacher_config
        if cfg.cache:
            augment = self.recipe.data.augment
            if augment.randaugment is not None or augment.mixes or augment.tokens is not None:
                raise KdforgeError(
                    "RandAugment, mixup, CutMix and token changes draw new inputs every step, but teacher.cache holds "
                    "the teacher's "
                    "outputs on fixed views only; "
                    "train with the online teacher (drop teacher.cache) or augment with data.augment.shift/noise views"
                )
            teacher = CachedTeacher(cfg.cache, self)
            self.console.print(f"teacher: {teacher.describe()}", markup=False)
            self.train.indexed = True  # the cache is looked up by sample index...
            # ...and shows the cached views
            self.train.fixed_views = fixed_views(self, teacher.manifest["views"])
            self.train.cached_views = teacher.manifest["views"]
            return teacher, {}
        live, info = self.live_teacher()
        self.learn_close_tokens(live.module)
        return live, info

    def index_training_batches(self, readers: list[str]) -> None:
        """Training batches carry their sample indices, which ``readers`` (terms) look their memory up by."""
        try:
            self.train.indexed = True
        except KdforgeError as error:
            raise KdforgeError(
                f"{', '.join(readers)} keep a memory per training sample, looked up by its index, which a streamed "
                "split does not have: read the data without streaming"
            ) from error

    def live_teacher(self) -> tuple[Teacher, dict[str, Any]]:
        """The frozen teacher of the recipe (an ``ema`` teacher or member is the student's architecture, whose
        weights follow the student once it trains), and what its source says of it."""
        cfg = self.teacher_config
        if cfg.dtype is not None:
            check_dtype(cfg.dtype, self.device, "teacher.dtype")
        module, info = TEACHER_SOURCES.get(cfg.source)(self, cfg, self.run_dir / "teacher")
        if cfg.shard:  # results.json says over how many processes it was spread
            info = {**info, "sharded_over": distributed.world_size()}
        return self.wrap_teacher(module), info

    def wrap_teacher(self, module: torch.nn.Module) -> Teacher:
        """The recipe's teacher module, frozen (or co-trained: ``trainable``), with its input adapter."""
        cfg = self.teacher_config
        ema_part, ema_decay = cfg.ema_part or ("", None)
        dtype = None if cfg.dtype is None else getattr(torch, cfg.dtype)
        if not cfg.shard:
            module = module.to(self.device).to(memory_format=self.memory_format)
            module = module if dtype is None else module.to(dtype)
        elif not distributed.sharded(module):  # loaded whole: each process moves its shard alone to the device
            distributed.shard_teacher(module if dtype is None else module.to(dtype), self.device)
        return Teacher(
            module,
            dtype=dtype,
            input_adapter=self.adapter(cfg, module),
            trainable=cfg.trainable,
            lr=cfg.lr,
            ce_weight=1.0 if cfg.ce_weight is None else cfg.ce_weight,
            task=self.task_term() if cfg.trainable else None,
            ema_part=ema_part,
            ema_decay=ema_decay,
        )

    def adapter(self, cfg: Any, module: torch.nn.Module | None = None) -> InputAdapter | None:
        """The teacher's input adapter: from ``teacher.adapt``, else from what the teacher says
        it expects (a timm model's pretrained config: size, channels, mean, std)."""
        a = cfg.adapt if cfg.adapt is not None else expected_input(module)
        if a is None:
            return None
        try:
            made = InputAdapter(
                self.data.input_shape, self.data.scaling, size=a.size, channels=a.channels, mean=a.mean, std=a.std
            )
        except KdforgeError as err:
            raise KdforgeError(f"{err} ({'from teacher.adapt' if cfg.adapt is not None else DEFAULT_ADAPT})") from None
        return made.to(self.device)

    def task_term(self, label_smoothing: float | None = None) -> LossTerm:
        """The plain supervised loss of this data: ``ce`` for classes, ``reg_task`` for values
        (complex_mse for complex targets), with the recipe's options for that term if it has
        one; ``label_smoothing`` replaces the recipe's (a trained teacher's own setting)."""
        name = "reg_task" if self.data.task == "regression" else "ce"
        given = next((c.options for c in self.recipe.losses if c.name == name), None)
        options: dict[str, Any] = (
            dict(given)
            if given is not None
            else ({"kind": "complex_mse"} if self.data.targets_example.is_complex() else {})
        )
        if label_smoothing is not None and name == "ce":
            options["label_smoothing"] = label_smoothing
        return build_loss({"name": name, **options})

    def fit_teacher(
        self,
        module: torch.nn.Module,
        fit: Any,
        out_dir: Path,
        head: torch.nn.Module | None = None,
        adapter: torch.nn.Module | None = None,
    ) -> dict[str, Any]:
        """Fit a teacher on the labels (the task's own loss; ``fit``: epochs, lr, label
        smoothing), selected on validation, resumable from ``out_dir``. With ``head``, only
        that submodule trains; ``adapter`` prepares the batches as the teacher expects."""
        recipe = self.recipe
        if head is not None:  # head-only fine-tuning: everything else stays as loaded
            module.requires_grad_(False)
            head.requires_grad_(True)
        trainee = torch.nn.Sequential(adapter, module) if adapter is not None else module  # trains `module` in place
        distiller = Distiller(
            trainee,
            None,
            [self.task_term(fit.label_smoothing)],
            self.example,
            per_token=self.data.task in PER_TOKEN_TASKS,
        )
        optim = teacher_optim(recipe.optim, fit)
        train_cfg = recipe.train.model_copy(
            update={"epochs": fit.epochs, "max_steps": None, "fsdp": False, "ema_decay": None}
        )  # student-only settings
        labelled, val = self.teacher_batches(fit)
        trainer = Trainer(
            distiller,
            optim,
            train_cfg,
            steps_per_epoch=len(labelled),
            checkpoint_dir=out_dir,
            callbacks=self.callbacks(),
            stage="teacher",
            task=self.data.task,
            grad_stats_every=recipe.log.grad_stats_every,
            val_terms=recipe.log.val_terms,
        )
        result = trainer.fit(labelled, val, resume=True)
        if result.interrupted:
            raise RunInterrupted(self.run_dir, "teacher training")
        best = trainer.load_best()
        module.requires_grad_(True)
        return {
            "epochs": fit.epochs,
            "best_epoch": best["epoch"],
            # on its own data, its best validation is on a split of its own: the run scores it on the run's
            **({"val_best": best["val"]} if fit.data is None else {"own_data": fit.data, "val_own": best["val"]}),
            "history": result.history,
            "seconds": result.seconds,
        }

    def build_student(self, adapted: bool = True) -> torch.nn.Module:
        """The recipe's student, untrained, on the device; with its adapters (``student.peft``) unless not
        ``adapted``."""
        cfg = self.recipe.student.model
        student = build_model(
            cfg.name,
            input_shape=self.data.input_shape,
            num_classes=self.data.num_classes,
            **student_options(self.recipe),
        ).to(self.device)
        peft = self.recipe.student.peft
        return adapt(student, peft) if adapted and peft is not None else student

    def batch_rewrite(self, student: torch.nn.Module, teacher: Teacher | CachedTeacher | None) -> Any | None:
        """The one family change to distillation batches this recipe asks for (``train.on_policy``), or None."""
        found = [f for family in families() if (f := family.batch_rewrite(self, student, teacher)) is not None]
        if len(found) > 1:
            raise KdforgeError("more than one family rewrites the training batches; only one may")
        return found[0] if found else None

    def train_student(
        self, stage: str, terms: list[LossTerm], checkpoint_dir: Path, teacher: Teacher | CachedTeacher | None = None
    ) -> tuple[torch.nn.Module, dict[str, Any], list[dict[str, Any]]]:
        """Build the student (same seed, same initial weights in every stage) and fit it: (the student, its
        results.json entry, its history). An EMA teacher (or ensemble member) starts from this student's weights,
        and follows it as it trains."""
        torch.manual_seed(self.recipe.seed)
        student = self.build_student(adapted=False).to(memory_format=self.memory_format)
        started_from = (
            start_from(student, self.recipe.student.init_from) if self.recipe.student.init_from else None
        )  # the baseline too: both go on from there
        transfer = (
            self.init_from_teacher(student, teacher, checkpoint_dir)
            if stage == "distill" and teacher is not None and self.recipe.student.init_from_teacher
            else None
        )
        if self.recipe.student.peft is not None:  # on the weights it starts from: those stay, the adapters train
            adapt(student, self.recipe.student.peft)
        if isinstance(teacher, Teacher) and teacher.ema_decay is not None:
            teacher.start_ema(student)
        distiller = Distiller(
            compiled(student) if self.recipe.train.compile else student,
            teacher,
            terms,
            self.example,
            per_token=self.data.task in PER_TOKEN_TASKS,
            train_samples=len(self.data.train),
            one_head_pass=self.recipe.optim.name != "dot",
            compile_chunks=self.recipe.train.compile,
            pad=self.data.train.pad if isinstance(self.data.train, Split) else None,
            unlabelled=stage == "distill" and self.data.labelled is not None,
        )
        if distiller.reads_index:
            self.index_training_batches([t.name for t in terms if t.reads_index])
        curriculum = Curriculum.from_recipe(self.recipe) if stage == "distill" else None  # the baseline trains plainly
        augment = self.recipe.data.augment
        mixer = Mixer(augment, self.data.num_classes) if augment.mixes else None
        rewrite = self.batch_rewrite(student, teacher) if stage == "distill" else None
        batches = self.train if stage == "distill" else self.labelled
        train = self.baseline_train() if stage == "baseline" else self.recipe.train
        trainer = Trainer(
            distiller,
            self.recipe.optim,
            train,
            steps_per_epoch=len(batches),
            checkpoint_dir=checkpoint_dir,
            callbacks=[*([EpochTest(self.test)] if self.recipe.log.epoch_test else []), *self.callbacks()],
            stage=stage,
            curriculum=curriculum,
            mixer=mixer,
            rewrite=rewrite,
            student_view=self.student_view(),
            task=self.data.task,
            grad_stats_every=self.recipe.log.grad_stats_every,
            steering=steering(self.recipe, student, self.val),
            val_terms=self.recipe.log.val_terms,
        )
        result = trainer.fit(batches, self.val, resume=True)
        if result.interrupted:
            raise RunInterrupted(self.run_dir, stage)
        last = {
            "test_last": trainer.evaluate(self.test),
            "epochs_run": len(result.history),
        }  # the final weights, for reporting only
        if result.stopped_early:
            last["stopped_early"] = True
        best = trainer.load_best()
        if trainer.sharded:  # gather the shards once: testing, timing and export use the whole student
            weights = distributed.gathered(student)
            student = self.build_student().to(memory_format=self.memory_format)
            student.load_state_dict(weights)
        if is_adapted(student):  # the adapters kept apart, then merged: a plain student of its own class
            if stage == "distill" and distributed.is_main():
                save_safetensors(adapter_state(student.state_dict()), self.run_dir / "student_adapter.safetensors")
            student = merge(student)
        for family in families():  # what each family measures on its students
            last.update(family.after_fit(self, stage, student, result.history))
        averaged = {"weights": f"EMA (decay {self.recipe.train.ema_decay})"} if trainer.ema is not None else {}
        if transfer is not None:
            last["init_from_teacher"] = transfer
        if started_from is not None:
            last["init_from"] = started_from
        if train is not self.recipe.train:
            last["steps_as_distilled"] = train.max_steps
        entry = self.entry(
            student,
            self.recipe.student.model.name,
            self.evaluate(student, self.test, f"{stage}: test split"),
            best["val"],
            best_epoch=best["epoch"],
            **({"best_step": best["step"]} if not isinstance(train.val_every, int) else {}),
            **last,
            **averaged,
        )
        return student, entry, result.history

    def baseline_train(self) -> TrainConfig:
        """The student alone's training settings: the recipe's, or (``train.baseline_budget: steps``, when the
        distilled student also learns from unlabelled inputs) a budget of as many optimiser steps as it takes,
        validations as many steps apart, and an early-stopping patience as long in steps (its epochs of the labelled
        data alone are shorter: validated after each, it would be selected among many more validations)."""
        cfg = self.recipe.train
        if cfg.baseline_budget == "epochs" or cfg.max_steps is not None or len(self.train) <= len(self.labelled):
            return cfg
        steps, own_steps = (math.ceil(len(batches) / cfg.accumulate) for batches in (self.train, self.labelled))
        update: dict[str, Any] = {"max_steps": cfg.epochs * steps}
        if isinstance(cfg.val_every, int):  # every N epochs of the distilled student's
            update["val_every"] = StepsConfig(steps=cfg.val_every * steps)
        if cfg.early_stopping is not None:
            patience = cfg.early_stopping.patience * steps / own_steps
            update["early_stopping"] = cfg.early_stopping.model_copy(update={"patience": patience})
        return cfg.model_copy(update=update)

    def init_from_teacher(
        self, student: torch.nn.Module, teacher: Teacher | CachedTeacher, checkpoint_dir: Path
    ) -> dict[str, Any]:
        """``student.init_from_teacher``: copy the matching teacher tensors, then let each family
        teach its own blocks (the TM family fits each TM block to its teacher MLP). Done once: a
        resumed run reads what it did from ``transfer.json``."""
        record = checkpoint_dir / "transfer.json"
        if (checkpoint_dir / "last.pt").exists() and record.exists():  # the checkpoint holds the transferred weights
            return read_json(record, "transfer record")
        report = copy_matching(student, teacher.module)
        self.console.print(f"init_from_teacher: {report.summary()}", markup=False)
        done = report.as_dict()
        for family in families():
            done.update(family.from_teacher(self, student, teacher))
        if distributed.is_main():
            write_json(record, done, indent=1)
        return done
