"""Inference on image files and folders: the top-k classes of each image.

``predict`` takes files and folders (folders are scanned recursively for image extensions), decodes every
image with ``data.load_image`` exactly as training does, at the model's input size, and runs the model in
batches through ``inference.predict_proba`` (the compiled fast path, not ``model.predict``). A file that
cannot be used is reported with its reason and skipped; it never stops the others.

Evaluation on a labelled folder or CSV is ``evaluate.evaluate_data``.

Example:
    >>> result = predict("runs/flowers", ["photos/", "extra.jpg"], top_k=3)
    >>> result[0]                      # {"path": "/abs/photos/a.jpg", "top": [("daisy", 0.93), ...]}
    >>> result.skipped                 # [("/abs/photos/bad.jpg", "truncated: ...")]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from inceptune.data import IMAGE_EXTENSIONS, load_image
from inceptune.errors import DataError, InceptuneError
from inceptune.inference import predict_proba
from inceptune.models import input_size, model_labels, resolve_model, run_resize
from inceptune.tta import parse_tta, tta_proba

__all__ = [
    "Predictions",
    "predict",
    "collect_images",
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
        tta: str or None. The test-time augmentation the probabilities are averaged over (``flip``, ...), or None.
    """

    predictions: list
    skipped: list
    labels: list
    top_k: int
    tta: str | None = None

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
            **({"tta": self.tta} if self.tta else {}),
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


def _load_one(path: str, size: tuple[int, int], resize: str):
    """Returns (image, None) or (None, reason)."""
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
    tta=None,
) -> Predictions:
    """Predicts the top-k classes of image files and folders, batched, skipping (and reporting) bad files.

    Args:
        model_or_path: keras.Model, training.Run, or str/Path of a run folder or a ``.keras`` file (loaded with
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
        tta: str, TTA or None. Test-time augmentation: average the probabilities over ``flip``, ``K`` crops or
            ``flip+crops`` (``inceptune.tta``; mirroring is wrong for digits, text and anything with handedness).
            Defaults to None: plain prediction.

    Returns:
        Predictions. List-like of ``{"path", "top": [(label, probability), ...]}`` for the usable files, in input
        order; ``.skipped`` lists ``(path, reason)`` for the others.

    Raises:
        InceptuneError: the model cannot be loaded, labels do not match its outputs, or top_k/batch_size < 1.

    Example:
        >>> result = predict("runs/flowers", ["a.jpg", "photos/"], top_k=3)
        >>> result[0]["top"][0]     # ("daisy", 0.93)
    """
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
        raise InceptuneError(f"predict: top_k must be an integer >= 1, received top_k={top_k!r}.")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise InceptuneError(f"predict: batch_size must be an integer >= 1, received batch_size={batch_size!r}.")
    plan = parse_tta(tta)  # a bad spec fails before the model loads
    model, found_labels, run_dir = resolve_model(model_or_path)
    labels = model_labels(model, labels if labels is not None else found_labels)
    size = input_size(model, image_size)
    resize = resize or run_resize(run_dir)
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
            batch = np.stack(images).astype(np.float32)
            probs = (predict_proba(model, batch, batch_size=batch_size) if plan is None
                     else tta_proba(model, batch, plan, batch_size=batch_size))
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            for path, row, idx in zip(good, probs, order):
                predictions.append({"path": path, "top": [(labels[j], float(row[j])) for j in idx]})
    return Predictions(predictions=predictions, skipped=skipped, labels=labels, top_k=k,
                       tta=None if plan is None else plan.spec)
