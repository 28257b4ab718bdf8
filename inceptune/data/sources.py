"""The source's files: listing a class-per-folder directory, reading a CSV or a saved manifest, and validating
every file (read, hashed, fully decoded by Pillow, in parallel). `scan` does all of it for a folder or a CSV.

A bad file is skipped with a reason (`truncated: ...`, `too small: ...`), never fatal.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
from PIL import Image

from inceptune.choices import SPLITS
from inceptune.data.decode import (decompression_limit_reason, file_reason, open_rgb, reason_from_exception,
                                   resize_image)
from inceptune.errors import DataError, closest
from inceptune.progress import Bar, on_terminal
from inceptune.recipe.checks import show

__all__ = ["IMAGE_EXTENSIONS", "Scan", "scan", "class_counts", "read_image_reason", "inspect_file", "inspect_all",
           "list_folder", "read_csv_source", "read_manifest", "check_classes"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp"}
)
PROGRESS_MIN_FILES = 200  # no progress bar below this many files
SCAN_DRAFT_SIZE = 64  # JPEGs are validated at a DCT-reduced scale; every byte is still entropy-decoded

# === Validating files ===


@dataclasses.dataclass(frozen=True)
class Inspected:
    """What validation learns about one file: a reason to skip it, or its hashes and size."""

    reason: str | None = None
    width: int = 0
    height: int = 0
    sha256: str = ""
    dhash: int = 0  # 64-bit difference hash of the EXIF-oriented image
    luma: float = 0.0  # mean brightness 0..255 of the 9x8 thumbnail
    detail: bytes = b""  # 16x16 greyscale thumbnail: confirms near-duplicates that the 64-bit hash only suggests


def _dhash(thumb: Image.Image) -> tuple[int, float]:
    """Difference hash (64 bits: is each pixel brighter than its right neighbour?) of a 9x8 RGB thumbnail."""
    g = np.asarray(thumb.convert("L"), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    value = int(np.packbits(bits).view(">u8")[0])
    return value, float(g.mean())


def inspect_file(path: str, min_side: int = 16) -> Inspected:
    """Reads, hashes and fully decodes one file. Never raises: problems come back as ``reason``."""
    reason = file_reason(path)
    if reason:
        return Inspected(reason=reason)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return Inspected(reason=f"unreadable: {exc.strerror or exc}")
    if not data:
        return Inspected(reason="empty file: 0 bytes")
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
        reason = decompression_limit_reason(w, h)
        if reason:
            return Inspected(reason=reason, width=w, height=h, sha256=sha)
        if min(w, h) < min_side:
            return Inspected(
                reason=f"too small: {w}x{h} pixels, the shorter side is below min_side={min_side}",
                width=w, height=h, sha256=sha,
            )
        im = open_rgb(io.BytesIO(data), draft_side=SCAN_DRAFT_SIZE)
        dh, luma = _dhash(resize_image(im, (8, 9), "stretch"))
        detail = resize_image(im, (16, 16), "stretch").convert("L").tobytes()
    except Exception as exc:  # every Pillow failure becomes a reason
        return Inspected(reason=reason_from_exception(exc), sha256=sha)
    return Inspected(width=w, height=h, sha256=sha, dhash=dh, luma=luma, detail=detail)


def read_image_reason(path: str | os.PathLike, min_side: int = 16) -> str | None:
    """Returns why a file would be skipped (``"truncated: ..."``, ``"too small: ..."``), or None if usable.

    Args:
        path: str | PathLike. The file.
        min_side: int. Minimum shorter side in pixels. Defaults to 16.

    Returns:
        str | None. The reason, prefixed by its kind (empty file, unreadable, not an image, truncated, corrupt,
        too small, decompression bomb); None for a usable image.
    """
    return inspect_file(os.fspath(path), min_side).reason


def _show_progress(progress: bool, total: int) -> bool:
    return bool(progress) and total >= PROGRESS_MIN_FILES and on_terminal()


def inspect_all(
    paths: Sequence[str],
    min_side: int,
    *,
    progress: bool = True,
    executor: str = "thread",
    workers: int | None = None,
) -> list[Inspected]:
    """Validates files in parallel (threads by default: Pillow and hashlib release the GIL)."""
    if not paths:
        return []
    workers = workers or max(1, min(8, (os.cpu_count() or 1) * 2))
    bar = Bar(len(paths), "validating images", unit="file", show=_show_progress(progress, len(paths)))
    results: list[Inspected] = []
    with warnings.catch_warnings():
        # Files above Pillow's limit are reported as skips; the warning itself would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if executor == "serial" or len(paths) < 8:
            it: Iterable[Inspected] = (inspect_file(p, min_side) for p in paths)
            pool = None
        elif executor == "process":
            import multiprocessing

            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            it = pool.map(inspect_file, paths, [min_side] * len(paths), chunksize=16)
        else:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inceptune-scan")
            it = pool.map(inspect_file, paths, [min_side] * len(paths))
        try:
            for r in it:
                results.append(r)
                bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            bar.close()
    return results


# === Listing a folder, reading a CSV or a manifest ===


def list_folder(root: str) -> tuple[list[tuple[str, str]], dict[str, int], list[str]]:
    """Lists candidate images of a class-per-folder directory.

    Returns ([(path, label)], ignored counts, warnings).
    """
    if not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise DataError(
            f"data.dir: {root} {what}; expected a folder with one sub-folder per class. "
            f"HINT: check the path (relative paths resolve against the recipe's folder)", key="data.dir"
        )
    ignored: collections.Counter = collections.Counter()
    warns: list[str] = []
    candidates: list[tuple[str, str]] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            ignored["hidden"] += 1
            continue
        if not entry.is_dir():
            ignored["outside class folders"] += 1
            continue
        found = 0
        for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if sub.name.startswith("."):
                ignored["hidden"] += 1
            elif sub.is_dir():
                ignored["nested folders"] += 1
            elif os.path.splitext(sub.name)[1].lower() in IMAGE_EXTENSIONS:
                candidates.append((os.path.abspath(sub.path), entry.name))
                found += 1
            else:
                ignored["not an image extension"] += 1
        if not found:
            warns.append(f"folder '{entry.name}' has no image files; it is not used as a class")
    return candidates, dict(ignored), warns


def _escapes(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) != folder
    except ValueError:  # different drives
        return True


def _read_csv_rows(csv_path: str, required: Sequence[str], optional: Sequence[str], what: str):
    """Reads a CSV with a header. Returns (rows as dicts, present optional columns)."""
    if not os.path.isfile(csv_path):
        raise DataError(
            f"data.{what}: {csv_path} does not exist or is not a file. "
            f"HINT: check the path (relative paths resolve against the recipe's folder)", key=f"data.{what}"
        )
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
            raw = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: not a readable UTF-8 CSV ({exc}); expected a header row "
                        f"{','.join(required)}") from exc
    missing = [c for c in required if c not in fields]
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; expected a header row "
            f"{','.join(required)}{'[,' + ','.join(optional) + ']' if optional else ''}, "
            f"found columns: {', '.join(fields) if fields else '(none: the file is empty)'}. "
            f"HINT: add the header line `{','.join(required)}`"
        )
    rows = []
    for r in raw:
        rows.append({(k or "").strip().lower(): (v or "").strip() for k, v in r.items() if k is not None})
    return rows, [c for c in optional if c in fields]


def _check_split_value(value: str, where: str) -> str:
    v = value.strip().lower()
    if v not in SPLITS:
        near = closest(v, SPLITS)
        hint = f" HINT: did you mean {near[0]}?" if near else ""
        raise DataError(f"{where}: split must be one of {' | '.join(SPLITS)}, got {show(value)}.{hint}")
    return v


def read_csv_source(csv_path: str, allow_outside: bool) -> tuple[list[tuple[str, str, str | None]], bool]:
    """Reads a ``path,label[,split]`` CSV. Returns ([(abs path, label, split or None)], has_split)."""
    rows, present = _read_csv_rows(csv_path, ("path", "label"), ("split",), "csv")
    folder = os.path.dirname(os.path.abspath(csv_path))
    has_split = "split" in present
    out, outside = [], []
    for i, r in enumerate(rows, start=2):  # line numbers: the header is line 1
        where = f"{csv_path}:{i}"
        if not r.get("path") or not r.get("label"):
            raise DataError(f"{where}: every row needs a path and a label, got {show(r)}")
        p = os.path.normpath(os.path.join(folder, os.path.expanduser(r["path"])))
        if not allow_outside and _escapes(p, folder):
            outside.append(r["path"])
        split = _check_split_value(r.get("split", ""), where) if has_split else None
        out.append((p, r["label"], split))
    if outside:
        shown = ", ".join(outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
        raise DataError(
            f"{csv_path}: {len(outside)} path(s) point outside the CSV's folder {folder}: {shown}. "
            f"Paths must stay inside it unless allowed. HINT: move the CSV up, or set data.allow_outside: true"
        )
    return out, has_split


def read_manifest(path: str) -> list[dict]:
    """Reads a saved manifest (path,label,split[,hash]); relative paths resolve against its folder."""
    rows, present = _read_csv_rows(path, ("path", "label", "split"), ("hash",), "manifest")
    folder = os.path.dirname(os.path.abspath(path))
    out, missing = [], []
    for i, r in enumerate(rows, start=2):
        where = f"{path}:{i}"
        if not r.get("path") or not r.get("label"):
            raise DataError(f"{where}: every row needs a path and a label, got {show(r)}")
        p = os.path.normpath(os.path.join(folder, os.path.expanduser(r["path"])))
        if not os.path.isfile(p):
            missing.append(p)
        out.append({"path": p, "label": r["label"], "split": _check_split_value(r.get("split", ""), where),
                    "hash": r.get("hash", "")})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(
            f"{path}: {len(missing)} file(s) listed in the manifest no longer exist: {shown}. A manifest is "
            f"reused as is. HINT: restore the files, or point data.dir/data.csv at the images to re-scan them"
        )
    return out


def check_classes(labels: Sequence[str], source: str, ignored_hint: str = "", key: str = "data.dir") -> None:
    """Raises DataError unless at least two classes were found (a classifier needs two)."""
    if not labels:
        raise DataError(
            f"no classes found in {source}: expected one sub-folder per class with images inside "
            f"(or CSV rows path,label){ignored_hint}. HINT: point data.dir at the folder that holds the class "
            f"folders", key=key
        )
    if len(labels) == 1:
        raise DataError(
            f"only one class ('{labels[0]}') found in {source}; a classifier needs at least 2 classes"
            f"{ignored_hint}. HINT: add a folder per class, or point data.dir one level up/down", key=key
        )


# === scan ===


@dataclasses.dataclass(frozen=True)
class Scan:
    """What `scan` found: the usable files with their labels and hashes, and what was skipped and why.

    Attributes:
        source: str. The folder or CSV, absolute. kind: str. `dir` or `csv`.
        paths: list of str. Usable image files (absolute), in listing order.
        labels: list of str. The label of each usable file.
        splits: list of str or None. The CSV's split of each usable file (None without a split column).
        hashes: list of str. SHA-256 of each usable file.
        dhashes: list of int. 64-bit difference hash of each usable file (near-duplicate search).
        lumas: list of float. Mean brightness of each usable file's 9x8 thumbnail.
        details: list of bytes. A 16x16 greyscale thumbnail of each usable file (near-duplicate confirmation).
        skipped: list of (path, reason). Unusable files, and CSV rows listing a file again.
        ignored: dict. Counts of folder entries that are not candidate images (hidden, other extensions, ...).
        warnings: list of str. E.g. a class folder without image files.
        has_split: bool. The CSV has a split column.
        classes: dict. Label -> number of candidate files before validation, sorted by label.
    """

    source: str
    kind: str
    paths: list
    labels: list
    splits: list
    hashes: list
    dhashes: list
    lumas: list
    details: list
    skipped: list
    ignored: dict
    warnings: list
    has_split: bool
    classes: dict

    def ignored_hint(self) -> str:
        """` (ignored: 3 hidden, ...)` for messages, or an empty string."""
        if not self.ignored:
            return ""
        return " (ignored: " + ", ".join(f"{n} {k}" for k, n in sorted(self.ignored.items())) + ")"


def _first_rows(triples: list) -> tuple[list, list]:
    """Keeps the first CSV row of each file. Returns (unique rows, [(repeated row, reason naming both lines)])."""
    first_line: dict[str, int] = {}
    unique, repeated = [], []
    for line, t in enumerate(triples, start=2):  # line numbers: the header is line 1
        if t[0] in first_line:
            repeated.append((t, f"repeated: listed again on line {line} of the CSV (first on line {first_line[t[0]]})"))
        else:
            first_line[t[0]] = line
            unique.append(t)
    return unique, repeated


def scan(
    source: str | os.PathLike,
    *,
    kind: str | None = None,
    min_side: int = 16,
    allow_outside: bool = False,
    min_classes: int = 0,
    keep: Callable[[str, str, str | None], bool] | None = None,
    progress: bool = True,
    executor: str = "thread",
) -> Scan:
    """Lists a class-per-folder directory or a `path,label[,split]` CSV and validates every file.

    Args:
        source: str | PathLike. A folder (one sub-folder per class) or a CSV file.
        kind: str or None. `dir` or `csv`. Defaults to None: `csv` for a file, else `dir`.
        min_side: int. Images whose shorter side is below this are skipped. Defaults to 16.
        allow_outside: bool. Allow CSV paths outside the CSV's folder. Defaults to False.
        min_classes: int. With 2, fewer than two classes is an error, raised before any file is read. Defaults
            to 0 (any number).
        keep: callable `(path, label, split) -> bool` or None. Filters the listed files before validation (e.g.
            one split of a CSV). Defaults to None (every file).
        progress: bool. A progress bar on large folders when stderr is a terminal. Defaults to True.
        executor: str. `thread`, `process` or `serial` validation. Defaults to `thread`.

    Returns:
        Scan.

    Raises:
        DataError: the folder or CSV does not exist, a CSV lacks its header or lists paths outside its folder.
    """
    source = os.path.abspath(os.fspath(source))
    kind = kind or ("csv" if os.path.isfile(source) else "dir")
    warns: list[str] = []
    repeated: list[tuple[str, str]] = []
    if kind == "dir":
        pairs, ignored, warns = list_folder(source)
        triples, has_split = [(p, lab, None) for p, lab in pairs], False
    else:
        rows, has_split = read_csv_source(source, allow_outside)
        triples, repeated = _first_rows(rows)
        ignored = {}
    if keep is not None:
        triples = [t for t in triples if keep(*t)]
        repeated = [(t, reason) for t, reason in repeated if keep(*t)]
    classes = dict(sorted(collections.Counter(lab for _, lab, _ in triples).items()))
    found = Scan(source, kind, [], [], [], [], [], [], [], [], ignored, warns, has_split, classes)
    if len(classes) < min_classes:
        check_classes(list(classes), source, found.ignored_hint(), key=f"data.{kind}")
    results = inspect_all([p for p, _, _ in triples], min_side, progress=progress, executor=executor)
    for (path, label, split), r in zip(triples, results):
        if r.reason is not None:
            found.skipped.append((path, r.reason))
            continue
        for column, value in zip((found.paths, found.labels, found.splits, found.hashes, found.dhashes, found.lumas,
                                  found.details), (path, label, split, r.sha256, r.dhash, r.luma, r.detail)):
            column.append(value)
    found.skipped.extend((t[0], reason) for t, reason in repeated)
    return found


def class_counts(source: str | os.PathLike) -> dict[str, int]:
    """Label -> number of listed image files of a folder or a CSV, sorted by label; no file is opened (fast)."""
    source = os.path.abspath(os.fspath(source))
    if os.path.isfile(source):
        labels = [label for _, label, _ in _first_rows(read_csv_source(source, allow_outside=True)[0])[0]]
    else:
        labels = [label for _, label in list_folder(source)[0]]
    return dict(sorted(collections.Counter(labels).items()))
