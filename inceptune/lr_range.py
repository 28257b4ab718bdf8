"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks"; fastai's
`lr_find`) for one stage of a recipe: `inceptune lr-find` and `it.lr_find`.

The stage starts from the state the earlier stages leave: they are trained first (in a temporary folder), or the
weights come from a run folder's last checkpoint (`from_run`). Then the stage is compiled exactly as `train`
compiles it (its selector, BatchNorm policy, optimizer, loss, label smoothing, mixup) and trained for `steps`
batches while the learning rate grows exponentially from `start_lr` to `end_lr`; the sweep stops early once the
smoothed loss exceeds 4x its minimum. On a cached stage the batches are the cached features at the cut, so the
sweep costs a few seconds. Nothing is written into any run folder: the results are `lr_find.csv` and
`lr_find.png` in `out`.

Two suggestions, named as fastai names them:
- `steepest`: where the smoothed loss falls fastest (the most negative slope against log lr);
- `minimum/10`: a tenth of the learning rate at the smoothed loss's minimum.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from inceptune._io import atomic_path, atomic_write_text
from inceptune.errors import InceptuneError, RecipeError
from inceptune.recipe import Recipe, load_recipe

__all__ = ["lr_find", "LrFindResult", "lr_sweep", "smooth_losses", "suggest"]

SMOOTHING = 0.98  # fastai's: an exponential moving average of the batch losses, debiased
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum (fastai's stop_div)


@dataclasses.dataclass
class LrFindResult:
    """The outcome of `lr_find`.

    Attributes:
        stage: str. The stage's name. lrs, losses, smoothed: lists of float, one per step (learning rate, batch
            loss, smoothed loss). steepest: float. minimum_div10: float. loss_minimum_lr: float (the lr at the
            smoothed loss's minimum). cached: bool. Whether the sweep ran on cached features. cut: str or None.
            The cut layer when cached. seconds: float. The sweep's time. csv_path, png_path: Path.
    """

    stage: str
    lrs: list
    losses: list
    smoothed: list
    steepest: float
    minimum_div10: float
    loss_minimum_lr: float
    cached: bool
    cut: str | None
    seconds: float
    csv_path: Path | None = None
    png_path: Path | None = None

    def summary(self) -> str:
        where = f"on cached features at {self.cut!r}" if self.cached else "on images"
        return (f"lr-find for stage {self.stage!r}: {len(self.lrs)} steps {where} in {self.seconds:.1f}s\n"
                f"  suggested learning rates: steepest descent {self.steepest:.2e}, minimum/10 "
                f"{self.minimum_div10:.2e} (the smoothed loss is lowest at {self.loss_minimum_lr:.2e})")


# === the arithmetic (pure functions) ===

def lr_sweep(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """`steps` learning rates growing exponentially from `start_lr` to `end_lr` (both included)."""
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(steps - 1, 1))


def smooth_losses(losses, beta: float = SMOOTHING) -> np.ndarray:
    """fastai's smoothing: an exponential moving average of the losses, divided by (1 - beta**(i + 1))."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * float(loss)
        out.append(avg / (1 - beta ** (i + 1)))
    return np.array(out)


def suggest(lrs, smoothed) -> tuple[float, float, float]:
    """The suggestions of a sweep: (steepest, minimum/10, lr at the minimum). Like fastai, the first tenth and the
    last 5 points are left out when there are enough (the start is flat, the end diverging)."""
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    if len(lrs) < 2:
        raise InceptuneError("lr-find needs at least 2 steps to suggest a learning rate. HINT: raise --steps, or "
                             "lower --start-lr so that the loss does not diverge at once.", key="--steps")
    if len(lrs) > 20:
        lrs, smoothed = lrs[len(lrs) // 10:-5], smoothed[len(smoothed) // 10:-5]
    slopes = np.diff(smoothed) / np.diff(np.log(lrs))
    steepest = float(lrs[int(np.argmin(slopes))])
    at_min = float(lrs[int(np.argmin(smoothed))])
    return steepest, at_min / 10, at_min


# === the run ===

def _stage_index(recipe: Recipe, stage) -> int:
    names = [s.name for s in recipe.stages]
    if stage is None:
        return 0
    if isinstance(stage, int) or (isinstance(stage, str) and stage.strip().isdigit()):
        i = int(stage)
        if 0 <= i < len(names):
            return i
        raise InceptuneError(f"--stage: the recipe has {len(names)} stage(s), numbered 0 to {len(names) - 1}, got "
                             f"{i}. Stages: {', '.join(names)}. HINT: pass a stage's name or number.", key="--stage")
    if stage in names:
        return names.index(stage)
    from inceptune.errors import closest

    near = closest(str(stage), names)
    raise InceptuneError(f"--stage: the recipe has no stage {stage!r}. Stages: {', '.join(names)}."
                         + (f" HINT: did you mean {near[0]!r}?" if near else " HINT: pass a stage's name or number."),
                         key="--stage")


def _load_run_weights(runner, run_dir: Path, index: int) -> str:
    """Loads the last checkpoint of `run_dir` into the runner's model; returns a line saying which."""
    from inceptune.training.checkpoints import CheckpointWeights, RunState

    ckpt = run_dir / "checkpoints"
    state = RunState.read(ckpt)
    if not state.weights:
        raise InceptuneError(f"--from: {run_dir} has no complete epoch yet. HINT: let the run finish an epoch, or "
                             "leave out --from to train the earlier stages here.", key="--from")
    CheckpointWeights(runner.model, ckpt, state.base).load(state.weights)
    last = state.history[-1] if state.history else {}
    line = (f"weights: the last checkpoint of {run_dir} (stage {last.get('stage', '?')!r}, epoch "
            f"{last.get('epoch', '?')}), read only")
    if state.stage < index:
        line += (f"; note: that run has not finished the stages before stage {index} yet, so the sweep starts "
                 "from an earlier state than the stage would")
    return line


def lr_find(recipe=None, stage=None, *, from_run=None, out=".", overrides=(), start_lr: float = 1e-7,
            end_lr: float = 10.0, steps: int = 100, verbose: bool = True) -> LrFindResult:
    """Runs the learning-rate range test for one stage of a recipe and writes `lr_find.csv` and `lr_find.png`.

    Args:
        recipe: a YAML path, a dict or a `Recipe`; None with `from_run`: the run's own `recipe.yaml`.
        stage: int, str or None. The stage (its name or 0-based number). Defaults to None: the first stage.
        from_run: path or None. A run folder whose last checkpoint gives the starting weights (read only).
            Defaults to None: the stages before `stage` are trained first, in a temporary folder.
        out: path. Folder for `lr_find.csv` and `lr_find.png` (created). Defaults to the current folder.
        overrides: list of `--set` strings.
        start_lr, end_lr: float. The sweep's range. Defaults to 1e-7 and 10 (fastai's).
        steps: int. Batches in the sweep. Defaults to 100.
        verbose: print progress. Defaults to True.

    Returns:
        An `LrFindResult`.

    Example:
        >>> result = it.lr_find("recipe.yaml", stage="head")
        >>> result.steepest, result.minimum_div10
    """
    if not (0 < start_lr < end_lr):
        raise InceptuneError(f"lr-find: the range must grow, 0 < start_lr < end_lr, got start_lr={start_lr:g}, "
                             f"end_lr={end_lr:g}. HINT: e.g. --start-lr 1e-7 --end-lr 10.", key="--start-lr")
    if int(steps) < 2:
        raise InceptuneError(f"--steps: expected a whole number >= 2, got {steps}. HINT: 100 is fastai's default.",
                             key="--steps")
    from_run = Path(from_run) if from_run is not None else None
    if recipe is None:
        if from_run is None:
            raise InceptuneError("lr-find needs a RECIPE, or --from RUN to use the run's own recipe.yaml. HINT: "
                                 "`inceptune lr-find recipe.yaml --stage head`.")
        recipe = from_run / "recipe.yaml"
        if not recipe.is_file():
            raise InceptuneError(f"--from: {from_run} has no recipe.yaml. HINT: pass a run folder written by "
                                 "`inceptune train`, or give the RECIPE too.", key="--from")
    recipe = recipe if isinstance(recipe, Recipe) and not overrides else load_recipe(recipe, list(overrides))
    index = _stage_index(recipe, stage)
    if from_run is not None and not (from_run / "checkpoints" / "state.json").is_file():  # before any slow step
        raise InceptuneError(f"--from: {from_run} has no checkpoints/state.json, so it holds no trained weights. "
                             "HINT: pass a run folder written by `inceptune train` (one complete epoch at least).",
                             key="--from")
    tmp = Path(tempfile.mkdtemp(prefix="inceptune-lr-find-"))
    try:
        return _find(recipe, index, from_run, Path(out), tmp, float(start_lr), float(end_lr), int(steps), verbose)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _find(recipe, index, from_run, out, tmp, start_lr, end_lr, steps, verbose) -> LrFindResult:
    from inceptune.training.records import RunLog
    from inceptune.training.runner import StageRunner

    runner = StageRunner(recipe, tmp / "run", resume=False, verbose=verbose, stop_after_epochs=None)
    runner.ckpt.mkdir(parents=True)
    runner.log = RunLog(None, verbose)  # the temporary run folder is never shown
    try:
        return _sweep_stage(runner, recipe, index, from_run, out, start_lr, end_lr, steps)
    finally:
        runner.writer.close()  # the earlier stages' checkpoints, before the temporary folder goes


def _sweep_stage(runner, recipe, index, from_run, out, start_lr, end_lr, steps) -> LrFindResult:
    runner.prepare_data()
    runner.build()
    runner.check_stages()
    runner.plan_caches()
    stage = recipe.stages[index]
    if from_run is not None:
        runner.log(_load_run_weights(runner, from_run, index))
    elif index:
        runner.log(f"training the {index} stage(s) before {stage.name!r} first (in a temporary folder)")
        for i in range(index):
            runner.run_stage(i, recipe.stages[i])
    plan = runner.plan_stage(index, stage, 0)
    t0 = time.perf_counter()
    lrs, losses, cached = _sweep(runner, plan, lr_sweep(start_lr, end_lr, steps))
    seconds = time.perf_counter() - t0
    if len(losses) < 2 or not all(math.isfinite(v) for v in losses[:2]):
        raise RecipeError(f"lr-find: the loss of stage {stage.name!r} diverged within {len(losses)} step(s) from "
                          f"lr {start_lr:g}. HINT: lower --start-lr (e.g. 1e-9), or check the data.")
    smoothed = smooth_losses(losses)
    steepest, div10, at_min = suggest(lrs, smoothed)
    cut = plan.fitter.cut.layer if cached else None
    result = LrFindResult(stage.name, [float(v) for v in lrs], [float(v) for v in losses],
                          [float(v) for v in smoothed], steepest, div10, at_min, cached, cut, seconds)
    out.mkdir(parents=True, exist_ok=True)
    result.csv_path, result.png_path = _write_csv(result, out / "lr_find.csv"), _write_png(result, out / "lr_find.png")
    return result


def _sweep(runner, plan, lrs) -> tuple[list, list, bool]:
    """Trains one batch per learning rate; returns (lrs used, batch losses, cached). Stops when the smoothed loss
    passes DIVERGED x its minimum, or is not finite."""
    from inceptune.progress import Bar
    from inceptune.training.checkpoints import epoch_seed

    optimizer, bs = plan.optimizer, plan.batch_size
    cached = plan.fitter is not None and plan.fitter.active
    if cached:
        def batches():
            for epoch in range(10**6):
                yield from plan.fitter.batches(epoch, epoch_seed(runner.recipe.seed, plan.index, epoch), bs)

        def step(batch):
            plan.fitter.suffix.reset_metrics()  # the loss of this batch alone
            return float(plan.fitter.step(batch, bs)["loss"])
    else:
        from inceptune.regularize import mixed_dataset

        cfg, data = runner.recipe.data, runner.data

        def batches():
            for epoch in range(10**6):
                seed = epoch_seed(runner.recipe.seed, plan.index, epoch)
                ds = data.dataset("train", batch_size=bs, image_size=runner.image_size, resize=cfg.resize,
                                  augment=cfg.augment, balance=cfg.balance, seed=seed)
                if plan.soft:
                    ds = mixed_dataset(ds, len(runner.labels), seed, cfg.mixup, cfg.cutmix)
                yield from ds

        def step(batch):
            x, y, *w = batch
            logs = runner.model.train_on_batch(x, y, sample_weight=w[0] if w else None, return_dict=True)
            return float(logs["loss"])

    used, losses, best = [], [], math.inf
    smooth = 0.0
    with Bar(len(lrs), f"lr-find {plan.stage.name}", unit="batch", show=runner.verbose) as bar:
        for i, (lr, batch) in enumerate(zip(lrs, batches())):
            optimizer.learning_rate.assign(float(lr))
            loss = step(batch)
            used.append(float(lr))
            losses.append(loss)
            bar.update(1)
            if not math.isfinite(loss):
                break
            smooth = SMOOTHING * smooth + (1 - SMOOTHING) * loss
            value = smooth / (1 - SMOOTHING ** (i + 1))
            best = min(best, value)
            if value > DIVERGED * best:
                break
    if losses and not math.isfinite(losses[-1]):
        used, losses = used[:-1], losses[:-1]
    return used, losses, cached


def _write_csv(result: LrFindResult, path: Path) -> Path:
    rows = ["step,lr,loss,smoothed_loss"]
    rows += [f"{i},{lr:.6e},{loss:.6f},{s:.6f}"
             for i, (lr, loss, s) in enumerate(zip(result.lrs, result.losses, result.smoothed))]
    return atomic_write_text(path, "\n".join(rows) + "\n")


def _write_png(result: LrFindResult, path: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(result.lrs, result.losses, color="#bbbbbb", linewidth=0.8, label="batch loss")
    ax.plot(result.lrs, result.smoothed, color="#1f77b4", linewidth=1.6, label="smoothed loss")
    for lr, name, colour in ((result.steepest, "steepest", "#d62728"), (result.minimum_div10, "minimum/10",
                                                                           "#2ca02c")):
        ax.axvline(lr, color=colour, linestyle="--", linewidth=1.0, label=f"{name} {lr:.1e}")
    ax.set_xscale("log")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        low, first = min(finite), finite[0]
        ax.set_ylim(low - 0.1 * abs(first - low) - 1e-3, max(first, low) + 0.5 * abs(first - low) + 1e-3)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    where = f"cached features at {result.cut}" if result.cached else "images"
    ax.set_title(f"lr-find: stage {result.stage} ({where})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
