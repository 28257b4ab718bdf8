"""Adam's update in one TensorFlow kernel (training/fused_adam.py): Keras's arithmetic up to rounding, on the
optimizers and gradients it applies to, and a saved model that needs nothing of inceptune."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from inceptune.training import fused_adam


def _train(optimizer, steps=30, fuse=False):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if fuse:
        assert fused_adam.fuse(optimizer)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16 * steps, 8)).astype("float32"), rng.integers(0, 3, 16 * steps)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    return model, [np.asarray(v) for v in optimizer.variables]


@pytest.mark.parametrize("make", [lambda: keras.optimizers.Adam(1e-2),
                                  lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.05)])
def test_one_kernel_update_is_kerass_adam_up_to_rounding(make):
    _, keras_state = _train(make())
    model, fused_state = _train(make(), fuse=True)
    step = tf.function(lambda: model.optimizer.update_step(tf.ones((3,)), model.layers[-1].bias.value, 0.1))
    assert "ResourceApplyAdam" in {op.type for op in step.get_concrete_function().graph.get_operations()}
    assert len(keras_state) == len(fused_state) > 2
    for a, b in zip(keras_state, fused_state):  # iterations, moments and the variables after 30 steps
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6 * max(1.0, np.abs(a).max()))
    moved = [np.abs(a).max() for a in keras_state[1:]]
    assert min(moved) > 0  # the moments moved: the comparison compares something


def test_not_for_amsgrad_or_other_optimizers():
    assert not fused_adam.fuse(keras.optimizers.Adam(amsgrad=True))
    assert not fused_adam.fuse(keras.optimizers.SGD())
    assert not fused_adam.fuse(keras.optimizers.Nadam())


def test_the_saved_model_needs_no_custom_object(tmp_path):
    model, _ = _train(keras.optimizers.Adam(1e-3), steps=2, fuse=True)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is keras.optimizers.Adam
    assert "update_step" not in vars(loaded.optimizer)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
