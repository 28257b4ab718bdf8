"""One stage trained on cached features: the suffix's compiled steps, XLA where it pays, the padded last batch.

`StageFitter` runs each batch through the suffix model's own Keras `train_step` in inceptune's loop (the stage's
loss, metrics and optimizer: the arithmetic of `fit` on images). `use_xla` says when a stage compiles its step
with XLA, `pads_exactly` when the last, smaller batch can be filled up into the full batch's XLA program.
The feature cache (`cache.py`, `CacheContext.fitter`) makes one per stage.
"""

from __future__ import annotations

import functools

import numpy as np

from inceptune import conv_grads
from inceptune.inference import compiled_forward
from inceptune.prefix_cut import Cut, suffix_model

__all__ = ["StageFitter", "use_xla", "pads_exactly"]

# When a cached stage trains its full batches with XLA (`use_xla`), from benchmarks/xla_threshold.py (InceptionV3
# at 150 px, 431 images, 2 cores): the epochs from which XLA's compile is paid back by its faster steps, for a
# Dense head / mixed10 / mixed9-10, were 4.1 / 1.1 / 0.4 on one Intel Xeon, 6.3 / 2.6 / 2.7 on another (with
# AMX), and 60.7 / 23.0 / 11.1 on an AMD EPYC (Zen 4: XLA compiles mixed9-10 in 3.9 s more than a graph trace,
# and its steps are 17% faster, against 29% on the Xeon with AMX). The thresholds are per CPU vendor, each a
# little above the slowest break-even measured on it; a CPU not measured gets the cautious ones.
JIT_MIN_PARAMS = 1_000_000  # suffixes with fewer trainable parameters never (their steps are small)
# (from how many epochs a suffix with convolutions, and one without (a Dense head), compiles with XLA)
JIT_MIN_EPOCHS = {"GenuineIntel": (2, 5)}
JIT_MIN_EPOCHS_ELSE = (12, 60)  # AMD measured; any other CPU


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """The CPU's vendor id from /proc/cpuinfo (`GenuineIntel`, `AuthenticAMD`), or '' where there is none; read
    once per process (every stage's `use_xla` and `computes_like` ask)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def jit_min_epochs() -> tuple[int, int]:
    """This CPU's thresholds: (epochs from which a suffix with convolutions compiles with XLA, a Dense head)."""
    return JIT_MIN_EPOCHS.get(cpu_vendor(), JIT_MIN_EPOCHS_ELSE)


def use_xla(suffix, epochs: int) -> bool:
    """Whether a cached stage compiles its full-batch step with XLA: when the compile is paid back within the
    stage's epochs (a suffix of `JIT_MIN_PARAMS` trainable parameters or more, trained for at least
    `jit_min_epochs()` epochs: its CPU's threshold with convolutions, or without)."""
    if sum(int(np.prod(v.shape)) for v in suffix.trainable_weights) < JIT_MIN_PARAMS:
        return False
    conv = any("Conv" in type(layer).__name__ and layer.trainable for layer in suffix.layers)
    with_conv, dense = jit_min_epochs()
    return epochs >= (with_conv if conv else dense)


def pads_exactly(suffix) -> bool:
    """Whether a suffix's step can take a batch filled up with zero-weighted rows and compute exactly what the
    unpadded batch would (`StageFitter._padded_step`): every layer a Keras layer (a custom layer may mix rows),
    no BatchNormalization in training mode (its statistics would see the padding), and every metric variable a
    weighted sum (Keras's means, counts and confusion sums: scaling a step's change scales its rows' weights)."""
    import keras

    layers = suffix._flatten_layers(include_self=False, recursive=True)
    if any(not type(layer).__module__.startswith("keras.") for layer in layers):
        return False
    if any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in layers):
        return False
    return all(_weighted_sums(metric) for metric in suffix.metrics)


def _weighted_sums(metric) -> bool:
    import keras

    if isinstance(metric, (keras.metrics.Mean, keras.metrics.MeanMetricWrapper, keras.metrics.Sum)):
        return True
    inner = getattr(metric, "metrics", None)  # Keras's compiled-metrics container
    return inner is not None and metric is not inner and all(_weighted_sums(m) for m in inner)


def fill_batch(x, y, w, batch_size: int) -> tuple:
    """A batch of n <= batch_size rows as (x, y, sample weights) of exactly batch_size rows: weights of ones
    when `w` is None; below batch_size, copies of its own first rows weighted 0 fill it up and the real rows'
    weights are multiplied by batch_size / n (see `StageFitter._padded_step`)."""
    n = len(x)
    w = np.ones(n, "float32") if w is None else np.asarray(w, "float32")
    if n == batch_size:
        return x, y, w
    rows = np.arange(batch_size) % n
    return x[rows], y[rows], np.concatenate([w * np.float32(batch_size / n), np.zeros(batch_size - n, "float32")])


def scores_apart(suffix) -> bool:
    """Whether the suffix's validation can run as its compiled forward (`inference.compiled_forward`, the
    function the final predictions use) followed by a function of the loss and metrics alone (`_scoring`),
    with the arithmetic of Keras's `test_step`: a single-input, single-output model of Keras's own layers without
    activity regularizers, so that no loss is added while the model is called."""
    inputs, outputs = getattr(suffix, "inputs", None) or [], getattr(suffix, "outputs", None) or []
    return len(inputs) == 1 and len(outputs) == 1 and all(
        type(layer).__module__.startswith("keras.") and getattr(layer, "activity_regularizer", None) is None
        for layer in suffix.layers)


def _scoring(suffix, targets):
    """`(y, y_pred) -> logs` as Keras's `test_step` computes them after its forward pass (the loss, averaged over
    rows like Keras's loss tracker, then the compiled metrics), traced once for every batch size; and the loss's
    running mean, to reset before each validation.

    Validation through the compiled forward plus this traces the suffix's forward once per stage, where
    `test_step` traced it once for validation and `compiled_forward` once more for the final predictions
    (0.5 s for InceptionV3's mixed9-10 at 150 px on 2 cores).
    """
    import keras
    import tensorflow as tf

    mean = keras.metrics.Mean(name="loss")
    out = suffix.outputs[0]

    def score(y, y_pred):
        loss = suffix.compute_loss(y=y, y_pred=y_pred, training=False)
        mean.update_state(loss, sample_weight=tf.shape(y_pred)[0])
        logs = dict(suffix.compute_metrics(None, y, y_pred))
        logs["loss"] = mean.result()
        return logs

    signature = _signature([targets]) + [tf.TensorSpec((None,) + tuple(out.shape[1:]), tf.as_dtype(out.dtype))]
    return tf.function(score, input_signature=signature, autograph=False), mean


def _signature(arrays) -> list:
    """`tf.TensorSpec`s of a batch's arrays with the batch dimension left open: one trace for every batch size."""
    import tensorflow as tf

    return [tf.TensorSpec((None,) + tuple(np.shape(a)[1:]), tf.as_dtype(np.asarray(a).dtype)) for a in arrays]


def _smoothing(stage) -> float:
    return float(getattr(stage, "label_smoothing", 0.0) or 0.0)


class StageFitter:
    """Trains one stage on cached features (or explains why it cannot).

    Each batch runs the suffix model's own Keras `train_step` (its loss, metrics and the stage's optimizer, so
    the arithmetic is the same as `fit` on images), in a loop written here rather than `fit`: `fit` costs about
    half a second per epoch of set-up here, and under XLA it compiles one program per batch shape (the last,
    smaller batch of the train and validation splits: three extra compiles of ~5-10 s each for InceptionV3's
    top blocks). Here every batch runs through one graph function traced once for any batch size; where XLA pays
    (`use_xla`), through one XLA program instead, the last, smaller batch filled up to the full batch with
    zero-weighted rows (`_padded_step`; where padding could change the result, `pads_exactly`, that batch runs
    through the graph function). Validation runs the suffix's compiled forward, which the final predictions then
    reuse untraced, and one function of the loss and metrics (`_scoring`). A later stage at the same cut
    that would trace the same steps (`computes_like`) reuses them, with the earlier stage's optimizer reset.
    """

    def __init__(self, ctx, stage, stage_index: int, model, cut: Cut, loss):
        self.ctx, self.stage, self.si, self.model, self.cut = ctx, stage, stage_index, model, cut
        self.loss, self.metrics = loss  # the stage's (`training.model.stage_loss`), compiled into the suffix
        self.active = cut.layer is not None
        self.reason = cut.reason
        self.suffix = None
        self.jit = False
        self.traces = 0  # traces of the training step (one function for every batch size)
        self.features: dict = {}
        self.optimizer = model.optimizer  # the stage's; a stage that adopts an earlier one's steps trains with its
        self.earlier = None  # the previous stage's fitter at the same cut (`CacheContext.fitter`)
        self.adopted_from = None  # the name of the earlier stage whose suffix and compiled steps this one reuses
        from inceptune.regularize import needs_soft_labels

        self.soft = needs_soft_labels(stage, ctx.data_cfg)
        if self.active and ctx.augment_on and ctx.views <= 1:
            self.active = False
            self.reason = ("augmentation is on, so features differ every epoch: not cached. HINT: set "
                           "`cache: {views: K}` to cache K augmented views of each training image")

    def _prepare(self):
        if self.suffix is not None:
            return
        import tensorflow as tf

        ctx = self.ctx
        self.features = ctx.features(self.model, self.cut, self.si)
        # label smoothing and mixup train on one-hot targets (regularize.py); the loss is the stage's
        self.train_y = ctx.targets(ctx.train_y, self.soft)
        # validation features never change within the stage: convert them once, not every epoch
        self.val = ((np.asarray(self.features["val"], dtype="float32"), ctx.targets(ctx.val_y, self.soft))
                    if "val" in self.features else None)
        earlier, self.earlier = self.earlier, None  # needed here only: holding it would keep its features alive
        if earlier is not None and earlier.computes_like(self):
            self._adopt(earlier)
            return
        # what the steps traced below capture: this stage's trainable variables (by the layers' flags now)
        self._trained = [id(v) for v in self.model.trainable_variables]
        suffix = suffix_model(self.model, self.cut)
        suffix.compile(optimizer=self.optimizer, loss=self.loss, metrics=self.metrics)
        # build the loss and metric state eagerly (variables cannot be created inside the compiled steps); the
        # optimizer is already built on the full model's variables by the trainer
        one = np.asarray(self.features["train"][0][:1], dtype="float32")
        suffix.test_step((one, self.train_y[:1]))
        suffix.reset_metrics()
        self.suffix = suffix
        # XLA fuses the suffix's many small ops (InceptionV3's mixed9-10 at 150 px: 2.1x faster steps), for the
        # suffixes and epochs where its compile pays (`use_xla`)
        self.jit = use_xla(suffix, self.stage.epochs)

        def train_step(*batch):
            self.traces += 1  # Python runs this body only while TensorFlow traces it
            return suffix.train_step(batch)

        def xla_train_step(*batch):  # XLA programs keep TensorFlow's kernel gradients (conv_grads: not measured)
            with conv_grads.native_gradients():
                return train_step(*batch)

        def test_step(*batch):
            return suffix.test_step(batch)

        self._train_step = train_step
        # autograph off, as Keras's own train functions: Keras's train_step needs no conversion, and converting
        # reads this file's source again at trace time
        self._full_step = tf.function(xla_train_step, jit_compile=True, autograph=False) if self.jit else None
        # the last, smaller batch through the same XLA program, padded to the full batch (`_padded_step`), where
        # padding cannot change the arithmetic: instead of tracing and optimizing a graph of its own (3.3 s for
        # mixed9-10 at 150 px) that then runs at half the XLA program's speed
        self.pads = self.jit and pads_exactly(suffix)
        self._step = None  # traced at the first batch, with its structure and a batch dimension of None
        self._score = self._val_loss = self._test_step = None
        if self.val is not None and scores_apart(suffix):  # the forward, then the loss and metrics
            self._score, self._val_loss = _scoring(suffix, self.val[1])
        elif self.val is not None:  # one trace for the full and the last, smaller validation batches
            self._test_step = tf.function(test_step, input_signature=_signature(self.val), autograph=False)
        from inceptune.distribute import current_strategy, replicated_step

        strategy = current_strategy()  # `distribute:` the same train_step on every replica, gradients all-reduced
        self._step_is_replicated = strategy is not None
        if strategy is not None:
            self.jit, self.pads, self._full_step = False, False, None
            self._step = replicated_step(strategy, train_step)
            self._test_step = replicated_step(strategy, test_step)
            self._score = self._val_loss = None

    def computes_like(self, later) -> bool:
        """Whether a later stage at the same cut would trace exactly this stage's steps: the same trainable
        variables, loss and targets, the same XLA choice, and an optimizer of the same class and settings (the
        learning rate aside: a variable the trainer sets every step), without per-layer lr multipliers or a loss
        scale (both live in the traced update)."""
        import keras

        if self.suffix is None or self._step_is_replicated:
            return False
        mine, theirs = self.optimizer, later.optimizer
        if type(mine) is not type(theirs) or isinstance(mine, keras.optimizers.LossScaleOptimizer):
            return False
        settings = [{k: v for k, v in o.get_config().items() if k not in ("name", "learning_rate")}
                    for o in (mine, theirs)]
        return (settings[0] == settings[1] and self._trained == [id(v) for v in later.model.trainable_variables]
                and not (self.stage.lr_mult or later.stage.lr_mult) and self.soft == later.soft
                and _smoothing(self.stage) == _smoothing(later.stage)
                and self.jit == use_xla(self.suffix, later.stage.epochs))

    def _adopt(self, earlier) -> None:
        """Trains with the earlier stage's suffix, compiled steps and optimizer (no new trace): the optimizer's
        state is set to this stage's fresh (or, on resume, restored) one first, so it starts where a new
        optimizer would."""
        for mine, fresh in zip(earlier.optimizer.variables, self.optimizer.variables):
            mine.assign(fresh)
        self.optimizer = earlier.optimizer
        self.model.optimizer = earlier.optimizer
        self.adopted_from = earlier.stage.name
        for name in ("suffix", "jit", "pads", "_trained", "_train_step", "_full_step", "_step", "_test_step",
                     "_score", "_val_loss", "_step_is_replicated"):
            setattr(self, name, getattr(earlier, name))

    def prepare(self) -> None:
        """Reads (or computes) the stage's features and builds its suffix and compiled steps, before epoch 1."""
        if self.active:
            self._prepare()

    def forward(self):
        """The compiled inference function of this stage's suffix (`inference.compiled_forward`), traced once:
        the final predictions on cached features (validation and test) all go through it."""
        self._prepare()
        return compiled_forward(self.suffix)

    def batches(self, epoch: int, seed: int, batch_size: int):
        """The training batches of one epoch on the cached features, in the image pipeline's order: (features,
        targets[, sample weights]), mixed at the cut when `data.mixup` is on (`regularize.mix_features`)."""
        from inceptune.regularize import mix_features

        self._prepare()
        ctx = self.ctx
        view = epoch % max(len(self.features["train"]), 1)
        feats = self.features["train"][view]
        order = ctx.data.epoch_order("train", seed=seed, balance=ctx.balance)
        y = self.train_y[order]
        weights = None
        if ctx.balance == "class-weight":
            cw = ctx.data.class_weight()
            weights = np.array([cw[int(c)] for c in ctx.train_y[order]], dtype="float32")
        for step, i in enumerate(range(0, len(order), batch_size)):
            x = np.asarray(feats[order[i:i + batch_size]], dtype="float32")
            w = None if weights is None else weights[i:i + batch_size]
            yield mix_features(x, y[i:i + batch_size], seed, step, ctx.mixup, w)

    def step(self, batch, batch_size: int) -> dict:
        """One optimizer step of the suffix on one batch; returns its metrics (running means since the last
        `suffix.reset_metrics()`)."""
        self._prepare()
        if self.pads:
            return self._padded_step(batch, batch_size)
        if self._full_step is not None and len(batch[0]) == batch_size:
            return self._full_step(*batch)
        if self._step is None:
            import tensorflow as tf

            self._step = tf.function(self._train_step, input_signature=_signature(batch), autograph=False)
        return self._step(*batch)

    def _padded_step(self, batch, batch_size: int) -> dict:
        """One step through the XLA program of the full batch, whatever the batch's size.

        Every batch carries sample weights (ones when it has none: multiplying by one is exact). A batch of n <
        batch_size rows is filled up with copies of its own first rows (finite wherever the batch is) weighted 0,
        and its real rows' weights are multiplied by batch_size / n: Keras's loss divides the weighted sum by the
        batch's rows, so the loss, and with it the gradient, is the mean over the n real rows, as unpadded. The
        metrics then count the step as batch_size rows with weights scaled by batch_size / n; every metric
        variable's change in the step is scaled back by n / batch_size, which makes the running means (loss,
        accuracy) those of n rows again (`pads_exactly` admits only suffixes whose metrics are weighted sums).
        """
        import tensorflow as tf

        n = len(batch[0])
        full = fill_batch(batch[0], batch[1], batch[2] if len(batch) > 2 else None, batch_size)
        if n == batch_size:
            return self._full_step(*full)
        state = self.suffix.metrics_variables
        before = [np.asarray(v) for v in state]
        self._full_step(*full)
        keep = n / batch_size
        for v, b in zip(state, before):
            v.assign(tf.cast(b + (np.asarray(v) - b) * keep, v.dtype))
        return self.suffix.get_metrics_result()

    def validate(self, batch_size: int) -> dict:
        """Loss and metrics of the suffix on the cached validation features ({} without a validation split)."""
        self._prepare()
        if self.val is None:
            return {}
        self.suffix.reset_metrics()
        xv, yv = self.val
        result = {}
        if self._score is not None:  # the suffix's outputs from the final predictions' compiled forward
            forward = compiled_forward(self.suffix)
            self._val_loss.reset_state()
            for i in range(0, len(yv), batch_size):
                result = self._score(yv[i:i + batch_size], forward(xv[i:i + batch_size]))
        else:
            for i in range(0, len(yv), batch_size):
                result = self._test_step(xv[i:i + batch_size], yv[i:i + batch_size])
        return {k: float(v) for k, v in result.items()}
