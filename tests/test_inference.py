"""Tests for inceptune.inference: predict_proba equals the model's own outputs through one cached compiled
function per model, freed with the model."""

from __future__ import annotations

import gc
import weakref

import numpy as np

from inceptune import inference


def _tiny_model(num_classes=3):
    import keras

    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inp)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="tiny")


def test_predict_proba_matches_model_on_arrays_and_datasets():
    import tensorflow as tf

    model = _tiny_model()
    images = np.random.default_rng(0).integers(0, 256, size=(10, 16, 16, 3)).astype("float32")
    ref = model(images, training=False).numpy()
    got = inference.predict_proba(model, images, batch_size=4)
    assert got.shape == (10, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-6)
    labels = np.arange(10) % 3
    batched = tf.data.Dataset.from_tensor_slices((images.astype("uint8"), labels)).batch(3)
    np.testing.assert_allclose(inference.predict_proba(model, batched), ref, atol=1e-6)
    unbatched = tf.data.Dataset.from_tensor_slices(images)
    np.testing.assert_allclose(inference.predict_proba(model, unbatched, batch_size=6), ref, atol=1e-6)
    assert inference.predict_proba(model, images[:0]).shape == (0, 3)


def test_predict_proba_caches_one_function_per_model_and_frees_it():
    model = _tiny_model()
    images = np.zeros((8, 16, 16, 3), dtype="float32")
    inference.predict_proba(model, images, batch_size=4)
    fn = inference._COMPILED[model]
    traces = fn.experimental_get_tracing_count()
    inference.predict_proba(model, images, batch_size=4)
    inference.predict_proba(model, images[:4], batch_size=4)
    assert inference._COMPILED[model] is fn
    assert fn.experimental_get_tracing_count() == traces  # same shapes: no retrace
    # deleting the model frees it and its function (other tests' models may be collected at the same time, so
    # the dictionary's size says nothing: follow these two objects)
    model_ref, fn_ref = weakref.ref(model), weakref.ref(fn)
    del model, fn
    gc.collect()
    assert model_ref() is None and fn_ref() is None


def test_one_pass_graphs_turns_grappler_off_inside_only_with_the_same_outputs():
    """Inside the block a function's first call skips Grappler (on this CPU-only machine); its outputs are
    bit-identical to an optimized function's; the option is restored after the block, also after an error."""
    import pytest
    import tensorflow as tf

    model = _tiny_model()
    images = np.random.default_rng(1).integers(0, 256, size=(6, 16, 16, 3)).astype("float32")
    optimized = tf.function(lambda x: model(x, training=False))(images).numpy()
    assert not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    with inference.one_pass_graphs():
        assert tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"] is True
        plain = tf.function(lambda x: model(x, training=False))(images).numpy()
    assert not tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"]
    np.testing.assert_array_equal(plain, optimized)
    with pytest.raises(RuntimeError), inference.one_pass_graphs():
        raise RuntimeError("a failed pass")
    assert not tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"]
