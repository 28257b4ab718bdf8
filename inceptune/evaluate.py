"""Classification metrics (scikit-learn), the compiled prediction fast path and label checks.

``compute_metrics`` turns integer targets and predicted probabilities into one JSON-ready dictionary;
``write_metrics`` stores it atomically as ``metrics.json``. Every number is computed by scikit-learn's own
function on the same predictions, except the expected calibration error, which scikit-learn lacks.

``metrics.json`` schema, ``schema_version`` 1 (**contract**; a key is added, never renamed, without a version
bump). Values that are undefined on the given data are ``null`` and come with an entry in ``warnings``::

    {
      "schema_version": 1,
      "num_samples": 120,                       # N
      "num_classes": 3,                         # C = len(labels)
      "labels": ["cat", "dog", "fox"],          # index i of every list/matrix below is labels[i]
      "accuracy": 0.91,                         # sklearn.metrics.accuracy_score
      "balanced_accuracy": 0.89,                # sklearn.metrics.balanced_accuracy_score (classes present in y_true)
      "top_k_accuracy": {"1": 0.91, "3": ...},  # sklearn.metrics.top_k_accuracy_score, only for k < C
      "per_class": {"cat": {"precision": .., "recall": .., "f1": .., "support": 40}, ...},
      "macro_avg": {"precision": .., "recall": .., "f1": .., "support": 120},     # unweighted mean over classes
      "weighted_avg": {"precision": .., "recall": .., "f1": .., "support": 120},  # weighted by support
      "roc_auc": 0.97,                          # C > 2: one-vs-rest, macro over the classes where it is defined;
                                                # C == 2: roc_auc_score(y_true, probs[:, 1])
      "roc_auc_per_class": {"cat": 0.98, ...},  # one-vs-rest; null for a class absent from y_true
      "average_precision": 0.93,                # C > 2: macro over defined classes; C == 2: AP of labels[1]
      "average_precision_per_class": {"cat": 0.95, ...},
      "log_loss": 0.31,                         # sklearn.metrics.log_loss (natural log)
      "confusion_matrix": [[38, 2, 0], ...],    # rows: true class, columns: predicted class; row sums = support
      "ece": 0.04,                              # expected calibration error of the top-1 confidence
      "calibration": {"num_bins": 15, "bins": [{"lower": 0.0, "upper": 0.0667, "count": 0,
                                                "accuracy": null, "confidence": null}, ...]},
      "misclassified": [{"index": 7, "path": "img/7.jpg" | null, "true": "dog", "predicted": "cat",
                         "confidence": 0.93, "true_confidence": 0.05}, ...],   # most confident mistakes first
      "warnings": ["roc_auc: class 'fox' has no sample in y_true: its one-vs-rest AUC is undefined (null)"],
      "predictions": {"y_true": [0, 2, ...], "probs": [[0.9, 0.05, 0.05], ...]}  # omitted when
                                                # keep_predictions=False; report.py draws ROC/PR curves from it
    }

Expected calibration error (Guo et al., 2017, "On Calibration of Modern Neural Networks"): the top-1
confidences are put into ``ECE_BINS`` = 15 equal-width bins ``(lower, upper]`` over [0, 1] (the first bin also
holds 0); ``ECE = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|``.

Example:
    probs = predict_proba(model, images)
    metrics = compute_metrics(y_true, probs, ["cat", "dog"], paths=files)
    write_metrics(metrics, run_dir / "metrics.json")
"""

from __future__ import annotations

import json
import warnings as _warnings
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from inceptune._io import atomic_write_text
from inceptune.errors import DataError, closest

__all__ = [
    "ECE_BINS",
    "METRICS_SCHEMA_VERSION",
    "check_labels",
    "compute_metrics",
    "expected_calibration_error",
    "predict_proba",
    "write_metrics",
]

METRICS_SCHEMA_VERSION = 1
ECE_BINS = 15  # Guo et al. (2017) use 15 equal-width bins; a common default since.


# === Metrics ===


def compute_metrics(
    y_true,
    probs,
    labels: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    top_k: Iterable[int] = (1, 3, 5),
    keep_predictions: bool = True,
) -> dict:
    """Computes every classification metric of ``metrics.json`` (schema in the module docstring).

    Args:
        y_true: array-like of int, shape (N,). True class indices into ``labels``.
        probs: array-like of float, shape (N, C). Predicted probabilities (softmax outputs); rows must sum to 1
            (within 1e-3) and are renormalised in float64.
        labels: list of str, length C >= 2. Class names; ``labels[i]`` is column i of ``probs``.
        paths: list of str, length N, or None. File of each sample, copied into ``misclassified``.
            Defaults to None (paths are null).
        top_k: iterable of int. The k of top-k accuracy; only k < C are reported. Defaults to (1, 3, 5).
        keep_predictions: bool. Store ``y_true`` and ``probs`` under ``predictions`` so the report can draw
            ROC and precision-recall curves. Defaults to True.

    Returns:
        dict. JSON-ready (plain Python numbers, ``None`` for undefined values).

    Raises:
        DataError: shapes disagree, a target is outside ``[0, C)``, ``probs`` are not probabilities.
    """
    from sklearn import metrics as skm

    y_true, probs, labels = _validate_inputs(y_true, probs, labels, paths)
    n, c = probs.shape
    idx = list(range(c))
    y_pred = probs.argmax(axis=1)
    found: list[str] = []

    out: dict = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "num_samples": int(n),
        "num_classes": int(c),
        "labels": list(labels),
    }
    out["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    with _warnings.catch_warnings():
        # sklearn warns when y_pred holds classes absent from y_true; the value is still the documented one.
        _warnings.simplefilter("ignore", UserWarning)
        out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y_true, y_pred))

    ks = sorted({int(k) for k in top_k})
    bad_k = [k for k in ks if k < 1]
    if bad_k:
        raise DataError(f"top_k: every k must be >= 1, received top_k={list(top_k)}.")
    out["top_k_accuracy"] = {}
    for k in ks:
        if k >= c:
            continue
        if c == 2:  # k == 1; sklearn's binary form thresholds probs[:, 1] instead of taking the argmax.
            value = out["accuracy"]
        else:
            value = float(skm.top_k_accuracy_score(y_true, probs, k=k, labels=idx))
        out["top_k_accuracy"][str(k)] = value

    prec, rec, f1, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0.0)
    out["per_class"] = {
        labels[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(sup[i])}
        for i in idx
    }
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=idx, average=avg, zero_division=0.0
        )
        out[f"{avg}_avg"] = {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
    missing = [labels[i] for i in idx if sup[i] == 0]
    if missing:
        found.append(
            f"classes {missing} have no sample in y_true: their recall and F1 are 0 by convention and they "
            "lower the macro averages"
        )

    _ranking_metrics(out, y_true, probs, labels, found)
    out["log_loss"] = float(skm.log_loss(y_true, probs, labels=idx))
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=idx).astype(int).tolist()

    ece, bins = expected_calibration_error(y_true, probs, num_bins=ECE_BINS, return_bins=True)
    out["ece"] = ece
    out["calibration"] = {"num_bins": ECE_BINS, "bins": bins}

    wrong = np.flatnonzero(y_pred != y_true)
    conf = probs[np.arange(n), y_pred]
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    out["misclassified"] = [
        {
            "index": int(i),
            "path": None if paths is None else str(paths[i]),
            "true": labels[y_true[i]],
            "predicted": labels[y_pred[i]],
            "confidence": float(conf[i]),
            "true_confidence": float(probs[i, y_true[i]]),
        }
        for i in wrong
    ]
    out["warnings"] = found
    for message in found:
        _warnings.warn(message, UserWarning, stacklevel=2)
    if keep_predictions:
        out["predictions"] = {
            "y_true": y_true.astype(int).tolist(),
            "probs": np.round(probs, 7).tolist(),
        }
    return out


def _ranking_metrics(out: dict, y_true: np.ndarray, probs: np.ndarray, labels: list[str], found: list[str]):
    """Fills ROC AUC and average precision (overall and per class), null where a class makes them undefined."""
    from sklearn import metrics as skm

    c = probs.shape[1]
    present = set(np.unique(y_true).tolist())
    auc_pc: dict[str, float | None] = {}
    ap_pc: dict[str, float | None] = {}
    for i in range(c):
        positives = y_true == i
        if i not in present:
            auc_pc[labels[i]] = ap_pc[labels[i]] = None
            found.append(
                f"roc_auc/average_precision: class {labels[i]!r} has no sample in y_true: its one-vs-rest "
                "AUC and average precision are undefined (null) and left out of the macro averages"
            )
        elif positives.all():
            auc_pc[labels[i]] = None  # one-vs-rest AUC needs negatives too
            ap_pc[labels[i]] = float(skm.average_precision_score(positives, probs[:, i]))
        else:
            auc_pc[labels[i]] = float(skm.roc_auc_score(positives, probs[:, i]))
            ap_pc[labels[i]] = float(skm.average_precision_score(positives, probs[:, i]))

    if c == 2:
        if len(present) < 2:
            out["roc_auc"] = None
            found.append(
                f"roc_auc: y_true holds only class {labels[next(iter(present))]!r}: ROC AUC needs both classes "
                "(null)"
            )
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, probs[:, 1]))
        out["average_precision"] = ap_pc[labels[1]]
    else:
        defined_auc = [v for v in auc_pc.values() if v is not None]
        defined_ap = [v for v in ap_pc.values() if v is not None]
        out["roc_auc"] = float(np.mean(defined_auc)) if defined_auc else None
        out["average_precision"] = float(np.mean(defined_ap)) if defined_ap else None
        if not defined_auc:
            found.append("roc_auc: no class has both positive and negative samples in y_true (null)")
    out["roc_auc_per_class"] = auc_pc
    out["average_precision_per_class"] = ap_pc


def expected_calibration_error(y_true, probs, *, num_bins: int = ECE_BINS, return_bins: bool = False):
    """Expected calibration error of the top-1 confidence over equal-width bins.

    Bins are ``(lower, upper]`` over [0, 1] with the first bin closed on the left; empty bins contribute 0.

    Args:
        y_true: array-like of int, shape (N,). True class indices.
        probs: array-like of float, shape (N, C). Predicted probabilities.
        num_bins: int. Number of equal-width bins. Defaults to ``ECE_BINS`` (15).
        return_bins: bool. Also return the per-bin table. Defaults to False.

    Returns:
        float, or (float, list of dict) with ``lower``, ``upper``, ``count``, ``accuracy``, ``confidence``
        per bin (``accuracy``/``confidence`` are None for an empty bin) when ``return_bins`` is True.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    n = len(y_true)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # Bin b holds edges[b] < conf <= edges[b+1]; conf == 0 goes to bin 0.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
    ece = 0.0
    bins = []
    for b in range(num_bins):
        mask = which == b
        count = int(mask.sum())
        acc = float(correct[mask].mean()) if count else None
        mean_conf = float(conf[mask].mean()) if count else None
        if count:
            ece += count / n * abs(acc - mean_conf)
        bins.append(
            {"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count, "accuracy": acc,
             "confidence": mean_conf}
        )
    return (float(ece), bins) if return_bins else float(ece)


def _validate_inputs(y_true, probs, labels, paths):
    labels = [str(name) for name in labels]
    if len(labels) < 2:
        raise DataError(f"labels: a classifier needs at least 2 classes, received labels={labels}.")
    if len(set(labels)) != len(labels):
        dup = sorted({name for name in labels if labels.count(name) > 1})
        raise DataError(f"labels: class names must be unique, received duplicates {dup}.")
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if y_true.ndim != 1:
        raise DataError(f"y_true: expected a 1-D array of class indices, received shape {y_true.shape}.")
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise DataError(
            f"probs: expected shape (N, {len(labels)}) (one column per label), received shape {probs.shape}."
        )
    if len(y_true) != len(probs):
        raise DataError(
            f"y_true and probs must have the same length, received {len(y_true)} targets and {len(probs)} rows."
        )
    if len(y_true) == 0:
        raise DataError("y_true: metrics need at least one sample, received an empty array.")
    if not np.issubdtype(y_true.dtype, np.integer) and not np.all(np.equal(np.mod(y_true, 1), 0)):
        raise DataError(f"y_true: expected integer class indices, received dtype {y_true.dtype}.")
    y_true = y_true.astype(np.int64)
    if y_true.min() < 0 or y_true.max() >= len(labels):
        raise DataError(
            f"y_true: class indices must lie in [0, {len(labels)}), received values from {y_true.min()} to "
            f"{y_true.max()}."
        )
    if paths is not None and len(paths) != len(y_true):
        raise DataError(f"paths: expected {len(y_true)} paths (one per sample), received {len(paths)}.")
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise DataError(
            "probs: expected probabilities (finite, >= 0, rows summing to 1), received negative or non-finite "
            "values. HINT: pass softmax outputs, not logits."
        )
    sums = probs.sum(axis=1)
    worst = float(np.abs(sums - 1).max())
    if worst > 1e-3:
        raise DataError(
            f"probs: every row must sum to 1 (within 1e-3), received a row summing to {sums[np.abs(sums - 1).argmax()]:.6g}. "
            "HINT: pass softmax outputs, not logits or sigmoid scores."
        )
    return y_true, probs / sums[:, None], labels


def write_metrics(metrics: dict, path) -> Path:
    """Writes ``metrics`` as JSON atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        metrics: dict. As returned by ``compute_metrics``.
        path: str or Path. Destination, usually ``RUN_DIR/metrics.json``.

    Returns:
        Path. The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2, allow_nan=False, default=_json_default)
    atomic_write_text(path, text + "\n")
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metrics: cannot store a {type(value).__name__} in JSON, received {value!r}.")




# === Prediction fast path ===

# model -> compiled tf.function; weak keys so a deleted model frees its function (the function holds only a
# weak reference back to the model, otherwise the value would keep its own key alive).
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_forward(model):
    import tensorflow as tf

    fn = _COMPILED.get(model)
    if fn is None:
        ref = weakref.ref(model)
        inputs = getattr(model, "inputs", None) or []
        if len(inputs) == 1:
            # one trace for every batch size (reduce_retracing would trace twice: the first batch's exact
            # shape, then a relaxed one at the first smaller batch; each trace of InceptionV3 costs 2-4 s here)
            signature = [tf.TensorSpec((None,) + tuple(inputs[0].shape[1:]), inputs[0].dtype)]
            _forward = tf.function(lambda x: ref()(x, training=False), input_signature=signature)
        else:
            _forward = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True)

        _COMPILED[model] = fn = _forward
    return fn


def predict_proba(model, data, batch_size: int = 32) -> np.ndarray:
    """Runs ``model`` in inference mode, batch by batch, through one cached ``tf.function``.

    This is the fast path: a compiled call of ``model(x, training=False)`` ran about twice the images per
    second of ``model.predict`` (DESIGN §11; ``benchmarks/predict_path.py``). The compiled function is cached
    per model, so repeated calls do not retrace.

    Args:
        model: keras.Model. Single-input classifier (its preprocessing inside).
        data: numpy array (N, H, W, 3) of raw pixels, or a ``tf.data.Dataset`` yielding images or
            ``(images, labels[, weights])``, batched or not (unbatched datasets are batched here).
        batch_size: int. Batch size for arrays and unbatched datasets. Defaults to 32.

    Returns:
        np.ndarray of float32, shape (N, C). The model outputs (probabilities for a softmax head).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size: expected an integer >= 1, received batch_size={batch_size}.")
    forward = _compiled_forward(model)
    input_rank = len(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    dtype = _input_dtype(model)
    outputs = []

    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        image_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
        if isinstance(spec, dict):
            raise DataError(
                "predict_proba: expected a dataset of images or (images, labels[, weights]) tuples, received a "
                f"dataset of dicts with keys {sorted(spec)}."
            )
        if isinstance(spec, (tuple, list)):
            data = data.map(lambda *el: el[0])
        if input_rank is not None and image_spec.shape.rank == input_rank - 1:
            data = data.batch(batch_size)
        for batch in data:
            outputs.append(forward(tf.cast(batch, dtype)).numpy())
    else:
        array = np.asarray(data)
        if input_rank is not None and array.ndim == input_rank - 1:
            array = array[None]
        for start in range(0, len(array), batch_size):
            batch = tf.convert_to_tensor(array[start : start + batch_size], dtype=dtype)
            outputs.append(forward(batch).numpy())

    if not outputs:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    return np.concatenate(outputs, axis=0).astype(np.float32, copy=False)


def _input_dtype(model) -> str:
    try:
        dtype = model.inputs[0].dtype
        return dtype if isinstance(dtype, str) else dtype.name
    except (AttributeError, IndexError, TypeError):
        return "float32"


# === Label checks ===


def check_labels(model_labels: Sequence[str], data_labels: Sequence[str]) -> list[str]:
    """Checks that a dataset's class names can be scored by a model, by name (order does not matter).

    Args:
        model_labels: list of str. The model's classes, in output order (``labels.json``).
        data_labels: list of str. The classes found in the evaluation data.

    Returns:
        list of str. Warnings: model classes that have no image in the data (their recall is 0 and their
        ROC AUC undefined), or a different class order (harmless: targets are mapped by name).

    Raises:
        DataError: no class name matches, or the data has classes the model does not know.
    """
    model_labels = [str(x) for x in model_labels]
    data_labels = [str(x) for x in data_labels]
    known = set(model_labels)
    unknown = [name for name in data_labels if name not in known]
    if unknown and len(unknown) == len(set(data_labels)):
        raise DataError(
            f"No class of the data matches a class of the model. The model knows {model_labels}; the data has "
            f"{data_labels}. HINT: evaluate on a folder whose sub-folders (or CSV labels) use the model's class "
            "names (labels.json)."
        )
    if unknown:
        hints = []
        for name in unknown:
            near = closest(name, model_labels)
            if near:
                hints.append(f"{name!r} (did you mean {', '.join(repr(x) for x in near)}?)")
            else:
                hints.append(repr(name))
        raise DataError(
            f"The data has classes the model does not know: {', '.join(hints)}. The model knows {model_labels}. "
            "HINT: rename or remove those class folders, or evaluate a model trained on them."
        )
    found = []
    absent = [name for name in model_labels if name not in set(data_labels)]
    if absent:
        found.append(
            f"model classes {absent} have no image in the data: their recall is 0, their ROC AUC and average "
            "precision are undefined (null), and the macro averages cover fewer classes"
        )
    shared = [name for name in data_labels if name in known]
    if not absent and shared != model_labels:
        found.append("the data lists its classes in a different order than the model; targets are mapped by name")
    return found
