"""Small data files in the formats kdforge reads, written by the tests."""

import numpy as np
from PIL import Image

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def write_images(folder, per_class, seed=0, size=(12, 10)):
    """``per_class`` PNGs of each class, the class's colour plus noise; returns the folder."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, size=(*size[::-1], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{i:03d}.png")
    return folder


def cifar_records(n, classes, seed, label_bytes=1):
    """n records of the binary version: label byte(s), then the red, green and blue planes; the
    image's red plane is filled with its label so that labels and pixels can be checked together."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n).astype(np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3, 32, 32)).astype(np.uint8)
    pixels[:, 0] = labels[:, None, None]
    heads = np.stack([labels // 5, labels] if label_bytes == 2 else [labels], 1)  # CIFAR-100: coarse, fine
    return np.concatenate([heads, pixels.reshape(n, -1)], 1).tobytes(), labels
