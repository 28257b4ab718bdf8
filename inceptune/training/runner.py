"""The staged fine-tuning runner: one declarative, resumable run per recipe (DESIGN.md §4, §6, §7).

`train` runs a recipe as a few named steps over one `RunState`: prepare the data, build the model, plan the
feature caches, then for each stage compile it (select what trains, the BatchNorm policy, the optimizer with its
schedule and per-variable learning rates) and run its epochs, each followed by a checkpoint; finally the best
weights become `model.keras`, the test split is scored and the report written. Each epoch is seeded by
(seed, stage, epoch), so a run killed at any point and resumed with `--resume` replays exactly the same batches
and reaches the same weights as an uninterrupted run.

Run folder (contract, DESIGN.md §7): `recipe.yaml` (resolved), `manifest.csv`, `skipped.csv`, `labels.json`,
`history.csv`, `checkpoints/`, `tensorboard/`, `model.keras` (best by the run's monitor), `metrics.json`
(test split), `report.html`, `log.txt`. Every file is written atomically (temp file, then rename);
`checkpoints/state.json` is written last and names the checkpoint files of the last complete epoch.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

from inceptune import evaluate, report
from inceptune._io import atomic_path, atomic_write_text, prepare_output_dir
from inceptune.architectures import block_map
from inceptune.cache import CacheContext
from inceptune.data import prepare
from inceptune.data.sources import class_counts
from inceptune.errors import InceptuneError, RecipeError
from inceptune.inference import predict_proba
from inceptune.progress import Bar
from inceptune.recipe import DefaultRecipe, Recipe, default_recipe, dump_recipe, load_recipe
from inceptune.recipe.defaults import NO_PRETRAINED
from inceptune.recipe.overrides import parse_override
from inceptune.schedules import ScheduleSpec
from inceptune.training.checkpoints import CheckpointWeights, RunState, epoch_seed, load_optimizer, save_optimizer
from inceptune.training.records import Phases, RunLog, history_csv, summary_table
from inceptune.training.tracking import BestEpoch, EarlyStopper

__all__ = ["train", "Run", "default_run_dir"]

# Keras (and what builds models) is imported inside the steps that need it, once the run has started: the run's
# first lines print at once instead of after the ~8 s TensorFlow import.


@dataclasses.dataclass
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
    log: list = dataclasses.field(default_factory=list)

    @property
    def model_path(self) -> Path:
        return self.dir / "model.keras"

    @property
    def report_path(self) -> Path:
        return self.dir / "report.html"


def default_run_dir(recipe_source) -> Path:
    """`runs/<recipe file name>-<date>-<time>` (`runs/run-...` for a recipe given as a dict)."""
    stem = Path(str(recipe_source)).stem if isinstance(recipe_source, (str, os.PathLike)) else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(recipe, out=None, *, overrides=(), resume: bool = False, force: bool = False, verbose: bool = True,
          backbone: str | None = None, epochs: int | None = None, image_size: int | None = None,
          stop_after_epochs: int | None = None) -> Run:
    """Runs a recipe: data preparation, staged fine-tuning, checkpoints, test metrics and the report.

    Args:
        recipe: path to a YAML recipe, a dict, or a `Recipe`; or an image folder (one sub-folder per class) or a
            CSV (`path,label[,split]`), which runs the default recipe sized to the data
            (`inceptune.recipe.default_recipe`). With `resume=True` it may be None (the run folder's own
            `recipe.yaml` is used).
        out: run folder. Defaults to `runs/<recipe or folder name>-<time>`.
        overrides: list of "key=value" strings (`--set`).
        resume: continue the run in `out` after its last complete epoch.
        force: replace an existing run folder in `out`.
        verbose: print progress. Defaults to True.
        backbone, epochs, image_size: for a folder or CSV only: the default recipe's backbone (defaults to
            inception_v3), epochs per stage (defaults to a number chosen from the data) and input side
            (defaults to the backbone's).
        stop_after_epochs: testing aid: stop (as if killed) after this many epochs in this call.

    Returns:
        A `Run`.
    """
    out = Path(out) if out is not None else default_run_dir(recipe)
    if resume:
        if not (out / "checkpoints" / "state.json").exists():
            raise InceptuneError(
                f"cannot resume: {out} has no checkpoints/state.json (no complete epoch was recorded). "
                f"HINT: start the run again without --resume (add --force to replace {out}).")
        return _Runner(load_recipe(out / "recipe.yaml", list(overrides)), out, resume=True, verbose=verbose,
                       stop_after_epochs=stop_after_epochs).run()
    notes = []
    if _is_data_source(recipe):
        default = _default_recipe(recipe, overrides, backbone, epochs, image_size)
        recipe, notes = default.raw, [default.summary]
    elif (backbone, epochs, image_size) != (None, None, None):
        raise RecipeError("backbone, epochs and image_size choose the default recipe of a data folder or CSV; a "
                          "recipe names its own. HINT: use --set model.backbone=NAME, --set stages[0].epochs=N or "
                          "--set model.image_size=S with a recipe file.")
    # validate before touching the disk
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, list(overrides))
    existed = out.exists()
    prepare_output_dir(out, force=force, kind="run", markers=("recipe.yaml", "checkpoints"),
                       hint="pass --resume to continue it, ")
    try:
        return _Runner(recipe, out, resume=False, verbose=verbose, stop_after_epochs=stop_after_epochs,
                       notes=notes).run()
    except BaseException:
        # a run that fails before its first complete epoch leaves nothing behind but its error
        if not (out / "checkpoints" / "state.json").exists():
            if existed:  # an empty folder the user made: keep it, remove what we wrote
                for p in out.iterdir():
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
        raise


def _epoch_name(state: RunState) -> str:
    """`stage 'top', epoch 3 (run epoch 13), ` for the best epoch; empty for runs checkpointed before it was kept."""
    if not state.best_epoch or state.best_epoch > len(state.history):
        return ""
    row = state.history[state.best_epoch - 1]
    return f"stage '{row['stage']}', epoch {row['epoch']} (run epoch {state.best_epoch}), "


def _is_data_source(recipe) -> bool:
    """A folder of class folders or a CSV of images, given where a recipe is expected."""
    if not isinstance(recipe, (str, os.PathLike)):
        return False
    return os.path.isdir(recipe) or os.fspath(recipe).lower().endswith(".csv")


def _default_recipe(source, overrides, backbone, epochs, image_size) -> DefaultRecipe:
    """The default recipe of a folder or CSV; a `--set model.backbone=NAME` picks the backbone (and so its top
    blocks) as `backbone=` does."""
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["model", "backbone"] and isinstance(value, str):
            backbone = value
    kind = "dir" if os.path.isdir(source) else "csv"
    return default_recipe(os.path.abspath(os.fspath(source)), class_counts(source), kind=kind,
                          backbone=backbone or "inception_v3", epochs=epochs, image_size=image_size)


class _StopRequested(Exception):
    """`stop_after_epochs` was reached (a testing aid that stops the run as if it were killed)."""


@dataclasses.dataclass
class _StagePlan:
    """One stage as compiled: what `_run_epoch` and `_checkpoint` need to know about it."""

    index: int
    stage: object
    batch_size: int
    steps: int
    schedule: ScheduleSpec
    optimizer: object
    stopper: EarlyStopper
    fitter: object  # the cache's stage fitter, or None


class _Runner:
    """One run of a recipe in a run folder; `run()` calls the steps in order."""

    def __init__(self, recipe: Recipe, out: Path, *, resume: bool, verbose: bool, stop_after_epochs: int | None,
                 notes: list[str] = ()):
        self.recipe, self.out, self.resume, self.verbose, self.notes = recipe, out, resume, verbose, list(notes)
        self.stop_after_epochs, self.epochs_run = stop_after_epochs, 0
        self.ckpt = out / "checkpoints"
        self.phases = Phases()
        self.log = None
        self.data = self.model = self.bmap = self.cache = self.weights = self.best = None
        self.labels, self.has_val, self.has_test, self.image_size = [], False, False, 0
        self.state = RunState()

    def run(self) -> Run:
        self._start()
        self._prepare_data()
        self._build()
        self._plan_caches()
        try:
            for index, stage in enumerate(self.recipe.stages):
                if index >= self.state.stage:
                    self._run_stage(index, stage)
        except _StopRequested:
            return Run(self.out, self.model, self.labels, None, self.state.history, self.recipe, self.log.lines)
        return self._finish()

    # === steps ===

    def _start(self) -> None:
        self.ckpt.mkdir(exist_ok=True)
        self.log = RunLog(self.out / "log.txt", self.verbose)
        if self.resume:
            self.log(f"resuming run in {self.out}")
        else:
            dump_recipe(self.recipe, self.out / "recipe.yaml")
            self.log(f"inceptune run in {self.out}")
        for note in self.notes:
            self.log(note)

    def _prepare_data(self) -> None:
        cfg = self.recipe.data
        if self.resume:  # the run's own manifest: the same files in the same splits
            cfg = dataclasses.replace(cfg, dir=None, csv=None, manifest=str((self.out / "manifest.csv").resolve()))
        with self.phases("data"):
            self.data = prepare(cfg, self.out, progress=self.verbose)
        self.log(f"data: {self.data.summary_line()} ({self.phases.seconds['data']:.1f}s)")
        for w in self.data.warnings:
            self.log(f"warning: {w}")
        self.labels = list(self.data.labels)
        self.has_val = len(self.data.paths("val")) > 0
        self.has_test = len(self.data.paths("test")) > 0

    def _build(self) -> None:
        from inceptune.training.model import build_model, resolve_image_size

        recipe = self.recipe
        self.image_size = resolve_image_size(recipe)
        with self.phases("build"):
            self.model = build_model(recipe.model, len(self.labels), self.image_size, seed=recipe.seed)
            self.bmap = block_map(self.model)
        self.log(f"model: {self.model.name}, {self.model.count_params():,} parameters, input "
                 f"{self.image_size}x{self.image_size}, batchnorm={recipe.model.batchnorm} "
                 f"(built in {self.phases.seconds['build']:.1f}s)")
        if self.resume:
            self.state = RunState.read(self.ckpt)
        self.weights = CheckpointWeights(self.model, self.ckpt, self.state.base)
        if self.resume and self.state.weights:
            self.weights.load(self.state.weights)
        self.state.run_monitor = self.state.run_monitor or ("val_loss" if self.has_val else "loss")
        self.best = BestEpoch(self.state, self.ckpt)

    def _plan_caches(self) -> None:
        recipe = self.recipe
        if recipe.cache.mode == "off":
            return
        self.cache = CacheContext(recipe, self.data, self.model, self.out, image_size=self.image_size,
                                  resize=recipe.data.resize, log=self.log, progress=self.verbose)
        self.cache.plan(self.model, recipe.stages, recipe.model.batchnorm, self.bmap)

    def _run_stage(self, index: int, stage) -> None:
        start = self.state.epoch if index == self.state.stage else 0
        plan = self._compile_stage(index, stage, start)
        for epoch in range(start, stage.epochs):
            if self.stop_after_epochs is not None and self.epochs_run >= self.stop_after_epochs:
                self.log(f"stopping after {self.epochs_run} epochs as asked")
                raise _StopRequested
            t0 = time.time()
            logs, lr, cached = self._run_epoch(plan, epoch)
            self.phases.add("training", time.time() - t0)
            with self.phases("checkpoints"):
                stopped = self._checkpoint(plan, epoch, logs, lr, cached, round(time.time() - t0, 3))
            if stopped:
                return
        if stage.epochs == 0 or start >= stage.epochs:
            self.state.stage, self.state.epoch = index + 1, 0
            self.state.write(self.ckpt)

    def _compile_stage(self, index: int, stage, start_epoch: int) -> _StagePlan:
        """Freezes and compiles the model for a stage, restores its optimizer state on resume, and logs it."""
        from inceptune.training.model import compile_stage

        recipe, data = self.recipe, self.data
        batch_size = int(stage.batch_size or recipe.data.batch_size)
        balance = recipe.data.balance
        steps = data.steps_per_epoch("train", batch_size, balance if balance == "oversample" else "none")
        with self.phases("compile"):
            freeze_report, optimizer = compile_stage(self.model, stage, batchnorm=recipe.model.batchnorm,
                                                     bmap=self.bmap)
        schedule = ScheduleSpec(stage.lr, stage.schedule, total_steps=stage.epochs * steps,
                                warmup_steps=stage.warmup_epochs * steps, decay_steps=stage.decay_steps,
                                decay_rate=stage.decay_rate, steps_per_epoch=steps)
        warmup = f", warmup {stage.warmup_epochs}" if stage.warmup_epochs else ""
        self.log("")
        self.log(f"=== stage {index + 1}/{len(recipe.stages)} '{stage.name}': train {stage.train!r}, "
                 f"{stage.epochs} epochs, lr {stage.lr:g} ({stage.schedule}{warmup}), {stage.optimizer}, "
                 f"{freeze_report.trainable_params:,} trainable / {freeze_report.frozen_params:,} frozen parameters")
        if stage.lr_mult:
            self.log(f"    lr_mult: {stage.lr_mult}")
        for w in (*freeze_report.warnings, *self._random_backbone_warning(freeze_report)):
            self.log(f"    warning: {w}")
        # built on the full model's variables, in their order, so the checkpointed optimizer state lines up
        # whether the stage trains the model or a cached suffix sharing its layers
        optimizer.build(self.model.trainable_variables)
        self.weights.watch_stage()
        if start_epoch > 0:
            load_optimizer(optimizer, self.ckpt / self.state.optimizer)
        es = stage.early_stopping
        monitor = es.monitor if es else self.state.run_monitor
        if es and monitor.startswith("val_") and not self.has_val:
            self.log(f"    early stopping monitors {monitor!r} but there is no validation split: using 'loss'")
            monitor = "loss"
        fitter = self.cache.fitter(stage, index, self.model, self.bmap) if self.cache is not None else None
        if fitter is not None and fitter.reason:
            self.log(f"    cache: {fitter.reason}")
        return _StagePlan(index, stage, batch_size, steps, schedule, optimizer,
                          EarlyStopper(es, monitor, self.state, self.ckpt), fitter)

    def _random_backbone_warning(self, freeze_report) -> list[str]:
        """A stage that trains mostly the head on a backbone without pretrained weights learns little."""
        model_cfg = self.recipe.model
        random = model_cfg.weights is None or (model_cfg.weights == "imagenet" and model_cfg.backbone in NO_PRETRAINED)
        total = freeze_report.trainable_params + freeze_report.frozen_params
        if not random or freeze_report.frozen_params < 0.5 * total:
            return []
        why = "weights: none" if model_cfg.weights is None else f"{model_cfg.backbone} has no ImageNet weights"
        return [f"the backbone has random weights ({why}) and this stage keeps "
                f"{freeze_report.frozen_params / total:.0%} of the parameters frozen: frozen random features rarely "
                "transfer. HINT: use model.weights: imagenet (or a weights file), or train more layers (train: all)."]

    def _run_epoch(self, plan: _StagePlan, epoch: int) -> tuple[dict, float, bool]:
        """One epoch, on cached features when the stage allows it. Returns (logs, last lr, cached)."""
        from inceptune.training.callbacks import EpochBar, LrSetter

        seed = epoch_seed(self.recipe.seed, plan.index, epoch)
        lr = LrSetter(plan.schedule, epoch, plan.steps)
        with Bar(plan.steps, f"{plan.stage.name} epoch {epoch + 1}/{plan.stage.epochs}", unit="batch",
                 show=self.verbose) as bar:
            if plan.fitter is not None and plan.fitter.active:
                return plan.fitter.fit_epoch(epoch, seed, plan.batch_size, [lr, EpochBar(bar)]), lr.last, True
            return self._fit_epoch(plan, epoch, seed, [lr, EpochBar(bar)]), lr.last, False

    def _fit_epoch(self, plan: _StagePlan, epoch: int, seed: int, callbacks: list) -> dict:
        """One epoch of Keras's `fit` on the image pipeline (its own progress bar off: ours is shown)."""
        import keras

        cfg, data, size = self.recipe.data, self.data, self.image_size
        train_ds = data.dataset("train", batch_size=plan.batch_size, image_size=size, resize=cfg.resize,
                                augment=cfg.augment, balance=cfg.balance, seed=seed)
        val_ds = (data.dataset("val", batch_size=plan.batch_size, image_size=size, resize=cfg.resize)
                  if self.has_val else None)
        try:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(self.out / "tensorboard" / plan.stage.name),
                                                         write_graph=False, update_freq="epoch"))
        except Exception:  # noqa: BLE001 - TensorBoard logging is optional
            pass
        h = self.model.fit(train_ds, validation_data=val_ds, epochs=epoch + 1, initial_epoch=epoch,
                           callbacks=callbacks, shuffle=False, verbose=0)
        return {k: float(v[-1]) for k, v in h.history.items()}

    def _checkpoint(self, plan: _StagePlan, epoch: int, logs: dict, lr: float, cached: bool,
                    seconds: float) -> bool:
        """Records the epoch (history, best epoch, early stopping), then writes its checkpoint: files first,
        `state.json` last. Returns True when early stopping ends the stage."""
        stage, state, stopper = plan.stage, self.state, plan.stopper
        row = {"stage": stage.name, "epoch": epoch + 1, "lr": lr, "seconds": seconds, "cached": int(cached), **logs}
        state.history.append(row)
        self.epochs_run += 1
        shown = "  ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs)
        self.log(f"  {stage.name} epoch {epoch + 1}/{stage.epochs}  {shown}  lr {lr:.3g}  "
                 f"{seconds:.1f}s{'  (cached features)' if cached else ''}")
        if stopper.monitor not in logs:
            raise RecipeError(
                f"stages[{plan.index}].early_stopping.monitor: {stopper.monitor!r} is not a logged metric. Available: "
                f"{', '.join(sorted(logs))}. HINT: use val_loss or val_accuracy (needs a validation split).")
        n = state.n + 1
        weights_file, optimizer_file = f"epoch-{n}.weights.npz", f"epoch-{n}.optimizer.npz"
        self.weights.save(weights_file, n)
        state.base = self.weights.base_name
        save_optimizer(plan.optimizer, self.ckpt / optimizer_file)
        self.best.update(logs, n, weights_file)
        stopped = stopper.update(logs, n, weights_file)
        if stopped or epoch + 1 >= stage.epochs:
            if stopper.restores:
                # the stage hands its best epoch to the next stage (Keras restores at train end too)
                self.weights.load(stopper.restores)
                self.weights.save(weights_file, n)
                if stopped:
                    self.log(f"  early stopping: {stopper.monitor} did not improve for "
                             f"{stage.early_stopping.patience + 1} epochs; restored the best epoch "
                             f"({stopper.monitor} {state.es_best:.4f})")
            stopper.reset()
            state.stage, state.epoch = plan.index + 1, 0
        else:
            state.stage, state.epoch = plan.index, epoch + 1
        state.n, state.weights, state.optimizer = n, weights_file, optimizer_file
        atomic_write_text(self.out / "history.csv", history_csv(state.history))
        state.write(self.ckpt)
        return stopped

    def _finish(self) -> Run:
        """The best weights become `model.keras`; the test split is scored and the report written."""
        state, out = self.state, self.out
        if state.best_weights:
            self.weights.load(state.best_weights)
            self.log(f"\nbest epoch by {state.run_monitor}: {_epoch_name(state)}{state.run_monitor} {state.best:.4f}")
        with self.phases("save"):
            self._save_model()
        metrics = self._test() if self.has_test else None
        if metrics is None:
            self.log("no test split: metrics.json not written (set data.split.test > 0)")
        with self.phases("report"):
            report.write_report(out, metrics=metrics, history_csv=out / "history.csv", recipe=out / "recipe.yaml",
                                manifest_rows=out / "manifest.csv", skipped=out / "skipped.csv",
                                warnings=list(self.data.warnings))
        self.log(f"report: {out / 'report.html'}")
        if self.cache is not None and self.cache.seconds:
            self.phases.add("training", -self.cache.seconds)  # the feature pass ran inside the first cached epoch
            self.phases.add("features", self.cache.seconds)
        self.log(self.phases.line())
        return Run(out, self.model, self.labels, metrics, state.history, self.recipe, self.log.lines)

    def _save_model(self) -> None:
        # an uncompiled model over the same layers (no optimizer state in model.keras); building it takes
        # milliseconds, where cloning every layer took ~2 s for InceptionV3
        import keras

        model = self.model
        clean = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs,
                            model.outputs[0] if len(model.outputs) == 1 else model.outputs, name=model.name)
        with atomic_path(self.out / "model.keras") as tmp:
            clean.save(tmp)

    def _test(self) -> dict:
        with self.phases("test"):
            cached = self.cache.predict(self.model, "test") if self.cache is not None else None
            if cached is not None:
                probs = cached[0]
                self.log(f"test predictions from the cached features at {cached[1]!r}")
            else:
                cfg, n = self.recipe.data, len(self.data.paths("test"))
                with Bar(n, f"testing on {n} images", show=self.verbose) as bar:
                    probs = predict_proba(self.model, self.data.dataset("test", batch_size=cfg.batch_size,
                                                                        image_size=self.image_size, resize=cfg.resize),
                                          progress=bar.update)
            metrics = evaluate.compute_metrics(self.data.label_ids("test"), probs, self.labels,
                                               paths=self.data.paths("test"))
            evaluate.write_metrics(metrics, self.out / "metrics.json")
        self.log(summary_table(self.state.history, metrics))
        return metrics
