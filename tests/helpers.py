"""Small shared builders for the tests (kept tiny: see STYLE.md §13)."""

from __future__ import annotations

import functools

import keras
import numpy as np


@functools.cache
def _cached(name: str, size: int):
    from inceptune.architectures import load_backbone

    keras.utils.set_random_seed(0)
    return load_backbone(name, weights=None, image_size=size)


def backbone(name: str = "inception_v3", size: int = 75):
    """A backbone built once per test session (do not mutate: call fresh_backbone to change flags)."""
    return _cached(name, size)


def fresh_backbone(name: str = "inception_v3", size: int = 75):
    from inceptune.architectures import load_backbone

    keras.utils.set_random_seed(0)
    return load_backbone(name, weights=None, image_size=size)


def images(n: int = 2, size: int = 75, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


def make_image_folder(root, *, classes: int = 4, per_class: int = 60, size: int = 32, seed: int = 0,
                      ext: str = "png"):
    """Writes a class-per-folder dataset of visually distinct classes (colour and pattern) and returns root.

    Class k: a base colour (red, green, blue, grey) and a pattern (none, stripes, checks, blob), plus noise.
    """
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = [(200, 40, 40), (40, 180, 60), (50, 70, 210), (128, 128, 128), (220, 200, 40), (160, 60, 200)]
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(classes):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.array(colours[k % len(colours)], dtype="float32") * rng.uniform(0.75, 1.15)
            img = np.ones((size, size, 3), "float32") * base
            if k % 4 == 1:
                img *= (0.6 + 0.4 * ((yy // 4) % 2))[..., None]
            elif k % 4 == 2:
                img *= (0.6 + 0.4 * (((yy // 4) + (xx // 4)) % 2))[..., None]
            elif k % 4 == 3:
                cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 5) ** 2] = 255
            img += rng.normal(0, 12, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype("uint8")).save(folder / f"c{k}_img_{i:03d}.{ext}")
    return root


def mini_recipe(data_dir, **over):
    """A small two-stage recipe on inception_mini as a dict."""
    recipe = {
        "data": {"dir": str(data_dir), "image_size": 32, "split": {"val": 0.2, "test": 0.2, "seed": 0},
                 "batch_size": 32},
        "model": {"backbone": "inception_mini", "weights": "none", "head": {"dense": [], "dropout": 0.0}},
        "stages": [
            {"name": "head", "train": "head", "epochs": 2, "lr": 1e-2},
            {"name": "all", "train": "all", "epochs": 3, "lr": 3e-3, "schedule": "cosine"},
        ],
        "cache": "off",
        "seed": 0,
    }
    for key, value in over.items():
        recipe[key] = value
    return recipe
