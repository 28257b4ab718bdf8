"""Best-epoch tracking and early stopping: small objects over the run's `RunState`.

Both keep their numbers in the `RunState` (so a resumed run continues them) and hard-link the weights file of
the best epoch they have seen, so the checkpoint cleaner keeps it.
"""

from __future__ import annotations

from pathlib import Path

from inceptune.training.checkpoints import RunState, link_or_copy

__all__ = ["improved", "BestEpoch", "EarlyStopper"]


def improved(new: float, best: float | None, monitor: str, min_delta: float = 0.0) -> bool:
    """Whether `new` beats `best` on `monitor` (higher is better for accuracy-like metrics, lower otherwise)."""
    if best is None:
        return True
    if "acc" in monitor or "auc" in monitor or "precision" in monitor or "recall" in monitor:
        return new > best + min_delta
    return new < best - min_delta


class BestEpoch:
    """The run's best epoch by `state.run_monitor`: its weights become `model.keras`.

    Args:
        state: RunState. Holds `best` and `best_weights`.
        folder: Path. The checkpoints folder.
    """

    def __init__(self, state: RunState, folder: Path, link=link_or_copy):
        self.state, self.folder, self.link = state, folder, link

    def update(self, logs: dict, n: int, weights_file: str, *, ema: bool = False) -> bool:
        """Records epoch `n` (its weights in `weights_file`) if it is the best so far; `ema`: the weights are the
        epoch's EMA weights, and `logs` their metrics. Returns whether it was."""
        value = logs.get(self.state.run_monitor)
        if value is not None and improved(float(value), self.state.best, self.state.run_monitor):
            self.state.best = float(value)
            self.state.best_weights = f"best-{n}{'-ema' if ema else ''}.weights.npz"
            self.state.best_epoch, self.state.best_ema = n, ema
            self.link(self.folder / weights_file, self.folder / self.state.best_weights)
            return True
        return False


class EarlyStopper:
    """Early stopping of one stage (`stages[i].early_stopping`); a stage without it never stops early.

    Args:
        config: EarlyStopping or None. The stage's settings.
        monitor: str. The metric watched (the config's, or `loss` when there is no validation split).
        state: RunState. Holds `es_best`, `es_wait` and `es_weights`.
        folder: Path. The checkpoints folder.
    """

    def __init__(self, config, monitor: str, state: RunState, folder: Path, link=link_or_copy):
        self.config, self.monitor, self.state, self.folder, self.link = config, monitor, state, folder, link

    def update(self, logs: dict, n: int, weights_file: str) -> bool:
        """Records epoch `n`; returns True when the stage should stop (no improvement for patience + 1 epochs)."""
        if self.config is None:
            return False
        value, state = logs[self.monitor], self.state
        if improved(value, state.es_best, self.monitor, self.config.min_delta):
            state.es_best, state.es_wait = value, 0
            state.es_weights = f"stage-best-{n}.weights.npz"
            self.link(self.folder / weights_file, self.folder / state.es_weights)
            return False
        state.es_wait += 1
        return state.es_wait > self.config.patience

    @property
    def restores(self) -> str | None:
        """The weights file to restore when the stage ends (its best epoch), or None."""
        return self.state.es_weights if self.config is not None and self.config.restore_best else None

    def reset(self) -> None:
        """Forgets the stage's numbers (the next stage starts its own)."""
        self.state.es_best, self.state.es_wait, self.state.es_weights = None, 0, None
