"""The ``hf`` dataset: tiny Hugging Face datasets written here with save_to_disk and as data files."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from kdforge.data import build_dataset, make_loader
from kdforge.errors import KdforgeError

NAMES = ["red", "green", "blue"]


def pictures(n, seed):
    """n small images whose brightest channel is their class, and the classes."""
    rng = np.random.default_rng(seed)
    labels = [i % 3 for i in range(n)]
    images = []
    for label in labels:
        pixels = rng.integers(0, 60, size=(9, 11, 3))
        pixels[..., label] += 180
        images.append(Image.fromarray(pixels.astype(np.uint8)))
    return images, labels


def image_table(n, seed):
    images, labels = pictures(n, seed)
    features = datasets.Features({"img": datasets.Image(), "cls": datasets.ClassLabel(names=NAMES)})
    return datasets.Dataset.from_dict({"img": images, "cls": labels}, features=features)


def test_a_saved_dataset_dict_keeps_its_own_splits_and_decodes_images_in_workers(tmp_path):
    folder = tmp_path / "colours"
    datasets.DatasetDict(
        {"train": image_table(30, 0), "validation": image_table(9, 1), "test": image_table(12, 2)}
    ).save_to_disk(str(folder))
    data = build_dataset("hf", path=str(folder), input="img", label="cls", image={"image_size": 8, "flip": True})
    assert (len(data.train), len(data.val), len(data.test)) == (30, 9, 12)
    assert data.num_classes == 3 and data.input_shape == (3, 8, 8) and data.task == "classification"
    x, y = data.test.first(12)
    mean, std = data.scaling
    assert x.shape == (12, 3, 8, 8) and ((x * std + mean).mean(dim=(2, 3)).argmax(1) == y).all()
    loader = make_loader(data.train, 8, shuffle=True, seed=1, num_workers=1)
    assert sorted(int(v) for _, yb in loader.epoch(0) for v in yb) == sorted([i % 3 for i in range(30)])


def test_data_files_with_numeric_rows_are_split_stratified_and_standardised(tmp_path):
    rng = np.random.default_rng(0)
    rows = {"x": rng.normal(5.0, 3.0, size=(90, 4)).tolist(), "y": [i % 3 for i in range(90)]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "part.parquet"))
    data = build_dataset("hf", path=str(tmp_path / "part.parquet"), input="x", label="y", val_fraction=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (54, 18, 18) and data.input_shape == (4,)
    x, _ = data.train.first(len(data.train))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 0.02
    for line in ({"x": [1.0, 2.0], "y": 0, "split": "train"}, {"x": [3.0, 4.0], "y": 1, "split": "test"}):
        with (tmp_path / "rows.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
    with (tmp_path / "rows.jsonl").open("a") as f:
        for i in range(12):
            f.write(json.dumps({"x": [float(i), 1.0], "y": i % 2, "split": "validation" if i < 3 else "train"}) + "\n")
    marked = build_dataset("hf", path=str(tmp_path / "rows.jsonl"), input="x", label="y", split_column="split")
    assert (len(marked.train), len(marked.val), len(marked.test)) == (10, 3, 1)


def test_csv_regression_targets(tmp_path):
    lines = ["a,target"] + [f"{i},{0.5 * i}" for i in range(40)]
    (tmp_path / "table.csv").write_text("\n".join(lines))
    data = build_dataset("hf", path=str(tmp_path / "table.csv"), input="a", label="target")
    assert data.task == "regression" and data.input_shape == (1,) and data.train.first(1)[0].shape == (1, 1)


def test_hf_data_that_cannot_be_used_gets_one_message(tmp_path):
    image_table(6, 0).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(KdforgeError, match="has no column 'label'; its columns: img, cls"):
        build_dataset("hf", path=str(tmp_path / "saved"), input="img")
    with pytest.raises(KdforgeError, match="unknown option .image.size."):
        build_dataset("hf", path=str(tmp_path / "saved"), input="img", label="cls", image={"size": 8})
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.csv").write_text("x,y\n1,0\n")
    (tmp_path / "mixed" / "b.parquet").write_bytes(b"PAR1")
    with pytest.raises(KdforgeError, match="neither a save_to_disk folder nor data files of one format"):
        build_dataset("hf", path=str(tmp_path / "mixed"), input="x", label="y")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(KdforgeError, match="bad.parquet.*cannot be read"):
        build_dataset("hf", path=str(tmp_path / "bad.parquet"), input="x", label="y")


def test_labels_are_tensors_of_the_right_kind(tmp_path):
    image_table(6, 0).save_to_disk(str(tmp_path / "saved"))
    data = build_dataset("hf", path=str(tmp_path / "saved"), input="img", label="cls", val_fraction=0.34)
    _, y = data.train.first(2)
    assert y.dtype == torch.int64


SPECIES = ["setosa", "versicolor", "virginica"]


def write_species_csv(path, rows=60, extra=()):
    """A CSV table with a numeric input and string labels, as users' tables have them."""
    lines = ["size,width,species"] + [f"{i % 3},{i % 5},{SPECIES[i % 3]}" for i in range(rows)]  # size: the class
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return path


@pytest.mark.parametrize("streaming", [False, True])
def test_string_labels_become_sorted_classes(streaming, tmp_path):
    train = write_species_csv(tmp_path / "train.csv")
    held = {
        "val": str(write_species_csv(tmp_path / "val.csv", 9)),
        "test": str(write_species_csv(tmp_path / "t.csv", 9)),
    }
    options = {"streaming": True, **held} if streaming else {}
    data = build_dataset("hf", path=str(train), input="size", label="species", standardize=False, **options)
    assert data.task == "classification" and data.num_classes == 3 and data.class_names == SPECIES
    for split in (data.train, data.val, data.test):
        x, y = zip(*make_loader(split, 64, shuffle=False, seed=0).epoch(0))
        x, y = torch.cat(x), torch.cat(y)
        assert y.dtype == torch.int64 and torch.equal(x.flatten().long(), y) and set(y.tolist()) == {0, 1, 2}


def test_string_labels_that_cannot_be_mapped_are_named(tmp_path):
    train = write_species_csv(tmp_path / "train.csv")
    (tmp_path / "val.csv").write_text("size,width,species\n1,2,setosa\n3,4,daisy\n")
    with pytest.raises(KdforgeError, match="val split .* label\\(s\\) 'daisy' .* no training row has"):
        build_dataset("hf", path=str(train), input="size", label="species", val=str(tmp_path / "val.csv"))
    holed = write_species_csv(tmp_path / "holed.csv", extra=["2.0,1,"])
    with pytest.raises(KdforgeError, match="holed.csv.*row 60 holds None: give every row a class name"):
        build_dataset("hf", path=str(holed), input="size", label="species")


def test_string_labels_are_recorded_in_the_results_and_the_exported_student(tiny_recipe, tmp_path):
    import kdforge
    from kdforge.export import read_meta

    train = write_species_csv(tmp_path / "train.csv", rows=90)
    tiny_recipe["data"] = {"name": "hf", "path": str(train), "input": "size", "label": "species", "batch_size": 16}
    tiny_recipe["teacher"] = {"source": "train", "model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 1}}
    tiny_recipe["train"] = {"epochs": 1, "baseline": False}
    result = kdforge.run(kdforge.Recipe.from_dict(tiny_recipe))
    assert result.results["classes"] == SPECIES
    assert read_meta(result.run_dir / "student.safetensors")["classes"] == SPECIES
    assert json.loads((result.run_dir / "results.json").read_text())["classes"] == SPECIES
