"""Learning-rate schedules as pure functions of the step (STYLE.md §8), and per-variable learning rates.

The trainer sets the optimizer's learning rate before every batch from `lr_at(step, ...)`, so the
optimizer's `learning_rate` stays a plain variable (a saved model needs no custom schedule class), and a
resumed run continues the schedule from its global step.
"""

from __future__ import annotations

import math

from inceptune.choices import SCHEDULES

__all__ = ["lr_at", "ScheduleSpec", "scale_updates"]


class ScheduleSpec:
    """The schedule of one stage, in steps.

    Args:
        base_lr: float. Peak learning rate (after warmup).
        schedule: "constant", "cosine" or "exponential".
        total_steps: int. Steps in the stage.
        warmup_steps: int. Linear warmup from 0 to base_lr. Defaults to 0.
        decay_steps: int or None. Exponential: steps per decay period (Keras's `ExponentialDecay`); cosine:
            length of the cosine after warmup. Defaults to one epoch / the rest of the stage.
        decay_rate: float. Exponential decay factor. Defaults to 0.9.
    """

    def __init__(self, base_lr: float, schedule: str = "constant", total_steps: int = 1, warmup_steps: int = 0,
                 decay_steps: int | None = None, decay_rate: float = 0.9, steps_per_epoch: int = 1):
        self.base_lr = float(base_lr)
        self.schedule = schedule
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        if decay_steps is None:
            decay_steps = steps_per_epoch if schedule == "exponential" else self.total_steps - self.warmup_steps
        self.decay_steps = max(int(decay_steps), 1)
        self.decay_rate = float(decay_rate)

    def __call__(self, step: int) -> float:
        return lr_at(step, self)


def lr_at(step: int, spec: ScheduleSpec) -> float:
    """The learning rate at 0-based `step` of a stage.

    - warmup: `base_lr * (step + 1) / warmup_steps` for the first `warmup_steps` steps;
    - constant: `base_lr`;
    - cosine: `0.5 * base_lr * (1 + cos(pi * t / decay_steps))`, t = steps after warmup, clipped at decay_steps;
    - exponential: `base_lr * decay_rate ** (t / decay_steps)` (Keras's `ExponentialDecay`, not staircase).

    Example:
        >>> lr_at(0, ScheduleSpec(1e-3, "cosine", total_steps=10))
        0.001
    """
    if step < spec.warmup_steps:
        return spec.base_lr * (step + 1) / spec.warmup_steps
    t = step - spec.warmup_steps
    if spec.schedule == "constant":
        return spec.base_lr
    if spec.schedule == "cosine":
        t = min(t, spec.decay_steps)
        return 0.5 * spec.base_lr * (1.0 + math.cos(math.pi * t / spec.decay_steps))
    if spec.schedule == "exponential":
        return spec.base_lr * spec.decay_rate ** (t / spec.decay_steps)
    raise ValueError(f"unknown schedule {spec.schedule!r}. Allowed: {', '.join(SCHEDULES)}.")


def scale_updates(optimizer, multipliers: dict, variables=()) -> None:
    """Scales the learning rate of individual variables (discriminative learning rates).

    Keras has no per-layer learning rate, and scaling gradients does nothing for Adam-like optimizers (their
    update is invariant to the gradient's scale). Keras 3 optimizers apply each variable's update through
    `update_step(gradient, variable, learning_rate)`; this wraps that method on this optimizer instance only, so
    variable `v` is updated with `learning_rate * multipliers[v.path]`. Works for every Keras optimizer; the
    optimizer's class and config are untouched (a saved model needs no custom object). Variables with a
    multiplier of 0 are also excluded from weight decay, so they stay bit-identical.

    Args:
        optimizer: a Keras 3 optimizer, not yet used.
        multipliers: dict variable path -> factor; missing variables use 1.
        variables: the model's trainable variables (to exclude multiplier-0 ones from weight decay).
    """
    mult = {k: float(v) for k, v in multipliers.items() if float(v) != 1.0}
    if not mult:
        return
    original = optimizer.update_step

    # The backend hands update_step its own variable objects (tf.Variable on TensorFlow): key them the
    # optimizer's way.
    keyed = {optimizer._var_key(v): mult[v.path] for v in variables if v.path in mult}

    def update_step(gradient, variable, learning_rate):
        factor = keyed.get(optimizer._var_key(variable), 1.0)
        if factor == 0.0:
            return None
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return original(gradient, variable, learning_rate)

    optimizer.update_step = update_step
    frozen = [v for v in variables if mult.get(v.path) == 0.0]
    if frozen and getattr(optimizer, "weight_decay", None):
        optimizer.exclude_from_weight_decay(var_list=frozen)
