"""The seeds' fifteen snippets (../shared/seeds, docs/from-snippets.md) as a compatibility suite.

For each snippet: what it really does in Keras 3 (where that is the point), the inceptune equivalent in Python
and, for training snippets, as a YAML recipe of examples/, asserting the intended effect with exact numbers; for
each silently wrong snippet, that inceptune's literal translation warns with the fix (inceptune.footguns).
InceptionV3 is built once (weights=None, 75x75): parameter counts do not depend on the weights or the size.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import fresh_backbone, images, make_image_folder

from inceptune import blocks, footguns, surgery
from inceptune.errors import InceptuneError, RecipeError, SurgeryError
from inceptune.footguns import FootgunWarning
from inceptune.freezing import freeze, unfreeze
from inceptune.heads import build_classifier
from inceptune.recipe import load_recipe
from inceptune.schedules import ScheduleSpec, lr_at
from inceptune.selectors import SelectorWarning, select
from inceptune.training.model import compile_stage

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HEAD_1024 = 2048 * 1024 + 1024 + 1024 * 5 + 5  # GAP -> Dense(1024) -> Dense(5): 2,103,301
TOTAL_1024 = 23_906_085  # InceptionV3 without top (21,802,784) + that head
BN_STATS = 34_432  # the moving means and variances of InceptionV3's 94 BatchNormalization layers


@pytest.fixture(scope="module")
def v3():
    return fresh_backbone("inception_v3")


@pytest.fixture(scope="module")
def clf(v3):
    """The seeds' usual model: InceptionV3 -> GlobalAveragePooling2D -> Dense(1024, relu) -> Dense(5, softmax)."""
    return build_classifier(v3, 5, {"dense": [1024]})


@pytest.fixture(scope="module")
def clf_plain(v3):
    """Seeds 000 Ex2/3 and 004: InceptionV3 -> GlobalAveragePooling2D -> Dense(5, softmax)."""
    return build_classifier(v3, 5)


def _recipe(name: str):
    return load_recipe(EXAMPLES / name)


def _stage_counts(model, recipe) -> list[tuple[int, int]]:
    """(trainable, frozen) parameters of each stage, as the stage runner compiles it."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectorWarning)
        for stage in recipe.stages:
            rep, _ = compile_stage(model, stage, batchnorm=recipe.model.batchnorm)
            assert rep.trainable_params == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            out.append((rep.trainable_params, rep.frozen_params))
    return out


def _keras_trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _stage_warnings(model, stages: list[dict], batchnorm: str = "frozen") -> list[list[str]]:
    """The runner's warnings for each stage of a literal translation given as stage dicts."""
    from inceptune.recipe.sections import recipe_from_dict

    recipe = recipe_from_dict({"data": {"dir": "images"}, "model": {"batchnorm": batchnorm}, "stages": stages})
    return [footguns.stage_warnings(model, recipe.stages, i, batchnorm=batchnorm) for i in range(len(stages))]


# === seed 000: selective training and skip connections ===

def test_000_ex1_literal_second_stage_changes_nothing(v3, clf):
    # in plain Keras: layers[100:200] were never frozen, so "unfreezing" them leaves the same trainable set
    for layer in v3.layers:
        layer.trainable = True
    for layer in v3.layers[:100]:
        layer.trainable = False
    before = _keras_trainable(v3)
    for layer in v3.layers[100:200]:
        layer.trainable = True
    assert _keras_trainable(v3) == before == 21_729_669 - HEAD_1024
    # inceptune's literal translation: the runner says stage 2 changes nothing, and why
    stage2 = "!first:100, first:200 & !first:100"
    with pytest.warns(SelectorWarning, match=r"first:200 cuts block 'mixed7' in two \(2 layers with weights on one "
                                             r"side, 18 on the other\).*HINT: use 'through:mixed6' or "
                                             r"'through:mixed7'"):
        rep = unfreeze(clf, stage2, batchnorm="follow")
    assert (rep.trainable_params, rep.frozen_params) == (21_729_669, 2_176_416)
    first, second = _stage_warnings(clf, [{"name": "s1", "train": "!first:100"}, {"name": "s2", "train": stage2}])
    assert first == []
    assert any(re.search(r"stage 's2' trains exactly the layers stage 's1' trained \(\d+ layers, 21,714,949 "
                         r"trainable parameters\): train '!first:100, first:200 & !first:100' unfreezes nothing new",
                         w) for w in second)
    assert any("stage 's2': 'first:200&!first:100' selects 31 layers with weights that stage 's1' already trained, "
               "so it unfreezes nothing" in w for w in second)
    # the Python translation: unfreeze() of layers that are trainable already
    freeze(clf, "first:100")
    with pytest.warns(FootgunWarning, match=r"unfreeze\('first:200 & !first:100'\): all 31 layers with weights it "
                                            r"selects are trainable already .* so it unfreezes nothing"):
        unfreeze(clf, "first:200 & !first:100")


def test_000_ex1_intended_staged_unfreeze(clf):
    recipe = _recipe("seeds/000_ex1_staged_unfreeze.yaml")
    assert [s.lr for s in recipe.stages] == [1e-3, 1e-4]
    assert _stage_counts(clf, recipe) == [(17_045_509, 6_860_576), (21_714_949, 2_191_136)]
    # stage 2 trains exactly what layers[100:] means, block-aligned (layers[:100] end at mixed3's weightless concat)
    assert unfreeze(clf, "!first:100").trainable_params == 21_714_949
    assert all(not w for w in _stage_warnings(clf, [{"name": s.name, "train": s.train} for s in recipe.stages]))


def test_000_ex2_mixed11_and_output_shape(v3, clf_plain):
    with pytest.raises(ValueError, match="mixed11"):
        v3.get_layer("mixed11")  # the seed's first failure in Keras 3 ...
    assert not hasattr(v3.get_layer("mixed10"), "output_shape")  # ... and its second
    with pytest.raises(SurgeryError, match=r"mixed11.*mixed1'?, 'mixed10"):
        surgery.add_skip(clf_plain, "mixed10", "mixed11")


def _assert_live_skip(plain, skipped, name: str, size: int):
    x = images(2, size)
    np.testing.assert_allclose(skipped(x).numpy(), plain(x).numpy(), atol=1e-6)  # zero-initialised: unchanged
    proj = skipped.get_layer(name)
    assert proj.trainable
    kernel = proj.kernel
    kernel.assign(np.full(kernel.shape, 0.05, "float32"))
    try:
        assert np.abs(skipped(x).numpy() - plain(x).numpy()).max() > 1e-4  # the new path reaches the output
    finally:
        kernel.assign(np.zeros(kernel.shape, "float32"))


def test_000_ex2_intended_live_skip_mini():
    # the same call on inception_mini (fast): a skip between its last two modules is live once trained
    plain = build_classifier(fresh_backbone("inception_mini", 32), 3)
    skipped = surgery.add_skip(plain, "mixed2", "mixed3")
    _assert_live_skip(plain, skipped, "skip_mixed2_mixed3_proj", 32)


@pytest.fixture(scope="module")
def skipped(clf_plain):
    return surgery.add_skip(clf_plain, "mixed9", "mixed10")


@pytest.mark.slow
def test_000_ex2_intended_live_skip(clf_plain, skipped):
    _assert_live_skip(clf_plain, skipped, "skip_mixed9_mixed10_proj", 75)
    assert skipped.get_layer("skip_mixed9_mixed10_proj").output.shape[-1] == 2048
    assert skipped.count_params() - clf_plain.count_params() == 2048 * 2048 + 2048  # mixed9 has 2048 channels


@pytest.mark.slow
def test_000_ex3_intended_skip_and_freeze(skipped):
    recipe = _recipe("seeds/000_ex3_skip_and_freeze.yaml")
    assert [(s.src, s.dst, s.merge) for s in recipe.model.skips] == [("mixed9", "mixed10", "add")]
    assert _stage_counts(skipped, recipe) == [(23_818_245, 2_191_136)]
    assert recipe.model.head.dense == ()


# === seed 001: freezing InceptionV3 ===

def test_001_ex1_feature_extractor(v3, clf):
    # the seed's check filters on names starting with 'inception_v3': none in a flat model, so it asserts nothing
    x = keras.layers.Dense(5, activation="softmax")(
        keras.layers.Dense(1024, activation="relu")(keras.layers.GlobalAveragePooling2D()(v3.output)))
    flat = keras.Model(v3.input, x)
    assert [layer for layer in flat.layers if layer.name.startswith("inception_v3")] == []
    with pytest.warns(FootgunWarning, match=r"'name:inception_v3\*' matches no layer of 'inception_v3_classifier', "
                                            r"so it selects nothing \(and a check over those layers checks nothing\)"):
        assert select(clf, "name:inception_v3*") == []
    rep = unfreeze(clf, "head")
    assert (rep.trainable_params, rep.frozen_params) == (HEAD_1024, TOTAL_1024 - HEAD_1024)
    assert {b.block: b.state for b in rep.blocks}["mixed10"] == "frozen"  # the check the seed meant
    assert _stage_counts(clf, _recipe("feature_extractor.yaml")) == [(HEAD_1024, TOTAL_1024 - HEAD_1024)]


def test_001_ex2_freeze_first_n(clf):
    count_frozen = sum(1 for layer in clf.layers if layer.name.startswith("inception_v3"))
    assert count_frozen == 0  # the seed asserts count_frozen == 100: it fails
    rep = freeze(clf, "first:100", batchnorm="follow")  # follow: the seed's Keras trains BatchNorm layers too
    assert (rep.trainable_params, rep.frozen_params) == (21_729_669, 2_176_416)
    assert sum(1 for layer in select(clf, "first:100") if not layer.trainable) == 100


def test_001_ex3_name_contains_mixed(clf):
    with pytest.warns(FootgunWarning, match=r"^'name:\*mixed\*' selects 13 layers, none with weights \(Concatenate: "
                                            r"mixed0, mixed1, mixed2, mixed3 and 9 more\), so freezing or training "
                                            r"them changes nothing\. HINT: did you mean 'blocks:mixed0\.\.mixed10'"):
        rep = freeze(clf, "name:*mixed*", batchnorm="follow")
    assert (rep.trainable_params, rep.frozen_params) == (TOTAL_1024 - BN_STATS, BN_STATS)  # nothing frozen
    assert "selects 13 layers, none with weights" in rep.warnings[0]
    rep = freeze(clf, "blocks:mixed0..mixed10")  # what it meant: the Inception blocks frozen, stem and head train
    assert (rep.trainable_params, rep.frozen_params) == (2_275_173, 21_630_912)
    assert [b.state for b in rep.blocks if b.block.startswith("mixed")] == ["frozen"] * 11


# === seed 002: Inception modules with the functional API ===

def _seed_inception_module(x, f1, f3r, f3, f5r, f5, fp):
    L = keras.layers
    b1 = L.Conv2D(f1, 1, activation="relu")(x)
    b3 = L.Conv2D(f3, 3, padding="same", activation="relu")(L.Conv2D(f3r, 1, activation="relu")(x))
    b5 = L.Conv2D(f5, 5, padding="same", activation="relu")(L.Conv2D(f5r, 1, activation="relu")(x))
    bp = L.Conv2D(fp, 1, activation="relu")(L.MaxPooling2D(3, strides=1, padding="same")(x))
    return L.concatenate([b1, b3, b5, bp], axis=-1)


def _seed_residual_module(x):
    out = _seed_inception_module(x, 64, 96, 128, 16, 32, 32)
    if x.shape[-1] != out.shape[-1]:
        x = keras.layers.Conv2D(out.shape[-1], (1, 1))(x)
    return keras.layers.Add()([x, out])


def _with_head(inputs, x):
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1000, activation="softmax")(x))


def test_002_ex1_inception_module():
    # the seed's module runs as written in Keras 3; inceptune's is the Inception v3 form of it
    inputs = keras.Input((224, 224, 3))
    seed = keras.Model(inputs, _seed_inception_module(inputs, 64, 96, 128, 16, 32, 32))
    inputs = keras.Input((224, 224, 3))
    ours = keras.Model(inputs, blocks.inception_module(inputs, 64, 96, 128, 16, 32, 32, name="inception_3a"))
    assert tuple(seed.output.shape) == tuple(ours.output.shape) == (None, 224, 224, 256)
    assert seed.count_params() == 124_384  # convolutions with biases, a real 5x5
    assert ours.count_params() == 126_240  # convolutions + BatchNorm, the 5x5 as two 3x3 (Inception v3)
    assert ours.layers[-1].name == "inception_3a" and len({layer.name for layer in ours.layers}) == len(ours.layers)


def test_002_ex2_ex3_residual_model():
    inputs = keras.Input((224, 224, 3))
    seed = _with_head(inputs, _seed_residual_module(_seed_residual_module(inputs)))
    inputs = keras.Input((224, 224, 3))
    x = blocks.residual_inception_module(inputs, 32, out_channels=256, name="res1")
    assert tuple(x.shape) == (None, 224, 224, 256)
    ours = _with_head(inputs, blocks.residual_inception_module(x, 32, name="res2"))
    assert tuple(seed.output.shape) == tuple(ours.output.shape) == (None, 1000)
    assert ours.get_layer("res1_shortcut").output.shape[-1] == 256  # the seed's `if` projection, built in
    assert "res2_shortcut" not in {layer.name for layer in ours.layers}  # 256 -> 256: no projection needed
    assert (seed.count_params(), ours.count_params()) == (559_416, 389_000)


# === seed 003: fine-tune, augment, test ===

def _tiny_backbone():
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs), name="inception_mini")


def test_003_rescale_literal_warns_on_the_first_batch():
    model = build_classifier(_tiny_backbone(), 3, preprocess="tf", name="inception_mini_classifier")
    x = images(8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FootgunWarning)
        model.predict(x, verbose=0)  # raw 0-255 pixels: no warning
    with pytest.warns(FootgunWarning, match=r"inception_mini_classifier\.predict: the inputs look scaled to 0-1 "
                                            r"\(first batch: min .*, max .*\), but this model takes raw 0-255 RGB "
                                            r"pixels: its first layer 'preprocess' applies the 'tf' scaling "
                                            r"\(x/127\.5 - 1\) itself.*HINT: pass the pixels unscaled"):
        model.predict(x / 255.0, verbose=0)
    import tensorflow as tf

    model.compile("adam", "sparse_categorical_crossentropy")
    ds = tf.data.Dataset.from_tensor_slices((x / 255.0, np.zeros(8))).batch(4)
    with pytest.warns(FootgunWarning, match=r"\.fit: the inputs look scaled to 0-1"):
        model.fit(ds, epochs=1, verbose=0)
    with pytest.warns(FootgunWarning, match=r"\.predict: the inputs look preprocessed already \(first batch: min -1"):
        model.predict(x / 127.5 - 1.0, verbose=0)
    assert footguns.input_range(x * 257.0, "tf", "m", "fit")[0].startswith("m.fit: the inputs exceed 255")


def test_003_preprocess_unit_for_weights_trained_on_0_1(tmp_path):
    from inceptune.training.model import build_model

    recipe = load_recipe(EXAMPLES / "seeds/004_retrain.yaml",
                         ["model.backbone=inception_mini", "model.weights=none", "model.preprocess=unit"])
    model = build_model(recipe.model, 3, 32)
    pre = model.get_layer("preprocess")
    assert isinstance(pre, keras.layers.Rescaling) and pre.scale == pytest.approx(1 / 255)
    np.testing.assert_allclose(pre(np.full((1, 2, 2, 3), 255.0, "float32")).numpy(), 1.0, rtol=1e-6)
    with pytest.raises(RecipeError, match=r'model\.preprocess: unknown input scaling "rescale"\. Allowed: tf, torch, '
                                          r'caffe, none, unit'):
        load_recipe(EXAMPLES / "seeds/004_retrain.yaml", ["model.preprocess=rescale"])
    with pytest.raises(InceptuneError, match="preprocess must be one of tf, torch, caffe, none, unit"):
        build_classifier(fresh_backbone("inception_mini", 32), 3, preprocess="0-1")
    assert footguns.preprocess_mismatch("inception_v3", "imagenet", "tf") == []
    assert footguns.preprocess_mismatch("inception_v3", "imagenet", "unit")[0].startswith(
        "model.preprocess is 'unit' but the ImageNet weights of inception_v3 were trained with 'tf' scaling")


def test_003_augmentation_on_the_train_split_only(tmp_path):
    from inceptune.data import prepare
    from inceptune.data.augment import make_augmenter

    recipe = _recipe("seeds/003_fine_tune_and_test.yaml")
    aug = make_augmenter(recipe.data.augment)
    kinds = {type(layer).__name__: layer for layer in aug.layers}
    assert kinds["RandomRotation"].factor == (-40 / 360, 40 / 360)
    assert kinds["RandomZoom"].height_factor == 0.2 and kinds["RandomShear"].x_factor == (-0.2, 0.2)
    assert all(getattr(layer, "fill_mode", "nearest") == "nearest" for layer in aug.layers)
    cfg = load_recipe(EXAMPLES / "seeds/003_fine_tune_and_test.yaml",
                      [f"data.dir={make_image_folder(tmp_path / 'img', classes=2, per_class=10, size=32)}"]).data
    data = prepare(cfg, progress=False)

    def batch(split, augment):
        ds = data.dataset(split, batch_size=4, image_size=32, augment=augment, shuffle=False, seed=0)
        return next(iter(ds))[0].numpy()

    assert np.abs(batch("train", cfg.augment) - batch("train", None)).max() > 1.0
    for split in ("val", "test"):
        np.testing.assert_array_equal(batch(split, cfg.augment), batch(split, None))


def test_003_last_20_literal_and_intended(clf):
    with pytest.warns(SelectorWarning, match=r"last:20 cuts block 'mixed10' in two \(8 layers with weights on one "
                                             r"side, 10 on the other\).*HINT: use 'from:mixed10'"):
        with pytest.warns(FootgunWarning, match=r"unfreeze\('head, last:20'\): 6 BatchNormalization layers \(in "
                                                r"mixed10\) start updating their moving statistics .*batchnorm: "
                                                r"follow.*HINT: use batchnorm 'frozen'"):
            rep = unfreeze(clf, "head, last:20", batchnorm="follow")  # what the seed's Keras does
    assert rep.trainable_params == 4_038_661 and {b.block: b.state for b in rep.blocks}["mixed10"] == "partial"
    stages = [{"name": "head", "train": "head"}, {"name": "top", "train": "head, last:20"}]
    assert any(w.startswith("stage 'top': 6 BatchNormalization layers (in mixed10) start updating")
               for w in _stage_warnings(clf, stages, batchnorm="follow")[1])
    assert _stage_warnings(clf, stages, batchnorm="frozen") == [[], []]
    recipe = _recipe("seeds/003_fine_tune_and_test.yaml")
    assert _stage_counts(clf, recipe) == [(HEAD_1024, TOTAL_1024 - HEAD_1024), (8_173_573, 15_732_512)]


# === seed 004: retraining ===

def test_004_ex1_ex2_head_then_last_5(clf_plain):
    head = 2048 * 5 + 5
    rep = unfreeze(clf_plain, "head")
    assert (rep.trainable_params, rep.frozen_params) == (head, 21_802_784)
    with pytest.warns(FootgunWarning, match=r"'last:5' selects 5 layers, none with weights \(Activation/Concatenate: "
                                            r".*\), so freezing or training them changes nothing\. HINT: did you mean "
                                            r"'from:mixed10'"):
        rep = unfreeze(clf_plain, "head, last:5")
    assert rep.trainable_params == head  # nothing unfrozen
    warned = _stage_warnings(clf_plain, [{"name": "head", "train": "head"}, {"name": "more", "train": "head, last:5"}])
    assert warned[0] == [] and warned[1][0].startswith("stage 'more': 'last:5' selects 5 layers, none with weights")
    assert "stage 'more' trains exactly the layers stage 'head' trained" in warned[1][1]
    assert _stage_counts(clf_plain, _recipe("seeds/004_retrain.yaml")) == [(head, 21_802_784),
                                                                         (11_118_597, 10_694_432)]


def test_004_ex3_exponential_decay():
    stage = _recipe("exponential_decay.yaml").stages[0]
    spec = ScheduleSpec(stage.lr, stage.schedule, total_steps=30 * 100, decay_steps=stage.decay_steps,
                        decay_rate=stage.decay_rate, steps_per_epoch=100)
    keras_lr = keras.optimizers.schedules.ExponentialDecay(0.001, decay_steps=1000, decay_rate=0.9)
    for step, expected in [(0, 1e-3), (500, 1e-3 * 0.9 ** 0.5), (1000, 9e-4), (2500, 1e-3 * 0.9 ** 2.5),
                           (2999, 1e-3 * 0.9 ** 2.999)]:
        assert lr_at(step, spec) == pytest.approx(expected, rel=1e-9)
        assert lr_at(step, spec) == pytest.approx(float(keras_lr(step)), rel=1e-6)


# === the run: warnings reach the terminal, log.txt and Run.log ===

@pytest.mark.slow
def test_run_warnings_reach_cli_output_and_log(tmp_path, capsys):
    import yaml

    from inceptune import cli

    data = make_image_folder(tmp_path / "img", classes=2, per_class=8, size=32)
    recipe = {"data": {"dir": str(data), "image_size": 32, "split": {"val": 0.25, "test": 0.25}, "batch_size": 8},
              "model": {"backbone": "inception_mini", "weights": "none"},
              "stages": [{"name": "one", "train": "head, name:mixed?", "epochs": 1},
                         {"name": "two", "train": "head", "epochs": 0}], "cache": "off"}
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    log = (tmp_path / "run" / "log.txt").read_text()
    for text in ("warning: stage 'one': 'name:mixed?' selects 4 layers, none with weights",
                 "warning: stage 'two' trains exactly the layers stage 'one' trained"):
        assert text in out and text in log
