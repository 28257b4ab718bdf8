"""Test-time augmentation: average the predicted probabilities over a few transformed views of each image.

A TTA is written as a short string (`--tta` on the command line, `tta=` in Python), terms joined with `+`:

| spec | views |
|---|---|
| `none` (or `1`) | the image itself: plain prediction |
| `flip` | the image and its left-right mirror (2 views) |
| `K` (a whole number, 2-10) | the full image and K-1 crops (below) |
| `crops` | `6`: the full image, the centre and the four corners |
| `flip+crops`, `flip+K` | every crop view and its mirror (12 views, 2K views) |

Crops keep 87.5% of the side and are resized back to the input size: the centre, the four corners, then the top,
bottom, left and right edge midpoints. The first view is always the image itself, so an evaluation with TTA
also gives the plain prediction for free (`metrics.json` records both). Each view of a batch goes through the
model's one compiled forward (`inference.compiled_forward`): no retracing, whatever the TTA.

Mirroring is wrong where left and right mean something: digits and letters (a mirrored 2 is no digit), text,
road signs with arrows, anything with handedness (left/right body parts in medical images). Crops assume the
object fills the frame generously; they hurt when the telling detail sits near a border.

Example:
    probs = tta_proba(model, images, "flip")                        # (N, C), averaged over 2 views
    probs, views = tta_proba(model, images, "flip+crops", return_views=True)  # views: (N, 12, C)
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from inceptune.choices import TTA_MAX_CROPS, TTA_WORDS
from inceptune.errors import InceptuneError, closest

__all__ = ["TTA", "CROP_SCALE", "parse_tta", "tta_forward", "tta_proba"]

CROP_SCALE = 0.875  # each crop keeps 87.5% of the side (the 224-of-256 ratio of the classic ImageNet crops)
# Where each crop sits, as (y, x) fractions of the free margin: the centre, the 4 corners, then the edge midpoints
# top and bottom before left and right, so every K but 9 is a left-right symmetric set.
_CROP_POSITIONS = ((0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.5), (1.0, 0.5), (0.5, 0.0),
                   (0.5, 1.0))
_CROPS_WORD = 6  # `crops`: the full image, the centre and the four corners


@dataclasses.dataclass(frozen=True)
class TTA:
    """A test-time augmentation: which views of each image are averaged.

    Attributes:
        flip: bool. Add the left-right mirror of every view. Defaults to False.
        crops: int in [1, 10]. Views of the crop family: the full image, then crops (see the module docstring).
            Defaults to 1 (the full image only).
        scale: float in (0, 1]. Side of each crop as a fraction of the image's side. Defaults to 0.875.
    """

    flip: bool = False
    crops: int = 1
    scale: float = CROP_SCALE

    @property
    def spec(self) -> str:
        """The string form: `none`, `flip`, `crops`, `5`, `flip+crops`, ..."""
        crops = "" if self.crops == 1 else "crops" if self.crops == _CROPS_WORD else str(self.crops)
        terms = (["flip"] if self.flip else []) + ([crops] if crops else [])
        return "+".join(terms) or "none"

    @property
    def num_views(self) -> int:
        return self.crops * (2 if self.flip else 1)

    def views(self) -> list[tuple[tuple[float, float, float, float] | None, bool]]:
        """Each view as (crop box (y1, x1, y2, x2) in [0, 1] or None for the full image, mirrored); identity first."""
        boxes = [None]
        for fy, fx in _CROP_POSITIONS[: self.crops - 1]:
            y1, x1 = fy * (1 - self.scale), fx * (1 - self.scale)
            boxes.append((y1, x1, y1 + self.scale, x1 + self.scale))
        return [(box, mirrored) for box in boxes for mirrored in ((False, True) if self.flip else (False,))]


def _error(value, what: str, hint: str) -> InceptuneError:
    return InceptuneError(
        f"--tta: {what}, received {value!r}. Allowed: none, flip, crops, or a whole number K of views from 1 to "
        f"{TTA_MAX_CROPS} (the full image and K-1 crops), joined with + as in flip+crops or flip+5. HINT: {hint}",
        key="tta")


def parse_tta(value) -> TTA | None:
    """Reads a TTA spec. None, "", "none", False, 1 and "1" mean no TTA (None is returned).

    Args:
        value: None, bool, int, str (`flip`, `crops`, `5`, `flip+crops`, ...) or a `TTA`.

    Returns:
        TTA, or None for plain prediction.

    Raises:
        InceptuneError: an unknown term, a K outside [1, 10], or a term given twice (`key` "tta").
    """
    if value is None or value is False:
        return None
    if isinstance(value, TTA):
        if not 1 <= value.crops <= TTA_MAX_CROPS or not 0 < value.scale <= 1:
            raise _error(value, f"crops must be in [1, {TTA_MAX_CROPS}] and scale in (0, 1]", "e.g. TTA(flip=True).")
        return value if value.num_views > 1 else None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = str(int(value))
    if not isinstance(value, str):
        raise _error(value, "expected a string such as flip", "e.g. --tta flip.")
    flip, crops = False, None
    for term in (t.strip().lower() for t in value.split("+")):
        if term in ("", "none"):
            if value.strip().lower() in ("", "none"):
                continue
            raise _error(value, "an empty or 'none' term inside a combination", "e.g. flip+crops.")
        if term == "flip":
            if flip:
                raise _error(value, "flip is given twice", "name it once.")
            flip = True
            continue
        k = _CROPS_WORD if term == "crops" else int(term) if re.fullmatch(r"[0-9]+", term) else None
        if k is None:
            near = closest(term, TTA_WORDS)
            raise _error(value, f"unknown transform {term!r}",
                         f"did you mean {' or '.join(repr(n) for n in near)}?" if near else "e.g. --tta flip.")
        if crops is not None:
            raise _error(value, "the number of crops is given twice", "give one number, or crops.")
        if not 1 <= k <= TTA_MAX_CROPS:
            raise _error(value, f"{k} views is outside 1 to {TTA_MAX_CROPS}", f"e.g. --tta {min(max(k, 2), 10)}.")
        crops = k
    tta = TTA(flip=flip, crops=crops or 1)
    return tta if tta.num_views > 1 else None


def _view_fn(box, mirrored: bool):
    import tensorflow as tf

    def fn(x):
        if box is not None:
            n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
            boxes = tf.tile(tf.constant([box], dtype=tf.float32), [n, 1])
            x = tf.image.crop_and_resize(x, boxes, tf.range(n), (h, w), method="bilinear")
        if mirrored:
            x = tf.reverse(x, axis=[2])
        return x

    return fn


def tta_forward(model, tta):
    """A callable `batch -> (B, V, C)`: every view of the batch through the model's compiled forward.

    The caller keeps `model` alive while using it (the compiled forward refers to it weakly).
    """
    import tensorflow as tf

    from inceptune.inference import compiled_forward

    tta = parse_tta(tta) or TTA()
    base = compiled_forward(model)
    fns = [_view_fn(box, mirrored) for box, mirrored in tta.views()]

    def forward(x):
        x = tf.convert_to_tensor(x)
        return tf.stack([base(fn(x)) for fn in fns], axis=1)

    return forward


def tta_proba(model, data, tta, batch_size: int = 32, progress=None, return_views: bool = False):
    """Probabilities averaged over the views of a TTA (plain `predict_proba` when `tta` means none).

    Args:
        model: keras.Model. Single-input image classifier (raw 0-255 pixels in).
        data: array (N, H, W, 3) or a `tf.data.Dataset`, as `inference.predict_proba` takes them.
        tta: a TTA spec (see `parse_tta`).
        batch_size: int. Images per model call. Defaults to 32.
        progress: callable or None. Called with the number of images of each batch done. Defaults to None.
        return_views: bool. Also return every view's probabilities. Defaults to False.

    Returns:
        np.ndarray (N, C) of float32, the mean over the views; with `return_views`, (mean, views (N, V, C)) where
        `views[:, 0]` is the plain prediction.
    """
    from inceptune.inference import predict_proba

    plan = parse_tta(tta) or TTA()
    if plan.num_views == 1:
        probs = predict_proba(model, data, batch_size=batch_size, progress=progress)
        return (probs, probs[:, None]) if return_views else probs
    views = predict_proba(model, data, batch_size=batch_size, progress=progress, forward=tta_forward(model, plan))
    if views.ndim == 2:  # no image at all
        views = views.reshape(0, plan.num_views, views.shape[-1])
    mean = views.mean(axis=1).astype(np.float32)
    return (mean, views) if return_views else mean
