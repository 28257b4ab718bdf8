"""Stratified k-fold cross-validation of a recipe: every fold a full staged run, the test split held out.

The data is scanned, validated and split once (``data.prepare`` into ``OUT``), exactly as ``train`` would,
except that the recipe's ``data.split.val`` is set to 0: the folds take the place of the validation split.
The test split stays out of every fold. The train+val pool is cut into K stratified folds (scikit-learn's
``StratifiedKFold``, shuffled with the recipe's seed; ``StratifiedGroupKFold`` when the pool holds identical
files, so copies never straddle train and validation). Fold k validates on fold k and trains on the others:
its manifest (``OUT/folds/fold-<k>.csv``: path,label,split,hash) is handed to ``train`` as ``data.manifest``,
which reuses splits as given, and the run goes into ``OUT/fold-<k>/`` (a complete run folder).

Per fold, ``cv.json`` records the validation metrics of the fold's final model (the run's best checkpoint,
scored on the fold's validation images), the best values seen in its history, and its test metrics; then
the mean and standard deviation of each metric over the folds (``numpy.std``, ddof=0, as scikit-learn's
cross-validation examples report it). The folds' test probabilities are also averaged into one ensemble,
whose metrics fill ``OUT/metrics.json`` and the headline of ``OUT/report.html`` (which ends with the
cross-validation table).

``cv.json`` (schema_version 1)::

    {"schema_version": 1, "num_folds": 3, "seed": 0, "labels": [...],
     "pool_size": 48, "test_size": 12,
     "folds": [{"fold": 0, "train_size": 32, "val_size": 16, "val_accuracy": .., "val_macro_f1": ..,
                "val_loss": .., "best_val_accuracy": .., "best_val_loss": .., "test_accuracy": ..,
                "test_balanced_accuracy": .., "test_macro_f1": .., "test_roc_auc": .., "test_log_loss": ..,
                "epochs": 5, "seconds": 21.3}, ...],
     "mean": {"val_accuracy": .., ...}, "std": {"val_accuracy": .., ...},
     "ensemble_test": {"accuracy": .., "macro_f1": .., ...} | null}

Example:
    >>> result = cross_validate("recipe.yaml", folds=5, out="runs/cv")
    >>> result["mean"]["val_accuracy"], result["std"]["val_accuracy"]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inceptune import data as _data
from inceptune._io import atomic_write_json, atomic_write_text, prepare_output_dir
from inceptune.errors import DataError, InceptuneError, RecipeError
from inceptune.evaluate import compute_metrics, write_metrics
from inceptune.inference import predict_proba
from inceptune.recipe import Recipe, dump_recipe, load_recipe, recipe_to_dict
from inceptune.report import write_report

__all__ = ["CV_SCHEMA_VERSION", "cross_validate", "make_folds", "fold_manifest_rows", "format_cv"]

CV_SCHEMA_VERSION = 1
_FOLD_METRICS = ("val_accuracy", "val_macro_f1", "val_loss", "best_val_accuracy", "best_val_loss",
                 "test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_roc_auc", "test_log_loss")


# === Folds ===


def make_folds(rows: Sequence[dict], folds: int, seed: int = 0) -> list[int]:
    """Assigns every train/val row of a manifest to one of ``folds`` stratified folds; test rows get -1.

    Args:
        rows: sequence of dict with ``label``, ``split`` and optionally ``hash`` (content hash). Rows whose
            split is ``test`` are held out.
        folds: int >= 2. Number of folds.
        seed: int. Seed of the shuffle. Defaults to 0.

    Returns:
        list of int, one per row: the fold (0..folds-1) in which the row validates, or -1 for a test row.

    Raises:
        DataError: fewer than ``folds`` pool images in some class, or fewer than 2 classes in the pool.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or folds < 2:
        raise InceptuneError(f"cv: --folds must be an integer >= 2, received folds={folds!r}.")
    pool = [i for i, r in enumerate(rows) if r["split"] != "test"]
    labels = np.array([rows[i]["label"] for i in pool])
    names, counts = np.unique(labels, return_counts=True) if len(pool) else (np.array([]), np.array([]))
    if len(names) < 2:
        raise DataError(f"cv: the train+val pool must hold at least 2 classes, found {list(names)}.")
    small = [(str(n), int(c)) for n, c in zip(names, counts) if c < folds]
    if small:
        shown = ", ".join(f"'{n}' ({c})" for n, c in small)
        raise DataError(
            f"cv: {folds} folds need at least {folds} train+val images per class; too few in {shown}. "
            f"HINT: lower --folds to {max(2, min(c for _, c in small))}, or add images to those classes."
        )
    hashes = [rows[i].get("hash") or f"row{i}" for i in pool]
    x = np.zeros(len(pool))
    if len(set(hashes)) < len(hashes):  # identical files: keep every copy in the same fold
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(x, labels, groups=np.array(hashes))
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(x, labels)
    out = [-1] * len(rows)
    for k, (_, val_idx) in enumerate(parts):
        for j in val_idx:
            out[pool[j]] = k
    return out


def fold_manifest_rows(rows: Sequence[dict], fold_of: Sequence[int], fold: int) -> list[dict]:
    """The manifest of one fold: its fold validates, the other folds train, the held-out test stays test.

    Args:
        rows: sequence of dict with ``path``, ``label``, ``split`` (and ``hash``).
        fold_of: sequence of int. As returned by ``make_folds``.
        fold: int. The fold that validates.

    Returns:
        list of dict with ``path``, ``label``, ``split``, ``hash``, in the order of ``rows``.
    """
    out = []
    for r, f in zip(rows, fold_of):
        split = "test" if f < 0 else "val" if f == fold else "train"
        out.append({"path": r["path"], "label": r["label"], "split": split, "hash": r.get("hash", "")})
    return out


def _manifest_text(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "label", "split", "hash"], lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# === Cross-validation ===


def _fold_recipe(recipe, manifest: Path):
    """The recipe of one fold: the same in every respect, but its data is the fold's manifest."""
    raw = recipe_to_dict(recipe)
    raw["data"] = dict(raw["data"], dir=None, csv=None, manifest=str(manifest))
    return load_recipe(raw)


def _val_metrics(run, data_cfg, manifest_rows: list[dict], image_size: int, batch_size: int) -> dict:
    """Scores the fold's final model on its validation images."""
    val = [r for r in manifest_rows if r["split"] == "val"]
    index = {name: i for i, name in enumerate(run.labels)}
    y = np.array([index[r["label"]] for r in val], dtype=np.int64)
    probs = run.val_probs  # computed by the run from its cached features; else one pass over the images
    if probs is None or len(probs) != len(y):
        ds = _data.files_dataset([r["path"] for r in val], batch_size=batch_size, image_size=image_size,
                                 resize=data_cfg.resize)
        probs = predict_proba(run.model, ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        m = compute_metrics(y, probs, run.labels, keep_predictions=False)
    return {"val_accuracy": m["accuracy"], "val_macro_f1": m["macro_avg"]["f1"], "val_loss": m["log_loss"]}


def _history_best(history: list[dict]) -> dict:
    accs = [float(r["val_accuracy"]) for r in history if r.get("val_accuracy") not in (None, "")]
    losses = [float(r["val_loss"]) for r in history if r.get("val_loss") not in (None, "")]
    return {"best_val_accuracy": max(accs) if accs else None, "best_val_loss": min(losses) if losses else None}


def _test_summary(metrics: dict | None, prefix: str = "test_") -> dict:
    if not metrics:
        return {f"{prefix}{k}": None for k in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "log_loss")}
    return {
        f"{prefix}accuracy": metrics["accuracy"],
        f"{prefix}balanced_accuracy": metrics["balanced_accuracy"],
        f"{prefix}macro_f1": metrics["macro_avg"]["f1"],
        f"{prefix}roc_auc": metrics.get("roc_auc"),
        f"{prefix}log_loss": metrics["log_loss"],
    }


def _mean_std(fold_rows: list[dict]) -> tuple[dict, dict]:
    mean, std = {}, {}
    for key in _FOLD_METRICS:
        values = [r[key] for r in fold_rows if r.get(key) is not None]
        if values:
            mean[key] = float(np.mean(values))
            std[key] = float(np.std(values))
        else:
            mean[key] = std[key] = None
    return mean, std


def cross_validate(recipe, folds: int, out=None, overrides: Sequence[str] = (), verbose: bool = True, *,
                   force: bool = False) -> dict:
    """Runs stratified k-fold cross-validation of a recipe; writes ``cv.json``, ``metrics.json``, ``report.html``.

    Args:
        recipe: str/Path of a YAML recipe, a dict, or a ``Recipe``.
        folds: int >= 2. Number of folds K.
        out: str, Path or None. Output folder: ``manifest.csv`` (the split once), ``folds/fold-<k>.csv``,
            ``fold-<k>/`` (each a complete run folder), ``cv.json``, ``metrics.json`` (ensemble on the test split),
            ``report.html``. Defaults to None: ``runs/<recipe name>-cv-<time>``.
        overrides: sequence of str. ``--set KEY=VALUE`` overrides of the recipe. Defaults to none.
        verbose: bool. Print progress (each fold's training log). Defaults to True.
        force: bool. Replace an existing cv folder in ``out``. Defaults to False.

    Returns:
        dict. The content of ``cv.json`` (schema in the module docstring), plus ``"dir"``: the output folder.

    Raises:
        RecipeError: the recipe is invalid. DataError: a class has fewer than K train+val images.
        InceptuneError: ``out`` exists and is not empty (without ``force``).
    """
    from inceptune.training import check_model_section, resolve_image_size, train  # imports Keras: cv stays light

    if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or folds < 2:
        raise InceptuneError(f"cv: --folds must be an integer >= 2, received folds={folds!r}.")
    source = recipe
    if not isinstance(recipe, Recipe) or overrides:
        recipe = load_recipe(recipe, list(overrides))
    check_model_section(recipe)  # before the output folder and the data scan
    if out is None:
        stem = Path(os.fspath(source)).stem if isinstance(source, (str, os.PathLike)) else "recipe"
        out = Path("runs") / f"{stem}-cv-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    prepare_output_dir(out, force=force, kind="cv", markers=("cv.json", "folds"))
    say = print if verbose else (lambda *a, **k: None)
    # The folds take the place of the validation split: every image outside the test split is in the pool.
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(
        recipe.data, split=dataclasses.replace(recipe.data.split, val=0.0)))
    dump_recipe(recipe, out / "recipe.yaml")

    # === data: scanned, validated and split once ===
    data = _data.prepare(recipe.data, out, progress=verbose)
    say(f"cv: {data.summary_line()}")
    rows = [dict(r) for r in data.rows]
    fold_of = make_folds(rows, folds, seed=recipe.seed)
    labels = list(data.labels)
    image_size = resolve_image_size(recipe)
    test_rows = [r for r in rows if r["split"] == "test"]
    say(f"cv: {folds} stratified folds over {len(rows) - len(test_rows)} train+val images; "
        f"{len(test_rows)} test images held out")

    # === one full staged run per fold ===
    fold_results, test_probs, test_y = [], [], None
    for k in range(folds):
        say(f"\n=== cv fold {k + 1}/{folds}: {out / f'fold-{k}'} ===")
        result, run = _run_fold(train, recipe, out, rows, fold_of, k, labels, image_size, verbose)
        fold_results.append(result)
        if run.metrics and run.metrics.get("predictions"):
            test_probs.append(np.asarray(run.metrics["predictions"]["probs"], dtype=np.float64))
            test_y = np.asarray(run.metrics["predictions"]["y_true"], dtype=np.int64)
        say(f"cv fold {k + 1}/{folds}: val accuracy {result['val_accuracy']:.4f}"
            + (f", test accuracy {result['test_accuracy']:.4f}" if result["test_accuracy"] is not None else ""))

    ensemble_metrics = None
    if test_probs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ensemble_metrics = compute_metrics(test_y, np.mean(test_probs, axis=0), labels,
                                               paths=[r["path"] for r in test_rows])
        write_metrics(ensemble_metrics, out / "metrics.json")
    result = _cv_result(folds, recipe.seed, labels, rows, test_rows, fold_results, ensemble_metrics)
    atomic_write_json(out / "cv.json", result)
    write_report(out, metrics=ensemble_metrics, recipe=out / "recipe.yaml",
                 manifest_rows=out / "manifest.csv", skipped=out / "skipped.csv",
                 warnings=list(data.warnings), cv=result,
                 title=f"inceptune {folds}-fold cross-validation {out.name}")
    say("\n" + format_cv(result))
    say(f"cv.json: {out / 'cv.json'}\nreport:  {out / 'report.html'}")
    return dict(result, dir=str(out))


def _run_fold(train, recipe, out: Path, rows, fold_of, k: int, labels, image_size: int, verbose: bool):
    """Trains fold `k` as a complete run (`out/fold-<k>/`) and scores it. Returns (fold row of cv.json, Run)."""
    manifest_rows = fold_manifest_rows(rows, fold_of, k)
    manifest = out / "folds" / f"fold-{k}.csv"
    atomic_write_text(manifest, _manifest_text(manifest_rows))
    t0 = time.time()
    run = train(_fold_recipe(recipe, manifest.resolve()), out=out / f"fold-{k}", verbose=verbose)
    if list(run.labels) != labels:
        raise RecipeError(f"cv: fold {k} found the classes {run.labels}, expected {labels}.")
    seconds = time.time() - t0
    result = {"fold": k,
              "train_size": sum(1 for r in manifest_rows if r["split"] == "train"),
              "val_size": sum(1 for r in manifest_rows if r["split"] == "val")}
    result.update(_val_metrics(run, recipe.data, manifest_rows, image_size, recipe.data.batch_size))
    result.update(_history_best(run.history))
    result.update(_test_summary(run.metrics))
    result.update(epochs=len(run.history), seconds=round(seconds, 1))
    return result, run


def _cv_result(folds: int, seed: int, labels, rows, test_rows, fold_results, ensemble_metrics) -> dict:
    """The content of cv.json (schema in the module docstring)."""
    mean, std = _mean_std(fold_results)
    return {
        "schema_version": CV_SCHEMA_VERSION,
        "num_folds": int(folds),
        "seed": int(seed),
        "labels": labels,
        "pool_size": len(rows) - len(test_rows),
        "test_size": len(test_rows),
        "folds": fold_results,
        "mean": mean,
        "std": std,
        "ensemble_test": None if ensemble_metrics is None else {
            k[len("test_"):]: v for k, v in _test_summary(ensemble_metrics).items()},
    }


def format_cv(result: dict) -> str:
    """The per-fold table and the mean ± std line that ``inceptune cv`` prints.

    Args:
        result: dict. As returned by ``cross_validate`` (or read from ``cv.json``).

    Returns:
        str.
    """
    keys = [k for k in ("val_accuracy", "val_macro_f1", "val_loss", "test_accuracy", "test_macro_f1")
            if any(f.get(k) is not None for f in result["folds"])]
    lines = ["fold  " + "  ".join(f"{k:>15}" for k in keys)]
    for f in result["folds"]:
        lines.append(f"{f['fold']:>4}  " + "  ".join(f"{f[k]:>15.4f}" if f.get(k) is not None else f"{'-':>15}"
                                                       for k in keys))
    mean, std = result["mean"], result["std"]
    lines.append("mean  " + "  ".join(f"{mean[k]:>7.4f}±{std[k]:<7.4f}" if mean.get(k) is not None else f"{'-':>15}"
                                      for k in keys))
    ens = result.get("ensemble_test")
    if ens:
        lines.append(f"ensemble of the {result['num_folds']} fold models on the held-out test split: accuracy "
                     f"{ens['accuracy']:.4f}, macro F1 {ens['macro_f1']:.4f}")
    return "\n".join(lines)
