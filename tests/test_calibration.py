"""Tests for inceptune.calibration: temperature scaling fitted on held-out data, built into the model, exported."""

from __future__ import annotations

import importlib.util

import keras
import numpy as np
import pytest
from helpers import images as random_images
from helpers import tiny_classifier

from inceptune import export
from inceptune.calibration import (SOFTMAX_LAYER, TEMPERATURE_LAYER, apply_temperature, calibrate_model,
                                   calibration_summary, fit_temperature, model_temperature, negative_log_likelihood)
from inceptune.errors import InceptuneError
from inceptune.evaluate import expected_calibration_error
from inceptune.inference import predict_proba


def _overconfident_model():
    """tiny_classifier with its logits multiplied by 12: the same argmax, confidences near 1."""
    model = tiny_classifier(batchnorm=True)
    dense = model.get_layer("head_dense")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 12.0, bias * 12.0])
    return model


def _drawn_labels(probs, seed=0, temperature=12.0):
    """Labels drawn from the probabilities of the model before its logits were multiplied by 12: for those it is
    calibrated by construction, so the over-confident one is off by a temperature of 12."""
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(probs.shape[1], p=p / p.sum()) for p in apply_temperature(probs, temperature)])


def test_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 4000)
    logits = rng.normal(0, 1, (4000, 5))
    logits[np.arange(4000), y] += 1.5  # calibrated at T = 1 by construction (labels drawn below)
    calibrated = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=p) for p in calibrated])  # labels drawn from the calibrated probabilities
    sharp = apply_temperature(calibrated, 1 / 2.5)  # the same model 2.5 times over-confident
    fit = fit_temperature(sharp, y)
    assert fit.temperature == pytest.approx(2.5, rel=0.1)
    assert fit.nll_after < fit.nll_before and fit.num_samples == 4000
    assert fit.nll_after == pytest.approx(negative_log_likelihood(sharp, y, fit.temperature))
    np.testing.assert_array_equal(apply_temperature(sharp, fit.temperature).argmax(1), sharp.argmax(1))
    # an already calibrated model keeps a temperature near 1
    assert fit_temperature(calibrated, y).temperature == pytest.approx(1.0, abs=0.1)
    with pytest.raises(InceptuneError, match="expected probabilities"):
        fit_temperature(np.zeros((0, 3)), [])


def test_temperature_lowers_validation_nll_of_an_overconfident_model_and_keeps_argmax():
    model = _overconfident_model()
    val, test = random_images(200, 32, seed=1), random_images(200, 32, seed=2)
    p_val, p_test = predict_proba(model, val), predict_proba(model, test)
    y_val, y_test = _drawn_labels(p_val, 1), _drawn_labels(p_test, 2)
    assert p_val.max(1).mean() > (p_val.argmax(1) == y_val).mean() + 0.2  # over-confident

    fit = fit_temperature(p_val, y_val)
    assert 8 < fit.temperature < 16 and fit.nll_after < 0.8 * fit.nll_before  # near the true 12
    calibrated = calibrate_model(model, fit.temperature)
    assert model_temperature(calibrated) == pytest.approx(fit.temperature) and model_temperature(model) is None
    assert [layer.name for layer in calibrated.layers[-3:]] == ["head_dense", TEMPERATURE_LAYER, SOFTMAX_LAYER]
    assert calibrated.count_params() == model.count_params()

    c_val, c_test = predict_proba(calibrated, val), predict_proba(calibrated, test)
    np.testing.assert_array_equal(c_val.argmax(1), p_val.argmax(1))
    np.testing.assert_array_equal(c_test.argmax(1), p_test.argmax(1))  # accuracy unchanged
    # NumPy's softmax(log p / T) is the model's softmax(z / T) (exactly so while no probability underflows)
    assert p_test.min() > 1e-30
    np.testing.assert_allclose(c_test, apply_temperature(p_test, fit.temperature), atol=1e-5)
    assert negative_log_likelihood(c_val, y_val) == pytest.approx(fit.nll_after, abs=1e-4)
    summary = calibration_summary(y_test, p_test, c_test, fit.temperature, fit)
    assert summary["accuracy_before"] == summary["accuracy_after"]
    assert summary["ece_after"] < summary["ece_before"] == pytest.approx(expected_calibration_error(y_test, p_test))
    assert summary["log_loss_after"] < summary["log_loss_before"]
    # the original model is untouched (its last layer still applies the softmax)
    np.testing.assert_allclose(predict_proba(model, val), p_val, atol=1e-7)

    again = calibrate_model(calibrated, 1.0)  # recalibrating replaces the temperature, never stacks a second one
    assert model_temperature(again) == 1.0 and sum(layer.name == TEMPERATURE_LAYER for layer in again.layers) == 1
    np.testing.assert_allclose(predict_proba(again, val), p_val, atol=1e-5)


def test_calibrated_model_survives_every_export(tmp_path):
    model = _overconfident_model()
    calibrated = calibrate_model(model, 3.0)
    images = random_images(6, 32, seed=4)
    reference = np.asarray(calibrated(images, training=False))
    assert reference.max(1).mean() < predict_proba(model, images).max(1).mean()  # the temperature softened it
    for fmt in export.FORMATS:
        if fmt == "onnx" and any(importlib.util.find_spec(p) is None for p in ("onnx", "tf2onnx", "onnxruntime")):
            continue
        out = export.export_model(calibrated, tmp_path / f"m-{fmt}", fmt, verify_images=images)
        got = np.asarray(export._RUNNERS[fmt](out, images)).reshape(reference.shape)
        np.testing.assert_allclose(got, reference, atol=1e-5, err_msg=fmt)
        np.testing.assert_array_equal(got.argmax(1), reference.argmax(1))
        if fmt == "keras":  # safe mode loads it, and the temperature is still there
            loaded = keras.saving.load_model(out, safe_mode=True)
            assert model_temperature(loaded) == pytest.approx(3.0)


def test_calibration_refuses_a_model_without_a_softmax_dense():
    inp = keras.Input((4,))
    out = keras.layers.Dense(3, name="logits")(inp)
    with pytest.raises(InceptuneError, match="last layer of 'functional' is 'logits' \\(Dense, activation linear\\)"):
        calibrate_model(keras.Model(inp, out), 2.0)
    with pytest.raises(InceptuneError, match="positive number"):
        calibrate_model(tiny_classifier(), 0.0)
