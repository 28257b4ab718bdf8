"""Tests for inceptune.models: loading a model (safe mode on) and its labels from a run folder or a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import images as random_images
from helpers import tiny_classifier

from inceptune import export, models
from inceptune.errors import ModelLoadError

LABELS = ["daisy", "rose", "tulip"]



def test_load_model_from_run_dir_and_file(tmp_path):
    model = tiny_classifier(batchnorm=True)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "labels.json").write_text(json.dumps(LABELS))
    loaded = models.load_model(run)
    images = random_images(3, 32, seed=1)
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), atol=1e-6)
    assert models.load_labels(run) == LABELS
    assert models.load_model(run / "model.keras").name == "tiny_classifier"
    (run / "labels.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(ModelLoadError, match=r"names 2 classes but the model has 3 outputs"):
        models.load_model(run)


def test_load_model_refusals(tmp_path):
    import keras

    with pytest.raises(ModelLoadError, match=r"does not exist"):
        models.load_model(tmp_path / "nope.keras")
    h5 = tmp_path / "old.h5"
    h5.write_bytes(b"\x89HDF")
    with pytest.raises(ModelLoadError, match=r"legacy HDF5 files are not supported"):
        models.load_model(h5)
    with pytest.raises(ModelLoadError, match=r"holds no model.keras"):
        models.load_model(tmp_path)
    saved = export.export_model(tiny_classifier(batchnorm=True), tmp_path / "sm", "savedmodel")
    with pytest.raises(ModelLoadError, match=r"is a TensorFlow SavedModel"):
        models.load_model(saved)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match=r"is not a loadable .keras file"):
        models.load_model(corrupt)

    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    keras.Model(inp, out).save(tmp_path / "lambda.keras")
    with pytest.raises(ModelLoadError, match=r"safe mode refused .*lambda.keras"):
        models.load_model(tmp_path / "lambda.keras")


def test_load_labels_variants(tmp_path):
    assert models.load_labels(tmp_path) is None
    (tmp_path / "labels.json").write_text('{"0": "a"}')
    with pytest.raises(ModelLoadError, match=r"must hold a JSON list of class names"):
        models.load_labels(tmp_path / "model.tflite")
    (tmp_path / "labels.json").write_text('["a", "a"]')
    with pytest.raises(ModelLoadError, match=r"lists a class name twice"):
        models.load_labels(tmp_path)


def test_saving_reuses_keras_attribute_skipsets(tmp_path, monkeypatch):
    """Keras stores its per-type attribute skip sets under one name and reads them under another, so each layer
    of a save rebuilds one; `keras_saving_skipsets` stores them where they are read: none rebuilt, the same
    file."""
    import zipfile

    import keras
    from keras.src.backend.common import global_state

    model = tiny_classifier(batchnorm=True)
    built = []
    real = global_state.set_global_attribute

    def counting(name, value):
        if name.startswith("saving_attr_skip"):
            built.append(name)
        real(name, value)

    keras.backend.clear_session()  # this thread's Keras state: no skip set cached by an earlier test
    monkeypatch.setattr(global_state, "set_global_attribute", counting)
    model.save(tmp_path / "plain.keras")
    plain = len(built)
    models.keras_saving_skipsets()
    built.clear()
    model.save(tmp_path / "fixed.keras")
    assert built == [] and plain >= len(model.layers)  # every layer rebuilt a set before, none after
    a, b = (zipfile.ZipFile(tmp_path / f"{n}.keras") for n in ("plain", "fixed"))
    for name in ("config.json", "model.weights.h5"):
        assert a.read(name) == b.read(name)
    loaded = models.load_model(tmp_path / "fixed.keras")
    images = random_images(2, 32, seed=3)
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), atol=1e-6)
