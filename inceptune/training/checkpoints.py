"""Checkpoints of a run folder: weights as a base file plus per-epoch changes, optimizer state, `state.json`.

`checkpoints/state.json` (`RunState`) is written last and names the files of the last complete epoch, so a run
killed at any moment resumes from a consistent set of files; files it no longer names are removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from inceptune._io import atomic_path, atomic_write_text
from inceptune.errors import InceptuneError

__all__ = ["RunState", "CheckpointWeights", "FileWriter", "save_optimizer", "load_optimizer", "link_or_copy",
           "epoch_seed", "STATE_VERSION"]

STATE_VERSION = 2  # 2: checkpoints are a base file plus per-epoch changes


class FileWriter:
    """Runs a run's checkpoint writes on one background thread, in the order they were given.

    An epoch's values are copied on the caller's thread (`v.numpy()`), then written while the next epoch
    computes: the files of one epoch, then its `state.json`, strictly in that order, so `state.json` still names
    only files that are complete. `flush` waits for every pending write and raises the first error one met (a
    full disk surfaces at the next epoch's checkpoint, or before any file is read back).

    With `background=False` every write runs at once on the caller's thread.
    """

    def __init__(self, background: bool = True):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="inceptune-checkpoints") if background else None
        self._pending: list = []
        self._failed: BaseException | None = None

    def __call__(self, fn, *args) -> None:
        if self._pool is None:
            fn(*args)
        else:
            self._pending.append(self._pool.submit(self._run, fn, args))

    def _run(self, fn, args) -> None:
        if self._failed is not None:  # nothing after a failed write runs: state.json must not outrun its files
            return
        try:
            fn(*args)
        except BaseException as exc:
            self._failed = exc
            raise

    def flush(self) -> None:
        """Waits for every pending write; raises the error of the first one that failed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()
        if self._failed is not None:
            raise self._failed

    def close(self) -> None:
        """Waits for the pending writes (without raising: an error was raised already or is moot) and stops."""
        for future in self._pending:
            future.exception()
        self._pending = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)


# the writer of callers that write checkpoints at once (tools reading and writing a run folder outside a run)
WRITE_NOW = FileWriter(background=False)


@dataclasses.dataclass
class RunState:
    """Where a run stands: the contents of `checkpoints/state.json`.

    Attributes:
        version: int. The format of the checkpoint files (`STATE_VERSION`).
        stage: int. Index of the stage that runs next (or is running). epoch: int. Its epochs already complete.
        n: int. Epochs complete in the whole run; checkpoint files are named by it.
        history: list of dict. One row per complete epoch (as `history.csv`).
        es_best, es_wait, es_weights: early stopping of the current stage: best value, epochs since it, and the
            weights file of the best epoch.
        best, best_weights, best_epoch: the run's best value of `run_monitor`, its weights file (becomes
            `model.keras`) and its epoch (counted over the whole run, as the rows of `history`).
        run_monitor: str. `val_loss`, or `loss` without a validation split.
        base, weights, optimizer: the weights base file, and the weights and optimizer files of the last epoch.
        ema_weights: str or None. The current stage's EMA of the weights at the last epoch (`stages[i].ema`), a
            weights file like the others; None between stages and without EMA.
        best_ema: bool. The best epoch's weights are its EMA weights (they scored better than the raw ones).
    """

    version: int = STATE_VERSION
    stage: int = 0
    epoch: int = 0
    n: int = 0
    history: list = dataclasses.field(default_factory=list)
    es_best: float | None = None
    es_wait: int = 0
    es_weights: str | None = None
    best: float | None = None
    best_weights: str | None = None
    run_monitor: str | None = None
    base: str | None = None
    weights: str | None = None
    optimizer: str | None = None
    best_epoch: int | None = None
    ema_weights: str | None = None
    best_ema: bool = False

    @classmethod
    def read(cls, folder: Path) -> RunState:
        """Reads `folder/state.json` (keys this version does not know are ignored)."""
        saved = json.loads((folder / "state.json").read_text())
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})

    def write(self, folder: Path, writer=WRITE_NOW) -> None:
        """Writes `folder/state.json` atomically, then removes the checkpoint files it no longer names (with a
        `FileWriter`: as its next write, with the state as it is now)."""
        text = json.dumps(dataclasses.asdict(self), indent=1, default=float)
        keep = {self.base, self.weights, self.optimizer, self.best_weights, self.es_weights, self.ema_weights,
                "state.json"}
        writer(_write_state, folder, text, keep)


def _write_state(folder: Path, text: str, keep: set) -> None:
    atomic_write_text(folder / "state.json", text)
    for p in folder.iterdir():
        if p.name not in keep and not p.name.startswith("tmp-"):
            p.unlink(missing_ok=True)


class CheckpointWeights:
    """Checkpointed weights: one full file (`base-N.weights.npz`, the weights at the run's first checkpoint),
    then per epoch only the variables whose values differ from it (`epoch-N.weights.npz`).

    Variables are stored by position in `model.weights`, not by name: Keras's automatic layer names depend on
    what the process built before, while the order of `model.weights` depends only on the graph (and `.npz`
    by position is about 2.5x faster than `save_weights` for InceptionV3). A frozen backbone never differs from
    the base, so an epoch of a head stage writes the head only (InceptionV3: 8 MB instead of 96 MB).

    What changed is found by comparing values with the base, for the variables that can move: those of layers
    that train in some stage since the base (BatchNorm statistics in training mode included), and every variable
    of a frozen layer whose type is not known to keep its variables fixed when frozen (random-generator states,
    custom state). Reading all of InceptionV3's variables each epoch would cost ~0.16 s more per checkpoint.
    """

    # Layer types whose variables cannot change while the layer is frozen (trainable=False).
    _STATIC_WHEN_FROZEN = ("BatchNormalization", "Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "DepthwiseConv2D",
                           "SeparableConv2D", "Dense", "EinsumDense", "LayerNormalization", "Embedding")

    def __init__(self, model, folder: Path, base: str | None = None, writer=None):
        self.model, self.folder, self.base_name = model, folder, base
        self.writer = writer if writer is not None else WRITE_NOW
        self._base: list | None = None
        self.watch: set[int] = set()

    def watch_stage(self) -> None:
        """Adds the variables that can change under the current trainable flags to the compared set."""
        position = {id(v): i for i, v in enumerate(self.model.weights)}
        for layer in self.model.layers:
            if layer.trainable or type(layer).__name__ not in self._STATIC_WHEN_FROZEN:
                self.watch.update(position[id(v)] for v in layer.weights if id(v) in position)

    def _base_values(self) -> list:
        if self._base is None:
            saved = np.load(self.folder / self.base_name)
            self._base = [saved[f"v{i}"] for i in range(len(saved.files))]
        return self._base

    def save(self, name: str, n: int) -> None:
        variables = self.model.weights
        if self.base_name is None:
            values = [v.numpy() for v in variables]
            self.base_name = f"base-{n}.weights.npz"
            self.writer(_savez, self.folder / self.base_name, {f"v{i}": a for i, a in enumerate(values)})
            self._base = values
        base = self._base_values()
        changed = {}
        for i in sorted(self.watch):
            value = variables[i].numpy()
            if not np.array_equal(value, base[i]):
                changed[f"v{i}"] = value
        self.writer(_savez, self.folder / name, changed)

    def load(self, name: str) -> None:
        """Restores the weights saved as `name` (the base plus that file's changes; a run folder written before
        the base existed holds full files)."""
        self.writer.flush()  # the file may still be pending
        variables = self.model.weights
        saved = np.load(self.folder / name)
        values = list(self._base_values()) if self.base_name else [None] * len(variables)
        for key in saved.files:
            i = int(key[1:])
            self.watch.add(i)  # it differed from the base once: keep comparing it
            if i >= len(variables):
                values = []
                break
            values[i] = saved[key]
        if len(values) != len(variables) or any(v is None for v in values):
            raise InceptuneError(
                f"checkpoint {self.folder / name} does not match the model ({len(variables)} variables): it was "
                f"written for another model. HINT: resume with the run's own recipe.yaml, or start a new run.")
        for var, value in zip(variables, values):
            var.assign(value)


def _savez(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def save_optimizer(optimizer, path: Path, writer=WRITE_NOW) -> None:
    """Writes the optimizer's variables (by position) to an `.npz` file, atomically (values copied now, the
    file written by `writer`)."""
    writer(_savez, path, {f"v{i}": v.numpy() for i, v in enumerate(optimizer.variables)})


def load_optimizer(optimizer, path: Path) -> None:
    """Restores the optimizer's variables written by `save_optimizer` (the optimizer must be built)."""
    saved = np.load(path)
    for i, var in enumerate(optimizer.variables):
        var.assign(saved[f"v{i}"])


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-links `src` to `dst` (checkpoint files are never modified in place), or copies it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def epoch_seed(seed: int, stage_index: int, epoch: int) -> int:
    """The seed of one epoch's shuffling and augmentation: a resumed run replays the same batches."""
    return (int(seed) * 1_000_003 + stage_index * 10_007 + epoch) % (2**31 - 1)
