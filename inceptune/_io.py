"""Atomic file writes: every file inceptune writes appears whole or not at all (DESIGN.md §7).

A temporary file is written in the destination's folder, flushed to disk, then renamed over the destination
(`os.replace` is atomic on one file system). A run killed at any moment leaves either the old file or the new.

Permissions are those a plain `open(path, "w")` gives a new file: `0o666 & ~umask` (`-rw-r--r--` under the
usual umask 022), so colleagues on a shared machine can read a run. A replaced file takes that mode too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import threading
from pathlib import Path

from inceptune.errors import InceptuneError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_path", "prepare_output_dir"]


_umask_lock = threading.Lock()
# Like tempfile.mkstemp's flags, but the file is created with mode 0o666 (the kernel applies the umask, and a
# default ACL, exactly as for open()), where mkstemp creates 0o600.
_CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
                 | getattr(os, "O_CLOEXEC", 0))


def _current_umask() -> int:
    """The process's umask, read fresh on every call (it can change while a process runs).

    Linux (4.7+) shows it in `/proc/self/status`, read without changing it. Elsewhere the only way is to set it
    and restore it: under a lock, so two of inceptune's threads never interleave, and with 077 as the value of
    that instant, so a file another thread creates meanwhile comes out more private, never more open."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _open_mode() -> int:
    """The permission bits `open()` gives a new file: 0o666 & ~umask."""
    return 0o666 & ~_current_umask()


def _new_temp_file(path: Path) -> tuple[int, str]:
    """Creates `.NAME.RANDOM.tmp` beside `path` with open()'s permissions. Returns (fd, name)."""
    for _ in range(100):
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"))
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path, data: bytes) -> Path:
    """Writes `data` to `path` atomically (parent folders are created), with the permissions `open()` would
    give a new file. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _name_the_file(exc, path)
        raise
    return path


def _name_the_file(exc: BaseException, path: Path) -> None:
    """A write error without a file name (`write()` on a full disk) gets the destination's, for the message."""
    # only real OS errors (errno + strerror): setting a file name on OSError("text") would print "[Errno None] None"
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        exc.filename = str(path)


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
    suffix, so writers that check extensions (`.weights.h5`, `.keras`, `.npz`) accept it. A file written there
    gets the permissions `open()` would give it, whatever the writer chose."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        info, mode = os.lstat(tmp), _open_mode()
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _name_the_file(exc, path)
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
