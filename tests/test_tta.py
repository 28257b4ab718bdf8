"""Tests for inceptune.tta: test-time augmentation through the compiled forward, in Python, predict, evaluate, CLI."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from helpers import images as random_images
from helpers import tiny_classifier

from inceptune import data as _data
from inceptune.cli import main
from inceptune.errors import InceptuneError
from inceptune.evaluate import evaluate_data
from inceptune.inference import predict_proba
from inceptune.prediction import collect_images, predict
from inceptune.tta import TTA, parse_tta, tta_proba


def _mirrored_twin(model):
    """`model` applied to the left-right mirror of its input (a test-only Lambda: never saved)."""
    inp = keras.Input(model.inputs[0].shape[1:])
    flipped = keras.layers.Lambda(lambda x: keras.ops.flip(x, axis=2))(inp)
    return keras.Model(inp, model(flipped))


def test_parse_grammar_and_errors():
    assert parse_tta(None) is None and parse_tta("none") is None and parse_tta("1") is None and parse_tta(1) is None
    assert parse_tta("flip") == TTA(flip=True, crops=1)
    assert parse_tta("crops") == TTA(crops=6) and parse_tta("5") == TTA(crops=5) and parse_tta(5) == TTA(crops=5)
    assert parse_tta("flip+crops") == TTA(flip=True, crops=6) == parse_tta("crops+flip")
    assert parse_tta("Flip + 3").num_views == 6
    assert [TTA(flip=True, crops=6).spec, TTA(crops=4).spec, TTA(flip=True).spec] == ["flip+crops", "4", "flip"]
    for spec in ("flip", "crops", "7", "flip+crops", "flip+10"):
        assert parse_tta(parse_tta(spec).spec) == parse_tta(spec)  # the spec string round-trips
    views = TTA(flip=True, crops=2).views()
    assert views[0] == (None, False) and views[1] == (None, True)  # the image itself first
    assert views[2][0] == pytest.approx((0.0625, 0.0625, 0.9375, 0.9375))  # centre crop, 87.5% of the side
    with pytest.raises(InceptuneError, match=r"unknown transform 'flp'.*did you mean 'flip'") as err:
        parse_tta("flp")
    assert err.value.key == "tta"
    with pytest.raises(InceptuneError, match="11 views is outside 1 to 10"):
        parse_tta("flip+11")
    with pytest.raises(InceptuneError, match="flip is given twice"):
        parse_tta("flip+flip")
    with pytest.raises(InceptuneError, match="number of crops is given twice"):
        parse_tta("3+crops")


def test_identity_tta_equals_plain_prediction():
    model = tiny_classifier()
    x = random_images(7, 32, seed=3)
    plain = predict_proba(model, x, batch_size=4)
    for spec in (None, "none", "1", TTA(crops=1)):
        np.testing.assert_array_equal(tta_proba(model, x, spec, batch_size=4), plain)
    probs, views = tta_proba(model, x, "flip+crops", batch_size=4, return_views=True)
    assert views.shape == (7, 12, 3) and probs.shape == (7, 3)
    np.testing.assert_allclose(views[:, 0], plain, atol=1e-6)  # view 0 is the image itself
    np.testing.assert_allclose(probs, views.mean(axis=1), atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # a constant image is its own mirror and its own crop: every view predicts the same thing
    flat = np.full((2, 32, 32, 3), 90.0, dtype="float32")
    np.testing.assert_allclose(tta_proba(model, flat, "flip+crops"), predict_proba(model, flat), atol=1e-6)
    # a tf.data dataset of (images, labels) gives what the array gives
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(7, "int64"))).batch(3)
    np.testing.assert_allclose(tta_proba(model, ds, "flip"), tta_proba(model, x, "flip"), atol=1e-6)


def test_flip_tta_is_symmetric_between_a_model_and_its_mirrored_twin():
    model = tiny_classifier(batchnorm=True)
    twin = _mirrored_twin(model)
    x = random_images(6, 32, seed=5)
    assert np.abs(predict_proba(model, x) - predict_proba(twin, x)).max() > 1e-3  # the twins differ without TTA
    for spec in ("flip", "flip+crops"):
        a, b = tta_proba(model, x, spec), tta_proba(twin, x, spec)
        np.testing.assert_allclose(a, b, atol=1e-6)
        # and the TTA of a mirrored image is the TTA of the image
        np.testing.assert_allclose(tta_proba(model, x[:, :, ::-1], spec), a, atol=1e-6)
    assert np.abs(tta_proba(model, x, "flip") - predict_proba(model, x)).max() > 1e-4  # TTA changed something


def test_predict_and_evaluate_with_tta(tiny_run, labelled_images, tmp_path):
    files, _ = collect_images([labelled_images])
    pixels = np.stack([_data.load_image(f, (32, 32)) for f in files]).astype("float32")
    model = keras.saving.load_model(tiny_run / "model.keras")
    expected = (predict_proba(model, pixels) + predict_proba(model, pixels[:, :, ::-1])) / 2

    result = predict(tiny_run, labelled_images, top_k=3, batch_size=5, tta="flip")
    assert result.tta == "flip" and result.to_dict()["tta"] == "flip"
    assert "tta" not in predict(tiny_run, labelled_images).to_dict()  # plain prediction: the JSON is as before
    labels = json.loads((tiny_run / "labels.json").read_text())
    for p, row in zip(result, expected):
        assert p["path"] in files
        got = dict(p["top"])
        np.testing.assert_allclose([got[lab] for lab in labels], row, atol=1e-5)

    plain = evaluate_data(tiny_run, labelled_images, tmp_path / "plain", progress=False)
    ev = evaluate_data(tiny_run, labelled_images, tmp_path / "tta", tta="flip", progress=False)
    t = ev.metrics["tta"]
    assert (t["transforms"], t["views"]) == ("flip", 2) and "tta" not in plain.metrics
    assert t["accuracy_without"] == pytest.approx(plain.metrics["accuracy"])
    assert t["ece_without"] == pytest.approx(plain.metrics["ece"], abs=1e-6)
    np.testing.assert_allclose(ev.metrics["predictions"]["probs"], expected, atol=1e-5)
    assert "temperature_scaling" not in ev.metrics  # a model without a temperature (an older run) is as before
    assert json.loads(ev.metrics_path.read_text())["tta"]["transforms"] == "flip"
    assert "without test-time augmentation" in ev.report_path.read_text()


def test_cli_tta(tiny_run, labelled_images, tmp_path, capsys):
    assert main(["predict", str(tiny_run), str(labelled_images), "--tta", "flip", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] == "flip"
    assert main(["evaluate", str(tiny_run), "--data", str(labelled_images), "--out", str(tmp_path / "e"),
                 "--tta", "3", "--quiet"]) == 0
    assert "test-time augmentation 3 (3 views)" in capsys.readouterr().out
    assert main(["predict", str(tiny_run), str(labelled_images), "--tta", "flp"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--tta: unknown transform 'flp'" in err and "Traceback" not in err and "did you mean 'flip'" in err
