"""`tf.data` pipelines: the files of a split (or any files) decoded with the same Pillow code that validated them.

A split's order comes from one place, `_order` (shuffle per epoch, or per-class oversampling), used both by
`split_dataset` (decoded images) and by `epoch_order` (the row indices the feature cache trains on), so the
cache sees exactly the batches the image pipeline would give with the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from inceptune.choices import BALANCE_MODES, RESIZE_MODES
from inceptune.data.augment import resolve_augmenter
from inceptune.data.decode import load_image, size_pair
from inceptune.errors import DataError
from inceptune.recipe.checks import show

__all__ = ["files_dataset", "split_dataset", "epoch_order"]


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
        raise DataError(f"resize: expected one of {' | '.join(RESIZE_MODES)}, got {show(resize)}")

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
    size = size_pair(image_size)
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    fn = _decode_map(size, resize)
    ds = tf.data.Dataset.from_tensor_slices((paths, np.zeros(len(paths), np.int32)))
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).map(_plain(lambda x, y: x))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# === the splits of a PreparedData ===


def _order(data, split: str, *, seed: int, balance: str, shuffle: bool | None):
    """A dataset of row indices into `data.paths(split)`, in the order of one epoch (reshuffled every epoch)."""
    tf = _tf()
    ids = data.label_ids(split).astype(np.int32)
    idx = np.arange(len(ids), dtype=np.int64)
    if balance == "oversample" and split == "train":
        return _oversampled(data, idx, ids, seed)
    ds = tf.data.Dataset.from_tensor_slices(idx)
    if (split == "train") if shuffle is None else bool(shuffle):
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
    return ds


def _oversampled(data, idx: np.ndarray, ids: np.ndarray, seed: int):
    """Round-robin over per-class shuffled, repeated streams, then an epoch-wide shuffle of the draws."""
    tf = _tf()
    present = sorted(set(ids.tolist()))  # a class absent from train (given splits) cannot be drawn
    per_class = []
    for c in present:
        d = tf.data.Dataset.from_tensor_slices(idx[ids == c])
        per_class.append(d.shuffle(int(np.sum(ids == c)), seed=seed + 1 + c, reshuffle_each_iteration=True).repeat())
    epoch = data.epoch_size("train", "oversample")
    choice = tf.data.Dataset.range(len(present)).repeat()
    ds = tf.data.Dataset.choose_from_datasets(per_class, choice).take(epoch)
    return ds.shuffle(epoch, seed=seed, reshuffle_each_iteration=True)


def epoch_order(data, split: str = "train", *, seed: int = 0, balance: str = "none",
                shuffle: bool | None = None) -> np.ndarray:
    """The row indices (into `data.paths(split)`) of one epoch, in the order `split_dataset` yields them.

    Read as whole batches (batching after the shuffle keeps its order): one index at a time from the iterator
    cost ~0.2 s per epoch of 510 images, a quarter of a cached head epoch."""
    order = _order(data, split, seed=seed, balance=balance, shuffle=shuffle).batch(1 << 16)
    return np.concatenate([np.zeros(0, np.int64), *order.as_numpy_iterator()]).astype(np.int64)


def split_dataset(data, split: str, *, batch_size: int, image_size, resize: str = "stretch", augment=None,
                  balance: str = "none", shuffle: bool | None = None, seed: int = 0, repeat: bool = False):
    """The `tf.data` pipeline of one split of a PreparedData (see `PreparedData.dataset`)."""
    tf = _tf()
    if balance not in BALANCE_MODES:
        raise DataError(f"balance: expected one of {' | '.join(BALANCE_MODES)}, got {show(balance)}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DataError(f"batch_size: expected a positive integer, got {show(batch_size)}")
    size = size_pair(image_size)
    paths = data.paths(split)
    if not paths:
        raise DataError(f"split '{split}' is empty; nothing to build a dataset from. HINT: check data.split")
    ds = _order(data, split, seed=seed, balance=balance, shuffle=shuffle)
    from inceptune.distribute import current_strategy

    if current_strategy() is not None:  # tf.distribute rewrites the dataset's graph, which reseeds its shuffle ops:
        # fix the epoch's order first, so that every replica count sees the batches one device would
        ds = tf.data.Dataset.from_tensor_slices(np.fromiter(ds.as_numpy_iterator(), dtype=np.int64))
    if repeat:
        ds = ds.repeat()
    files = tf.constant(paths)
    ids = tf.constant(data.label_ids(split).astype(np.int32))
    ds = ds.map(_plain(lambda i: (tf.gather(files, i), tf.gather(ids, i))))
    ds = ds.map(_decode_map(size, resize), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size)
    augmenter = resolve_augmenter(augment, seed) if split == "train" else None
    if augmenter is not None:
        # One augmentation call at a time keeps its random draws reproducible for a given seed.
        ds = ds.map(_plain(lambda x, y: (augmenter(x, training=True), y)))
    if balance == "class-weight":
        cw = data.class_weight()
        table = tf.constant([cw[i] for i in range(data.num_classes)], dtype=tf.float32)
        ds = ds.map(_plain(lambda x, y: (x, y, tf.gather(table, y))))
    return ds.prefetch(tf.data.AUTOTUNE)
