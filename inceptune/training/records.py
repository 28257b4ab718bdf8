"""What a run prints and records besides its checkpoints: `log.txt`, phase times, `history.csv`, the summary."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from pathlib import Path

__all__ = ["HISTORY_COLUMNS", "RunLog", "Phases", "history_csv", "summary_table"]

# val_ema_*: the stage's EMA weights on the validation split (`stages[i].ema`), blank for stages without it
HISTORY_COLUMNS = ("stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_ema_loss", "val_ema_accuracy",
                   "lr", "seconds", "cached")


class RunLog:
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


class Phases:
    """Wall time per phase of a run (build, features, training, checkpoints, test, report), for the log."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, name: str):
        """Times the `with` block as phase `name`."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def line(self) -> str:
        total = sum(self.seconds.values())
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items() if v >= 0.05)
        return f"time: {total:.1f}s ({parts})"


def history_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in HISTORY_COLUMNS})
    return buf.getvalue()


def summary_table(history: list[dict], metrics: dict) -> str:
    lines = ["", "stage          epochs  last loss  last acc  best val_acc"]
    stages: dict[str, list[dict]] = {}
    for r in history:
        stages.setdefault(r["stage"], []).append(r)
    for name, rows in stages.items():
        last = rows[-1]
        val = [r.get("val_accuracy") for r in rows if r.get("val_accuracy") is not None]
        lines.append(f"{name:<14} {len(rows):>6}  {last.get('loss', math.nan):>9.4f}  "
                     f"{last.get('accuracy', math.nan):>8.4f}  {(max(val) if val else math.nan):>12.4f}")
    acc = metrics.get("accuracy")
    lines.append(f"test accuracy {acc:.4f}" if isinstance(acc, float) else f"test metrics: {list(metrics)[:5]}")
    return "\n".join(lines)
