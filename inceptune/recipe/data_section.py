"""Validation of the recipe's `data:` section, its `split:` and its `augment:` spec (same checks as every section)."""

from __future__ import annotations

from typing import Any

from inceptune.choices import AUGMENT_OPS, AUGMENT_PRESETS, BALANCE_MODES, FILL_MODES, RESIZE_MODES, SPLIT_METHODS
from inceptune.errors import closest
from inceptune.recipe.checks import (as_float, boolean, check_keys, choice, error, expected, integer, mapping, number,
                                     show, string, switch)
from inceptune.recipe.schema import DataConfig, MixConfig, SplitConfig

__all__ = ["data_config_from_dict", "split_config_from_dict", "mix_config_from_value", "parse_augment"]

DATA_KEYS = ("dir", "csv", "manifest", "image_size", "resize", "split", "augment", "balance", "min_side",
             "allow_outside", "batch_size", "mixup", "cutmix")
MIX_KEYS = ("alpha", "prob")
_MIX_ALPHA = {"mixup": 0.2, "cutmix": 1.0}  # timm's defaults (--mixup 0.8 / --cutmix 1.0 in its recipes)
SPLIT_KEYS = ("val", "test", "seed", "method")
SOURCE_KEYS = ("dir", "csv", "manifest")


def split_config_from_dict(value: Any, path: str = "data.split") -> SplitConfig:
    """Builds a SplitConfig from the `split:` mapping.

    Raises:
        RecipeError: an unknown key, a fraction outside [0, 1), or val + test leaving no training images.
    """
    d = mapping(value, path, "a mapping such as {val: 0.15, test: 0.15, seed: 0, method: stable-hash}")
    check_keys(d, path, SPLIT_KEYS)
    kw: dict[str, Any] = {}
    for key in ("val", "test"):
        if key in d:
            kw[key] = number(d[key], f"{path}.{key}", low=0, high=1, high_open=True,
                             what="a number between 0 and 1")
    if "seed" in d:
        kw["seed"] = integer(d["seed"], f"{path}.seed")
    if "method" in d:
        kw["method"] = choice(d["method"], f"{path}.method", SPLIT_METHODS, "split method")
    cfg = SplitConfig(**kw)
    if cfg.val + cfg.test >= 1:
        raise error(path, f"val + test must leave images for training (below 1), got val={cfg.val:g} + "
                          f"test={cfg.test:g} = {cfg.val + cfg.test:g}.", "lower val or test.")
    return cfg


def data_config_from_dict(value: Any, path: str = "data") -> DataConfig:
    """Builds a DataConfig from the recipe's `data:` mapping, rejecting unknown keys and wrong types.

    Args:
        value: dict. The parsed YAML mapping.
        path: str. Key path used in error messages. Defaults to `data`.

    Returns:
        DataConfig.

    Raises:
        RecipeError: naming the key path, what is allowed and what was received, e.g.
            `data.split.val: expected a number between 0 and 1, got "x".`
    """
    d = mapping(value, path, "a mapping with one of dir, csv or manifest")
    check_keys(d, path, DATA_KEYS)
    sources = [k for k in SOURCE_KEYS if d.get(k) is not None]
    if len(sources) != 1:
        raise error(path, f"expected exactly one of dir, csv or manifest, got {', '.join(sources) or 'none of them'}.",
                    "use `dir:` for a class-per-folder directory, `csv:` for path,label[,split] files.")
    kw: dict[str, Any] = {k: string(d[k], f"{path}.{k}", "a path (string)") for k in sources}
    if d.get("image_size") is not None:
        kw["image_size"] = integer(d["image_size"], f"{path}.image_size", minimum=1,
                                   hint="the input side in pixels, e.g. 299, or null for the backbone's default.")
    if "resize" in d:
        kw["resize"] = choice(d["resize"], f"{path}.resize", RESIZE_MODES, "resize mode")
    if "split" in d:
        kw["split"] = split_config_from_dict(d["split"], f"{path}.split")
    if "augment" in d:
        aug = d["augment"]
        parse_augment(aug, f"{path}.augment")  # validates; the spec is kept as written
        kw["augment"] = "none" if aug is None else aug if isinstance(aug, str) else list(aug)
    if "balance" in d:
        kw["balance"] = choice(d["balance"], f"{path}.balance", BALANCE_MODES, "balance mode")
    for key in ("min_side", "batch_size"):
        if key in d:
            kw[key] = integer(d[key], f"{path}.{key}", minimum=1)
    if "allow_outside" in d:
        kw["allow_outside"] = boolean(d["allow_outside"], f"{path}.allow_outside")
    for key in ("mixup", "cutmix"):
        kw[key] = mix_config_from_value(d.get(key), f"{path}.{key}", key)
    return DataConfig(**kw)


def mix_config_from_value(value: Any, path: str, kind: str = "mixup") -> MixConfig | None:
    """`data.mixup` / `data.cutmix`: null or false (off), true (defaults) or a mapping {alpha, prob}."""
    default = MixConfig(alpha=_MIX_ALPHA[kind])
    d = switch(value, path, MIX_KEYS, f"{{alpha: {default.alpha:g}, prob: 1.0}}")
    if d is None:
        return None
    return MixConfig(
        alpha=number(d.get("alpha", default.alpha), f"{path}.alpha", low=0, low_open=True,
                     hint="the mixing weight is drawn from Beta(alpha, alpha), e.g. 0.2 for mixup, 1.0 for cutmix."),
        prob=number(d.get("prob", 1.0), f"{path}.prob", low=0, high=1,
                    hint="the share of training batches that are mixed, e.g. 1.0 (all) or 0.5."),
    )


# === augmentation ===

_AMOUNT_KEYS = {"flip": "mode", "rotation": "degrees"}  # the mapping form's key; the other ops use `factor`
_GEOMETRIC = ("rotation", "translation", "zoom", "shear")  # the ops that take a fill_mode


def _fraction(value: Any) -> float | None:
    v = as_float(value) if not isinstance(value, str) else None
    return v if v is not None and 0 < v <= 1 else None


def _parse_op(op: str, value: Any, path: str) -> dict:
    """Normalises one op's parameter to keyword arguments of its Keras layer."""
    key = f"{path}.{op}"
    extra: dict[str, Any] = {}
    if isinstance(value, dict):  # {rotation: {degrees: 40, fill_mode: nearest}} style
        given, value = value, dict(value)
        fill = value.pop("fill_mode", None)
        if fill is not None:
            if op not in _GEOMETRIC or fill not in FILL_MODES:
                raise expected(f"{key}.fill_mode", "one of " + ", ".join(FILL_MODES) + " (" + ", ".join(_GEOMETRIC)
                               + " only)", fill)
            extra["fill_mode"] = fill
        amount = _AMOUNT_KEYS.get(op, "factor")
        if list(value) != [amount]:
            raise expected(key, f"a mapping {{{amount}: ...}} with an optional fill_mode", given)
        value = value[amount]
    if op == "flip":
        value = "horizontal" if value is True else value
        if value not in ("horizontal", "vertical", "horizontal_and_vertical"):
            raise expected(key, AUGMENT_OPS[op], value)
        return {"mode": value, **extra}
    if op == "rotation":
        degrees = as_float(value) if not isinstance(value, str) else None
        if degrees is None or not 0 < degrees <= 180:
            raise expected(key, AUGMENT_OPS[op], value)
        return {"degrees": degrees, **extra}
    if isinstance(value, (list, tuple)):
        pair = [as_float(v) if not isinstance(v, str) else None for v in value]
        if op not in ("translation", "zoom", "shear") or len(pair) != 2 or any(v is None or not 0 <= v <= 1
                                                                                 for v in pair):
            raise expected(key, AUGMENT_OPS[op], value)
        return {"amount": (pair[0], pair[1]), **extra}
    amount = _fraction(value)
    if amount is None:
        raise expected(key, AUGMENT_OPS[op], value)
    return {"amount": amount, **extra}


def parse_augment(spec, path: str = "data.augment") -> list[tuple[str, dict]]:
    """Validates an augmentation spec and returns its ops as `[(op, params)]`.

    Args:
        spec: str | list | None. A preset (`none|light|standard|heavy`) or a list whose items are one-key
            mappings (`{rotation: 40}`) or bare op names (`flip`).
        path: str. Key path for error messages. Defaults to `data.augment`.

    Returns:
        list of (op name, normalised parameters).

    Raises:
        RecipeError: unknown preset or op, or a parameter out of range, naming the key path.
    """
    if spec is None:
        return []
    presets = " | ".join(AUGMENT_PRESETS)
    if isinstance(spec, str):
        if spec not in AUGMENT_PRESETS:
            near = closest(spec, AUGMENT_PRESETS)
            raise expected(path, f"a preset {presets} or a list of ops", spec,
                           f"did you mean {show(near[0])}?" if near else None)
        spec = AUGMENT_PRESETS[spec]
    if not isinstance(spec, (list, tuple)):
        raise expected(path, f"a preset {presets} or a list of ops", spec)
    ops = []
    for i, item in enumerate(spec):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            item = {item: True if item == "flip" else None}
        if not isinstance(item, dict) or len(item) != 1:
            raise expected(where, "a one-key mapping such as {rotation: 40}; ops: " + ", ".join(AUGMENT_OPS), item)
        (op, value), = item.items()
        if op not in AUGMENT_OPS:
            near = closest(str(op), AUGMENT_OPS)
            raise error(f"{where}.{op}", f"unknown augmentation op {show(op)}. Allowed: {', '.join(AUGMENT_OPS)}.",
                        f"did you mean {show(near[0])}?" if near else None)
        ops.append((op, _parse_op(op, value, where)))
    return ops

