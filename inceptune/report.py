"""The HTML report of a run: ``report.html`` plus its PNG plots, readable offline with no server.

``write_report`` writes, into the run folder, ``report.html`` and the plots it shows
(``report_training.png``, ``report_confusion.png``, ``report_curves.png``). Misclassified thumbnails are
embedded in the HTML as base64 JPEG data URIs, so the page needs no other file and no network.

Sections, always present in this order (a section without data says "Not available" and why):

1. ``summary``: headline metrics and the warnings of the evaluation.
2. ``dataset``: class counts per split, duplicate contents across splits, skipped files, leakage warnings.
3. ``recipe``: the resolved recipe as YAML.
4. ``training``: loss, accuracy and learning rate per epoch, stage boundaries marked.
5. ``confusion``: confusion-matrix heat map (colour: share of the true class; text: counts).
6. ``curves``: ROC, precision-recall and reliability (calibration) curves.
7. ``per-class``: precision, recall, F1, support, ROC AUC, average precision per class.
8. ``misclassified``: a grid of the most confident mistakes, with true and predicted labels.

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

__all__ = ["SECTIONS", "write_report"]

SECTIONS = ("summary", "dataset", "recipe", "training", "confusion", "curves", "per-class", "misclassified")
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
    title: str = "inceptune report",
    max_thumbnails: int = 48,
) -> Path:
    """Writes ``report.html`` and its PNG plots into ``run_dir`` (atomically, file by file).

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
        title: str. Page title. Defaults to "inceptune report".
        max_thumbnails: int. Most misclassified images shown. Defaults to 48.

    Returns:
        Path. The written ``report.html``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = dict(metrics) if metrics else None
    labels = list(metrics["labels"]) if metrics and "labels" in metrics else None
    if y_true is None and probs is None and metrics and metrics.get("predictions"):
        y_true = metrics["predictions"].get("y_true")
        probs = metrics["predictions"].get("probs")

    body = {
        "summary": _summary_section(metrics),
        "dataset": _dataset_section(manifest_rows, skipped, warnings),
        "recipe": _recipe_section(recipe),
        "training": _training_section(run_dir, history_csv),
        "confusion": _confusion_section(run_dir, metrics),
        "curves": _curves_section(run_dir, metrics, labels, y_true, probs),
        "per-class": _per_class_section(metrics),
        "misclassified": _misclassified_section(run_dir, metrics, max_thumbnails),
    }
    order = list(SECTIONS)
    if cv is not None:
        body["cross-validation"] = _cv_section(cv)
        order.append("cross-validation")

    nav = " · ".join(f'<a href="#{key}">{_TITLES[key]}</a>' for key in order)
    sections = "\n".join(
        f'<section id="{key}">\n<h2>{_TITLES[key]}</h2>\n{body[key]}\n</section>' for key in order
    )
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = _PAGE.format(
        title=_e(title),
        subtitle=_e(f"{run_dir.resolve()} · written {stamp}"),
        nav=nav,
        sections=sections,
    )
    out = run_dir / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


# === Sections ===


def _summary_section(metrics) -> str:
    if not metrics:
        return _na("no evaluation metrics were given (a run without a test split, or evaluation not run yet).")
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
    table = _table(["metric", "value"], [(name, _fmt(v)) for name, v in rows], numeric_cols=(1,))
    warns = metrics.get("warnings") or []
    if warns:
        table += "<h3>Evaluation warnings</h3>" + _list(warns, cls="warn")
    return table


def _dataset_section(manifest_rows, skipped, warnings) -> str:
    parts = []
    rows = _read_rows(manifest_rows)
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
    return f"<pre>{_e(text)}</pre>"


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


def _training_section(run_dir: Path, history_csv) -> str:
    rows = _read_rows(history_csv)
    if not rows:
        return _na("no training history (history.csv) was given." if rows is None else "history.csv has no epoch.")
    series = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            series[key].append(_to_float(value))
    stages = [str(row.get("stage", "")) for row in rows]
    x = np.arange(1, len(rows) + 1)
    lr_key = "lr" if "lr" in series else ("learning_rate" if "learning_rate" in series else None)
    panels = [
        ("loss", [k for k in ("loss", "val_loss") if k in series]),
        ("accuracy", [k for k in ("accuracy", "val_accuracy") if k in series]),
        ("learning rate", [lr_key] if lr_key else []),
    ]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        return _na(f"history.csv has none of the columns loss, accuracy, lr (it has {sorted(series)}).")
    boundaries = [i for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
    fig = _figure(figsize=(11, 3.4 * len(panels)))
    for n, (name, keys) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, n + 1)
        for key in keys:
            y = np.array(series[key], dtype=float)
            ax.plot(x, y, marker="o", markersize=3, label=key, linestyle="--" if key.startswith("val_") else "-")
        if name == "learning rate" and all(v > 0 for v in series[keys[0]] if not math.isnan(v)):
            ax.set_yscale("log")
        for b in boundaries:
            ax.axvline(b + 0.5, color="0.4", linestyle=":", linewidth=1)
        if n == 0:  # stage names once, at the top
            starts = [0] + boundaries
            ends = boundaries + [len(stages)]
            for s, e in zip(starts, ends):
                ax.annotate(
                    stages[s], xy=((s + e) / 2 + 0.5, 1.0), xycoords=("data", "axes fraction"), ha="center",
                    va="bottom", fontsize=9, color="0.25",
                )
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if len(keys) > 1 or name != "learning rate":
            ax.legend(loc="best", fontsize=8)
    fig.axes[-1].set_xlabel("epoch (all stages, in order)")
    fig.tight_layout()
    name = _save_png(fig, run_dir, "report_training.png")
    stage_list = ", ".join(dict.fromkeys(stages))
    return (
        f'<p>{len(rows)} epoch(s) in stage(s): {_e(stage_list)}. Dotted lines mark stage boundaries.</p>\n'
        f'<img src="{name}" alt="training curves">'
    )


def _confusion_section(run_dir: Path, metrics) -> str:
    if not metrics or metrics.get("confusion_matrix") is None:
        return _na("no confusion matrix: the model was not evaluated.")
    cm = np.array(metrics["confusion_matrix"], dtype=float)
    labels = metrics.get("labels") or [str(i) for i in range(len(cm))]
    c = len(labels)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(2.5 + 0.45 * c, 14)
    fig = _figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(c), labels=labels, rotation=45 if c > 4 else 0, ha="right" if c > 4 else "center")
    ax.set_yticks(range(c), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 30:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8 if c > 12 else 10,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    name = _save_png(fig, run_dir, "report_confusion.png")
    return ('<p>Rows: true class; columns: predicted class. Row sums are the class supports.</p>\n'
            f'<img src="{name}" alt="confusion matrix">')


def _curves_section(run_dir: Path, metrics, labels, y_true, probs) -> str:
    if y_true is None or probs is None:
        return _na(
            "no raw predictions: ROC and precision-recall curves need y_true and probs (metrics.json keeps "
            "them under 'predictions' unless keep_predictions=False)."
        )
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    c = probs.shape[1]
    labels = labels or [str(i) for i in range(c)]
    fig = _figure(figsize=(15, 4.8))
    ax_roc, ax_pr, ax_cal = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    classes = [1] if c == 2 else list(range(c))
    legend = len(classes) <= _MAX_LEGEND_CLASSES
    for i in classes:
        positives = y_true == i
        if positives.all() or not positives.any():
            continue  # undefined for this class (see the warnings of the summary)
        fpr, tpr, _ = roc_curve(positives, probs[:, i])
        prec, rec, _ = precision_recall_curve(positives, probs[:, i])
        kw = {"linewidth": 1.5} if legend else {"linewidth": 0.6, "color": "0.7"}
        ax_roc.plot(fpr, tpr, label=f"{labels[i]} (AUC {auc(fpr, tpr):.3f})" if legend else None, **kw)
        ax_pr.plot(rec, prec, label=labels[i] if legend else None, drawstyle="steps-post", **kw)
    if not legend:  # many classes: the micro average summarises them
        onehot = np.eye(c)[y_true]
        fpr, tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
        prec, rec, _ = precision_recall_curve(onehot.ravel(), probs.ravel())
        ax_roc.plot(fpr, tpr, color="C0", linewidth=2, label=f"micro average (AUC {auc(fpr, tpr):.3f})")
        ax_pr.plot(rec, prec, color="C0", linewidth=2, label="micro average", drawstyle="steps-post")
    ax_roc.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02),
               title="ROC (one-vs-rest)" if c > 2 else f"ROC (positive class: {labels[1]})")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)

    bins = (metrics or {}).get("calibration", {}).get("bins")
    if bins:
        filled = [b for b in bins if b["count"]]
        centers = [(b["lower"] + b["upper"]) / 2 for b in filled]
        width = bins[0]["upper"] - bins[0]["lower"]
        ax_cal.bar(centers, [b["accuracy"] for b in filled], width=width * 0.9, color="C0", alpha=0.7,
                   label="accuracy in bin")
        ax_cal.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="perfect calibration")
        ax_cal.set(xlabel="top-1 confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
                   title=f"reliability (ECE {metrics.get('ece', float('nan')):.3f})")
        ax_cal.legend(loc="upper left", fontsize=8)
        ax_cal.grid(alpha=0.3)
    else:
        ax_cal.set_axis_off()
        ax_cal.text(0.5, 0.5, "calibration bins not available", ha="center", va="center")
    fig.tight_layout()
    name = _save_png(fig, run_dir, "report_curves.png")
    return f'<img src="{name}" alt="ROC, precision-recall and reliability curves">'


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


def _figure(figsize):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=figsize, dpi=100)


def _save_png(fig, run_dir: Path, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(run_dir / name, buf.getvalue())
    return name




_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; padding: 0 1em; }}
h1 {{ margin-bottom: 0.1em; }}
.sub {{ color: #666; font-size: 0.9em; margin-top: 0; }}
nav {{ font-size: 0.9em; margin: 1em 0 2em; }}
section {{ border-top: 1px solid #ddd; padding-top: 0.5em; margin-bottom: 2em; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.total td {{ font-weight: bold; background: #fafafa; }}
pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
img {{ max-width: 100%; }}
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
<p class="sub">{subtitle}</p>
<nav>{nav}</nav>
{sections}
</body>
</html>
"""
