"""The frozen, eval-locked teacher."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from kdforge.ema import ema_update
from kdforge.errors import required


class Teacher(nn.Module):
    """Wraps a model so that it cannot learn or change mode (unless made ``trainable``).

    Parameters get ``requires_grad=False``; :meth:`train` always leaves it in eval mode
    (dropout and batch-norm statistics stay fixed even when the Distiller is put in
    training mode); forward runs under ``torch.no_grad()`` (not ``inference_mode``, whose
    tensors cannot be saved for the student's backward pass in every case).
    ``input_adapter`` transforms the student's batch into what the teacher expects (the
    loss terms name the teacher layers they tap; the Distiller hooks them). With ``ema_decay``, the teacher (or its
    submodule
    ``ema_part``, e.g. ``members.1`` of an ensemble) is the moving average of a source model (the
    student): :meth:`update` moves it after each optimiser step; no gradient ever changes it.

    With ``dtype`` (a frozen teacher's weights in bfloat16 or float16), floating inputs are cast to it and its
    output comes back in float32, the students' and the losses' type.

    ``trainable=True`` (opt-in) is online distillation: the teacher trains alongside the
    student, in its own optimiser group (``lr``), on the labels: ``task`` (a loss term such as
    ``reg_task`` for regression data; default cross-entropy), weighted ``ce_weight``; the
    loss terms still see its outputs detached, so the student never pulls it.
    """

    def __init__(
        self,
        module: nn.Module,
        input_adapter: Callable[[torch.Tensor], torch.Tensor] | None = None,
        ema_decay: float | None = None,
        trainable: bool = False,
        lr: float | None = None,
        ce_weight: float = 1.0,
        task: nn.Module | None = None,
        ema_part: str = "",
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.dtype = dtype
        self.trainable, self.lr, self.ce_weight, self.task = trainable, lr, ce_weight, task
        self.module = module.requires_grad_(trainable)
        if not trainable:
            self.module.eval()
        self.input_adapter = input_adapter
        self.ema_decay, self.ema_part = ema_decay, ema_part

    @property
    def evolves(self) -> bool:
        """Whether training changes the teacher (EMA or trainable): then it is checkpointed."""
        return self.trainable or self.ema_decay is not None

    @property
    def evolving(self) -> nn.Module | None:
        """What training changes: the whole teacher when trainable, the EMA part (the teacher,
        or one ensemble member ``ema_part``) when it follows the student, else nothing."""
        if self.trainable:
            return self.module
        return self.module.get_submodule(self.ema_part) if self.ema_decay is not None else None

    def start_ema(self, source: nn.Module) -> None:
        """EMA teachers: start from ``source``'s weights (the student as training begins)."""
        required(self.evolving, "an EMA teacher").load_state_dict(source.state_dict())

    def update(self, source: nn.Module) -> None:
        """EMA teachers: one moving-average step towards ``source``."""
        if self.ema_decay is not None:
            ema_update(required(self.evolving, "an EMA teacher"), source, self.ema_decay)

    def train(self, mode: bool = True) -> Teacher:
        if not self.trainable and not any(m.training for m in self.modules()):
            return self  # frozen and in eval throughout: reading the flags costs a third of setting them again
        return super().train(mode and self.trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with contextlib.nullcontext() if self.trainable else torch.no_grad():
            if self.input_adapter is not None:
                x = self.input_adapter(x)
            if self.dtype is None:
                return self.module(x)
            out = self.module(x.to(self.dtype) if x.is_floating_point() else x)
            return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out
