"""The Keras callbacks of a stage's epochs: the learning rate of every batch, and the epoch's progress bar."""

from __future__ import annotations

import keras

from inceptune.progress import Bar
from inceptune.schedules import ScheduleSpec

__all__ = ["LrSetter", "EpochBar", "run_epoch"]


class EpochBar(keras.callbacks.Callback):
    """Feeds the epoch's progress bar (on a terminal only) from the batch callbacks: batches done, loss, accuracy."""

    def __init__(self, bar: Bar):
        super().__init__()
        self.bar = bar

    def on_train_batch_end(self, batch, logs=None):
        if self.bar.shown:
            self.bar.update(1, **{k: float(v) for k, v in (logs or {}).items() if k in ("loss", "accuracy")})


class LrSetter(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every batch from the stage's pure schedule: at the epoch's first
    batch, then whenever the schedule's value changes (a constant rate is one assignment per epoch, not one per
    batch)."""

    def __init__(self, spec: ScheduleSpec, epoch: int, steps_per_epoch: int):
        super().__init__()
        self.spec, self.offset = spec, epoch * steps_per_epoch
        self.last = spec(self.offset)
        self._set = None  # the value this epoch last assigned

    def on_train_batch_begin(self, batch, logs=None):
        self.last = self.spec(self.offset + batch)
        if self.last != self._set:
            self.model.optimizer.learning_rate.assign(self.last)
            self._set = self.last


def run_epoch(model, epoch: int, batches, step, validate, callbacks) -> dict:
    """One epoch in inceptune's own loop (where Keras's `fit` is not used): `step(batch)` for each batch between
    the callbacks' batch hooks, then `validate()`; returns the logs as `fit`'s history row.

    Args:
        model: the keras.Model whose metrics the steps update (reset at the start). epoch: int.
        batches: iterable of batches. step: callable(batch) -> dict of metrics (running means).
        validate: callable() -> dict of floats (prefixed `val_` in the logs). callbacks: list of callbacks.
    """
    cbs = keras.callbacks.CallbackList(list(callbacks), model=model)
    cbs.on_epoch_begin(epoch)
    model.reset_metrics()
    result = None
    for i, batch in enumerate(batches):
        cbs.on_train_batch_begin(i)
        result = step(batch)
        cbs.on_train_batch_end(i)
    logs = {k: float(v) for k, v in (result or model.get_metrics_result()).items()}
    logs.update({f"val_{k}": v for k, v in validate().items()})
    cbs.on_epoch_end(epoch, logs)
    return logs
