"""Atomic file writes: every file inceptune writes appears whole or not at all (DESIGN.md §7).

A temporary file is written in the destination's folder, flushed to disk, then renamed over the destination
(`os.replace` is atomic on one file system). A run killed at any moment leaves either the old file or the new.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from inceptune.errors import InceptuneError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_path", "prepare_output_dir"]


def atomic_write_bytes(path, data: bytes) -> Path:
    """Writes `data` to `path` atomically (parent folders are created). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Writes UTF-8 `text` to `path` atomically (newlines written as given). Returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, **dumps_kwargs) -> Path:
    """Writes `obj` as JSON (indent 2 unless given, trailing newline) atomically. Returns the path."""
    dumps_kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` for writers that take a file name (Keras, NumPy); on success the
    temporary file is renamed to `path`, on failure removed. The temporary name keeps `path`'s name as its
    suffix, so writers that check extensions (`.weights.h5`, `.keras`, `.npz`) accept it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prepare_output_dir(out, *, force: bool, kind: str, markers: tuple[str, ...], hint: str = "") -> Path:
    """Creates the output folder of a run, a cross-validation or a demo, never overwriting a user's files.

    A non-empty `out` is refused unless `force`; with `force` it is replaced only when it holds one of
    `markers` (files or folders inceptune writes), so a folder that is not ours is never deleted.

    Args:
        out: the folder. force: replace an earlier one of ours. kind: "run", "cv", "demo" (for messages).
        markers: names whose presence marks the folder as ours. hint: extra advice before the --force hint.

    Returns:
        The folder, created.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise InceptuneError(
                f"{kind} folder {out} already exists and is not empty; inceptune never overwrites it. "
                f"HINT: {hint}pass --force to replace it, or --out to choose another folder.")
        if not out.is_dir() or not any((out / m).exists() for m in markers):
            raise InceptuneError(
                f"refusing to --force over {out}: it does not look like an inceptune {kind} folder (no "
                f"{' or '.join(markers)}). HINT: choose another --out folder; nothing was deleted.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out
