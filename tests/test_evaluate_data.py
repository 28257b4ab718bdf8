"""Tests for inceptune.evaluate.evaluate_data on a labelled folder: metrics equal scikit-learn's on the same
predictions, classes mapped by name, the data folder never written into."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TINY_LABELS as LABELS

from inceptune.errors import DataError, InceptuneError
from inceptune.evaluate import evaluate_data
from inceptune.prediction import predict


def test_evaluate_data_equals_sklearn_on_the_same_predictions(tiny_run, labelled_images, tmp_path):
    from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

    ev = evaluate_data(tiny_run, labelled_images, tmp_path / "eval", progress=False)
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (tmp_path / "eval" / "report.html").is_file()
    preds = predict(tiny_run, labelled_images, top_k=3)
    y_true = [LABELS.index(p["path"].split("/")[-2]) for p in preds]
    probs = np.array([[dict(p["top"])[lab] for lab in LABELS] for p in preds], dtype=np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # float32 softmax rows, renormalised as compute_metrics does
    assert m["num_samples"] == 12 and ev.metrics["accuracy"] == m["accuracy"]
    assert m["accuracy"] == accuracy_score(y_true, probs.argmax(1))
    assert m["confusion_matrix"] == confusion_matrix(y_true, probs.argmax(1), labels=[0, 1, 2]).tolist()
    assert m["log_loss"] == pytest.approx(log_loss(y_true, probs, labels=[0, 1, 2]), abs=1e-5)
    assert [sum(r) for r in m["confusion_matrix"]] == [4, 4, 4]


def test_evaluate_data_maps_classes_by_name_and_refuses_unknown_ones(tiny_run, labelled_images, tmp_path):
    import shutil

    one = tmp_path / "one"
    shutil.copytree(labelled_images / "class_2", one / "class_2")  # a single class: fine for evaluation
    ev = evaluate_data(tiny_run, one, tmp_path / "e1", progress=False)
    assert ev.metrics["per_class"]["class_2"]["support"] == 4
    assert [sum(r) for r in ev.metrics["confusion_matrix"]] == [0, 0, 4]  # rows: true classes, by name
    assert any("['class_0', 'class_1'] have no image in the data" in w for w in ev.warnings)
    shutil.copytree(labelled_images / "class_0", one / "clas_0")  # a typo'd class name
    with pytest.raises(DataError, match=r"classes the model does not know: 'clas_0' \(did you mean 'class_0'"):
        evaluate_data(tiny_run, one, tmp_path / "e2", progress=False)
    assert not (tmp_path / "e2").exists()


def test_evaluate_data_never_writes_into_the_data_or_over_a_folder(tiny_run, labelled_images, tmp_path):
    with pytest.raises(InceptuneError, match=r"is inside the data folder .* never writes into the data"):
        evaluate_data(tiny_run, labelled_images, labelled_images / "eval", progress=False)
    assert not (labelled_images / "eval").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(InceptuneError, match=r"already exists and is not empty.*HINT: pass --force"):
        evaluate_data(tiny_run, labelled_images, tmp_path / "taken", progress=False)
    evaluate_data(tiny_run, labelled_images, tmp_path / "taken", force=True, progress=False)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert (tmp_path / "taken" / "metrics.json").is_file()
