"""Batches for training and evaluation.

In-memory splits are batched by index slicing on tensors already on the device: for
small datasets a per-sample DataLoader costs ~1.4x more per epoch. Datasets that do not
fit in memory (a ``torch.utils.data.Dataset``) go through a DataLoader with workers.
Both shuffle with a generator seeded by (seed, epoch), so an epoch's order is the same
whether or not the run was resumed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from kdforge.data.bundle import Split

Batch = tuple[torch.Tensor, torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]


def _epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


class TensorBatches:
    """Batches of an in-memory :class:`Split`, moved to ``device`` once; optionally of a
    subset of its samples (``indices``, see :meth:`subset`)."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        transform: Transform | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        self.x, self.y = split.x.to(device, memory_format=memory_format), split.y.to(device)
        self.batch_size, self.shuffle, self.seed, self.transform = batch_size, shuffle, seed, transform
        self.indices: torch.Tensor | None = None
        self.indexed = False  # yield (x, y, sample indices): a cached teacher looks its outputs up by index
        self.fixed_views: Any = None  # FixedViews: augment with per-sample views instead of randomly
        self.shard = (0, 1)  # (rank, world): each rank takes every world-th sample of each global batch

    def subset(self, indices: torch.Tensor | None) -> TensorBatches:
        """The same batches over only ``indices`` of the split (all of it with None)."""
        view = copy.copy(self)
        view.indices = None if indices is None else indices.to(self.x.device)
        return view

    def __len__(self) -> int:
        n = len(self.y) if self.indices is None else len(self.indices)
        return -(-n // self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch``, skipping the first ``start`` (for mid-epoch resume)."""
        n = len(self.y) if self.indices is None else len(self.indices)
        order = _epoch_order(n, self.seed, epoch, self.shuffle).to(self.x.device)
        if self.indices is not None:
            order = self.indices[order]
        for i in range(start * self.batch_size, len(order), self.batch_size):
            rank, world = self.shard
            idx = order[i : i + self.batch_size][rank::world]
            x = self.x[idx]
            if self.fixed_views is not None:
                x = self.fixed_views(x, idx, epoch)
            elif self.transform:
                x = self.transform(x)
            yield (x, self.y[idx], idx) if self.indexed else (x, self.y[idx])

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


class _EpochOrder:
    """A sampler whose order is set before each epoch, so one DataLoader (and its
    persistent workers) serves every epoch."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class DatasetBatches:
    """Batches of a map-style ``Dataset`` through one DataLoader kept for the whole run:
    persistent workers (no restart each epoch), pinned memory on CUDA; same interface as
    TensorBatches."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        transform: Transform | None = None,
        num_workers: int | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        self.dataset, self.batch_size, self.shuffle, self.seed, self.transform = (
            dataset,
            batch_size,
            shuffle,
            seed,
            transform,
        )
        self.memory_format = memory_format
        self.device = torch.device(device)
        workers = default_workers() if num_workers is None else num_workers
        self.sampler = _EpochOrder()
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        self.sampler.order = _epoch_order(len(self.dataset), self.seed, epoch, self.shuffle).tolist()[
            start * self.batch_size :
        ]
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
            yield (self.transform(x) if self.transform else x), y.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


def default_workers() -> int:
    """Leave one core to the training process; at most 4 (enough for small decoding)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def make_loader(
    data: Split | Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    transform: Transform | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> TensorBatches | DatasetBatches:
    """Index-slicing batches for an in-memory :class:`Split`, a DataLoader otherwise.
    ``transform`` (augmentation) is applied to each batch's inputs on the device;
    ``memory_format`` (channels-last) to the inputs as they reach the device."""
    kind = TensorBatches if isinstance(data, Split) else DatasetBatches
    return kind(
        data, batch_size, shuffle=shuffle, seed=seed, device=device, transform=transform, memory_format=memory_format
    )


__all__ = ["TensorBatches", "DatasetBatches", "make_loader", "default_workers"]


def example_inputs(batches: TensorBatches | DatasetBatches, n: int = 2) -> torch.Tensor:
    """The split's first ``n`` inputs, un-augmented (for shape probes)."""
    if isinstance(batches, TensorBatches):
        return batches.x[:n]
    return torch.stack([batches.dataset[i][0] for i in range(n)]).to(batches.device)
