"""The one compiled forward used by cache, predict and evaluate.

``compiled_forward`` wraps ``model(x, training=False)`` in a ``tf.function`` traced once for any batch size and
cached per model; ``predict_proba`` runs a model batch by batch through it. A compiled call ran about twice the
images per second of ``model.predict`` (DESIGN §11; ``benchmarks/predict_path.py``). The feature cache
(``cache.py``) uses the same function for its prefix and suffix models, prediction (``prediction.py``) and
evaluation (``evaluate.py``, ``cv.py``) go through ``predict_proba``.

Importing this module does not import TensorFlow; the functions do when called.

Example:
    probs = predict_proba(model, images, batch_size=32)   # np.ndarray (N, C), float32
    forward = compiled_forward(model)                      # forward(x) == model(x, training=False)
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np

from inceptune.errors import DataError

__all__ = ["compiled_forward", "predict_proba", "one_pass_graphs"]

# model -> compiled tf.function; weak keys so a deleted model frees its function (the function holds only a
# weak reference back to the model, otherwise the value would keep its own key alive).
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def one_pass_graphs():
    """Inside, functions first called on a CPU-only machine skip TensorFlow's graph optimizer (Grappler).

    For a function that runs one pass and is dropped, such as the feature cache's prefix: Grappler took 1.1-1.6 s
    on InceptionV3's forward at 150 px and left its speed unchanged (0.806 s a batch of 32 either way, measured
    here), and the outputs are bit-identical to eager ones. A function's graph is optimized once, at its first
    call, under the options of that moment: a call after the block, with Grappler back on, optimizes it again.
    GPUs keep Grappler (its layout pass matters there).
    """
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        yield
        return
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": bool(before.get("disable_meta_optimizer", False))})


def compiled_forward(model):
    """Returns a compiled inference function ``x -> model(x, training=False)``, cached per model.

    A single-input model gets one trace for every batch size (an input signature whose batch dimension is
    None); other models are traced with ``reduce_retracing``. The function refers to the model weakly, so the
    caller must keep the model alive while using it; deleting the model frees the function.

    Args:
        model: keras.Model. Any functional model (several outputs allowed: the function returns them all).

    Returns:
        tf.function. The same object on every call with the same model.
    """
    import tensorflow as tf

    fn = _COMPILED.get(model)
    if fn is None:
        ref = weakref.ref(model)
        inputs = getattr(model, "inputs", None) or []
        if len(inputs) == 1:
            # one trace for every batch size (reduce_retracing would trace twice: the first batch's exact
            # shape, then a relaxed one at the first smaller batch; each trace of InceptionV3 costs 2-4 s here)
            signature = [tf.TensorSpec((None,) + tuple(inputs[0].shape[1:]), inputs[0].dtype)]
            _forward = tf.function(lambda x: ref()(x, training=False), input_signature=signature)
        else:
            _forward = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True)

        _COMPILED[model] = fn = _forward
    return fn


def predict_proba(model, data, batch_size: int = 32, progress=None, forward=None) -> np.ndarray:
    """Runs ``model`` in inference mode, batch by batch, through one cached ``tf.function``.

    This is the fast path: a compiled call of ``model(x, training=False)`` ran about twice the images per
    second of ``model.predict`` (DESIGN §11; ``benchmarks/predict_path.py``). The compiled function is cached
    per model (``compiled_forward``), so repeated calls do not retrace.

    Args:
        model: keras.Model. Single-input classifier (its preprocessing inside).
        data: numpy array (N, H, W, 3) of raw pixels, or a ``tf.data.Dataset`` yielding images or
            ``(images, labels[, weights])``, batched or not (unbatched datasets are batched here).
        batch_size: int. Batch size for arrays and unbatched datasets. Defaults to 32.
        progress: callable or None. Called with the number of images of each batch done (e.g. a
            `progress.Bar`'s `update`). Defaults to None.
        forward: callable or None. Used instead of ``compiled_forward(model)`` on each batch (test-time
            augmentation passes one that runs every view through the compiled forward, ``tta.tta_proba``).
            Defaults to None.

    Returns:
        np.ndarray of float32, shape (N, C) (or (N, ...) as ``forward`` returns it). The model outputs
        (probabilities for a softmax head).

    Raises:
        DataError: ``batch_size`` < 1, or a dataset of dicts.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size: expected an integer >= 1, received batch_size={batch_size}.")
    forward = forward or compiled_forward(model)
    input_rank = len(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    dtype = _input_dtype(model)
    outputs = []

    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        image_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
        if isinstance(spec, dict):
            raise DataError(
                "predict_proba: expected a dataset of images or (images, labels[, weights]) tuples, received a "
                f"dataset of dicts with keys {sorted(spec)}."
            )
        if isinstance(spec, (tuple, list)):
            data = data.map(lambda *el: el[0])
        if input_rank is not None and image_spec.shape.rank == input_rank - 1:
            data = data.batch(batch_size)
        for batch in data:
            outputs.append(forward(tf.cast(batch, dtype)).numpy())
            if progress is not None:
                progress(len(outputs[-1]))
    else:
        array = np.asarray(data)
        if input_rank is not None and array.ndim == input_rank - 1:
            array = array[None]
        for start in range(0, len(array), batch_size):
            batch = tf.convert_to_tensor(array[start : start + batch_size], dtype=dtype)
            outputs.append(forward(batch).numpy())
            if progress is not None:
                progress(len(outputs[-1]))

    if not outputs:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    return np.concatenate(outputs, axis=0).astype(np.float32, copy=False)


def _input_dtype(model) -> str:
    try:
        dtype = model.inputs[0].dtype
        return dtype if isinstance(dtype, str) else dtype.name
    except (AttributeError, IndexError, TypeError):
        return "float32"
