"""Errors raised for bad user input.

Every error names what is wrong, what is allowed, what was received and, when known, the fix
(``HINT: ...``). The CLI prints them as one paragraph and exits with code 2.
"""

from __future__ import annotations

import difflib

__all__ = [
    "InceptuneError",
    "DataError",
    "RecipeError",
    "SelectorError",
    "SurgeryError",
    "ModelLoadError",
    "closest",
]


class InceptuneError(ValueError):
    """Base class of every error caused by user input (exit code 2 from the CLI).

    Args:
        message: str. What is wrong, what is allowed, what was received, and the fix.
        key: str or None. The recipe key path the error is about (`stages[1].lr`, `data.dir`), so the CLI can
            blame the `--set` override that set it. Defaults to None.
    """

    def __init__(self, message: str = "", *, key: str | None = None):
        super().__init__(message)
        self.key = key


class DataError(InceptuneError):
    """A dataset, manifest or image file cannot be used as asked."""


class RecipeError(InceptuneError):
    """A recipe key is unknown, has the wrong type or an impossible value."""


class SelectorError(InceptuneError):
    """A selector string does not parse or names no known layer or block."""


class SurgeryError(InceptuneError):
    """A graph edit is impossible (unknown layer, wrong direction, shapes that cannot merge)."""


class ModelLoadError(InceptuneError):
    """A model or backbone cannot be loaded (unknown name, bad file, unreachable weights)."""


def closest(word: str, candidates, n: int = 3) -> list[str]:
    """Returns up to ``n`` names from ``candidates`` closest to ``word`` (for "did you mean")."""
    candidates = list(candidates)
    found = difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)
    if not found:
        low = word.lower()
        found = [c for c in candidates if low and low in c.lower()][:n]
    return found
