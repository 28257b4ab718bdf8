"""Atomic file writes: every file inceptune writes appears whole or not at all (DESIGN.md §7).

A temporary file is written in the destination's folder, flushed to disk, then renamed over the destination
(`os.replace` is atomic on one file system). A run killed at any moment leaves either the old file or the new.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_path"]


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
