"""data.split_file: the user's own fixed split, as row indices, for every dataset that would draw its splits."""

import json
import re

import numpy as np
import pytest
from sklearn.datasets import load_digits

from datafiles import cifar_records, write_images
from kdforge.data import build_dataset
from kdforge.errors import KdforgeError


def split_file(path, **parts):
    path.write_text(json.dumps({name: [int(i) for i in rows] for name, rows in parts.items()}))
    return str(path)


def test_digits_take_the_given_rows_exactly(tmp_path):
    rng = np.random.default_rng(5)
    order = rng.permutation(1797)
    path = split_file(tmp_path / "split.json", train=order[:1000], val=order[1000:1200], test=order[1200:1500])
    data = build_dataset("digits", split_file=path)
    target = load_digits().target
    assert (len(data.train), len(data.val), len(data.test)) == (1000, 200, 300)  # rows left out stay out
    for split, rows in ((data.train, order[:1000]), (data.val, order[1000:1200]), (data.test, order[1200:1500])):
        assert split.y.tolist() == target[np.sort(rows)].tolist()
    again = build_dataset("digits", split_file=path, seed=9)  # the seed no longer draws the split
    assert again.val.y.tolist() == data.val.y.tolist()


def test_npz_split_files_and_an_image_folder(tmp_path):
    write_images(tmp_path / "pets", 6)  # 18 images, classes in sorted folder order
    path = tmp_path / "split.npz"
    np.savez(path, train=np.arange(0, 18, 2), val=np.array([1, 3, 5]), test=np.array([7, 9]))
    data = build_dataset("image_folder", path=str(tmp_path / "pets"), image_size=6, split_file=str(path))
    assert [p.name for p in data.val.dataset.files] == ["001.png", "003.png", "005.png"]
    assert (len(data.train), len(data.test)) == (9, 2)


def test_a_dataset_with_its_own_test_files_takes_train_and_val(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records(6, 10, i)[0])
    (folder / "test_batch.bin").write_bytes(cifar_records(5, 10, 9)[0])
    given = split_file(tmp_path / "s.json", train=range(20), val=range(20, 30))
    data = build_dataset("cifar", path=str(folder), split_file=given)
    assert (len(data.train), len(data.val)) == (20, 10)
    with pytest.raises(KdforgeError, match="gives test, but this dataset takes that split from its own files"):
        build_dataset(
            "cifar", path=str(folder), split_file=split_file(tmp_path / "t.json", train=[0], val=[1], test=[2])
        )


BAD_SPLITS = {
    "out of range": (
        {"train": [0, 1], "val": [2], "test": [1797]},
        "'test' holds row 1797, but the rows to split are 0 to 1796",
    ),
    "overlapping": ({"train": [0, 1], "val": [1], "test": [2]}, "some rows are in more than one split"),
    "missing": ({"train": [0, 1], "val": [2]}, "has no test indices; give train, val, test"),
    "not indices": ({"train": [0.5], "val": [2], "test": [3]}, "'train' must be a list of whole numbers"),
    "not a mapping": ([0, 1, 2], "must map split names (train, val, test) to row indices"),
}


@pytest.mark.parametrize("case", BAD_SPLITS)
def test_a_split_file_that_cannot_be_used_is_named(case, tmp_path):
    content, message = BAD_SPLITS[case]
    (tmp_path / "bad.json").write_text(json.dumps(content))
    with pytest.raises(KdforgeError, match=f"data.split_file '.*bad.json'.*{re.escape(message)}"):
        build_dataset("digits", split_file=str(tmp_path / "bad.json"))


def test_a_dataset_whose_splits_are_all_its_own_refuses_a_split_file(tmp_path):
    for split in ("train", "val", "test"):
        write_images(tmp_path / "pets" / split, 2)
    with pytest.raises(KdforgeError, match="the image_folder dataset draws no split"):
        build_dataset(
            "image_folder", path=str(tmp_path / "pets"), split_file=split_file(tmp_path / "s.json", train=[0])
        )
