"""Data: image folders and CSV manifests, every bad file reported, stable splits, tf.data pipelines.

The pipeline, top to bottom:

1. **Source**: a class-per-folder directory (one level), a CSV (``path,label[,split]``), or a manifest
   saved by an earlier run (``path,label,split,hash``, reused as is).
2. **Validation**: every file is read, hashed (SHA-256) and fully decoded by Pillow, in parallel. A bad file
   is skipped with a reason (``skipped.csv``), never fatal.
3. **Splits**: ``stable-hash`` (a file's split is a function of its name, as in TensorFlow's Speech Commands
   ``which_set``) or ``stratified`` (scikit-learn, seeded). Exact duplicates stay in one split; near-duplicates
   across splits (difference hash) are reported as leakage.
4. **Pipelines**: ``tf.data`` datasets that decode with the same Pillow code that validated the files (so
   every supported format, EXIF orientation and alpha are handled alike in training and prediction), resize
   (``stretch``, ``crop``, ``pad``), batch, augment the training split only, and balance classes.

Pixels leave the pipeline as float32 RGB in 0..255; each architecture's own preprocessing lives in the model.

Example:
    >>> cfg = DataConfig(dir="photos", image_size=299)
    >>> data = prepare(cfg, "runs/exp1")
    >>> train = data.dataset("train", batch_size=32, image_size=299, augment="standard")
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import stat
import struct
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inceptune._io import atomic_write_text
from inceptune.errors import DataError, RecipeError, closest

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESIZE_MODES",
    "SPLITS",
    "SPLIT_METHODS",
    "BALANCE_MODES",
    "AUGMENT_OPS",
    "AUGMENT_PRESETS",
    "SplitConfig",
    "DataConfig",
    "PreparedData",
    "data_config_from_dict",
    "prepare",
    "assign_splits",
    "load_image",
    "read_image_reason",
    "files_dataset",
    "parse_augment",
    "make_augmenter",
    "summary",
    "format_summary",
]

# === Constants ===

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp"}
)
RESIZE_MODES = ("stretch", "crop", "pad")
SPLITS = ("train", "val", "test")
SPLIT_METHODS = ("stable-hash", "stratified")
BALANCE_MODES = ("none", "class-weight", "oversample")
MANIFEST_COLUMNS = ("path", "label", "split", "hash")

ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
PAD_COLOUR = (0, 0, 0)  # `resize: pad` letterboxes with black
NEAR_DUPLICATE_DISTANCE = 4  # max Hamming distance between two 64-bit difference hashes
NEAR_DUPLICATE_LUMA = 16  # ... and max difference of mean brightness (0..255): keeps flat images apart
PROGRESS_MIN_FILES = 200  # no progress bar below this many files
SCAN_DRAFT_SIZE = 64  # JPEGs are validated at a DCT-reduced scale; every byte is still entropy-decoded
_NOHASH_RE = re.compile(r"_nohash_.*$")


# === Configuration ===


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How files are split into train/val/test.

    Args:
        val: float. Fraction of each class for validation, in [0, 1). Defaults to 0.15.
        test: float. Fraction of each class for the test split, in [0, 1). Defaults to 0.15.
        seed: int. Seed of the split (stable-hash mixes it into every file's hash). Defaults to 0.
        method: str. ``stable-hash`` (a file's split depends only on its name, so adding files never moves
            old ones; names sharing a ``_nohash_`` prefix stay together) or ``stratified`` (scikit-learn's
            stratified shuffle split, exact proportions, but adding files reshuffles). Defaults to
            ``stable-hash``.
    """

    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    method: str = "stable-hash"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The recipe's ``data:`` section.

    Args:
        dir: str | None. A class-per-folder directory (one level). Exactly one of dir/csv/manifest.
        csv: str | None. A CSV with a header ``path,label[,split]``; relative paths resolve against its folder.
        manifest: str | None. A ``manifest.csv`` saved by an earlier run, reused as is (no re-validation).
        image_size: int | None. Square input side; None means the architecture's default (the trainer fills it).
        resize: str. ``stretch`` (ignore aspect), ``crop`` (centre crop to the target aspect) or ``pad``
            (keep aspect, letterbox with black). Defaults to ``stretch``.
        split: SplitConfig. Fractions, seed and method of the split.
        augment: str | list. A preset (``none|light|standard|heavy``) or a list of ops such as
            ``[{flip: horizontal}, {rotation: 40}]``. Applied to the training split only. Defaults to ``none``.
        balance: str. ``none``, ``class-weight`` (balanced sample weights) or ``oversample`` (each training
            epoch draws classes equally). Defaults to ``none``.
        min_side: int. Images whose shorter side is below this are skipped. Defaults to 16.
        allow_outside: bool. Allow CSV paths that escape the CSV's folder. Defaults to False.
        batch_size: int. Defaults to 32.
    """

    dir: str | None = None
    csv: str | None = None
    manifest: str | None = None
    image_size: int | None = None  # None: the architecture's default size
    resize: str = "stretch"
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    augment: str | list = "none"
    balance: str = "none"
    min_side: int = 16
    allow_outside: bool = False  # CSV paths outside the CSV's folder are refused unless this is set
    batch_size: int = 32

    @property
    def source(self) -> str:
        """The one source path that is set (dir, csv or manifest)."""
        return self.dir or self.csv or self.manifest or ""

    @property
    def source_kind(self) -> str:
        """``dir``, ``csv`` or ``manifest``."""
        return "dir" if self.dir else "csv" if self.csv else "manifest"

    def to_dict(self) -> dict:
        """Returns the section as plain YAML-safe types (for the resolved recipe)."""
        d = dataclasses.asdict(self)
        if not isinstance(self.augment, str):
            d["augment"] = [dict(op) if isinstance(op, dict) else op for op in self.augment]
        return d


_DATA_KEYS = tuple(f.name for f in dataclasses.fields(DataConfig))
_SPLIT_KEYS = tuple(f.name for f in dataclasses.fields(SplitConfig))


def _show(value: Any) -> str:
    """Shows a received value the way the user wrote it (strings quoted)."""
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _recipe_error(path: str, expected: str, got: Any, hint: str | None = None) -> RecipeError:
    msg = f"{path}: expected {expected}, got {_show(got)}"
    if hint:
        msg += f". HINT: {hint}"
    return RecipeError(msg)


def _unknown_key_error(path: str, key: Any, allowed: Sequence[str]) -> RecipeError:
    near = closest(str(key), allowed)
    hint = f"did you mean {', '.join(near)}?" if near else None
    msg = f"{path}.{key}: unknown key; allowed keys are {', '.join(allowed)}"
    if hint:
        msg += f". HINT: {hint}"
    return RecipeError(msg)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_choice(path: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        near = closest(value, choices) if isinstance(value, str) else []
        hint = f"did you mean {near[0]}?" if near else None
        raise _recipe_error(path, "one of " + " | ".join(choices), value, hint)
    return value


def _split_config_from_dict(d: Any, path: str) -> SplitConfig:
    if not isinstance(d, dict):
        raise _recipe_error(path, "a mapping with keys " + ", ".join(_SPLIT_KEYS), d)
    for key in d:
        if key not in _SPLIT_KEYS:
            raise _unknown_key_error(path, key, _SPLIT_KEYS)
    kw: dict[str, Any] = {}
    for key in ("val", "test"):
        if key in d:
            v = d[key]
            if not _is_number(v) or not 0 <= v < 1:
                raise _recipe_error(f"{path}.{key}", "a number between 0 and 1", v)
            kw[key] = float(v)
    if "seed" in d:
        if not _is_int(d["seed"]):
            raise _recipe_error(f"{path}.seed", "an integer", d["seed"])
        kw["seed"] = d["seed"]
    if "method" in d:
        kw["method"] = _check_choice(f"{path}.method", d["method"], SPLIT_METHODS)
    cfg = SplitConfig(**kw)
    if cfg.val + cfg.test >= 1:
        raise RecipeError(
            f"{path}: val + test must leave images for training (below 1), "
            f"got val={cfg.val:g} + test={cfg.test:g} = {cfg.val + cfg.test:g}. HINT: lower val or test"
        )
    return cfg


def data_config_from_dict(d: dict, path: str = "data") -> DataConfig:
    """Builds a DataConfig from the recipe's ``data:`` mapping, rejecting unknown keys and wrong types.

    Args:
        d: dict. The parsed YAML mapping.
        path: str. Key path used in error messages. Defaults to ``data``.

    Returns:
        DataConfig.

    Raises:
        RecipeError: naming the key path, what is allowed and what was received, e.g.
            ``data.split.val: expected a number between 0 and 1, got "x"``.
    """
    if not isinstance(d, dict):
        raise _recipe_error(path, "a mapping with one of dir, csv or manifest", d)
    for key in d:
        if key not in _DATA_KEYS:
            raise _unknown_key_error(path, key, _DATA_KEYS)
    sources = [k for k in ("dir", "csv", "manifest") if d.get(k) is not None]
    if len(sources) != 1:
        got = ", ".join(sources) if sources else "none of them"
        raise RecipeError(
            f"{path}: expected exactly one of dir, csv or manifest, got {got}. "
            f"HINT: use `dir:` for a class-per-folder directory, `csv:` for path,label[,split] files"
        )
    kw: dict[str, Any] = {}
    for key in ("dir", "csv", "manifest"):
        if d.get(key) is not None:
            if not isinstance(d[key], str) or not d[key]:
                raise _recipe_error(f"{path}.{key}", "a path (string)", d[key])
            kw[key] = d[key]
    if d.get("image_size") is not None:
        v = d["image_size"]
        if not _is_int(v) or v < 1:
            raise _recipe_error(f"{path}.image_size", "a positive integer (pixels) or null", v)
        kw["image_size"] = v
    if "resize" in d:
        kw["resize"] = _check_choice(f"{path}.resize", d["resize"], RESIZE_MODES)
    if "split" in d:
        kw["split"] = _split_config_from_dict(d["split"], f"{path}.split")
    if "augment" in d:
        parse_augment(d["augment"], f"{path}.augment")  # validates; the spec is kept as written
        aug = d["augment"]
        kw["augment"] = "none" if aug is None else aug if isinstance(aug, str) else list(aug)
    if "balance" in d:
        kw["balance"] = _check_choice(f"{path}.balance", d["balance"], BALANCE_MODES)
    for key in ("min_side", "batch_size"):
        if key in d:
            v = d[key]
            if not _is_int(v) or v < 1:
                raise _recipe_error(f"{path}.{key}", "a positive integer", v)
            kw[key] = v
    if "allow_outside" in d:
        if not isinstance(d["allow_outside"], bool):
            raise _recipe_error(f"{path}.allow_outside", "true or false", d["allow_outside"])
        kw["allow_outside"] = d["allow_outside"]
    return DataConfig(**kw)


# === Decoding one image (Pillow) ===


def _to_rgb(im: Image.Image) -> Image.Image:
    """Converts any Pillow mode to 8-bit RGB: 16-bit scaled, palettes expanded, alpha composited."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I"):  # I, I;16, I;16B, ...: 16-bit samples, scaled (not clipped) to 8 bits
        a = np.asarray(im).astype(np.float64)
        a8 = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    if mode == "F":
        a = np.nan_to_num(np.asarray(im).astype(np.float64))
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, HSV, ...


def _exif_transpose(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block: keep the stored orientation rather than lose the image
        return im


def _decompression_limit_reason(width: int, height: int) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (
            f"decompression bomb: {width}x{height} = {width * height} pixels, "
            f"more than Pillow's limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    return None


def _open_rgb(
    source, draft_side: int | None = None, size: tuple[int, int] | None = None, resize: str = "stretch"
) -> Image.Image:
    """Opens, fully decodes and normalises an image to RGB, resized to (height, width) ``size`` if given.

    ``draft_side`` lets JPEGs decode at a DCT-reduced scale that still keeps both sides >= draft_side.
    Raises Pillow/OS exceptions; callers turn them into reasons.
    """
    with Image.open(source) as im:
        reason = _decompression_limit_reason(*im.size)
        if reason:
            raise Image.DecompressionBombError(reason)
        if draft_side and im.format in ("JPEG", "MPO"):
            im.draft(None, (draft_side, draft_side))
        im.load()
        out = _to_rgb(_exif_transpose(im))
        if size is not None:
            out = _resize(out, size, resize)
        if out is im:
            out = im.copy()  # closing the file frees its pixels: detach them first
        return out


def _reason_from_exception(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, Image.DecompressionBombError):
        return text if text.startswith("decompression bomb") else f"decompression bomb: {text}"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image: Pillow cannot identify the file's format"
    if isinstance(exc, MemoryError):
        return "unreadable: out of memory while decoding"
    if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError)):
        return f"unreadable: {exc.strerror or text}"
    if "truncated" in text.lower():
        return f"truncated: {text}"
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                        struct.error)):
        return f"corrupt: {text}"
    return f"corrupt: {type(exc).__name__}: {text}"


def _file_reason(path: str) -> str | None:
    """Checks that a path is a readable, non-empty regular file. Returns the skip reason or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "unreadable: file not found (or a broken link)"
    except PermissionError:
        return "unreadable: permission denied"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "unreadable: is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "unreadable: not a regular file"
    if st.st_size == 0:
        return "empty file: 0 bytes"
    return None


def _resize(im: Image.Image, size: tuple[int, int], resize: str) -> Image.Image:
    """Resizes an RGB image to (height, width) with Pillow's antialiased bilinear filter."""
    h, w = size
    W, H = im.size
    if (W, H) == (w, h):
        return im
    if resize == "stretch":
        return im.resize((w, h), Image.BILINEAR)
    if resize == "crop":  # centre crop to the target aspect, then resize
        target = w / h
        if W / H > target:
            cw = H * target
            box = ((W - cw) / 2, 0.0, (W + cw) / 2, float(H))
        else:
            ch = W / target
            box = (0.0, (H - ch) / 2, float(W), (H + ch) / 2)
        return im.resize((w, h), Image.BILINEAR, box=box)
    if resize == "pad":  # fit inside, keep aspect, centre on a black canvas
        scale = min(w / W, h / H)
        nw, nh = max(1, min(w, round(W * scale))), max(1, min(h, round(H * scale)))
        canvas = Image.new("RGB", (w, h), PAD_COLOUR)
        canvas.paste(im.resize((nw, nh), Image.BILINEAR), ((w - nw) // 2, (h - nh) // 2))
        return canvas
    raise DataError(f"resize: expected one of {' | '.join(RESIZE_MODES)}, got {_show(resize)}")


def _size_pair(image_size) -> tuple[int, int]:
    if _is_int(image_size) and image_size > 0:
        return int(image_size), int(image_size)
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
        _is_int(s) and s > 0 for s in image_size
    ):
        return int(image_size[0]), int(image_size[1])
    raise DataError(
        f"image_size: expected a positive integer or (height, width), got {_show(image_size)}. "
        f"HINT: set data.image_size or pass image_size="
    )


def load_image(path: str | os.PathLike, image_size=None, resize: str = "stretch") -> np.ndarray:
    """Decodes one image the way the training pipeline does.

    Pillow opens it (JPEG incl. CMYK/progressive, PNG incl. 16-bit/palette/grayscale/alpha, GIF first frame,
    BMP, TIFF, WebP), applies the EXIF orientation, composites alpha onto white, converts to 8-bit RGB and,
    when ``image_size`` is given, resizes with an antialiased bilinear filter.

    Args:
        path: str | PathLike. The image file.
        image_size: int | (int, int) | None. Square side or (height, width); None keeps the stored size.
        resize: str. ``stretch``, ``crop`` (centre crop to aspect) or ``pad`` (letterbox). Defaults to stretch.

    Returns:
        np.ndarray of uint8, shape [H, W, 3].

    Raises:
        DataError: the file cannot be used, with the reason (``truncated: ...``, ``not an image: ...``).
    """
    path = os.fspath(path)
    if resize not in RESIZE_MODES:
        raise DataError(f"resize: expected one of {' | '.join(RESIZE_MODES)}, got {_show(resize)}")
    size = _size_pair(image_size) if image_size is not None else None
    reason = _file_reason(path)
    if reason is None:
        try:
            im = _open_rgb(path, draft_side=max(size) if size else None, size=size, resize=resize)
            return np.asarray(im, dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:  # Pillow raises many types for damaged files
            reason = _reason_from_exception(exc)
    raise DataError(f"cannot load image {path}: {reason}")


# === Validating files ===


@dataclasses.dataclass(frozen=True)
class _Inspected:
    """What validation learns about one file: a reason to skip it, or its hashes and size."""

    reason: str | None = None
    width: int = 0
    height: int = 0
    sha256: str = ""
    dhash: int = 0  # 64-bit difference hash of the EXIF-oriented image
    luma: float = 0.0  # mean brightness 0..255 of the 9x8 thumbnail


def _dhash(thumb: Image.Image) -> tuple[int, float]:
    """Difference hash (64 bits: is each pixel brighter than its right neighbour?) of a 9x8 RGB thumbnail."""
    g = np.asarray(thumb.convert("L"), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    value = int(np.packbits(bits).view(">u8")[0])
    return value, float(g.mean())


def _inspect_file(path: str, min_side: int = 16) -> _Inspected:
    """Reads, hashes and fully decodes one file. Never raises: problems come back as ``reason``."""
    reason = _file_reason(path)
    if reason:
        return _Inspected(reason=reason)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return _Inspected(reason=f"unreadable: {exc.strerror or exc}")
    if not data:
        return _Inspected(reason="empty file: 0 bytes")
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as probe:
            w, h = probe.size
        reason = _decompression_limit_reason(w, h)
        if reason:
            return _Inspected(reason=reason, width=w, height=h, sha256=sha)
        if min(w, h) < min_side:
            return _Inspected(
                reason=f"too small: {w}x{h} pixels, the shorter side is below min_side={min_side}",
                width=w, height=h, sha256=sha,
            )
        thumb = _open_rgb(io.BytesIO(data), draft_side=SCAN_DRAFT_SIZE, size=(8, 9))
        dh, luma = _dhash(thumb)
    except Exception as exc:  # every Pillow failure becomes a reason
        return _Inspected(reason=_reason_from_exception(exc), sha256=sha)
    return _Inspected(width=w, height=h, sha256=sha, dhash=dh, luma=luma)


def read_image_reason(path: str | os.PathLike, min_side: int = 16) -> str | None:
    """Returns why a file would be skipped (``"truncated: ..."``, ``"too small: ..."``), or None if usable.

    Args:
        path: str | PathLike. The file.
        min_side: int. Minimum shorter side in pixels. Defaults to 16.

    Returns:
        str | None. The reason, prefixed by its kind (empty file, unreadable, not an image, truncated, corrupt,
        too small, decompression bomb); None for a usable image.
    """
    return _inspect_file(os.fspath(path), min_side).reason


def _show_progress(progress: bool, total: int) -> bool:
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return bool(progress) and total >= PROGRESS_MIN_FILES and tty


def _inspect_all(
    paths: Sequence[str],
    min_side: int,
    *,
    progress: bool = True,
    executor: str = "thread",
    workers: int | None = None,
) -> list[_Inspected]:
    """Validates files in parallel (threads by default: Pillow and hashlib release the GIL)."""
    if not paths:
        return []
    workers = workers or max(1, min(8, (os.cpu_count() or 1) * 2))
    show = _show_progress(progress, len(paths))
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc="validating images", unit="file", file=sys.stderr)
    results: list[_Inspected] = []
    with warnings.catch_warnings():
        # Files above Pillow's limit are reported as skips; the warning itself would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if executor == "serial" or len(paths) < 8:
            it: Iterable[_Inspected] = (_inspect_file(p, min_side) for p in paths)
            pool = None
        elif executor == "process":
            import multiprocessing

            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            it = pool.map(_inspect_file, paths, [min_side] * len(paths), chunksize=16)
        else:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inceptune-scan")
            it = pool.map(_inspect_file, paths, [min_side] * len(paths))
        try:
            for r in it:
                results.append(r)
                if bar is not None:
                    bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            if bar is not None:
                bar.close()
    return results


# === Sources ===


def _list_folder(root: str) -> tuple[list[tuple[str, str]], dict[str, int], list[str]]:
    """Lists candidate images of a class-per-folder directory.

    Returns ([(path, label)], ignored counts, warnings).
    """
    if not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise DataError(
            f"data.dir: {root} {what}; expected a folder with one sub-folder per class. "
            f"HINT: check the path (relative paths resolve against the recipe's folder)"
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
            f"HINT: check the path (relative paths resolve against the recipe's folder)"
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
        raise DataError(f"{where}: split must be one of {' | '.join(SPLITS)}, got {_show(value)}.{hint}")
    return v


def _read_csv_source(csv_path: str, allow_outside: bool) -> tuple[list[tuple[str, str, str | None]], bool]:
    """Reads a ``path,label[,split]`` CSV. Returns ([(abs path, label, split or None)], has_split)."""
    rows, present = _read_csv_rows(csv_path, ("path", "label"), ("split",), "csv")
    folder = os.path.dirname(os.path.abspath(csv_path))
    has_split = "split" in present
    out, outside = [], []
    for i, r in enumerate(rows, start=2):  # line numbers: the header is line 1
        where = f"{csv_path}:{i}"
        if not r.get("path") or not r.get("label"):
            raise DataError(f"{where}: every row needs a path and a label, got {_show(r)}")
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


def _read_manifest(path: str) -> list[dict]:
    """Reads a saved manifest (path,label,split[,hash]); relative paths resolve against its folder."""
    rows, present = _read_csv_rows(path, ("path", "label", "split"), ("hash",), "manifest")
    folder = os.path.dirname(os.path.abspath(path))
    out, missing = [], []
    for i, r in enumerate(rows, start=2):
        where = f"{path}:{i}"
        if not r.get("path") or not r.get("label"):
            raise DataError(f"{where}: every row needs a path and a label, got {_show(r)}")
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


# === Splits ===


def _stable_key(path: str) -> str:
    """The name that decides a file's split: its basename, cut at ``_nohash_`` (Speech Commands style)."""
    return _NOHASH_RE.sub("", os.path.basename(path))


def _hash_fraction(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _split_of_fraction(u: float, val: float, test: float) -> str:
    if u < val:
        return "val"
    if u < val + test:
        return "test"
    return "train"


def _union_groups(n: int, keys_per_item: Sequence[Sequence[str]]) -> list[int]:
    """Union-find: items sharing any key share a group. Returns the group root of each item."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, keys in enumerate(keys_per_item):
        for k in keys:
            if not k:
                continue
            if k in first:
                a, b = find(i), find(first[k])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[k] = i
    return [find(i) for i in range(n)]


def _min_per_class(split: SplitConfig) -> int:
    fracs = [f for f in (split.val, split.test) if f > 0]
    need = 1 + len(fracs)
    for f in fracs:
        need = max(need, math.ceil(1.0 / f - 1e-9))
    return need


def assign_splits(
    paths: Sequence[str], labels: Sequence[str], hashes: Sequence[str] | None = None, split: SplitConfig = SplitConfig()
) -> list[str]:
    """Assigns train/val/test to files, keeping exact duplicates and ``_nohash_`` groups together.

    ``stable-hash``: a file's split is a function of its basename (cut at ``_nohash_``) and the seed, so adding
    files never moves old ones. A duplicate group takes the split of its smallest name. ``stratified``:
    scikit-learn's ``train_test_split`` with ``stratify``, seeded, on duplicate groups.

    Args:
        paths: sequence of str. File paths (only basenames matter for stable-hash).
        labels: sequence of str. Class of each file.
        hashes: sequence of str | None. Content hash of each file; equal hashes share a split.
        split: SplitConfig. Fractions, seed and method.

    Returns:
        list of str, one of ``train|val|test`` per file.

    Raises:
        DataError: a class has too few images (or groups) to split as asked, naming the class and the fix.
    """
    n = len(paths)
    if n == 0:
        return []
    hashes = list(hashes) if hashes is not None else [""] * n
    keys = [_stable_key(p) for p in paths]
    # Name groups (`_nohash_`) are per class: `cats/img_001.jpg` and `dogs/img_001.jpg` are unrelated files.
    roots = _union_groups(n, [(f"h:{h}" if h else "", f"k:{lab}/{k}") for h, k, lab in zip(hashes, keys, labels)])
    members: dict[int, list[int]] = collections.defaultdict(list)
    for i, r in enumerate(roots):
        members[r].append(i)
    unit_ids = sorted(members)
    unit_label = {}
    for u in unit_ids:
        c = collections.Counter(labels[i] for i in members[u])
        unit_label[u] = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]

    # Enough images (and groups) per class?
    need = _min_per_class(split)
    img_count = collections.Counter(labels)
    unit_count = collections.Counter(unit_label.values())
    for label in sorted(img_count):
        units = unit_count.get(label, 0)
        if units < need:
            extra = f" in {units} group(s) of duplicates/_nohash_ names" if units != img_count[label] else ""
            raise DataError(
                f"class '{label}' has {img_count[label]} valid image(s){extra}; splitting with val={split.val:g}, "
                f"test={split.test:g} needs at least {need} per class. HINT: add images to '{label}', "
                f"lower data.split.val/test, or remove the class"
            )

    out = [""] * n
    if split.method == "stable-hash":
        for u in unit_ids:
            key = min(keys[i] for i in members[u])
            s = _split_of_fraction(_hash_fraction(key, split.seed), split.val, split.test)
            for i in members[u]:
                out[i] = s
    elif split.method == "stratified":
        unit_split = _stratified_units(unit_ids, [unit_label[u] for u in unit_ids], split)
        for u, s in zip(unit_ids, unit_split):
            for i in members[u]:
                out[i] = s
    else:
        raise DataError(f"split.method: expected one of {' | '.join(SPLIT_METHODS)}, got {_show(split.method)}")

    _check_split_counts(labels, out, split)
    return out


def _stratified_units(units: list[int], unit_labels: list[str], split: SplitConfig) -> list[str]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(units))
    y = np.asarray(unit_labels)
    res = np.array(["train"] * len(units), dtype=object)
    hold = split.val + split.test
    if hold <= 0:
        return list(res)
    try:
        _, held = train_test_split(idx, test_size=hold, stratify=y, random_state=split.seed, shuffle=True)
        if split.val == 0:
            res[held] = "test"
        elif split.test == 0:
            res[held] = "val"
        else:
            va, te = train_test_split(
                held, test_size=split.test / hold, stratify=y[held], random_state=split.seed, shuffle=True
            )
            res[va] = "val"
            res[te] = "test"
    except ValueError as exc:
        raise DataError(
            f"stratified split failed: {exc}. HINT: add images to the smallest classes or lower "
            f"data.split.val/test"
        ) from exc
    return list(res)


def _check_split_counts(labels: Sequence[str], splits: Sequence[str], split: SplitConfig) -> None:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for lab, s in zip(labels, splits):
        counts[lab][s] += 1
    wanted = ["train"] + [s for s, f in (("val", split.val), ("test", split.test)) if f > 0]
    for label in sorted(counts):
        c = counts[label]
        empty = [s for s in wanted if c[s] == 0]
        if empty:
            got = ", ".join(f"{s} {c[s]}" for s in SPLITS)
            why = (
                " A stable-hash split fixes each file's split by its name, so small classes can miss a split."
                if split.method == "stable-hash" else ""
            )
            zero = " or ".join(f"data.split.{s}: 0" for s in empty if s != "train")
            hint = (
                f"use data.split.method: stratified, add images to '{label}'" + (f", or set {zero}" if zero else "")
                if split.method == "stable-hash" else f"add images to '{label}' or lower data.split.val/test"
            )
            raise DataError(
                f"class '{label}' has {sum(c.values())} valid image(s) but none in {' and '.join(empty)} "
                f"({got}).{why} HINT: {hint}"
            )


# === Duplicates and leakage ===


def _duplicate_groups(paths: Sequence[str], hashes: Sequence[str]) -> list[list[int]]:
    by_hash: dict[str, list[int]] = collections.defaultdict(list)
    for i, h in enumerate(hashes):
        if h:
            by_hash[h].append(i)
    return [g for g in by_hash.values() if len(g) > 1]


def _near_duplicate_pairs(
    dhashes: Sequence[int],
    lumas: Sequence[float],
    max_distance: int = NEAR_DUPLICATE_DISTANCE,
    max_luma: float = NEAR_DUPLICATE_LUMA,
) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance) with dHash Hamming distance <= max_distance and similar brightness.

    Pigeonhole banding: split the 64 bits into max_distance + 1 bands; two hashes within the distance agree
    exactly on at least one band, so only items sharing a band value are compared.
    """
    n = len(dhashes)
    if n < 2:
        return []
    dh = np.array([int(x) for x in dhashes], dtype=np.uint64)
    lu = np.asarray(lumas, dtype=np.float64)
    bands = max_distance + 1
    width = math.ceil(64 / bands)
    found: dict[tuple[int, int], int] = {}
    for b in range(bands):
        shift = b * width
        if shift >= 64:
            break
        keys = (dh >> np.uint64(shift)) & np.uint64((1 << min(width, 64 - shift)) - 1)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        cuts = np.flatnonzero(np.diff(sk)) + 1
        for grp in np.split(order, cuts):
            if len(grp) < 2:
                continue
            grp = np.sort(grp)
            for start in range(0, len(grp), 1024):  # bounded memory for huge buckets
                rows = grp[start:start + 1024]
                d = np.bitwise_count(dh[rows][:, None] ^ dh[grp][None, :]).astype(np.int64)
                ok = (d <= max_distance) & (np.abs(lu[rows][:, None] - lu[grp][None, :]) <= max_luma)
                ok &= rows[:, None] < grp[None, :]
                for r, c in zip(*np.nonzero(ok)):
                    found[(int(rows[r]), int(grp[c]))] = int(d[r, c])
    return sorted((i, j, d) for (i, j), d in found.items())


# === Prepared data ===




def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def _count_kinds(skipped: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Skips per kind of reason, most frequent first (ties by name)."""
    c = collections.Counter(_reason_kind(r) for _, r in skipped)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A validated, split dataset: the manifest rows plus what was skipped and why.

    Args:
        labels: list of str. Class names, sorted; a label's id is its index.
        rows: list of dict. ``path`` (absolute), ``label``, ``split``, ``hash`` (SHA-256 of the file).
        skipped: list of (file, reason).
        warnings: list of str. Leakage, conflicting labels, ignored folders.
        ignored: dict. Counts of entries not considered images (hidden, not an image extension, ...).
        duplicate_groups: list of list of str. Paths with identical content (one split per group, unless a CSV
            or manifest gave the splits).
        leaks: list of (path_a, path_b, distance). Near-duplicates that landed in different splits.
        source: str. The folder or CSV the rows came from.
        source_kind: str. ``dir``, ``csv`` or ``manifest``.
    """

    labels: list
    rows: list
    skipped: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    ignored: dict = dataclasses.field(default_factory=dict)
    duplicate_groups: list = dataclasses.field(default_factory=list)
    leaks: list = dataclasses.field(default_factory=list)
    source: str = ""
    source_kind: str = "dir"

    # --- queries ---

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.labels)

    def counts(self) -> dict:
        """Returns ``{split: {label: n}}`` for every split and label (zeros included)."""
        out = {s: {lab: 0 for lab in self.labels} for s in SPLITS}
        for r in self.rows:
            out[r["split"]][r["label"]] += 1
        return out

    def _rows(self, split: str) -> list[dict]:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {' | '.join(SPLITS)}, got {_show(split)}")
        return [r for r in self.rows if r["split"] == split]

    def paths(self, split: str) -> list[str]:
        """Returns the absolute paths of a split, in manifest order.

        Args:
            split: str. ``train``, ``val`` or ``test``.

        Returns:
            list of str.
        """
        return [r["path"] for r in self._rows(split)]

    def label_ids(self, split: str) -> np.ndarray:
        """Returns the integer class ids of a split, in manifest order.

        Args:
            split: str. ``train``, ``val`` or ``test``.

        Returns:
            np.ndarray of int64.
        """
        index = {lab: i for i, lab in enumerate(self.labels)}
        return np.array([index[r["label"]] for r in self._rows(split)], dtype=np.int64)

    def class_weight(self) -> dict:
        """Returns balanced class weights from the train split: ``n / (classes * n_c)``.

        Returns:
            dict of int -> float, equal to scikit-learn's ``compute_class_weight("balanced")``.
        """
        y = self.label_ids("train")
        counts = np.bincount(y, minlength=self.num_classes)
        n, k = len(y), self.num_classes
        return {i: (float(n) / (k * counts[i]) if counts[i] else 0.0) for i in range(k)}

    def steps_per_epoch(self, split: str = "train", batch_size: int = 32, balance: str = "none") -> int:
        """Returns the number of batches in one epoch of ``dataset(split, ...)``.

        Args:
            split: str. Defaults to ``train``.
            batch_size: int. Defaults to 32.
            balance: str. With ``oversample`` (train only) an epoch holds ``classes * ceil(n / classes)``
                draws (n: train images), the same number from each class. Defaults to ``none``.

        Returns:
            int.
        """
        return math.ceil(self._epoch_size(split, balance) / batch_size)

    def _epoch_size(self, split: str, balance: str) -> int:
        n = len(self._rows(split))
        if balance == "oversample" and split == "train":
            k = len(set(self.label_ids("train").tolist()))  # classes present in train
            return k * math.ceil(n / k) if k else 0
        return n

    def summary_line(self) -> str:
        """One line: files used per split and skipped files by kind."""
        c = self.counts()
        per = ", ".join(f"{s} {sum(c[s].values())}" for s in SPLITS)
        line = f"{len(self.rows)} images in {self.num_classes} classes ({per})"
        if self.skipped:
            kinds = _count_kinds(self.skipped)
            line += f"; skipped {len(self.skipped)}: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
        if self.leaks:
            line += f"; {len(self.leaks)} near-duplicate pair(s) across splits"
        return line

    # --- outputs ---

    def write(self, run_dir: str | os.PathLike) -> None:
        """Writes ``manifest.csv``, ``skipped.csv`` and ``labels.json`` into ``run_dir`` (atomically).

        Args:
            run_dir: str | PathLike. Created if missing.
        """
        run_dir = os.fspath(run_dir)
        atomic_write_text(
            os.path.join(run_dir, "manifest.csv"),
            _csv_text(MANIFEST_COLUMNS, ([r[c] for c in MANIFEST_COLUMNS] for r in self.rows)),
        )
        _write_skipped(run_dir, self.skipped)
        atomic_write_text(os.path.join(run_dir, "labels.json"), json.dumps(list(self.labels), indent=2) + "\n")

    # --- pipelines ---

    def dataset(
        self,
        split: str,
        *,
        batch_size: int,
        image_size,
        resize: str = "stretch",
        augment=None,
        balance: str = "none",
        shuffle: bool | None = None,
        seed: int = 0,
        repeat: bool = False,
    ):
        """Builds a ``tf.data`` pipeline for one split.

        Files are shuffled (train) as paths, then decoded in parallel with Pillow (``load_image``), resized,
        batched, augmented (train only, Keras preprocessing layers) and prefetched. Val and test keep the
        manifest order and are never augmented or oversampled.

        Args:
            split: str. ``train``, ``val`` or ``test``.
            batch_size: int. Images per batch (the last batch may be smaller).
            image_size: int | (int, int). Output side, or (height, width).
            resize: str. ``stretch``, ``crop`` or ``pad``. Defaults to ``stretch``.
            augment: str | list | keras.Layer | None. A preset, a list of ops, or a built augmenter; train only.
            balance: str. ``none``, ``class-weight`` (adds per-sample weights, so Keras applies them to the
                loss) or ``oversample`` (train only: every epoch draws the same number from each class).
                Defaults to ``none``.
            shuffle: bool | None. None shuffles train only. Defaults to None.
            seed: int. Seed of shuffling, oversampling and augmentation. Defaults to 0.
            repeat: bool. Repeat forever (pass ``steps_per_epoch`` to ``fit``). Defaults to False.

        Returns:
            tf.data.Dataset of ``(images float32 [B,H,W,3] in 0..255, labels int32 [B])``, or
            ``(images, labels, sample_weights float32 [B])`` when balance is ``class-weight``.
        """
        tf = _tf()
        if balance not in BALANCE_MODES:
            raise DataError(f"balance: expected one of {' | '.join(BALANCE_MODES)}, got {_show(balance)}")
        if not _is_int(batch_size) or batch_size < 1:
            raise DataError(f"batch_size: expected a positive integer, got {_show(batch_size)}")
        size = _size_pair(image_size)
        is_train = split == "train"
        paths = self.paths(split)
        ids = self.label_ids(split).astype(np.int32)
        if not paths:
            raise DataError(f"split '{split}' is empty; nothing to build a dataset from. HINT: check data.split")
        shuffle = is_train if shuffle is None else bool(shuffle)

        if balance == "oversample" and is_train:
            ds = self._oversampled(paths, ids, seed)
        else:
            ds = tf.data.Dataset.from_tensor_slices((paths, ids))
            if shuffle:
                ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.map(_decode_map(size, resize), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size)
        augmenter = _resolve_augmenter(augment, seed) if is_train else None
        if augmenter is not None:
            # One augmentation call at a time keeps its random draws reproducible for a given seed.
            ds = ds.map(_plain(lambda x, y: (augmenter(x, training=True), y)))
        if balance == "class-weight":
            cw = self.class_weight()
            table = tf.constant([cw[i] for i in range(self.num_classes)], dtype=tf.float32)
            ds = ds.map(_plain(lambda x, y: (x, y, tf.gather(table, y))))
        return ds.prefetch(tf.data.AUTOTUNE)

    def epoch_order(self, split: str = "train", *, seed: int = 0, balance: str = "none",
                    shuffle: bool | None = None) -> np.ndarray:
        """Returns the row indices (into ``paths(split)``) of one epoch, in the order ``dataset`` yields them.

        The feature cache uses it to train on cached features in exactly the batches the image pipeline would
        give with the same seed.

        Args:
            split: str. Defaults to ``train``. seed: int. balance: str. shuffle: bool | None (None: train only).

        Returns:
            np.ndarray of int64.
        """
        tf = _tf()
        n = len(self._rows(split))
        idx = np.arange(n, dtype=np.int64)
        shuffle = split == "train" if shuffle is None else bool(shuffle)
        if balance == "oversample" and split == "train":
            ds = self._oversampled(idx, self.label_ids(split).astype(np.int32), seed)
        else:
            ds = tf.data.Dataset.from_tensor_slices((idx, self.label_ids(split).astype(np.int32)))
            if shuffle:
                ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return np.array([int(i) for i, _ in ds.as_numpy_iterator()], dtype=np.int64)

    def _oversampled(self, paths: list[str], ids: np.ndarray, seed: int):
        """Round-robin over per-class shuffled, repeated streams, then an epoch-wide shuffle of the draws."""
        tf = _tf()
        present = sorted(set(ids.tolist()))  # a class absent from train (given splits) cannot be drawn
        k = len(present)
        per_class = []
        for c in present:
            sel = np.flatnonzero(ids == c)
            cp = [paths[i] for i in sel]
            d = tf.data.Dataset.from_tensor_slices((cp, ids[sel]))
            per_class.append(d.shuffle(len(cp), seed=seed + 1 + c, reshuffle_each_iteration=True).repeat())
        epoch = self._epoch_size("train", "oversample")
        choice = tf.data.Dataset.range(k).repeat()
        ds = tf.data.Dataset.choose_from_datasets(per_class, choice).take(epoch)
        return ds.shuffle(epoch, seed=seed, reshuffle_each_iteration=True)


def _write_skipped(run_dir: str, skipped: Sequence[tuple[str, str]]) -> None:
    atomic_write_text(os.path.join(run_dir, "skipped.csv"), _csv_text(("file", "reason"), skipped))


# === tf.data helpers ===


def _tf():
    """Imports TensorFlow lazily (scanning and `inceptune data summary` do not need it)."""
    import tensorflow as tf

    return tf


def _plain(fn):
    """Marks a tf.data map function as plain TensorFlow (no Python control flow): AutoGraph leaves it alone."""
    return _tf().autograph.experimental.do_not_convert(fn)


def _decode_map(size: tuple[int, int], resize: str):
    tf = _tf()
    if resize not in RESIZE_MODES:
        raise DataError(f"resize: expected one of {' | '.join(RESIZE_MODES)}, got {_show(resize)}")

    def decode(path) -> np.ndarray:
        return load_image(os.fsdecode(path), size, resize)

    def fn(path, label):
        img = tf.numpy_function(decode, [path], tf.uint8, stateful=False, name="inceptune_decode")
        img.set_shape((size[0], size[1], 3))
        return tf.cast(img, tf.float32), label

    return _plain(fn)


def files_dataset(paths: Sequence[str], *, batch_size: int, image_size, resize: str = "stretch"):
    """Builds a ``tf.data`` pipeline over arbitrary image files (for prediction), decoded as in training.

    Args:
        paths: sequence of str. Image files, in output order.
        batch_size: int. Images per batch.
        image_size: int | (int, int). Output side, or (height, width).
        resize: str. ``stretch``, ``crop`` or ``pad``. Defaults to ``stretch``.

    Returns:
        tf.data.Dataset of float32 [B, H, W, 3] in 0..255. A bad file fails the iteration with its reason.
    """
    tf = _tf()
    size = _size_pair(image_size)
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    fn = _decode_map(size, resize)
    ds = tf.data.Dataset.from_tensor_slices((paths, np.zeros(len(paths), np.int32)))
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).map(_plain(lambda x, y: x))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# === Augmentation ===


def _pair(v):
    return v if isinstance(v, (list, tuple)) else None


# op name -> what its parameter means (the Keras layer each op builds is in make_augmenter)
AUGMENT_OPS = {
    "flip": "horizontal | vertical | horizontal_and_vertical (true means horizontal)",
    "rotation": "maximum angle in degrees, e.g. 40",
    "translation": "maximum shift as a fraction of the size, e.g. 0.2, or [height, width]",
    "zoom": "maximum zoom in/out as a fraction, e.g. 0.2 (aspect kept), or [height, width]",
    "shear": "maximum shear as a fraction of the size, e.g. 0.2, or [x, y]",
    "contrast": "maximum contrast change as a fraction, e.g. 0.1",
    "brightness": "maximum brightness change as a fraction of the value range, e.g. 0.1",
}

AUGMENT_PRESETS = {
    "none": [],
    "light": [{"flip": "horizontal"}, {"rotation": 10}, {"zoom": 0.1}],
    "standard": [{"flip": "horizontal"}, {"rotation": 20}, {"translation": 0.1}, {"zoom": 0.15},
                 {"contrast": 0.1}],
    # The seeds' ImageDataGenerator(rotation_range=40, width/height_shift_range=0.2, shear_range=0.2,
    # zoom_range=0.2, horizontal_flip=True), plus mild photometric changes.
    "heavy": [{"flip": "horizontal"}, {"rotation": 40}, {"translation": 0.2}, {"shear": 0.2}, {"zoom": 0.2},
              {"contrast": 0.2}, {"brightness": 0.2}],
}

_FILL_MODES = ("reflect", "wrap", "constant", "nearest")
_AMOUNT_KEYS = {"flip": "mode", "rotation": "degrees"}  # the mapping form's key; the other ops use `factor`


def _op_error(path: str, op: str, value: Any) -> RecipeError:
    return _recipe_error(f"{path}.{op}", AUGMENT_OPS[op], value)


def _parse_op(op: str, value: Any, path: str) -> dict:
    """Normalises one op's parameter to keyword arguments of its Keras layer."""
    extra: dict[str, Any] = {}
    item_value = value
    if isinstance(value, dict):  # {rotation: {degrees: 40, fill_mode: nearest}} style
        value = dict(value)
        fill = value.pop("fill_mode", None)
        if fill is not None:
            if op not in ("rotation", "translation", "zoom", "shear") or fill not in _FILL_MODES:
                raise _recipe_error(f"{path}.{op}.fill_mode", "one of " + " | ".join(_FILL_MODES)
                                    + " (rotation, translation, zoom, shear only)", fill)
            extra["fill_mode"] = fill
        key = _AMOUNT_KEYS.get(op, "factor")
        if list(value) != [key]:
            raise _recipe_error(f"{path}.{op}", f"a mapping {{{key}: ...}} with an optional fill_mode", item_value)
        value = value[key]
    if op == "flip":
        if value is True:
            value = "horizontal"
        if value not in ("horizontal", "vertical", "horizontal_and_vertical"):
            raise _op_error(path, op, value)
        return {"mode": value, **extra}
    if op == "rotation":
        if not _is_number(value) or not 0 < value <= 180:
            raise _op_error(path, op, value)
        return {"degrees": float(value), **extra}
    pair = _pair(value)
    if pair is not None:
        if op not in ("translation", "zoom", "shear") or len(pair) != 2 or not all(
            _is_number(v) and 0 <= v <= 1 for v in pair
        ):
            raise _op_error(path, op, value)
        return {"amount": (float(pair[0]), float(pair[1])), **extra}
    if not _is_number(value) or not 0 < value <= 1:
        raise _op_error(path, op, value)
    return {"amount": float(value), **extra}


def parse_augment(spec, path: str = "data.augment") -> list[tuple[str, dict]]:
    """Validates an augmentation spec and returns its ops as ``[(op, params)]``.

    Args:
        spec: str | list | None. A preset (``none|light|standard|heavy``) or a list whose items are one-key
            mappings (``{rotation: 40}``) or bare op names (``flip``).
        path: str. Key path for error messages. Defaults to ``data.augment``.

    Returns:
        list of (op name, normalised parameters).

    Raises:
        RecipeError: unknown preset or op, or a parameter out of range, naming the key path.
    """
    if spec is None:
        return []
    if isinstance(spec, str):
        if spec not in AUGMENT_PRESETS:
            near = closest(spec, AUGMENT_PRESETS)
            raise _recipe_error(path, "a preset " + " | ".join(AUGMENT_PRESETS) + " or a list of ops", spec,
                                f"did you mean {near[0]}?" if near else None)
        spec = AUGMENT_PRESETS[spec]
    if not isinstance(spec, (list, tuple)):
        raise _recipe_error(path, "a preset " + " | ".join(AUGMENT_PRESETS) + " or a list of ops", spec)
    ops = []
    for i, item in enumerate(spec):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            item = {item: True if item == "flip" else None}
        if not isinstance(item, dict) or len(item) != 1:
            raise _recipe_error(where, "a one-key mapping such as {rotation: 40}; ops: " + ", ".join(AUGMENT_OPS),
                                item)
        (op, value), = item.items()
        if op not in AUGMENT_OPS:
            near = closest(str(op), AUGMENT_OPS)
            raise RecipeError(
                f"{where}.{op}: unknown augmentation op; allowed ops are {', '.join(AUGMENT_OPS)}"
                + (f". HINT: did you mean {near[0]}?" if near else "")
            )
        ops.append((op, _parse_op(op, value, where)))
    return ops


def make_augmenter(spec, seed: int = 0):
    """Builds a training augmenter from Keras preprocessing layers (float images in 0..255).

    Args:
        spec: str | list | None. A preset (``none|light|standard|heavy``) or a list of ops:
            ``flip`` (horizontal | vertical | horizontal_and_vertical), ``rotation`` (degrees), ``translation``,
            ``zoom``, ``shear`` (fractions, or [a, b]), ``contrast``, ``brightness`` (fractions). A geometric op
            may also be a mapping with ``fill_mode`` (reflect | wrap | constant | nearest), e.g.
            ``{rotation: {degrees: 40, fill_mode: nearest}}`` or ``{zoom: {factor: 0.2, fill_mode: nearest}}``
            (Keras defaults to reflect; ImageDataGenerator used nearest). The seeds' ImageDataGenerator
            settings are ``[{flip: horizontal}, {rotation: 40}, {translation: 0.2}, {shear: 0.2},
            {zoom: 0.2}]``.
        seed: int. Base seed; layer i gets ``seed + i``. Defaults to 0.

    Returns:
        keras.Sequential named ``augment`` (layers ``augment_<op>``), or None for ``none``/empty.

    Example:
        >>> aug = make_augmenter([{"flip": "horizontal"}, {"rotation": 40}])
        >>> images = aug(images, training=True)
    """
    ops = parse_augment(spec)
    if not ops:
        return None
    import keras

    L = keras.layers
    layers = []
    used: collections.Counter = collections.Counter()
    for i, (op, p) in enumerate(ops):
        used[op] += 1
        name = f"augment_{op}" + (f"_{used[op]}" if used[op] > 1 else "")
        s = seed + i
        fill = {"fill_mode": p["fill_mode"]} if "fill_mode" in p else {}
        amount = p.get("amount")
        hw = amount if isinstance(amount, tuple) else (amount, amount)
        if op == "flip":
            layers.append(L.RandomFlip(p["mode"], seed=s, name=name))
        elif op == "rotation":
            layers.append(L.RandomRotation(p["degrees"] / 360.0, seed=s, name=name, **fill))
        elif op == "translation":
            layers.append(L.RandomTranslation(hw[0], hw[1], seed=s, name=name, **fill))
        elif op == "zoom":
            width = hw[1] if isinstance(amount, tuple) else None  # None keeps the aspect ratio
            layers.append(L.RandomZoom(hw[0], width, seed=s, name=name, **fill))
        elif op == "shear":
            layers.append(L.RandomShear(x_factor=hw[0], y_factor=hw[1], seed=s, name=name, **fill))
        elif op == "contrast":
            layers.append(L.RandomContrast(amount, value_range=(0, 255), seed=s, name=name))
        elif op == "brightness":
            layers.append(L.RandomBrightness(amount, value_range=(0, 255), seed=s, name=name))
    return keras.Sequential(layers, name="augment")


def _resolve_augmenter(augment, seed: int):
    if augment is None:
        return None
    if isinstance(augment, (str, list, tuple)):
        return make_augmenter(augment, seed=seed)
    if callable(augment):
        return augment
    raise DataError(f"augment: expected a preset, a list of ops or a Keras layer, got {_show(augment)}")


# === prepare ===


def _resolve(path: str, base_dir) -> str:
    p = os.path.expanduser(path)
    if base_dir is not None and not os.path.isabs(p):
        p = os.path.join(os.fspath(base_dir), p)
    return os.path.abspath(p)


def prepare(
    cfg: DataConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    progress: bool = True,
    executor: str = "thread",
) -> PreparedData:
    """Scans and validates the source (or reads a saved manifest), splits it and writes the run's data files.

    Args:
        cfg: DataConfig. The recipe's data section.
        run_dir: str | PathLike | None. Where ``manifest.csv``, ``skipped.csv`` and ``labels.json`` go
            (atomic writes); None writes nothing.
        base_dir: str | PathLike | None. Folder that relative dir/csv/manifest paths resolve against (the
            recipe's folder). Defaults to the working directory.
        progress: bool. Show a progress bar on large folders when stderr is a terminal. Defaults to True.
        executor: str. ``thread``, ``process`` or ``serial`` validation. Threads (Pillow and hashlib release the
            GIL) measured 2.5x faster than a spawned process pool and on par with or faster than serial on a
            busy 2-core machine (benchmarks/data_pipeline.py). Defaults to ``thread``.

    Returns:
        PreparedData.

    Raises:
        DataError: no classes, one class, a class too small to split as asked, a CSV without the required
            columns, paths outside the CSV's folder, or missing files in a reused manifest.
    """
    kinds = [k for k in ("dir", "csv", "manifest") if getattr(cfg, k)]
    if len(kinds) != 1:
        raise DataError(
            f"data: expected exactly one of dir, csv or manifest, got {', '.join(kinds) or 'none of them'}"
        )
    kind = kinds[0]
    source = _resolve(getattr(cfg, kind), base_dir)
    if kind == "manifest":
        data = _prepare_manifest(source)
    else:
        data = _prepare_scan(source, kind, cfg, run_dir, progress, executor)
    if run_dir is not None:
        data.write(run_dir)
    return data


def _check_classes(labels: Sequence[str], source: str, ignored_hint: str = "") -> None:
    if not labels:
        raise DataError(
            f"no classes found in {source}: expected one sub-folder per class with images inside "
            f"(or CSV rows path,label){ignored_hint}. HINT: point data.dir at the folder that holds the class "
            f"folders"
        )
    if len(labels) == 1:
        raise DataError(
            f"only one class ('{labels[0]}') found in {source}; a classifier needs at least 2 classes"
            f"{ignored_hint}. HINT: add a folder per class, or point data.dir one level up/down"
        )


def _prepare_manifest(source: str) -> PreparedData:
    rows = _read_manifest(source)
    labels = sorted({r["label"] for r in rows})
    _check_classes(labels, source)
    warns = []
    dups = _duplicate_groups([r["path"] for r in rows], [r["hash"] for r in rows])
    groups = [[rows[i]["path"] for i in g] for g in dups]
    crossing = [g for g in dups if len({rows[i]["split"] for i in g}) > 1]
    if crossing:
        warns.append(
            f"leakage: {len(crossing)} group(s) of identical files span several splits in the manifest, e.g. "
            + " = ".join(f"{rows[i]['path']} [{rows[i]['split']}]" for i in crossing[0])
        )
    return PreparedData(labels=labels, rows=rows, warnings=warns, duplicate_groups=groups, source=source,
                        source_kind="manifest")


def _prepare_scan(source: str, kind: str, cfg: DataConfig, run_dir, progress: bool, executor: str) -> PreparedData:
    warns: list[str] = []
    repeated: list[tuple[str, str]] = []
    if kind == "dir":
        cands, ignored, w = _list_folder(source)
        warns += w
        given: list[str | None] = [None] * len(cands)
        has_split = False
        pairs = cands
    else:
        triples, has_split = _read_csv_source(source, cfg.allow_outside)
        first_line: dict[str, int] = {}
        unique = []
        for line, t in enumerate(triples, start=2):
            if t[0] in first_line:  # a file listed twice keeps its first row
                repeated.append((t[0], f"repeated: listed again on line {line} of the CSV "
                                       f"(first on line {first_line[t[0]]})"))
            else:
                first_line[t[0]] = line
                unique.append(t)
        pairs = [(p, lab) for p, lab, _ in unique]
        given = [s for _, _, s in unique]
        ignored = {}
    ign_hint = ""
    if ignored:
        ign_hint = " (ignored: " + ", ".join(f"{n} {k}" for k, n in sorted(ignored.items())) + ")"
    _check_classes(sorted({lab for _, lab in pairs}), source, ign_hint)

    results = _inspect_all([p for p, _ in pairs], cfg.min_side, progress=progress, executor=executor)
    keep = [i for i, r in enumerate(results) if r.reason is None]
    skipped = [(pairs[i][0], r.reason) for i, r in enumerate(results) if r.reason is not None] + repeated

    def fail(exc: DataError):
        if run_dir is not None:
            _write_skipped(os.fspath(run_dir), skipped)
        raise exc

    all_labels = sorted({lab for _, lab in pairs})
    valid = collections.Counter(pairs[i][1] for i in keep)
    empty = [lab for lab in all_labels if valid[lab] == 0]
    if empty:
        lab = empty[0]
        n_bad = sum(1 for (p, l2), r in zip(pairs, results) if l2 == lab and r.reason)
        fail(DataError(
            f"class '{lab}' has 0 valid images ({n_bad} skipped, see skipped.csv); every class needs images to "
            f"train and test on. HINT: fix or replace its files, or remove the class"
        ))
    labels = all_labels

    paths = [pairs[i][0] for i in keep]
    labs = [pairs[i][1] for i in keep]
    hashes = [results[i].sha256 for i in keep]
    if has_split:
        splits = [given[i] for i in keep]
        counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for lab, s in zip(labs, splits):
            counts[lab][s] += 1
        if all(c["train"] == 0 for c in counts.values()):
            fail(DataError(f"{source}: the split column puts no image in train. HINT: mark rows as train"))
        for lab in labels:
            missing = [s for s in SPLITS if counts[lab][s] == 0]
            if missing:
                warns.append(f"class '{lab}' has no images in {' and '.join(missing)} (splits as given in the CSV)")
    else:
        try:
            splits = assign_splits(paths, labs, hashes, cfg.split)
        except DataError as exc:
            fail(exc)

    rows = [{"path": p, "label": lab, "split": s, "hash": h} for p, lab, s, h in zip(paths, labs, splits, hashes)]
    if kind == "dir":
        rows.sort(key=lambda r: (r["label"], r["path"]))
    order = {r["path"]: j for j, r in enumerate(rows)}

    # Exact duplicates: same split by construction (or a leak when splits are given), maybe conflicting labels.
    dup_idx = _duplicate_groups(paths, hashes)
    groups = [sorted((paths[i] for i in g), key=order.get) for g in dup_idx]
    if dup_idx:
        n_files = sum(len(g) for g in dup_idx)
        warns.append(f"{len(dup_idx)} group(s) of identical files ({n_files} files); each group is kept in one "
                     f"split" if not has_split else f"{len(dup_idx)} group(s) of identical files ({n_files} files)")
        conflicting = [g for g in dup_idx if len({labs[i] for i in g}) > 1]
        for g in conflicting[:5]:
            warns.append("identical files with different labels: "
                         + ", ".join(f"{paths[i]} ({labs[i]})" for i in g))
        crossing = [g for g in dup_idx if len({splits[i] for i in g}) > 1]
        if crossing:
            warns.append(f"leakage: {len(crossing)} group(s) of identical files span several splits, e.g. "
                         + " = ".join(f"{paths[i]} [{splits[i]}]" for i in crossing[0]))

    # Near-duplicates across splits.
    pairs_nd = _near_duplicate_pairs([results[i].dhash for i in keep], [results[i].luma for i in keep])
    leaks = []
    for a, b, d in pairs_nd:
        if splits[a] != splits[b] and hashes[a] != hashes[b]:
            pa, pb = sorted((paths[a], paths[b]), key=order.get)
            leaks.append((pa, pb, d))
    if leaks:
        split_of = {p: s for p, s in zip(paths, splits)}
        a, b, d = leaks[0]
        warns.append(
            f"leakage: {len(leaks)} near-duplicate pair(s) across splits (difference hash within "
            f"{NEAR_DUPLICATE_DISTANCE} bits), e.g. {a} [{split_of[a]}] ~ {b} [{split_of[b]}] (distance {d}). "
            f"HINT: remove one of each pair, or give them a shared `_nohash_` name prefix"
        )
    return PreparedData(
        labels=labels, rows=rows, skipped=skipped, warnings=warns, ignored=ignored, duplicate_groups=groups,
        leaks=leaks, source=source, source_kind=kind,
    )


# === Summary (`inceptune data summary`) ===


def summary(
    source: str | os.PathLike,
    *,
    split: SplitConfig = SplitConfig(),
    min_side: int = 16,
    allow_outside: bool = False,
    progress: bool = True,
) -> dict:
    """Scans a folder or CSV and reports counts per split, skipped files, duplicates and leakage.

    Args:
        source: str | PathLike. A class-per-folder directory or a CSV (path,label[,split]).
        split: SplitConfig. How to split (ignored when the CSV has a split column). Defaults to SplitConfig().
        min_side: int. Minimum shorter side in pixels. Defaults to 16.
        allow_outside: bool. Allow CSV paths outside the CSV's folder. Defaults to False.
        progress: bool. Progress bar on large folders. Defaults to True.

    Returns:
        dict with ``source``, ``kind``, ``labels``, ``counts`` ({split: {label: n}}), ``total``, ``skipped``
        ([{file, reason}]), ``skipped_by_kind``, ``ignored``, ``duplicate_groups`` ([[{file, split}]]), ``leaks``
        ([{a, b, split_a, split_b, distance}]) and ``warnings``.
    """
    src = os.path.abspath(os.fspath(source))
    if os.path.isdir(src):
        cfg = DataConfig(dir=src, split=split, min_side=min_side)
    elif os.path.isfile(src):
        cfg = DataConfig(csv=src, split=split, min_side=min_side, allow_outside=allow_outside)
    else:
        raise DataError(f"{src} does not exist; expected a class-per-folder directory or a CSV (path,label[,split])")
    data = prepare(cfg, None, progress=progress)
    split_of = {r["path"]: r["split"] for r in data.rows}
    return {
        "source": data.source,
        "kind": data.source_kind,
        "labels": list(data.labels),
        "counts": data.counts(),
        "total": len(data.rows),
        "skipped": [{"file": f, "reason": r} for f, r in data.skipped],
        "skipped_by_kind": _count_kinds(data.skipped),
        "ignored": dict(data.ignored),
        "duplicate_groups": [[{"file": p, "split": split_of[p]} for p in g] for g in data.duplicate_groups],
        "leaks": [{"a": a, "b": b, "split_a": split_of[a], "split_b": split_of[b], "distance": d}
                  for a, b, d in data.leaks],
        "warnings": list(data.warnings),
    }


def _rel(path: str, root: str) -> str:
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def format_summary(d: dict) -> str:
    """Formats ``summary()``'s dict as the text ``inceptune data summary`` prints.

    Args:
        d: dict. The output of ``summary``.

    Returns:
        str. A class-by-split table, then skipped files with reasons, duplicate groups, leakage and warnings.
    """
    root = d["source"] if d.get("kind") == "dir" else os.path.dirname(d["source"])
    lines = [f"{d['source']} ({d['kind']}): {d['total']} images in {len(d['labels'])} classes"]
    width = max([len("class"), len("total")] + [len(lab) for lab in d["labels"]])
    header = f"  {'class':<{width}}  " + "  ".join(f"{s:>6}" for s in (*SPLITS, "total"))
    lines += ["", header]
    totals = {s: 0 for s in SPLITS}
    for lab in d["labels"]:
        n = [d["counts"][s].get(lab, 0) for s in SPLITS]
        for s, v in zip(SPLITS, n):
            totals[s] += v
        lines.append(f"  {lab:<{width}}  " + "  ".join(f"{v:>6}" for v in (*n, sum(n))))
    lines.append(f"  {'total':<{width}}  " + "  ".join(f"{v:>6}" for v in (*totals.values(), sum(totals.values()))))
    if d.get("ignored"):
        lines += ["", "Ignored (not candidate images): " + ", ".join(f"{n} {k}" for k, n in
                                                                      sorted(d["ignored"].items()))]
    if d["skipped"]:
        kinds = ", ".join(f"{n} {k}" for k, n in d["skipped_by_kind"].items())
        lines += ["", f"Skipped {len(d['skipped'])} file(s): {kinds}"]
        lines += [f"  {_rel(s['file'], root)}: {s['reason']}" for s in d["skipped"]]
    if d["duplicate_groups"]:
        lines += ["", f"Identical files: {len(d['duplicate_groups'])} group(s)"]
        lines += ["  " + " = ".join(f"{_rel(x['file'], root)} [{x['split']}]" for x in g)
                  for g in d["duplicate_groups"]]
    if d["leaks"]:
        lines += ["", f"Leakage: {len(d['leaks'])} near-duplicate pair(s) in different splits"]
        lines += [f"  {_rel(x['a'], root)} [{x['split_a']}] ~ {_rel(x['b'], root)} [{x['split_b']}] "
                  f"(distance {x['distance']})" for x in d["leaks"]]
    other = [w for w in d["warnings"] if not w.startswith("leakage: ") and "group(s) of identical" not in w]
    if other:
        lines += ["", "Warnings:"] + [f"  {w}" for w in other]
    return "\n".join(lines)
