"""Image folders: one sub-folder per class, any format Pillow reads, read from disk as training goes.

Two layouts are understood. With ``train/`` (and optionally ``val/``, ``validation/``, ``valid/`` or ``dev/``, and
``test/``) under ``path``, each holding class folders, those splits are used as they are; a
missing validation or test split is cut from ``train/`` (stratified, seeded). Without them,
``path``'s own sub-folders are the classes and kdforge draws all three splits.

Images are decoded in DataLoader worker processes, resized (shorter side) and centre-cropped to
``image_size``, and normalised with a scalar ``mean``/``std`` (roughly ImageNet's averaged over
channels by default); training may crop at random (``train_crop: random_resized``) and ``flip``.
Those random choices are seeded per sample and epoch, so a resumed run sees the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
import torch
from torch.utils.data import Dataset

from kdforge.bounds import AtLeastOne, Positive, Share, needs
from kdforge.data.bundle import DATASETS, SPLIT_NAMES, DataBundle, DatasetSplit, split_rows
from kdforge.errors import KdforgeError
from kdforge.files import FileReadError

_CROP_SCALE = needs("min_scale", "train_crop", "is the least area a random crop keeps", "random_resized")
Channels = Literal[1, 3]
TrainCrop = Literal["center", "random_resized"]
NormalizeOn = Literal["workers", "device"]


class ImageOptions(pydantic.BaseModel):
    """The image options every image dataset takes (:func:`image_folder` says what each does), but where
    the images are normalised."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    image_size: AtLeastOne = 32
    channels: Channels = 3
    train_crop: TrainCrop = "center"
    min_scale: Share = 0.08
    flip: bool = False
    mean: float = 0.45
    std: Positive = 0.225

    @pydantic.model_validator(mode="after")
    def _follow_rules(self) -> ImageOptions:
        if problem := _CROP_SCALE(self):
            raise ValueError(problem)
        return self


class ImageFiles(Dataset):
    """Image files and their class indices: ``[i]`` -> (image tensor [C, H, W], label)."""

    def __init__(self, files: list[Path], labels: np.ndarray, mode: str, transform: Callable[[Any], torch.Tensor]):
        self.files, self.labels, self.mode, self.transform = files, labels, mode, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as image:
                picture = image.convert(self.mode)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise FileReadError(f"image '{path}' cannot be read ({err}): replace or remove it") from None
        return self.transform(picture), torch.tensor(int(self.labels[index]))


@DATASETS.register("image_folder", rules=[_CROP_SCALE])
def image_folder(
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str,
    image_size: AtLeastOne = 32,
    channels: Channels = 3,
    train_crop: TrainCrop = "center",
    min_scale: Share = 0.08,
    flip: bool = False,
    mean: float = 0.45,
    std: Positive = 0.225,
    normalize_on: NormalizeOn = "workers",
) -> DataBundle:
    """Class-per-sub-folder images under ``path`` (its own ``train/``, ``val/``, ``test/`` used as given;
    see the module docstring). ``image_size``: the side of the square the images are resized and
    centre-cropped to; ``channels``: 3 (RGB) or 1 (grey); ``train_crop``: ``center`` or
    ``random_resized`` (a random crop of at least ``min_scale`` of the area, as ImageNet training does);
    ``flip``: random horizontal flips in training; ``mean``/``std``: the normalisation, done in the
    DataLoader ``workers`` or on the ``device`` (``normalize_on``: uint8 images cross to it)."""
    root = Path(path)
    if not root.is_dir():
        raise KdforgeError(f"image_folder: '{root}' is not a folder")
    given = {
        split: folder
        for split, names in SPLIT_NAMES.items()
        if (folder := next((root / n for n in names if (root / n).is_dir()), None)) is not None
    }
    if given and "train" not in given:
        found = " and ".join(f"{folder.name}/" for folder in given.values())
        raise KdforgeError(f"image_folder: '{root}' has {found} but no train/ to go with it")
    classes = _classes(given.get("train", root))
    listed = {split: _images(folder, classes) for split, folder in given.items()} or {"train": _images(root, classes)}
    files, labels = listed["train"]
    if empty := [name for label, name in enumerate(classes) if not np.any(labels == label)]:
        raise KdforgeError(
            f"image_folder: the class folder(s) {', '.join(empty)} under '{given.get('train', root)}' hold no images, "
            "so those classes could never be learnt: add their images or remove the folders"
        )
    wanted = [s for s in ("val", "test") if s not in listed]
    fractions = {"val": val_fraction, "test": test_fraction}
    parts = split_rows(labels, {s: fractions[s] for s in wanted}, seed) if wanted else [np.arange(len(files))]
    for split, index in zip(["train", *wanted], parts):
        listed[split] = ([files[i] for i in index], labels[index])
    mode = "RGB" if channels == 3 else "L"
    trained, shaped, on_device = image_transforms(
        ImageOptions.model_construct(  # checked with the recipe
            image_size=image_size,
            channels=channels,
            train_crop=train_crop,
            min_scale=min_scale,
            flip=flip,
            mean=mean,
            std=std,
        ),
        normalize_on,
    )
    splits = {
        split: DatasetSplit(ImageFiles(f, y, mode, trained if split == "train" else shaped), y, on_device)
        for split, (f, y) in listed.items()
    }
    return DataBundle(
        root.name,
        splits["train"],
        splits["val"],
        splits["test"],
        num_classes=len(classes),
        input_shape=(channels, image_size, image_size),
        scaling=(mean, std),
    )


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise KdforgeError(
            f"image_folder: '{folder}' has no class folders; put each class's images in a folder of its own "
            "(path/<class>/<image>, or path/train/<class>/<image> with val/ and test/ beside it)"
        )
    return classes


def _images(folder: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """The image files under ``folder``'s class folders, in a fixed order, and their class indices."""
    from PIL import Image

    suffixes = {s.lower() for s in Image.registered_extensions()}
    present = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if unknown := sorted(present - set(classes)):
        raise KdforgeError(f"image_folder: '{folder}' has class folders the training split lacks: {', '.join(unknown)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(
            p
            for p in (folder / name).rglob("*")
            if p.suffix.lower() in suffixes and p.is_file() and not p.name.startswith(".")
        )
        files += found
        labels += [label] * len(found)
    if not files:
        raise KdforgeError(
            f"image_folder: no images under '{folder}' (formats: {', '.join(sorted(suffixes)[:8])}, ...)"
        )
    return files, np.asarray(labels, dtype=np.int64)


def image_transforms(
    options: ImageOptions, normalize_on: NormalizeOn = "workers"
) -> tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor], Normalize | None]:
    """(training, evaluation) transforms of PIL images into tensors [C, size, size], and what the loader
    applies to each batch on the device: with ``normalize_on: device`` the workers hand over uint8 images (a
    quarter of the bytes to copy to an accelerator) and :class:`Normalize` makes them floats there, in batches."""
    normalize = Normalize(options.mean, options.std)
    in_workers = None if normalize_on == "device" else normalize
    size, random_crop = options.image_size, options.train_crop == "random_resized"
    train = _transform(size, options.min_scale if random_crop else None, options.flip, in_workers)
    return train, _transform(size, None, False, in_workers), None if in_workers else normalize


class Normalize:
    """uint8 images -> floats in [0, 1], standardised by a scalar ``mean`` and ``std`` (a batch or one image)."""

    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def _transform(
    size: int, min_scale: float | None, flip: bool, normalize: Normalize | None
) -> Callable[[Any], torch.Tensor]:
    """PIL image (or image tensor) -> tensor [C, size, size] (torchvision transforms v2): uint8, or
    normalised floats with ``normalize``."""
    from torchvision.transforms import v2

    crop = (
        [v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True)]
        if min_scale is not None
        else [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    )
    return v2.Compose(
        [
            v2.ToImage(),
            *crop,
            *([v2.RandomHorizontalFlip()] if flip else []),
            *([normalize] if normalize is not None else []),
        ]
    )
