"""CIFAR-10/100 and MNIST-style datasets read from files written here in their official formats."""

import pickle

import numpy as np
import pytest
import torch

from datafiles import cifar_records, write_idx
from kdforge.data import build_dataset
from kdforge.errors import KdforgeError


@pytest.fixture
def cifar10_bin(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records(20, 10, i)[0])
    (folder / "test_batch.bin").write_bytes(cifar_records(30, 10, 9)[0])
    return folder


def test_cifar10_binary_files_give_the_official_test_split_and_a_stratified_validation(cifar10_bin):
    data = build_dataset("cifar", path=str(cifar10_bin), val_fraction=0.2, seed=0)
    assert data.name == "cifar10" and data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 30)
    _, test_labels = cifar_records(30, 10, 9)
    assert data.test.y.tolist() == test_labels.tolist()
    mean, std = data.scaling
    for split in (data.train, data.val, data.test):  # the red plane carries the label: pixels and labels agree
        red = (split.x[:, 0, 0, 0] * std + mean) * 255
        assert torch.allclose(red, split.y.float(), atol=1e-3)
    other = build_dataset("cifar", path=str(cifar10_bin), val_fraction=0.2, seed=1)
    assert not torch.equal(other.val.y, data.val.y) and torch.equal(other.test.y, data.test.y)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train, fine = cifar_records(100, 100, 0, label_bytes=2)
    (folder / "train.bin").write_bytes(train)
    (folder / "test.bin").write_bytes(cifar_records(20, 100, 1, label_bytes=2)[0])
    data = build_dataset("cifar", path=str(folder), val_fraction=0.1)
    assert data.name == "cifar100" and data.num_classes == 100
    coarse = build_dataset("cifar", path=str(folder), val_fraction=0.1, labels="coarse")
    assert coarse.num_classes == 20 and int(coarse.train.y.max()) < 20
    assert sorted((data.train.y // 5).tolist()) == sorted(coarse.train.y.tolist())


def test_cifar_python_version_only_when_allowed(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        records, labels = cifar_records(10, 10, len(name))
        rows = np.frombuffer(records, dtype=np.uint8).reshape(10, -1)[:, 1:]
        (folder / name).write_bytes(pickle.dumps({b"data": rows, b"labels": labels.tolist()}))
    with pytest.raises(KdforgeError, match="pickled python version.*allow_pickle: true"):
        build_dataset("cifar", path=str(folder))
    data = build_dataset("cifar", path=str(folder), allow_pickle=True, val_fraction=0.2)
    assert (len(data.train), len(data.test)) == (40, 10) and data.num_classes == 10


def test_cifar_files_that_are_not_cifar(cifar10_bin):
    (cifar10_bin / "data_batch_3.bin").write_bytes(cifar_records(20, 10, 3)[0][:-7])
    with pytest.raises(KdforgeError, match="data_batch_3.bin.*not a whole number of 3073-byte records"):
        build_dataset("cifar", path=str(cifar10_bin))
    with pytest.raises(KdforgeError, match="holds no CIFAR binary files"):
        build_dataset("cifar", path=str(cifar10_bin.parent))


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_plain_or_gzipped(tmp_path, compress):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for part, n in (("train", 60), ("t10k", 20)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        images[:, 0, 0] = labels * 20
        write_idx(tmp_path / f"{part}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte{suffix}", labels, compress)
    data = build_dataset("mnist", path=str(tmp_path), val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (45, 15, 20) and data.num_classes == 10
    mean, std = data.scaling
    assert torch.allclose((data.test.x[:, 0, 0, 0] * std + mean) * 255, data.test.y.float() * 20, atol=1e-3)
    big = build_dataset("mnist", path=str(tmp_path), val_fraction=0.25, image_size=32, channels=3)
    assert big.input_shape == (3, 32, 32)


def test_mnist_damaged_idx_files_are_named(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), False)
    with pytest.raises(KdforgeError, match="no t10k-labels-idx1-ubyte"):
        build_dataset("mnist", path=str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x09abc")
    with pytest.raises(KdforgeError, match="t10k-labels-idx1-ubyte.*promises \\[9\\] values"):
        build_dataset("mnist", path=str(tmp_path))
