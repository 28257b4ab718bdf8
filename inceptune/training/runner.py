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
import json
import os
import shutil
import time
from pathlib import Path

from inceptune import calibration, evaluate, report
from inceptune._io import atomic_path, atomic_write_text, prepare_output_dir
from inceptune.architectures import block_map, check_backbone
from inceptune.cache import CacheContext
from inceptune.data import prepare
from inceptune.data.sources import class_counts
from inceptune.distribute import LOCAL, setup_distribution, worker_folder
from inceptune.errors import InceptuneError, ModelLoadError, RecipeError, SelectorError, closest
from inceptune.inference import predict_proba
from inceptune.models import keras_saving_skipsets
from inceptune.progress import Bar
from inceptune.recipe import DefaultRecipe, Recipe, default_recipe, dump_recipe, load_recipe
from inceptune.recipe.defaults import NO_PRETRAINED
from inceptune.recipe.overrides import parse_override
from inceptune.schedules import ScheduleSpec
from inceptune.training.checkpoints import (CheckpointWeights, FileWriter, RunState, epoch_seed, link_or_copy,
                                            load_optimizer, save_optimizer)
from inceptune.training.records import Phases, RunLog, history_csv, summary_table
from inceptune.training.tracking import BestEpoch, EarlyStopper

__all__ = ["train", "Run", "default_run_dir", "check_model_section"]

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
    val_probs: object = None  # the model's outputs on the validation split when the run computed them (cached)

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
        recipe = load_recipe(out / "recipe.yaml", list(overrides))
        dist = setup_distribution(recipe.distribute)
        if not dist.is_chief:
            return _worker_run(recipe, out, dist, True, stop_after_epochs)
        return StageRunner(recipe, out, resume=True, verbose=verbose, stop_after_epochs=stop_after_epochs,
                           dist=dist).run()
    notes = []
    if _is_data_source(recipe):
        default = _default_recipe(recipe, overrides, backbone, epochs, image_size)
        recipe, notes = default.raw, [default.summary]
    elif (backbone, epochs, image_size) != (None, None, None):
        raise RecipeError("backbone, epochs and image_size choose the default recipe of a data folder or CSV; a "
                          "recipe names its own. HINT: use --set model.backbone=NAME, --set stages[0].epochs=N or "
                          "--set model.image_size=S with a recipe file.")
    # validate before touching the disk: the recipe, then what needs no data (DESIGN.md §8: fail fast)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, list(overrides))
    check_model_section(recipe)
    dist = setup_distribution(recipe.distribute)  # `distribute:`: devices, TF_CONFIG, the backend checked here
    if not dist.is_chief:  # multi-worker: only the chief writes the run folder
        return _worker_run(recipe, out, dist, False, stop_after_epochs)
    existed = out.exists()
    prepare_output_dir(out, force=force, kind="run", markers=("recipe.yaml", "checkpoints"),
                       hint="pass --resume to continue it, ")
    try:
        return StageRunner(recipe, out, resume=False, verbose=verbose, stop_after_epochs=stop_after_epochs,
                           notes=notes, dist=dist).run()
    except BaseException:
        # a run that fails before its first complete epoch leaves nothing behind but its error
        if not (out / "checkpoints" / "state.json").exists():
            if existed:  # an empty folder the user made: keep it, remove what we wrote
                for p in out.iterdir():
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
        raise


def _worker_run(recipe: Recipe, out: Path, dist, resume: bool, stop_after_epochs: int | None) -> Run:
    """A non-chief worker of a multi-worker run: the same steps (every training step needs every worker), its
    files written into a temporary folder that is removed at the end (`distribute.worker_folder`)."""
    with worker_folder(out, resume) as folder:
        run = StageRunner(recipe, folder, resume=resume, verbose=False, stop_after_epochs=stop_after_epochs,
                          dist=dist).run()
    return dataclasses.replace(run, dir=out)


def check_model_section(recipe: Recipe) -> None:
    """The checks of the model section that need neither data nor Keras, made before the data scan: the backbone
    name, the image size against the architecture's minimum, and that a weights file exists.

    Raises:
        RecipeError: naming the key (`model.backbone`, `model.image_size`, `model.weights`).
    """
    model = recipe.model
    size = model.image_size or recipe.data.image_size
    try:
        check_backbone(model.backbone, size, model.weights if model.weights != "imagenet" else None)
    except ModelLoadError as exc:
        key = "data.image_size" if exc.key == "image_size" and not model.image_size else f"model.{exc.key}"
        raise RecipeError(f"{key}: {exc}", key=key) from exc


def _remove_partial_files(out: Path) -> None:
    """Removes the temporary files of atomic writes that a killed run left (`.NAME.RANDOM.tmp`, `tmp-PID-NAME`):
    never read, they only take space."""
    for folder in (out, out / "checkpoints"):
        for p in list(folder.glob(".*.tmp")) + list(folder.glob("tmp-*-*")):
            if p.is_file():
                p.unlink(missing_ok=True)


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


_FINISH_MODULES = ("sklearn.metrics",)
_warming = []


def _warm_finish_imports() -> None:
    """Imports what scoring and the report need (scikit-learn's metrics: ~0.5 s) on a background
    thread while the epochs compute, once per process, instead of after the last epoch. An import that fails
    here fails again, with its message, where it is needed."""
    import threading

    def load():
        import importlib

        for name in _FINISH_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported by the import that needs it
                pass

    if not _warming:
        _warming.append(threading.Thread(target=load, name="inceptune-imports", daemon=True))
        _warming[0].start()


def _write_model(model, path: Path) -> None:
    keras_saving_skipsets()  # about 0.2 s less for InceptionV3 (models.py); Keras keeps them per thread
    with atomic_path(path) as tmp:
        model.save(tmp)


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
    ema: object = None  # training.ema.WeightEMA of the stage (`stages[i].ema`), or None
    soft: bool = False  # one-hot targets: label smoothing, mixup or CutMix (regularize.py)
    replicated: tuple | None = None  # multi-worker image stages: (train, test) steps per replica, traced once


class StageRunner:
    """One run of a recipe in a run folder. `run()` calls the steps in order: `prepare_data`, `build`,
    `check_stages`, `plan_caches`, then `run_stage` for each stage (which starts with `plan_stage`) and the
    final save, test and report; `lr_range.find_lr` runs the same steps up to the stage it sweeps. Close
    `writer` (the background checkpoint writer) when driving the steps without `run()`."""

    def __init__(self, recipe: Recipe, out: Path, *, resume: bool, verbose: bool, stop_after_epochs: int | None,
                 notes: list[str] = (), dist=LOCAL):
        self.recipe, self.out, self.resume, self.verbose, self.notes = recipe, out, resume, verbose, list(notes)
        self.dist = dist  # distribute.Distribution: the strategy whose scope builds, compiles and trains
        self.stop_after_epochs, self.epochs_run = stop_after_epochs, 0
        self.ckpt = out / "checkpoints"
        self.phases = Phases()
        self.log = None
        self.data = self.model = self.bmap = self.cache = self.weights = self.best = self.calibrated = None
        self.labels, self.has_val, self.has_test, self.image_size = [], False, False, 0
        self.final = {}  # split -> (outputs, cut) of the kept model from cached features (`_finish`)
        self.state = RunState()
        # an epoch's checkpoint files are written while the next epoch computes (state.json after its files)
        self.writer = FileWriter()
        self.holds_best = False  # the model's weights are those of `state.best_weights` (set per checkpoint)

    def run(self) -> Run:
        try:
            return self._run()
        finally:
            self.writer.close()

    def _run(self) -> Run:
        self._start()
        self.prepare_data()
        with self.dist.scope():  # `distribute:` model, compiles, optimizers and every epoch (none: no scope)
            self.build()
            self.check_stages()
            self.plan_caches()
            try:
                for index, stage in enumerate(self.recipe.stages):
                    if index >= self.state.stage:
                        self.run_stage(index, stage)
            except _StopRequested:
                self.writer.flush()
                return Run(self.out, self.model, self.labels, None, self.state.history, self.recipe, self.log.lines)
        return self._finish()  # it waits for the last epoch's checkpoint files, written meanwhile

    def _link(self, src: Path, dst: Path) -> None:
        self.writer(link_or_copy, src, dst)

    # === steps ===

    def _start(self) -> None:
        self.ckpt.mkdir(exist_ok=True)
        self.log = RunLog(self.out / "log.txt", self.verbose)
        if self.resume:
            _remove_partial_files(self.out)
            self.log(f"resuming run in {self.out}")
        else:
            dump_recipe(self.recipe, self.out / "recipe.yaml")
            self.log(f"inceptune run in {self.out}")
        for note in self.notes:
            self.log(note)
        for note in self.dist.notes:
            self.log(note)
        if self.dist.name != "none":
            self.log(self.dist.summary(self.recipe.data.batch_size))

    def prepare_data(self) -> None:
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

    def build(self) -> None:
        from inceptune.training.model import build_model, check_precision, precision_policy, resolve_image_size

        recipe = self.recipe
        self.image_size = resolve_image_size(recipe)
        precision_note = check_precision(recipe.precision)  # refuses a policy this device cannot train in
        with self.phases("build"), precision_policy(recipe.precision):
            self.model = build_model(recipe.model, len(self.labels), self.image_size, seed=recipe.seed)
            self.bmap = block_map(self.model)
        self.log(f"model: {self.model.name}, {self.model.count_params():,} parameters, input "
                 f"{self.image_size}x{self.image_size}, batchnorm={recipe.model.batchnorm}"
                 f"{'' if recipe.precision == 'float32' else f', precision={recipe.precision}'} "
                 f"(built in {self.phases.seconds['build']:.1f}s)")
        if precision_note:
            self.log(f"note: {precision_note}")
        if self.resume:
            self.state = RunState.read(self.ckpt)
        self.weights = CheckpointWeights(self.model, self.ckpt, self.state.base, writer=self.writer)
        if self.resume and self.state.weights:
            self.weights.load(self.state.weights)
        self.state.run_monitor = self.state.run_monitor or ("val_loss" if self.has_val else "loss")
        self.best = BestEpoch(self.state, self.ckpt, link=self._link)

    def check_stages(self) -> None:
        """What needs the built model but neither a feature pass nor an epoch, checked for every stage before the
        first one runs: each selector (`train`, `lr_mult`) names layers of the model, and each early-stopping
        monitor is a metric the run logs."""
        from inceptune.recipe.checks import child
        from inceptune.selectors import resolve

        logged = ("loss", "accuracy", "val_loss", "val_accuracy")  # val_*: falls back to loss without a val split
        for i, stage in enumerate(self.recipe.stages):
            for key, selector in [(f"stages[{i}].train", stage.train),
                                  *((child(f"stages[{i}].lr_mult", sel), sel) for sel in stage.lr_mult)]:
                try:
                    selected = resolve(self.model, selector, bmap=self.bmap)
                except SelectorError as exc:
                    raise SelectorError(f"{key}: {exc}", key=key) from exc
                if not selected:
                    raise RecipeError(
                        f"{key}: the selector {selector!r} matches no layer of {self.model.name!r}. HINT: "
                        f"`inceptune inspect {self.recipe.model.backbone} --layers` lists the blocks and layers; "
                        "'head' names the new head.", key=key)
            es = stage.early_stopping
            if es is not None and es.monitor not in logged:
                key = f"stages[{i}].early_stopping.monitor"
                near = closest(es.monitor, logged)
                raise RecipeError(f"{key}: {es.monitor!r} is not a metric the run logs. Allowed: {', '.join(logged)}."
                                  + (f" HINT: did you mean {near[0]!r}?" if near else ""), key=key)

    def plan_caches(self) -> None:
        recipe = self.recipe
        if recipe.cache.mode == "off":
            return
        self.cache = CacheContext(recipe, self.data, self.model, self.out, image_size=self.image_size,
                                  resize=recipe.data.resize, log=self.log, progress=self.verbose)
        self.cache.plan(self.model, recipe.stages, recipe.model.batchnorm, self.bmap)

    def run_stage(self, index: int, stage) -> None:
        start = self.state.epoch if index == self.state.stage else 0
        plan = self.plan_stage(index, stage, start)
        _warm_finish_imports()
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
            self.state.write(self.ckpt, self.writer)

    def plan_stage(self, index: int, stage, start_epoch: int) -> _StagePlan:
        """Freezes and compiles the model for a stage, restores its optimizer state on resume, and logs it."""
        from inceptune.regularize import needs_soft_labels
        from inceptune.training.model import compile_stage, stage_loss

        recipe, data = self.recipe, self.data
        stage = self.dist.stage(stage)  # `distribute.scale_lr: linear`: lr times the replicas
        soft = needs_soft_labels(stage, recipe.data)
        batch_size = int(stage.batch_size or recipe.data.batch_size)
        balance = recipe.data.balance
        steps = data.steps_per_epoch("train", batch_size, balance if balance == "oversample" else "none")
        with self.phases("compile"):
            freeze_report, optimizer = compile_stage(self.model, stage, batchnorm=recipe.model.batchnorm,
                                                     bmap=self.bmap, soft_labels=soft)
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
        for w in (*freeze_report.warnings, *self._random_backbone_warning(freeze_report),
                  *self._footgun_warnings(index), *self.dist.batch_warnings(batch_size, len(data.paths("train")))):
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
        fitter = (self.cache.fitter(stage, index, self.model, loss=stage_loss(stage, soft))
                  if self.cache is not None else None)
        if fitter is not None and fitter.reason:
            self.log(f"    cache: {fitter.reason}")
        if fitter is not None:  # the feature pass and the suffix's steps before epoch 1, so its time is an epoch's
            fitter.prepare()
            if fitter.adopted_from is not None:
                optimizer = fitter.optimizer  # the earlier stage's, reset to this stage's start: checkpoint it
                self.log(f"    cache: same suffix and optimizer settings as stage '{fitter.adopted_from}': its "
                         "compiled steps are reused (no new trace)")
        for line in self._toolbox_lines(stage, fitter is not None and fitter.active):
            self.log(f"    {line}")
        ema = self._stage_ema(stage, start_epoch)
        return _StagePlan(index, stage, batch_size, steps, schedule, optimizer,
                          EarlyStopper(es, monitor, self.state, self.ckpt, link=self._link), fitter, ema, soft)

    def _toolbox_lines(self, stage, cached: bool) -> list[str]:
        """What of label smoothing, mixup/CutMix, EMA and gradient clipping is on in a stage, for the log."""
        cfg = self.recipe.data
        on = []
        if stage.label_smoothing:
            on.append(f"label smoothing {stage.label_smoothing:g}")
        if cfg.mixup is not None:
            where = ("on the cached features at the cut (manifold mixup: it mixes features, not pixels)" if cached
                     else "on images")
            on.append(f"mixup alpha {cfg.mixup.alpha:g} prob {cfg.mixup.prob:g} {where}")
        if cfg.cutmix is not None and not cached:
            on.append(f"cutmix alpha {cfg.cutmix.alpha:g} prob {cfg.cutmix.prob:g} on images")
        if stage.ema is not None:
            on.append(f"EMA of the weights, decay {stage.ema.decay:g}")
        if stage.clip_norm is not None:
            on.append(f"gradient clipping at global norm {stage.clip_norm:g}")
        lines = [f"regularisation: {', '.join(on)}"] if on else []
        if cfg.cutmix is not None and cached:
            lines.append("warning: cutmix is off in this stage: it trains on cached features, and cutmix needs "
                         "images. HINT: set data.mixup to mix the cached features instead, or cache: off to cut "
                         "and paste images (every epoch then runs the whole network).")
        if stage.ema is not None and not self.has_val:
            lines.append("warning: ema needs a validation split to compare the averaged weights with the trained "
                         "ones; without one they are never used. HINT: set data.split.val > 0.")
        return lines

    def _stage_ema(self, stage, start_epoch: int):
        """The stage's weight EMA (`stages[i].ema`), continued from its checkpoint on resume, or None."""
        if stage.ema is None:
            return None
        from inceptune.training.ema import WeightEMA

        ema = WeightEMA(self.model.trainable_variables, stage.ema.decay)
        if start_epoch > 0 and self.state.ema_weights:
            # the checkpointed average is a weights file: load it, take the trainable values, restore the epoch's
            self.weights.load(self.state.ema_weights)
            ema.reset()
            self.weights.load(self.state.weights)
        return ema

    def _footgun_warnings(self, index: int) -> list[str]:
        """No-op stages and silent mistakes (`inceptune.footguns.stage_warnings`; docs/from-snippets.md)."""
        from inceptune.footguns import preprocess_mismatch, stage_warnings

        cfg = self.recipe.model
        pretrained = cfg.weights is not None and not (cfg.weights == "imagenet" and cfg.backbone in NO_PRETRAINED)
        found = preprocess_mismatch(cfg.backbone, cfg.weights, cfg.preprocess) if index == 0 else []
        return found + stage_warnings(self.model, self.recipe.stages, index, batchnorm=cfg.batchnorm, bmap=self.bmap,
                                      pretrained=pretrained)

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
        from inceptune.training.callbacks import EpochBar, LrSetter, run_epoch

        seed = epoch_seed(self.recipe.seed, plan.index, epoch)
        lr = LrSetter(plan.schedule, epoch, plan.steps)
        callbacks = [lr]
        if plan.ema is not None:
            from inceptune.training.ema import EmaCallback

            callbacks.append(EmaCallback(plan.ema))
        cached = plan.fitter is not None and plan.fitter.active
        with Bar(plan.steps, f"{plan.stage.name} epoch {epoch + 1}/{plan.stage.epochs}", unit="batch",
                 show=self.verbose) as bar:
            callbacks.append(EpochBar(bar))
            if cached:  # one epoch over the cached training features in the image pipeline's order
                fitter, size = plan.fitter, plan.batch_size
                logs = run_epoch(fitter.suffix, epoch, fitter.batches(epoch, seed, size),
                                 lambda batch: fitter.step(batch, size), lambda: fitter.validate(size), callbacks)
            elif self.dist.name == "multi-worker":
                logs = self._replicated_epoch(plan, epoch, seed, callbacks)
            else:
                logs = self._fit_epoch(plan, epoch, seed, callbacks)
        if plan.ema is not None and self.has_val:  # the averaged weights on the validation split
            with plan.ema.applied():
                ema_logs = (plan.fitter.validate(plan.batch_size) if cached
                            else self._replicated_validate(plan) if plan.replicated is not None
                            else self.model.evaluate(self._val_dataset(plan), verbose=0, return_dict=True))
            logs.update({f"val_ema_{k}": float(v) for k, v in ema_logs.items()})
        return logs, lr.last, cached

    def _val_dataset(self, plan: _StagePlan):
        """The validation split's image pipeline, with one-hot targets when the stage's loss wants them."""
        from inceptune.regularize import one_hot_dataset

        cfg = self.recipe.data
        ds = self.data.dataset("val", batch_size=plan.batch_size, image_size=self.image_size, resize=cfg.resize)
        return one_hot_dataset(ds, len(self.labels)) if plan.soft else ds

    def _train_dataset(self, plan: _StagePlan, seed: int):
        """The epoch's training images: shuffled, augmented and balanced by the epoch's seed."""
        from inceptune.regularize import mixed_dataset

        cfg = self.recipe.data
        ds = self.data.dataset("train", batch_size=plan.batch_size, image_size=self.image_size, resize=cfg.resize,
                               augment=cfg.augment, balance=cfg.balance, seed=seed)
        if plan.soft:  # one-hot targets, mixed with mixup/CutMix drawn from the epoch's seed
            ds = mixed_dataset(ds, len(self.labels), seed, cfg.mixup, cfg.cutmix)
        return ds

    def _replicated_epoch(self, plan: _StagePlan, epoch: int, seed: int, callbacks: list) -> dict:
        """One epoch on images under `multi-worker`, in inceptune's loop instead of Keras's `fit`.

        Keras 3's `fit` fails under `MultiWorkerMirroredStrategy` ("Attempt to convert a value (PerReplica...)
        to a Tensor"; keras-team/keras#20585). Here each batch runs the model's own Keras `train_step` on every
        replica (`distribute.replicated_step`: each worker reads the same global batch, in the same order, and
        keeps its replicas' share; the optimizer all-reduces the gradients), as the cached stages do; then
        `test_step` on the validation split. Returns the epoch's logs, as `fit`'s history.
        """
        import numpy as np

        from inceptune.distribute import replicated_step
        from inceptune.training.callbacks import run_epoch

        model = self.model
        train_ds = self._train_dataset(plan, seed)
        if plan.replicated is None:
            # the metric variables are created eagerly, once (not inside the replicated steps), on a batch of a
            # dataset of its own (a second pass over `train_ds` could be shuffled in another order)
            first = next(iter(self._train_dataset(plan, seed)))
            model.test_step(tuple(t[:1] for t in first))
            strategy = self.dist.strategy
            plan.replicated = (replicated_step(strategy, lambda *b: model.train_step(b)),
                               replicated_step(strategy, lambda *b: model.test_step(b)))
        return run_epoch(model, epoch, train_ds, lambda batch: plan.replicated[0](*[np.asarray(t) for t in batch]),
                         lambda: self._replicated_validate(plan) if self.has_val else {}, callbacks)

    def _replicated_validate(self, plan: _StagePlan) -> dict:
        """Loss and metrics on the validation split through the replicated `test_step`."""
        import numpy as np

        self.model.reset_metrics()
        result = {}
        for batch in self._val_dataset(plan):
            result = plan.replicated[1](*[np.asarray(t) for t in batch])
        return {k: float(v) for k, v in result.items()}

    def _fit_epoch(self, plan: _StagePlan, epoch: int, seed: int, callbacks: list) -> dict:
        """One epoch of Keras's `fit` on the image pipeline (its own progress bar off: ours is shown)."""
        import keras

        train_ds = self._train_dataset(plan, seed)
        val_ds = self._val_dataset(plan) if self.has_val else None
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
        self.writer.flush()  # the previous epoch's files, written while this epoch computed
        row = {"stage": stage.name, "epoch": epoch + 1, "lr": lr, "seconds": seconds, "cached": int(cached), **logs}
        state.history.append(row)
        self.epochs_run += 1
        shown = "  ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy",
                                                          "val_ema_loss", "val_ema_accuracy") if k in logs)
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
        # whether the model holds the run's best weights now (`_finish` then loads nothing): until a restore
        self.holds_best = self.best.update(logs, n, weights_file)
        if plan.ema is not None:  # the EMA weights: checkpointed for resume, and the best model when they win
            ema_file = f"epoch-{n}.ema.weights.npz"
            with plan.ema.applied():
                self.weights.save(ema_file, n)
            state.ema_weights = ema_file
            ema_logs = {"val_" + k[len("val_ema_"):]: v for k, v in logs.items() if k.startswith("val_ema_")}
            if self.best.update(ema_logs, n, ema_file, ema=True):
                self.holds_best = False  # the best are the EMA weights; the model holds the raw ones
                self.log(f"    the EMA weights are the best so far ({state.run_monitor} {state.best:.4f})")
        stopped = stopper.update(logs, n, weights_file)
        if stopped or epoch + 1 >= stage.epochs:
            optimizer_file = None  # the next stage starts from a fresh optimizer: this one's is never read back
            if stopper.restores:
                # the stage hands its best epoch to the next stage (Keras restores at train end too)
                self.weights.load(stopper.restores)
                self.weights.save(weights_file, n)
                self.holds_best = False
                if stopped:
                    self.log(f"  early stopping: {stopper.monitor} did not improve for "
                             f"{stage.early_stopping.patience + 1} epochs; restored the best epoch "
                             f"({stopper.monitor} {state.es_best:.4f})")
            stopper.reset()
            state.stage, state.epoch, state.ema_weights = plan.index + 1, 0, None
        else:
            save_optimizer(plan.optimizer, self.ckpt / optimizer_file, self.writer)
            state.stage, state.epoch = plan.index, epoch + 1
        state.n, state.weights, state.optimizer = n, weights_file, optimizer_file
        self.writer(atomic_write_text, self.out / "history.csv", history_csv(state.history))
        state.write(self.ckpt, self.writer)
        return stopped

    def _finish(self) -> Run:
        """The best weights become `model.keras`; the test split is scored and the report written."""
        state, out = self.state, self.out
        if state.best_weights:
            # (best-N.weights.npz never has the name of epoch-N's file it links: the flag says the model holds it)
            if not self.holds_best:
                self.weights.load(state.best_weights)
            self.log(f"\nbest epoch by {state.run_monitor}: {_epoch_name(state)}{state.run_monitor} {state.best:.4f}"
                     + (" (its EMA weights)" if state.best_ema else ""))
        # model.keras is written on the writer thread while the final passes compute; with calibration its model
        # exists only once the temperature is fitted. The two share the interpreter, so the overlap is partial
        # (the seeds' recipe here: save 1.6 s + test 1.3 s one after the other, test 2.3 s with the save beside it
        # when the cut's key was computed beside it too)
        early_save = self.recipe.calibrate == "none"
        with self.phases("test"):  # the kept model's final passes on cached features: one key for both splits,
            # computed before the save starts (alone: 0.2 s for mixed8's prefix; beside the save: 1.6 s)
            wanted = [s for s, has in (("val", self.has_val), ("test", self.has_test)) if has]
            sources = self.cache.locate(self.model, wanted) if self.cache is not None else []
        if early_save:
            with self.phases("save"):
                self._save_model()
        with self.phases("test"):
            self.final = self.cache.predict_sources(self.model, sources) if sources else {}
        fit, val_probs = self._calibrate()
        val_probs = self._val_probs(fit, val_probs)
        if not early_save:
            with self.phases("save"):
                self._save_model()
        metrics = self._test(fit) if self.has_test else None
        if metrics is None:
            self.log("no test split: metrics.json not written (set data.split.test > 0)")
        with self.phases("report"):
            report.write_report(out, metrics=metrics, history_csv=out / "history.csv", recipe=out / "recipe.yaml",
                                manifest_rows=out / "manifest.csv", skipped=out / "skipped.csv",
                                warnings=list(self.data.warnings))
        with self.phases("save"):  # the last epoch's checkpoint files and model.keras, complete before the return
            self.writer.flush()
        self.log(f"report: {out / 'report.html'}")
        if self.cache is not None and self.cache.seconds:
            self.phases.add("features", self.cache.seconds)  # computed before each cached stage's first epoch
        self.log(self.phases.line())
        return Run(out, self.calibrated or self.model, self.labels, metrics, state.history, self.recipe,
                   self.log.lines, val_probs)

    def _val_probs(self, fit, probs):
        """The saved model's outputs on the validation split (from `probs`, the uncalibrated outputs when
        calibration computed them, else from cached features without an image pass; cross-validation scores its
        folds with them), or None."""
        if not self.has_val:
            return None
        if probs is None and "val" in self.final:
            probs = self.final["val"][0]
        if probs is None:
            return None
        return probs if fit is None else calibration.apply_temperature(probs, fit.temperature)

    def _calibrate(self):
        """`calibrate: temperature`: fits T on the validation split; the saved model gets it as its last layers.

        Returns:
            (calibration.TemperatureFit, the uncalibrated validation outputs it was fitted on), or (None, None):
            calibration off, or no validation split.
        """
        self.calibrated = None
        if self.recipe.calibrate == "none":
            return None, None
        if not self.has_val:
            self.log("calibration: no validation split, so no temperature was fitted (set data.split.val > 0)")
            return None, None
        num_val = len(self.data.label_ids("val"))
        if num_val < calibration.MIN_VALIDATION_IMAGES:
            self.log(f"calibration: skipped: {num_val} validation images, fewer than the "
                     f"{calibration.MIN_VALIDATION_IMAGES} a reliable temperature needs (a smaller fit can make the "
                     f"probabilities worse). HINT: give data.split.val more images, or set calibrate: none to "
                     f"silence this.")
            return None, None
        with self.phases("calibration"):
            probs = self._split_probs("val")
            fit = calibration.fit_temperature(probs, self.data.label_ids("val"))
            self.calibrated = calibration.calibrate_model(self.model, fit.temperature)
            atomic_write_text(self.out / "calibration.json", json.dumps(
                {"method": "temperature", **fit.to_dict()}, indent=2) + "\n")
        self.log(f"calibration: temperature {fit.temperature:.3f} fitted on {fit.num_samples} validation images "
                 f"(validation log loss {fit.nll_before:.4f} -> {fit.nll_after:.4f}); built into model.keras")
        return fit, probs

    def _split_probs(self, split: str, bar_label: str | None = None):
        """The (uncalibrated) model's outputs on a split: from the cached features when they still match."""
        if split in self.final:
            return self.final[split][0]
        cfg, n = self.recipe.data, len(self.data.paths(split))
        with Bar(n, bar_label or f"{split} predictions on {n} images", show=self.verbose) as bar:
            return predict_proba(self.model, self.data.dataset(split, batch_size=cfg.batch_size,
                                                              image_size=self.image_size, resize=cfg.resize),
                                 progress=bar.update)

    def _save_model(self) -> None:
        """Starts writing `model.keras` on the writer thread (`_finish` waits for it before returning): nothing
        changes the kept model's weights after this. The model is an uncompiled one over the same layers (no
        optimizer state in model.keras), built here: milliseconds, where cloning every layer took ~2 s for
        InceptionV3."""
        import keras

        model = self.calibrated or self.model
        clean = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs,
                            model.outputs[0] if len(model.outputs) == 1 else model.outputs, name=model.name)
        self.writer(_write_model, clean, self.out / "model.keras")

    def _test(self, fit=None) -> dict:
        with self.phases("test"):
            cached = self.final.get("test")
            if cached is not None:
                probs = cached[0]
                self.log(f"test predictions from the cached features at {cached[1]!r}")
            else:
                n = len(self.data.paths("test"))
                probs = self._split_probs("test", f"testing on {n} images")
            y_true = self.data.label_ids("test")
            # the saved model's outputs: the calibrated probabilities (same argmax, so the same accuracy)
            final = probs if fit is None else calibration.apply_temperature(probs, fit.temperature)
            metrics = evaluate.compute_metrics(y_true, final, self.labels, paths=self.data.paths("test"))
            if fit is not None:
                ts = metrics["temperature_scaling"] = calibration.calibration_summary(y_true, probs, final,
                                                                                         fit.temperature, fit)
                self.log(f"calibration on the test split: ECE {ts['ece_before']:.4f} -> {ts['ece_after']:.4f}, "
                         f"log loss {ts['log_loss_before']:.4f} -> {ts['log_loss_after']:.4f}")
            evaluate.write_metrics(metrics, self.out / "metrics.json")
        self.log(summary_table(self.state.history, metrics))
        return metrics
