"""Classification metrics (scikit-learn), label checks, and evaluation of a labelled folder or CSV.

``compute_metrics`` turns integer targets and predicted probabilities into one JSON-ready dictionary;
``write_metrics`` stores it atomically as ``metrics.json``. Every number is computed by scikit-learn's own
function on the same predictions, except the expected calibration error, which scikit-learn lacks.

``evaluate_data`` scores a model on any labelled image folder (one sub-folder per class) or CSV
(``path,label[,split]``): class names are matched to the model's ``labels.json`` by name (``check_labels``),
every file is validated as in training (``data.scan``), the model runs through ``inference.predict_proba``,
and ``metrics.json`` + ``report.html`` are written into an output folder (never into the data folder).

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
    probs = inference.predict_proba(model, images)
    metrics = compute_metrics(y_true, probs, ["cat", "dog"], paths=files)
    write_metrics(metrics, run_dir / "metrics.json")
    ev = evaluate_data("runs/flowers", "holdout/")    # writes runs/flowers/eval-holdout/
    print(format_evaluation(ev))
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import warnings as _warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from inceptune import data as _data
from inceptune._io import atomic_write_text
from inceptune.calibration import apply_temperature, calibration_summary, model_temperature
from inceptune.data.prepared import write_skipped
from inceptune.errors import DataError, InceptuneError, closest
from inceptune.progress import Bar
from inceptune.models import input_size, model_labels, resolve_model, run_resize
from inceptune.report import write_report
from inceptune.tta import parse_tta, tta_proba

__all__ = [
    "ECE_BINS",
    "METRICS_SCHEMA_VERSION",
    "Evaluation",
    "check_labels",
    "compute_metrics",
    "default_eval_dir",
    "evaluate_data",
    "expected_calibration_error",
    "format_evaluation",
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

    out["top_k_accuracy"] = _top_k_accuracy(y_true, probs, top_k, out["accuracy"])
    _class_metrics(out, y_true, y_pred, labels, found)
    _ranking_metrics(out, y_true, probs, labels, found)
    out["log_loss"] = float(skm.log_loss(y_true, probs, labels=idx))
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=idx).astype(int).tolist()

    ece, bins = expected_calibration_error(y_true, probs, num_bins=ECE_BINS, return_bins=True)
    out["ece"] = ece
    out["calibration"] = {"num_bins": ECE_BINS, "bins": bins}

    out["misclassified"] = _misclassified(y_true, y_pred, probs, labels, paths)
    out["warnings"] = found
    for message in found:
        _warnings.warn(message, UserWarning, stacklevel=2)
    if keep_predictions:
        out["predictions"] = {
            "y_true": y_true.astype(int).tolist(),
            "probs": np.round(probs, 7).tolist(),
        }
    return out


def _top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, top_k: Iterable[int], accuracy: float) -> dict:
    """Top-k accuracy for every k < C (scikit-learn's `top_k_accuracy_score`)."""
    from sklearn import metrics as skm

    ks = sorted({int(k) for k in top_k})
    if any(k < 1 for k in ks):
        raise DataError(f"top_k: every k must be >= 1, received top_k={list(top_k)}.")
    c = probs.shape[1]
    out = {}
    for k in ks:
        if k >= c:
            continue
        if c == 2:  # k == 1; sklearn's binary form thresholds probs[:, 1] instead of taking the argmax.
            out[str(k)] = accuracy
        else:
            out[str(k)] = float(skm.top_k_accuracy_score(y_true, probs, k=k, labels=list(range(c))))
    return out


def _class_metrics(out: dict, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], found: list[str]) -> None:
    """Fills precision, recall, F1 and support per class and their macro and weighted averages."""
    from sklearn import metrics as skm

    idx = list(range(len(labels)))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0.0)
    out["per_class"] = {
        labels[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(sup[i])}
        for i in idx
    }
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=idx, average=avg, zero_division=0.0
        )
        out[f"{avg}_avg"] = {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(len(y_true))}
    missing = [labels[i] for i in idx if sup[i] == 0]
    if missing:
        found.append(
            f"classes {missing} have no sample in y_true: their recall and F1 are 0 by convention and they "
            "lower the macro averages"
        )


def _misclassified(y_true, y_pred, probs, labels, paths) -> list[dict]:
    """The mistakes, most confident first."""
    wrong = np.flatnonzero(y_pred != y_true)
    conf = probs[np.arange(len(y_true)), y_pred]
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    return [
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
            "probs: every row must sum to 1 (within 1e-3), received a row summing to "
            f"{sums[np.abs(sums - 1).argmax()]:.6g}. "
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


# === Evaluation of a labelled folder or CSV ===


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What ``evaluate_data`` returns.

    Attributes:
        dir: Path. The output folder (``metrics.json``, ``report.html``, ``skipped.csv``).
        metrics: dict. As ``compute_metrics`` returns it (the ``metrics.json`` schema).
        skipped: list of (path, reason). Files that could not be used.
        warnings: list of str. Label mismatches (model classes absent from the data) and data warnings.
        source: str. The folder or CSV evaluated.
    """

    dir: Path
    metrics: dict
    skipped: list
    warnings: list
    source: str

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def report_path(self) -> Path:
        return self.dir / "report.html"


def default_eval_dir(model_path, source) -> Path:
    """The default output folder of ``inceptune evaluate``: ``RUN_DIR/eval-<data folder or CSV name>``.

    Args:
        model_path: str or Path. A run folder, or a ``.keras`` file (its folder is used).
        source: str or Path. The data folder or CSV.

    Returns:
        Path.
    """
    model_path = Path(model_path)
    base = model_path if model_path.is_dir() else model_path.parent
    src = Path(os.path.abspath(os.fspath(source)))
    name = src.name if src.is_dir() else src.stem
    return base / f"eval-{name or 'data'}"


def _scan_labelled(source: str, *, split: str | None, min_side: int, allow_outside: bool, progress: bool):
    """Lists and validates every image of a class-per-folder directory or a path,label[,split] CSV.

    Unlike ``data.prepare`` nothing is split: all files form one evaluation set (one class is enough), and a
    CSV's split column only filters rows when ``split`` is given (before validation, so only those rows are
    read). Listing and validation are the training pipeline's own (``data.scan``).

    Returns:
        (paths, labels, content hashes, skipped, warnings, data_root).
    """
    if os.path.isdir(source):
        if split is not None:
            raise DataError(
                f"evaluate: --split {split} needs a CSV with a split column, received the folder {source}. "
                "HINT: drop --split to evaluate every image of the folder."
            )
    elif not os.path.isfile(source):
        raise DataError(
            f"evaluate: --data {source} does not exist; expected a folder with one sub-folder per class or a CSV "
            "with a header path,label[,split]."
        )
    keep = None if split is None else (lambda path, label, row_split: row_split == split)
    found = _data.scan(source, min_side=min_side, allow_outside=allow_outside, progress=progress, keep=keep)
    if split is not None and not found.has_split:
        raise DataError(
            f"evaluate: --split {split} was given but {source} has no split column. HINT: drop --split, "
            "or add a split column (train|val|test)."
        )
    candidates = list(found.paths) + [p for p, _ in found.skipped]
    if not candidates:
        where = f" in split {split!r}" if split else ""
        raise DataError(
            f"evaluate: no image found in {source}{where}; expected one sub-folder per class with images inside "
            "(or CSV rows path,label). HINT: point --data at the folder that holds the class folders."
        )
    root = source if found.kind == "dir" else os.path.commonpath([os.path.dirname(p) for p in candidates])
    return list(found.paths), list(found.labels), list(found.hashes), list(found.skipped), list(found.warnings), root


def _training_overlap(run_dir: Path | None, hashes: Sequence[str]) -> list[str]:
    """A warning when evaluated images are in the run's training split (same content, by SHA-256)."""
    manifest = run_dir / "manifest.csv" if run_dir is not None else None
    if manifest is None or not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as fh:
        trained = {r.get("hash") for r in csv.DictReader(fh) if r.get("split") == "train" and r.get("hash")}
    n = sum(1 for h in hashes if h in trained)
    if not n:
        return []
    return [f"{n} of the {len(hashes)} evaluated images are in the run's training split (same file content): "
            "these metrics overstate how the model does on new images. HINT: score the held-out test split with "
            f"--data {manifest} --split test, or evaluate a folder of images the run never saw."]


def _check_out_dir(out: Path, data_root: str, force: bool) -> None:
    resolved = Path(os.path.abspath(out))
    root = Path(os.path.abspath(data_root))
    if resolved == root or root in resolved.parents:
        raise InceptuneError(
            f"evaluate: the output folder {resolved} is inside the data folder {root}; inceptune never writes "
            "into the data it reads. HINT: pass --out a folder outside the data (e.g. next to the run)."
        )
    if resolved.exists() and (not resolved.is_dir() or any(resolved.iterdir())) and not force:
        raise InceptuneError(
            f"evaluate: the output folder {resolved} already exists and is not empty; an evaluation never "
            "overwrites one. HINT: pass --force to write over it, or --out to choose another folder."
        )
    if resolved.exists() and not resolved.is_dir():
        raise InceptuneError(f"evaluate: --out {resolved} is a file, expected a folder. HINT: choose another --out.")


def evaluate_data(
    model_or_path,
    source,
    out=None,
    *,
    labels: Sequence[str] | None = None,
    batch_size: int = 32,
    split: str | None = None,
    resize: str | None = None,
    min_side: int = 16,
    allow_outside: bool = True,
    force: bool = False,
    progress: bool = True,
    tta=None,
) -> Evaluation:
    """Evaluates a model on a labelled folder or CSV and writes ``metrics.json`` and ``report.html``.

    Class names are matched to the model's labels by name (``check_labels``): a class the model does not
    know is an error; a model class with no image in the data is a warning (its recall is 0, its AUC null).

    Args:
        model_or_path: keras.Model, training.Run, or str/Path of a run folder or a ``.keras`` file.
        source: str or Path. A folder with one sub-folder per class, or a CSV ``path,label[,split]``.
        out: str, Path or None. Output folder. Defaults to None: ``default_eval_dir(model, source)`` for a
            path, required for a bare model.
        labels: list of str or None. The model's class names. Defaults to None: its ``labels.json``.
        batch_size: int >= 1. Images per model call. Defaults to 32.
        split: str or None. With a CSV that has a split column, evaluate only the rows of this split (e.g.
            ``test`` of a run's ``manifest.csv``). Defaults to None: every row.
        resize: str or None. ``stretch``, ``crop`` or ``pad``. Defaults to None: the run's, else ``stretch``.
        min_side: int. Images whose shorter side is below this are skipped. Defaults to 16.
        allow_outside: bool. Allow CSV paths outside the CSV's folder. Defaults to True: evaluation only reads
            the files a CSV lists, and a run's ``manifest.csv`` lists absolute paths.
        force: bool. Write into an existing non-empty ``out``. Defaults to False.
        progress: bool. Progress bar while validating large folders. Defaults to True.
        tta: str, TTA or None. Test-time augmentation (``flip``, ``K`` crops, ``flip+crops``; ``inceptune.tta``):
            the metrics are those of the averaged probabilities, and ``metrics["tta"]`` records the spec and the
            accuracy, ECE and log loss without it. Defaults to None.

    Returns:
        Evaluation.

    Raises:
        DataError: the data is missing or empty, has classes the model does not know, or every file is bad.
        InceptuneError: ``out`` exists (without ``force``) or lies inside the data folder.
    """
    if batch_size < 1:
        raise InceptuneError(f"evaluate: batch_size must be >= 1, received batch_size={batch_size}.")
    plan = parse_tta(tta)
    model, class_names, run_dir, out = _model_and_out(model_or_path, labels, out, source)
    source = os.path.abspath(os.fspath(source))

    paths, data_labels, hashes, skipped, warns, root = _scan_labelled(
        source, split=split, min_side=min_side, allow_outside=allow_outside, progress=progress)
    _check_out_dir(out, root, force)
    if not paths:
        shown = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise DataError(f"evaluate: none of the {len(skipped)} files in {source} could be used ({shown}).")
    warns += check_labels(class_names, sorted(set(data_labels))) + _training_overlap(run_dir, hashes)
    index = {name: i for i, name in enumerate(class_names)}
    y_true = np.array([index[lab] for lab in data_labels], dtype=np.int64)

    size = input_size(model, None)
    resize = resize or run_resize(run_dir)
    views = "" if plan is None else f" x {plan.num_views} views ({plan.spec})"
    with Bar(len(paths), f"evaluating {len(paths)} images{views}", show=progress) as bar:
        probs, view_probs = tta_proba(model, _data.files_dataset(paths, batch_size=batch_size, image_size=size,
                                                                 resize=resize), plan, progress=bar.update,
                                      return_views=True)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # the same text lands in metrics["warnings"]
        metrics = compute_metrics(y_true, probs, class_names, paths=paths)
    _add_tta_and_temperature(metrics, y_true, view_probs, plan, model)

    out.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics, out / "metrics.json")
    write_skipped(out, skipped)
    rows = [{"path": p, "label": lab, "split": "evaluated"} for p, lab in zip(paths, data_labels)]
    recipe = run_dir / "recipe.yaml" if run_dir is not None and (run_dir / "recipe.yaml").is_file() else None
    history = run_dir / "history.csv" if run_dir is not None and (run_dir / "history.csv").is_file() else None
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # scikit-learn's notes on curves of classes without images
        write_report(out, metrics=metrics, history_csv=history, recipe=recipe, manifest_rows=rows,
                     skipped=skipped, warnings=warns, title=f"inceptune evaluation on {Path(source).name}")
    return Evaluation(dir=out, metrics=metrics, skipped=skipped, warnings=warns, source=source)


def _add_tta_and_temperature(metrics: dict, y_true, view_probs, plan, model) -> None:
    """`metrics["tta"]` (the scores without TTA: view 0 is the image itself) and, for a model with a temperature
    built in, `metrics["temperature_scaling"]` (the scores of the same model without it)."""
    if plan is not None:
        plain = view_probs[:, 0]
        metrics["tta"] = {"transforms": plan.spec, "views": plan.num_views,
                          "accuracy_without": float(np.mean(plain.argmax(1) == y_true)),
                          "ece_without": expected_calibration_error(y_true, plain),
                          "log_loss_without": _log_loss(y_true, plain)}
    temperature = model_temperature(model)
    if temperature is not None and len(y_true):
        raw = np.stack([apply_temperature(view_probs[:, v], 1.0 / temperature) for v in range(view_probs.shape[1])],
                       axis=1).mean(axis=1)
        final = view_probs.mean(axis=1)
        metrics["temperature_scaling"] = calibration_summary(y_true, raw, final, temperature)


def _log_loss(y_true, probs) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y_true, np.clip(probs, 1e-15, 1), labels=list(range(probs.shape[1]))))


def _model_and_out(model_or_path, labels, out, source):
    """(model, its class names, its run folder or None, the output folder) of an evaluation."""
    model, found_labels, run_dir = resolve_model(model_or_path)
    class_names = labels if labels is not None else found_labels
    if class_names is None:
        raise InceptuneError(
            "evaluate: the model's class names are unknown (no labels.json beside it). HINT: pass the run folder, "
            "put a labels.json (a JSON list of class names in output order) beside the .keras file, or pass labels=."
        )
    class_names = model_labels(model, class_names)
    if out is None:
        if run_dir is None:
            raise InceptuneError(
                "evaluate: out= is required when the model is given as a keras.Model (there is no run folder to "
                "write into). HINT: pass out='some/folder'.")
        out = default_eval_dir(run_dir, source)
    return model, class_names, run_dir, Path(out)


def format_evaluation(ev: Evaluation) -> str:
    """The short summary ``inceptune evaluate`` prints: headline metrics, then a per-class table.

    Args:
        ev: Evaluation.

    Returns:
        str.
    """
    m = ev.metrics
    lines = [
        f"evaluated {m['num_samples']} images of {ev.source}" + (f" ({len(ev.skipped)} skipped)" if ev.skipped else ""),
        f"accuracy {m['accuracy']:.4f}   balanced accuracy {m['balanced_accuracy']:.4f}   "
        f"macro F1 {m['macro_avg']['f1']:.4f}   log loss {m['log_loss']:.4f}",
    ]
    if m.get("tta"):
        t = m["tta"]
        lines.append(f"test-time augmentation {t['transforms']} ({t['views']} views): accuracy {m['accuracy']:.4f}, "
                     f"without it {t['accuracy_without']:.4f}")
    if m.get("temperature_scaling"):
        ts = m["temperature_scaling"]
        lines.append(f"temperature {ts['temperature']:.3f} (in the model): ECE {ts['ece_before']:.4f} without it, "
                     f"{ts['ece_after']:.4f} with it; log loss {ts['log_loss_before']:.4f} -> "
                     f"{ts['log_loss_after']:.4f}")
    lines += [
        "",
        f"{'class':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
    ]
    for name, row in m["per_class"].items():
        lines.append(f"{name[:20]:<20} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} "
                     f"{row['support']:>8d}")
    for avg in ("macro_avg", "weighted_avg"):
        row = m[avg]
        lines.append(f"{avg.replace('_avg', ' avg'):<20} {row['precision']:>9.4f} {row['recall']:>9.4f} "
                     f"{row['f1']:>9.4f} {row['support']:>8d}")
    for w in ev.warnings:
        lines.append(f"warning: {w}")
    lines.append(f"metrics: {ev.metrics_path}")
    lines.append(f"report:  {ev.report_path}")
    return "\n".join(lines)
