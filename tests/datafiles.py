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
