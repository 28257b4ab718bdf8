"""The Keras callbacks of a stage's epochs: the learning rate of every batch, and the epoch's progress bar."""

from __future__ import annotations

import keras

from inceptune.progress import Bar
from inceptune.schedules import ScheduleSpec

__all__ = ["LrSetter", "EpochBar"]


class EpochBar(keras.callbacks.Callback):
    """Feeds the epoch's progress bar (on a terminal only) from the batch callbacks: batches done, loss, accuracy."""

    def __init__(self, bar: Bar):
        super().__init__()
        self.bar = bar

    def on_train_batch_end(self, batch, logs=None):
        if self.bar.shown:
            self.bar.update(1, **{k: float(v) for k, v in (logs or {}).items() if k in ("loss", "accuracy")})


class LrSetter(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every batch from the stage's pure schedule."""

    def __init__(self, spec: ScheduleSpec, epoch: int, steps_per_epoch: int):
        super().__init__()
        self.spec, self.offset = spec, epoch * steps_per_epoch
        self.last = spec(self.offset)

    def on_train_batch_begin(self, batch, logs=None):
        self.last = self.spec(self.offset + batch)
        self.model.optimizer.learning_rate.assign(self.last)
