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


TINY_LABELS = ["class_0", "class_1", "class_2"]


def tiny_classifier(*, batchnorm: bool = False):
    """A tiny seeded stock-layer classifier: 32x32 raw RGB in, 3 softmax outputs (untrained but image-dependent).

    With `batchnorm`, a Conv/BN/ReLU/pool stem whose BatchNormalization has non-trivial moving statistics, so
    exports and safe-mode loading really exercise it.
    """
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem_conv")(x)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="stem_bn")(x)
        x = keras.layers.Activation("relu", name="stem_relu")(x)
        x = keras.layers.MaxPooling2D(2, name="stem_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    out = keras.layers.Dense(3, activation="softmax", name="head_dense", kernel_initializer="he_normal")(x)
    model = keras.Model(inp, out, name="tiny_classifier")
    if batchnorm:
        bn = model.get_layer("stem_bn")
        bn.moving_mean.assign(np.linspace(-0.2, 0.2, 8).astype("float32"))
        bn.moving_variance.assign(np.linspace(0.5, 1.5, 8).astype("float32"))
    return model


def train_killed_and_resumed(recipe_path, tmp_path, *, kill_after: str, timeout: float = 300):
    """Runs `inceptune train RECIPE` uninterrupted into `tmp_path/full`, then again into `tmp_path/killed`,
    SIGKILLed 0.3 s after `history.csv` first holds `kill_after` (e.g. "all,1," for inside epoch 2 of stage
    "all"), then `--resume`s that run to its end. Returns (full folder, killed folder, its state.json as it was
    after the kill)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "inceptune", "train", str(recipe_path), "--quiet"]
    full = subprocess.run(cmd + ["--out", str(tmp_path / "full")], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert full.returncode == 0, full.stderr
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            hist = killed / "history.csv"
            if hist.exists() and kill_after in hist.read_text():
                time.sleep(0.3)  # inside the next epoch
                break
            time.sleep(0.02)
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "model.keras").exists()
    state = json.loads((killed / "checkpoints" / "state.json").read_text())
    resumed = subprocess.run([sys.executable, "-m", "inceptune", "train", "--resume", "--out", str(killed),
                              "--quiet"], env=env, capture_output=True, text=True, timeout=timeout)
    assert resumed.returncode == 0, resumed.stderr
    return tmp_path / "full", killed, state
