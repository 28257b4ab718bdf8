"""Loading models and their labels, and what prediction and evaluation read from a model or run folder.

``load_model`` loads a ``.keras`` file or a run folder with Keras's safe mode on; ``load_labels`` reads the
``labels.json`` stored with a model. ``resolve_model`` turns anything a user may pass (a ``keras.Model``, a
``training.Run``, a run folder, a ``.keras`` file) into ``(model, labels, run folder)``; ``model_labels``,
``input_size`` and ``run_resize`` give the class names, the image size and the resize mode to use with it.

Importing this module does not import Keras; ``load_model`` does when called.

Example:
    model = load_model("runs/flowers")        # RUN_DIR/model.keras, safe mode on
    labels = load_labels("runs/flowers")      # RUN_DIR/labels.json
    model, labels, run_dir = resolve_model("runs/flowers")
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading
from pathlib import Path

import numpy as np

from inceptune.errors import InceptuneError, ModelLoadError

__all__ = [
    "input_size",
    "load_labels",
    "load_model",
    "model_labels",
    "resolve_model",
    "run_resize",
    "trusted_models",
]


# === Loading ===

_TRUSTED = contextvars.ContextVar("inceptune_trusted_models", default=False)


@contextlib.contextmanager
def trusted_models(enabled: bool = True):
    """Within the block, ``load_model`` loads with Keras's safe mode off (the CLI's ``--trust-model``).

    Only for files you trust: a ``Lambda`` layer in a ``.keras`` file runs its Python code when the file loads.
    Outside the block, and by default, safe mode is on.
    """
    token = _TRUSTED.set(bool(enabled))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def keras_saving_skipsets() -> None:
    """Lets Keras's `.keras` saving and loading reuse its per-type attribute skip sets (this thread's).

    Keras 3 (`saving_lib.get_attr_skipset`, up to 3.15 at least) stores each set under
    `saving_attr_skipset_<type>` but looks it up under `saving_attr_skiplist_<type>`, so every layer it walks
    builds a throwaway `Layer()` to list its attributes: about 0.2 s of a save or a load of InceptionV3's 316
    layers (measured: save 0.91 -> 0.73 s, load 2.27 -> 2.06 s). Storing the same sets under the name it reads
    changes nothing in the file (the sets are `dir()` of a fresh object of the type, the same every time); where
    Keras reads its own cache, this finds it there and does nothing.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:
        return
    lookup = getattr(saving_lib, "get_attr_skipset", None)
    if lookup is None:
        return
    for kind in ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss"):
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            try:
                global_state.set_global_attribute(key, lookup(kind))
            except Exception:  # noqa: BLE001 - a Keras without this type: it builds the set itself, as before
                pass


_SKIP_LOCK = threading.Lock()


@contextlib.contextmanager
def initial_draws_skipped():
    """Within the block, Keras variables this thread creates start at zero instead of their initializer's draw.

    For a model whose every variable is loaded right after it is built (a backbone and its weights file): the
    draws would be overwritten unread. InceptionV3's 376 variables cost one eager random op each (glorot kernels)
    and one Keras `ops.zeros`/`ops.ones` each (BatchNorm), about 0.3 s of its 1.4-1.9 s build on 2 cores
    (`tests/test_architectures.py` checks the loaded weights are the same bits). Keras's loading refuses a file
    that lacks a layer's variables, so a zero cannot survive a load that succeeds. Other threads, and the
    TensorFlow backend's variables outside the block, are untouched; other backends build as before.
    """
    try:
        import tensorflow as tf
        from keras.src.backend.tensorflow import core
    except ImportError:
        yield
        return
    real = getattr(core.Variable, "_initialize_with_initializer", None)
    if real is None:  # a Keras without this hook: its initializers run, as before
        yield
        return
    owner = threading.get_ident()

    def zeros(self, initializer):
        if threading.get_ident() != owner:
            return real(self, initializer)
        return self._initialize(lambda: tf.zeros(self._shape, dtype=self._dtype))

    with _SKIP_LOCK:
        core.Variable._initialize_with_initializer = zeros
        try:
            yield
        finally:
            core.Variable._initialize_with_initializer = real


def load_model(path, *, compile: bool = False, safe_mode: bool | None = None):
    """Loads a Keras model from a ``.keras`` file or a run folder, with Keras's safe mode on.

    No pickle is involved: a ``.keras`` file is a zip of JSON (the architecture, read by Keras's deserializer)
    and HDF5 weights; safe mode refuses the one way such a file can carry code (a ``Lambda`` layer's Python
    bytecode). Legacy ``.h5`` models, SavedModels and anything else are refused.

    Args:
        path: str or Path. A ``.keras`` file, or a run folder holding ``model.keras`` (and ``labels.json``,
            which must then name every output).
        compile: bool. Restore the optimizer and loss too. Defaults to False (inference and evaluation).
        safe_mode: bool or None. False loads a trusted file whose ``Lambda`` layers hold Python code. Defaults to
            None: on, unless inside ``trusted_models()``.

    Returns:
        keras.Model.

    Raises:
        ModelLoadError: the path does not exist, is not a ``.keras`` file or run folder, the file is corrupt,
            safe mode refuses it (e.g. a ``Lambda`` holding Python code), or ``labels.json`` disagrees with it.
    """
    import keras

    path = Path(path)
    if not path.exists():
        raise ModelLoadError(
            f"load_model: {str(path)!r} does not exist; expected a .keras file or a run folder holding "
            "model.keras."
        )
    run_dir = None
    if path.is_dir():
        if (path / "model.keras").is_file():
            run_dir, path = path, path / "model.keras"
        elif (path / "saved_model.pb").is_file():
            raise ModelLoadError(
                f"load_model: {str(path)!r} is a TensorFlow SavedModel, an export for serving that Keras cannot "
                "load back as a trainable model; expected a .keras file or a run folder. HINT: pass the run "
                "folder or the .keras file it was exported from (or use tf.saved_model.load to serve it)."
            )
        else:
            raise ModelLoadError(
                f"load_model: the folder {str(path)!r} holds no model.keras; expected a .keras file or a run "
                "folder written by `inceptune train`."
            )
    elif path.suffix != ".keras":
        raise ModelLoadError(f"load_model: {str(path)!r} cannot be loaded: {_refusal_reason(path.suffix)}")

    safe = (not _TRUSTED.get()) if safe_mode is None else bool(safe_mode)
    keras_saving_skipsets()
    try:
        model = keras.saving.load_model(path, safe_mode=safe, compile=compile)
    except ValueError as err:
        if "safe_mode" in str(err) or "unsafe" in str(err).lower() or "lambda" in str(err).lower():
            raise ModelLoadError(
                f"load_model: Keras safe mode refused {str(path)!r}: it holds Python code (a Lambda layer) that "
                "would run on load, so it could do anything your account can. inceptune loads models with safe "
                "mode on. HINT: rebuild the model from stock Keras layers (or register the function with "
                "keras.saving.register_keras_serializable); only if you trust where the file comes from, pass "
                "--trust-model (Python: load_model(path, safe_mode=False)) to load it with safe mode off."
            ) from err
        raise ModelLoadError(f"load_model: {str(path)!r} is not a loadable .keras file: {err}") from err
    except Exception as err:  # corrupt zip, missing custom classes, ...
        raise ModelLoadError(
            f"load_model: {str(path)!r} is not a loadable .keras file ({type(err).__name__}: {err})."
        ) from err

    if run_dir is not None:
        labels = load_labels(run_dir)
        outputs = int(model.outputs[0].shape[-1])
        if labels is not None and len(labels) != outputs:
            raise ModelLoadError(
                f"load_model: {str(run_dir / 'labels.json')!r} names {len(labels)} classes but the model has "
                f"{outputs} outputs. HINT: the run folder is inconsistent; re-export or re-train it."
            )
    return model


def _refusal_reason(suffix: str) -> str:
    suffix = suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return (
            "legacy HDF5 files are not supported (Keras's safe mode does not cover them). HINT: in a trusted "
            "session, keras.models.load_model(path) then model.save('model.keras'), and pass the .keras file."
        )
    if suffix in (".tflite", ".onnx"):
        return (
            f"{suffix} files are inference exports, not Keras models. HINT: pass the .keras file or run folder "
            "they were exported from."
        )
    return (
        f"expected a .keras file or a run folder, received a file with suffix {suffix or '(none)'!r}. HINT: save "
        "the model with model.save('model.keras')."
    )


def load_labels(path) -> list[str] | None:
    """Reads the class names stored with a model: ``labels.json`` in a run or SavedModel folder, or beside a file.

    Args:
        path: str or Path. A ``labels.json`` file, a folder holding one, or an exported/saved model file
            (its sibling ``labels.json`` is read).

    Returns:
        list of str, or None when there is no ``labels.json``.

    Raises:
        ModelLoadError: the file is not a JSON list of unique strings (a ``{"labels": [...]}`` object is also
            accepted).
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "labels.json"
    elif path.name.endswith(".json"):
        candidate = path
    else:
        candidate = path.parent / "labels.json"
    if not candidate.is_file():
        return None
    return _read_labels_file(candidate)


def _read_labels_file(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"labels: {str(path)!r} is not readable JSON: {err}.") from err
    if isinstance(data, dict) and "labels" in data:
        data = data["labels"]
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise ModelLoadError(
            f"labels: {str(path)!r} must hold a JSON list of class names (strings), received "
            f"{type(data).__name__}: {str(data)[:80]}."
        )
    if len(set(data)) != len(data):
        raise ModelLoadError(f"labels: {str(path)!r} lists a class name twice: {data}.")
    return data


# === What prediction and evaluation read from a model ===


def resolve_model(model_or_path):
    """Returns the model, its labels and its run folder, whatever form the model is given in.

    Args:
        model_or_path: keras.Model, training.Run, or str/Path of a run folder or a ``.keras`` file (loaded with
            ``load_model``, safe mode on).

    Returns:
        (keras.Model, list of str or None, Path or None). The labels are the Run's, or the ``labels.json``
        beside the file (None when there is none, and for a bare model); the run folder is the Run's folder,
        the folder given, or the ``.keras`` file's folder (None for a bare model).

    Raises:
        ModelLoadError: the path cannot be loaded (see ``load_model``).
        InceptuneError: ``model_or_path`` is none of the accepted forms.
    """
    if hasattr(model_or_path, "model") and hasattr(model_or_path, "labels") and hasattr(model_or_path, "dir"):
        return model_or_path.model, list(model_or_path.labels), Path(model_or_path.dir)  # a training.Run
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        model = load_model(path)
        labels = load_labels(path)
        run_dir = path if path.is_dir() else path.parent
        return model, labels, run_dir
    if not hasattr(model_or_path, "inputs"):
        raise InceptuneError(
            f"predict: expected a keras.Model, a train.Run, a run folder or a .keras file, received "
            f"{type(model_or_path).__name__}."
        )
    return model_or_path, None, None


def model_labels(model, labels) -> list[str]:
    """Checks class names against a model's outputs.

    Args:
        model: keras.Model. A classifier with one output of C units.
        labels: list of str or None. Class names in output order; None gives ``"0", "1", ...``.

    Returns:
        list of str, length C.

    Raises:
        InceptuneError: ``labels`` does not name each of the C outputs.
    """
    outputs = int(model.outputs[0].shape[-1])
    if labels is None:
        return [str(i) for i in range(outputs)]  # no labels.json: the class index stands for the name
    labels = [str(x) for x in labels]
    if len(labels) != outputs:
        raise InceptuneError(
            f"predict: labels must name each of the model's {outputs} outputs, received {len(labels)} labels "
            f"{labels[:10]}. HINT: pass the run folder (its labels.json) or the right labels list."
        )
    return labels


def input_size(model, image_size=None) -> tuple[int, int]:
    """The (height, width) images are resized to before they go into ``model``.

    Args:
        model: keras.Model. Single-input image model.
        image_size: int, (height, width) or None. Defaults to None: the model's input size.

    Returns:
        tuple of 2 int.

    Raises:
        InceptuneError: ``image_size`` is None and the model accepts any image size.
    """
    if image_size is not None:
        return (int(image_size), int(image_size)) if np.isscalar(image_size) else tuple(int(s) for s in image_size)
    shape = tuple(model.inputs[0].shape[1:3])
    if any(s is None for s in shape):
        raise InceptuneError(
            f"predict: the model {model.name!r} accepts any image size ({tuple(model.inputs[0].shape)}), so the "
            "size to resize to is unknown. HINT: pass image_size=the size it was trained at."
        )
    return int(shape[0]), int(shape[1])


def run_resize(run_dir: Path | None) -> str:
    """The ``data.resize`` mode a run was trained with.

    Args:
        run_dir: Path or None. A run folder (its ``recipe.yaml`` is read).

    Returns:
        str. ``stretch``, ``crop`` or ``pad``: the recipe's ``data.resize``, else ``stretch`` (no run folder, no
        or an unreadable recipe, an unknown value).
    """
    if run_dir is None or not (run_dir / "recipe.yaml").is_file():
        return "stretch"
    try:
        import yaml

        raw = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
        value = (raw.get("data") or {}).get("resize", "stretch")
    except Exception:  # noqa: BLE001 - an unreadable recipe only loses the resize hint
        return "stretch"
    return value if value in ("stretch", "crop", "pad") else "stretch"
