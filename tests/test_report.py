"""Tests for inceptune.report: report.html is one self-contained file (every image a data URI), has every
section, and says in its title and header line what was trained and measured."""

from __future__ import annotations

import base64
import csv
import datetime
import io
import os
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inceptune import evaluate, report

LABELS = ["cat", "dog", "fox"]


class _Refs(HTMLParser):
    """Collects section ids, every src/href, the images (alt -> src), the title, h1 and the header line."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.images: dict[str, str] = {}
        self.sections: list[str] = []
        self.h2: list[str] = []
        self.text: dict[str, str] = {}
        self._in = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href", "data", "action", "srcset", "poster"):
            if attrs.get(key):
                self.refs.append(attrs[key])
        if tag == "img":
            self.images[attrs.get("alt", "")] = attrs.get("src", "")
        if tag == "section":
            self.sections.append(attrs.get("id"))
        self._in = "header" if tag == "p" and attrs.get("class") == "head" else tag

    def handle_data(self, data):
        if self._in == "h2":
            self.h2.append(data)
        elif self._in in ("title", "h1", "header") and self._in not in self.text:
            self.text[self._in] = data
        self._in = None


def _charts(text: str) -> dict[str, list[str]]:
    """{a group of charts' label: the labels of its SVG charts, in order}."""
    groups = re.findall(r'<div class="plots" role="group" aria-label="([^"]*)">(.*?)</div>', text, re.S)
    return {label: re.findall(r'<svg [^>]*aria-label="([^"]*)"', body) for label, body in groups}


def _svg(text: str, label: str) -> str:
    (found,) = re.findall(rf'<svg [^>]*aria-label="{re.escape(label)}".*?</svg>', text, re.S)
    return found


def _legend(svg: str) -> list[str]:
    box = re.search(r'<rect [^>]*fill-opacity="0.85" stroke="#ccc"/>(.*?)</g>', svg, re.S)
    return re.findall(r"<text [^>]*>([^<]*)</text>", box.group(1)) if box else []


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _assert_self_contained(page: Path, parser: _Refs) -> dict[str, tuple[str, tuple[int, int]]]:
    """Every reference is an in-page anchor or an embedded data URI: no local file, no network.
    Returns {alt text: (image format, size)} of the embedded images."""
    for ref in parser.refs:
        if ref.startswith("#"):
            assert ref[1:] in parser.sections, ref
        else:
            assert re.fullmatch(r"data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+", ref), f"not a data URI: {ref[:80]!r}"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "file:" not in text
    assert "<link" not in text and "<script" not in text and "url(" not in text
    images = {}
    for alt, src in parser.images.items():
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            images[alt] = (im.format, im.size)
    return images


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with images, history.csv and the metrics of 12 predictions (4 wrong, 1 unreadable)."""
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    paths = []
    for i in range(12):
        p = img_dir / f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, size=(40, 60, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    (img_dir / "img_03.png").write_bytes(b"broken")  # a misclassified file that no longer reads
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    probs = np.full((12, 3), 0.1)
    pred = np.array([0, 0, 0, 1, 1, 1, 2, 1, 2, 2, 0, 0])  # 4 mistakes: indices 3, 6, 10, 11
    probs[np.arange(12), pred] = 0.8
    metrics = evaluate.compute_metrics(y, probs, LABELS, paths=paths)
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"])
        for e in range(3):
            w.writerow(["head", e, 1.0 - 0.2 * e, 0.5 + 0.1 * e, 1.1 - 0.2 * e, 0.45 + 0.1 * e, 1e-3, 2.0])
        for e in range(2):
            w.writerow(["top", e, 0.4 - 0.1 * e, 0.8 + 0.05 * e, 0.5 - 0.1 * e, 0.75 + 0.05 * e, 1e-4 / (e + 1), 3.0])
    return run, metrics


def test_full_report_has_every_section_and_embeds_every_image(run_dir):
    run, metrics = run_dir
    manifest = [
        {"path": f"{lab}{i}.png", "label": lab, "split": split, "content_hash": f"h{lab}{i}"}
        for lab, n in (("cat", 5), ("dog", 4), ("fox", 3))
        for i, split in zip(range(n), ["train", "train", "val", "test", "train"])
    ]
    manifest.append({"path": "cat_copy.png", "label": "cat", "split": "test", "content_hash": "hcat0"})
    page = report.write_report(
        run,
        metrics=metrics,
        history_csv=run / "history.csv",
        recipe={"data": {"dir": "images", "image_size": 32}, "model": {"backbone": "inception_v3", "weights": None},
                "stages": [{"name": "head", "epochs": 3}]},
        manifest_rows=manifest,
        skipped=[("bad.jpg", "cannot be decoded"), {"file": "tiny.png", "reason": "smaller than 32x32"}],
        warnings=["2 near-duplicate images across train and test"],
        title="Test <run>",
    )
    assert page == run / "report.html" and page.is_file()
    parser = _parse(page)
    assert parser.sections == list(report.SECTIONS)
    assert parser.sections[:2] == ["summary", "training"]  # the curves right after the summary
    assert parser.h2 == [report._TITLES[s] for s in report.SECTIONS]
    images = _assert_self_contained(page, parser)
    # One file: the charts are in the page, nothing is written beside it (no image, no temp file).
    assert sorted(p.name for p in run.iterdir()) == ["history.csv", "report.html"]
    assert sorted(images.values()) == [("JPEG", (60, 40))] * 3  # thumbnails, as is
    text = page.read_text()
    # the charts, inline SVG: 3 training panels, the confusion matrix, 3 curve panels
    assert _charts(text) == {
        "training curves": ["loss by epoch", "accuracy by epoch", "learning rate by epoch"],
        "confusion matrix": ["confusion matrix"],
        "ROC, precision-recall and reliability curves": ["ROC curves", "precision-recall curves",
                                                         "reliability diagram"]}
    loss, accuracy, lr = (_svg(text, f"{name} by epoch") for name in ("loss", "accuracy", "learning rate"))
    assert _legend(loss) == ["loss", "val_loss"] and _legend(accuracy) == ["accuracy", "val_accuracy"]
    assert loss.count("<circle") == 10 and loss.count("stroke-dasharray=\"2 3\"") == 1  # 5 epochs x 2; 1 boundary
    assert ">head</text>" in loss and ">top</text>" in loss  # the stages named above the first panel
    assert "learning rate (log scale)" in lr and ">1e-3</text>" in lr and ">1e-4</text>" in lr
    confusion = _svg(text, "confusion matrix")
    cells = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="(\d+)" height="\1" fill="#[0-9a-f]{6}"/><text[^>]*>(\d+)<',
                       confusion)
    assert [int(n) for _, n in cells] == [3, 1, 0, 0, 3, 1, 2, 0, 2]  # row by row: true class, then predicted
    curves = _svg(text, "ROC curves")
    assert all(f"{name} (AUC " in curves for name in LABELS)
    assert "perfect calibration" in _svg(text, "reliability diagram")
    assert "Not available" not in text
    assert "<title>Test &lt;run&gt;</title>" in text  # escaped; a title of the caller's own is kept
    assert parser.text["header"] == ("test split: 12 images, backbone inception_v3 (weights none), image size 32×32, "
                                   "trained in 12.0 s (5 epochs)")
    assert re.search(r"<details><summary>The resolved recipe \(\d+ lines of YAML[^<]*</summary>\n<pre>", text)
    assert "1 data warning(s)" in text and '<a href="#dataset">' in text  # the summary points to them
    # Class counts per split: cat 3 train, 1 val, 2 test (one is the copy), 6 in all.
    assert ('<td>cat</td><td class="num">3</td><td class="num">1</td><td class="num">2</td>'
            '<td class="num">6</td>') in text
    assert "1 identical image content(s) (same content_hash) appear in more than one split" in text
    assert "<td>bad.jpg</td><td>cannot be decoded</td>" in text
    assert "2 near-duplicate images across train and test" in text
    assert "image_size: 32" in text and "stage(s): head, top" in text
    # 4 mistakes: 3 thumbnails embedded, the unreadable one gets a placeholder.
    assert text.count('src="data:image/jpeg;base64,') == 3
    assert text.count('<div class="noimg">image not available</div>') == 1
    assert "4 misclassified; the 4 most confident mistakes are shown." in text
    assert f"<td>accuracy</td><td class=\"num\">{metrics['accuracy']:.4f}</td>" in text


def test_empty_report_still_has_every_section(tmp_path):
    page = report.write_report(tmp_path / "empty")
    parser = _parse(page)
    assert parser.sections == list(report.SECTIONS)
    assert _assert_self_contained(page, parser) == {}
    assert parser.text["header"] == "no test split"
    text = page.read_text()
    # One "Not available" per section, plus skipped-files and data-checks sub-sections of the dataset.
    assert text.count('<p class="na">Not available:') == len(report.SECTIONS) + 2


def test_curves_need_predictions_and_accept_explicit_arrays(run_dir):
    run, metrics = run_dir
    lean = {k: v for k, v in metrics.items() if k != "predictions"}
    text = report.write_report(run, metrics=lean).read_text()
    assert "Not available: no raw predictions" in text
    assert "ROC, precision-recall and reliability curves" not in _charts(text)
    y = np.array(metrics["predictions"]["y_true"])
    probs = np.array(metrics["predictions"]["probs"])
    text = report.write_report(run, metrics=lean, y_true=y, probs=probs).read_text()
    assert _charts(text)["ROC, precision-recall and reliability curves"] == [
        "ROC curves", "precision-recall curves", "reliability diagram"]
    assert re.search(r"no training history", text)


def test_cv_section_and_csv_inputs(tmp_path, run_dir):
    run, _ = run_dir
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        w.writerows([["a.png", "cat", "train"], ["b.png", "dog", "test"]])
    with open(tmp_path / "skipped.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "reason"], ["z.gif", "unsupported format"]])
    (tmp_path / "recipe.yaml").write_text("seed: 0\n")
    cv = {
        "folds": [{"fold": 0, "accuracy": 0.5, "macro_f1": 0.4}, {"fold": 1, "accuracy": 0.7, "macro_f1": 0.6}],
        "mean": {"accuracy": 0.6, "macro_f1": 0.5},
        "std": {"accuracy": 0.1, "macro_f1": 0.1},
    }
    page = report.write_report(
        run, manifest_rows=tmp_path / "manifest.csv", skipped=tmp_path / "skipped.csv",
        recipe=tmp_path / "recipe.yaml", warnings=[], cv=cv,
    )
    parser = _parse(page)
    assert parser.sections == [*report.SECTIONS, "cross-validation"]
    _assert_self_contained(page, parser)
    assert parser.text["header"] == "not evaluated"  # a cv report says "evaluated on N images" when it has metrics
    assert parser.text["title"] == f"run — inceptune cross-validation, {datetime.date.today():%Y-%m-%d}"
    text = page.read_text()
    assert "<td>z.gif</td><td>unsupported format</td>" in text
    assert "seed: 0" in text
    assert '<td>mean ± std</td><td class="num">0.6000 ± 0.1000</td>' in text
    assert "No warning." in text


def test_title_from_the_folder_and_date_and_header_line(run_dir, tmp_path):
    """inceptune's own titles become "FOLDER — inceptune run, DATE" (not "inceptune run run"); the header line
    names the split, the backbone, its weights, the image size and the training time, leaving unknowns out."""
    run, metrics = run_dir
    today = f"{datetime.date.today():%Y-%m-%d}"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {dir: /x, image_size: 32}\nmodel: {backbone: inception_mini, weights: imagenet, "
                      "image_size: 75}\n")
    for title in (None, "inceptune report", f"inceptune run {run.name}"):
        parser = _parse(report.write_report(run, metrics=metrics, history_csv=run / "history.csv", recipe=recipe,
                                            title=title))
        assert parser.text["title"] == parser.text["h1"] == f"run — inceptune run, {today}"
        assert parser.text["header"] == ("test split: 12 images, backbone inception_mini (weights imagenet), "
                                       "image size 75×75, trained in 12.0 s (5 epochs)")
    # An evaluation (the manifest rows evaluate_data writes): "evaluated on", the data set named in the title.
    rows = [{"path": p, "label": "cat", "split": "evaluated"} for p in ("a.png", "b.png")]
    parser = _parse(report.write_report(tmp_path / "eval-images", metrics=metrics, manifest_rows=rows,
                                        title="inceptune evaluation on images"))
    assert parser.text["title"] == f"eval-images — inceptune evaluation on images, {today}"
    assert parser.text["header"] == "evaluated on 12 images"
    # A cross-validation: the folder once, first.
    cv = {"folds": [{"fold": 0, "accuracy": 0.5}], "mean": {"accuracy": 0.5}, "std": {"accuracy": 0.0}}
    parser = _parse(report.write_report(tmp_path / "flowers-cv", metrics=metrics, cv=cv,
                                        recipe={"model": {"backbone": "inception_v3"}},
                                        title="inceptune 5-fold cross-validation flowers-cv"))
    assert parser.text["title"] == f"flowers-cv — inceptune 5-fold cross-validation, {today}"
    assert parser.text["header"] == "evaluated on 12 images, backbone inception_v3"
    with pytest.raises(ValueError, match="kind must be one of"):
        report.write_report(tmp_path / "x", kind="train")


def test_training_plot_has_integer_epochs_and_a_log_lr_axis():
    """A cosine schedule's last 3.8e-8 does not flatten the learning-rate plot; epochs are whole numbers."""
    lrs = [1e-3 * (1 + np.cos(np.pi * e / 5)) / 2 for e in range(5)] + [3.8e-8]
    rows = [{"stage": "all", "epoch": e + 1, "loss": 1 / (e + 1), "lr": lr} for e, lr in enumerate(lrs)]
    loss, lr = report._training_charts(rows)
    y_ticks = lambda svg: re.findall(r'text-anchor="end">([^<]+)</text>', svg)  # noqa: E731
    x_ticks = lambda svg: re.findall(r'text-anchor="middle">([-\d.e]+)</text>', svg)  # noqa: E731
    assert y_ticks(lr) == [f"1e-{k}" for k in range(7, 2, -1)]  # every decade of 3.8e-8 to 1e-3
    assert "lr (log scale)" not in loss and "learning rate (log scale)" in lr
    assert [float(t) for t in y_ticks(loss)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # linear
    for svg in (loss, lr):
        assert x_ticks(svg) == ["1", "2", "3", "4", "5", "6"]
    # A zero learning rate (not drawable on a log axis) is left out, not an error.
    (lr,) = report._training_charts([{"stage": "a", "lr": 0.0}, {"stage": "a", "lr": 1e-3}])
    assert "learning rate (log scale)" in lr and lr.count("<circle") == 1


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_report_is_readable_by_others_under_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        page = report.write_report(tmp_path / "r")
    finally:
        os.umask(old)
    assert stat.S_IMODE(page.stat().st_mode) == 0o644
