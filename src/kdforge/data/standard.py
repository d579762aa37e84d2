"""The standard image benchmarks from their official distribution files: CIFAR-10/100 (binary version)
and MNIST-style idx files (MNIST, Fashion-MNIST, KMNIST). Point ``path`` at the files, or give
``download: true`` to fetch them there, checksummed. Both fit in memory (as float32: CIFAR about 0.7 GB,
MNIST about 0.2 GB) and are held there, standardised like the other built-in image sets; their official
test split is the test split, and validation is drawn from the training files by the seed.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from kdforge.bounds import AtLeastOne, needs
from kdforge.data.bundle import DATASETS, DataBundle, Split, split_rows, standardise
from kdforge.data.download import fetch_dataset
from kdforge.errors import KdforgeError
from kdforge.files import FileReadError, read_bytes

CIFAR_PIXELS = 3 * 32 * 32
#: the official file names: (training files, test files, bytes of labels before each image)
CIFAR_BINARY = {
    10: ([f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1),
    100: (["train.bin"], ["test.bin"], 2),
}
CIFAR_PICKLED = {10: ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]), 100: (["train"], ["test"])}


def _coarse_needs_cifar100(options: Any) -> str | None:
    if options.labels == "coarse" and options.classes == 10:
        return "labels: coarse are CIFAR-100's 20 superclasses; CIFAR-10 has only its 10 classes: drop labels"
    return None


def _download_is_binary(options: Any) -> str | None:
    if options.download and options.allow_pickle:
        return "download fetches CIFAR's binary version, which needs no pickle: drop allow_pickle"
    return None


@DATASETS.register("cifar", rules=[_coarse_needs_cifar100, _download_is_binary])
def cifar(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    classes: Literal[10, 100] | None = None,
    labels: Literal["fine", "coarse"] = "fine",
    allow_pickle: bool = False,
    download: bool = False,
) -> DataBundle:
    """CIFAR-10 or CIFAR-100 from the folder of its binary version (``cifar-10-batches-bin``:
    ``data_batch_1.bin`` ... ``test_batch.bin``; ``cifar-100-binary``: ``train.bin``, ``test.bin``).
    ``classes`` (10 or 100) is found from the files when not given; ``labels``: ``fine`` (100 classes) or
    ``coarse`` (the 20 superclasses) for CIFAR-100. ``download: true`` fetches the official binary archive
    (of ``classes``, default 10) into ``path`` when its files are not there, checksummed
    (:mod:`kdforge.data.download`). ``allow_pickle: true`` reads the "python version" instead, which runs
    Python's pickle on the files: only for files you trust."""
    del test_fraction  # the official test files are the test split
    folder = Path(path).expanduser()
    if download:
        fetch_dataset(f"cifar{classes or 10}", folder)
    if not folder.is_dir():
        raise KdforgeError(f"cifar: '{folder}' is not a folder; give the folder that holds the CIFAR files")
    kind = _cifar_kind(folder, classes, allow_pickle)
    if kind == 10 and labels == "coarse":
        raise KdforgeError(
            f"cifar: '{folder}' holds CIFAR-10, which has no coarse labels (CIFAR-100's 20 superclasses): drop labels"
        )
    read = _cifar_pickled if allow_pickle else _cifar_binary
    x_train, y_train = read(folder, kind, "train", labels)
    x_test, y_test = read(folder, kind, "test", labels)
    num_classes = 20 if kind == 100 and labels == "coarse" else kind
    return _bundle(f"cifar{kind}", x_train, y_train, x_test, y_test, num_classes, val_fraction, seed)


def _cifar_kind(folder: Path, classes: int | None, allow_pickle: bool) -> int:
    """10 or 100: ``classes`` when given, else the version whose files are in ``folder``."""
    names = CIFAR_PICKLED if allow_pickle else {k: v[:2] for k, v in CIFAR_BINARY.items()}
    present = [k for k, (train, test) in names.items() if all((folder / f[0]).is_file() for f in (train, test))]
    if classes is not None:
        present = [k for k in present if k == classes] or [classes]
    if not present:
        version = "python (pickled)" if allow_pickle else "binary"
        expected = " or ".join(f"{v[0][0]} + {v[1][0]}" for v in names.values())
        hint = (
            ""
            if allow_pickle or not any((folder / CIFAR_PICKLED[k][0][0]).is_file() for k in CIFAR_PICKLED)
            else "; this folder holds the pickled python version: use the binary version, or set allow_pickle: true "
            "if you trust the files"
        )
        raise KdforgeError(f"cifar: '{folder}' holds no CIFAR {version} files ({expected}){hint}")
    return present[0]


def _cifar_binary(folder: Path, kind: int, part: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels [N] of the binary files: each record is the label
    byte(s) then 3,072 pixel bytes (the red, green and blue planes of a 32×32 image)."""
    train_files, test_files, label_bytes = CIFAR_BINARY[kind]
    images, targets = [], []
    for name in train_files if part == "train" else test_files:
        file = folder / name
        raw = np.frombuffer(read_bytes(file, "CIFAR file"), dtype=np.uint8)
        record = label_bytes + CIFAR_PIXELS
        if raw.size % record:
            raise FileReadError(
                f"CIFAR file '{file}' has {raw.size} bytes, not a whole number of {record}-byte records: it is "
                f"truncated or not CIFAR-{kind}'s binary version"
            )
        rows = raw.reshape(-1, record)
        label = rows[:, label_bytes - 1] if labels == "fine" else rows[:, 0]
        if int(label.max()) >= (20 if labels == "coarse" and kind == 100 else kind):
            raise FileReadError(f"CIFAR file '{file}' holds label {int(label.max())}: it is not CIFAR-{kind}")
        images.append(rows[:, label_bytes:].reshape(-1, 3, 32, 32))
        targets.append(label)
    return np.concatenate(images), np.concatenate(targets).astype(np.int64)


def _cifar_pickled(folder: Path, kind: int, part: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """The "python version": pickled dicts of ``data`` [N, 3072] and ``labels`` (``fine_labels``,
    ``coarse_labels`` for CIFAR-100). Only read when the recipe sets ``allow_pickle: true``."""
    train_files, test_files = CIFAR_PICKLED[kind]
    key = b"labels" if kind == 10 else f"{labels}_labels".encode()
    images, targets = [], []
    for name in train_files if part == "train" else test_files:
        file = folder / name
        try:
            batch = pickle.loads(read_bytes(file, "CIFAR file"), encoding="bytes")  # the recipe opted in
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            targets.append(np.asarray(batch[key], dtype=np.int64))
        except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as err:
            raise FileReadError(f"CIFAR file '{file}' is not a CIFAR-{kind} python-version batch ({err})") from None
    return np.concatenate(images), np.concatenate(targets)


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@DATASETS.register("mnist", rules=[needs("variant", "download", "names the files to download")])
def mnist(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    image_size: AtLeastOne | None = None,
    channels: Literal[1, 3] = 1,
    download: bool = False,
    variant: Literal["mnist", "fashion_mnist", "kmnist"] | None = None,
) -> DataBundle:
    """MNIST, Fashion-MNIST or KMNIST from the folder of their four idx files
    (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each gzipped (``.gz``) or not). ``image_size`` resizes the 28×28 images
    (bilinear); ``channels`` 1 or 3 (grey repeated). ``download: true`` fetches the official files of
    ``variant`` (default ``mnist``) into ``path`` when they are not there, checksummed
    (:mod:`kdforge.data.download`)."""
    del test_fraction  # the official t10k files are the test split
    folder = Path(path).expanduser()
    if download:
        fetch_dataset(variant or "mnist", folder)
    if not folder.is_dir():
        raise KdforgeError(f"mnist: '{folder}' is not a folder; give the folder that holds the four idx files")
    arrays = {}
    for part, (images, labels) in IDX_FILES.items():
        x, y = read_idx(_idx_file(folder, images)), read_idx(_idx_file(folder, labels))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise FileReadError(
                f"mnist: '{folder}' {part} files do not match: images {list(x.shape)}, labels {list(y.shape)}"
            )
        arrays[part] = (x[:, None], y.astype(np.int64))
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["test"]
    classes = int(max(y_train.max(), y_test.max())) + 1
    if missing := sorted(set(range(classes)) - set(np.unique(y_train).tolist())):
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        raise FileReadError(
            f"mnist: the labels in '{folder}' run up to {classes - 1}, but classes {shown} have no training image: "
            f"a damaged or foreign labels file ({_idx_file(folder, IDX_FILES['train'][1]).name} or "
            f"{_idx_file(folder, IDX_FILES['test'][1]).name})"
        )
    return _bundle(folder.name, x_train, y_train, x_test, y_test, classes, val_fraction, seed, image_size, channels)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileReadError(f"mnist: '{folder}' has no {stem} (nor {stem}.gz)")


#: idx type codes -> NumPy dtypes (big-endian, as the format stores them)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(file: Path) -> np.ndarray:
    """An idx array (gzipped or not): two zero bytes, a type code, the number of dimensions, each
    dimension as a big-endian int32, then the values."""
    raw = read_bytes(file, "idx file")
    if file.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise FileReadError(f"idx file '{file}' is not a readable gzip file ({err})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise FileReadError(f"idx file '{file}' does not start like an idx file (00 00 <type> <dimensions>)")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">i4"))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise FileReadError(
            f"idx file '{file}' has {len(raw)} bytes but its header promises {list(shape)} values ({expected} bytes): "
            "it is truncated or damaged"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _bundle(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    val_fraction: float,
    seed: int,
    image_size: int | None = None,
    channels: int | None = None,
) -> DataBundle:
    """uint8 images [N, C, H, W] -> float splits in [0, 1], resized and channel-repeated if asked,
    standardised by the training split; validation drawn from the training images, stratified."""
    train, val = split_rows(y_train, {"val": val_fraction}, seed)

    def floats(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images).float().div_(255.0)
        if image_size is not None and image_size != x.shape[-1]:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        return x.repeat(1, channels, 1, 1) if channels is not None and channels != x.shape[1] else x

    (xs_train, xs_val, xs_test), scaling = standardise(floats(x_train[train]), floats(x_train[val]), floats(x_test))
    ys = [torch.from_numpy(y) for y in (y_train[train], y_train[val], y_test)]
    return DataBundle(
        name,
        Split(xs_train, ys[0]),
        Split(xs_val, ys[1]),
        Split(xs_test, ys[2]),
        num_classes=num_classes,
        input_shape=tuple(xs_train.shape[1:]),
        scaling=scaling,
    )
