"""Option values that a dataset or a loss cannot use, options that mean nothing without another, and data whose
values no model can learn from: each refused by ``kdforge check`` with one message naming the key (and the
recipe's file:line) or the file, before any training."""

from __future__ import annotations

import numpy as np
import pytest

from datafiles import cifar_records, write_images, write_mnist
from errorkit import npy_bytes

IMAGES = {"name": "image_folder", "path": "IMAGES"}
TOKENS = {"name": "tokens", "path": "SHARD", "vocab_size": 64}
ZARR = {"name": "arrays", "path": "ZARR"}
HF_IMAGES = {"name": "hf", "path": "HF", "input": "img", "label": "cls"}


@pytest.fixture
def places(tmp_path):
    """What the cases' paths stand for: an image folder, a token shard, a zarr store, a saved image table."""
    import datasets
    from PIL import Image

    write_images(tmp_path / "images", per_class=6)
    np.arange(400, dtype=np.uint16).__mod__(64).tofile(tmp_path / "shard.bin")
    write_zarr(tmp_path / "lines.zarr", x=np.random.default_rng(0).normal(size=(12, 2, 32)), y=np.arange(12) % 2)
    pictures = [Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)) for i in range(6)]
    table = datasets.Dataset.from_dict({"img": pictures, "cls": [i % 2 for i in range(6)]})
    table.cast_column("img", datasets.Image()).save_to_disk(str(tmp_path / "saved"))
    return {"IMAGES": tmp_path / "images", "SHARD": tmp_path / "shard.bin", "ZARR": tmp_path / "lines.zarr"} | {
        "HF": tmp_path / "saved"
    }


def write_zarr(path, **arrays):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    make = getattr(group, "create_array", None) or group.create_dataset  # zarr 3, zarr 2
    for name, array in arrays.items():
        make(name, shape=array.shape, dtype=array.dtype, chunks=array.shape)[...] = array
    return path


def placed(section, places):
    return {k: str(places[v]) if isinstance(v, str) and v in places else v for k, v in section.items()}


def data_recipe(data, places):
    """The tiny recipe on ``data``, with a teacher and student that fit any input shape."""
    kind = {"tokens": "lm", "arrays": "arrays"}.get(data["name"])
    changes = {"data": placed(data, places)}
    if kind is None:
        return changes
    if kind == "lm":
        model = {"name": "lm_transformer", "width": 16, "depth": 1, "heads": 2}
        return changes | {
            "teacher": {"source": "train", "model": model, "train": {"epochs": 1}},
            "student": {"model": model},
            "losses": [{"name": "ce"}],
        }
    return changes | {
        "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 1}},
        "losses": [{"name": "ce"}],
    }


# ----------------------------------------------------------------------------- values out of range

VALUE_CASES = {
    "image_size 0": ({**IMAGES, "image_size": 0}, ["data.image_size", "greater than or equal to 1", "my.yaml:"]),
    "min_scale above 1": (
        {**IMAGES, "train_crop": "random_resized", "min_scale": 1.5},
        ["data.min_scale", "less than or equal to 1"],
    ),
    "min_scale 0": ({**IMAGES, "train_crop": "random_resized", "min_scale": 0}, ["data.min_scale", "greater than 0"]),
    "std 0": ({**IMAGES, "std": 0}, ["data.std", "greater than 0"]),
    "channels 2": ({**IMAGES, "channels": 2}, ["data.channels", "1 or 3"]),
    "normalize_on gpu": ({**IMAGES, "normalize_on": "gpu"}, ["data.normalize_on", "'workers' or 'device'"]),
    "tokens length 0": ({**TOKENS, "length": 0}, ["data.length", "greater than or equal to 1"]),
    "tokens vocab_size negative": ({**TOKENS, "vocab_size": -5}, ["data.vocab_size"]),
    "zarr window 0": ({**ZARR, "window": 0}, ["data.window", "greater than or equal to 1"]),
    "zarr stride negative": ({**ZARR, "window": 8, "stride": -2}, ["data.stride"]),
    "hf image_size 0": ({**HF_IMAGES, "image": {"image_size": 0}}, ["data.image.image_size"]),
    "hf unknown image option": ({**HF_IMAGES, "image": {"size": 8}}, ["data.image.size", "unknown key"]),
    "hf shuffle_buffer 0": ({**HF_IMAGES, "streaming": True, "shuffle_buffer": 0}, ["data.shuffle_buffer"]),
    "hf shuffle_buffer negative": ({**HF_IMAGES, "streaming": True, "shuffle_buffer": -10}, ["data.shuffle_buffer"]),
    "digits image_size 0": ({"name": "digits", "image_size": 0}, ["data.image_size"]),
    "cifar classes 20": ({"name": "cifar", "path": "IMAGES", "classes": 20}, ["data.classes", "10 or 100"]),
    "mnist channels 2": ({"name": "mnist", "path": "IMAGES", "channels": 2}, ["data.channels"]),
}


@pytest.mark.parametrize("case", VALUE_CASES, ids=list(VALUE_CASES))
def test_dataset_values_out_of_range(case, places, fails, recipe):
    data, names = VALUE_CASES[case]
    fails("check", recipe(data_recipe(data, places)), names=names)


LOSS_CASES = {
    "kd chunk 0": ({"name": "kd", "chunked": True, "chunk": 0}, ["losses.0.chunk", "greater than or equal to 1"]),
    "kd chunk negative": ({"name": "kd", "chunked": True, "chunk": -4}, ["losses.0.chunk"]),
    "kd beta above 1": ({"name": "kd", "direction": "gjsd", "beta": 1.5}, ["losses.0.beta", "less than or equal"]),
    "kd alpha 1": ({"name": "kd", "direction": "skew_forward", "alpha": 1.0}, ["losses.0.alpha", "less than 1"]),
    "kd topk 0": ({"name": "kd", "topk": 0}, ["losses.0.topk"]),
    "ce label_smoothing 1": ({"name": "ce", "label_smoothing": 1.0}, ["losses.0.label_smoothing", "less than 1"]),
    "dkd warmup negative": ({"name": "dkd", "warmup": -1}, ["losses.0.warmup", "greater than or equal to 0"]),
    "uld temperature 0": ({"name": "uld", "temperature": 0}, ["losses.0.temperature", "greater than 0"]),
    "supcon dim 0": ({"name": "supcon", "dim": 0}, ["losses.0.dim"]),
    "self_distill without layers": ({"name": "self_distill", "layers": []}, ["losses.0.layers", "at least 1"]),
    "diverse_kd tau 0": ({"name": "diverse_kd", "tau": 0}, ["losses.0.tau"]),
    "relational compare": ({"name": "relational", "compare": "l1"}, ["losses.0.compare", "'mse' or 'correlation'"]),
}


@pytest.mark.parametrize("case", LOSS_CASES, ids=list(LOSS_CASES))
def test_loss_values_out_of_range(case, fails, recipe):
    term, names = LOSS_CASES[case]
    fails("check", recipe({"losses": [term]}), names=names)


# ----------------------------------------------------------------------------- options that need another

RULE_CASES = {
    "stride without window": ({**ZARR, "stride": 4}, ["data:", "stride", "needs window", "my.yaml:"]),
    "shuffle_buffer without streaming": (
        {**HF_IMAGES, "shuffle_buffer": 100},
        ["shuffle_buffer", "needs streaming", "drop shuffle_buffer"],
    ),
    "min_scale without a random crop": ({**IMAGES, "min_scale": 0.5}, ["min_scale", "train_crop: random_resized"]),
    "hf image min_scale without a random crop": (
        {**HF_IMAGES, "image": {"min_scale": 0.5}},
        ["data.image", "min_scale", "train_crop: random_resized"],
    ),
    "coarse labels of CIFAR-10": ({"name": "cifar", "path": "IMAGES", "classes": 10, "labels": "coarse"}, ["coarse"]),
}


@pytest.mark.parametrize("case", RULE_CASES, ids=list(RULE_CASES))
def test_options_that_need_another(case, places, fails, recipe):
    data, names = RULE_CASES[case]
    message = fails("check", recipe(data_recipe(data, places)), names=names)
    assert "{'" not in message, "the section is named by its file:line, not printed whole"


def test_a_chunk_without_chunked(fails, recipe):
    fails("check", recipe({"losses": [{"name": "ce", "chunk": 64}]}), names=["losses.0", "chunk", "needs chunked"])


def test_rules_and_ranges_are_reported_together(fails, recipe):
    """Every problem of a recipe in one message, with its own line."""
    message = fails(
        "check",
        recipe({"losses": [{"name": "kd", "chunk": 8}, {"name": "ce", "label_smoothing": 2}]}),
        names=["losses.0", "needs chunked", "losses.1.label_smoothing"],
    )
    assert message.count("my.yaml:") == 2


def test_the_python_api_checks_the_same_options():
    from kdforge.data import build_dataset
    from kdforge.errors import KdforgeError
    from kdforge.losses import build_loss

    with pytest.raises(KdforgeError, match="image_size: Input should be greater than or equal to 1"):
        build_dataset("digits", image_size=0)
    with pytest.raises(KdforgeError, match="chunk is the chunked loss's chunk"):
        build_loss({"name": "kd", "chunk": 8})


# ----------------------------------------------------------------------------- data no model can learn from


def test_a_class_folder_without_images(fails, recipe, tmp_path):
    folder = write_images(tmp_path / "images", per_class=4)
    (folder / "yak").mkdir()
    fails("check", recipe({"data": {"name": "image_folder", "path": str(folder)}}), names=["yak", "hold no images"])


def test_coarse_labels_asked_of_cifar10_files(fails, recipe, tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(cifar_records(20, 10, 1)[0])
    fails(
        "check",
        recipe({"data": {"name": "cifar", "path": str(folder), "labels": "coarse"}}),
        names=["cifar-10-batches-bin", "CIFAR-10", "no coarse labels"],
    )


@pytest.mark.parametrize("where", ["train", "t10k"])
def test_an_mnist_label_out_of_its_classes(where, fails, recipe, tmp_path):
    labels = {"train": np.arange(60) % 10, "t10k": np.arange(20) % 10}
    labels[where][3] = 200
    folder = write_mnist(tmp_path, labels["train"], labels["t10k"])
    fails(
        "check",
        recipe({"data": {"name": "mnist", "path": str(folder)}}),
        names=[str(folder), "up to 200", "have no training image", "labels-idx1-ubyte"],
    )


def nan_at(rows, row, value=np.nan):
    x = np.random.default_rng(0).normal(size=(rows, 4)).astype(np.float32)
    x[row, 1] = value
    return x


ARRAY_CASES = {
    "NaN in an .npz": ("d.npz", lambda: {"x": nan_at(60, 41), "y": np.arange(60) % 3}, ["d.npz", "row 41"]),
    "inf in x_val": (
        "d.npz",
        lambda: {
            "x": nan_at(60, 0, 0.0),
            "y": np.arange(60) % 3,
            "x_val": nan_at(9, 7, np.inf),
            "y_val": np.arange(9) % 3,
        },
        ["x_val", "row 7"],
    ),
    "NaN in a memory-mapped x.npy": ("folder", lambda: {"x": nan_at(60, 59), "y": np.arange(60) % 3}, ["row 59"]),
    "-inf in a zarr store": ("d.zarr", lambda: {"x": nan_at(60, 30, -np.inf), "y": np.arange(60) % 3}, ["row 30"]),
}


@pytest.mark.parametrize("case", ARRAY_CASES, ids=list(ARRAY_CASES))
def test_non_finite_inputs_anywhere_in_the_arrays(case, fails, recipe, tmp_path):
    name, arrays, names = ARRAY_CASES[case]
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
        for key, value in arrays().items():
            (path / f"{key}.npy").write_bytes(npy_bytes(value))
        data = {"name": "arrays", "path": str(path), "memory_map": True}
    elif name.endswith(".zarr"):
        data = {"name": "arrays", "path": str(write_zarr(path, **arrays()))}
    else:
        np.savez(path, **arrays())
        data = {"name": "arrays", "path": str(path)}
    changes = {"data": data, "teacher": {"source": "train", "model": {"name": "mlp", "hidden": [8]}}}
    fails("check", recipe(changes), names=[*names, "NaN or infinite"])


@pytest.mark.parametrize("memory_map", [False, True])
def test_non_finite_rows_in_an_embedding_table(memory_map, fails, recipe, tmp_path):
    table = nan_at(50, 33, np.inf)
    np.save(tmp_path / "t.npy", table)
    changes = {
        "data": {"name": "embedding_table", "path": str(tmp_path / "t.npy"), "memory_map": memory_map},
        "teacher": {"source": "table", "model": None, "train": None},
        "student": {"model": {"name": "embed_proj"}},
        "losses": [{"name": "cosine"}],
    }
    fails("check", recipe(changes), names=["t.npy", "NaN or infinite", "row 33"])


# ----------------------------------------------------------------------------- the families' options

TM_STUDENT = {"name": "vit_tm_tiny"}
FAMILY_CASES = {
    "odd clause count": (
        {"student": {"model": {**TM_STUDENT, "clauses": 7}}},
        ["student.model.clauses", "multiple of 2"],
    ),
    "vote_bits 20": ({"student": {"model": {**TM_STUDENT, "vote_bits": 20}}}, ["student.model.vote_bits"]),
    "clause_dropout 1": (
        {"student": {"model": {**TM_STUDENT, "clause_dropout": 1.0}}},
        ["student.model.clause_dropout"],
    ),
    "levels 9": ({"student": {"model": {**TM_STUDENT, "levels": 9}}}, ["student.model.levels"]),
    "negative mlp_ratio": ({"student": {"model": {**TM_STUDENT, "mlp_ratio": -1.0}}}, ["student.model.mlp_ratio"]),
    "a zero mlp_ratio for one stage": (
        {"student": {"model": {"name": "swin_tm_tiny", "mlp_ratio": [0.0, 2.0]}}},
        ["student.model.mlp_ratio"],
    ),
    "clause_reg budget 0": ({"losses": [{"name": "clause_reg", "budget": 0}]}, ["losses.0.budget", "greater than 0"]),
    "spike_rate target 1": ({"losses": [{"name": "spike_rate", "target": 1.0}]}, ["losses.0.target", "less than 1"]),
    "infonce neighbours 0": ({"losses": [{"name": "infonce", "neighbours": 0}]}, ["losses.0.neighbours"]),
    "sim_kl temperature 0": ({"losses": [{"name": "sim_kl", "temperature": 0}]}, ["losses.0.temperature"]),
}


@pytest.mark.parametrize("case", FAMILY_CASES, ids=list(FAMILY_CASES))
def test_family_option_values_out_of_range(case, fails, recipe):
    changes, names = FAMILY_CASES[case]
    fails("check", recipe(changes), names=[*names, "my.yaml:"])


# ----------------------------------------------------------------------------- teacher sources' options

# "train": None clears the tiny recipe's teacher.train, which a loaded teacher does not take
HF_TEACHER = {"source": "hf", "model": {"name": "no/such/folder"}, "train": None}
TEACHER_CASES = {
    "hf output unknown": ({"model": {"name": "m", "output": "probs"}}, ["teacher.model.output", "causal_lm"]),
    "hf input unknown": ({"model": {"name": "m", "input": "tokens"}}, ["teacher.model.input", "input_ids"]),
    "hf option misspelled": ({"model": {"name": "m", "outptu": "hidden"}}, ["teacher.model.outptu", "output"]),
    "hf vocab_map without causal_lm": (
        {"model": {"name": "m", "vocab_map": "truncate"}},
        ["teacher.model", "vocab_map", "output: causal_lm"],
    ),
    "hf tokenizer with pooled output": (
        {"model": {"name": "m", "output": "pooled", "tokenizer": "tok"}},
        ["teacher.model", "tokenizer", "output: causal_lm"],
    ),
}


@pytest.mark.parametrize("case", sorted(TEACHER_CASES))
def test_hf_teacher_options_are_checked_with_the_recipe(case, fails, recipe):
    """The folder is never read: the options alone are wrong, and the message names the recipe's line."""
    changes, names = TEACHER_CASES[case]
    message = fails("check", recipe({"teacher": {**HF_TEACHER, **changes}}), names=[*names, "my.yaml:"])
    assert message.count("[") == 1, message  # this problem alone


def test_an_ensemble_members_hf_options_are_named_by_member(fails, recipe):
    member = {"source": "hf", "model": {"name": "m", "output": "probs"}}
    members = [{"source": "train", "model": {"name": "mlp"}}, member]
    teacher = {"source": "ensemble", "members": members, "model": None, "train": None}
    message = fails("check", recipe({"teacher": teacher}), names=["teacher.members.1.model.output", "my.yaml:"])
    assert message.count("[") == 1, message


@pytest.mark.parametrize(
    "teacher",
    [
        {"source": "torchvision", "model": {"name": "resnet18", "widht": 3}, "train": None},
        {"source": "callable", "model": {"name": "torch.nn:Linear", "in_feature": 64}, "train": None},
    ],
    ids=["torchvision", "callable"],
)
def test_a_constructor_refusing_the_teachers_options_names_them(teacher, fails, recipe):
    """A zoo's constructor takes any keyword: what it refuses is told as the recipe's ``teacher.model`` options."""
    unknown = [key for key in teacher["model"] if key != "name"][0]
    fails("check", recipe({"teacher": teacher}), names=["teacher.model", "could not build", unknown])


def test_torchvision_weights_without_pretrained_are_not_ignored(fails, recipe):
    teacher = {"source": "torchvision", "model": {"name": "resnet18", "weights": "IMAGENET1K_V1"}, "train": None}
    fails("check", recipe({"teacher": teacher}), names=["teacher.model.weights", "teacher.pretrained: true"])
