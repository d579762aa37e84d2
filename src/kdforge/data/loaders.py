"""Batches for training and evaluation.

In-memory splits are batched by index slicing on tensors already on the device: for
small datasets a per-sample DataLoader costs ~1.4x more per epoch. Datasets that do not
fit in memory (a ``torch.utils.data.Dataset``) go through a DataLoader with workers.
Both shuffle with a generator seeded by (seed, epoch), so an epoch's order is the same
whether or not the run was resumed.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from kdforge.data.bundle import DatasetSplit, Split, Stream, StreamSplit
from kdforge.errors import KdforgeError

Batch = tuple[torch.Tensor, ...]  # (x, y), or (x, y, sample indices) when indexed
Transform = Callable[[torch.Tensor], torch.Tensor]


def _epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def _rank_batches(order: torch.Tensor, start: int, batch_size: int, shard: tuple[int, int]) -> Iterator[torch.Tensor]:
    """The rank's share of each batch of ``batch_size`` consecutive samples of ``order``, from batch ``start`` on."""
    rank, world = shard
    for i in range(start * batch_size, len(order), batch_size):
        batch = order[i : i + batch_size]
        yield batch[rank::world] if world > 1 else batch


def in_layout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x`` in channels-last when asked; else as it is when it is already dense in either layout (converting
    a channels-last batch back would slow the convolutions that read it), made contiguous otherwise."""
    if memory_format == torch.channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


class Batches:
    """What every batch source shares: the global batch size, the rank's share of each global batch
    (``shard``), and what a batch carries besides (x, y): its sample indices (``indexed``, for a cached
    teacher) and per-sample fixed views in place of random augmentation (``fixed_views``)."""

    def __init__(self, batch_size: int, shuffle: bool, seed: int, transform: Transform | None):
        self.batch_size, self.shuffle, self.seed, self.transform = batch_size, shuffle, seed, transform
        self.indexed = False  # yield (x, y, sample indices): a cached teacher looks its outputs up by index
        self.fixed_views: Any = None  # FixedViews: augment with per-sample views instead of randomly
        # a teacher cache's number of views: a sample read from disk at epoch e gets the random transforms
        # of view e % cached_views, the input the cache's teacher saw (0: new transforms every epoch)
        self.cached_views = 0
        self.shard = (0, 1)  # (rank, world): each rank takes every world-th sample of each global batch

    def _batch_indices(self, n: int, epoch: int, start: int, device: torch.device) -> Iterator[torch.Tensor]:
        """This rank's sample indices of each batch of ``epoch``, from batch ``start`` on."""
        order = _epoch_order(n, self.seed, epoch, self.shuffle).to(device)
        return _rank_batches(order, start, self.batch_size, self.shard)

    def _sample_epoch(self, epoch: int) -> int:
        """The epoch whose random transforms a sample read from disk gets (see ``cached_views``)."""
        return epoch % self.cached_views if self.cached_views else epoch

    def _finish(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> Batch:
        """A batch as the trainer takes it: augmented (or its fixed views), with its indices when asked."""
        if self.fixed_views is not None:
            x = self.fixed_views(x, idx, epoch)
        elif self.transform:
            x = self.transform(x)
        return (x, y, idx) if self.indexed else (x, y)

    def __len__(self) -> int:
        raise NotImplementedError

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)

    def close(self) -> None:
        """Stop the processes that read the batches, if any (the batches are not read after)."""


class TensorBatches(Batches):
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
        super().__init__(batch_size, shuffle, seed, transform)
        self.x, self.y = in_layout(split.x.to(device), memory_format), split.y.to(device)
        self.indices: torch.Tensor | None = None
        # a padded split's row lengths, on the host: each batch's width is known there, with no wait for the device
        self.lengths = None if split.pad is None else (split.x != split.pad).cumsum(1).argmax(1).cpu() + 1
        self.index_device = self.x.device if self.lengths is None else torch.device("cpu")

    def subset(self, indices: torch.Tensor | None) -> TensorBatches:
        """The same batches over only ``indices`` of the split (all of it with None)."""
        view = copy.copy(self)
        view.indices = None if indices is None else indices.to(self.index_device)
        return view

    def __len__(self) -> int:
        n = len(self.y) if self.indices is None else len(self.indices)
        return -(-n // self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch``, skipping the first ``start`` (for mid-epoch resume)."""
        n = len(self.y) if self.indices is None else len(self.indices)
        for idx in self._batch_indices(n, epoch, start, self.index_device):
            if self.indices is not None:
                idx = self.indices[idx]
            if self.lengths is None:
                yield self._finish(self.x[idx], self.y[idx], idx, epoch)
                continue
            width = int(self.lengths[idx].max())
            idx = idx.to(self.x.device, non_blocking=True)
            x, y = self.x[idx, :width], self.y[idx]
            yield self._finish(x, y[:, :width] if y.dim() == 2 and y.shape[1] == self.x.shape[1] else y, idx, epoch)


class _EpochBatches:
    """A batch sampler told before each epoch where its batches come from, so one DataLoader (and
    its persistent workers) serves every epoch. Each sample is asked for as (index, epoch); the
    batches are made as the loader asks for them (memory stays flat in the number of samples)."""

    def __init__(self) -> None:
        self.batches: Callable[[], Iterator[torch.Tensor]] = lambda: iter(())
        self.epoch, self.count = 0, 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return ([(i, self.epoch) for i in idx.tolist()] for idx in self.batches())

    def __len__(self) -> int:
        return self.count


def _seeded(read: Callable[[], Any], seed: int, epoch: int, index: int) -> Any:
    """``read()`` with the random number generator seeded by (seed, epoch, index): a sample's random
    transforms (crops, flips) are the same whichever worker reads it, however many workers there are,
    and after a resume."""
    # the CPU generator is what transforms draw from; torch.manual_seed, which also seeds every
    # accelerator, costs ~100x more per sample
    generator = torch.default_generator
    kept = generator.get_state()
    generator.manual_seed(((seed * 1_000_003 + epoch) * 2_147_483_647 + index) % 2**63)
    try:
        return read()
    finally:  # read in the training process (no workers): its own random stream goes on as it was
        generator.set_state(kept)


class _SeededSamples(Dataset):
    """``dataset[index]`` with its random transforms seeded by (seed, epoch, index) (see :func:`_seeded`)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        return _seeded(lambda: self.dataset[index], self.seed, epoch, index)


class _WorkerBatches(Batches):
    """What the batch sources read by DataLoader workers share: the device the batches go to (pinned
    memory on CUDA), their memory format, what a batch needs once there, and the workers' count."""

    def __init__(
        self,
        batch_size: int,
        shuffle: bool,
        seed: int,
        device: str | torch.device,
        transform: Transform | None,
        num_workers: int | None,
        memory_format: torch.memory_format,
        on_device: Transform | None,
    ):
        super().__init__(batch_size, shuffle, seed, transform)
        self.device, self.memory_format = torch.device(device), memory_format
        self.on_device = on_device  # what a batch needs once on the device (uint8 images -> floats)
        self.workers = default_workers() if num_workers is None else num_workers

    def _loader(self, dataset: Dataset, **options: Any) -> DataLoader:
        return DataLoader(
            dataset,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers > 0 else None,
            **options,
        )

    def close(self) -> None:
        # the loader's workers stop as it is freed: at once here, rather than when the cyclic garbage collector
        # finds it, which waits for each worker in vain (5 s each) before it kills it
        vars(self).pop("loader", None)

    def _arrived(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch from the workers, on the device, as the model takes it."""
        x = x.to(self.device, non_blocking=True)
        x = in_layout(self.on_device(x) if self.on_device else x, self.memory_format)
        return x, y.to(self.device, non_blocking=True)


class DatasetBatches(_WorkerBatches):
    """Batches of a map-style ``Dataset`` through one DataLoader kept for the whole run:
    persistent workers (no restart each epoch), prefetching, pinned memory on CUDA; same interface
    as TensorBatches, and the same batches whatever the number of workers."""

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
        on_device: Transform | None = None,
    ):
        super().__init__(batch_size, shuffle, seed, device, transform, num_workers, memory_format, on_device)
        self.dataset, self.sampler = dataset, _EpochBatches()
        self.loader = self._loader(
            _SeededSamples(dataset, seed), batch_sampler=self.sampler, persistent_workers=self.workers > 0
        )

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)  # type: ignore[arg-type]

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        order = _epoch_order(len(self.dataset), self.seed, epoch, self.shuffle)  # type: ignore[arg-type]
        # what the sampler keeps (the loader's iterator holds it between epochs) must not refer to self: in that
        # cycle self would wait for the cyclic garbage collector, whose freeing of the loader waits 5 s per worker
        batches = functools.partial(_rank_batches, order, start, self.batch_size, self.shard)
        self.sampler.batches, self.sampler.count = batches, max(0, len(self) - start)
        self.sampler.epoch = self._sample_epoch(epoch)
        for (x, y), idx in zip(_worker_errors_told_plainly(self.loader), batches()):  # the sampler's batches, again
            yield self._finish(*self._arrived(x, y), idx.to(self.device), epoch)


class _StreamEpoch(IterableDataset):
    """One epoch of a stream as global batches of ``batch_size`` consecutive rows, from batch ``start`` on:
    DataLoader worker w of W makes batches w, w + W, ... (the loader hands them out round-robin, so in
    order), each the rank's share of the rows. Every worker reads every row; it decodes only its own."""

    def __init__(self, stream: Stream, batch_size: int, shuffle: bool, seed: int):
        self.stream, self.batch_size, self.shuffle, self.seed = stream, batch_size, shuffle, seed
        self.epoch, self.start, self.sample_epoch, self.shard = 0, 0, 0, (0, 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = self.shard
        chunks = self.stream.chunks(self.epoch, self.batch_size, self.shuffle, self.seed)
        for b, rows in enumerate(chunks):
            if b < self.start or (b - self.start) % workers != worker:
                continue
            first = b * self.batch_size + rank
            samples = [
                _seeded(functools.partial(self.stream.prepare, row), self.seed, self.sample_epoch, first + i * world)
                for i, row in enumerate(rows[rank::world])
            ]
            yield torch.stack([x for x, _ in samples]), torch.stack([torch.as_tensor(y) for _, y in samples])


class StreamBatches(_WorkerBatches):
    """Batches of a :class:`StreamSplit`: consecutive rows of the epoch's order (shuffled through the
    stream's buffer, seeded by the epoch), decoded in DataLoader workers. The batches are the same
    whatever the number of workers; a resume at batch ``start`` reads, without decoding, the rows
    before it. The workers start again each epoch (they take the epoch with them)."""

    def __init__(
        self,
        split: StreamSplit,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        transform: Transform | None = None,
        num_workers: int | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        super().__init__(batch_size, shuffle, seed, device, transform, num_workers, memory_format, None)
        self.split, self.source = split, _StreamEpoch(split.stream, batch_size, shuffle, seed)
        self.loader = self._loader(self.source, batch_size=None)

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    @property
    def indexed(self) -> bool:
        return False

    @indexed.setter
    def indexed(self, wanted: bool) -> None:
        if wanted:
            raise KdforgeError(
                "a streamed split has no sample index, so a teacher cache cannot look its outputs up: train with the "
                "online teacher, or read the data without streaming"
            )

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        self.source.epoch, self.source.start, self.source.shard = epoch, start, self.shard
        self.source.sample_epoch = self._sample_epoch(epoch)
        for x, y in _worker_errors_told_plainly(self.loader):
            yield self._finish(*self._arrived(x, y), torch.empty(0), epoch)


def _worker_errors_told_plainly(loader: DataLoader) -> Iterator[Any]:
    """``loader``'s batches; a kdforge error raised in a worker process (a damaged file) comes back
    wrapped in the worker's traceback: it is raised again with its own one-line message."""
    try:
        yield from loader
    except KdforgeError as err:
        text = str(err)
        if "Original Traceback" not in text:
            raise
        raise type(err)(text.rstrip().splitlines()[-1].split(": ", 1)[-1]) from None


def default_workers() -> int:
    """Leave one core to the training process; at most 4 (enough for small decoding)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def make_loader(
    data: Split | DatasetSplit | StreamSplit | Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    transform: Transform | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    num_workers: int | None = None,
) -> Batches:
    """Index-slicing batches for an in-memory :class:`Split`, a DataLoader otherwise (``num_workers``
    processes read the samples; default: :func:`default_workers`). ``transform`` (augmentation) is
    applied to each batch's inputs on the device; ``memory_format`` (channels-last) to the inputs as
    they reach the device."""
    kind: Callable[..., Batches]
    if isinstance(data, Split):
        kind = functools.partial(TensorBatches, data)
    elif isinstance(data, StreamSplit):
        kind = functools.partial(StreamBatches, data, num_workers=num_workers)
    else:
        dataset, on_device = (data.dataset, data.on_device) if isinstance(data, DatasetSplit) else (data, None)
        kind = functools.partial(DatasetBatches, dataset, num_workers=num_workers, on_device=on_device)
    return kind(batch_size, shuffle=shuffle, seed=seed, device=device, transform=transform, memory_format=memory_format)


__all__ = ["Batches", "TensorBatches", "DatasetBatches", "StreamBatches", "make_loader", "default_workers"]


def example_inputs(batches: Batches, n: int = 2) -> torch.Tensor:
    """The split's first ``n`` inputs, un-augmented (for shape probes)."""
    if isinstance(batches, TensorBatches):
        return batches.x[:n]
    if isinstance(batches, StreamBatches):
        return batches.split.first(n)[0].to(batches.device)
    assert isinstance(batches, DatasetBatches)
    x = torch.stack([batches.dataset[i][0] for i in range(n)]).to(batches.device)
    return batches.on_device(x) if batches.on_device else x
