"""Tests for inceptune.surgery: skips, insertion and head replacement keep outputs and weights, then train.

InceptionV3 and InceptionResNetV2 are built once per module at 75×75 (their minimum) with weights=None and a
fixed seed. At 75×75 InceptionV3's grids are mixed0–2: 7×7, mixed3–7: 3×3, mixed8–10: 1×1, so
mixed2 → mixed7 is a non-integer reduction (7 → 3), as 35 → 17 is at 299×299. Training steps run eagerly
(`run_eagerly=True`): tracing InceptionV3's training graph alone takes ~45 s on this CPU.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from inceptune import graph, surgery
from inceptune.architectures import build_inception_mini, load_backbone
from inceptune.errors import SurgeryError
from inceptune.heads import build_classifier

SIZE = 75
LABELS = np.array([0, 1, 2, 0])


# === helpers ===

def _weights(model) -> dict[str, np.ndarray]:
    return {v.path: v.numpy() for v in model.weights}


def _names(model) -> set[str]:
    return {layer.name for layer in model.layers}


def _assert_same_outputs(new, old):
    """Equal to 1e-5 of the output's scale (random-init logits are ~1e-3, so an absolute 1e-5 would be lax)."""
    new, old = np.asarray(new), np.asarray(old)
    assert new.shape == old.shape
    assert np.abs(new - old).max() <= 1e-5 * np.abs(old).max()


def _assert_weights_kept(old_w, new_model, changed=()):
    """Every variable of the old model exists in the new one by path, identical, except those in `changed`."""
    new_w = _weights(new_model)
    for path, value in old_w.items():
        if path in changed:
            continue
        assert path in new_w, path
        assert np.array_equal(new_w[path], value), path


def _train_one_step(model, trainable: set[str], x):
    """One eager SGD step training only the layers named in `trainable` (the rest frozen, BN in inference)."""
    for layer in model.layers:
        layer.trainable = layer.name in trainable
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, LABELS)


def _assert_live(model, trainable, x, y_old):
    old_w = _weights(model)
    _train_one_step(model, trainable, x)
    y = np.asarray(model(x))
    assert np.abs(y - y_old).max() > 1e-2 * np.abs(y_old).max()  # measured: a relative change of ~1
    frozen = {p for p in old_w if p.split("/")[0] not in trainable}
    _assert_weights_kept({p: old_w[p] for p in frozen}, model)


# === fixtures ===

@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def v3():
    """A flat InceptionV3 classifier (logits) and its outputs on `images`, built once."""
    keras.utils.set_random_seed(0)
    base = load_backbone("inception_v3", weights=None, image_size=SIZE)
    return build_classifier(base, 3, head={"activation": None})


@pytest.fixture(scope="module")
def v3_ref(v3, images):
    return np.asarray(v3(images)), _weights(v3)


@pytest.fixture(scope="module")
def skip_8_10(v3):
    return surgery.add_skip(v3, "mixed8", "mixed10")


@pytest.fixture
def mini():
    keras.utils.set_random_seed(1)
    return build_classifier(build_inception_mini((32, 32, 3)), 3, head={"activation": None})


# === add_skip on InceptionV3 ===

def test_skip_mixed8_mixed10_keeps_outputs_and_weights(v3, v3_ref, skip_8_10, images):
    y0, w0 = v3_ref
    m = skip_8_10
    assert _names(m) - _names(v3) == {"skip_mixed8_mixed10_proj", "skip_mixed8_mixed10_add"}
    assert _names(v3) <= _names(m)
    assert len(m.layers) == len(v3.layers) + 2
    proj = m.get_layer("skip_mixed8_mixed10_proj")
    assert tuple(proj.kernel.shape) == (1, 1, 1280, 2048)  # 1×1×1280 -> 1×1×2048, no pooling needed
    assert not proj.kernel.numpy().any() and not proj.bias.numpy().any()
    assert m.get_layer("head_pool").input is m.get_layer("skip_mixed8_mixed10_add").output
    _assert_same_outputs(m(images), y0)
    _assert_weights_kept(w0, m)
    assert set(_weights(m)) - set(w0) == {"skip_mixed8_mixed10_proj/kernel", "skip_mixed8_mixed10_proj/bias"}
    assert all(v.trainable for v in proj.weights)


def test_skip_mixed2_mixed7_reduces_7_to_3_and_is_live_after_one_step(v3, v3_ref, images):
    y0, w0 = v3_ref
    m = surgery.add_skip(v3, "mixed2", "mixed7")
    new = _names(m) - _names(v3)
    assert new == {"skip_mixed2_mixed7_pool", "skip_mixed2_mixed7_proj", "skip_mixed2_mixed7_add"}
    pool = m.get_layer("skip_mixed2_mixed7_pool")
    # 7×7 -> 3×3: window 3, stride 2, valid: the windows tile all 7 rows ((3-1)·2 + 3 = 7)
    assert isinstance(pool, keras.layers.AveragePooling2D)
    assert (tuple(pool.pool_size), tuple(pool.strides), pool.padding) == ((3, 3), (2, 2), "valid")
    assert tuple(pool.output.shape) == (None, 3, 3, 288)
    assert tuple(m.get_layer("skip_mixed2_mixed7_proj").kernel.shape) == (1, 1, 288, 768)
    _assert_same_outputs(m(images), y0)
    _assert_weights_kept(w0, m)
    _assert_live(m, new, images, y0)
    assert np.abs(m.get_layer("skip_mixed2_mixed7_proj").kernel.numpy()).max() > 0


def test_concat_skip_widens_consumers_with_zero_rows(v3, v3_ref, images):
    y0, w0 = v3_ref
    m = surgery.add_skip(v3, "mixed2", "mixed7", merge="concat")
    assert _names(m) - _names(v3) == {"skip_mixed2_mixed7_pool", "skip_mixed2_mixed7_concat"}
    assert tuple(m.get_layer("skip_mixed2_mixed7_concat").output.shape) == (None, 3, 3, 768 + 288)
    # mixed8 passes mixed7 through its max-pool branch, so it grows too: 320 + 192 + (768 + 288)
    assert tuple(m.get_layer("mixed8").output.shape) == (None, 1, 1, 1280 + 288)
    new_w = _weights(m)
    changed = {p for p in w0 if new_w[p].shape != w0[p].shape}
    # the two 1×1 convs of mixed8 that read mixed7, and the four convs of mixed9 that read mixed8
    assert len(changed) == 6 and all(p.endswith("/kernel") for p in changed)
    assert all(isinstance(m.get_layer(p.split("/")[0]), keras.layers.Conv2D) for p in changed)
    for p in changed:
        old, new = w0[p], new_w[p]
        assert new.shape[:2] + new.shape[3:] == old.shape[:2] + old.shape[3:]
        assert new.shape[2] - old.shape[2] == 288
    mixed9_conv = next(p for p in changed if new_w[p].shape[2] == 1280 + 288)
    # the new channels of mixed8 are its last 288 (the pooled skip at the end of the max-pool branch)
    assert np.array_equal(new_w[mixed9_conv][:, :, :1280], w0[mixed9_conv])
    assert not new_w[mixed9_conv][:, :, 1280:].any()
    _assert_same_outputs(m(images), y0)
    _assert_weights_kept(w0, m, changed=changed)
    _assert_live(m, {p.split("/")[0] for p in changed}, images, y0)


def test_insert_residual_inception_after_mixed7_is_identity_then_live(v3, v3_ref, images):
    y0, w0 = v3_ref
    m = surgery.insert_after(v3, "mixed7", "residual_inception", filters=16)
    new = _names(m) - _names(v3)
    prefix = "residual_inception_after_mixed7"
    assert all(n == prefix or n.startswith(prefix + "_") for n in new)
    assert {prefix, f"{prefix}_gate", f"{prefix}_residual", f"{prefix}_b1_conv"} <= new
    assert len(new) == 25  # 6 conv_bn units (18 layers) + mixed, up, scale, add, output, gate, residual
    assert tuple(m.get_layer(f"{prefix}_gate").kernel.shape) == (1, 1, 768, 768)
    kids, old_kids = graph.children(m), graph.children(v3)
    assert kids[f"{prefix}_residual"] == old_kids["mixed7"]  # every old consumer of mixed7 now reads the block
    assert f"{prefix}_residual" in kids["mixed7"] and not set(old_kids["mixed7"]) & set(kids["mixed7"])
    _assert_same_outputs(m(images), y0)
    _assert_weights_kept(w0, m)
    _assert_live(m, new, images, y0)


# === errors ===

def test_unknown_layer_suggests_closest_names(v3):
    with pytest.raises(SurgeryError) as info:
        surgery.add_skip(v3, "mixed10", "mixed11")
    text = str(info.value)
    assert "unknown dst 'mixed11'" in text
    assert "Did you mean 'mixed1', 'mixed10'" in text
    assert "Received: dst='mixed11'" in text


def test_reversed_skip_names_both_layers_and_shapes(v3):
    with pytest.raises(SurgeryError) as info:
        surgery.add_skip(v3, "mixed10", "mixed8")
    text = str(info.value)
    assert "'mixed10' (layer 'mixed10', output 1×1×2048)" in text
    assert "'mixed8' (layer 'mixed8', output 1×1×1280)" in text
    assert "'mixed10' is downstream of 'mixed8'" in text
    assert "add_skip(model, 'mixed8', 'mixed10')" in text


def test_bad_arguments_are_refused(v3):
    with pytest.raises(SurgeryError, match=r"Allowed: add, concat\. Received: merge='sum'"):
        surgery.add_skip(v3, "mixed8", "mixed10", merge="sum")
    with pytest.raises(SurgeryError, match=r"channels differ \(1280 vs 2048\)"):
        surgery.add_skip(v3, "mixed8", "mixed10", projection="none")
    with pytest.raises(SurgeryError, match="same layer"):
        surgery.add_skip(v3, "mixed8", "mixed8")
    with pytest.raises(SurgeryError, match="both outputs must be 4-D"):
        surgery.add_skip(v3, "mixed8", "head_pool")
    near = r"Did you mean 'inception_resnet_c', 'inception_resnet_b', 'inception_resnet_a'\?"
    with pytest.raises(SurgeryError, match=near):
        surgery.insert_after(v3, "mixed7", "inception_resnet_d")


def test_existing_prefix_is_refused(skip_8_10):
    with pytest.raises(SurgeryError, match="already has layer"):
        surgery.add_skip(skip_8_10, "mixed8", "mixed10")


def test_concat_refuses_a_residual_add_downstream(mini):
    # inception_mini's mixed1 is residual: mixed1_add reads mixed0 itself, and an Add cannot take extra channels
    with pytest.raises(SurgeryError) as info:
        surgery.add_skip(mini, "stem", "mixed0", merge="concat")
    text = str(info.value)
    assert "'mixed1_add' (Add)" in text and "from 48 to 64 channels" in text and "merge='add'" in text


def test_insert_block_that_fails_is_a_surgery_error(mini):
    with pytest.raises(SurgeryError, match=r"cannot insert block 'inception'.*TypeError"):
        surgery.insert_after(mini, "mixed1", "inception")  # inception_module needs its six filter counts


# === spatial matching on a toy graph (the sizes of InceptionV3 at 299×299: 35 → 17 → 8) ===

def _toy():
    keras.utils.set_random_seed(7)
    x = keras.Input((35, 35, 3), name="image")
    a = layers.Conv2D(8, 3, padding="same", name="a")(x)                         # 35×35×8
    p = layers.Conv2D(8, 1, name="p")(a)                                           # two parallel branches
    q = layers.Conv2D(8, 1, name="q")(a)
    b = layers.Conv2D(12, 3, strides=2, name="b")(layers.Add(name="pq")([p, q]))    # 17×17×12
    c = layers.Conv2D(16, 3, strides=2, name="c")(b)                               # 8×8×16
    e = layers.UpSampling2D(2, name="e")(c)                                        # 16×16×16
    f = layers.ZeroPadding2D(2, name="f")(e)                                       # 20×20×16
    out = layers.Dense(3, name="out")(layers.GlobalAveragePooling2D(name="gap")(f))
    return keras.Model(x, out, name="toy")


@pytest.mark.parametrize("src, dst, layer, kind, config", [
    ("a", "b", "pool", layers.AveragePooling2D, {"pool_size": (3, 3), "strides": (2, 2)}),   # 35 -> 17
    ("a", "c", "pool", layers.AveragePooling2D, {"pool_size": (7, 7), "strides": (4, 4)}),   # 35 -> 8
    ("b", "e", "pool", layers.AveragePooling2D, {"pool_size": (2, 2), "strides": (1, 1)}),   # 17 -> 16
    ("c", "e", "upsample", layers.UpSampling2D, {"size": (2, 2)}),                          # 8 -> 16
    ("c", "f", "resize", layers.Resizing, {"height": 20, "width": 20}),                     # 8 -> 20
])
def test_spatial_projection_is_exact_and_stock(src, dst, layer, kind, config):
    toy = _toy()
    x = np.random.RandomState(8).normal(size=(2, 35, 35, 3)).astype("float32")
    m = surgery.add_skip(toy, src, dst)
    spatial = m.get_layer(f"skip_{src}_{dst}_{layer}")
    assert isinstance(spatial, kind)
    assert {k: (tuple(v) if isinstance(v, list) else v) for k, v in spatial.get_config().items() if k in config} \
        == config
    assert spatial.output.shape[1:3] == toy.get_layer(dst).output.shape[1:3]
    _assert_same_outputs(m(x), toy(x))


def test_parallel_layers_are_refused():
    with pytest.raises(SurgeryError, match=r"'p' \(layer 'p', output 35×35×8\) to 'q'.*parallel paths"):
        surgery.add_skip(_toy(), "p", "q")


# === smaller models: block names, callables, nesting, heads ===

def test_insert_inception_resnet_block_by_name_and_callable_on_mini(mini):
    x = np.random.RandomState(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y0 = np.asarray(mini(x))
    m = surgery.insert_after(mini, "mixed0", "inception_resnet_a", scale=0.2)
    assert "inception_resnet_a_after_mixed0_residual" in _names(m)
    _assert_same_outputs(m(x), y0)

    def tiny(t, name):
        return keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=name)(t)

    m2 = surgery.insert_after(m, "mixed2", tiny, name="extra")
    assert _names(m2) - _names(m) == {"extra", "extra_gate", "extra_residual"}
    assert tuple(m2.get_layer("extra_gate").kernel.shape) == (1, 1, 4, 96)  # 4 channels back to mixed2's 96
    _assert_same_outputs(m2(x), y0)
    with pytest.raises(SurgeryError, match="must have the shape of its input"):
        surgery.insert_after(mini, "mixed2", tiny, residual=False, name="extra")


def test_nested_backbone_is_flattened(images):
    keras.utils.set_random_seed(3)
    base = build_inception_mini((32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    nested = keras.Model(inputs, keras.layers.Dense(2, name="out")(
        keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))))
    x = images[:2, :32, :32]
    m = surgery.add_skip(nested, "mixed0", "mixed3")  # 16×16×48 -> pool 2 -> 8×8 -> 1×1 conv -> 96
    assert not any(isinstance(layer, keras.Model) for layer in m.layers)
    assert (m.get_layer("skip_mixed0_mixed3_pool").pool_size, m.get_layer("skip_mixed0_mixed3_pool").strides) \
        == ((2, 2), (2, 2))
    _assert_same_outputs(m(x), nested(x))


def test_replace_head_keeps_backbone(v3, v3_ref, images):
    _, w0 = v3_ref
    m = surgery.replace_head(v3, 5, head={"dense": [16], "dropout": 0.2})
    assert [l.name for l in m.layers if l.name.startswith("head_")] == [
        "head_pool", "head_dropout", "head_dense_0", "head_dropout_0", "head_output"]
    assert tuple(m.output.shape) == (None, 5)
    assert m.get_layer("head_output").activation is keras.activations.softmax
    backbone = {p: v for p, v in w0.items() if not p.startswith("head_")}
    _assert_weights_kept(backbone, m)
    assert np.allclose(np.asarray(m(images)).sum(axis=1), 1.0, atol=1e-5)


def test_replace_head_on_a_backbone_adds_one():
    keras.utils.set_random_seed(4)
    m = surgery.replace_head(build_inception_mini((32, 32, 3)), 4)
    assert tuple(m.output.shape) == (None, 4)
    assert [l.name for l in m.layers][-2:] == ["head_pool", "head_output"]
    with pytest.raises(SurgeryError, match="num_classes=1"):
        surgery.replace_head(m, 1)


# === InceptionResNetV2 and saving ===

@pytest.fixture(scope="module")
def irv2():
    keras.utils.set_random_seed(5)
    return load_backbone("inception_resnet_v2", weights=None, image_size=SIZE)


def test_skip_between_block17_blocks_of_inception_resnet_v2(irv2, images):
    x = images[:2]
    y0, w0 = np.asarray(irv2(x)), _weights(irv2)
    m = surgery.add_skip(irv2, "block17_3", "block17_8")  # block names -> block17_3_ac, block17_8_ac (3×3×1088)
    assert _names(m) - _names(irv2) == {"skip_block17_3_block17_8_proj", "skip_block17_3_block17_8_add"}
    assert m.get_layer("skip_block17_3_block17_8_add").input[0] is m.get_layer("block17_8_ac").output
    _assert_same_outputs(m(x), y0)
    _assert_weights_kept(w0, m)


def test_edited_model_round_trips_through_keras_file(mini, tmp_path):
    # every kind of edit at once: pooled add skip, inserted residual block, concat skip (widened head Dense)
    m = surgery.add_skip(mini, "mixed0", "mixed3")
    m = surgery.insert_after(m, "mixed2", "inception_resnet_c", scale=0.2)
    m = surgery.add_skip(m, "mixed1", "skip_mixed0_mixed3_add", merge="concat", name="cat")  # after the add skip
    assert tuple(m.get_layer("head_output").kernel.shape) == (96 + 48, 3)
    x = np.random.RandomState(6).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    _assert_same_outputs(m(x), mini(x))
    path = tmp_path / "edited.keras"
    m.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [l.name for l in loaded.layers] == [l.name for l in m.layers]
    assert np.array_equal(np.asarray(loaded(x)), np.asarray(m(x)))
    _assert_weights_kept(_weights(m), loaded)


@pytest.mark.slow
def test_edited_inception_v3_round_trips_through_keras_file(skip_8_10, images, tmp_path):
    path = tmp_path / "edited.keras"
    skip_8_10.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [l.name for l in loaded.layers] == [l.name for l in skip_8_10.layers]
    assert np.array_equal(np.asarray(loaded(images)), np.asarray(skip_8_10(images)))


@pytest.mark.slow
def test_edited_inception_resnet_v2_round_trips(irv2, images, tmp_path):
    # its residual scales are keras.applications' CustomScaleLayer: it must still load in safe mode
    m = surgery.add_skip(irv2, "block35_2", "block17_1")
    path = tmp_path / "irv2.keras"
    m.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert np.array_equal(np.asarray(loaded(images)), np.asarray(m(images)))
