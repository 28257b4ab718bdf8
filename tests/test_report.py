"""Tests for inceptune.report: report.html exists, references only files that exist, has every section."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inceptune import evaluate, report

LABELS = ["cat", "dog", "fox"]


class _Refs(HTMLParser):
    """Collects section ids and every src/href of the page."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.sections: list[str] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key):
                self.refs.append(attrs[key])
        if tag == "section":
            self.sections.append(attrs.get("id"))
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _assert_self_contained(page: Path, parser: _Refs) -> list[str]:
    """Every reference is an in-page anchor, an embedded data URI or an existing file beside the page."""
    files = []
    for ref in parser.refs:
        if ref.startswith("#"):
            assert ref[1:] in parser.sections, ref
        elif ref.startswith("data:image/"):
            continue
        else:
            assert "://" not in ref and not ref.startswith("/"), f"external or absolute reference {ref!r}"
            assert (page.parent / ref).is_file(), f"missing file {ref!r}"
            files.append(ref)
    assert "http://" not in page.read_text() and "https://" not in page.read_text()
    return files


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


def test_full_report_has_every_section_and_only_existing_files(run_dir):
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
        recipe={"data": {"dir": "images", "image_size": 32}, "stages": [{"name": "head", "epochs": 3}]},
        manifest_rows=manifest,
        skipped=[("bad.jpg", "cannot be decoded"), {"file": "tiny.png", "reason": "smaller than 32x32"}],
        warnings=["2 near-duplicate images across train and test"],
        title="Test <run>",
    )
    assert page == run / "report.html" and page.is_file()
    parser = _parse(page)
    assert parser.sections == list(report.SECTIONS)
    assert parser.h2 == [report._TITLES[s] for s in report.SECTIONS]
    files = _assert_self_contained(page, parser)
    assert sorted(files) == ["report_confusion.png", "report_curves.png", "report_training.png"]
    assert sorted(p.name for p in run.iterdir()) == sorted(files + ["history.csv", "report.html"])  # no temp file
    sizes = {}
    for name in files:
        with Image.open(run / name) as im:
            assert im.format == "PNG"
            sizes[name] = im.size
    # figsize x 100 dpi: 3 training panels, a 3-class confusion matrix, 3 curve panels.
    assert sizes == {"report_training.png": (1100, 1020), "report_confusion.png": (505, 385),
                     "report_curves.png": (1500, 480)}

    text = page.read_text()
    assert "Not available" not in text
    assert "<title>Test &lt;run&gt;</title>" in text  # escaped
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
    assert _assert_self_contained(page, parser) == []
    text = page.read_text()
    # One "Not available" per section, plus skipped-files and data-checks sub-sections of the dataset.
    assert text.count('<p class="na">Not available:') == len(report.SECTIONS) + 2


def test_curves_need_predictions_and_accept_explicit_arrays(run_dir):
    run, metrics = run_dir
    lean = {k: v for k, v in metrics.items() if k != "predictions"}
    text = report.write_report(run, metrics=lean).read_text()
    assert "Not available: no raw predictions" in text
    assert 'src="report_curves.png"' not in text
    y = np.array(metrics["predictions"]["y_true"])
    probs = np.array(metrics["predictions"]["probs"])
    text = report.write_report(run, metrics=lean, y_true=y, probs=probs).read_text()
    assert 'src="report_curves.png"' in text
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
    text = page.read_text()
    assert "<td>z.gif</td><td>unsupported format</td>" in text
    assert "seed: 0" in text
    assert '<td>mean ± std</td><td class="num">0.6000 ± 0.1000</td>' in text
    assert "No warning." in text
