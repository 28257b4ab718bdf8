"""The staged fine-tuning runner: one declarative, resumable run per recipe (DESIGN.md §4, §6, §7).

For each stage: select what trains (everything else frozen) and apply the BatchNorm policy, build the optimizer
with its schedule and per-variable learning-rate multipliers, recompile, fit epoch by epoch, record, check
early stopping, and checkpoint. Each epoch is one `fit` call on a dataset seeded by (seed, stage, epoch), so a
run killed at any point and resumed with `--resume` replays exactly the same batches and reaches the same
weights as an uninterrupted run.

Run folder (contract, DESIGN.md §7): `recipe.yaml` (resolved), `manifest.csv`, `skipped.csv`, `labels.json`,
`history.csv`, `checkpoints/`, `tensorboard/`, `model.keras` (best by the run's monitor), `metrics.json`
(test split), `report.html`, `log.txt`. Every file is written atomically (temp file, then rename);
`checkpoints/state.json` is written last and names the checkpoint files of the last complete epoch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from inceptune._io import atomic_path, atomic_write_text, prepare_output_dir
from inceptune.errors import InceptuneError, RecipeError

__all__ = ["train", "Run", "build_model", "compile_stage", "make_optimizer", "stage_lr_multipliers"]

HISTORY_COLUMNS = ("stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "cached")
STATE_VERSION = 2  # 2: checkpoints are a base file plus per-epoch changes


@dataclass
class Run:
    """The result of `train`.

    Attributes:
        dir: Path of the run folder. model: the trained keras.Model (best weights). labels: class names.
        metrics: the test metrics (`metrics.json`) or None when there is no test split.
        history: list of dict, one per epoch (as `history.csv`). recipe: the resolved `Recipe`.
    """

    dir: Path
    model: object
    labels: list
    metrics: dict | None
    history: list
    recipe: object
    log: list = field(default_factory=list)

    @property
    def model_path(self) -> Path:
        return self.dir / "model.keras"

    @property
    def report_path(self) -> Path:
        return self.dir / "report.html"


# === small I/O helpers ===

class _Weights:
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

    def __init__(self, model, folder: Path, base: str | None = None):
        self.model, self.folder, self.base_name = model, folder, base
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
            with atomic_path(self.folder / self.base_name) as tmp:
                np.savez(tmp, **{f"v{i}": a for i, a in enumerate(values)})
            self._base = values
        base = self._base_values()
        changed = {}
        for i in sorted(self.watch):
            value = variables[i].numpy()
            if not np.array_equal(value, base[i]):
                changed[f"v{i}"] = value
        with atomic_path(self.folder / name) as tmp:
            np.savez(tmp, **changed)

    def load(self, name: str) -> None:
        """Restores the weights saved as `name` (the base plus that file's changes; a run folder written before
        the base existed holds full files)."""
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


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # checkpoint files are never modified in place, so a hard link is a safe copy
    except OSError:
        shutil.copyfile(src, dst)


def _history_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in HISTORY_COLUMNS})
    return buf.getvalue()


class _Phases:
    """Wall time per phase of a run (build, features, training, checkpoints, test, report), for the log."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def timer():
            t = time.perf_counter()
            try:
                yield
            finally:
                self.add(name, time.perf_counter() - t)

        return timer()

    def line(self) -> str:
        total = sum(self.seconds.values())
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items() if v >= 0.05)
        return f"time: {total:.1f}s ({parts})"


class _Log:
    """Prints progress and appends it to `log.txt`."""

    def __init__(self, path: Path | None, verbose: bool):
        self.path, self.verbose, self.lines = path, verbose, []
        if path is not None and path.exists():
            self.lines = path.read_text(encoding="utf-8").splitlines()

    def __call__(self, text: str = "") -> None:
        new = str(text).splitlines() or [""]
        self.lines.extend(new)
        if self.verbose:
            print(text, flush=True)
        if self.path is not None:  # appended line by line: a killed run keeps every line written before
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(new) + "\n")


# === model ===

def resolve_image_size(recipe) -> int:
    from inceptune.architectures import ARCHITECTURES

    size = recipe.model.image_size or getattr(recipe.data, "image_size", None)
    if size:
        return int(size)
    spec = ARCHITECTURES.get(recipe.model.backbone)
    return spec.default_size if spec else 224


def build_model(model_cfg, num_classes: int, image_size: int, *, seed: int = 0):
    """Builds the recipe's classifier: backbone → preprocessing → head, then skips and inserted blocks.

    Args:
        model_cfg: the recipe's `ModelConfig`. num_classes: int. image_size: int. seed: int.

    Returns:
        A flat functional keras.Model.
    """
    import keras

    from inceptune.architectures import load_backbone
    from inceptune.heads import build_classifier

    keras.utils.set_random_seed(seed)
    backbone = load_backbone(model_cfg.backbone, weights=model_cfg.weights, image_size=image_size)
    model = build_classifier(backbone, num_classes, head=model_cfg.head)
    if model_cfg.skips or model_cfg.insert:
        from inceptune import surgery

        for skip in model_cfg.skips:
            model = surgery.add_skip(model, skip.src, skip.dst, merge=skip.merge)
        for ins in model_cfg.insert:
            model = surgery.insert_after(model, ins.after, ins.block, name=ins.name, **dict(ins.params))
    return model


def stage_lr_multipliers(model, stage, bmap=None) -> dict[str, float]:
    """Maps variable paths to the stage's `lr_mult` factors (later selectors win where they overlap)."""
    from inceptune.selectors import resolve

    out: dict[str, float] = {}
    layers = {layer.name: layer for layer in model.layers}
    for selector, factor in stage.lr_mult.items():
        for name in resolve(model, selector, bmap=bmap):
            for v in layers[name].trainable_weights:
                out[v.path] = float(factor)
    return out


def make_optimizer(stage):
    """The Keras optimizer of a stage (its learning rate is set per step by the trainer)."""
    import keras

    kwargs = {"learning_rate": float(stage.lr)}
    if stage.weight_decay is not None:
        kwargs["weight_decay"] = float(stage.weight_decay)
    if stage.optimizer == "adam":
        return keras.optimizers.Adam(**kwargs)
    if stage.optimizer == "adamw":
        return keras.optimizers.AdamW(**kwargs)
    if stage.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=float(stage.momentum), **kwargs)
    raise RecipeError(f"unknown optimizer {stage.optimizer!r}. Allowed: adam, adamw, sgd.")


def compile_stage(model, stage, *, batchnorm: str = "frozen", bmap=None):
    """Applies a stage's `train` selector and the BatchNorm policy, then compiles with the stage's optimizer.

    Returns:
        (FreezeReport, optimizer).
    """
    from inceptune import freezing
    from inceptune.schedules import scale_updates
    from inceptune.selectors import resolve

    warns: list[str] = []
    selected = resolve(model, stage.train, bmap=bmap, warnings_out=warns)
    if not selected:
        raise RecipeError(
            f"stages[{stage.name}].train: the selector {stage.train!r} matches no layer of {model.name!r}. "
            f"HINT: `inceptune inspect {model.name.replace('_classifier', '')}` lists the blocks; 'head' trains the new head.")
    report = freezing.apply_trainable(model, selected, batchnorm=batchnorm, selector=f"train {stage.train}", bmap=bmap,
                                      warnings=tuple(warns))
    if report.trainable_params == 0:
        raise RecipeError(
            f"stage {stage.name!r}: train={stage.train!r} selects only layers without trainable weights under "
            f"batchnorm={batchnorm!r}, so nothing would train. HINT: select layers with weights (e.g. 'head').")
    optimizer = make_optimizer(stage)
    mult = stage_lr_multipliers(model, stage, bmap) if stage.lr_mult else {}
    scale_updates(optimizer, mult, model.trainable_variables)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return report, optimizer


# === the run ===

class _LrSetter:
    """Sets the optimizer's learning rate before every batch from the stage's pure schedule."""

    def __new__(cls, *args, **kwargs):
        import keras

        class _Callback(keras.callbacks.Callback):
            def __init__(self, spec, epoch, steps_per_epoch):
                super().__init__()
                self.spec, self.offset = spec, epoch * steps_per_epoch
                self.last = spec(self.offset)

            def on_train_batch_begin(self, batch, logs=None):
                self.last = self.spec(self.offset + batch)
                self.model.optimizer.learning_rate.assign(self.last)

        return _Callback(*args, **kwargs)


def _prepare_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    if resume:
        if not (out / "checkpoints" / "state.json").exists():
            raise InceptuneError(
                f"cannot resume: {out} has no checkpoints/state.json (no complete epoch was recorded). "
                f"HINT: start the run again without --resume (add --force to replace {out}).")
        return
    prepare_output_dir(out, force=force, kind="run", markers=("recipe.yaml", "checkpoints"),
                       hint="pass --resume to continue it, ")


def _epoch_seed(seed: int, stage_index: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + stage_index * 10_007 + epoch) % (2**31 - 1)


def _monitor_value(logs: dict, monitor: str) -> float | None:
    v = logs.get(monitor)
    return None if v is None else float(v)


def _improved(new: float, best: float | None, monitor: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    if "acc" in monitor or "auc" in monitor or "precision" in monitor or "recall" in monitor:
        return new > best + min_delta
    return new < best - min_delta


def default_run_dir(recipe_source) -> Path:
    stem = Path(str(recipe_source)).stem if isinstance(recipe_source, (str, os.PathLike)) else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(recipe, out=None, *, overrides=(), resume: bool = False, force: bool = False, verbose: bool = True,
          stop_after_epochs: int | None = None) -> Run:
    """Runs a recipe: data preparation, staged fine-tuning, checkpoints, test metrics and the report.

    Args:
        recipe: path to a YAML recipe, a dict, or a `Recipe`. With `resume=True` it may be None (the run
            folder's own `recipe.yaml` is used).
        out: run folder. Defaults to `runs/<recipe name>-<time>`.
        overrides: list of "key=value" strings (`--set`).
        resume: continue the run in `out` after its last complete epoch.
        force: replace an existing run folder in `out`.
        verbose: print progress. Defaults to True.
        stop_after_epochs: testing aid: stop (as if killed) after this many epochs in this call.

    Returns:
        A `Run`.
    """
    out = Path(out) if out is not None else default_run_dir(recipe)
    if not resume:
        from inceptune.recipe import Recipe, load_recipe

        # validate before touching the disk
        recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, list(overrides))
        overrides = ()
    existed = out.exists()
    _prepare_run_dir(out, resume=resume, force=force)
    try:
        return _train(recipe, out, overrides=overrides, resume=resume, verbose=verbose,
                      stop_after_epochs=stop_after_epochs)
    except BaseException:
        # a run that fails before its first complete epoch leaves nothing behind but its error
        if not resume and not (out / "checkpoints" / "state.json").exists():
            if existed:  # an empty folder the user made: keep it, remove what we wrote
                for p in out.iterdir():
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
        raise


def _train(recipe, out: Path, *, overrides, resume: bool, verbose: bool, stop_after_epochs) -> Run:
    import keras

    from inceptune import data as _data
    from inceptune.recipe import dump_recipe, load_recipe

    if resume:  # otherwise train() has already loaded and validated the recipe
        recipe = load_recipe(out / "recipe.yaml", list(overrides))
    (out / "checkpoints").mkdir(exist_ok=True)
    log = _Log(out / "log.txt", verbose)
    phases = _Phases()
    if not resume:
        dump_recipe(recipe, out / "recipe.yaml")
        log(f"inceptune run in {out}")
    else:
        log(f"resuming run in {out}")

    # === data ===
    data_cfg = recipe.data
    if resume:
        data_cfg = replace(data_cfg, dir=None, csv=None, manifest=str((out / "manifest.csv").resolve()))
    with phases("data"):
        data = _data.prepare(data_cfg, out, progress=verbose)
    log(f"data: {data.summary_line()}")
    for w in data.warnings:
        log(f"warning: {w}")
    labels = list(data.labels)
    image_size = resolve_image_size(recipe)
    batch_default = int(getattr(recipe.data, "batch_size", 32) or 32)
    has_val = len(data.paths("val")) > 0
    has_test = len(data.paths("test")) > 0
    balance = getattr(recipe.data, "balance", "none")
    augment = getattr(recipe.data, "augment", "none")
    resize = getattr(recipe.data, "resize", "stretch")

    # === model ===
    from inceptune.architectures import block_map

    with phases("build"):
        model = build_model(recipe.model, len(labels), image_size, seed=recipe.seed)
        bmap = block_map(model)
    log(f"model: {model.name}, {model.count_params():,} parameters, input {image_size}x{image_size}, "
        f"batchnorm={recipe.model.batchnorm}")

    ckpt = out / "checkpoints"
    state = {"version": STATE_VERSION, "stage": 0, "epoch": 0, "n": 0, "history": [], "es_best": None,
             "es_wait": 0, "es_weights": None, "best": None, "best_weights": None, "run_monitor": None}
    if resume:
        state = json.loads((ckpt / "state.json").read_text())
    weights = _Weights(model, ckpt, state.get("base"))
    if resume and state.get("weights"):
        weights.load(state["weights"])
    history: list[dict] = list(state["history"])
    run_monitor = state.get("run_monitor") or ("val_loss" if has_val else "loss")
    state["run_monitor"] = run_monitor

    cache_ctx = None
    if getattr(recipe.cache, "mode", "off") != "off":
        try:
            from inceptune import cache as _cache
        except ImportError:  # the cache module is optional at this stage of the project
            _cache = None
        if _cache is not None:
            cache_ctx = _cache.CacheContext(recipe, data, model, out, image_size=image_size, resize=resize, log=log)
            cache_ctx.plan(model, recipe.stages, recipe.model.batchnorm, bmap)

    epochs_run = 0
    for si, stage in enumerate(recipe.stages):
        if si < state["stage"]:
            continue
        start_epoch = state["epoch"] if si == state["stage"] else 0
        batch_size = int(stage.batch_size or batch_default)
        steps = data.steps_per_epoch("train", batch_size, balance if balance == "oversample" else "none")
        with phases("compile"):
            report, optimizer = compile_stage(model, stage, batchnorm=recipe.model.batchnorm, bmap=bmap)
        from inceptune.schedules import ScheduleSpec

        spec = ScheduleSpec(stage.lr, stage.schedule, total_steps=stage.epochs * steps,
                            warmup_steps=stage.warmup_epochs * steps, decay_steps=stage.decay_steps,
                            decay_rate=stage.decay_rate, steps_per_epoch=steps)
        log("")
        log(f"=== stage {si + 1}/{len(recipe.stages)} '{stage.name}': train {stage.train!r}, {stage.epochs} epochs, "
            f"lr {stage.lr:g} ({stage.schedule}{', warmup ' + str(stage.warmup_epochs) if stage.warmup_epochs else ''}), "
            f"{stage.optimizer}, {report.trainable_params:,} trainable / {report.frozen_params:,} frozen parameters")
        if stage.lr_mult:
            log(f"    lr_mult: {stage.lr_mult}")
        for w in report.warnings:
            log(f"    warning: {w}")
        # built on the full model's variables, in their order, so the checkpointed optimizer state lines up
        # whether the stage trains the model or a cached suffix sharing its layers
        optimizer.build(model.trainable_variables)
        weights.watch_stage()
        if start_epoch > 0:
            saved = np.load(ckpt / state["optimizer"])
            for i, var in enumerate(optimizer.variables):
                var.assign(saved[f"v{i}"])
        es = stage.early_stopping
        monitor = es.monitor if es else run_monitor
        if es and monitor.startswith("val_") and not has_val:
            log(f"    early stopping monitors {monitor!r} but there is no validation split: using 'loss'")
            monitor = "loss"
        fitter = cache_ctx.fitter(stage, si, model, bmap) if cache_ctx is not None else None
        if fitter is not None and fitter.reason:
            log(f"    cache: {fitter.reason}")
        stopped = False
        for epoch in range(start_epoch, stage.epochs):
            if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                log(f"stopping after {epochs_run} epochs as asked")
                return Run(out, model, labels, None, history, recipe, log.lines)
            t0 = time.time()
            eseed = _epoch_seed(recipe.seed, si, epoch)
            lr_cb = _LrSetter(spec, epoch, steps)
            callbacks = [lr_cb]
            if fitter is not None and fitter.active:
                logs = fitter.fit_epoch(epoch, eseed, batch_size, callbacks)
                cached = True
            else:
                cached = False
                train_ds = data.dataset("train", batch_size=batch_size, image_size=image_size, resize=resize,
                                        augment=augment, balance=balance, seed=eseed)
                val_ds = (data.dataset("val", batch_size=batch_size, image_size=image_size, resize=resize)
                          if has_val else None)
                try:
                    callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard" / stage.name),
                                                                 write_graph=False, update_freq="epoch"))
                except Exception:  # noqa: BLE001 - TensorBoard logging is optional
                    pass
                h = model.fit(train_ds, validation_data=val_ds, epochs=epoch + 1, initial_epoch=epoch,
                              callbacks=callbacks, shuffle=False,
                              verbose=1 if (verbose and sys.stdout.isatty()) else 0)
                logs = {k: float(v[-1]) for k, v in h.history.items()}
            phases.add("training", time.time() - t0)
            t_ckpt = time.perf_counter()
            row = {"stage": stage.name, "epoch": epoch + 1, "lr": lr_cb.last, "seconds": round(time.time() - t0, 3),
                   "cached": int(cached), **logs}
            history.append(row)
            epochs_run += 1
            shown = "  ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs)
            log(f"  {stage.name} epoch {epoch + 1}/{stage.epochs}  {shown}  lr {lr_cb.last:.3g}  "
                f"{row['seconds']:.1f}s{'  (cached features)' if cached else ''}")
            if monitor not in logs:
                raise RecipeError(
                    f"stages[{si}].early_stopping.monitor: {monitor!r} is not a logged metric. Available: "
                    f"{', '.join(sorted(logs))}. HINT: use val_loss or val_accuracy (needs a validation split).")

            # === checkpoint: files first, state.json last ===
            n = state["n"] + 1
            files = {"weights": f"epoch-{n}.weights.npz", "optimizer": f"epoch-{n}.optimizer.npz"}
            weights.save(files["weights"], n)
            state["base"] = weights.base_name
            with atomic_path(ckpt / files["optimizer"]) as tmp:
                np.savez(tmp, **{f"v{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
            value = _monitor_value(logs, run_monitor)
            if value is not None and _improved(value, state["best"], run_monitor):
                state["best"] = value
                state["best_weights"] = f"best-{n}.weights.npz"
                _link_or_copy(ckpt / files["weights"], ckpt / state["best_weights"])
            if es:
                v = logs[monitor]
                if _improved(v, state["es_best"], monitor, es.min_delta):
                    state["es_best"], state["es_wait"] = v, 0
                    state["es_weights"] = f"stage-best-{n}.weights.npz"
                    _link_or_copy(ckpt / files["weights"], ckpt / state["es_weights"])
                else:
                    state["es_wait"] += 1
                    stopped = state["es_wait"] > es.patience
            finished = stopped or epoch + 1 >= stage.epochs
            if finished:
                if es and es.restore_best and state["es_weights"]:
                    # the stage hands its best epoch to the next stage (Keras restores at train end too)
                    weights.load(state["es_weights"])
                    weights.save(files["weights"], n)
                    if stopped:
                        log(f"  early stopping: {monitor} did not improve for {es.patience + 1} epochs; "
                            f"restored the best epoch ({monitor} {state['es_best']:.4f})")
                state.update(stage=si + 1, epoch=0, es_best=None, es_wait=0, es_weights=None)
            else:
                state.update(stage=si, epoch=epoch + 1)
            state.update(n=n, weights=files["weights"], optimizer=files["optimizer"], history=history)
            atomic_write_text(out / "history.csv", _history_csv(history))
            atomic_write_text(ckpt / "state.json", json.dumps(state, indent=1, default=float))
            _clean_checkpoints(ckpt, state)
            phases.add("checkpoints", time.perf_counter() - t_ckpt)
            if stopped:
                break
        if stage.epochs == 0 or (start_epoch >= stage.epochs):
            state.update(stage=si + 1, epoch=0)
            atomic_write_text(ckpt / "state.json", json.dumps(state, indent=1, default=float))

    # === best model, test metrics, report ===
    if state.get("best_weights"):
        weights.load(state["best_weights"])
        log(f"\nbest epoch by {run_monitor}: {state['best']:.4f}")

    with phases("save"):
        # an uncompiled model over the same layers (no optimizer state in model.keras); building it takes
        # milliseconds, where cloning every layer took ~2 s for InceptionV3
        clean = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs,
                            model.outputs[0] if len(model.outputs) == 1 else model.outputs, name=model.name)
        with atomic_path(out / "model.keras") as tmp:
            clean.save(tmp)
    metrics = None
    y_true = probs = None
    if has_test:
        from inceptune import evaluate as _evaluate

        with phases("test"):
            cached_probs = cache_ctx.predict(model, "test") if cache_ctx is not None else None
            if cached_probs is not None:
                probs = cached_probs[0]
                log(f"test predictions from the cached features at {cached_probs[1]!r}")
            else:
                test_ds = data.dataset("test", batch_size=batch_default, image_size=image_size, resize=resize)
                probs = _evaluate.predict_proba(model, test_ds)
            y_true = data.label_ids("test")
            metrics = _evaluate.compute_metrics(y_true, probs, labels, paths=data.paths("test"))
            _evaluate.write_metrics(metrics, out / "metrics.json")
        log(_summary_table(history, metrics))
    else:
        log("no test split: metrics.json not written (set data.split.test > 0)")
    try:
        from inceptune import report as _report

        with phases("report"):
            _report.write_report(out, metrics=metrics, history_csv=out / "history.csv", recipe=out / "recipe.yaml",
                                 manifest_rows=out / "manifest.csv", skipped=out / "skipped.csv",
                                 warnings=list(data.warnings), title=f"inceptune run {out.name}")
        log(f"report: {out / 'report.html'}")
    except ImportError:
        pass
    if cache_ctx is not None and cache_ctx.seconds:
        phases.add("training", -cache_ctx.seconds)  # the feature pass ran inside the first cached epoch
        phases.add("features", cache_ctx.seconds)
    log(phases.line())
    return Run(out, model, labels, metrics, history, recipe, log.lines)


def _clean_checkpoints(ckpt: Path, state: dict) -> None:
    keep = {state.get(k) for k in ("base", "weights", "optimizer", "best_weights", "es_weights")} | {"state.json"}
    for p in ckpt.iterdir():
        if p.name not in keep and not p.name.startswith("tmp-"):
            p.unlink(missing_ok=True)


def _summary_table(history: list[dict], metrics: dict) -> str:
    lines = ["", "stage          epochs  last loss  last acc  best val_acc"]
    stages: dict[str, list[dict]] = {}
    for r in history:
        stages.setdefault(r["stage"], []).append(r)
    for name, rows in stages.items():
        last = rows[-1]
        val = [r.get("val_accuracy") for r in rows if r.get("val_accuracy") is not None]
        lines.append(f"{name:<14} {len(rows):>6}  {last.get('loss', math.nan):>9.4f}  {last.get('accuracy', math.nan):>8.4f}  "
                     f"{(max(val) if val else math.nan):>12.4f}")
    acc = metrics.get("accuracy")
    lines.append(f"test accuracy {acc:.4f}" if isinstance(acc, float) else f"test metrics: {list(metrics)[:5]}")
    return "\n".join(lines)
