"""arrays on a zarr store: complex SAR-style lines read lazily, cut into azimuth windows, split by line."""

import numpy as np
import pytest
import torch
import zarr

from kdforge import Recipe
from kdforge.check import check
from kdforge.data import build_dataset, make_loader
from kdforge.data.chunked import Windows
from kdforge.errors import KdforgeError


def write_store(path, chunk=4, **arrays):
    """A zarr group of ``arrays``, chunked ``chunk`` rows at a time (and 32 values along a long last axis)."""
    group = zarr.open_group(str(path), mode="w")
    make = getattr(group, "create_array", None) or group.create_dataset  # zarr 3, zarr 2
    for name, a in arrays.items():
        chunks = (chunk, *a.shape[1:-1], min(32, a.shape[-1])) if a.ndim > 1 else (chunk,)
        make(name, shape=a.shape, dtype=a.dtype, chunks=chunks)[...] = a
    return path


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=(20, 64)) + 1j * rng.normal(size=(20, 64))).astype(np.complex64)
    raw[:, 0] = np.arange(20)  # each line says which it is
    focused = (raw * 2).astype(np.complex64)
    return write_store(tmp_path / "scene.zarr", x=raw, y=focused), raw, focused


def test_lines_are_cut_into_windows_read_lazily_and_split_by_line(scene):
    path, raw, focused = scene
    data = build_dataset("arrays", path=str(path), window=16, stride=8, val_fraction=0.2, test_fraction=0.2)
    assert data.input_shape == (1, 16) and data.task == "regression" and data.num_classes == 1
    assert (len(data.train), len(data.val), len(data.test)) == (12 * 7, 4 * 7, 4 * 7)  # 7 windows per line
    lines = {}
    for name in ("train", "val", "test"):
        windows = getattr(data, name).dataset
        assert isinstance(windows, Windows) and isinstance(windows.x, zarr.Array)  # never loaded whole
        lines[name] = set(windows.rows.tolist())
        x, y = windows[5]
        row, start = int(windows.rows[5]), int(windows.starts[5])
        assert x.dtype == torch.complex64 and torch.equal(x[0], torch.from_numpy(raw[row, start : start + 16]))
        assert torch.equal(y[0], torch.from_numpy(focused[row, start : start + 16]))
    assert not (lines["train"] & lines["val"] or lines["train"] & lines["test"] or lines["val"] & lines["test"])
    loader = make_loader(data.train, 10, shuffle=True, num_workers=1)
    batches = list(loader.epoch(0))
    assert sum(len(x) for x, _ in batches) == 84 and batches[0][0].shape[1:] == (1, 16)


def test_row_labels_with_windows_and_the_users_own_splits(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 2, 40)).astype(np.float32)
    labels = np.arange(16) % 4
    path = write_store(tmp_path / "rows.zarr", x_train=x[:10], y_train=labels[:10], x_val=x[10:13], y_val=labels[10:13])
    data = build_dataset("arrays", path=str(path), window=20, stride=20, test_fraction=0.3)
    assert data.input_shape == (2, 20) and data.num_classes == 4 and data.task == "classification"
    assert len(data.val) == 3 * 2 and len(data.train) + len(data.test) == 10 * 2
    assert data.val.labels.tolist() == np.repeat(labels[10:13], 2).tolist()
    _, y = data.val.dataset[3]
    assert y.dtype == torch.long and int(y) == labels[11]


def test_a_sar_ssm_recipe_checks_on_a_zarr_scene(scene, tmp_path):
    from rich.console import Console

    path, _, _ = scene
    recipe = Recipe.from_yaml(
        "recipes/sar_ssm.yaml",
        [
            "data={name: arrays, path: " + str(path) + ", window: 32, stride: 16, batch_size: 8, workers: 0}",
            f"log.dir={tmp_path / 'runs'}",
        ],
    )
    check(recipe, Console(width=200))


def test_a_store_that_cannot_be_used_gets_one_message(tmp_path, scene):
    path, _, _ = scene
    with pytest.raises(KdforgeError, match="window 80 is longer than the rows of"):
        build_dataset("arrays", path=str(path), window=80)
    with pytest.raises(KdforgeError, match="must hold 'x' and 'y'"):
        build_dataset("arrays", path=str(write_store(tmp_path / "other.zarr", inputs=np.zeros((4, 8)))))
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "zarr.json").write_text("{ not json")
    with pytest.raises(KdforgeError, match="broken.zarr' is not a readable zarr store"):
        build_dataset("arrays", path=str(tmp_path / "broken.zarr"))
