"""Training: the staged fine-tuning runner and its parts.

The package, top to bottom: `runner` (`train`: the run as named steps over one `RunState`), `model` (the
classifier of a recipe and the compile step of each stage), `tracking` (best epoch, early stopping),
`checkpoints` (weights, optimizer state, `state.json`) and `records` (`log.txt`, `history.csv`, phase times).
"""

from inceptune.training.checkpoints import CheckpointWeights, RunState, epoch_seed
from inceptune.training.model import (build_model, compile_stage, make_optimizer, resolve_image_size,
                                      stage_lr_multipliers)
from inceptune.training.runner import Run, default_run_dir, train

__all__ = ["train", "Run", "default_run_dir", "build_model", "compile_stage", "make_optimizer", "stage_lr_multipliers",
           "resolve_image_size", "RunState", "CheckpointWeights", "epoch_seed"]
