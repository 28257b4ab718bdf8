"""Tests for inceptune.evaluate: every metric equals scikit-learn's own function on the same predictions."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from inceptune import evaluate
from inceptune.errors import DataError


def _predictions(counts, num_classes, seed, skill=2.0):
    """Targets with the given per-class counts and softmax-like probabilities that lean towards the truth."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, i) for i, n in enumerate(counts)]).astype(int)
    logits = rng.normal(size=(len(y), num_classes))
    logits[np.arange(len(y)), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def _check_against_sklearn(y, probs, labels):
    m = evaluate.compute_metrics(y, probs, labels, top_k=(1, 2, 3, 5))
    c = len(labels)
    idx = list(range(c))
    pred = probs.argmax(1)
    assert m["schema_version"] == 1
    assert m["num_samples"] == len(y) and m["num_classes"] == c and m["labels"] == labels
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    expected_k = [k for k in (1, 2, 3, 5) if k < c]
    assert sorted(m["top_k_accuracy"], key=int) == [str(k) for k in expected_k]
    for k in expected_k:
        ref = skm.accuracy_score(y, pred) if c == 2 else skm.top_k_accuracy_score(y, probs, k=k, labels=idx)
        assert m["top_k_accuracy"][str(k)] == pytest.approx(ref, abs=1e-12)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=idx, zero_division=0.0)
    for i, name in enumerate(labels):
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (p[i], r[i], f[i], s[i]), abs=1e-12
        )
    for avg in ("macro", "weighted"):
        ref = skm.precision_recall_fscore_support(y, pred, labels=idx, average=avg, zero_division=0.0)
        got = m[f"{avg}_avg"]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(ref[:3], abs=1e-12)
        assert got["support"] == len(y)
    if c == 2:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]), abs=1e-12)
        assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, probs[:, 1]), abs=1e-12)
    else:
        assert m["roc_auc"] == pytest.approx(
            skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=idx), abs=1e-12
        )
        assert m["average_precision"] == pytest.approx(
            skm.average_precision_score(label_binarize(y, classes=idx), probs, average="macro"), abs=1e-12
        )
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=idx), abs=1e-9)
    cm = np.array(m["confusion_matrix"])
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=idx))
    # Rows sum to the class supports.
    np.testing.assert_array_equal(cm.sum(axis=1), [m["per_class"][name]["support"] for name in labels])
    assert m["warnings"] == []
    return m


def test_multiclass_balanced_metrics_equal_sklearn():
    y, probs = _predictions([15, 15, 15, 15], 4, seed=0)
    m = _check_against_sklearn(y, probs, ["a", "b", "c", "d"])
    assert list(m["top_k_accuracy"]) == ["1", "2", "3"]  # k=5 >= C is left out


def test_imbalanced_metrics_equal_sklearn():
    y, probs = _predictions([50, 8, 2], 3, seed=1, skill=1.0)
    m = _check_against_sklearn(y, probs, ["common", "rare", "very_rare"])
    assert [m["per_class"][k]["support"] for k in ("common", "rare", "very_rare")] == [50, 8, 2]
    # Imbalance: balanced accuracy is the mean recall, not the accuracy.
    recalls = [m["per_class"][k]["recall"] for k in ("common", "rare", "very_rare")]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-12)


def test_binary_metrics_equal_sklearn():
    y, probs = _predictions([30, 10], 2, seed=2, skill=1.5)
    m = _check_against_sklearn(y, probs, ["neg", "pos"])
    assert list(m["top_k_accuracy"]) == ["1"]
    # Binary AUC of either class is the same number; the per-class table shows it twice.
    assert m["roc_auc_per_class"]["neg"] == pytest.approx(m["roc_auc"], abs=1e-12)
    assert m["roc_auc_per_class"]["pos"] == pytest.approx(m["roc_auc"], abs=1e-12)


def test_class_absent_from_y_true_gives_null_and_warning():
    y, probs = _predictions([10, 0, 12], 3, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = evaluate.compute_metrics(y, probs, ["a", "b", "c"])
    assert [str(w.message) for w in caught] == m["warnings"]
    assert "classes ['b'] have no sample in y_true" in m["warnings"][0]
    assert "class 'b' has no sample in y_true" in m["warnings"][1]
    assert m["roc_auc_per_class"]["b"] is None and m["average_precision_per_class"]["b"] is None
    ref_auc = [skm.roc_auc_score(y == i, probs[:, i]) for i in (0, 2)]
    ref_ap = [skm.average_precision_score(y == i, probs[:, i]) for i in (0, 2)]
    assert m["roc_auc_per_class"]["a"] == pytest.approx(ref_auc[0], abs=1e-12)
    assert m["roc_auc"] == pytest.approx(np.mean(ref_auc), abs=1e-12)
    assert m["average_precision"] == pytest.approx(np.mean(ref_ap), abs=1e-12)
    assert m["per_class"]["b"]["support"] == 0
    assert len(m["warnings"]) == 2
    json.dumps(m, allow_nan=False)  # null, never NaN


def test_binary_with_one_class_present_has_null_auc():
    y = np.zeros(4, dtype=int)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    with pytest.warns(UserWarning):
        m = evaluate.compute_metrics(y, probs, ["neg", "pos"])
    assert m["roc_auc"] is None
    assert m["average_precision"] is None
    assert m["accuracy"] == 0.75


def test_expected_calibration_error_by_hand():
    # Top-1 confidences 0.9 (right), 0.9 (wrong), 0.62 (right), 0.56 (wrong); 15 bins of width 1/15.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.38, 0.62], [0.56, 0.44]])
    y = np.array([0, 1, 1, 1])
    # bin 13 (0.867, 0.933]: acc 0.5, conf 0.9 -> 2/4 * 0.4; bin 9 (0.6, 0.667]: 1/4 * 0.38;
    # bin 8 (0.533, 0.6]: acc 0, conf 0.56 -> 1/4 * 0.56.
    expected = 0.5 * 0.4 + 0.25 * 0.38 + 0.25 * 0.56
    ece, bins = evaluate.expected_calibration_error(y, probs, return_bins=True)
    assert ece == pytest.approx(expected, abs=1e-12)
    assert len(bins) == 15 and [b["count"] for b in bins] == [0] * 8 + [1, 1, 0, 0, 0, 2, 0]
    assert bins[13]["accuracy"] == 0.5 and bins[13]["confidence"] == pytest.approx(0.9)
    m = evaluate.compute_metrics(y, probs, ["x", "y"])
    assert m["ece"] == pytest.approx(expected, abs=1e-12)
    assert m["calibration"]["num_bins"] == 15


def test_misclassified_list_most_confident_first_with_paths():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05], [0.6, 0.3, 0.1]])
    y = np.array([0, 0, 2, 2, 1])
    paths = [f"img/{i}.png" for i in range(5)]
    m = evaluate.compute_metrics(y, probs, ["a", "b", "c"], paths=paths)
    # Probabilities are renormalised in float64, hence approx for the confidences.
    assert [(r["index"], r["path"], r["true"], r["predicted"]) for r in m["misclassified"]] == [
        (3, "img/3.png", "c", "b"),
        (1, "img/1.png", "a", "b"),
        (4, "img/4.png", "b", "a"),
    ]
    assert [r["confidence"] for r in m["misclassified"]] == pytest.approx([0.9, 0.8, 0.6], abs=1e-12)
    assert [r["true_confidence"] for r in m["misclassified"]] == pytest.approx([0.05, 0.1, 0.3], abs=1e-12)
    assert m["predictions"]["y_true"] == [0, 0, 2, 2, 1]
    no_paths = evaluate.compute_metrics(y, probs, ["a", "b", "c"], keep_predictions=False)
    assert [r["path"] for r in no_paths["misclassified"]] == [None, None, None]
    assert "predictions" not in no_paths


def test_bad_inputs_raise_clear_errors():
    probs = np.array([[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(DataError, match=r"not logits"):
        evaluate.compute_metrics([0, 1], np.array([[2.0, -1.0], [0.1, 3.0]]), ["a", "b"])
    with pytest.raises(DataError, match=r"class indices must lie in \[0, 2\), received values from 0 to 2"):
        evaluate.compute_metrics([0, 2], probs, ["a", "b"])
    with pytest.raises(DataError, match=r"expected shape \(N, 3\)"):
        evaluate.compute_metrics([0, 1], probs, ["a", "b", "c"])
    with pytest.raises(DataError, match="expected 2 paths"):
        evaluate.compute_metrics([0, 1], probs, ["a", "b"], paths=["x"])


def test_write_metrics_is_atomic_json(tmp_path):
    y, probs = _predictions([5, 5, 5], 3, seed=4)
    m = evaluate.compute_metrics(y, probs, ["a", "b", "c"])
    out = evaluate.write_metrics(m, tmp_path / "run" / "metrics.json")
    assert json.loads(out.read_text()) == json.loads(json.dumps(m))
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json"]  # no temporary file left
    with pytest.raises(ValueError):
        evaluate.write_metrics({"x": float("nan")}, out)
    assert json.loads(out.read_text())["accuracy"] == m["accuracy"]  # the old file survived the failed write


def test_check_labels_errors_and_warnings():
    assert evaluate.check_labels(["cat", "dog"], ["cat", "dog"]) == []
    with pytest.raises(DataError, match=r"No class of the data matches"):
        evaluate.check_labels(["cat", "dog"], ["car", "bus"])
    with pytest.raises(DataError, match=r"'dgo' \(did you mean 'dog'\?\)"):
        evaluate.check_labels(["cat", "dog"], ["cat", "dgo"])
    warns = evaluate.check_labels(["cat", "dog", "fox"], ["dog", "cat"])
    assert len(warns) == 1 and "['fox'] have no image in the data" in warns[0]
    assert evaluate.check_labels(["cat", "dog"], ["dog", "cat"]) == [
        "the data lists its classes in a different order than the model; targets are mapped by name"
    ]
