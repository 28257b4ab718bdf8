"""Tests for model.cut and model.features (inceptune.cut, heads): features from any block, in a whole run."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
from helpers import backbone, make_image_folder, mini_recipe
from helpers import images as random_images

from inceptune import calibration, export, freezing, prefix_cut, selectors, surgery
from inceptune.architectures import block_map, detect_architecture, load_backbone
from inceptune.calibration import apply_temperature, model_temperature
from inceptune.cli import main
from inceptune.cut import cut_backbone
from inceptune.data import load_image
from inceptune.errors import RecipeError
from inceptune.heads import build_classifier
from inceptune.inference import predict_proba
from inceptune.recipe import load_recipe
from inceptune.training import train


def _features_at(model, layer: str, x):
    return np.asarray(keras.Model(model.inputs[0], model.get_layer(layer).output)(x))


def _check_cut(base, at: str, size: int):
    """A classifier on the cut backbone computes, at `at`, what Keras's own truncated model computes."""
    reference = keras.Model(base.input, base.get_layer(at).output)
    model = build_classifier(cut_backbone(base, at), 3)
    x = random_images(3, size, seed=1)
    np.testing.assert_allclose(_features_at(model, at, x), np.asarray(reference(x / 127.5 - 1.0)), atol=1e-5)
    kept = {layer.name for layer in reference.layers}
    assert {layer.name for layer in model.layers} == (kept - {reference.layers[0].name}) | {
        "image", "preprocess", "head_pool", "head_output"}
    assert model.count_params() == reference.count_params() + model.get_layer("head_output").count_params()
    return model


def test_cut_mini_equals_keras_truncated_model():
    base = load_backbone("inception_mini", weights=None, image_size=32)
    model = _check_cut(base, "mixed2", 32)
    assert detect_architecture(model).name == "inception_mini"
    assert block_map(model).order == ("stem", "mixed0", "mixed1", "mixed2", "head")
    assert selectors.resolve(model, "from:mixed2") >= {"mixed2", "head_output"}  # block selectors still work
    skipped = surgery.add_skip(model, "mixed0", "mixed2")  # and surgery: zero-initialised, outputs unchanged
    x = random_images(2, 32, seed=4)
    np.testing.assert_allclose(np.asarray(skipped(x)), np.asarray(model(x)), atol=1e-6)
    assert cut_backbone(base, "mixed3") is base  # cutting at the last block keeps the backbone
    with pytest.raises(RecipeError, match=r"model.cut: .* no block or layer named 'mixd1'.*did you mean 'mixed1'"):
        cut_backbone(base, "mixd1")


def test_features_pool_the_named_blocks_in_the_order_listed():
    base = load_backbone("inception_mini", weights=None, image_size=32)
    model = build_classifier(base, 3, features=["mixed3", "mixed1"])
    names = [layer.name for layer in model.layers]
    assert names[-4:] == ["head_pool_mixed3", "head_pool_mixed1", "head_features", "head_output"]
    x = random_images(2, 32, seed=2)
    ref3 = keras.Model(base.input, base.get_layer("mixed3").output)(x / 127.5 - 1.0)
    ref1 = keras.Model(base.input, base.get_layer("mixed1").output)(x / 127.5 - 1.0)
    expected = np.concatenate([np.mean(ref3, axis=(1, 2)), np.mean(ref1, axis=(1, 2))], axis=1)  # listed order
    np.testing.assert_allclose(_features_at(model, "head_features", x), expected, atol=1e-5)
    # the head stage caches the concatenation of the pooled vectors (each pooled block side by side)
    freezing.unfreeze(model, "head")
    assert prefix_cut.find_cut(model).layer == "head_features"


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """A run of inception_mini cut at mixed2, cache on, calibrated (the default)."""
    root = tmp_path_factory.mktemp("cut")
    data = make_image_folder(root / "images", classes=3, per_class=20)
    recipe = mini_recipe(data, cache="auto", stages=[{"name": "top", "train": "head,from:mixed2", "epochs": 2,
                                                      "lr": 1e-2}])
    recipe["model"]["cut"] = "mixed2"
    with pytest.MonkeyPatch.context() as mp:  # calibrate this tiny run's 12 validation images anyway
        mp.setattr(calibration, "MIN_VALIDATION_IMAGES", 1)
        return train(recipe, out=root / "run", verbose=False)


def test_cut_run_trains_caches_calibrates_and_exports(cut_run, tmp_path):
    run = cut_run
    names = {layer.name for layer in run.model.layers}
    assert "mixed2" in names and not any(n.startswith("mixed3") for n in names)  # the layers above the cut are gone
    log = "\n".join(run.log)
    assert "cache: cut at 'mixed1'" in log  # selectors and the cache work on the cut model
    assert all(int(row["cached"]) for row in run.history)
    assert load_recipe(run.dir / "recipe.yaml").model.cut == "mixed2"  # the resolved recipe keeps the key

    # calibration: fitted on val, stored in the run and inside model.keras, accuracy unchanged
    stored = json.loads((run.dir / "calibration.json").read_text())
    loaded = keras.saving.load_model(run.dir / "model.keras", safe_mode=True)
    assert model_temperature(loaded) == pytest.approx(stored["temperature"]) and stored["method"] == "temperature"
    assert stored["nll_after"] <= stored["nll_before"]
    ts = run.metrics["temperature_scaling"]
    assert ts["accuracy_before"] == ts["accuracy_after"] == run.metrics["accuracy"]
    assert run.metrics["ece"] == pytest.approx(ts["ece_after"])
    with open(run.dir / "manifest.csv", newline="") as fh:
        test_paths = [row["path"] for row in csv.DictReader(fh) if row["split"] == "test"]
    assert run.metrics["num_samples"] == len(test_paths)
    # metrics.json's probabilities are model.keras's own outputs on the test images
    pixels = np.stack([load_image(p, (32, 32)) for p in test_paths]).astype("float32")
    probs = predict_proba(loaded, pixels)
    np.testing.assert_allclose(run.metrics["predictions"]["probs"], probs, atol=1e-5)
    uncalibrated = keras.Model(loaded.inputs[0], keras.layers.Softmax()(loaded.get_layer("head_output").output))
    np.testing.assert_allclose(probs, apply_temperature(predict_proba(uncalibrated, pixels), stored["temperature"]),
                               atol=1e-5)
    report = (run.dir / "report.html").read_text()
    assert "expected calibration error without temperature" in report

    # export keeps the cut and the temperature (every format: test_calibration)
    out = export.export_model(loaded, tmp_path / "m.keras", "keras", verify_images=pixels[:4])
    np.testing.assert_allclose(export._RUNNERS["keras"](out, pixels), probs, atol=1e-5)


def test_calibrate_none_and_recipe_keys(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{dir: {tmp_path}}}\nmodel: {{backbone: inception_v3, cut: mixed7, "
                      "features: [mixed5, mixed7]}\nstages: [{train: head}]\n")
    assert main(["recipe", "show", str(recipe)]) == 0
    shown = capsys.readouterr().out
    assert "cut: mixed7" in shown and "features: [mixed5, mixed7]" in shown and "calibrate: temperature" in shown
    assert main(["recipe", "show", str(recipe), "--set", "calibrate=none"]) == 0
    assert "calibrate: none" in capsys.readouterr().out
    for override, key, text in [("model.cut=mixd7", "model.cut", "did you mean \"mixed7\""),
                                ("model.features=[mixed8]", "model.features[0]", "lies above model.cut"),
                                ("calibrate=platt", "calibrate", "Allowed: temperature, none")]:
        assert main(["recipe", "show", str(recipe), "--set", override]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{key}:" in err and text in err and "Traceback" not in err
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe, ["model.features=[mixed5, mixed5]"])
    assert e.value.key == "model.features[1]"


def test_inspect_cut(capsys):
    assert main(["inspect", "inception_mini", "--cut", "mixed1"]) == 0
    out = capsys.readouterr().out
    assert "cut at 'mixed1'" in out and "mixed1" in out and "mixed2" not in out.split("cut at")[1].split("\n", 1)[1]
    assert main(["inspect", "inception_mini", "--cut", "mixd1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--cut: 'inception_mini' has no block or layer named 'mixd1'" in err and "did you mean 'mixed1'" in err


# === InceptionV3 (real block names) ===

@pytest.mark.slow
def test_cut_mixed7_equals_keras_truncated_inception_v3():
    model = _check_cut(backbone("inception_v3", 75), "mixed7", 75)
    assert block_map(model).order[-3:] == ("mixed6", "mixed7", "head")
    assert model.count_params() < 0.45 * build_classifier(backbone("inception_v3", 75), 3).count_params()


@pytest.mark.slow
def test_features_mixed7_mixed10_inception_v3():
    base = backbone("inception_v3", 75)
    model = build_classifier(base, 3, features=["mixed7", "mixed10"])
    x = random_images(2, 75, seed=3)
    parts = [np.mean(keras.Model(base.input, base.get_layer(b).output)(x / 127.5 - 1.0), axis=(1, 2))
             for b in ("mixed7", "mixed10")]
    np.testing.assert_allclose(_features_at(model, "head_features", x), np.concatenate(parts, axis=1), atol=1e-4)
    assert model.get_layer("head_features").output.shape[-1] == 768 + 2048
