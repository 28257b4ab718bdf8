"""Small shared builders for the tests (kept tiny: see STYLE.md §13)."""

from __future__ import annotations

import functools

import keras
import numpy as np


@functools.lru_cache(maxsize=None)
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
