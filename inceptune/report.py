"""The HTML report of a run: one self-contained ``report.html``, readable offline with no server.

``write_report`` writes ``report.html`` into the run folder and nothing else: the charts are inline SVG
(``svg_charts``: sharp at any zoom, their text searchable) and the misclassified thumbnails (JPEG) are embedded
as base64 data URIs, so the file alone can be mailed or attached to a ticket; it references no other file and
nothing on the network.

The page opens with a title from the folder's name and the date (``flowers — inceptune run, 2026-12-01``) and
one line saying what was measured: ``test split: 120 images, backbone inception_v3 (weights imagenet), image
size 299×299, trained in 4 min 12 s (8 epochs)`` (evaluations and cross-validations: ``evaluated on N images``;
parts that are unknown are left out).

Sections, always present in this order (a section without data says "Not available" and why):

1. ``summary``: headline metrics and the warnings of the evaluation.
2. ``training``: loss, accuracy and learning rate (log scale) per epoch, stage boundaries marked.
3. ``confusion``: confusion-matrix heat map (colour: share of the true class; text: counts).
4. ``curves``: ROC, precision-recall and reliability (calibration) curves.
5. ``per-class``: precision, recall, F1, support, ROC AUC, average precision per class.
6. ``misclassified``: a grid of the most confident mistakes, with true and predicted labels.
7. ``dataset``: class counts per split, duplicate contents across splits, skipped files, leakage warnings.
8. ``recipe``: the resolved recipe as YAML, folded (``<details>``).

A ``cross-validation`` section follows when ``cv`` is given.

ROC and precision-recall curves need the raw predictions: pass ``y_true`` and ``probs``, or leave them out
and the report reads ``metrics["predictions"]`` (written by ``evaluate.compute_metrics`` unless
``keep_predictions=False``).

Example:
    write_report(run_dir, metrics=metrics, history_csv=run_dir / "history.csv",
                 recipe=run_dir / "recipe.yaml", manifest_rows=run_dir / "manifest.csv")
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as _dt
import html
import io
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from inceptune._io import atomic_write_bytes

__all__ = ["KINDS", "SECTIONS", "write_report"]

SECTIONS = ("summary", "training", "confusion", "curves", "per-class", "misclassified", "dataset", "recipe")
KINDS = ("run", "evaluation", "cv")  # what the report is of: the words of its title and header line
_TITLES = {
    "summary": "Summary",
    "dataset": "Dataset",
    "recipe": "Recipe",
    "training": "Training curves",
    "confusion": "Confusion matrix",
    "curves": "ROC, precision-recall and calibration",
    "per-class": "Per-class metrics",
    "misclassified": "Misclassified images",
    "cross-validation": "Cross-validation",
}
_HASH_COLUMNS = ("content_hash", "hash", "sha256", "sha1", "md5")
_MAX_SKIPPED_ROWS = 50  # longer lists are cut, with a count of the rest
_THUMB_PX = 128  # longest side of a misclassified thumbnail
_MAX_LEGEND_CLASSES = 10  # above this, curves show the micro average and unlabeled per-class lines


def write_report(
    run_dir,
    *,
    metrics: Mapping | None = None,
    history_csv=None,
    recipe=None,
    manifest_rows=None,
    skipped=None,
    warnings: Sequence[str] | None = None,
    y_true=None,
    probs=None,
    cv: Mapping | None = None,
    title: str | None = None,
    max_thumbnails: int = 48,
    kind: str | None = None,
) -> Path:
    """Writes ``report.html``, with every image embedded, into ``run_dir`` (atomically).

    Args:
        run_dir: str or Path. Folder to write into (created if missing).
        metrics: dict or None. As returned by ``evaluate.compute_metrics`` (or read from ``metrics.json``).
            Defaults to None.
        history_csv: str, Path, list of dict, or None. ``history.csv`` with columns ``stage, epoch, loss,
            accuracy, val_loss, val_accuracy, lr`` (missing columns are left out of the plot). Defaults to None.
        recipe: dict, dataclass, YAML text (str), Path to a YAML file, or None. The resolved recipe.
            Defaults to None.
        manifest_rows: iterable of dict, Path to ``manifest.csv``, or None. Rows with ``label`` and ``split``
            (and optionally a content hash column: ``content_hash``, ``hash``, ``sha256``...). Defaults to None.
        skipped: iterable of (file, reason) pairs or dicts, Path to ``skipped.csv``, or None. Defaults to None.
        warnings: list of str or None. Data warnings (leakage, near-duplicates, imbalance). Defaults to None.
        y_true: array of int or None. True classes for the curves; overrides ``metrics["predictions"]``.
            Defaults to None.
        probs: array (N, C) or None. Predicted probabilities, with ``y_true``. Defaults to None.
        cv: dict or None. Cross-validation results ``{"folds": [{"fold": 0, "accuracy": ..}, ..],
            "mean": {..}, "std": {..}}``; adds a section when given. Defaults to None.
        title: str or None. Page title. None, "inceptune report", or a title of inceptune's own form
            ("inceptune run NAME", "inceptune evaluation on DATA") become ``FOLDER — inceptune run, DATE``
            (``FOLDER — inceptune evaluation on DATA, DATE``); any other title is used as given. Defaults to None.
        max_thumbnails: int. Most misclassified images shown. Defaults to 48.
        kind: str or None. One of ``KINDS``: "run" (metrics on the test split), "evaluation" or "cv"
            (``evaluated on N images``). Defaults to None: "cv" when ``cv`` is given, "evaluation" when every
            manifest row's split is "evaluated" or the title starts "inceptune evaluation", else "run".

    Returns:
        Path. The written ``report.html``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = dict(metrics) if metrics else None
    manifest_rows = _read_rows(manifest_rows)
    history = _read_rows(history_csv)
    kind = _kind(kind, cv, manifest_rows, title)
    labels = list(metrics["labels"]) if metrics and "labels" in metrics else None
    if y_true is None and probs is None and metrics and metrics.get("predictions"):
        y_true = metrics["predictions"].get("y_true")
        probs = metrics["predictions"].get("probs")

    body = {
        "summary": _summary_section(metrics, warnings),
        "training": _training_section(history) + _toolbox_note(_recipe_dict(recipe)),
        "confusion": _confusion_section(metrics),
        "curves": _curves_section(metrics, labels, y_true, probs),
        "per-class": _per_class_section(metrics),
        "misclassified": _misclassified_section(run_dir, metrics, max_thumbnails),
        "dataset": _dataset_section(manifest_rows, skipped, warnings),
        "recipe": _recipe_section(recipe),
    }
    if cv is not None:
        body["cross-validation"] = _cv_section(cv)
    now = _dt.datetime.now()
    page = _page(body, title=_page_title(title, run_dir, kind, now.date()),
                 header=_header_line(kind, metrics, _recipe_dict(recipe), history),
                 subtitle=f"{run_dir.resolve()} · written {now:%Y-%m-%d %H:%M}")
    out = run_dir / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


def _page(body: dict, *, title: str, header: str, subtitle: str) -> str:
    """The whole HTML page: title, header line, a table of contents, then the sections in `SECTIONS` order."""
    order = [key for key in (*SECTIONS, "cross-validation") if key in body]
    nav = " · ".join(f'<a href="#{key}">{_TITLES[key]}</a>' for key in order)
    sections = "\n".join(
        f'<section id="{key}">\n<h2>{_TITLES[key]}</h2>\n{body[key]}\n</section>' for key in order
    )
    return _PAGE.format(title=_e(title), header=_e(header), subtitle=_e(subtitle), nav=nav, sections=sections)


# === Title and header line ===


def _kind(kind, cv, manifest_rows, title) -> str:
    if kind is not None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, received kind={kind!r}")
        return kind
    if cv is not None:
        return "cv"
    splits = {str(row.get("split")) for row in manifest_rows or ()}
    if splits == {"evaluated"} or str(title or "").startswith("inceptune evaluation"):
        return "evaluation"
    return "run"


def _page_title(title, run_dir: Path, kind: str, date) -> str:
    """``FOLDER — inceptune run, DATE`` for no title or one of inceptune's own; any other title unchanged."""
    folder = run_dir.resolve().name or str(run_dir.resolve())
    if title is None or title == "inceptune report":
        title = {"run": "inceptune run", "evaluation": "inceptune evaluation", "cv": "inceptune cross-validation"}[kind]
    elif not title.startswith("inceptune "):
        return title  # the caller's own
    elif title.endswith(f" {folder}") and " " in title[: -len(folder) - 1]:
        title = title[: -len(folder) - 1]  # "inceptune run run" -> "run — inceptune run": the folder once, first
    return f"{folder} — {title}, {date:%Y-%m-%d}"


def _header_line(kind: str, metrics, recipe: Mapping | None, history) -> str:
    """"test split: N images, backbone B (weights W), image size S, trained in T"; unknown parts left out."""
    n = (metrics or {}).get("num_samples")
    if kind == "run":
        parts = [f"test split: {n} images" if n is not None else "no test split"]
    else:
        parts = [f"evaluated on {n} images" if n is not None else "not evaluated"]
    model, data = ((recipe or {}).get(key) for key in ("model", "data"))
    model, data = (part if isinstance(part, Mapping) else {} for part in (model, data))
    if model.get("backbone"):
        weights = f" (weights {_weights_name(model['weights'])})" if "weights" in model else ""
        parts.append(f"backbone {model['backbone']}{weights}")
    size = model.get("image_size") or data.get("image_size")
    if size:
        parts.append(f"image size {size}×{size}")
    seconds = [_to_float(row.get("seconds")) for row in history or ()]
    if seconds and not any(math.isnan(x) for x in seconds):
        parts.append(f"trained in {_duration(sum(seconds))} ({len(seconds)} epoch{'s' if len(seconds) != 1 else ''})")
    return ", ".join(parts)


def _weights_name(weights) -> str:
    if weights is None or str(weights).lower() == "none":
        return "none"
    return Path(str(weights)).name if str(weights).lower() != "imagenet" else "imagenet"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# === Sections ===


def _summary_section(metrics, warnings=None) -> str:
    data_note = ""
    if warnings:
        data_note = (f'<p class="warn">{len(warnings)} data warning(s) (leakage, duplicates, imbalance): see '
                     f'<a href="#dataset">{_TITLES["dataset"]}</a>.</p>')
    if not metrics:
        return data_note + _na(
            "no evaluation metrics were given (a run without a test split, or evaluation not run yet).")
    rows = [("samples", metrics.get("num_samples")), ("classes", metrics.get("num_classes"))]
    rows += [("accuracy", metrics.get("accuracy")), ("balanced accuracy", metrics.get("balanced_accuracy"))]
    for k, v in (metrics.get("top_k_accuracy") or {}).items():
        if str(k) != "1":
            rows.append((f"top-{k} accuracy", v))
    rows += [
        ("macro F1", (metrics.get("macro_avg") or {}).get("f1")),
        ("weighted F1", (metrics.get("weighted_avg") or {}).get("f1")),
        ("ROC AUC", metrics.get("roc_auc")),
        ("average precision", metrics.get("average_precision")),
        ("log loss", metrics.get("log_loss")),
        ("expected calibration error (15 bins)", metrics.get("ece")),
    ]
    ts = metrics.get("temperature_scaling")
    if ts:  # the metrics above are the calibrated model's; accuracy is the same without it (argmax unchanged)
        rows += [("temperature (fitted on the validation split)", ts.get("temperature")),
                 ("expected calibration error without temperature", ts.get("ece_before")),
                 ("log loss without temperature", ts.get("log_loss_before"))]
    tta = metrics.get("tta")
    if tta:
        rows += [(f"accuracy without test-time augmentation ({tta.get('transforms')}, {tta.get('views')} views; "
                  "the accuracy above is with it)", tta.get("accuracy_without")),
                 ("expected calibration error without test-time augmentation", tta.get("ece_without"))]
    table = _table(["metric", "value"], [(name, _fmt(v)) for name, v in rows], numeric_cols=(1,))
    warns = metrics.get("warnings") or []
    if warns:
        table += "<h3>Evaluation warnings</h3>" + _list(warns, cls="warn")
    return table + data_note


def _dataset_section(rows, skipped, warnings) -> str:
    parts = []
    if rows is None:
        parts.append(_na("no manifest was given, so class counts per split are unknown."))
    elif not rows:
        parts.append(_na("the manifest is empty."))
    else:
        counts: dict[str, Counter] = defaultdict(Counter)
        splits: list[str] = []
        for row in rows:
            split = str(row.get("split") or "(none)")
            if split not in splits:
                splits.append(split)
            counts[str(row.get("label", "?"))][split] += 1
        known = ("train", "val", "test")
        order = [s for s in known if s in splits] + [s for s in splits if s not in known]
        table_rows = [
            [label] + [counts[label][s] for s in order] + [sum(counts[label].values())] for label in sorted(counts)
        ]
        table_rows.append(["total"] + [sum(counts[l][s] for l in counts) for s in order] + [len(rows)])
        parts.append(
            _table(["class", *order, "all"], table_rows, numeric_cols=range(1, len(order) + 2), last_row_total=True)
        )
        parts.append(_leakage_from_hashes(rows))

    skipped_rows = _read_skipped(skipped)
    parts.append("<h3>Skipped files</h3>")
    if skipped_rows is None:
        parts.append(_na("no list of skipped files was given."))
    elif not skipped_rows:
        parts.append("<p>No file was skipped.</p>")
    else:
        shown = skipped_rows[:_MAX_SKIPPED_ROWS]
        parts.append(f"<p>{len(skipped_rows)} file(s) skipped.</p>")
        parts.append(_table(["file", "reason"], shown))
        if len(skipped_rows) > len(shown):
            parts.append(f"<p>… and {len(skipped_rows) - len(shown)} more (see skipped.csv).</p>")

    parts.append("<h3>Leakage and data warnings</h3>")
    if warnings is None:
        parts.append(_na("no data checks were given."))
    elif not warnings:
        parts.append("<p>No warning.</p>")
    else:
        parts.append(_list(warnings, cls="warn"))
    return "\n".join(parts)


def _leakage_from_hashes(rows) -> str:
    column = next((c for c in _HASH_COLUMNS if c in rows[0]), None)
    if column is None:
        return ""
    splits_of: dict[str, set] = defaultdict(set)
    for row in rows:
        if row.get(column):
            splits_of[row[column]].add(str(row.get("split") or "(none)"))
    crossing = sum(1 for s in splits_of.values() if len(s) > 1)
    if crossing:
        return (
            f'<p class="warn">{crossing} identical image content(s) (same {_e(column)}) appear in more than one '
            "split: the evaluation may be optimistic.</p>"
        )
    return f"<p>No identical image content across splits (checked by {_e(column)}).</p>"


def _recipe_section(recipe) -> str:
    if recipe is None:
        return _na("no recipe was given.")
    text = _recipe_text(recipe)
    lines = len(text.splitlines())
    return (f"<details><summary>The resolved recipe ({lines} lines of YAML, every default written out): "
            f"click to show</summary>\n<pre>{_e(text)}</pre>\n</details>")


def _recipe_dict(recipe) -> Mapping | None:
    """The recipe as a mapping for the header line; None when it is not given or not readable."""
    if recipe is None or isinstance(recipe, Mapping):
        return recipe
    import yaml

    try:
        data = yaml.safe_load(_recipe_text(recipe))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, Mapping) else None


def _recipe_text(recipe) -> str:
    import yaml

    if isinstance(recipe, os.PathLike):
        return Path(recipe).read_text(encoding="utf-8")
    if isinstance(recipe, str):
        return recipe
    if dataclasses.is_dataclass(recipe) and not isinstance(recipe, type):
        recipe = dataclasses.asdict(recipe)
    elif hasattr(recipe, "model_dump"):  # pydantic
        recipe = recipe.model_dump()
    elif hasattr(recipe, "to_dict"):
        recipe = recipe.to_dict()
    return yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False)


def _training_section(rows) -> str:
    if not rows:
        return _na("no training history (history.csv) was given." if rows is None else "history.csv has no epoch.")
    charts = _training_charts(rows)
    if not charts:
        columns = sorted({key for row in rows for key in row})
        return _na(f"history.csv has none of the columns loss, accuracy, lr (it has {columns}).")
    stage_list = ", ".join(dict.fromkeys(str(row.get("stage", "")) for row in rows))
    return (
        f'<p>{len(rows)} epoch(s) in stage(s): {_e(stage_list)}. Dotted lines mark stage boundaries.</p>\n'
        + _plots("training curves", charts)
    )


def _plots(label: str, charts: Sequence[str]) -> str:
    """Charts (`svg_charts`) side by side where the page is wide enough, as one labelled group."""
    return f'<div class="plots" role="group" aria-label="{_e(label)}">{"".join(charts)}</div>'


def _training_charts(rows) -> list[str]:
    """Loss, accuracy and learning rate against the epoch (whole-number ticks), one chart each; [] without
    any of those columns."""
    from inceptune.svg_charts import Chart, padded_range

    series = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            series[key].append(_to_float(value))
    stages = [str(row.get("stage", "")) for row in rows]
    x = list(range(1, len(rows) + 1))
    lr_key = "lr" if "lr" in series else ("learning_rate" if "learning_rate" in series else None)

    def drawn(key):  # val_ema_* columns are blank in stages without EMA
        return key in series and any(math.isfinite(v) for v in series[key])

    panels = [
        ("loss", [k for k in ("loss", "val_loss", "val_ema_loss") if drawn(k)]),
        ("accuracy", [k for k in ("accuracy", "val_accuracy", "val_ema_accuracy") if drawn(k)]),
        ("learning rate", [lr_key] if lr_key and drawn(lr_key) else []),
    ]
    panels = [(name, keys) for name, keys in panels if keys]
    boundaries = [i for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
    charts = []
    for n, (name, keys) in enumerate(panels):
        values = [v for k in keys for v in series[k]]
        # a log axis for the learning rate: a cosine schedule's last 3.8e-8 stays visible; 0 is not drawn
        log = name == "learning rate" and any(v > 0 for v in values if math.isfinite(v))
        last = n == len(panels) - 1
        chart = Chart(1100, 320 if last else 290, x=(0.5, len(rows) + 0.5), y=padded_range(values, log), ylog=log,
                      integer_x=True, room_above=n == 0,
                      xlabel="epoch (all stages, in order)" if last else "",
                      ylabel=f"{name} (log scale)" if log else name)
        for key in keys:
            chart.line(x, series[key], label=key, dashed=key.startswith("val_"), markers=True)
        for b in boundaries:
            chart.vline(b + 0.5)
        if n == 0:  # stage names once, at the top
            for s, e in zip([0] + boundaries, boundaries + [len(stages)]):
                chart.label_above((s + e) / 2 + 0.5, stages[s])
        if len(keys) > 1 or name != "learning rate":
            chart.legend("best")
        charts.append(chart.svg(f"{name} by epoch"))
    return charts


def _toolbox_note(recipe: Mapping | None) -> str:
    """Which of label smoothing, mixup/CutMix, EMA, gradient clipping and mixed precision were on (issue #18)."""
    if not recipe:
        return ""

    def _g(value) -> str:
        return f"{value:g}" if isinstance(value, (int, float)) else str(value)

    data = recipe.get("data") or {}
    on = []
    for key, name in (("mixup", "mixup"), ("cutmix", "CutMix")):
        mix = data.get(key)
        if isinstance(mix, Mapping):
            on.append(f"{name} (alpha {_g(mix.get('alpha'))}, prob {_g(mix.get('prob'))})")
    for stage in recipe.get("stages") or []:
        if not isinstance(stage, Mapping):
            continue
        parts = []
        if stage.get("label_smoothing"):
            parts.append(f"label smoothing {_g(stage['label_smoothing'])}")
        if isinstance(stage.get("ema"), Mapping):
            parts.append(f"EMA decay {_g(stage['ema'].get('decay'))}")
        if stage.get("clip_norm") is not None:
            parts.append(f"gradient clipping at norm {_g(stage['clip_norm'])}")
        if parts:
            on.append(f"stage {stage.get('name')}: " + ", ".join(parts))
    if recipe.get("precision") not in (None, "float32"):
        on.append(f"precision {recipe['precision']}")
    if not on:
        return ""
    note = ("" if not data.get("mixup") else " In stages trained on cached features, mixup mixes the features at "
            "the cut instead of the pixels (a different regulariser); CutMix needs images.")
    return f"\n<p>Regularisation and precision: {_e('; '.join(on))}.{_e(note)}</p>"


def _confusion_section(metrics) -> str:
    if not metrics or metrics.get("confusion_matrix") is None:
        return _na("no confusion matrix: the model was not evaluated.")
    from inceptune.svg_charts import heatmap

    cm = np.array(metrics["confusion_matrix"], dtype=float)
    labels = metrics.get("labels") or [str(i) for i in range(len(cm))]
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    chart = heatmap(share.tolist(), cm.tolist(), labels, label="confusion matrix", show_counts=len(labels) <= 30)
    return ('<p>Rows: true class; columns: predicted class. Row sums are the class supports.</p>\n'
            + _plots("confusion matrix", [chart]))


def _curves_section(metrics, labels, y_true, probs) -> str:
    if y_true is None or probs is None:
        return _na(
            "no raw predictions: ROC and precision-recall curves need y_true and probs (metrics.json keeps "
            "them under 'predictions' unless keep_predictions=False)."
        )
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    from inceptune.svg_charts import Chart

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    c = probs.shape[1]
    labels = labels or [str(i) for i in range(c)]
    unit = (-0.02, 1.02)
    roc = Chart(500, 470, x=unit, y=unit, xlabel="false positive rate", ylabel="true positive rate",
                title="ROC (one-vs-rest)" if c > 2 else f"ROC (positive class: {labels[1]})")
    pr = Chart(500, 470, x=unit, y=unit, xlabel="recall", ylabel="precision", title="precision-recall")
    classes = [1] if c == 2 else list(range(c))
    legend = len(classes) <= _MAX_LEGEND_CLASSES
    for i in classes:
        positives = y_true == i
        if positives.all() or not positives.any():
            continue  # undefined for this class (see the warnings of the summary)
        fpr, tpr, _ = roc_curve(positives, probs[:, i])
        prec, rec, _ = precision_recall_curve(positives, probs[:, i])
        width, color = (1.5, None) if legend else (0.6, "#b3b3b3")  # None: the next colour of the cycle
        roc.line(fpr, tpr, label=f"{labels[i]} (AUC {auc(fpr, tpr):.3f})" if legend else None, width=width,
                 color=color)
        pr.line(rec, prec, label=labels[i] if legend else None, step=True, width=width, color=color)
    if not legend:  # many classes: the micro average summarises them
        onehot = np.eye(c)[y_true]
        fpr, tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
        prec, rec, _ = precision_recall_curve(onehot.ravel(), probs.ravel())
        roc.line(fpr, tpr, color="#1f77b4", width=2, label=f"micro average (AUC {auc(fpr, tpr):.3f})")
        pr.line(rec, prec, color="#1f77b4", width=2, label="micro average", step=True)
    roc.line([0, 1], [0, 1], color="#999", width=1, dotted=True)
    roc.legend("lower right")
    pr.legend("lower left")

    bins = (metrics or {}).get("calibration", {}).get("bins")
    ece = (metrics or {}).get("ece", float("nan"))
    cal = Chart(500, 470, x=unit, y=unit, xlabel="top-1 confidence", ylabel="accuracy",
                title=f"reliability (ECE {ece:.3f})" if bins else "reliability")
    if bins:
        filled = [b for b in bins if b["count"]]
        centers = [(b["lower"] + b["upper"]) / 2 for b in filled]
        width = bins[0]["upper"] - bins[0]["lower"]
        ts = metrics.get("temperature_scaling") or {}
        cal.bars(centers, [b["accuracy"] for b in filled], width * 0.9, color="#1f77b4",
                 label="accuracy in bin" + (" (with temperature)" if ts else ""))
        before = [b for b in ts.get("bins_before") or [] if b["count"]]
        if before:  # reliability before temperature scaling, over the same bins
            cal.line([b["confidence"] for b in before], [b["accuracy"] for b in before], color="#d62728",
                     width=1.2, markers=True,
                     label=f"without temperature (ECE {ts.get('ece_before', float('nan')):.3f})")
        cal.line([0, 1], [0, 1], color="#999", width=1, dotted=True, label="perfect calibration")
        cal.legend("upper left")
    else:
        cal.note("calibration bins not available")
    return _plots("ROC, precision-recall and reliability curves",
                  [roc.svg("ROC curves"), pr.svg("precision-recall curves"), cal.svg("reliability diagram")])


def _per_class_section(metrics) -> str:
    if not metrics or not metrics.get("per_class"):
        return _na("no per-class metrics: the model was not evaluated.")
    auc = metrics.get("roc_auc_per_class") or {}
    ap = metrics.get("average_precision_per_class") or {}
    rows = []
    for label, m in metrics["per_class"].items():
        rows.append([label, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), m["support"],
                     _fmt(auc.get(label)), _fmt(ap.get(label))])
    for key, name in (("macro_avg", "macro average"), ("weighted_avg", "weighted average")):
        if metrics.get(key):
            m = metrics[key]
            extra = ((_fmt(metrics.get("roc_auc")), _fmt(metrics.get("average_precision"))) if key == "macro_avg"
                     else ("", ""))
            rows.append([name, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), m["support"], *extra])
    return _table(["class", "precision", "recall", "F1", "support", "ROC AUC", "average precision"], rows,
                  numeric_cols=range(1, 7))


def _misclassified_section(run_dir: Path, metrics, max_thumbnails: int) -> str:
    if not metrics or "misclassified" not in metrics:
        return _na("no list of misclassified images: the model was not evaluated.")
    wrong = metrics["misclassified"]
    if not wrong:
        return "<p>No image was misclassified.</p>"
    shown = wrong[:max_thumbnails]
    cells = []
    for item in shown:
        thumb = _thumbnail(item.get("path"), run_dir)
        where = Path(item["path"]).name if item.get("path") else "#" + str(item.get("index"))
        image = (
            f'<img src="{thumb}" alt="{_e(item.get("path") or "")}">' if thumb
            else '<div class="noimg">image not available</div>'
        )
        caption = (
            f'<div class="cap"><b>true</b> {_e(item["true"])}<br><b>predicted</b> {_e(item["predicted"])} '
            f'({item["confidence"]:.0%})<br><span class="path">{_e(where)}</span></div>'
        )
        cells.append(f'<figure class="thumb" title="{_e(item.get("path") or "")}">{image}{caption}</figure>')
    note = f"<p>{len(wrong)} misclassified; the {len(shown)} most confident mistakes are shown.</p>"
    return note + '<div class="grid">' + "".join(cells) + "</div>"


def _cv_section(cv: Mapping) -> str:
    folds = list(cv.get("folds") or [])
    if not folds:
        return _na("no fold results.")
    keys = [k for k in folds[0] if k != "fold" and isinstance(folds[0][k], (int, float))]
    rows = [[f.get("fold", i)] + [_fmt(f.get(k)) for k in keys] for i, f in enumerate(folds)]
    if cv.get("mean"):
        std = cv.get("std") or {}
        rows.append(["mean ± std"] + [f"{_fmt(cv['mean'].get(k))} ± {_fmt(std.get(k))}" for k in keys])
    return _table(["fold", *keys], rows, numeric_cols=range(1, len(keys) + 1))


# === Helpers ===


def _na(reason: str) -> str:
    return f'<p class="na">Not available: {_e(reason)}</p>'


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _table(header, rows, *, numeric_cols=(), last_row_total=False) -> str:
    numeric_cols = set(numeric_cols)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cls = ' class="total"' if last_row_total and r == len(rows) - 1 else ""
        cells = "".join(
            f'<td class="num">{_e(v)}</td>' if i in numeric_cols else f"<td>{_e(v)}</td>" for i, v in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _list(items: Iterable[str], cls: str = "") -> str:
    return f'<ul class="{cls}">' + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _to_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _read_rows(source) -> list[dict] | None:
    """A CSV file (str/Path) or an iterable of mappings -> list of dict; None stays None."""
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        with open(source, newline="", encoding="utf-8") as fh:
            return [dict(row) for row in csv.DictReader(fh)]
    return [dict(row) for row in source]


def _read_skipped(source) -> list[tuple[str, str]] | None:
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        rows = _read_rows(source)
    else:
        rows = list(source)
    out = []
    for row in rows:
        if isinstance(row, Mapping):
            out.append((str(row.get("file", row.get("path", ""))), str(row.get("reason", ""))))
        else:
            file, reason = (list(row) + ["", ""])[:2]
            out.append((str(file), str(reason)))
    return out


def _thumbnail(path, run_dir: Path) -> str | None:
    """A small JPEG of ``path`` as a data URI, or None when the file cannot be read."""
    if not path:
        return None
    from PIL import Image, ImageOps

    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates.append(run_dir / path)
    for candidate in candidates:
        try:
            with Image.open(candidate) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((_THUMB_PX, _THUMB_PX))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
        except (OSError, ValueError):
            continue
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return None


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; padding: 0 1em; }}
h1 {{ margin-bottom: 0.1em; }}
.head {{ font-size: 1.1em; margin: 0.3em 0; }}
.sub {{ color: #666; font-size: 0.9em; margin-top: 0; }}
nav {{ font-size: 0.9em; margin: 1em 0 2em; }}
section {{ border-top: 1px solid #ddd; padding-top: 0.5em; margin-bottom: 2em; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.total td {{ font-weight: bold; background: #fafafa; }}
details summary {{ cursor: pointer; color: #555; }}
pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
img, svg {{ max-width: 100%; height: auto; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 4px; }}
.na {{ color: #777; font-style: italic; }}
.warn li, p.warn {{ color: #8a5300; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure.thumb {{ margin: 0; width: 140px; font-size: 0.75em; }}
figure.thumb img, .noimg {{ width: 128px; height: 128px; object-fit: contain; background: #eee; display: block; }}
.noimg {{ display: flex; align-items: center; justify-content: center; color: #888; text-align: center; }}
.cap {{ margin-top: 3px; line-height: 1.3; }}
.path {{ color: #888; word-break: break-all; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="head">{header}</p>
<p class="sub">{subtitle}</p>
<nav>{nav}</nav>
{sections}
</body>
</html>
"""
