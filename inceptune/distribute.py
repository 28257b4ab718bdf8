"""Data-parallel and multi-worker training on TensorFlow's own distribution engines (the recipe's `distribute:`).

inceptune adds no distribution machinery of its own: `mirrored` is `tf.distribute.MirroredStrategy` (the GPUs,
or logical devices, of one machine), `multi-worker` is `tf.distribute.MultiWorkerMirroredStrategy` (the machines
named by the `TF_CONFIG` environment variable), and `auto` picks `mirrored` when more than one GPU is visible.
`jax-data-parallel` (Keras 3's `keras.distribution.DataParallel`) is refused with a clear error: the trainer's
feature cache, inference and checkpoints are written on TensorFlow (`tf.data`, `tf.function`), so a JAX run is
not implemented.

What runs where (README "Beyond one device"):

- The model, each stage's compile and its optimizer are built inside `strategy.scope()`, so every variable is
  mirrored on each replica. `data.batch_size` is the **global** batch: Keras's `fit` splits every batch into
  batch / replicas per replica, and the optimizer applies the gradients the strategy all-reduced. The learning
  rate is never rescaled unless the recipe asks (`scale_lr: linear`: lr times the replicas).
- Stages on cached features (`cache.py`'s loop over Keras's `train_step`) run that same `train_step` on every
  replica through `strategy.run` (`replicated_step`): each replica gets its slice of the global batch, and the
  gradients are all-reduced by the strategy, never by hand.
- The feature pass of the cache, calibration, the test predictions and the report run on one device in each
  process (the prefix is frozen: no gradients to share). Under `multi-worker` every worker computes them in its
  own process (on one machine, or a shared cache folder, the first worker fills the cache entry and the others
  read it: entries are locked, `cache.entry_lock`), and only the chief writes the run folder.
- Checkpoints follow TensorFlow's fault-tolerance pattern (`keras.callbacks.BackupAndRestore`): the chief writes
  them into the run folder; every other worker writes into a temporary folder it removes at the end
  (`worker_folder`). To resume, every worker restarts with `--resume`: each reads the chief's last complete epoch
  (the run folder must be on a file system all workers can read, as BackupAndRestore's `backup_dir`).

Importing this module does not import TensorFlow; `setup_distribution` does, except for `strategy: none`.

Example:
    dist = setup_distribution(recipe.distribute)     # Distribution; LOCAL for strategy none
    with dist.scope():
        model = build_model(...)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from inceptune.choices import DISTRIBUTE_STRATEGIES
from inceptune.errors import RecipeError

__all__ = ["Distribution", "LOCAL", "setup_distribution", "split_cpu", "read_tf_config", "worker_folder",
           "replicated_step", "current_strategy", "SUPPORTED"]

SUPPORTED = tuple(s for s in DISTRIBUTE_STRATEGIES if s != "jax-data-parallel")  # what a run can use today

_TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}\'')


@dataclasses.dataclass(frozen=True)
class Distribution:
    """How a run is distributed, once its strategy is set up.

    Attributes:
        name: str. `none`, `mirrored` or `multi-worker` (`auto` resolved).
        strategy: the tf.distribute.Strategy, or None for one device (then nothing of TensorFlow is touched).
        replicas: int. Replicas in sync (devices over all workers).
        devices: tuple of str. This process's devices (`CPU:0`, `GPU:1`, ...); empty for `none`.
        is_chief: bool. This process writes the run folder (always True but for non-chief workers).
        worker: str. `worker 1 of 2` under multi-worker, else "".
        scale_lr: str. `none` or `linear`.
        notes: tuple of str. Lines for the run's log (what `auto` chose, a mirrored run on one replica).
    """

    name: str = "none"
    strategy: object = None
    replicas: int = 1
    devices: tuple = ()
    is_chief: bool = True
    worker: str = ""
    scale_lr: str = "none"
    notes: tuple = ()

    def scope(self):
        """`strategy.scope()`, or a no-op context for one device."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def lr_factor(self) -> float:
        """What each stage's lr is multiplied by: the replicas under `scale_lr: linear`, else 1."""
        return float(self.replicas) if self.scale_lr == "linear" else 1.0

    def stage(self, stage):
        """The stage with its learning rate scaled (`scale_lr: linear`); the same object otherwise."""
        if self.lr_factor == 1.0:
            return stage
        return dataclasses.replace(stage, lr=stage.lr * self.lr_factor)

    def summary(self, batch_size: int) -> str:
        """One line for the run's log: the strategy, its devices, the global and per-replica batch, the lr rule."""
        where = ", ".join(self.devices) or "one device"
        who = f", {self.worker}{' (chief)' if self.is_chief else ''}" if self.worker else ""
        lr = (f"each stage's lr x{self.replicas:g} (scale_lr: linear)" if self.scale_lr == "linear"
              else "lr as written (scale_lr: none)")
        per = batch_size / self.replicas
        return (f"distribute: {self.name} on {where}{who}: {self.replicas} replicas; global batch {batch_size} = "
                f"{per:g} per replica; {lr}")

    def batch_warnings(self, batch_size: int, train_images: int) -> list[str]:
        """Where the split of a stage's batches is not even (a smaller last batch weighs differently)."""
        if self.replicas <= 1:
            return []
        out = []
        if batch_size % self.replicas:
            out.append(f"the batch of {batch_size} does not divide into {self.replicas} replicas: the replicas get "
                       f"unequal shares. HINT: use a batch size that is a multiple of {self.replicas}.")
        rest = train_images % batch_size
        if rest:
            out.append(f"the last batch of each epoch has {rest} images: tf.distribute averages each replica's "
                       "share separately, so that one step weighs its images differently from a single-device run "
                       "(the others are identical).")
        return out


LOCAL = Distribution()

# strategies created in this process, by configuration: TensorFlow configures collectives once per process
_CREATED: dict = {}


def _backend() -> str:
    import keras

    return keras.backend.backend()


def read_tf_config(environ=None) -> dict:
    """The `TF_CONFIG` environment variable, checked: a cluster of workers (and maybe a chief) and this task.

    Returns:
        dict with `cluster` and `task` (`type`, `index`).

    Raises:
        RecipeError: (key `distribute.strategy`) it is missing, not JSON, or does not name this task.
    """
    environ = os.environ if environ is None else environ
    key = "distribute.strategy"
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        raise RecipeError(f"{key}: multi-worker needs the TF_CONFIG environment variable, which names every worker "
                          f"and this process's place among them; it is not set. HINT: on each machine set e.g. "
                          f"{_TF_CONFIG_EXAMPLE} (index 1 on the second machine), or use strategy: mirrored for the "
                          "devices of one machine.", key=key)
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(f"{key}: TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}). HINT: write it "
                          f"as {_TF_CONFIG_EXAMPLE}.", key=key) from exc
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    ok = (isinstance(cluster, dict) and isinstance(cluster.get("worker", []), list)
          and isinstance(task, dict) and task.get("type") in cluster
          and isinstance(task.get("index"), int) and 0 <= task["index"] < len(cluster[task["type"]]))
    if not ok:
        raise RecipeError(f"{key}: TF_CONFIG must hold a cluster of workers and this process's task in it, got "
                          f"{text[:200]}. HINT: write it as {_TF_CONFIG_EXAMPLE}.", key=key)
    return cfg


def _is_chief(cfg: dict) -> bool:
    task = cfg["task"]
    if "chief" in cfg["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def split_cpu(n: int) -> None:
    """Splits the CPU into `n` logical devices (`CPU:0` ... `CPU:n-1`), so that `mirrored` can be tried, tested
    and benchmarked on a machine without GPUs. Must be called before TensorFlow initialises its devices.

    Raises:
        RuntimeError: TensorFlow's devices are already initialised in this process.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def _logical(kind: str | None = None) -> list[str]:
    import tensorflow as tf

    names = []
    for d in tf.config.list_logical_devices(kind):
        name = d.name.rsplit("device:", 1)[-1]
        names.append(name.upper())
    return names


def setup_distribution(cfg) -> Distribution:
    """Sets up the recipe's `distribute:` section for this process (called once at the start of a run).

    Args:
        cfg: the recipe's `DistributeConfig`.

    Returns:
        A `Distribution`; `LOCAL` for `strategy: none` (TensorFlow is not imported for it).

    Raises:
        RecipeError: naming the key: `jax-data-parallel` (not implemented; on the TensorFlow backend it cannot
            run at all), a device that does not exist (`distribute.devices[i]`), a missing or malformed
            `TF_CONFIG`, a strategy created too late in the process.
    """
    strategy = cfg.strategy
    if strategy == "none" and cfg.scale_lr == "none":
        return LOCAL
    if strategy == "none":
        return dataclasses.replace(LOCAL, scale_lr=cfg.scale_lr)
    key = "distribute.strategy"
    backend = _backend()
    supported = ", ".join(SUPPORTED)
    if strategy == "jax-data-parallel":
        if backend != "jax":
            raise RecipeError(f"{key}: jax-data-parallel is Keras's DataParallel on the JAX backend, and this process "
                              f"runs the {backend} backend. Supported here: {supported}. HINT: use strategy: "
                              "mirrored (the GPUs of one machine) or multi-worker (several machines, TF_CONFIG).",
                              key=key)
        raise RecipeError(f"{key}: jax-data-parallel is not implemented: inceptune's trainer, feature cache and "
                          "inference run on TensorFlow (tf.data, tf.function), so it trains on the TensorFlow backend "
                          f"only. Supported: {supported}, with KERAS_BACKEND=tensorflow. HINT: unset KERAS_BACKEND "
                          "(or set it to tensorflow) and use strategy: mirrored or multi-worker.", key=key)
    if backend != "tensorflow":
        raise RecipeError(f"{key}: {strategy} is a TensorFlow strategy (tf.distribute), and this process runs the "
                          f"{backend} backend. HINT: set KERAS_BACKEND=tensorflow.", key=key)
    notes = []
    if strategy == "auto":
        gpus = _logical("GPU")
        if len(gpus) < 2:
            notes.append(f"distribute: auto found {len(gpus)} GPU{'s' if len(gpus) != 1 else ''}: training on one "
                         "device (strategy none)")
            return dataclasses.replace(LOCAL, scale_lr=cfg.scale_lr, notes=tuple(notes))
        strategy, devices = "mirrored", tuple(gpus)
    else:
        devices = tuple(cfg.devices)
    import tensorflow as tf

    if strategy == "mirrored":
        available = _logical()
        for i, dev in enumerate(devices):
            if dev not in available:
                k = f"distribute.devices[{i}]"
                raise RecipeError(
                    f"{k}: no device {dev} on this machine ({len(devices)} devices listed); it has "
                    f"{', '.join(available)}. HINT: list only these, or leave devices out to use every GPU; without "
                    "GPUs, inceptune.distribute.split_cpu(N) splits the CPU into N logical devices before "
                    "TensorFlow starts (for trying the code path: it does not make training faster).", key=k)
        ident = ("mirrored", devices)
        if ident not in _CREATED:
            _CREATED[ident] = tf.distribute.MirroredStrategy([f"/{d.lower()}" for d in devices] or None)
        strat = _CREATED[ident]
        used = devices or tuple(d.rsplit("device:", 1)[-1].upper() for d in strat.extended.worker_devices)
        if strat.num_replicas_in_sync < 2:
            notes.append(f"distribute: mirrored has one device here ({', '.join(used)}): it runs as one replica. "
                         "HINT: mirrored pays off with several GPUs")
        return Distribution("mirrored", strat, strat.num_replicas_in_sync, used, True, "", cfg.scale_lr, tuple(notes))
    # multi-worker
    tf_config = read_tf_config()
    ident = ("multi-worker", os.environ["TF_CONFIG"])
    if ident not in _CREATED:
        try:
            _CREATED[ident] = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as exc:
            raise RecipeError(f"{key}: multi-worker could not start: {exc}. HINT: the strategy must be created before "
                              "TensorFlow runs anything in the process: run `inceptune train` in a fresh process (or "
                              "call inceptune.train before any other TensorFlow code).", key=key) from exc
    strat = _CREATED[ident]
    task = tf_config["task"]
    workers = sum(len(v) for k, v in tf_config["cluster"].items() if k in ("chief", "worker"))
    local = tuple(d.rsplit("device:", 1)[-1].upper() for d in strat.extended.worker_devices)
    return Distribution("multi-worker", strat, strat.num_replicas_in_sync, local, _is_chief(tf_config),
                        f"{task['type']} {task['index']} of {workers}", cfg.scale_lr, tuple(notes))


@contextlib.contextmanager
def worker_folder(out, resume: bool):
    """The run folder of a non-chief worker: a temporary folder, removed when the block ends.

    With `resume`, the chief's last complete epoch is copied in first (its `recipe.yaml`, `manifest.csv`,
    `labels.json`, `history.csv`, `checkpoints/state.json` and the checkpoint files it names), so the worker
    resumes from the same epoch as the chief (BackupAndRestore's pattern: the chief's backup, read by all).
    """
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix="inceptune-worker-"))
    try:
        if resume:
            for name in ("recipe.yaml", "manifest.csv", "skipped.csv", "labels.json", "history.csv"):
                if (out / name).exists():
                    shutil.copy2(out / name, tmp / name)
            (tmp / "checkpoints").mkdir()
            state = json.loads((out / "checkpoints" / "state.json").read_text())
            for field in ("base", "weights", "optimizer", "best_weights", "es_weights", "ema_weights"):
                name = state.get(field)
                if name and (out / "checkpoints" / name).exists():
                    shutil.copy2(out / "checkpoints" / name, tmp / "checkpoints" / name)
            shutil.copy2(out / "checkpoints" / "state.json", tmp / "checkpoints" / "state.json")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def current_strategy():
    """The tf.distribute strategy whose scope is open, or None (no scope, or TensorFlow not loaded)."""
    import sys

    if "tensorflow" not in sys.modules:
        return None
    import tensorflow as tf

    return tf.distribute.get_strategy() if tf.distribute.has_strategy() else None


def replicated_step(strategy, step):
    """Runs `step(*batch)` (a Keras `train_step` or `test_step` on one batch) on every replica of `strategy`.

    The returned function takes a global batch of NumPy arrays, gives each replica its slice (`np.array_split`,
    as tf.data splits a batch), runs `step` under `strategy.run` (where Keras's optimizer all-reduces the
    gradients and its metrics sum their state over the replicas) and returns the metrics averaged over the
    replicas, as Keras's `fit` does.

    Args:
        strategy: tf.distribute.Strategy. step: callable on per-replica tensors, returning a dict of metrics.

    Returns:
        callable(*arrays) -> dict of tensors.
    """
    import numpy as np
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    @tf.function(reduce_retracing=True, autograph=False)
    def _run(*batch):
        out = strategy.run(step, args=batch)
        return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), out)

    def call(*arrays):
        arrays = [np.asarray(a) for a in arrays]
        parts = [np.array_split(a, replicas) for a in arrays]
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx: tuple(p[ctx.replica_id_in_sync_group] for p in parts))
        return _run(*values)

    return call
