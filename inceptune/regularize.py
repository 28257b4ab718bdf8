"""Soft-label regularisers of training batches: one-hot targets, mixup and CutMix, on images and on cached features.

- **mixup** (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization"): each image of a batch is blended
  with a partner from the same batch, `x = lam * x + (1 - lam) * x[perm]`, and its one-hot target the same way;
  `lam ~ Beta(alpha, alpha)`, one draw per batch (timm's `mode="batch"`).
- **CutMix** (Yun et al. 2019): a box covering `1 - lam` of the image is pasted from the partner; the box is
  clipped at the borders, so the label weight is recomputed from the pasted area (timm's `correct_lam`).
- **Mixup at the cut** (cached stages): the same blend applied to the cached features at the cut instead of the
  pixels. That is manifold mixup (Verma et al. 2019) at one fixed layer: a different regulariser from image
  mixup (the suffix is not linear, so mixing features is not mixing images), which keeps the feature cache
  working.

Every draw is a pure function of (seed, batch index), so a resumed run replays exactly the same mixes. With both
mixup and CutMix on, each batch picks one of them with equal chance (timm's `switch_prob=0.5`), then applies it
with that op's `prob`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["needs_soft_labels", "mix_parameters", "mixup_numpy", "mix_features", "cutmix_box", "mix_images",
           "one_hot_dataset", "mixed_dataset"]


def needs_soft_labels(stage, data_cfg) -> bool:
    """Whether a stage trains on one-hot (soft) targets: label smoothing, mixup or CutMix is on."""
    return bool(getattr(stage, "label_smoothing", 0.0) or getattr(data_cfg, "mixup", None)
                or getattr(data_cfg, "cutmix", None))


# === numpy: cached features ===

def mix_parameters(seed: int, step: int, n: int, mixup) -> tuple[float, np.ndarray]:
    """The mixup draw of batch `step` of an epoch seeded `seed`: (lam, partner permutation); lam is 1 for a batch
    left unmixed (drawn with probability 1 - prob)."""
    rng = np.random.default_rng([int(seed), int(step)])
    apply = rng.random() < float(mixup.prob)
    lam = float(rng.beta(mixup.alpha, mixup.alpha)) if apply else 1.0
    return lam, rng.permutation(n)


def mixup_numpy(x: np.ndarray, y: np.ndarray, lam: float, perm: np.ndarray, w: np.ndarray | None = None):
    """`lam * a + (1 - lam) * a[perm]` for the inputs, the one-hot targets and (if given) the sample weights."""
    out = [(lam * x + (1.0 - lam) * x[perm]).astype(x.dtype, copy=False),
           (lam * y + (1.0 - lam) * y[perm]).astype("float32")]
    if w is not None:
        out.append((lam * w + (1.0 - lam) * w[perm]).astype("float32"))
    return tuple(out)


def mix_features(x, y, seed: int, step: int, mixup, w=None):
    """Mixup of one batch of cached features (a no-op without `mixup`)."""
    if mixup is None:
        return (x, y) if w is None else (x, y, w)
    lam, perm = mix_parameters(seed, step, len(x), mixup)
    if lam == 1.0:
        return (x, y) if w is None else (x, y, w)
    return mixup_numpy(x, y, lam, perm, w)


# === TensorFlow: image batches ===

def cutmix_box(lam, height: int, width: int, cy, cx):
    """The CutMix box of area about `(1 - lam) * H * W` centred at (cy, cx), clipped to the image.

    Returns:
        (mask [H, W, 1] float32 with 1 inside the box, corrected lam = 1 - box area / image area).
    """
    import tensorflow as tf

    cut = tf.sqrt(1.0 - lam)
    ch = tf.cast(tf.cast(height, tf.float32) * cut, tf.int32)
    cw = tf.cast(tf.cast(width, tf.float32) * cut, tf.int32)
    y0, y1 = tf.clip_by_value(cy - ch // 2, 0, height), tf.clip_by_value(cy + ch // 2, 0, height)
    x0, x1 = tf.clip_by_value(cx - cw // 2, 0, width), tf.clip_by_value(cx + cw // 2, 0, width)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    mask = tf.cast(inside, tf.float32)[..., None]
    area = tf.cast((y1 - y0) * (x1 - x0), tf.float32)
    return mask, 1.0 - area / tf.cast(height * width, tf.float32)


def _beta(seed, alpha: float):
    """One stateless Beta(alpha, alpha) draw as the ratio of two Gamma draws."""
    import tensorflow as tf

    g = tf.random.stateless_gamma([2], seed=seed, alpha=float(alpha))
    return g[0] / (g[0] + g[1])


def mix_images(x, y, seed, mixup=None, cutmix=None, w=None):
    """Mixup or CutMix of one batch of images (float [B, H, W, C]) and one-hot targets, drawn from `seed`
    (a stateless seed pair: the same batch always gets the same mix).

    Returns:
        (x, y) or (x, y, w) mixed, and the lam used (1.0 when the batch is left unmixed).
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 6)
    n = tf.shape(x)[0]
    perm = tf.argsort(tf.random.stateless_uniform([n], seed=seeds[0]))
    pick_cutmix = tf.constant(cutmix is not None and mixup is None)
    if mixup is not None and cutmix is not None:
        pick_cutmix = tf.random.stateless_uniform([], seed=seeds[1]) < 0.5
    x_other, y_other = tf.gather(x, perm), tf.gather(y, perm)
    u = tf.random.stateless_uniform([], seed=seeds[2])

    def do_mixup():
        lam = _beta(seeds[3], mixup.alpha) if mixup is not None else tf.constant(1.0)
        lam = tf.where(u < (mixup.prob if mixup is not None else 0.0), lam, 1.0)
        return lam * x + (1.0 - lam) * x_other, lam

    def do_cutmix():
        if cutmix is None:
            return x, tf.constant(1.0)
        lam = tf.where(u < cutmix.prob, _beta(seeds[3], cutmix.alpha), 1.0)
        h, wd = tf.shape(x)[1], tf.shape(x)[2]
        cy = tf.random.stateless_uniform([], seeds[4], 0, h, dtype=tf.int32)
        cx = tf.random.stateless_uniform([], seeds[5], 0, wd, dtype=tf.int32)
        mask, lam = cutmix_box(lam, h, wd, cy, cx)
        return x * (1.0 - mask) + x_other * mask, lam

    x_mixed, lam = tf.cond(pick_cutmix, do_cutmix, do_mixup)
    y_mixed = lam * y + (1.0 - lam) * y_other
    if w is None:
        return (x_mixed, y_mixed), lam
    return (x_mixed, y_mixed, lam * w + (1.0 - lam) * tf.gather(w, perm)), lam


def one_hot_dataset(ds, num_classes: int):
    """Maps a batched dataset of (x, integer y[, w]) to one-hot float32 targets."""
    import tensorflow as tf

    def fn(*batch):
        x, y, *rest = batch
        return (x, tf.one_hot(tf.cast(y, tf.int32), num_classes, dtype=tf.float32), *rest)

    return ds.map(tf.autograph.experimental.do_not_convert(fn))


def mixed_dataset(ds, num_classes: int, seed: int, mixup=None, cutmix=None):
    """One-hot targets, then mixup/CutMix of every batch: batch i is mixed from the stateless seed (seed, i)."""
    import tensorflow as tf

    ds = one_hot_dataset(ds, num_classes)
    if mixup is None and cutmix is None:
        return ds

    def fn(i, batch):
        x, y, *rest = batch
        mixed, _ = mix_images(x, y, tf.stack([tf.cast(seed, tf.int64), i]), mixup, cutmix, rest[0] if rest else None)
        return mixed

    return ds.enumerate().map(tf.autograph.experimental.do_not_convert(fn))
