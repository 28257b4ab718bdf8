"""Tests for inceptune.prediction: files and folders, bad files skipped with reasons, top-k, the compiled path."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from helpers import TINY_LABELS as LABELS
from helpers import tiny_classifier
from PIL import Image

from inceptune import prediction as _prediction
from inceptune.data import load_image
from inceptune.errors import InceptuneError
from inceptune.prediction import collect_images, predict


def _reference(model, paths):
    x = np.stack([load_image(p, 32) for p in paths]).astype("float32")
    return np.asarray(model(x, training=False))


def test_folder_and_files_top_k_match_the_model(tiny_run, labelled_images):
    from inceptune.models import load_model

    extra = labelled_images / "class_1" / "c1_img_000.png"
    result = predict(tiny_run, [labelled_images / "class_0", extra], top_k=2)
    expected_paths = sorted(str(p) for p in (labelled_images / "class_0").iterdir()) + [str(extra)]
    assert [p["path"] for p in result] == expected_paths
    assert len(result) == 5 and result.skipped == [] and result.labels == LABELS and result.top_k == 2
    probs = _reference(load_model(tiny_run), expected_paths)
    for pred, row in zip(result, probs):
        order = np.argsort(-row, kind="stable")[:2]
        assert [lab for lab, _ in pred["top"]] == [LABELS[i] for i in order]
        np.testing.assert_allclose([p for _, p in pred["top"]], row[order], rtol=0, atol=1e-6)
        assert pred["top"][0][1] >= pred["top"][1][1]


def test_every_bad_file_is_reported_and_skipped(tiny_run, labelled_images, tmp_path):
    good = labelled_images / "class_2" / "c2_img_001.png"
    (tmp_path / "notes.png").write_text("not an image")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    result = predict(tiny_run, [tmp_path / "cut.png", good, tmp_path / "missing.jpg", tmp_path / "notes.png",
                               tmp_path / "empty.jpg"])
    assert [p["path"] for p in result] == [str(good)]
    reasons = dict(result.skipped)
    assert set(reasons) == {str(tmp_path / n) for n in ("cut.png", "missing.jpg", "notes.png", "empty.jpg")}
    assert reasons[str(tmp_path / "missing.jpg")] == "does not exist"
    assert reasons[str(tmp_path / "cut.png")].startswith("truncated")
    assert reasons[str(tmp_path / "notes.png")].startswith("not an image")
    assert reasons[str(tmp_path / "empty.jpg")].startswith("empty file")


def test_collect_images_recursive_hidden_and_extensions(tmp_path):
    for rel in ("a/x.PNG", "a/b/y.jpg", "a/.hidden.png", "a/.git/z.png", "a/readme.txt", "c.dat"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    files, missing = collect_images([tmp_path / "a", tmp_path / "c.dat", tmp_path / "a" / "x.PNG", tmp_path / "nope"])
    # folders: image extensions only, no hidden entries, sorted; an explicit file is kept whatever its name;
    # a file listed twice appears once
    assert files == [str(tmp_path / "a" / "b" / "y.jpg"), str(tmp_path / "a" / "x.PNG"), str(tmp_path / "c.dat")]
    assert missing == [(str(tmp_path / "nope"), "does not exist")]


def test_batches_go_through_the_compiled_path(tiny_run, labelled_images, monkeypatch):
    calls = []
    real = _prediction.predict_proba

    def counting(model, data, batch_size=32):
        calls.append(len(data))
        return real(model, data, batch_size=batch_size)

    monkeypatch.setattr(_prediction, "predict_proba", counting)
    small = predict(tiny_run, labelled_images, batch_size=5, top_k=3)
    assert calls == [5, 5, 2]  # 12 images in batches of 5
    calls.clear()
    big = predict(tiny_run, labelled_images, batch_size=32, top_k=3)
    assert calls == [12]
    for a, b in zip(small, big):
        assert a["path"] == b["path"] and [lab for lab, _ in a["top"]] == [lab for lab, _ in b["top"]]
        np.testing.assert_allclose([p for _, p in a["top"]], [p for _, p in b["top"]], atol=1e-6)
        assert math.isclose(sum(p for _, p in a["top"]), 1.0, abs_tol=1e-5)  # top-3 of 3 classes


def test_bare_model_labels_and_argument_errors(labelled_images):
    model = tiny_classifier()
    result = predict(model, labelled_images / "class_0" / "c0_img_000.png", top_k=10)
    assert result.top_k == 3 and result.labels == ["0", "1", "2"]  # k capped; indices stand for names
    named = predict(model, labelled_images / "class_0" / "c0_img_000.png", labels=["a", "b", "c"])
    assert named[0]["top"][0][0] == "abc"[int(result[0]["top"][0][0])]
    with pytest.raises(InceptuneError, match=r"top_k must be an integer >= 1, received top_k=0"):
        predict(model, labelled_images, top_k=0)
    with pytest.raises(InceptuneError, match=r"labels must name each of the model's 3 outputs, received 2"):
        predict(model, labelled_images, labels=["a", "b"])


def test_json_and_csv_forms(tiny_run, labelled_images):
    result = predict(tiny_run, [labelled_images / "class_0" / "c0_img_000.png", labelled_images / "nope.png"], top_k=2)
    d = result.to_dict()
    assert d["labels"] == LABELS and d["top_k"] == 2
    assert d["skipped"] == [{"path": str(labelled_images / "nope.png"), "reason": "does not exist"}]
    assert [t["label"] for t in d["predictions"][0]["top"]] == [lab for lab, _ in result[0]["top"]]
    rows = list(csv.reader(io.StringIO(result.to_csv())))
    assert rows[0] == ["path", "label_1", "probability_1", "label_2", "probability_2"]
    assert rows[1][0] == result[0]["path"] and rows[1][1] == result[0]["top"][0][0]
    assert float(rows[1][2]) == pytest.approx(result[0]["top"][0][1], abs=1e-6)
    assert len(rows) == 2


def test_resize_mode_comes_from_the_run_recipe(tiny_run, tmp_path):
    wide = tmp_path / "wide.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (32, 96, 3), dtype=np.uint8)).save(wide)
    (tiny_run / "recipe.yaml").write_text("data:\n  resize: crop\n")
    try:
        cropped = predict(tiny_run, wide, top_k=3)
    finally:
        (tiny_run / "recipe.yaml").unlink()
    stretched = predict(tiny_run, wide, top_k=3)
    from inceptune.models import load_model

    model = load_model(tiny_run)
    for result, mode in ((cropped, "crop"), (stretched, "stretch")):
        ref = np.asarray(model(load_image(wide, 32, mode)[None].astype("float32")))[0]
        got = dict(result[0]["top"])
        np.testing.assert_allclose([got[lab] for lab in LABELS], ref, atol=1e-6)
