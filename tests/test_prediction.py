"""Tests for inceptune.prediction: files and folders, bad files skipped with reasons, top-k, the compiled path."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from helpers import make_image_folder
from PIL import Image

from inceptune import prediction as _prediction
from inceptune.data import load_image
from inceptune.errors import InceptuneError
from inceptune.prediction import collect_images, predict

LABELS = ["class_0", "class_1", "class_2"]


def _classifier():
    """A tiny seeded stock-layer classifier, 32x32 raw RGB in, 3 softmax outputs (untrained but image-dependent)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    out = keras.layers.Dense(3, activation="softmax", name="head_dense", kernel_initializer="he_normal")(x)
    return keras.Model(inp, out, name="tiny_classifier")


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("pred") / "images", classes=3, per_class=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A minimal run folder: model.keras + labels.json."""
    d = tmp_path_factory.mktemp("run")
    _classifier().save(d / "model.keras")
    (d / "labels.json").write_text(json.dumps(LABELS))
    return d


def _reference(model, paths):
    x = np.stack([load_image(p, 32) for p in paths]).astype("float32")
    return np.asarray(model(x, training=False))


def test_folder_and_files_top_k_match_the_model(run_dir, images_dir):
    from inceptune.models import load_model

    extra = images_dir / "class_1" / "c1_img_000.png"
    result = predict(run_dir, [images_dir / "class_0", extra], top_k=2)
    expected_paths = sorted(str(p) for p in (images_dir / "class_0").iterdir()) + [str(extra)]
    assert [p["path"] for p in result] == expected_paths
    assert len(result) == 5 and result.skipped == [] and result.labels == LABELS and result.top_k == 2
    probs = _reference(load_model(run_dir), expected_paths)
    for pred, row in zip(result, probs):
        order = np.argsort(-row, kind="stable")[:2]
        assert [lab for lab, _ in pred["top"]] == [LABELS[i] for i in order]
        np.testing.assert_allclose([p for _, p in pred["top"]], row[order], rtol=0, atol=1e-6)
        assert pred["top"][0][1] >= pred["top"][1][1]


def test_every_bad_file_is_reported_and_skipped(run_dir, images_dir, tmp_path):
    good = images_dir / "class_2" / "c2_img_001.png"
    (tmp_path / "notes.png").write_text("not an image")
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    result = predict(run_dir, [tmp_path / "cut.png", good, tmp_path / "missing.jpg", tmp_path / "notes.png",
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


def test_batches_go_through_the_compiled_path(run_dir, images_dir, monkeypatch):
    calls = []
    real = _prediction.predict_proba

    def counting(model, data, batch_size=32):
        calls.append(len(data))
        return real(model, data, batch_size=batch_size)

    monkeypatch.setattr(_prediction, "predict_proba", counting)
    small = predict(run_dir, images_dir, batch_size=5, top_k=3)
    assert calls == [5, 5, 2]  # 12 images in batches of 5
    calls.clear()
    big = predict(run_dir, images_dir, batch_size=32, top_k=3)
    assert calls == [12]
    for a, b in zip(small, big):
        assert a["path"] == b["path"] and [lab for lab, _ in a["top"]] == [lab for lab, _ in b["top"]]
        np.testing.assert_allclose([p for _, p in a["top"]], [p for _, p in b["top"]], atol=1e-6)
        assert math.isclose(sum(p for _, p in a["top"]), 1.0, abs_tol=1e-5)  # top-3 of 3 classes


def test_bare_model_labels_and_argument_errors(images_dir):
    model = _classifier()
    result = predict(model, images_dir / "class_0" / "c0_img_000.png", top_k=10)
    assert result.top_k == 3 and result.labels == ["0", "1", "2"]  # k capped; indices stand for names
    named = predict(model, images_dir / "class_0" / "c0_img_000.png", labels=["a", "b", "c"])
    assert named[0]["top"][0][0] == "abc"[int(result[0]["top"][0][0])]
    with pytest.raises(InceptuneError, match=r"top_k must be an integer >= 1, received top_k=0"):
        predict(model, images_dir, top_k=0)
    with pytest.raises(InceptuneError, match=r"labels must name each of the model's 3 outputs, received 2"):
        predict(model, images_dir, labels=["a", "b"])


def test_json_and_csv_forms(run_dir, images_dir):
    result = predict(run_dir, [images_dir / "class_0" / "c0_img_000.png", images_dir / "nope.png"], top_k=2)
    d = result.to_dict()
    assert d["labels"] == LABELS and d["top_k"] == 2
    assert d["skipped"] == [{"path": str(images_dir / "nope.png"), "reason": "does not exist"}]
    assert [t["label"] for t in d["predictions"][0]["top"]] == [lab for lab, _ in result[0]["top"]]
    rows = list(csv.reader(io.StringIO(result.to_csv())))
    assert rows[0] == ["path", "label_1", "probability_1", "label_2", "probability_2"]
    assert rows[1][0] == result[0]["path"] and rows[1][1] == result[0]["top"][0][0]
    assert float(rows[1][2]) == pytest.approx(result[0]["top"][0][1], abs=1e-6)
    assert len(rows) == 2


def test_resize_mode_comes_from_the_run_recipe(run_dir, tmp_path):
    wide = tmp_path / "wide.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (32, 96, 3), dtype=np.uint8)).save(wide)
    (run_dir / "recipe.yaml").write_text("data:\n  resize: crop\n")
    try:
        cropped = predict(run_dir, wide, top_k=3)
    finally:
        (run_dir / "recipe.yaml").unlink()
    stretched = predict(run_dir, wide, top_k=3)
    from inceptune.models import load_model

    model = load_model(run_dir)
    for result, mode in ((cropped, "crop"), (stretched, "stretch")):
        ref = np.asarray(model(load_image(wide, 32, mode)[None].astype("float32")))[0]
        got = dict(result[0]["top"])
        np.testing.assert_allclose([got[lab] for lab in LABELS], ref, atol=1e-6)
