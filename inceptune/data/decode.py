"""Decoding one image with Pillow, the same way for validation, training and prediction.

Every supported format (JPEG incl. CMYK/progressive, PNG incl. 16-bit/palette/grayscale/alpha, GIF first frame,
BMP, TIFF, WebP) becomes 8-bit RGB: EXIF orientation applied, alpha composited onto white, then resized
(`stretch`, `crop` or `pad`). A damaged file becomes a reason (`truncated: ...`), never a crash.
"""

from __future__ import annotations

import os
import stat
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inceptune.choices import RESIZE_MODES
from inceptune.errors import DataError
from inceptune.recipe.checks import show

__all__ = ["load_image", "open_rgb", "file_reason", "reason_from_exception", "decompression_limit_reason",
           "resize_image", "size_pair"]

ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
PAD_COLOUR = (0, 0, 0)  # `resize: pad` letterboxes with black

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


def decompression_limit_reason(width: int, height: int) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (
            f"decompression bomb: {width}x{height} = {width * height} pixels, "
            f"more than Pillow's limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    return None


def open_rgb(
    source, draft_side: int | None = None, size: tuple[int, int] | None = None, resize: str = "stretch"
) -> Image.Image:
    """Opens, fully decodes and normalises an image to RGB, resized to (height, width) ``size`` if given.

    ``draft_side`` lets JPEGs decode at a DCT-reduced scale that still keeps both sides >= draft_side.
    Raises Pillow/OS exceptions; callers turn them into reasons.
    """
    with Image.open(source) as im:
        reason = decompression_limit_reason(*im.size)
        if reason:
            raise Image.DecompressionBombError(reason)
        if draft_side and im.format in ("JPEG", "MPO"):
            im.draft(None, (draft_side, draft_side))
        im.load()
        out = _to_rgb(_exif_transpose(im))
        if size is not None:
            out = resize_image(out, size, resize)
        if out is im:
            out = im.copy()  # closing the file frees its pixels: detach them first
        return out


def reason_from_exception(exc: BaseException) -> str:
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


def file_reason(path: str) -> str | None:
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


def resize_image(im: Image.Image, size: tuple[int, int], resize: str) -> Image.Image:
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
    raise DataError(f"resize: expected one of {' | '.join(RESIZE_MODES)}, got {show(resize)}")


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def size_pair(image_size) -> tuple[int, int]:
    if _whole(image_size) and image_size > 0:
        return int(image_size), int(image_size)
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(
        _whole(s) and s > 0 for s in image_size
    ):
        return int(image_size[0]), int(image_size[1])
    raise DataError(
        f"image_size: expected a positive integer or (height, width), got {show(image_size)}. "
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
        raise DataError(f"resize: expected one of {' | '.join(RESIZE_MODES)}, got {show(resize)}")
    size = size_pair(image_size) if image_size is not None else None
    reason = file_reason(path)
    if reason is None:
        try:
            im = open_rgb(path, draft_side=max(size) if size else None, size=size, resize=resize)
            return np.asarray(im, dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:  # Pillow raises many types for damaged files
            reason = reason_from_exception(exc)
    raise DataError(f"cannot load image {path}: {reason}")

