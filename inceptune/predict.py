"""Inference on image files and folders (top-k), and evaluation of a trained model on a labelled folder or CSV.

``predict`` takes files and folders (folders are scanned recursively for image extensions), decodes every
image with ``data.load_image`` exactly as training does, at the model's input size, and runs the model in
batches through ``evaluate.predict_proba`` (the compiled fast path, not ``model.predict``). A file that
cannot be used is reported with its reason and skipped; it never stops the others.

``evaluate_data`` scores a model on any labelled image folder (one sub-folder per class) or CSV
(``path,label[,split]``): class names are matched to the model's ``labels.json`` by name, every file is
validated as in training, and ``metrics.json`` + ``report.html`` are written into an output folder (never
into the data folder).

Example:
    >>> result = predict("runs/flowers", ["photos/", "extra.jpg"], top_k=3)
    >>> result[0]                      # {"path": "/abs/photos/a.jpg", "top": [("daisy", 0.93), ...]}
    >>> result.skipped                 # [("/abs/photos/bad.jpg", "truncated: ...")]
    >>> ev = evaluate_data("runs/flowers", "holdout/")    # writes runs/flowers/eval-holdout/
    >>> ev.metrics["accuracy"]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import warnings as _warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from inceptune._io import atomic_write_text
from inceptune.errors import DataError, InceptuneError

__all__ = [
    "Predictions",
    "predict",
    "collect_images",
    "Evaluation",
    "evaluate_data",
    "default_eval_dir",
    "format_evaluation",
]

_LOAD_WORKERS = 4  # Pillow releases the GIL while decoding; a few threads keep the model fed


# === Results ===


@dataclasses.dataclass(frozen=True)
class Predictions:
    """What ``predict`` returns: one entry per usable file, plus the files skipped and why.

    It behaves like the list of predictions (``len``, indexing, iteration), so ``predict(...)[0]["top"]``
    works; the skipped files are in ``skipped``.

    Attributes:
        predictions: list of dict. ``{"path": str (absolute), "top": [(label, probability), ...]}``, the
            ``top_k`` most probable classes, most probable first, in input order.
        skipped: list of (path, reason). Files that do not exist, cannot be decoded, are too small, ...
        labels: list of str. The model's class names, in output order.
        top_k: int. The number of classes in each ``top`` list (``top_k`` capped at the number of classes).
    """

    predictions: list
    skipped: list
    labels: list
    top_k: int

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, index):
        return self.predictions[index]

    def __iter__(self):
        return iter(self.predictions)

    def to_dict(self) -> dict:
        """Returns the JSON form printed by ``inceptune predict --json``.

        Returns:
            dict. ``{"labels": [...], "top_k": k, "predictions": [{"path", "top": [{"label", "probability"}]}],
            "skipped": [{"path", "reason"}]}``.
        """
        return {
            "labels": list(self.labels),
            "top_k": self.top_k,
            "predictions": [
                {"path": p["path"], "top": [{"label": lab, "probability": prob} for lab, prob in p["top"]]}
                for p in self.predictions
            ],
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
        }

    def to_csv(self) -> str:
        """Returns the CSV printed by ``inceptune predict --csv``: ``path,label_1,probability_1,...``.

        Returns:
            str. One header line, then one line per prediction (skipped files are not rows).
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        header = ["path"]
        for i in range(1, self.top_k + 1):
            header += [f"label_{i}", f"probability_{i}"]
        writer.writerow(header)
        for p in self.predictions:
            row = [p["path"]]
            for lab, prob in p["top"]:
                row += [lab, f"{prob:.6f}"]
            writer.writerow(row)
        return buf.getvalue()


# === Inputs ===


def collect_images(paths: Sequence, *, recursive: bool = True) -> tuple[list[str], list[tuple[str, str]]]:
    """Expands files and folders into a list of image files, in a stable order.

    A folder contributes every file below it (recursively) whose extension is an image extension
    (``data.IMAGE_EXTENSIONS``, case-insensitive), sorted by path; hidden files and folders are left out. A file
    named explicitly is always kept, whatever its extension (decoding decides). Duplicates are dropped.

    Args:
        paths: sequence of str or PathLike. Files and folders (a single str is accepted too).
        recursive: bool. Scan sub-folders. Defaults to True.

    Returns:
        (files, missing): absolute paths in input order, and ``(path, "does not exist")`` for each missing path.
    """
    from inceptune.data import IMAGE_EXTENSIONS

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            files.append(p)

    for raw in paths:
        p = os.path.abspath(os.path.expanduser(os.fspath(raw)))
        if os.path.isdir(p):
            found = []
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
                for name in names:
                    if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                        found.append(os.path.join(root, name))
            for f in sorted(found):
                add(f)
        elif os.path.exists(p):
            add(p)
        else:
            missing.append((p, "does not exist"))
    return files, missing


def _resolve_model(model_or_path):
    """Returns (model, labels or None, run folder or None) for a model, a Run, a run folder or a .keras file."""
    from inceptune.export import load_labels, load_model

    if hasattr(model_or_path, "model") and hasattr(model_or_path, "labels") and hasattr(model_or_path, "dir"):
        return model_or_path.model, list(model_or_path.labels), Path(model_or_path.dir)  # a train.Run
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        model = load_model(path)
        labels = load_labels(path)
        run_dir = path if path.is_dir() else path.parent
        return model, labels, run_dir
    if not hasattr(model_or_path, "inputs"):
        raise InceptuneError(
            f"predict: expected a keras.Model, a train.Run, a run folder or a .keras file, received "
            f"{type(model_or_path).__name__}."
        )
    return model_or_path, None, None


def _model_labels(model, labels) -> list[str]:
    outputs = int(model.outputs[0].shape[-1])
    if labels is None:
        return [str(i) for i in range(outputs)]  # no labels.json: the class index stands for the name
    labels = [str(x) for x in labels]
    if len(labels) != outputs:
        raise InceptuneError(
            f"predict: labels must name each of the model's {outputs} outputs, received {len(labels)} labels "
            f"{labels[:10]}. HINT: pass the run folder (its labels.json) or the right labels list."
        )
    return labels


def _input_size(model, image_size) -> tuple[int, int]:
    if image_size is not None:
        return (int(image_size), int(image_size)) if np.isscalar(image_size) else tuple(int(s) for s in image_size)
    shape = tuple(model.inputs[0].shape[1:3])
    if any(s is None for s in shape):
        raise InceptuneError(
            f"predict: the model {model.name!r} accepts any image size ({tuple(model.inputs[0].shape)}), so the "
            "size to resize to is unknown. HINT: pass image_size=the size it was trained at."
        )
    return int(shape[0]), int(shape[1])


def _run_resize(run_dir: Path | None) -> str:
    """The ``data.resize`` mode the run was trained with (its recipe.yaml), else ``stretch``."""
    if run_dir is None or not (run_dir / "recipe.yaml").is_file():
        return "stretch"
    try:
        import yaml

        raw = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
        value = (raw.get("data") or {}).get("resize", "stretch")
    except Exception:  # noqa: BLE001 - an unreadable recipe only loses the resize hint
        return "stretch"
    return value if value in ("stretch", "crop", "pad") else "stretch"


def _load_one(path: str, size: tuple[int, int], resize: str):
    """Returns (image, None) or (None, reason)."""
    from inceptune.data import load_image

    try:
        return load_image(path, size, resize), None
    except DataError as err:
        text = str(err)
        prefix = f"cannot load image {path}: "
        return None, text[len(prefix):] if text.startswith(prefix) else text
    except Exception as err:  # noqa: BLE001 - a bad file is reported, never fatal
        return None, f"{type(err).__name__}: {err}"


# === predict ===


def predict(
    model_or_path,
    paths,
    *,
    top_k: int = 1,
    labels: Sequence[str] | None = None,
    batch_size: int = 32,
    image_size=None,
    resize: str | None = None,
) -> Predictions:
    """Predicts the top-k classes of image files and folders, batched, skipping (and reporting) bad files.

    Args:
        model_or_path: keras.Model, train.Run, or str/Path of a run folder or a ``.keras`` file (loaded with
            safe mode on).
        paths: str, Path or a list of them. Image files and folders (scanned recursively for image extensions).
        top_k: int >= 1. Classes returned per image, capped at the number of classes. Defaults to 1.
        labels: list of str or None. Class names in output order. Defaults to None: ``labels.json`` of the run
            folder (or beside the ``.keras`` file, or the Run's labels); a bare model without labels gets
            ``"0", "1", ...``.
        batch_size: int >= 1. Images per model call. Defaults to 32.
        image_size: int, (height, width) or None. Defaults to None: the model's input size.
        resize: str or None. ``stretch``, ``crop`` or ``pad``. Defaults to None: the run's ``data.resize``
            (its recipe.yaml), else ``stretch``.

    Returns:
        Predictions. List-like of ``{"path", "top": [(label, probability), ...]}`` for the usable files, in input
        order; ``.skipped`` lists ``(path, reason)`` for the others.

    Raises:
        InceptuneError: the model cannot be loaded, labels do not match its outputs, or top_k/batch_size < 1.

    Example:
        >>> result = predict("runs/flowers", ["a.jpg", "photos/"], top_k=3)
        >>> result[0]["top"][0]     # ("daisy", 0.93)
    """
    from inceptune.evaluate import predict_proba

    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
        raise InceptuneError(f"predict: top_k must be an integer >= 1, received top_k={top_k!r}.")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise InceptuneError(f"predict: batch_size must be an integer >= 1, received batch_size={batch_size!r}.")
    model, found_labels, run_dir = _resolve_model(model_or_path)
    labels = _model_labels(model, labels if labels is not None else found_labels)
    size = _input_size(model, image_size)
    resize = resize or _run_resize(run_dir)
    k = min(int(top_k), len(labels))

    files, skipped = collect_images(paths)
    skipped = list(skipped)
    predictions: list[dict] = []
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    with ThreadPoolExecutor(max_workers=_LOAD_WORKERS, thread_name_prefix="inceptune-predict") as pool:

        def submit(chunk):
            return [(p, pool.submit(_load_one, p, size, resize)) for p in chunk]

        pending = submit(chunks[0]) if chunks else []
        for ci in range(len(chunks)):
            current = pending
            pending = submit(chunks[ci + 1]) if ci + 1 < len(chunks) else []  # decode ahead while the model runs
            good, images = [], []
            for path, future in current:
                image, reason = future.result()
                if reason is not None:
                    skipped.append((path, reason))
                else:
                    good.append(path)
                    images.append(image)
            if not images:
                continue
            probs = predict_proba(model, np.stack(images).astype(np.float32), batch_size=batch_size)
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            for path, row, idx in zip(good, probs, order):
                predictions.append({"path": path, "top": [(labels[j], float(row[j])) for j in idx]})
    return Predictions(predictions=predictions, skipped=skipped, labels=labels, top_k=k)


# === evaluate on a labelled folder or CSV ===


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What ``evaluate_data`` returns.

    Attributes:
        dir: Path. The output folder (``metrics.json``, ``report.html``, ``skipped.csv``).
        metrics: dict. As ``evaluate.compute_metrics`` returns it (the ``metrics.json`` schema).
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
    CSV's split column only filters rows when ``split`` is given. Validation is the training pipeline's own.

    Returns:
        (paths, labels, skipped, warnings, data_root).
    """
    from inceptune import data as _data

    if os.path.isdir(source):
        if split is not None:
            raise DataError(
                f"evaluate: --split {split} needs a CSV with a split column, received the folder {source}. "
                "HINT: drop --split to evaluate every image of the folder."
            )
        pairs, ignored, warns = _data._list_folder(source)
        root = source
    elif os.path.isfile(source):
        triples, has_split = _data._read_csv_source(source, allow_outside)
        warns = []
        if split is not None:
            if not has_split:
                raise DataError(
                    f"evaluate: --split {split} was given but {source} has no split column. HINT: drop --split, "
                    "or add a split column (train|val|test)."
                )
            triples = [t for t in triples if t[2] == split]
        pairs = [(p, lab) for p, lab, _ in triples]
        root = os.path.commonpath([os.path.dirname(p) for p, _ in pairs]) if pairs else os.path.dirname(source)
    else:
        raise DataError(
            f"evaluate: --data {source} does not exist; expected a folder with one sub-folder per class or a CSV "
            "with a header path,label[,split]."
        )
    if not pairs:
        where = f" in split {split!r}" if split else ""
        raise DataError(
            f"evaluate: no image found in {source}{where}; expected one sub-folder per class with images inside "
            "(or CSV rows path,label). HINT: point --data at the folder that holds the class folders."
        )
    results = _data._inspect_all([p for p, _ in pairs], min_side, progress=progress)
    paths, labels, skipped = [], [], []
    for (p, lab), r in zip(pairs, results):
        if r.reason is None:
            paths.append(p)
            labels.append(lab)
        else:
            skipped.append((p, r.reason))
    return paths, labels, skipped, list(warns), root


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
) -> Evaluation:
    """Evaluates a model on a labelled folder or CSV and writes ``metrics.json`` and ``report.html``.

    Class names are matched to the model's labels by name (``evaluate.check_labels``): a class the model does not
    know is an error; a model class with no image in the data is a warning (its recall is 0, its AUC null).

    Args:
        model_or_path: keras.Model, train.Run, or str/Path of a run folder or a ``.keras`` file.
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

    Returns:
        Evaluation.

    Raises:
        DataError: the data is missing or empty, has classes the model does not know, or every file is bad.
        InceptuneError: ``out`` exists (without ``force``) or lies inside the data folder.
    """
    from inceptune import evaluate as _evaluate
    from inceptune import report as _report
    from inceptune.data import files_dataset

    if batch_size < 1:
        raise InceptuneError(f"evaluate: batch_size must be >= 1, received batch_size={batch_size}.")
    model, found_labels, run_dir = _resolve_model(model_or_path)
    model_labels = labels if labels is not None else found_labels
    if model_labels is None:
        raise InceptuneError(
            "evaluate: the model's class names are unknown (no labels.json beside it). HINT: pass the run folder, "
            "put a labels.json (a JSON list of class names in output order) beside the .keras file, or pass labels=."
        )
    model_labels = _model_labels(model, model_labels)
    if out is None:
        if run_dir is None:
            raise InceptuneError(
                "evaluate: out= is required when the model is given as a keras.Model (there is no run folder to "
                "write into). HINT: pass out='some/folder'.")
        out = default_eval_dir(run_dir, source)
    out = Path(out)
    source = os.path.abspath(os.fspath(source))

    paths, data_labels, skipped, warns, root = _scan_labelled(
        source, split=split, min_side=min_side, allow_outside=allow_outside, progress=progress)
    _check_out_dir(out, root, force)
    if not paths:
        shown = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise DataError(f"evaluate: none of the {len(skipped)} files in {source} could be used ({shown}).")
    warns += _evaluate.check_labels(model_labels, sorted(set(data_labels)))
    index = {name: i for i, name in enumerate(model_labels)}
    y_true = np.array([index[lab] for lab in data_labels], dtype=np.int64)

    size = _input_size(model, None)
    resize = resize or _run_resize(run_dir)
    probs = _evaluate.predict_proba(model, files_dataset(paths, batch_size=batch_size, image_size=size, resize=resize))
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # the same text lands in metrics["warnings"]
        metrics = _evaluate.compute_metrics(y_true, probs, model_labels, paths=paths)

    out.mkdir(parents=True, exist_ok=True)
    _evaluate.write_metrics(metrics, out / "metrics.json")
    _write_skipped(out / "skipped.csv", skipped)
    rows = [{"path": p, "label": lab, "split": "evaluated"} for p, lab in zip(paths, data_labels)]
    recipe = run_dir / "recipe.yaml" if run_dir is not None and (run_dir / "recipe.yaml").is_file() else None
    history = run_dir / "history.csv" if run_dir is not None and (run_dir / "history.csv").is_file() else None
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # matplotlib's empty-legend notes on classes without images
        _report.write_report(out, metrics=metrics, history_csv=history, recipe=recipe, manifest_rows=rows,
                             skipped=skipped, warnings=warns, title=f"inceptune evaluation on {Path(source).name}")
    return Evaluation(dir=out, metrics=metrics, skipped=skipped, warnings=warns, source=source)


def _write_skipped(path: Path, skipped) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "reason"])
    writer.writerows(skipped)
    atomic_write_text(path, buf.getvalue())


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
