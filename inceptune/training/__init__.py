"""Training: the staged fine-tuning runner and its parts.

The package, top to bottom: `runner` (`train`: the run as named steps over one `RunState`), `model` (the
classifier of a recipe and the compile step of each stage; `fused_adam`: Adam's update in one kernel),
`callbacks` (per-batch learning rate, the epoch's progress bar), `tracking` (best epoch, early stopping),
`checkpoints` (weights, optimizer state, `state.json`) and `records` (`log.txt`, `history.csv`, phase times).

Names are imported lazily, so `from inceptune.training import train` does not import Keras until a run builds
its model.
"""

import importlib as _importlib

# public name -> module of the package that defines it
_EXPORTS = {
    "train": "runner", "Run": "runner", "default_run_dir": "runner", "check_model_section": "runner",
    "build_model": "model", "compile_stage": "model", "make_optimizer": "model", "stage_lr_multipliers": "model",
    "resolve_image_size": "model",
    "RunState": "checkpoints", "CheckpointWeights": "checkpoints", "epoch_seed": "checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inceptune.training' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"inceptune.training.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(__all__) | {m for m in _EXPORTS.values()})
