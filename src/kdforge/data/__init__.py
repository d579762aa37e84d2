"""Datasets: a registry of built-ins, deterministic splits, fast in-memory batching."""

from kdforge.data.bundle import DATASETS, DataBundle, Split, build_dataset
from kdforge.data.loaders import DatasetBatches, TensorBatches, example_inputs, make_loader
from kdforge.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)

__all__ = ["DATASETS", "DataBundle", "Split", "build_dataset", "TensorBatches", "DatasetBatches", "make_loader", "example_inputs"]
