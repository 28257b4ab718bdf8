"""inceptune: transfer learning with Inception-family classifiers on Keras 3.

Example:
    >>> import inceptune as it
    >>> base = it.load_backbone("inception_v3", weights="imagenet", image_size=299)
    >>> report = it.freeze(base, "through:mixed7")
    >>> model = it.build_classifier(base, num_classes=5, head={"dense": [1024], "dropout": 0.2})

Names are imported lazily (PEP 562), so `import inceptune` and the CLI's `--help` do not load TensorFlow.

Importing inceptune sets `TF_CPP_MIN_LOG_LEVEL=2` unless it is set already: TensorFlow's C++ code then prints
errors but no INFO or WARNING lines (its start-up `cpu_feature_guard ... AVX2 FMA` notice and the
`absl::InitializeLog()` preamble that comes with the first line; TensorFlow 2.21 sends some of these past the
variable, and the first `import tensorflow` after `import inceptune` holds them back to the same level). It must be
set before TensorFlow is first imported; set it yourself (e.g. to 0) to see everything.

On x86-64 it also sets `TF_ENABLE_ONEDNN_OPTS=1` unless it is set already (or TensorFlow is already imported):
TensorFlow's oneDNN kernels, which it turns on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX, train the
unfrozen convolutional blocks about twice as fast as its default kernels elsewhere. Set it to 0 to keep those.
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
import platform as _platform
import sys as _sys

# 2: TensorFlow's C++ logging keeps ERROR and FATAL, drops INFO and WARNING (1 would keep its warnings, such as the
# "Local rendezvous is aborting ..." line that repeats an error Python raises anyway). A user's own value wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow 2.21 prints some start-up lines through absl, which ignores that variable: the first `import tensorflow`
# runs with stderr held and gives back the lines the level keeps (inceptune/_tf_logs.py)
_importlib.import_module("inceptune._tf_logs").install()
# oneDNN's kernels for TensorFlow's CPU ops: TensorFlow turns them on by default only where the CPU reports AVX-512
# VNNI/BF16 or AMX instructions; on other x86-64 CPUs (AVX2 machines, VMs that hide AVX-512) it runs Eigen's, whose
# convolution gradients take twice as long (benchmarks/onednn.py: a cached stage's mixed9-mixed10 steps). Read once,
# when TensorFlow loads: no effect if it is already imported. A user's own value wins (0 keeps Eigen's kernels).
if "tensorflow" not in _sys.modules and _platform.machine().lower() in ("x86_64", "amd64"):
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

# public name -> module that defines it (None: the name is the module itself). No module is named like a function
# exported here, so importing a submodule never replaces a function of the package.
_EXPORTS = {
    "ARCHITECTURES": "architectures",
    "ArchSpec": "architectures",
    "block_map": "architectures",
    "load_backbone": "architectures",
    "blocks": None,
    "FreezeReport": "freezing",
    "freeze": "freezing",
    "unfreeze": "freezing",
    "select": "selectors",
    "build_classifier": "heads",
    "train": "training",
    "Run": "training",
    "lr_find": "lr_range",
    "LrFindResult": "lr_range",
    "predict": "prediction",
    "Predictions": "prediction",
    "evaluate_data": "evaluate",
    "Evaluation": "evaluate",
    "cross_validate": "cv",
    "run_demo": "demo",
    "export_model": "export",
    "load_model": "models",
    "add_skip": "surgery",
    "insert_after": "surgery",
    "replace_head": "surgery",
    "InceptuneError": "errors",
    "DataError": "errors",
    "RecipeError": "errors",
    "SelectorError": "errors",
    "SurgeryError": "errors",
    "ModelLoadError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inceptune' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = _importlib.import_module(f"inceptune.{name}" if module is None else f"inceptune.{module}")
    if module is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(__all__) | {"__version__"})
