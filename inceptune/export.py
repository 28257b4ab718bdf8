"""Export a classifier to ``.keras``, TF SavedModel, TFLite (LiteRT) or ONNX, and verify it.

The model given carries its preprocessing (a ``Rescaling`` layer named ``preprocess`` at the input), so every
export takes raw 0-255 RGB pixels as float32, shape ``(batch, H, W, 3)``. A ``labels.json`` (a JSON list of
class names in output order) is written beside the export (inside the folder for a SavedModel).

Each export is written under a temporary name, loaded back with its own runtime (Keras in safe mode,
``tf.saved_model.load``, the LiteRT interpreter, onnxruntime) and compared with the Keras model on a few
images: the top-1 classes must agree and the largest absolute difference of the outputs must stay under
``atol``. Only then is it moved into place. An existing output is never replaced without ``force=True``.

| format | output | converter | runtime used to verify |
|---|---|---|---|
| ``keras`` | ``.keras`` file | ``model.save`` | ``keras.saving.load_model(safe_mode=True)`` |
| ``savedmodel`` | folder | ``model.export(format="tf_saved_model")`` | ``tf.saved_model.load(...).serve`` |
| ``tflite`` | ``.tflite`` file | ``TFLiteConverter.from_saved_model`` (builtin ops) | ``ai_edge_litert`` |
| ``onnx`` | ``.onnx`` file | ``model.export(format="onnx")`` (needs ``onnx``, ``tf2onnx``) | ``onnxruntime`` |

The output path: a file format whose ``out`` does not end in the format's extension gets it appended
(``exports/model`` becomes ``exports/model.keras``, ``.tflite`` or ``.onnx``; ``m.h5`` becomes ``m.h5.keras``);
a SavedModel is the folder ``out``, named as given. ``export_model`` returns the path actually written.

Loading a model or its labels back is ``models.load_model`` / ``models.load_labels``.

Example:
    path = export_model(model, "out/flowers.tflite", format="tflite", labels=["daisy", "rose"])
    check = verify_export(path, "tflite", model)
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inceptune._io import atomic_write_json
from inceptune.errors import InceptuneError, closest
from inceptune.models import load_labels

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "ExportCheck",
    "export_model",
    "export_path",
    "verify_export",
]

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
_INSTALL_HINT = 'HINT: pip install "inceptune[export]"'
# The extension a file format's output always ends with (appended when missing); a SavedModel is a folder.
EXTENSIONS = {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx"}
# Packages each format needs beyond Keras + TensorFlow: (converter packages, runtime packages).
_NEEDS = {
    "keras": ((), ()),
    "savedmodel": ((), ()),
    "tflite": ((), ()),  # converter in TensorFlow; runtime ai-edge-litert, else the deprecated tf.lite.Interpreter
    "onnx": (("onnx", "tf2onnx"), ("onnxruntime",)),
}


# === Export ===


@dataclasses.dataclass(frozen=True)
class ExportCheck:
    """How an export compares with the Keras model it came from.

    Attributes:
        format: str. The export format.
        path: Path. The file or folder checked.
        num_images: int. Images compared.
        top1_agree: int. Images whose top-1 class is the same in both (near-ties within ``tie_tol`` count as
            agreeing).
        max_abs_diff: float. Largest absolute difference between the two output arrays.
        atol: float. Largest difference accepted.
    """

    format: str
    path: Path
    num_images: int
    top1_agree: int
    max_abs_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        """True when every top-1 agrees and ``max_abs_diff <= atol``."""
        return self.top1_agree == self.num_images and self.max_abs_diff <= self.atol

    def __str__(self) -> str:
        return (
            f"{self.format}: top-1 agrees on {self.top1_agree}/{self.num_images} images, "
            f"max abs diff {self.max_abs_diff:.3g} (limit {self.atol:g}) -> {'OK' if self.ok else 'MISMATCH'}"
        )


def export_model(
    model,
    out,
    format: str = "keras",
    *,
    labels: Sequence[str] | None = None,
    verify_images=None,
    verify: bool = True,
    atol: float = 1e-3,
    force: bool = False,
) -> Path:
    """Exports ``model`` in one format, verifies it with its own runtime, and writes ``labels.json`` beside it.

    Args:
        model: keras.Model. Single-input classifier whose preprocessing is inside (takes raw 0-255 RGB).
        out: str or Path. Output: a ``.keras``, ``.tflite`` or ``.onnx`` file (the extension is appended when
            ``out`` lacks it: ``exports/model`` -> ``exports/model.tflite``), or a SavedModel folder.
        format: str. One of ``FORMATS``: "keras", "savedmodel", "tflite", "onnx". Defaults to "keras".
        labels: list of str or None. Class names in output order, written to ``labels.json`` (beside a file,
            inside a SavedModel folder). Defaults to None (no labels file).
        verify_images: array (N, H, W, 3) of raw 0-255 pixels, or None. Images for the check; None uses 4
            seeded random images of the model's input size. Defaults to None.
        verify: bool. Load the export back and compare it with ``model``. Defaults to True.
        atol: float. Largest absolute output difference accepted by the check. Defaults to 1e-3.
        force: bool. Replace an existing output (and a differing ``labels.json``). Defaults to False.

    Returns:
        Path. The export written (file or folder): ``export_path(out, format)``.

    Raises:
        InceptuneError: unknown format, output exists without ``force``, a converter or runtime is not
            installed (with the pip command), labels of the wrong length, or the check failed.
    """
    format = _check_format(format)
    out = export_path(out, format)
    labels, labels_path = _check_export_args(model, out, format, labels, force)
    _require_packages(format, runtime=verify)
    images = _verify_images(model, verify_images) if verify else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}{EXTENSIONS.get(format, '')}"  # Keras insists on it
    _remove(tmp)
    try:
        _convert(model, tmp, format, images)
        if verify:
            check = verify_export(tmp, format, model, images, atol=atol)
            if not check.ok:
                raise InceptuneError(
                    f"export: the {format} export does not reproduce the Keras model: {check}. "
                    "HINT: report this with the model summary; a larger atol accepts small numeric drift."
                )
        if out.exists():  # only reachable with force=True
            _remove(out)
        os.replace(tmp, out)
    finally:
        _remove(tmp)
    if labels is not None:
        atomic_write_json(labels_path, labels)
    return out


def export_path(out, format: str) -> Path:
    """The path ``export_model(model, out, format)`` writes: ``out`` with the format's extension appended when it
    lacks it (``exports/model`` -> ``exports/model.keras``); a SavedModel folder is ``out`` itself."""
    out = Path(out)
    ext = EXTENSIONS.get(_check_format(format))
    if ext and (out.is_dir() or out.name in ("", "..")):  # "exports/" meant as a folder: not exports.keras
        raise InceptuneError(
            f"export: out={str(out)!r} is a folder; the {format} format writes one file. "
            f"HINT: name the file, e.g. out={str(out / ('model' + ext))!r}."
        )
    return out.with_name(out.name + ext) if ext and not out.name.endswith(ext) else out


def _check_export_args(model, out: Path, format: str, labels, force: bool) -> tuple[list[str] | None, Path]:
    """Refuses an export that would overwrite something or mislabel the model. Returns (labels, labels path)."""
    if out.exists() and not force:
        raise InceptuneError(
            f"export: {str(out)!r} already exists; an export never replaces a file or folder silently. "
            "HINT: choose another --out, or pass force=True (--force) to replace it."
        )
    num_classes = int(model.outputs[0].shape[-1])
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != num_classes:
            raise InceptuneError(
                f"export: labels must name each of the model's {num_classes} outputs, received {len(labels)} "
                f"labels {labels}."
            )
    labels_path = _labels_path_for(out, format)
    if labels is not None and labels_path.exists() and not force:
        existing = load_labels(labels_path)
        if existing != labels:
            raise InceptuneError(
                f"export: {str(labels_path)!r} already exists with other labels {existing}, received {labels}. "
                "HINT: export into another folder, or pass force=True to replace it."
            )
    if not any(layer.name == "preprocess" for layer in model.layers):
        warnings.warn(
            f"export: model {model.name!r} has no layer named 'preprocess'; the export takes whatever input the "
            "model takes, not necessarily raw 0-255 RGB pixels",
            UserWarning,
            stacklevel=3,
        )
    return labels, labels_path


def verify_export(path, format: str, model, images=None, *, atol: float = 1e-3, tie_tol: float = 1e-4) -> ExportCheck:
    """Loads an export with its own runtime and compares its outputs with the Keras model on ``images``.

    Args:
        path: str or Path. The export.
        format: str. One of ``FORMATS``.
        model: keras.Model. The reference model.
        images: array (N, H, W, 3) of raw 0-255 pixels, or None for 4 seeded random images. Defaults to None.
        atol: float. Largest absolute output difference accepted. Defaults to 1e-3.
        tie_tol: float. A top-1 disagreement where the Keras model's two scores differ by less than this is a
            near-tie, not a mismatch. Defaults to 1e-4.

    Returns:
        ExportCheck. ``check.ok`` tells whether it passed; ``str(check)`` says by how much.
    """
    format = _check_format(format)
    _require_packages(format, runtime=True, converter=False)
    images = _verify_images(model, images)
    reference = np.asarray(model(images, training=False), dtype=np.float32)
    got = np.asarray(_RUNNERS[format](Path(path), images), dtype=np.float32).reshape(reference.shape)
    ref_top, got_top = reference.argmax(1), got.argmax(1)
    rows = np.arange(len(images))
    gap = reference[rows, ref_top] - reference[rows, got_top]
    agree = int(np.sum((ref_top == got_top) | (gap < tie_tol)))
    return ExportCheck(
        format=format,
        path=Path(path),
        num_images=len(images),
        top1_agree=agree,
        max_abs_diff=float(np.abs(reference - got).max()),
        atol=float(atol),
    )


def _check_format(format: str) -> str:
    if format not in FORMATS:
        near = closest(str(format), FORMATS)
        hint = f" HINT: did you mean {near[0]!r}?" if near else ""
        raise InceptuneError(f"export: format must be one of {list(FORMATS)}, received format={format!r}.{hint}")
    return format


def _require_packages(format: str, *, runtime: bool, converter: bool = True) -> None:
    conv, run = _NEEDS[format]
    wanted = (list(conv) if converter else []) + (list(run) if runtime else [])
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        raise InceptuneError(
            f"export: the {format} format needs the Python packages {wanted}; missing: {missing}. "
            f"{_INSTALL_HINT} (or pip install {' '.join(missing)})."
        )


def _verify_images(model, images):
    if images is not None:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        return images
    shape = tuple(model.inputs[0].shape[1:])
    if any(dim is None for dim in shape):
        raise InceptuneError(
            f"export: the model input has an unknown size {shape}, so no check images can be generated. "
            "HINT: pass verify_images=an array of a few real images of the size the model expects."
        )
    rng = np.random.default_rng(0)
    # Random noise at four brightness levels so the images are not alike.
    base = rng.uniform(0, 255, size=(4, *shape))
    return (base * np.array([0.25, 0.5, 0.75, 1.0])[:, None, None, None]).astype(np.float32)


def _convert(model, tmp: Path, format: str, images=None) -> None:
    if format == "keras":
        from inceptune.models import keras_saving_skipsets

        keras_saving_skipsets()
        model.save(tmp)
    elif format == "savedmodel":
        with _quiet():
            model.export(str(tmp), format="tf_saved_model", verbose=False)
    elif format == "tflite":
        import tensorflow as tf

        with tempfile.TemporaryDirectory(prefix="inceptune-export-") as work, _quiet():
            saved = os.path.join(work, "saved_model")
            model.export(saved, format="tf_saved_model", verbose=False)
            # Builtin ops only: Keras's own format="litert" silently adds SELECT_TF_OPS, which plain LiteRT
            # runtimes cannot run (DESIGN §11).
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            data = converter.convert()
        tmp.write_bytes(data)
    elif format == "onnx":
        # Keras's ONNX exporter refuses a model that was never called ("The model provided has never called").
        if images is None:
            images = _verify_images(model, None)
        model(images[:1], training=False)
        try:
            with _quiet():
                model.export(str(tmp), format="onnx", verbose=False)
        except ModuleNotFoundError as err:  # converters imported lazily inside Keras
            raise InceptuneError(
                f"export: the onnx format needs the packages onnx and tf2onnx; importing failed with {err}. "
                f"{_INSTALL_HINT}"
            ) from err


@contextlib.contextmanager
def _quiet():
    """Silences the converters' deprecation chatter (warnings only; errors still propagate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# === Runtimes used to verify ===


def _run_keras(path: Path, images: np.ndarray) -> np.ndarray:
    import keras

    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    return np.asarray(loaded(images, training=False))


def _run_savedmodel(path: Path, images: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return loaded.serve(tf.constant(images)).numpy()


def _run_tflite(path: Path, images: np.ndarray) -> np.ndarray:
    interpreter = _tflite_interpreter(path)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(inp["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _tflite_interpreter(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with _quiet():  # tf.lite.Interpreter is deprecated in favour of ai-edge-litert
            return tf.lite.Interpreter(model_path=str(path))
    return Interpreter(model_path=str(path))


def _run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


_RUNNERS = {"keras": _run_keras, "savedmodel": _run_savedmodel, "tflite": _run_tflite, "onnx": _run_onnx}


# === Files ===


def _labels_path_for(out: Path, format: str) -> Path:
    return out / "labels.json" if format == "savedmodel" else out.parent / "labels.json"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
