"""Tests for inceptune.evaluate.evaluate_data on a labelled folder: metrics equal scikit-learn's on the same
predictions, classes mapped by name, the data folder never written into."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_image_folder

from inceptune.errors import DataError, InceptuneError
from inceptune.evaluate import evaluate_data
from inceptune.prediction import predict

LABELS = ["class_0", "class_1", "class_2"]


def _classifier():
    """A tiny seeded stock-layer classifier, 32x32 raw RGB in, 3 softmax outputs (untrained but image-dependent)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    out = keras.layers.Dense(3, activation="softmax", name="head_dense", kernel_initializer="he_normal")(x)
    return keras.Model(inp, out, name="tiny_classifier")


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("pred") / "images", classes=3, per_class=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A minimal run folder: model.keras + labels.json."""
    d = tmp_path_factory.mktemp("run")
    _classifier().save(d / "model.keras")
    (d / "labels.json").write_text(json.dumps(LABELS))
    return d


def test_evaluate_data_equals_sklearn_on_the_same_predictions(run_dir, images_dir, tmp_path):
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

    ev = evaluate_data(run_dir, images_dir, tmp_path / "eval", progress=False)
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (tmp_path / "eval" / "report.html").is_file()
    preds = predict(run_dir, images_dir, top_k=3)
    y_true = [LABELS.index(p["path"].split("/")[-2]) for p in preds]
    probs = np.array([[dict(p["top"])[lab] for lab in LABELS] for p in preds], dtype=np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # float32 softmax rows, renormalised as compute_metrics does
    assert m["num_samples"] == 12 and ev.metrics["accuracy"] == m["accuracy"]
    assert m["accuracy"] == accuracy_score(y_true, probs.argmax(1))
    assert m["confusion_matrix"] == confusion_matrix(y_true, probs.argmax(1), labels=[0, 1, 2]).tolist()
    assert m["log_loss"] == pytest.approx(log_loss(y_true, probs, labels=[0, 1, 2]), abs=1e-5)
    assert [sum(r) for r in m["confusion_matrix"]] == [4, 4, 4]


def test_evaluate_data_maps_classes_by_name_and_refuses_unknown_ones(run_dir, images_dir, tmp_path):
    import shutil

    one = tmp_path / "one"
    shutil.copytree(images_dir / "class_2", one / "class_2")  # a single class: fine for evaluation
    ev = evaluate_data(run_dir, one, tmp_path / "e1", progress=False)
    assert ev.metrics["per_class"]["class_2"]["support"] == 4
    assert [sum(r) for r in ev.metrics["confusion_matrix"]] == [0, 0, 4]  # rows: true classes, by name
    assert any("['class_0', 'class_1'] have no image in the data" in w for w in ev.warnings)
    shutil.copytree(images_dir / "class_0", one / "clas_0")  # a typo'd class name
    with pytest.raises(DataError, match=r"classes the model does not know: 'clas_0' \(did you mean 'class_0'"):
        evaluate_data(run_dir, one, tmp_path / "e2", progress=False)
    assert not (tmp_path / "e2").exists()


def test_evaluate_data_never_writes_into_the_data_or_over_a_folder(run_dir, images_dir, tmp_path):
    with pytest.raises(InceptuneError, match=r"is inside the data folder .* never writes into the data"):
        evaluate_data(run_dir, images_dir, images_dir / "eval", progress=False)
    assert not (images_dir / "eval").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(InceptuneError, match=r"already exists and is not empty.*HINT: pass --force"):
        evaluate_data(run_dir, images_dir, tmp_path / "taken", progress=False)
    evaluate_data(run_dir, images_dir, tmp_path / "taken", force=True, progress=False)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert (tmp_path / "taken" / "metrics.json").is_file()
