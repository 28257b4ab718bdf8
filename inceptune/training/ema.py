"""An exponential moving average (EMA) of a stage's trainable weights (`stages[i].ema`), as timm's `--model-ema`.

After every training step, `ema = decay * ema + (1 - decay) * weights` for each trainable variable; the average
starts at the weights the stage starts from. The runner evaluates the averaged weights on the validation split
after every epoch (`val_ema_loss`, `val_ema_accuracy` in `history.csv`), keeps them as the run's best model when
they beat every epoch so far, and checkpoints them each epoch (a weights file named in `state.json`), so a
resumed run continues the same average. Training itself always continues from the raw weights.

BatchNorm moving statistics are not averaged (they are not trainable weights); under the default `frozen`
BatchNorm policy they do not change anyway.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

__all__ = ["WeightEMA", "EmaCallback"]


class WeightEMA:
    """The moving average of `variables`.

    Args:
        variables: list of Keras variables (the stage's trainable weights).
        decay: float in (0, 1).
    """

    def __init__(self, variables, decay: float):
        self.variables, self.decay = list(variables), float(decay)
        self.averages = [keras.Variable(v.numpy(), dtype=v.dtype, trainable=False, name=f"ema_{i}")
                         for i, v in enumerate(self.variables)]
        self._step = None

    def reset(self) -> None:
        """Starts the average at the variables' current values."""
        for a, v in zip(self.averages, self.variables):
            a.assign(v.numpy())

    def update(self) -> None:
        """One step of the average (a compiled function on TensorFlow: one call per batch, traced once)."""
        if self._step is None:
            d = self.decay

            def step():
                for a, v in zip(self.averages, self.variables):
                    a.assign(d * a + (1.0 - d) * keras.ops.convert_to_tensor(v))

            self._step = step
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                self._step = tf.function(step)
        self._step()

    def values(self) -> list[np.ndarray]:
        return [a.numpy() for a in self.averages]

    @contextlib.contextmanager
    def applied(self):
        """Within the block the variables hold the averaged weights; the raw weights come back afterwards."""
        raw = [v.numpy() for v in self.variables]
        for v, a in zip(self.variables, self.averages):
            v.assign(a.numpy())
        try:
            yield
        finally:
            for v, value in zip(self.variables, raw):
                v.assign(value)


class EmaCallback(keras.callbacks.Callback):
    """Updates a `WeightEMA` after every training batch (in `fit` and in the cached-feature loop alike)."""

    def __init__(self, ema: WeightEMA):
        super().__init__()
        self.ema = ema

    def on_train_batch_end(self, batch, logs=None):
        self.ema.update()
