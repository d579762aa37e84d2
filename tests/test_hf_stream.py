"""``hf`` with ``streaming: true``: parquet files and a saved DatasetDict read as streams, batched the same
whatever the workers, resumed mid-epoch, shared between ranks."""

import datasets
import numpy as np
import pytest
import torch

from kdforge import Recipe, run
from kdforge.data import build_dataset, make_loader
from kdforge.errors import KdforgeError
from test_hf_data import image_table


def numeric_parquet(folder, n=150, seed=0):
    """Rows of 4 numbers whose class is the largest of the first three, with the row's number / 1000 in the
    fourth (to tell rows apart) and a split column; returns the file."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 3] = np.arange(n) / 1000
    split = np.array(["train"] * n, dtype=object)
    split[n - 40 : n - 20], split[n - 20 :] = "validation", "test"
    folder.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_dict({"x": x.tolist(), "y": x[:, :3].argmax(1).tolist(), "part": split.tolist()})
    table.to_parquet(str(folder / "rows.parquet"))
    return folder / "rows.parquet"


def stream(path, **options):
    return build_dataset(
        "hf", path=str(path), input="x", label="y", split_column="part", streaming=True, standardize=False, **options
    )


def ids(batches):
    return [(x[:, 3] * 1000).round().long().tolist() for x, _ in batches]


def test_a_parquet_stream_gives_every_training_row_once_per_epoch_in_a_new_order(tmp_path):
    data = stream(numeric_parquet(tmp_path / "rows"), shuffle_buffer=32)
    assert (len(data.train), len(data.val), len(data.test)) == (110, 20, 20)
    assert data.num_classes == 3 and data.input_shape == (4,) and data.task == "classification"
    loader = make_loader(data.train, 16, shuffle=True, seed=3, num_workers=0)
    epochs = [ids(loader.epoch(e)) for e in (0, 1)]
    assert len(epochs[0]) == len(loader) == 7
    for batches in epochs:
        assert sorted(i for batch in batches for i in batch) == list(range(110))
    assert epochs[0] != epochs[1] and ids(loader.epoch(1)) == epochs[1]
    val = make_loader(data.val, 8)
    assert [i for batch in ids(val.epoch(0)) for i in batch] == list(range(110, 130))  # in file order


def test_stream_batches_do_not_depend_on_the_workers_and_resume_mid_epoch(tmp_path):
    data = stream(numeric_parquet(tmp_path / "rows"), shuffle_buffer=32)
    by_workers = {w: ids(make_loader(data.train, 16, shuffle=True, seed=3, num_workers=w).epoch(2)) for w in (0, 2)}
    assert by_workers[0] == by_workers[2]
    resumed = make_loader(data.train, 16, shuffle=True, seed=3, num_workers=2)
    assert ids(resumed.epoch(2, start=3)) == by_workers[0][3:]


def test_each_rank_takes_its_share_of_every_global_batch(tmp_path):
    data = stream(numeric_parquet(tmp_path / "rows"), shuffle_buffer=32)
    whole = ids(make_loader(data.train, 16, shuffle=True, seed=3, num_workers=0).epoch(0))
    shares = []
    for rank in (0, 1):
        loader = make_loader(data.train, 16, shuffle=True, seed=3, num_workers=1)
        loader.shard = (rank, 2)
        shares.append(ids(loader.epoch(0)))
    assert [a + b for a, b in zip(*shares)] != whole  # interleaved, not halves
    assert [sorted(a + b) for a, b in zip(*shares)] == [sorted(batch) for batch in whole]
    assert [batch[0::2] for batch in whole] == shares[0]


def test_a_saved_dataset_dict_streams_images_with_crops_seeded_per_sample(tmp_path):
    folder = tmp_path / "colours"
    datasets.DatasetDict(
        {"train": image_table(30, 0), "validation": image_table(9, 1), "test": image_table(12, 2)}
    ).save_to_disk(str(folder))
    options = {"image_size": 8, "train_crop": "random_resized", "min_scale": 0.3, "flip": True}
    data = build_dataset("hf", path=str(folder), input="img", label="cls", streaming=True, image=options)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 9, 12) and data.input_shape == (3, 8, 8)
    x, y = data.test.first(12)
    mean, std = data.scaling
    assert ((x * std + mean).mean(dim=(2, 3)).argmax(1) == y).all()
    batches = [list(make_loader(data.train, 8, shuffle=True, seed=1, num_workers=w).epoch(0)) for w in (0, 2)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*batches))


def test_a_run_trains_on_a_stream(tmp_path):
    path = numeric_parquet(tmp_path / "rows", n=600)
    recipe = {
        "name": "stream",
        "data": {"name": "hf", "path": str(path), "input": "x", "label": "y", "split_column": "part"}
        | {"streaming": True, "batch_size": 32, "workers": 1},
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [32]}, "train": {"epochs": 8, "lr": 0.01}},
        "student": {"model": {"name": "mlp", "hidden": [16]}},
        "losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5}],
        "optim": {"lr": 0.01},
        "train": {"epochs": 8, "baseline": False},
        "log": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    result = run(Recipe.from_dict(recipe))
    assert result.results["student"]["test"]["accuracy"] > 0.6  # three classes: chance is a third


def test_streams_that_cannot_be_used_get_one_message(tmp_path):
    path = numeric_parquet(tmp_path / "rows")
    with pytest.raises(KdforgeError, match="no column 'label'"):
        build_dataset("hf", path=str(path), input="x", split_column="part", streaming=True)
    with pytest.raises(KdforgeError, match="gives no val and no test split: a stream cannot be re-split"):
        build_dataset("hf", path=str(path), input="x", label="y", streaming=True)
    data = stream(path)
    with pytest.raises(KdforgeError, match="a streamed split has no sample index"):
        make_loader(data.train, 8).indexed = True


def test_an_image_that_cannot_be_decoded_is_named(tmp_path):
    bad = image_table(6, 0).cast_column("img", datasets.Image(decode=False))
    rows = bad.to_dict()
    rows["img"][4] = {"bytes": b"not a picture", "path": "broken.png"}
    table = datasets.Dataset.from_dict(rows, features=bad.features)
    datasets.DatasetDict({"train": table, "val": table, "test": table}).save_to_disk(str(tmp_path / "bad"))
    data = build_dataset("hf", path=str(tmp_path / "bad"), input="img", label="cls", streaming=True)
    with pytest.raises(KdforgeError, match=r"^hf: an image cell \(broken.png\) cannot be decoded"):
        list(make_loader(data.train, 2, num_workers=1).epoch(0))
