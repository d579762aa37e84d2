"""Which memory layout a run's image batches and models use: channels-last where a 2-D convolution reads
them (where it pays: ``benchmarks/channels_last.py``), else the batches' own."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from kdforge.config import Recipe
from kdforge.data import DataBundle
from kdforge.errors import KdforgeError
from kdforge.family import student_options
from kdforge.models import build_model


def memory_format(recipe: Recipe, data: DataBundle) -> torch.memory_format:
    """Channels-last for image batches [B, C, H, W] when ``train.channels_last`` says so, or (auto) when the student
    or the teacher convolves them; else the batches' own layout."""
    choice = recipe.train.channels_last
    if len(data.input_shape) != 3 or choice is False:
        return torch.contiguous_format
    if choice is True or convolutional(recipe, data):
        return torch.channels_last
    return torch.contiguous_format


def describe_layout(recipe: Recipe, chosen: torch.memory_format) -> str:
    """The image batches' memory layout and why, for people."""
    if chosen == torch.channels_last:
        why = "as asked" if recipe.train.channels_last is True else "the student or the teacher convolves the images"
        return f"channels-last ({why}; train.channels_last=false keeps the batches' own layout)"
    why = "as asked" if recipe.train.channels_last is False else "no 2-D convolution in the student or the teacher"
    return f"the batches' own (NCHW; {why})"


def convolutional(recipe: Recipe, data: DataBundle) -> bool:
    """Whether the student or the teacher has a 2-D convolution, seen from their architectures alone (built on the
    meta device: no memory, no weights read). A zoo image teacher (timm, torchvision) counts as one."""
    from kdforge.teachers.sources import teacher_architecture

    def has_conv(name: str, options: dict[str, Any]) -> bool:
        try:
            with torch.device("meta"):
                model = build_model(name, input_shape=data.input_shape, num_classes=data.num_classes, **options)
        except Exception:  # an architecture that cannot be built without data: keep the batches' layout
            return False
        return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())

    def teacher_convolves(cfg: Any) -> bool:
        if cfg.source in ("timm", "torchvision"):
            return True
        if cfg.source == "ensemble":
            return any(teacher_convolves(m) for m in cfg.members or [])
        if cfg.source in ("train", "checkpoint"):
            with contextlib.suppress(KdforgeError):  # a plain state dict without its architecture: unknown
                return has_conv(*teacher_architecture(cfg))
        return False

    teacher_conv = recipe.teacher is not None and teacher_convolves(recipe.teacher)
    return has_conv(recipe.student.model.name, student_options(recipe)) or teacher_conv
