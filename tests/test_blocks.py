"""Tests for inceptune.blocks: shapes, layer names, residual projections, and equality with Keras's own blocks.

The Inception-ResNet blocks are checked against `keras.applications`' InceptionResNetV2 building code: the same
weights give the same outputs, so `inception_resnet_a/b/c` and `reduction_a/b` are the paper's blocks as Keras
ships them, built from stock layers (no `CustomScaleLayer`).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from keras.src.applications import inception_resnet_v2 as keras_irv2

from inceptune import blocks


def _model(fn, shape, **kwargs):
    x = keras.Input(shape)
    return keras.Model(x, fn(x, **kwargs))


def _names(model) -> list[str]:
    return [layer.name for layer in model.layers[1:]]  # without the input layer


def _random_weights(model, seed=0):
    """Normal weights (positive variances) so that outputs are far from zero."""
    rng = np.random.RandomState(seed)
    values = []
    for v in model.weights:
        w = rng.normal(0, 0.1, tuple(v.shape)).astype("float32")
        values.append(np.abs(w) + 0.5 if v.path.endswith("moving_variance") else w)
    return values


def _same_function(ours, reference, shape, seed=0):
    """Copies the reference's weights into `ours` (same creation order) and compares outputs exactly."""
    assert [tuple(v.shape) for v in ours.weights] == [tuple(v.shape) for v in reference.weights]
    values = _random_weights(reference, seed)
    reference.set_weights(values)
    ours.set_weights(values)
    x = np.random.RandomState(seed + 1).normal(size=(2,) + shape).astype("float32")
    expected = np.asarray(reference(x))
    assert np.abs(expected).max() > 1.0
    np.testing.assert_array_equal(np.asarray(ours(x)), expected)


# === conv_bn and the Inception module ===

def test_conv_bn_names_and_shapes():
    m = _model(blocks.conv_bn, (9, 9, 3), filters=8, kernel_size=3, strides=2, padding="valid", name="c")
    assert _names(m) == ["c_conv", "c_bn", "c_act"]
    assert tuple(m.output.shape) == (None, 4, 4, 8)
    assert m.get_layer("c_conv").use_bias is False and m.get_layer("c_bn").scale is False
    m = _model(blocks.conv_bn, (9, 9, 3), filters=8, kernel_size=(1, 7), activation=None, name="c")
    assert _names(m) == ["c_conv", "c_bn"] and tuple(m.output.shape) == (None, 9, 9, 8)


def test_inception_module_concatenates_four_branches():
    m = _model(blocks.inception_module, (28, 28, 192), filters_1x1=64, filters_3x3_reduce=96, filters_3x3=128,
               filters_5x5_reduce=16, filters_5x5=32, filters_pool=32, name="inception_3a")
    assert tuple(m.output.shape) == (None, 28, 28, 64 + 128 + 32 + 32)  # GoogLeNet's 3a: 256 channels
    assert m.layers[-1].name == "inception_3a"
    assert isinstance(m.get_layer("inception_3a"), layers.Concatenate)
    units = ["b1", "b2_reduce", "b2", "b3_reduce", "b3a", "b3b", "b4"]
    expected = {f"inception_3a_{u}_{part}" for u in units for part in ("conv", "bn", "act")}
    assert set(_names(m)) == expected | {"inception_3a_b4_pool", "inception_3a"}
    assert tuple(m.get_layer("inception_3a_b3b_conv").kernel.shape) == (3, 3, 32, 32)  # 5×5 as two 3×3


# === residual Inception module ===

def test_residual_inception_module_keeps_channels_without_projection():
    m = _model(blocks.residual_inception_module, (8, 8, 24), filters=8, scale=0.5, name="r")
    assert tuple(m.output.shape) == (None, 8, 8, 24)
    assert "r_shortcut" not in _names(m)
    assert tuple(m.get_layer("r_up").kernel.shape) == (1, 1, 3 * 8, 24)
    assert m.get_layer("r_scale").scale == 0.5
    assert isinstance(m.get_layer("r"), layers.Activation) and isinstance(m.get_layer("r_add"), layers.Add)


def test_residual_inception_module_projects_shortcut_when_channels_differ():
    m = _model(blocks.residual_inception_module, (8, 8, 24), filters=8, out_channels=40, name="r")
    assert tuple(m.output.shape) == (None, 8, 8, 40)
    assert tuple(m.get_layer("r_shortcut").kernel.shape) == (1, 1, 24, 40)
    assert tuple(m.get_layer("r_up").kernel.shape) == (1, 1, 24, 40)


def test_residual_inception_module_zero_init_is_identity():
    x = np.random.RandomState(0).normal(size=(2, 8, 8, 24)).astype("float32")
    m = _model(blocks.residual_inception_module, (8, 8, 24), filters=8, zero_init=True, activation=None, name="r")
    assert m.layers[-1].name == "r" and isinstance(m.layers[-1], layers.Add)
    np.testing.assert_array_equal(np.asarray(m(x)), x)
    # with the default ReLU it is the identity on non-negative inputs (e.g. after a ReLU block)
    m = _model(blocks.residual_inception_module, (8, 8, 24), filters=8, zero_init=True, name="r")
    np.testing.assert_array_equal(np.asarray(m(np.abs(x))), np.abs(x))
    # with a projected shortcut it is that projection: relu(x @ W + b)
    m = _model(blocks.residual_inception_module, (8, 8, 24), filters=8, out_channels=16, zero_init=True, name="r")
    w, b = (v.numpy() for v in m.get_layer("r_shortcut").weights)
    np.testing.assert_allclose(np.asarray(m(x)), np.maximum(x @ w[0, 0] + b, 0), rtol=1e-5, atol=1e-5)


# === Inception-ResNet blocks, against keras.applications ===

@pytest.mark.parametrize("fn, block_type, channels, scale, up_in", [
    (blocks.inception_resnet_a, "block35", 32, 0.17, 32 + 32 + 64),
    (blocks.inception_resnet_b, "block17", 40, 0.1, 192 + 192),
    (blocks.inception_resnet_c, "block8", 24, 0.2, 192 + 256),
])
def test_inception_resnet_blocks_match_keras(fn, block_type, channels, scale, up_in):
    shape = (5, 5, channels)
    ours = _model(fn, shape, scale=scale, name="blk")
    x = keras.Input(shape)
    reference = keras.Model(x, keras_irv2.inception_resnet_block(x, scale, block_type, 1))
    assert tuple(ours.output.shape) == (None,) + shape
    assert ours.layers[-1].name == "blk" and ours.get_layer("blk_scale").scale == scale
    assert tuple(ours.get_layer("blk_up").kernel.shape) == (1, 1, up_in, channels)
    assert all(n == "blk" or n.startswith("blk_") for n in _names(ours))
    assert ours.count_params() == reference.count_params()
    _same_function(ours, reference, shape)


def test_reduction_a_matches_keras_mixed_6a():
    shape = (11, 11, 16)
    ours = _model(blocks.reduction_a, shape, k=8, l=12, m=20, n=24, name="red")
    x = keras.Input(shape)
    # keras.applications' InceptionResNetV2 "Mixed 6a", with k, l, m, n = 8, 12, 20, 24
    b0 = keras_irv2.conv2d_bn(x, 24, 3, strides=2, padding="valid")
    b1 = keras_irv2.conv2d_bn(x, 8, 1)
    b1 = keras_irv2.conv2d_bn(b1, 12, 3)
    b1 = keras_irv2.conv2d_bn(b1, 20, 3, strides=2, padding="valid")
    pool = layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    reference = keras.Model(x, layers.Concatenate()([b0, b1, pool]))
    assert tuple(ours.output.shape) == (None, 5, 5, 24 + 20 + 16)  # ⌊(11 − 3)/2⌋ + 1 = 5
    assert isinstance(ours.get_layer("red"), layers.Concatenate)
    _same_function(ours, reference, shape)


def test_reduction_b_matches_keras_mixed_7a():
    shape = (9, 9, 16)
    ours = _model(blocks.reduction_b, shape, reduce=8, outputs=(12, 10, 14), name="red")
    x = keras.Input(shape)
    b0 = keras_irv2.conv2d_bn(keras_irv2.conv2d_bn(x, 8, 1), 12, 3, strides=2, padding="valid")
    b1 = keras_irv2.conv2d_bn(keras_irv2.conv2d_bn(x, 8, 1), 10, 3, strides=2, padding="valid")
    b2 = keras_irv2.conv2d_bn(keras_irv2.conv2d_bn(x, 8, 1), 10, 3)
    b2 = keras_irv2.conv2d_bn(b2, 14, 3, strides=2, padding="valid")
    pool = layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    reference = keras.Model(x, layers.Concatenate()([b0, b1, b2, pool]))
    assert tuple(ours.output.shape) == (None, 4, 4, 12 + 10 + 14 + 16)
    _same_function(ours, reference, shape)


def test_default_reductions_give_inception_resnet_v2_channels():
    x = keras.Input((35, 35, 320))
    y = blocks.reduction_a(x, name="mixed_6a")
    assert tuple(y.shape) == (None, 17, 17, 1088)  # InceptionResNetV2's mixed_6a
    z = blocks.reduction_b(keras.Input((17, 17, 1088)), name="mixed_7a")
    assert tuple(z.shape) == (None, 8, 8, 2080)  # InceptionResNetV2's mixed_7a


# === a small InceptionResNetV2-like network (the README example) ===

def _small_inception_resnet(num_classes=10):
    inputs = keras.Input((75, 75, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inputs)
    # stem: 75 x 75 x 3 -> 18 x 18 x 64
    x = blocks.conv_bn(x, 32, 3, strides=2, padding="valid", name="stem_conv1")
    x = blocks.conv_bn(x, 64, 3, name="stem_conv2")
    x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    # 2 x Inception-ResNet-A: 18 x 18 x 64
    for i in (1, 2):
        x = blocks.inception_resnet_a(x, scale=0.17, name=f"block35_{i}")
    # Reduction-A: 18 x 18 x 64 -> 8 x 8 x 192
    x = blocks.reduction_a(x, k=32, l=32, m=64, n=64, name="mixed_6a")
    # 2 x Inception-ResNet-B: 8 x 8 x 192
    for i in (1, 2):
        x = blocks.inception_resnet_b(x, scale=0.1, name=f"block17_{i}")
    # Reduction-B: 8 x 8 x 192 -> 3 x 3 x 432
    x = blocks.reduction_b(x, reduce=64, outputs=(96, 64, 80), name="mixed_7a")
    # 2 x Inception-ResNet-C: 3 x 3 x 432
    for i in (1, 2):
        x = blocks.inception_resnet_c(x, scale=0.2, name=f"block8_{i}")
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="head_output")(x)
    return keras.Model(inputs, outputs, name="small_inception_resnet")


def _expected_params() -> int:
    """The network's parameter count from the paper's block layouts, layer by layer."""
    def cb(kh, kw, cin, cout):  # conv without bias + BatchNormalization(scale=False): beta, mean, variance
        return kh * kw * cin * cout + 3 * cout

    def up(cin, cout):  # the residual 1×1 projection, with bias
        return cin * cout + cout

    stem = cb(3, 3, 3, 32) + cb(3, 3, 32, 64)
    a = cb(1, 1, 64, 32) * 3 + cb(3, 3, 32, 32) + cb(3, 3, 32, 48) + cb(3, 3, 48, 64) + up(128, 64)
    red_a = cb(3, 3, 64, 64) + cb(1, 1, 64, 32) + cb(3, 3, 32, 32) + cb(3, 3, 32, 64)
    b = cb(1, 1, 192, 192) + cb(1, 1, 192, 128) + cb(1, 7, 128, 160) + cb(7, 1, 160, 192) + up(384, 192)
    red_b = cb(1, 1, 192, 64) * 3 + cb(3, 3, 64, 96) + cb(3, 3, 64, 64) * 2 + cb(3, 3, 64, 80)
    c = cb(1, 1, 432, 192) * 2 + cb(1, 3, 192, 224) + cb(3, 1, 224, 256) + up(448, 432)
    head = 432 * 10 + 10
    return stem + 2 * a + red_a + 2 * b + red_b + 2 * c + head


def test_small_inception_resnet_from_blocks(tmp_path):
    keras.utils.set_random_seed(0)
    model = _small_inception_resnet()
    shapes = {n: tuple(model.get_layer(n).output.shape[1:]) for n in
              ("stem_pool", "block35_2", "mixed_6a", "block17_2", "mixed_7a", "block8_2", "head_output")}
    assert shapes == {"stem_pool": (18, 18, 64), "block35_2": (18, 18, 64), "mixed_6a": (8, 8, 192),
                      "block17_2": (8, 8, 192), "mixed_7a": (3, 3, 432), "block8_2": (3, 3, 432),
                      "head_output": (10,)}
    assert model.count_params() == _expected_params() == 2_754_682
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert not any(n.startswith(("conv2d", "batch_normalization", "activation")) for n in names)  # all named
    x = np.random.RandomState(0).uniform(0, 255, (2, 75, 75, 3)).astype("float32")
    y = np.asarray(model(x))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    path = tmp_path / "small.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(x)), y)
