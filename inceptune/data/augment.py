"""Training augmentation: a recipe's `augment:` spec as a `keras.Sequential` of Keras preprocessing layers.

The spec is validated by `inceptune.recipe.parse_augment` (presets and ops are the tables of
`inceptune.choices`); this module builds the layers. Keras is imported only when an augmenter is built.
"""

from __future__ import annotations

import collections

from inceptune.errors import DataError
from inceptune.recipe.checks import show
from inceptune.recipe.data_section import parse_augment

__all__ = ["make_augmenter", "resolve_augmenter"]


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


def resolve_augmenter(augment, seed: int):
    if augment is None:
        return None
    if isinstance(augment, (str, list, tuple)):
        return make_augmenter(augment, seed=seed)
    if callable(augment):
        return augment
    raise DataError(f"augment: expected a preset, a list of ops or a Keras layer, got {show(augment)}")
