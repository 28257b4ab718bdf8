"""Tests for inceptune.export: every available format round-trips through its own runtime."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import images as random_images
from helpers import tiny_classifier

from inceptune import export, models
from inceptune.errors import InceptuneError

LABELS = ["daisy", "rose", "tulip"]



def _missing(*packages):
    return [p for p in packages if importlib.util.find_spec(p) is None]


_SUFFIX = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
_SKIP = {
    "onnx": _missing("onnx", "tf2onnx", "onnxruntime"),
}


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_round_trip_every_format(tmp_path, fmt):
    if _SKIP.get(fmt):
        pytest.skip(f"{fmt}: packages not installed: {_SKIP[fmt]}")
    model = tiny_classifier(batchnorm=True)
    images = random_images(6, 32, seed=1)
    out = export.export_model(model, tmp_path / "exp" / _SUFFIX[fmt], fmt, labels=LABELS, verify_images=images)
    assert out == tmp_path / "exp" / _SUFFIX[fmt] and out.exists()
    labels_file = out / "labels.json" if fmt == "savedmodel" else out.parent / "labels.json"
    assert json.loads(labels_file.read_text()) == LABELS
    assert models.load_labels(out) == LABELS
    # No partial file left behind.
    expected = [out.name] if fmt == "savedmodel" else ["labels.json", out.name]
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(expected)

    # Independently: the export run by its runtime on *other* images gives the Keras outputs.
    other = random_images(5, 32, seed=7)
    reference = model(other, training=False).numpy()
    got = export._RUNNERS[fmt](out, other)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), reference.argmax(1))
    check = export.verify_export(out, fmt, model, other)
    assert check.ok and check.top1_agree == 5 and check.num_images == 5
    assert check.max_abs_diff == pytest.approx(float(np.abs(got - reference).max()), abs=1e-7)
    assert check.max_abs_diff <= 1e-5
    print(check)


def test_exports_take_raw_pixels():
    """The preprocessing is inside: feeding 0-255 pixels equals feeding the rescaled ones past the layer."""
    import keras

    model = tiny_classifier(batchnorm=True)
    images = random_images(2, 32, seed=1)
    inner = keras.Model(model.get_layer("stem_conv").input, model.output)
    np.testing.assert_allclose(
        model(images).numpy(), inner(images / 127.5 - 1.0).numpy(), atol=1e-6
    )


def test_verify_detects_a_different_model(tmp_path):
    model = tiny_classifier(batchnorm=True)
    out = export.export_model(model, tmp_path / "m.keras", "keras")
    other = tiny_classifier(batchnorm=True)
    dense = other.get_layer("head_dense")
    kernel, bias = dense.get_weights()
    dense.set_weights([-kernel, bias])  # reversed preferences: the top-1 must change
    check = export.verify_export(out, "keras", other, random_images(6, 32, seed=1))
    assert not check.ok
    assert check.top1_agree < check.num_images
    assert "MISMATCH" in str(check)


def test_never_overwrites_without_force(tmp_path):
    model = tiny_classifier(batchnorm=True)
    target = tmp_path / "model.keras"
    target.write_text("precious")
    with pytest.raises(InceptuneError, match=r"already exists; an export never replaces .* force=True"):
        export.export_model(model, target, "keras")
    assert target.read_text() == "precious"
    export.export_model(model, target, "keras", labels=LABELS, force=True)
    assert models.load_model(target).count_params() == model.count_params()
    # A labels.json with other labels is refused too.
    with pytest.raises(InceptuneError, match=r"labels.json' already exists with other labels"):
        export.export_model(model, tmp_path / "second.keras", "keras", labels=["a", "b", "c"])
    assert not (tmp_path / "second.keras").exists()


def test_bad_arguments(tmp_path):
    model = tiny_classifier(batchnorm=True)
    with pytest.raises(InceptuneError,
                       match=r"format must be one of .* received format='tflte'. HINT: did you mean 'tflite'\?"):
        export.export_model(model, tmp_path / "m.tflite", "tflte")
    with pytest.raises(InceptuneError, match=r"is a folder; the tflite format writes one file\. HINT: .*model\.tflite"):
        export.export_model(model, tmp_path, "tflite")
    with pytest.raises(InceptuneError, match=r"must name each of the model's 3 outputs, received 2"):
        export.export_model(model, tmp_path / "m.keras", "keras", labels=["a", "b"])


def test_out_gets_the_format_extension(tmp_path):
    """One --out rule: a file format appends its extension when `out` lacks it (a bare name was refused for keras
    and taken as is by the others); a SavedModel is the folder `out`. export_model returns the path written."""
    for fmt, ext in export.EXTENSIONS.items():
        assert export.export_path("exports/model", fmt) == Path("exports/model" + ext)
        assert export.export_path("exports/model" + ext, fmt) == Path("exports/model" + ext)
    assert export.export_path("m.h5", "keras") == Path("m.h5.keras")  # appended, never swapped
    assert export.export_path("exports/model", "savedmodel") == Path("exports/model")
    model = tiny_classifier(batchnorm=True)
    out = export.export_model(model, tmp_path / "exports" / "model", "keras", labels=LABELS)
    assert out == tmp_path / "exports" / "model.keras" and models.load_labels(out) == LABELS
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.json", "model.keras"]
    with pytest.raises(InceptuneError, match=r"model\.keras' already exists"):  # the check is on the real name
        export.export_model(model, tmp_path / "exports" / "model", "keras")


def test_missing_converter_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a)
    )
    with pytest.raises(InceptuneError, match=r"missing: \['tf2onnx'\]\. HINT: pip install \"inceptune\[export\]\""):
        export.export_model(tiny_classifier(batchnorm=True), tmp_path / "m.onnx", "onnx")
    assert not (tmp_path / "m.onnx").exists()
