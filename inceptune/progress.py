"""One progress display for the long phases (validation, the feature pass, epochs, evaluation).

On a terminal a phase shows one updating bar on stderr (tqdm), which disappears when the phase ends: the
phase's own result line (printed by the caller, with its duration) is what stays. In a pipe, and when asked to
be quiet, there is no bar at all, only those plain lines. Keras's own progress bars are never shown.
"""

from __future__ import annotations

import shutil
import sys

__all__ = ["Bar", "on_terminal"]


def on_terminal(stream=None) -> bool:
    """Whether `stream` (default: stderr, where bars go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class Bar:
    """A progress bar on a terminal, nothing elsewhere; use as a context manager.

    Args:
        total: int. Units of work in the phase.
        desc: str. What the phase does ("caching features at mixed8").
        unit: str. The unit counted. Defaults to "img".
        show: bool. False never shows a bar (quiet runs). Defaults to True.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "img", show: bool = True):
        self._bar = None
        if show and total > 0 and on_terminal():
            from tqdm.auto import tqdm

            # a terminal that reports no size (a fresh pseudo-terminal) would get a bar 0 columns wide and 0 rows
            # high, which tqdm never draws: the size falls back to $COLUMNS/$LINES, else 80x24
            size = shutil.get_terminal_size()
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, ncols=size.columns,
                             nrows=size.lines)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1, **metrics) -> None:
        """Counts `n` more units done; `metrics` (loss=0.3, ...) are shown beside the bar."""
        if self._bar is None:
            return
        if metrics:
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
