"""The training loop: fit on train, select on val, checkpoint, resume.

One epoch is the loop in :meth:`Trainer._train_epoch`; one optimiser step is
:meth:`Trainer._step`. Checkpoints (the files: :mod:`kdforge._checkpoints`): ``last.pt``
(everything needed to resume exactly: trainable weights, optimiser, RNG, position in the epoch,
and the best weights so far) at the end of an epoch once ``train.checkpoint_interval`` seconds
have passed since the last write or the start of the fit (every epoch with 0), after the last
epoch, and when stopped; ``best.pt`` (the best trainable weights on validation) when fit ends,
however it ends. Keeping the best weights inside ``last.pt`` costs one file write per save
instead of two, and the two can never disagree.
Ctrl-C asks the loop to stop at the next optimiser step, save ``last.pt`` and return;
a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import operator
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.utils.checkpoint

from kdforge import distributed
from kdforge._checkpoints import CheckpointFiles
from kdforge.callbacks import Callback
from kdforge.config import OptimConfig, TrainConfig
from kdforge.curriculum import Curriculum
from kdforge.data.augment import Mixer
from kdforge.data.bundle import PAD_TARGET, PER_TOKEN_TASKS
from kdforge.distiller import Distiller, StepOutput
from kdforge.ema import ModelEMA
from kdforge.errors import NonFiniteLossError, required
from kdforge.evaluate import evaluate, is_better, score
from kdforge.files import FileWriteError
from kdforge.machine import _rng_state, _set_rng_state, autocast_for, checkpoint_blocks, layer_grad_norms
from kdforge.optim import DistillationOrientedTrainer, build_optimizer, centralize_gradients, lr_factor, student_groups
from kdforge.position import FitResult, _Position
from kdforge.processes import stop_on_interrupt
from kdforge.schedules import Clock, ScheduleConfig, schedule_value
from kdforge.taps import unwrap

PER_STEP_HOOKS = ("on_before_optimizer_step", "on_step_end")  # the hooks called at every optimiser step
FINITE_EVERY = 32  # optimiser steps between checks that the losses are finite (each waits for the device)


class Trainer:
    """Fits a :class:`Distiller`'s trainable parts; checkpoints into ``checkpoint_dir``."""

    def __init__(
        self,
        distiller: Distiller,
        optim: OptimConfig,
        train: TrainConfig,
        *,
        steps_per_epoch: int,
        checkpoint_dir: str | Path,
        callbacks: Sequence[Callback] = (),
        stage: str = "distill",
        curriculum: Curriculum | None = None,
        mixer: Mixer | None = None,
        rewrite: Callable[[torch.Tensor, torch.Tensor, Clock], tuple[torch.Tensor, torch.Tensor]] | None = None,
        student_view: Callable[[torch.Tensor], torch.Tensor] | None = None,
        grad_stats_every: int | None = None,
        steering: Callable[[Trainer, torch.nn.Module, int], dict[str, Any]] | None = None,
        task: str | None = None,
        val_terms: bool = False,
    ):
        self.distiller, self.optim_cfg, self.cfg, self.stage, self.curriculum, self.mixer = (
            distiller,
            optim,
            train,
            stage,
            curriculum,
            mixer,
        )
        self.rewrite = rewrite  # a family's change to each training batch (e.g. sequences the student writes)
        self.student_view = student_view  # a change to each batch that the student reads and the teacher does not
        self.task = task  # "embedding" makes evaluations compare similarities with the teacher's (see kdforge.evaluate)
        # may change the student at the end of an epoch (e.g. clause steering); what it returns joins the epoch's
        # record, but "restart_selection": true restarts the choice of the best weights there; its optional
        # restore(trainer, student) re-applies on resume what the weights do not hold
        self.steering = steering
        self.steered_before: dict[str, Any] = {}  # what it changed before the first epoch
        # a cache holds the teacher's outputs on training samples only; a term's per-sample memory is indexed by them
        self.val_terms = val_terms and distiller.cache is None and not distiller.reads_index
        self.device = next(distiller.student.parameters()).device
        self.files = CheckpointFiles(checkpoint_dir)
        self.callbacks = list(callbacks) if distributed.is_main() else []  # only rank 0 logs
        self.hooked = self._per_step_callbacks()
        self.micro_per_epoch = steps_per_epoch
        self.steps_per_epoch = math.ceil(steps_per_epoch / train.accumulate)
        # the length of training, in epochs: train.epochs, or a step budget (the last epoch may end early)
        self.span = train.epochs if train.max_steps is None else train.max_steps / self.steps_per_epoch
        self.epochs = math.ceil(self.span)
        if train.grad_checkpoint:
            checkpoint_blocks(unwrap(distiller.student))
        self.several_ranks = distributed.active()  # several processes (asked once: each step would pay the call)
        self.sharded = train.fsdp and self.several_ranks
        self.unwrapped_params: list[torch.nn.Parameter] = []  # several processes: trainable parts outside DDP / FSDP
        if self.several_ranks:
            if self.sharded:
                distributed.shard(unwrap(distiller.student))  # replaces the parameters: before the optimiser
            else:
                distiller.student = distributed.wrap(distiller.student)
            student = {id(p) for p in distiller.student.parameters()}
            self.unwrapped_params = [p for p in distiller.trainable_parameters() if id(p) not in student]
        main, *special = distiller.param_groups()
        self.optimizer = build_optimizer([*student_groups(distiller.student, main["params"], optim), *special], optim)
        self.distill_terms = {
            t.name for t in distiller.terms if t.uses_teacher
        }  # DOT's distillation gradient; the others are the task's
        self.ema = (
            ModelEMA(unwrap(distiller.student), train.ema_decay, train.ema_warmup)
            if train.ema_decay is not None
            else None
        )
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.autocast = lambda: autocast_for(train.amp, self.device)
        self.casting = not isinstance(self.autocast(), contextlib.nullcontext)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaling = train.amp == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.scaling)
        self.pos = _Position()
        self.best_state: dict[str, Any] | None = None  # a copy of the best weights, with epoch and val
        self.loss_names: list[str] = []  # "loss", each part, each logged scalar: set by the first step
        # their values at each micro-batch since the last check, with its weight in its step (1 / micro-batches):
        # summed into the epoch's sums only at the check, not every step (see _check_finite)
        self.unsummed = _StepLosses()
        self.last_step: list[tuple[list[torch.Tensor], float]] = []  # the last step's
        self.step_lr = optim.lr
        self.grad_stats_every = grad_stats_every
        self.grad_norms: dict[str, float] = {}  # per-layer gradient norms of the last step, when measured
        self.should_stop = False  # set by Ctrl-C or a callback: stop at the next optimiser step
        self.finite_until = 0  # the losses were finite up to this step

    # ------------------------------------------------------------------ loop

    def fit(self, train_batches: Any, val_batches: Any, resume: bool = False) -> FitResult:
        if resume and self.files.last.exists():
            self._load_last()
        self.finite_until = self.pos.step
        self.files.start()
        self.all_train, self.train_batches, self.val_batches = train_batches, train_batches, val_batches
        if self.steering is not None and self.pos.step == 0 and self.pos.epoch == 0:
            self.steered_before = self.steering(self, unwrap(self.distiller.student), 0)
        elif resume and (restore := getattr(self.steering, "restore", None)) is not None:
            restore(self, unwrap(self.distiller.student))  # what it changed that the weights do not hold
        if self.curriculum is not None:
            self._enter_stage()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        self.hooked = self._per_step_callbacks()  # again: callbacks may have been added, or started, since
        try:
            with stop_on_interrupt(self):
                while self.pos.epoch < self.epochs and not (self.should_stop or self.pos.stopped_early):
                    started = time.perf_counter()
                    self._train_epoch(self.train_batches)
                    self.pos.seconds += time.perf_counter() - started
                    if not self.should_stop:
                        self._end_epoch(val_batches)
            if self.should_stop:
                self._check_finite()
                self.save_last()
        except BaseException as error:
            for cb in self.callbacks:
                cb.on_exception(self, error)
            with contextlib.suppress(FileWriteError):  # keep what we have; the first error is the one to report
                self._save_best()
            raise
        self._save_best()
        result = FitResult(
            self.pos.best_epoch,
            self.pos.best_val or {},
            self.pos.history,
            self.should_stop,
            self.pos.seconds,
            self.pos.stopped_early,
        )
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    def _per_step_callbacks(self) -> dict[str, list[Callback]]:
        """The callbacks with work to do at each step, by hook: calling the others would only cost time."""
        return {hook: [cb for cb in self.callbacks if cb.has_work(hook)] for hook in PER_STEP_HOOKS}

    def _train_epoch(self, batches: Any) -> None:
        self.distiller.train()
        group: list[tuple[torch.Tensor, ...]] = []
        for batch in batches.epoch(self.pos.epoch, start=self.pos.batch):
            group.append(batch)
            self.pos.batch += 1
            if len(group) == self.cfg.accumulate or self.pos.batch == self.micro_per_epoch:
                self._step(group)
                group = []
                if self._validates_step():
                    self._validate_within_epoch(self.val_batches)
                if self.should_stop or self.pos.stopped_early or self.pos.step == self.cfg.max_steps:
                    return

    def _step(self, group: list[tuple[torch.Tensor, ...]]) -> None:
        """One optimiser step over ``group`` micro-batches (gradient accumulation)."""
        start = self.pos.epoch + (self.pos.batch - len(group)) / self.micro_per_epoch  # in epochs
        clock = self.clock(start)
        step: list[tuple[list[torch.Tensor], float]] = []  # each micro-batch's loss values, and its weight
        for x, y, *index in group:  # (inputs, targets) or (inputs, targets, sample indices)
            if self.rewrite is not None:
                x, y = self.rewrite(x, y, clock)
            if self.mixer is not None:  # the teacher sees the mixed batch too: it runs inside the Distiller
                x, y = self.mixer(x, y, clock)
            seen: dict[str, torch.Tensor] = {}
            if self.student_view is not None:  # the teacher reads the batch as it is
                seen["teacher_inputs"], x = x, self.student_view(x)
            if self.casting:
                with self.autocast():
                    out = self.distiller(x, y, clock, *index, **seen)
            else:
                out = self.distiller(x, y, clock, *index, **seen)
            if self.mixer is not None:
                out.logs.update(
                    {k: torch.tensor(v, device=out.loss.device) for k, v in self.mixer.scheduled(clock).items()}
                )
            self.loss_names = self.loss_names or ["loss", *out.parts, *out.logs]
            weight = 1.0 / len(group)
            # detached: the step's graph (and what its nodes hold) must not outlive the step
            step.append(([t.detach() for t in (out.loss, *out.parts.values(), *out.logs.values())], weight))
            if self.several_ranks:  # DDP averages over ranks: weight this rank by its share of the global batch
                # (of its real tokens, for language models: their losses are means over those)
                local = int((y != PAD_TARGET).sum()) if self.task in PER_TOKEN_TASKS else len(y)
                weight *= distributed.batch_share(local) * distributed.world_size()
            self._backward(out, weight)
        if self.several_ranks:
            distributed.average_gradients(self.unwrapped_params)
        for values, weight in step:
            self.unsummed.add(values, weight)
        self.last_step = step
        factor = lr_factor(
            start,
            self.pos.epoch + self.pos.batch / self.micro_per_epoch,
            self.span,
            self.optim_cfg,
            self.pos.step,
            self.steps_per_epoch,
        )
        for param_group, base in zip(self.optimizer.param_groups, self.base_lrs):
            param_group["lr"] = base * factor
        self.step_lr = self.current_lr()
        if self.scaling:
            self.scaler.unscale_(self.optimizer)  # from here on the true gradients
        due = self.grad_stats_every is not None and self.pos.step % self.grad_stats_every == 0
        self.grad_norms = layer_grad_norms(self.distiller.named_trainable_parameters()) if due else {}
        for cb in self.hooked["on_before_optimizer_step"]:
            cb.on_before_optimizer_step(self)
        if self.optim_cfg.grad_centralization:
            centralize_gradients(self.distiller.trainable_parameters())
        if self.cfg.grad_clip is not None:
            distributed.clip_grad_norm(self.distiller.trainable_parameters(), self.cfg.grad_clip)
        if self.scaling:
            self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.distiller.after_step()
        if self.ema is not None:
            self.ema.update(unwrap(self.distiller.student), self.pos.step)
        for param_group in self.optimizer.param_groups:  # zero_grad(set_to_none=True) without its profiler record:
            for p in param_group["params"]:  # ~15 µs a step, which counts on a small model
                p.grad = None
        self.pos.step += 1
        if self.pos.step % FINITE_EVERY == 0:
            self._check_finite()
        if self.hooked["on_step_end"]:
            samples = sum(len(batch[1]) for batch in group)
            for cb in self.hooked["on_step_end"]:
                cb.on_step_end(self, samples)

    def _backward(self, out: StepOutput, weight: float) -> None:
        """Gradients of one micro-batch's loss. DOT keeps two: the distillation terms' (the
        terms that read the teacher) are moved aside before the task terms' arrive."""
        if not isinstance(self.optimizer, DistillationOrientedTrainer):
            loss = out.loss * weight if weight != 1.0 else out.loss
            (self.scaler.scale(loss) if self.scaling else loss).backward()
            return
        distill = [value for name, value in out.weighted.items() if name in self.distill_terms]
        task = [value for name, value in out.weighted.items() if name not in self.distill_terms]
        if distill:
            (functools.reduce(operator.add, distill) * weight).backward(retain_graph=bool(task))
            distributed.average_gradients(self.unwrapped_params)
            self.optimizer.stash_distillation_grads()
        if task:
            (functools.reduce(operator.add, task) * weight).backward()

    def _check_finite(self) -> None:
        """Stop on a NaN/inf loss since the last check, naming the terms that went bad. Checked every
        ``FINITE_EVERY`` steps and before anything is validated or saved, not every step: a check waits for the
        device (a NaN stays NaN, so the epoch's running sums show any step that went bad). The steps' losses since
        the last check join the epoch's sums here: one stack for them all instead of a few small operations a
        step."""
        if self.finite_until == self.pos.step and not self.unsummed:  # no step since the last check
            return
        sums = self._sum_steps()
        values = dict(zip(self.loss_names, sums.tolist())) if sums is not None else {}
        if all(map(math.isfinite, values.values())):
            self.finite_until = self.pos.step
            return
        bad = {name: v for name, v in values.items() if name != "loss" and not math.isfinite(v)}
        steps = f"step {self.pos.step}" if self.pos.step == self.finite_until + 1 else (
            f"between steps {self.finite_until + 1} and {self.pos.step}")  # fmt: skip
        raise NonFiniteLossError(
            f"[{self.stage}] loss term {', '.join(map(repr, bad)) or 'sum'} became "
            f"{', '.join(map(str, bad.values())) or values['loss']} in epoch {self.pos.epoch + 1}, {steps}; "
            f"{self.files.kept()}. Lower optim.lr, set train.grad_clip, or check that term's inputs."
        )

    def _end_epoch(self, val_batches: Any) -> None:
        self._check_finite()  # before the weights are validated, selected or saved
        # on every rank, before validation and checkpoints, so that both see what it changed
        steered = (
            self.steering(self, unwrap(self.distiller.student), self.pos.epoch + 1) if self.steering is not None else {}
        )
        if (
            self.pos.epoch == 0
        ):  # what was applied before training (auto_clause at epoch 0) joins the first epoch's record
            steered = {**self.steered_before, **steered}
        if steered.pop("restart_selection", False):  # the student now computes something else: select anew
            self.pos.best_epoch, self.pos.best_val, self.best_state = -1, None, None
            self.pos.watched, self.pos.stale = None, 0.0
        val = self._validate(val_batches, at_epoch_end=True) if self._validates_epoch_end() else None
        epoch_sums = required(self.pos.sums, "the epoch's step losses")
        sums = distributed.all_reduce_sum(epoch_sums.clone()) / distributed.world_size()  # the ranks' mean
        train = dict(
            zip(self.loss_names, (sums / math.ceil(self.pos.batch / self.cfg.accumulate)).tolist())
        )  # the steps this epoch took
        finished_stage = (
            self._stage_key(self.pos.epoch + 1 - 1e-9) if self.cfg.stage_checkpoints else None
        )  # what this epoch trained with, at its very end
        within = self.pos.validations  # by steps (val_every: {steps: N}): this epoch's validations
        if val is None and within:
            val = within[-1]["val"]  # the epoch's latest score: what curricula and epoch lines read
        record = {
            "epoch": self.pos.epoch + 1,
            "curriculum_stage": self.pos.stage,
            "train": train,
            **({"val": val} if val is not None else {}),
            **({"validations": within} if within else {}),
            "lr": self.current_lr(),
            "seconds": self.pos.seconds,
            **steered,
        }
        if self.val_terms and val is not None:
            record["val_terms"] = self.distiller.held_out_terms(val_batches, self.clock(self.pos.epoch), self.autocast)
        self.pos.history.append(record)
        self.pos.epoch, self.pos.batch, self.pos.sums, self.pos.validations = self.pos.epoch + 1, 0, None, []
        if self.pos.stopped_early:
            record["stopped_early"] = True
        if self.curriculum is not None and self.curriculum.finished(
            self.pos.stage, self.pos.history[self.pos.stage_start :]
        ):
            self.pos.stage, self.pos.stage_start = self.pos.stage + 1, self.pos.epoch
            self._enter_stage()
        if self.cfg.stage_checkpoints and (
            self.pos.epoch == self.epochs or self._stage_key(self.pos.epoch) != finished_stage
        ):
            self._save_snapshot(record)
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)
        due = self.files.due(self.cfg.checkpoint_interval)
        if (
            self.pos.epoch == self.epochs or self.pos.stopped_early or distributed.broadcast(due)
        ):  # rank 0's clock decides: saving may be collective
            self.save_last()

    def _stage_key(self, position: float) -> tuple[float, ...]:
        """What makes a stage at ``position`` (in epochs): the curriculum stage, and the value
        of every loss weight or temperature schedule held in ``stages``."""
        clock = self.clock(position)
        stepped = [
            spec
            for term in self.distiller.loss_terms
            for spec in term.scheduled()
            if isinstance(spec, ScheduleConfig) and spec.stages is not None
        ]
        return (self.pos.stage, *(schedule_value(spec, clock) for spec in stepped))

    def _save_snapshot(self, record: dict[str, Any]) -> None:
        """``stages/stage_N`` (.safetensors + .json): the student as a stage ends."""
        self.pos.snapshots += 1
        if distributed.is_main() and not self.sharded:
            model = self.ema.module if self.ema is not None else unwrap(self.distiller.student)
            self.files.write_stage(model, self.pos.snapshots, {"epoch": record["epoch"], "val": record.get("val")})

    def _validates_epoch_end(self) -> bool:
        """Whether this epoch's end is validated: every ``val_every`` epochs, or by steps only when training
        ends (and its last step was not just validated)."""
        every = self.cfg.val_every
        last = self._ends() or self.pos.stopped_early
        if isinstance(every, int):
            return last or (self.pos.epoch + 1) % every == 0
        return last and self.pos.validated_step != self.pos.step

    def _validates_step(self) -> bool:
        """Whether to validate after this step (``val_every: {steps: N}``); the last step is validated with
        the epoch's end."""
        every = self.cfg.val_every
        if isinstance(every, int) or self.pos.step % every.steps:
            return False
        ends_training = self.pos.step == self.cfg.max_steps or (
            self.pos.epoch + 1 == self.epochs and self.pos.batch == self.micro_per_epoch
        )
        return not ends_training

    def _validate(self, val_batches: Any, at_epoch_end: bool) -> dict[str, float]:
        """Validate the student now; the best weights so far and early stopping follow the score."""
        self._check_finite()  # never select weights that went bad
        val = self.evaluate(val_batches)
        if is_better(val, self.pos.best_val):
            self.pos.best_epoch, self.pos.best_val = self.pos.epoch + 1, val
            self.best_state = {
                **_cloned(self.weights()),
                "epoch": self.pos.epoch + 1,
                "step": self.pos.step,
                "val": val,
            }
        position = self.pos.epoch + self.pos.batch / self.micro_per_epoch  # in epochs
        self._watch(val, position - self.pos.validated_at, more_to_come=not at_epoch_end or not self._ends())
        self.pos.validated_at, self.pos.validated_step = position, self.pos.step
        if not isinstance(self.cfg.val_every, int):  # by steps: every validation is kept with its step
            self.pos.validations.append({"epoch": round(position, 4), "step": self.pos.step, "val": val})
        return val

    def _ends(self) -> bool:
        """Whether training ends with this epoch."""
        return self.pos.epoch + 1 == self.epochs or self.pos.step == self.cfg.max_steps

    def _validate_within_epoch(self, val_batches: Any) -> None:
        """A validation between epoch ends (``val_every: {steps: N}``): kept in the epoch's record and told to
        the callbacks as it happens."""
        self._validate(val_batches, at_epoch_end=False)
        for cb in self.callbacks:
            cb.on_validation(self, self.pos.validations[-1])

    def _watch(self, val: dict[str, float], since: float, more_to_come: bool) -> None:
        """Early stopping on the watched metric of ``val``, ``since`` epochs after the last validation."""
        rule = self.cfg.early_stopping
        if rule is not None:  # higher is better (a regression's score is its PSNR)
            self.pos.watch(score(val) if rule.metric == "accuracy" else -val[rule.metric], since, rule, more_to_come)

    def evaluate(self, batches: Any) -> dict[str, float]:
        """Metrics of the student (its moving average with ``ema_decay``) on ``batches``."""
        return evaluate(
            self.ema if self.ema is not None else self.distiller.student, batches, self.autocast(), self.task
        )

    def weights(self) -> dict[str, Any]:
        """What training changes (see :meth:`Distiller.trainable_state_dict`), and the EMA."""
        state = self.distiller.trainable_state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def clock(self, position: float) -> Clock:
        """Where training is, for schedules; ``position`` in (fractional) epochs."""
        stages = len(self.curriculum) if self.curriculum is not None else 1
        return Clock(self.pos.step, self.pos.epoch, self.epochs, min(1.0, position / self.span), self.pos.stage, stages)

    def _enter_stage(self) -> None:
        """Apply the current curriculum stage: its weights, temperatures and training subset."""
        curriculum = required(self.curriculum, "a curriculum")
        self.train_batches = curriculum.enter(self.pos.stage, self, self.all_train)
        self.micro_per_epoch = len(self.train_batches)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / self.cfg.accumulate)

    def losses(self) -> dict[str, float]:
        """The last optimiser step's loss and parts, by name (synchronises with the device)."""
        return dict(zip(self.loss_names, weighted_sum(self.last_step).tolist())) if self.last_step else {}

    def _sum_steps(self) -> torch.Tensor | None:
        """The epoch's sums of the step losses, with the steps not yet summed added."""
        if (total := self.unsummed.take_sum()) is not None:
            self.pos.sums = total if self.pos.sums is None else self.pos.sums + total
        return self.pos.sums

    def current_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------------ checkpoints

    def save_last(self) -> None:
        if not (distributed.is_main() or self.sharded):  # a sharded state is gathered by every rank
            return
        state = {
            "trainable": self.weights(),
            "optimizer": distributed.optimizer_state(self.distiller, self.optimizer, self.sharded),
            "scaler": self.scaler.state_dict(),
            # the history as one JSON string: pickling hundreds of small dicts costs ~1 µs per object
            "position": {**vars(self.pos), "history": json.dumps(self.pos.history)},
            "best": self.best_state,
            "curriculum": self.curriculum.state_dict() if self.curriculum is not None else None,
            "rng": _rng_state(),
        }
        if not distributed.is_main():
            return
        for cb in self.callbacks:
            cb.on_checkpoint(self)
        self.files.write_last(state)

    def _save_best(self) -> None:
        if self.best_state is not None and distributed.is_main():
            self.files.write_best(self.best_state)

    def _load_last(self) -> None:
        state = self.files.read_last(self.device)
        with self.files.restoring():
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        self.distiller.load_trainable_state_dict(state["trainable"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["trainable"]["ema"])
        distributed.load_optimizer_state(self.distiller, self.optimizer, state["optimizer"], self.sharded)
        self.scaler.load_state_dict(state["scaler"])
        self.pos = _Position(**{**state["position"], "history": json.loads(state["position"]["history"])})
        self.best_state = state["best"]
        if self.curriculum is not None:
            self.curriculum.load_state_dict(state["curriculum"])
        _set_rng_state(state["rng"])

    def load_best(self) -> dict[str, Any]:
        """Put the best validation weights into the student (its EMA's, with ``ema_decay``:
        what was validated is what is tested and exported); returns the checkpoint's info."""
        state = self.best_state if self.best_state is not None else self.files.read_best(self.device)
        self.distiller.load_trainable_state_dict(state)
        if "ema" in state:
            unwrap(self.distiller.student).load_state_dict(state["ema"])
        # a best.pt written before steps were recorded has none
        return {"epoch": state["epoch"], "step": state.get("step"), "val": state["val"]}


def _cloned(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of a nested dict of tensors (state dicts), detached from training."""
    return {k: _cloned(v) if isinstance(v, dict) else v.detach().clone() for k, v in state.items()}


class _StepLosses:
    """Micro-batches' loss values and weights, written into the rows of one buffer as they come and summed at a
    check: no tensor per step is kept alive until then, as each would pin the CPU allocator's heap above that step's
    freed activations (a tiny LM's run peaked 250 MB higher). The sum equals :func:`weighted_sum`'s."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None
        self.weights: list[float] = []

    def __bool__(self) -> bool:
        return bool(self.weights)

    def add(self, values: list[torch.Tensor], weight: float) -> None:
        n = len(self.weights)
        if self.rows is None or n == len(self.rows):  # room for twice as many rows: few allocations, all early
            grown = values[0].new_empty((max(2 * n, FINITE_EVERY), len(values)), dtype=torch.float32)
            if self.rows is not None:
                grown[:n] = self.rows
            self.rows = grown
        torch.stack(values, out=self.rows[n])
        self.weights.append(weight)

    def take_sum(self) -> torch.Tensor | None:
        """Σ weight · values over the rows written since the last call (None when there are none)."""
        if not self.weights:
            return None
        rows, weights = required(self.rows, "the step losses")[: len(self.weights)], self.weights
        self.weights = []
        return rows.new_tensor(weights) @ rows


def weighted_sum(values: list[tuple[list[torch.Tensor], float]]) -> torch.Tensor:
    """Σ weight · losses over micro-batches' (loss values, weight), one float32 vector, in a few operations."""
    stacked = torch.stack([v for losses, _ in values for v in losses]).float().view(len(values), -1)
    return stacked.new_tensor([weight for _, weight in values]) @ stacked
