"""Shared test set-up: an isolated KERAS_HOME, the `slow` marker, and a clean Keras session per test."""

from __future__ import annotations

import os
import tempfile

# Importing Keras writes ~/.keras/keras.json: point it at a temporary folder before any import.
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="inceptune-keras-home-"))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# the feature cache writes to ~/.cache by default: keep tests out of it
os.environ.setdefault("INCEPTUNE_CACHE_DIR", tempfile.mkdtemp(prefix="inceptune-feature-cache-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _clear_keras_session():
    import keras

    # without the full garbage collection (free_memory=True costs ~0.5 s a test, minutes over the suite);
    # Python's own collector still frees the models of earlier tests
    keras.backend.clear_session(free_memory=False)
    yield


@pytest.fixture(scope="module")
def labelled_images(tmp_path_factory):
    """A class-per-folder dataset: 3 classes of 4 images each (the classes of `tiny_run`)."""
    from helpers import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("pred") / "images", classes=3, per_class=4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A minimal run folder: model.keras (`helpers.tiny_classifier`) + labels.json (`helpers.TINY_LABELS`)."""
    import json

    from helpers import TINY_LABELS, tiny_classifier

    d = tmp_path_factory.mktemp("run")
    tiny_classifier().save(d / "model.keras")
    (d / "labels.json").write_text(json.dumps(TINY_LABELS))
    return d
