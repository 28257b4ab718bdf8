"""The frozen-prefix feature cache: compute the frozen part of the network once, train the rest on its output.

When a stage trains only layers downstream of some tensor, and nothing upstream of it trains or is random, the
activations at that tensor (the *cut*) are the same every epoch. The cache computes them once per image with a
compiled function (`inference.compiled_forward`, not `model.predict`), keeps them on disk in a per-image store
(`feature_store.py`: `<cache root>/<prefix key>/`, memory-mapped when larger than the memory budget), and the
stage trains a *suffix model* (cut → outputs) that shares its layers and variables with the full model: when the
stage ends the full model is already trained.

The cut is the deepest layer such that (1) no layer with trainable weights and no random layer (Dropout,
noise, augmentation layers, BatchNorm in training mode) lies at or upstream of it, and (2) everything
downstream can be computed from its output alone. BatchNorm under the `frozen` policy is deterministic.

The store's key covers what the prefix computes for one image: the prefix's layer configs (architecture and
preprocessing), a fingerprint of every prefix weight, the cut, the image size and resize mode, and the storage
dtype. Inside it, features are kept by each image's content hash, so a run reads only what it lacks: a second
run of the same data computes nothing, a cross-validation fold or another split of the same images computes
nothing (its arrays are assembled from the store), and images added to a folder cost one forward each. Anything
that changes what the prefix computes means another store, so stale features are never used.

Augmentation: with `data.augment` on, cached features would freeze one augmentation forever, so a stage is
cached only when `cache: {views: K}` asks for K augmented views of each training image (computed once, K
passes of the prefix); epoch e trains on view e mod K. This trades augmentation diversity (K fixed draws instead
of a fresh draw each epoch) for speed; the validation split is never augmented.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


try:
    import fcntl
except ImportError:  # Windows: no advisory locks (entries are still renamed into place whole)
    fcntl = None
from inceptune.data import load_image
from inceptune.feature_store import FeatureStore
from inceptune.inference import compiled_forward, one_pass_graphs
from inceptune.progress import Bar

# graph, freezing and selectors import Keras at module level: they are imported inside the functions that use
# them, so that importing this module stays light.

__all__ = ["find_cut", "CacheContext", "cache_root", "suffix_model", "extract_features", "entry_lock"]

# A cut must leave at least this share of the layers with weights upstream, or caching costs more (feature
# maps near the input are large) than it saves.
MIN_PREFIX_SHARE = 0.2

# When a cached stage trains its full batches with XLA (`use_xla`; measured by benchmarks/xla_threshold.py,
# InceptionV3 at 150 px, 431 images: XLA costs 0.9 s more to compile than a graph trace for a Dense head and
# saves 0.22 s per epoch, break-even 4.1 epochs; for mixed10 or mixed9-10 it pays within 1.1 and 0.4 epochs).
JIT_MIN_PARAMS = 1_000_000  # suffixes with fewer trainable parameters never (their steps are small)
JIT_MIN_EPOCHS_CONV = 2  # suffixes with convolutions, from this many epochs
JIT_MIN_EPOCHS = 5  # other suffixes (Dense heads), from this many epochs

_RANDOM_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                  "GaussianDropout", "AlphaDropout")


def cache_root() -> Path:
    """Where features are stored: `$INCEPTUNE_CACHE_DIR`, else `$XDG_CACHE_HOME/inceptune/features`."""
    env = os.environ.get("INCEPTUNE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "inceptune" / "features"


def _is_random(layer) -> bool:
    import keras

    name = type(layer).__name__
    if name in _RANDOM_LAYERS or name.startswith("Random"):
        return True
    return isinstance(layer, keras.layers.BatchNormalization) and layer.trainable


@dataclass(frozen=True)
class Cut:
    """Result of `find_cut`: `layer` is the cut layer's name (None when no cut exists) and `reason` says why."""

    layer: str | None
    reason: str
    prefix: frozenset = frozenset()
    suffix: frozenset = frozenset()


def find_cut(model) -> Cut:
    """Finds the deepest cacheable cut of a model with its current trainable flags.

    Args:
        model: a functional keras.Model.

    Returns:
        A `Cut`.
    """
    from inceptune import graph as _graph

    parents = _graph.parents(model)
    children = _graph.invert(parents)
    layers = {layer.name: layer for layer in model.layers}
    unsafe = {n for n, layer in layers.items() if (layer.trainable and layer.trainable_weights) or _is_random(layer)}
    trainable = {n for n, layer in layers.items() if layer.trainable and layer.trainable_weights}
    if not trainable:
        return Cut(None, "nothing trains in this stage")
    outputs = {t._keras_history.operation.name for t in model.outputs}
    inputs = {n for n, ps in parents.items() if not ps}
    order = list(parents)
    for cand in reversed(order):
        if cand in inputs or cand in unsafe:
            continue
        up = _graph.closure(cand, parents)
        if up & unsafe:
            continue
        down = _graph.closure(cand, children) - {cand}
        if not outputs <= down or not trainable <= down:
            continue
        if any(p not in down and p != cand for n in down for p in parents[n]):
            continue  # something downstream also needs a tensor from beside the cut
        weighted = [n for n in order if layers[n].weights]
        share = sum(1 for n in weighted if n in up) / max(len(weighted), 1)
        if share == 0:
            return Cut(None, "every layer with weights trains in this stage: nothing to compute once")
        if share < MIN_PREFIX_SHARE:
            return Cut(None, f"the deepest cacheable cut, {cand!r}, leaves {share:.0%} of the layers with weights "
                             f"upstream: too little to be worth caching (needs {MIN_PREFIX_SHARE:.0%})")
        return Cut(cand, f"cut at {cand!r}: {len(up)} layers computed once, {len(down)} trained per epoch",
                   frozenset(up), frozenset(down))
    first = next(n for n in order if n in unsafe)
    kind = "a random layer" if _is_random(layers[first]) else "a trainable layer"
    return Cut(None, f"no cacheable cut: {first!r} ({kind}) sits right after the input")


def suffix_model(model, cut: Cut):
    """cut → outputs, calling the model's own layer objects (so training it trains the full model)."""
    import keras

    from inceptune import graph as _graph

    cut_layer = model.get_layer(cut.layer)
    cut_out = cut_layer.output
    new_in = keras.Input(batch_shape=cut_out.shape, dtype=cut_out.dtype, name=f"cached_{cut.layer}")
    tensors = {id(cut_out): new_in}
    for node in _graph.model_nodes(model):
        op = node.operation
        if op is None or node.is_input or op.name not in cut.suffix:
            continue
        if any(id(x) not in tensors for x in node.input_tensors):
            continue
        args, kwargs = node.arguments.fill_in(tensors)
        result = op(*args, **kwargs)
        for x, y in zip(node.outputs, keras.tree.flatten(result)):
            tensors[id(x)] = y
    outs = [tensors[id(t)] for t in model.outputs]
    return keras.Model(new_in, outs[0] if len(outs) == 1 else outs, name=f"{model.name}_suffix")


def extract_features(forward, dataset, n: int, out_paths: list, dtype: str, progress=None) -> None:
    """Runs `forward` (returning one tensor per output path) over a batched dataset of (images, labels[,
    weights]) and writes each output as an (n, ...) `.npy` array, via a temporary name then a rename."""
    arrays, tmps = None, [p.with_name(f"tmp-{os.getpid()}-{p.name}") for p in out_paths]
    i = 0
    for batch in dataset:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        ys = forward(x)
        ys = [np.asarray(y).astype(dtype) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]
        if arrays is None:
            arrays = [np.lib.format.open_memmap(t, mode="w+", dtype=dtype, shape=(n,) + y.shape[1:])
                      for t, y in zip(tmps, ys)]
        for arr, y in zip(arrays, ys):
            arr[i:i + len(y)] = y
        i += len(ys[0])
        if progress is not None:
            progress(len(ys[0]))
    for arr in arrays or []:
        arr.flush()
    del arrays
    for tmp, path in zip(tmps, out_paths):
        os.replace(tmp, path)


def decoded_batches(paths, image_size, resize: str = "stretch", batch_size: int = 32):
    """Yields float32 batches of decoded images in order, one batch ahead in one background thread.

    The same decoder as the training pipeline (`data.load_image`), so the pixels are identical. For a pass of
    the whole network over images (the cache fill) this beats `tf.data`'s parallel decode on a small CPU: its
    decode threads compete with the convolutions for the cores (measured here: 600 images through InceptionV3
    at 150 px, 24.4-26.4 s this way against 29.0-29.7 s through the `tf.data` pipeline).
    """
    from concurrent.futures import ThreadPoolExecutor

    chunks = [list(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]

    def load(chunk):
        return np.stack([load_image(p, image_size, resize) for p in chunk]).astype("float32")

    if not chunks:
        return
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, chunks[0])
        for k in range(len(chunks)):
            batch = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(load, chunks[k + 1])
            yield batch


def _hash_update_json(h, obj) -> None:
    h.update(json.dumps(obj, sort_keys=True, default=str).encode())


def _prefix_fingerprint(model, cut: Cut) -> str:
    """What the prefix computes: each layer's type and config, its inputs, and its weights, by position.

    Names are left out: Keras's automatic names (`conv2d_17`) depend on what the process built before, so the
    same model built in another process would otherwise get another key. Trainable flags are left out too: in a
    valid prefix nothing trains, and a weightless layer's flag does not change what it computes.
    """
    from inceptune import graph as _graph

    parents = _graph.parents(model)
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    h = hashlib.sha256()
    for layer in model.layers:
        if layer.name not in cut.prefix:
            continue
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
        _hash_update_json(h, [position[layer.name], type(layer).__name__, config,
                              sorted(position[p] for p in parents.get(layer.name, ()))])
        for v in layer.weights:
            h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def entry_lock(folder: Path, *, wait: bool = True):
    """Holds an exclusive lock on the cache entry `folder` (a `flock` on `<folder>.lock`), so that of several
    runs sharing a cache folder exactly one computes an entry while the others wait, then read it.

    Yields True when the lock is held; with `wait=False`, False at once when another process holds it. Where
    `fcntl` does not exist (Windows) it yields True without locking: entries still appear whole (renamed into
    place), at worst computed twice.
    """
    if fcntl is None:
        yield True
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.with_name(folder.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def use_xla(suffix, epochs: int) -> bool:
    """Whether a cached stage compiles its full-batch step with XLA: when the compile is paid back within the
    stage's epochs (a suffix of `JIT_MIN_PARAMS` trainable parameters or more, trained for `JIT_MIN_EPOCHS_CONV`
    epochs when it has convolutions, `JIT_MIN_EPOCHS` otherwise)."""
    if sum(int(np.prod(v.shape)) for v in suffix.trainable_weights) < JIT_MIN_PARAMS:
        return False
    conv = any("Conv" in type(layer).__name__ and layer.trainable for layer in suffix.layers)
    return epochs >= (JIT_MIN_EPOCHS_CONV if conv else JIT_MIN_EPOCHS)


def pads_exactly(suffix) -> bool:
    """Whether a suffix's step can take a batch filled up with zero-weighted rows and compute exactly what the
    unpadded batch would (`_StageFitter._padded_step`): every layer a Keras layer (a custom layer may mix rows),
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


def _signature(arrays) -> list:
    """`tf.TensorSpec`s of a batch's arrays with the batch dimension left open: one trace for every batch size."""
    import tensorflow as tf

    return [tf.TensorSpec((None,) + tuple(np.shape(a)[1:]), tf.as_dtype(np.asarray(a).dtype)) for a in arrays]


def _smoothing(stage) -> float:
    return float(getattr(stage, "label_smoothing", 0.0) or 0.0)


def _memory_budget_bytes(cfg) -> int:
    if cfg.memory_budget_mb:
        return int(float(cfg.memory_budget_mb) * 2**20)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 4 * 2**30
    return int(avail * 0.25)


class _StageFitter:
    """Trains one stage on cached features (or explains why it cannot).

    Each batch runs the suffix model's own Keras `train_step` (its loss, metrics and the stage's optimizer, so
    the arithmetic is the same as `fit` on images), in a loop written here rather than `fit`: `fit` costs about
    half a second per epoch of set-up here, and under XLA it compiles one program per batch shape (the last,
    smaller batch of the train and validation splits: three extra compiles of ~5-10 s each for InceptionV3's
    top blocks). Here every batch runs through one graph function traced once for any batch size; where XLA pays
    (`use_xla`), through one XLA program instead, the last, smaller batch filled up to the full batch with
    zero-weighted rows (`_padded_step`; where padding could change the result, `pads_exactly`, that batch runs
    through the graph function). Validation has one graph function of its own. A later stage at the same cut
    that would trace the same steps (`computes_like`) reuses them, with the earlier stage's optimizer reset.
    """

    def __init__(self, ctx: CacheContext, stage, stage_index: int, model, cut: Cut):
        self.ctx, self.stage, self.si, self.model, self.cut = ctx, stage, stage_index, model, cut
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

        from inceptune.training.model import stage_loss

        ctx = self.ctx
        self.features = ctx.features(self.model, self.cut, self.si)
        # label smoothing and mixup train on one-hot targets (regularize.py); the loss is the stage's
        self.train_y = ctx.targets(ctx.train_y, self.soft)
        # validation features never change within the stage: convert them once, not every epoch
        self.val = ((np.asarray(self.features["val"], dtype="float32"), ctx.targets(ctx.val_y, self.soft))
                    if "val" in self.features else None)
        if self.earlier is not None and self.earlier.computes_like(self):
            self._adopt(self.earlier)
            return
        # what the steps traced below capture: this stage's trainable variables (by the layers' flags now)
        self._trained = [id(v) for v in self.model.trainable_variables]
        suffix = suffix_model(self.model, self.cut)
        loss, metrics = stage_loss(self.stage, self.soft)
        suffix.compile(optimizer=self.model.optimizer, loss=loss, metrics=metrics)
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

        def test_step(*batch):
            return suffix.test_step(batch)

        self._train_step = train_step
        # autograph off, as Keras's own train functions: Keras's train_step needs no conversion, and converting
        # reads this file's source again at trace time
        self._full_step = tf.function(train_step, jit_compile=True, autograph=False) if self.jit else None
        # the last, smaller batch through the same XLA program, padded to the full batch (`_padded_step`), where
        # padding cannot change the arithmetic: instead of tracing and optimizing a graph of its own (3.3 s for
        # mixed9-10 at 150 px) that then runs at half the XLA program's speed
        self.pads = self.jit and pads_exactly(suffix)
        self._step = None  # traced at the first batch, with its structure and a batch dimension of None
        if self.val is not None:  # one trace for the full and the last, smaller validation batches
            self._test_step = tf.function(test_step, input_signature=_signature(self.val), autograph=False)
        from inceptune.distribute import current_strategy, replicated_step

        strategy = current_strategy()  # `distribute:` the same train_step on every replica, gradients all-reduced
        self._step_is_replicated = strategy is not None
        if strategy is not None:
            self.jit, self.pads, self._full_step = False, False, None
            self._step = replicated_step(strategy, train_step)
            self._test_step = replicated_step(strategy, test_step)

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
                     "_step_is_replicated"):
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

    def fit_epoch(self, epoch: int, seed: int, batch_size: int, callbacks) -> dict:
        """One epoch over the cached training features in the image pipeline's batch order, then validation.

        Returns:
            dict of floats, as the last entry of `fit`'s history (loss, accuracy, val_loss, val_accuracy).
        """
        from inceptune.training.callbacks import run_epoch

        self._prepare()
        return run_epoch(self.suffix, epoch, self.batches(epoch, seed, batch_size),
                         lambda batch: self.step(batch, batch_size), lambda: self.validate(batch_size), callbacks)

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

        x, y = batch[0], batch[1]
        n = len(x)
        w = np.ones(n, "float32") if len(batch) < 3 or batch[2] is None else np.asarray(batch[2], "float32")
        if n == batch_size:
            return self._full_step(x, y, w)
        rows = np.arange(batch_size) % n
        w = np.concatenate([w * np.float32(batch_size / n), np.zeros(batch_size - n, "float32")])
        state = self.suffix.metrics_variables
        before = [np.asarray(v) for v in state]
        self._full_step(x[rows], y[rows], w)
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
        for i in range(0, len(yv), batch_size):
            result = self._test_step(xv[i:i + batch_size], yv[i:i + batch_size])
        return {k: float(v) for k, v in result.items()}


class CacheContext:
    """Per-run cache state, used by the trainer (`cache: auto`).

    Args:
        recipe, data, model, out: the run's recipe, `PreparedData`, full model and folder.
        image_size: int. resize: str. log: callable for progress lines.
    """

    def __init__(self, recipe, data, model, out, *, image_size: int, resize: str = "stretch", log=print,
                 progress: bool = True):
        cfg = recipe.cache
        self.cfg, self.data, self.out, self.log = cfg, data, Path(out), log
        self.image_size, self.resize, self.progress = int(image_size), resize, progress
        self.seed = int(recipe.seed)
        self.dtype = cfg.dtype
        self.augment = recipe.data.augment
        self.augment_on = self.augment not in (None, "none", [], ())
        self.views = cfg.views if self.augment_on else 1
        self.balance = recipe.data.balance
        self.batch_size = recipe.data.batch_size
        self.data_cfg = recipe.data
        self.mixup = getattr(recipe.data, "mixup", None)  # mixup at the cut (regularize.py); cutmix needs images
        self.train_y = data.label_ids("train")
        self.val_y = data.label_ids("val") if data.paths("val") else None
        self.test_n = len(data.paths("test"))
        self.planned: list = []
        self.cache_test = False
        self.budget = _memory_budget_bytes(cfg)
        self.hits = 0
        self.misses = 0
        self.seconds = 0.0  # time spent computing and loading features
        self.fitters: dict = {}
        self._hashes: dict = {}
        h = hashlib.sha256()
        _hash_update_json(h, [[r["path"], r.get("hash"), r["split"], r["label"]] for r in data.rows])
        self.manifest_hash = h.hexdigest()
        # augmented views depend on the training split's order, the augmentation, the seed and the batching
        self.views_key = ""
        if self.views > 1:
            h = hashlib.sha256()
            _hash_update_json(h, [[self._sha(r) for r in data.rows if r["split"] == "train"], self.augment,
                                  self.seed, self.batch_size])
            self.views_key = h.hexdigest()[:16]
        h = hashlib.sha256()
        _hash_update_json(h, [self.manifest_hash, self.views, self.views_key])
        self.set_key = h.hexdigest()[:24]

    def targets(self, ids, soft: bool):
        """Class ids as the stage's loss wants them: as they are, or one-hot float32 (`soft`)."""
        if ids is None or not soft:
            return ids
        return np.eye(self.data.num_classes, dtype="float32")[np.asarray(ids, dtype="int64")]

    def fitter(self, stage, stage_index: int, model, bmap=None) -> _StageFitter:
        fitter = _StageFitter(self, stage, stage_index, model, find_cut(model))
        if fitter.active:
            fitter.earlier = self.fitters.get(fitter.cut.layer)  # whose compiled steps it may reuse
            self.fitters[fitter.cut.layer] = fitter  # the latest stage at each cut: its suffix predicts at the end
        return fitter

    def prefix_key(self, model, cut: Cut) -> str:
        """The feature store of `cut`: what the prefix computes for one image (never which images or splits)."""
        h = hashlib.sha256()
        cut_at = [layer.name for layer in model.layers].index(cut.layer)
        _hash_update_json(h, {"cut": cut_at, "prefix": _prefix_fingerprint(model, cut), "size": self.image_size,
                              "resize": self.resize, "dtype": self.dtype, "version": 3})
        return h.hexdigest()[:24]

    def key(self, model, cut: Cut) -> str:
        """The run's set of arrays at `cut` (relative to the cache root): the store, then the manifest's set."""
        return f"{self.prefix_key(model, cut)}/sets/{self.set_key}"

    def _items(self) -> dict[str, list[str]]:
        """The store items of each array of a run's set: `train-<v>` per view, `val`, and `test` when cached."""
        rows = self.data.rows
        by_split = {s: [self._sha(r) for r in rows if r["split"] == s] for s in ("train", "val", "test")}
        out = {}
        for v in range(self.views):
            out[f"train-{v}"] = ([f"aug:{self.views_key}:{v}:{sha}" for sha in by_split["train"]] if self.views > 1
                                 else by_split["train"])
        if self.val_y is not None:
            out["val"] = by_split["val"]
        if self.cache_test:
            out["test"] = by_split["test"]
        return out

    def _sha(self, row) -> str:
        """The row's content hash (the manifest's, or the file's SHA-256 when a hand-made manifest has none)."""
        if row.get("hash"):
            return row["hash"]
        path = row["path"]
        if path not in self._hashes:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._hashes[path] = h.hexdigest()
        return self._hashes[path]

    def plan(self, model, stages, batchnorm: str, bmap=None) -> None:
        """Finds every stage's cut in advance (trainable flags are set per stage later by the trainer), so
        that one pass over the images can fill the caches of later stages whose prefix stays frozen."""
        from inceptune import freezing
        from inceptune.selectors import resolve

        self.planned = []
        for stage in stages:
            freezing.apply_trainable(model, resolve(model, stage.train, bmap=bmap), batchnorm=batchnorm, bmap=bmap)
            trained = {layer.name for layer in model.layers if layer.trainable and layer.trainable_weights}
            self.planned.append((find_cut(model), trained))
        # The test split joins the pass when the last stage is cached: the final model's prefix at that cut is
        # then unchanged, and its test predictions come from the cache instead of another pass over the images.
        self.cache_test = bool(self.test_n and self.planned and self.planned[-1][0].layer is not None)

    def _extras(self, stage_index: int, cut: Cut) -> list[Cut]:
        """Later stages' cuts that this stage's pass can fill: upstream of `cut`, and nothing in their prefix
        trains in this stage or any stage before theirs."""
        out = []
        plan = self.planned
        for j in range(stage_index + 1, len(plan)):
            later, _ = plan[j]
            if later.layer is None or later.layer == cut.layer or not later.prefix <= cut.prefix:
                continue
            if any(later.prefix & plan[k][1] for k in range(stage_index, j)):
                continue
            if all(later.layer != c.layer for c in out):
                out.append(later)
        return out

    def features(self, model, cut: Cut, stage_index: int = -1) -> dict:
        """Returns {"train": [view arrays], "val": array} for the cut, from the cache or computed now (with the
        caches of later stages' cuts that the same pass can fill)."""
        t_start = time.perf_counter()
        try:
            return self._features(model, cut, stage_index)
        finally:
            self.seconds += time.perf_counter() - t_start

    def _features(self, model, cut: Cut, stage_index: int) -> dict:
        store = FeatureStore(cache_root() / self.prefix_key(model, cut))
        folder = store.set_folder(self.set_key)
        if self._complete(folder):
            return self._hit(folder, cut)
        with entry_lock(store.folder):
            if self._complete(folder):  # another run filled it while this one waited for the lock
                return self._hit(folder, cut)
            with contextlib.ExitStack() as held:
                # later stages' cuts that the same pass can fill: each under its own lock, taken without waiting
                # (a run holding one fills it itself), so two runs never wait on each other in a circle
                extras = []
                for c in self._extras(stage_index, cut):
                    s = FeatureStore(cache_root() / self.prefix_key(model, c))
                    if not self._complete(s.set_folder(self.set_key)) \
                            and held.enter_context(entry_lock(s.folder, wait=False)) \
                            and not self._complete(s.set_folder(self.set_key)):
                        extras.append((c, s))
                self._fill(model, [(cut, store), *extras])
        return self._load(folder)

    def _complete(self, folder: Path) -> bool:
        """A set that exists whole and holds every array this run wants."""
        try:
            files = json.loads((folder / "meta.json").read_text())["files"]
        except (OSError, ValueError, KeyError):
            return False
        want = self._items()
        return len(files["train"]) == self.views and all(s in files for s in want if not s.startswith("train"))

    def _hit(self, folder: Path, cut: Cut) -> dict:
        self.hits += 1
        self.log(f"    cache hit: {folder} ({cut.layer})")
        return self._load(folder)

    def _fill(self, model, cuts: list) -> None:
        """Computes what the stores of `cuts` (a list of (cut, store)) lack in one pass over those images, then
        assembles this run's set in each (the caller holds the stores' locks)."""
        items = self._items()
        for _, store in cuts:
            store.remove_incomplete()
        indexes = [store.index() for _, store in cuts]
        wanted = [item for name in items for item in items[name]]
        missing = list(dict.fromkeys(i for i in wanted if any(i not in index for index in indexes)))
        total, seconds = self._compute(model, cuts, set(missing)) if missing else (0, 0.0)
        files = {"train": [f"train-{v}.npy" for v in range(self.views)],
                 **{name: f"{name}.npy" for name in items if not name.startswith("train")}}
        meta = {"files": files, "images": len(wanted), "computed": total, "dtype": self.dtype,
                "seconds": round(seconds, 3)}
        finals = [store.assemble(self.set_key, items, dict(meta, cut=c.layer)) for c, store in cuts]
        also = f" (and {', '.join(c.layer for c, _ in cuts[1:])} for later stages)" if len(cuts) > 1 else ""
        reused = len(set(wanted)) - len(missing)
        if total:
            self.misses += 1
            self.log(f"    cache miss: computed {total} feature maps at {cuts[0][0].layer}{also} in {seconds:.1f}s "
                     f"({total / max(seconds, 1e-9):.1f} img/s)"
                     + (f", {reused} already stored" if reused else "")
                     + f" into {', '.join(str(f) for f in finals)}")
        else:
            self.hits += 1
            self.log(f"    cache hit: the features of all {reused} images at {cuts[0][0].layer}{also} were stored "
                     f"by earlier runs (other splits): assembled into {', '.join(str(f) for f in finals)}, no "
                     "image pass")

    def _compute(self, model, cuts: list, missing: set) -> tuple[int, float]:
        """One pass of the prefix over the images whose items are `missing`, one new shard per store.

        Returns:
            (feature maps computed, seconds).
        """
        import keras

        prefix = keras.Model(model.inputs, [model.get_layer(c.layer).output for c, _ in cuts],
                             name=f"{model.name}_prefix")
        forward = compiled_forward(prefix)
        stores = [store for _, store in cuts]
        rows = self.data.rows
        plain = {}  # sha -> path, unaugmented items in manifest order (each content once)
        for r in rows:
            sha = self._sha(r)
            if sha in missing and sha not in plain:
                plain[sha] = r["path"]
        train_items = self._items()
        views = [v for v in range(self.views) if self.views > 1
                 and any(i in missing for i in train_items[f"train-{v}"])]
        total = len(plain) + sum(len(train_items[f"train-{v}"]) for v in views)
        t0 = time.time()
        bar = Bar(total, f"caching features at {', '.join(c.layer for c, _ in cuts)}", show=self.progress)
        passes = []
        if plain:
            passes.append((list(plain), decoded_batches(list(plain.values()), self.image_size, self.resize,
                                                        self.batch_size)))
        for v in views:  # augmented views: the training pipeline's augmentation, seeded per view, whole
            passes.append((train_items[f"train-{v}"],
                           self.data.dataset("train", batch_size=self.batch_size, image_size=self.image_size,
                                             resize=self.resize, shuffle=False, augment=self.augment,
                                             seed=self.seed * 7919 + v)))
        with one_pass_graphs():  # the prefix's function runs this pass only
            for names, batches in passes:
                shards = [store.new_shard() for store in stores]
                extract_features(forward, batches, len(names), shards, self.dtype, bar.update)
                for shard in shards:
                    FeatureStore.commit(shard, names)
        bar.close()
        return total, time.time() - t0

    def predict(self, model, split: str = "test", batch_size: int = 64):
        """`model`'s outputs for a split, computed from cached features when a planned cut's stored prefix is
        still `model`'s (same key: same prefix weights), else None.

        Returns:
            (np.ndarray of outputs, cut layer name) or None.
        """
        cuts = {c.layer: c for c, _ in self.planned if c.layer is not None}
        for cut in sorted(cuts.values(), key=lambda c: len(c.suffix)):  # the smallest suffix first
            folder = cache_root() / self.key(model, cut)
            if not (folder / "meta.json").exists():
                continue
            meta = json.loads((folder / "meta.json").read_text())
            if split not in meta["files"]:
                continue
            feats = np.load(folder / meta["files"][split], mmap_mode="r")
            # the suffix the stage trained and its compiled forward, already traced when an earlier split
            # (validation) was predicted: the final passes add no model and no trace
            fitter = self.fitters.get(cut.layer)
            if fitter is not None and fitter.suffix is not None:
                forward = fitter.forward()
            else:
                suffix = suffix_model(model, cut)  # held here: the compiled function refers to it weakly
                forward = compiled_forward(suffix)
            outs = [np.asarray(forward(np.asarray(feats[i:i + batch_size], dtype="float32")))
                    for i in range(0, len(feats), batch_size)]
            return np.concatenate(outs), cut.layer
        return None

    def _load(self, folder: Path) -> dict:
        meta = json.loads((folder / "meta.json").read_text())
        files = meta["files"]
        sizes = sum((folder / f).stat().st_size for f in files["train"])
        sizes += (folder / files["val"]).stat().st_size if "val" in files else 0
        mode = None if sizes <= self.budget else "r"  # in memory under the budget, memory-mapped above it
        out = {"train": [np.load(folder / f, mmap_mode=mode) for f in files["train"]]}
        if "val" in files:
            out["val"] = np.load(folder / files["val"], mmap_mode=mode)
        return out
