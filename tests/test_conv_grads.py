"""The trained convolutions' kernel gradient as one matrix product (conv_grads.py): the values TensorFlow's own
gradient gives, on the layers and maps where it applies only, and nothing else about the model changed."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from inceptune import conv_grads
from inceptune.recipe import load_recipe
from inceptune.training.model import compile_stage


def _pair(kernel, padding, cin=6, filters=5):
    """Two Conv2D layers with the same weights, the second with the product's gradient installed."""
    native, product = (keras.layers.Conv2D(filters, kernel, padding=padding) for _ in range(2))
    for layer in (native, product):
        layer.build((None, None, None, cin))
    product.set_weights(native.get_weights())
    assert conv_grads.install(keras.Sequential([product])) == 1
    return native, product


def _forward_and_grads(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.cos(y))  # a gradient that differs per output position
    dx, dk, db = tape.gradient(loss, [x, layer.kernel, layer.bias])
    return [np.asarray(t) for t in (y, dx, dk, db)]


@pytest.mark.parametrize("kernel,padding,side", [
    ((1, 1), "same", 3), ((3, 3), "same", 3), ((1, 3), "same", 8), ((3, 1), "valid", 8), ((2, 2), "same", 5),
    ((4, 4), "same", 6), ((5, 5), "valid", 7), ((1, 1), "valid", 20),
])
def test_kernel_gradient_is_tensorflows_and_the_rest_is_unchanged(kernel, padding, side):
    native, product = _pair(kernel, padding)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, side, side, 6)).astype("float32"))
    y0, dx0, dk0, db0 = _forward_and_grads(native, x)
    y1, dx1, dk1, db1 = _forward_and_grads(product, x)
    np.testing.assert_array_equal(y1, y0)  # the forward is Keras's own op
    np.testing.assert_array_equal(dx1, dx0)  # the input's gradient is the op TensorFlow's gradient runs
    np.testing.assert_array_equal(db1, db0)
    np.testing.assert_allclose(dk1, dk0, rtol=1e-5, atol=1e-5 * np.abs(dk0).max())
    assert not np.array_equal(dk1, 0)


def _gradient_ops(layer, x) -> set:
    """The op types of the kernel gradient's graph."""
    fn = tf.function(lambda x: tf.gradients(tf.reduce_sum(layer(x)), [layer.kernel])[0])
    return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}


def test_larger_kernels_on_larger_maps_and_xla_steps_keep_tensorflows_gradient():
    native, product = _pair((3, 3), "same")
    big = tf.constant(np.random.default_rng(1).normal(size=(2, 9, 9, 6)).astype("float32"))  # 81 > 64 positions
    assert 9 * 9 > conv_grads.MAX_PATCH_POSITIONS
    for a, b in zip(_forward_and_grads(native, big), _forward_and_grads(product, big)):
        np.testing.assert_array_equal(b, a)
    assert "Conv2DBackpropFilter" in _gradient_ops(product, big)
    small = tf.constant(np.random.default_rng(2).normal(size=(2, 4, 4, 6)).astype("float32"))
    with conv_grads.native_gradients():
        exact = _forward_and_grads(product, small)
        assert "Conv2DBackpropFilter" in _gradient_ops(product, small)
    for a, b in zip(_forward_and_grads(native, small), exact):
        np.testing.assert_array_equal(b, a)
    ops = _gradient_ops(product, small)  # outside the context: the product again
    assert "ExtractImagePatches" in ops and "MatMul" in ops and "Conv2DBackpropFilter" not in ops


def test_install_touches_only_trainable_plain_stride_1_convolutions():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="strided")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="frozen")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2, name="dilated")(x)
    x = keras.layers.Conv2D(4, 1, name="plain")(x)
    model = keras.Model(inputs, x)
    model.get_layer("frozen").trainable = False
    assert conv_grads.install(model) == 1
    patched = [layer.name for layer in model.layers if "convolution_op" in vars(layer)]
    assert patched == ["plain"]
    model.get_layer("frozen").trainable = True  # a later stage unfreezes it: installed then, once
    assert conv_grads.install(model) == conv_grads.install(model) == 2


def test_off_where_it_was_not_measured(monkeypatch):
    monkeypatch.setenv("INCEPTUNE_CONV_GRADS", "native")
    conv_grads._cpu_only.cache_clear()
    try:
        layer = keras.layers.Conv2D(2, 1)
        layer.build((None, 3, 3, 2))
        assert conv_grads.install(keras.Sequential([layer])) == 0
        assert "convolution_op" not in vars(layer)
    finally:
        monkeypatch.delenv("INCEPTUNE_CONV_GRADS")
        conv_grads._cpu_only.cache_clear()


def test_a_stage_installs_it_and_the_saved_model_is_plain_keras(tmp_path):
    from inceptune.architectures import build_inception_mini
    from inceptune.heads import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(build_inception_mini(), 3, {})
    recipe = load_recipe({"data": {"dir": str(tmp_path)}, "model": {"backbone": "inception_mini"},
                          "stages": [{"name": "top", "train": "head,from:mixed3", "epochs": 1}]})
    compile_stage(model, recipe.stages[0], batchnorm="frozen")
    patched = {layer.name for layer in model._flatten_layers() if "convolution_op" in vars(layer)}
    trained_convs = {layer.name for layer in model._flatten_layers()
                     if conv_grads.eligible(layer) and layer.trainable}
    assert patched == trained_convs and patched
    x = np.random.default_rng(0).uniform(0, 255, size=(8,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert not any("convolution_op" in vars(layer) for layer in loaded._flatten_layers())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
