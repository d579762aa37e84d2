"""Datasets: a registry of built-ins, deterministic splits, fast in-memory batching."""

from __future__ import annotations

from typing import Any

from kdforge.data import arrays as _arrays  # noqa: F401  (your own arrays)
from kdforge.data import builtin as _builtin  # noqa: F401  (register the built-in datasets)
from kdforge.data import folders as _folders  # noqa: F401  (image folders)
from kdforge.data import hf as _hf  # noqa: F401  (Hugging Face datasets on disk)
from kdforge.data import standard as _standard  # noqa: F401  (CIFAR and MNIST from their files)
from kdforge.data.booleanize import booleanize_bundle
from kdforge.data.bundle import DATASETS, DataBundle, DatasetSplit, Split, build_dataset
from kdforge.data.loaders import DatasetBatches, TensorBatches, example_inputs, make_loader
from kdforge.errors import KdforgeError


def data_seed(cfg: Any, seed: int) -> int:
    """The seed a recipe's dataset is built and split with: ``split_seed``, else the recipe's."""
    return seed if cfg.split_seed is None else cfg.split_seed


def recipe_data(cfg: Any, seed: int) -> DataBundle:
    """The dataset a recipe's ``data`` section describes, booleanised if it asks."""
    data = build_dataset(
        cfg.name,
        seed=data_seed(cfg, seed),
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        split_file=cfg.split_file,
        **cfg.options,
    )
    if cfg.booleanize is None:
        return data
    if cfg.augment.randaugment is not None:
        raise KdforgeError(
            "data.booleanize makes ±1 bits, which RandAugment's image operations do not apply to; drop one of them"
        )
    return booleanize_bundle(data, cfg.booleanize)


__all__ = [
    "DATASETS",
    "DataBundle",
    "Split",
    "DatasetSplit",
    "build_dataset",
    "data_seed",
    "recipe_data",
    "TensorBatches",
    "DatasetBatches",
    "make_loader",
    "example_inputs",
]
