"""image_folder: class-per-folder PNGs written here, in both layouts, read in worker processes."""

import json

import numpy as np
import pytest
import torch

from datafiles import write_images
from kdforge.data import build_dataset, make_loader
from kdforge.errors import KdforgeError


def colour_class(x, mean=0.45, std=0.225):
    """The class whose colour channel is brightest in a normalised image [3, H, W]."""
    return int((x * std + mean).mean(dim=(1, 2)).argmax())


def test_one_tree_is_split_stratified_and_seeded(tmp_path):
    write_images(tmp_path / "pets", 10)
    data = build_dataset("image_folder", path=str(tmp_path / "pets"), image_size=8, val_fraction=0.2, test_fraction=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 6)
    assert data.num_classes == 3 and data.input_shape == (3, 8, 8) and data.task == "classification"
    for split in (data.train, data.val, data.test):
        assert sorted(np.bincount(split.labels).tolist()) == [len(split) // 3] * 3
        x, y = split.first(len(split))
        assert x.shape == (len(split), 3, 8, 8) and [colour_class(img) for img in x] == y.tolist()
    other = build_dataset("image_folder", path=str(tmp_path / "pets"), image_size=8, seed=1)
    assert (
        other.val.dataset.files
        != build_dataset("image_folder", path=str(tmp_path / "pets"), image_size=8).val.dataset.files
    )


def test_the_users_own_train_val_test_folders_are_used_as_given(tmp_path):
    root = tmp_path / "given"
    write_images(root / "train", 4, seed=1)
    write_images(root / "val", 2, seed=2)
    write_images(root / "test", 3, seed=3)
    data = build_dataset("image_folder", path=str(root), image_size=6, channels=1)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 6, 9) and data.input_shape == (1, 6, 6)
    assert all(p.parent.parent.name == "test" for p in data.test.dataset.files)
    (root / "test").rename(root / "held_out")
    no_test = build_dataset("image_folder", path=str(root), image_size=6, test_fraction=0.25)
    assert (len(no_test.train), len(no_test.val), len(no_test.test)) == (9, 6, 3)  # test cut from train/


def test_batches_are_the_same_with_any_number_of_workers_and_after_a_resume(tmp_path):
    write_images(tmp_path / "pets", 8)
    data = build_dataset(
        "image_folder", path=str(tmp_path / "pets"), image_size=8, train_crop="random_resized", flip=True
    )
    runs = {}
    for workers in (0, 2):
        loader = make_loader(data.train, 4, shuffle=True, seed=7, num_workers=workers)
        runs[workers] = [[(x.clone(), y.clone()) for x, y in loader.epoch(e)] for e in (0, 1)]
        resumed = [(x, y) for x, y in loader.epoch(1, start=2)]
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(resumed, runs[workers][1][2:]))
    for (x0, y0), (x2, y2) in zip(sum(runs[0], []), sum(runs[2], [])):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    first, second = runs[0][0][0][0], runs[0][1]
    assert not any(torch.equal(first, x) for x, _ in second)  # another epoch, other crops


def test_unreadable_images_and_empty_trees_get_one_plain_message(tmp_path):
    root = write_images(tmp_path / "pets", 4)
    (root / "dog" / "002.png").write_bytes(b"not a png at all")
    data = build_dataset("image_folder", path=str(root), image_size=8, val_fraction=0.25, test_fraction=0.25)
    loader = make_loader(data.train, 6, num_workers=1)
    with pytest.raises(KdforgeError) as caught:
        for _ in loader.epoch(0):
            pass
    message = str(caught.value)
    assert "002.png" in message and "cannot be read" in message and "Traceback" not in message
    with pytest.raises(KdforgeError, match="has no class folders"):
        build_dataset("image_folder", path=str(tmp_path / "pets" / "cat"))
    (tmp_path / "half" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(KdforgeError, match="has val/ but no train/"):
        build_dataset("image_folder", path=str(tmp_path / "half"))


def test_a_run_on_an_image_folder(invoke, tiny_recipe, tmp_path, capsys):
    write_images(tmp_path / "pets", 8)
    tiny_recipe["data"] = {
        "name": "image_folder",
        "path": str(tmp_path / "pets"),
        "image_size": 8,
        "flip": True,
        "batch_size": 8,
        "workers": 1,
    }
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    tiny_recipe["teacher"]["train"] = {"epochs": 1}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(tiny_recipe))
    assert invoke("train", path) == 0
    results = json.loads(next((tmp_path / "runs").glob("tiny-*/results.json")).read_text())
    assert 0.0 <= results["student"]["test"]["accuracy"] <= 1.0


def test_images_can_cross_to_the_device_as_bytes_and_be_normalised_there(tmp_path):
    write_images(tmp_path / "pets", 6, size=(8, 8))  # already the model's size: no resize rounding
    options = {"path": str(tmp_path / "pets"), "image_size": 8, "train_crop": "random_resized", "flip": True}
    in_workers = build_dataset("image_folder", **options)
    on_device = build_dataset("image_folder", **options, normalize_on="device")
    assert on_device.train.dataset[0][0].dtype == torch.uint8  # what the workers hand over: a quarter of the bytes
    assert on_device.train.first(2)[0].dtype == torch.float32
    batches = [
        list(make_loader(d.train, 4, shuffle=True, seed=2, num_workers=1).epoch(1)) for d in (in_workers, on_device)
    ]
    for (a, ya), (b, yb) in zip(*batches):
        assert b.dtype == torch.float32 and torch.equal(ya, yb) and torch.allclose(a, b, atol=1e-5)
    with pytest.raises(KdforgeError, match="normalize_on: Input should be 'workers' or 'device'"):
        build_dataset("image_folder", **options, normalize_on="gpu")
