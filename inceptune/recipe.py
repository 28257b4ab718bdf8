"""The recipe: one YAML file that describes a whole training run (DESIGN.md §6).

A recipe has five top-level keys::

    data:    where the images are, how they are split, augmented and balanced (owned by `inceptune.data`)
    model:   backbone, weights, head, graph surgery (skips, inserted blocks) and the BatchNorm policy
    stages:  the staged fine-tuning plan: an ordered list of stages, each naming what trains, for how long, how fast
    cache:   whether frozen-prefix features may be cached (`auto` | `off`, or a mapping)
    seed:    one integer seeding splits, initialisation and shuffling

Loading is strict: unknown keys, wrong types and impossible values raise `RecipeError` naming the key path
(`stages[1].lr: expected a positive number ..., got "fast"`), what is allowed, and the fix. `--set KEY=VALUE`
overrides are applied to the raw mapping before validation. YAML is read with PyYAML's safe loader, extended
in two ways: `1e-5` is a number (YAML 1.1 reads it as a string), and a key written twice in one mapping is an
error (YAML silently keeps the last one).

Relative paths (`data.dir`, `data.csv`, `data.manifest`, and `model.weights` and `model.backbone` when they
name files) are made absolute when the recipe is loaded: relative to the recipe file's folder for values written
in the file, relative to the current directory for `--set` values and dict sources. The resolved recipe written
into a run folder therefore loads from anywhere.

Example:
    >>> recipe = load_recipe("examples/staged_top_blocks.yaml", ["stages[1].lr=1e-5"])
    >>> recipe.stages[1].lr
    1e-05
    >>> dump_recipe(recipe, "runs/flowers/recipe.yaml")
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from inceptune._io import atomic_write_text
from inceptune.errors import InceptuneError, RecipeError, SelectorError, closest

__all__ = [
    "Recipe",
    "ModelConfig",
    "HeadConfig",
    "SkipConfig",
    "InsertConfig",
    "Stage",
    "EarlyStopping",
    "CacheConfig",
    "load_recipe",
    "apply_overrides",
    "recipe_to_dict",
    "dump_recipe",
    "OPTIMIZERS",
    "SCHEDULES",
    "BATCHNORM_POLICIES",
    "POOLINGS",
    "MERGES",
    "INSERT_BLOCKS",
    "CACHE_MODES",
    "CACHE_DTYPES",
]

# === Allowed values (plain tables; the trainer, heads and surgery implement each one) ===

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "exponential")
BATCHNORM_POLICIES = ("frozen", "follow", "train")
POOLINGS = ("avg", "max", "flatten")  # as heads.py builds them
MERGES = ("add", "concat")
# Block name -> keyword arguments its function in `inceptune.blocks` accepts (besides the input and `name`).
INSERT_BLOCKS = {
    "residual_inception": ("filters", "out_channels", "scale", "activation", "zero_init"),
    "inception": ("filters_1x1", "filters_3x3_reduce", "filters_3x3", "filters_5x5_reduce", "filters_5x5",
                  "filters_pool"),
}
CACHE_MODES = ("auto", "off")
CACHE_DTYPES = ("float32", "float16")
# `model.weights` values that are not files.
_WEIGHT_WORDS = ("imagenet", "none")
_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")
_MODEL_FILE_SUFFIXES = (".keras", ".h5")


# === Schema ===

@dataclass(frozen=True)
class HeadConfig:
    """The classification head put on top of the backbone (`model.head`).

    Keys:
        pooling: str. How the backbone's last feature map becomes a vector: `avg` or `max` (global pooling) or
            `flatten`. Defaults to "avg".
        dense: list of int. Widths of hidden Dense layers (ReLU) between pooling and the classifier; `[]` puts the
            classifier right after pooling. Defaults to [].
        dropout: float in [0, 1). Dropout rate after pooling and after each hidden layer; 0 adds no Dropout
            layer. Defaults to 0.0.
    """

    pooling: str = "avg"
    dense: tuple[int, ...] = ()  # empty: pooling -> final Dense(num_classes), the seeds' feature-extractor head
    dropout: float = 0.0  # 0 adds no Dropout layer at all (not a Dropout(0) layer)


@dataclass(frozen=True)
class SkipConfig:
    """One new skip connection (`model.skips[i]`), added with `surgery.add_skip` (DESIGN.md §5).

    Keys:
        from: str. Layer or block whose output feeds the new path (stored as `src`).
        to: str. Layer or block whose output the path is merged into (stored as `dst`); downstream of `from`.
        merge: str. `add` or `concat`. Defaults to "add".
    """

    src: str
    dst: str
    merge: str = "add"  # with the zero-initialised projection, `add` leaves the outputs unchanged before training


@dataclass(frozen=True)
class InsertConfig:
    """One block spliced into the backbone (`model.insert[i]`), with `surgery.insert_after`.

    Keys:
        after: str. Layer or block after which the block is inserted.
        block: str. `residual_inception` or `inception` (functions of `inceptune.blocks`).
            Defaults to "residual_inception".
        name: str. Name prefix of the new layers. Defaults to "<after>_<block>".
        params: mapping. Keyword arguments of the block function (`residual_inception`: filters, out_channels,
            scale, activation, zero_init; `inception`: filters_1x1, filters_3x3_reduce, filters_3x3,
            filters_5x5_reduce, filters_5x5, filters_pool). Defaults to {}.
    """

    after: str
    block: str = "residual_inception"  # keeps the channel count, so it can go anywhere in the backbone
    name: str | None = None  # filled in by the loader as "<after>_<block>"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """The model to fine-tune (`model:`).

    Keys:
        backbone: str. An architecture name (`inceptune backbones`), any `keras.applications` name, or a
            saved `.keras` file. Defaults to "inception_v3".
        weights: str or null. `imagenet`, `none` (random initialisation) or a weights file
            (`.weights.h5`, `.h5`, `.keras`). Defaults to "imagenet".
        image_size: int or null. Input side in pixels. Defaults to null: `data.image_size`, else the
            backbone's default size.
        head: mapping. See `HeadConfig`. Defaults to an average-pooling head with no hidden layer.
        skips: list of mappings `{from, to, merge}`. See `SkipConfig`. Defaults to [].
        insert: list of mappings `{after, block, name, params}`. See `InsertConfig`. Defaults to [].
        batchnorm: str. BatchNorm policy (DESIGN.md §4): `frozen` (BN layers never train and always use their
            moving statistics), `follow` (BN layers train when their block trains) or `train` (BN layers
            always train). Defaults to "frozen".
    """

    backbone: str = "inception_v3"
    weights: str | None = "imagenet"  # None: random initialisation (`weights: none` in YAML)
    image_size: int | None = None  # None: data.image_size, else the backbone's default (299 for inception_v3)
    head: HeadConfig = field(default_factory=HeadConfig)
    skips: tuple[SkipConfig, ...] = ()
    insert: tuple[InsertConfig, ...] = ()
    batchnorm: str = "frozen"  # small fine-tuning batches give noisy batch statistics: keep ImageNet's


@dataclass(frozen=True)
class EarlyStopping:
    """Early stopping for one stage (`stages[i].early_stopping`); `true` means all defaults, `null` none.

    Keys:
        monitor: str. The metric watched, as Keras logs it. Defaults to "val_loss".
        patience: int >= 0. Epochs without improvement before the stage stops. Defaults to 3.
        min_delta: float >= 0. Smallest change counted as an improvement. Defaults to 0.0.
        restore_best: bool. Restore the weights of the best epoch when the stage ends. Defaults to true.
    """

    monitor: str = "val_loss"
    patience: int = 3  # Keras's default 0 stops at the first noisy epoch
    min_delta: float = 0.0
    restore_best: bool = True  # unlike Keras's default, so a stage hands its best weights to the next one


@dataclass(frozen=True)
class Stage:
    """One stage of staged fine-tuning (`stages[i]`): what trains, for how long, and how fast.

    Everything the `train` selector does not select is frozen for the stage. The stage runner recompiles the
    model at the start of each stage.

    Keys:
        name: str of letters, digits, `_`, `-`, `.`. Used in history.csv and checkpoint names.
            Defaults to "stage<i>".
        train: str (selector, DESIGN.md §3) or a list of selectors (their union). Required.
        epochs: int >= 0. Required.
        lr: float > 0. Base learning rate (peak, after warmup). Required.
        optimizer: str. `adam`, `adamw` or `sgd`. Defaults to "adam".
        weight_decay: float >= 0 or null. Defaults to null: the optimizer's own default.
        momentum: float in [0, 1). Momentum of `sgd` (ignored by the others). Defaults to 0.9.
        schedule: str. `constant`, `cosine` (from lr down to 0 over `decay_steps`) or `exponential`
            (lr * decay_rate ** (step / decay_steps), Keras's `ExponentialDecay`). Defaults to "constant".
        decay_rate: float in (0, 1]. Factor of the exponential schedule. Defaults to 0.9.
        decay_steps: int > 0 or null. Steps of one decay period. Defaults to null: one epoch for
            `exponential`, the whole stage after warmup for `cosine`.
        warmup_epochs: int in [0, epochs]. Linear warmup from 0 to lr. Defaults to 0.
        lr_mult: mapping selector -> factor >= 0. Scales the learning rate of those layers' variables
            (discriminative learning rates); later entries win where selectors overlap; 0 freezes the
            variables while keeping their layers' training-mode behaviour. Defaults to {}.
        early_stopping: mapping, true or null. See `EarlyStopping`. Defaults to null (no early stopping).
        batch_size: int > 0 or null. Defaults to null: the data section's batch size.
    """

    name: str
    train: str
    epochs: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float | None = None  # None: Keras's default for the optimizer (adamw: 0.004; adam, sgd: none)
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"
    decay_rate: float = 0.9  # exponential only; the seeds' ExponentialDecay(..., decay_rate=0.9)
    decay_steps: int | None = None  # None: one epoch (exponential) / the whole stage after warmup (cosine)
    warmup_epochs: int = 0
    lr_mult: dict[str, float] = field(default_factory=dict)  # selector -> factor; unlisted variables use 1
    early_stopping: EarlyStopping | None = None
    batch_size: int | None = None  # None: the data section's batch size


@dataclass(frozen=True)
class CacheConfig:
    """The frozen-prefix feature cache (`cache:`): `auto`, `off`, or a mapping with these keys.

    Keys:
        mode: str. `auto` (cache the output of the frozen prefix when a stage trains only layers after it) or
            `off`. Defaults to "auto".
        views: int >= 1. Augmented views of each training image encoded into the cache; epochs cycle through
            them. 1 encodes the un-augmented image only. Defaults to 1.
        dtype: str. `float32` or `float16` (half the memory). Defaults to "float32".
        memory_budget_mb: number > 0 or null. Most memory the cached features may take. Defaults to null:
            the cache module decides.
    """

    mode: str = "auto"
    views: int = 1  # 1: no augmentation in cached stages (each extra view costs one more pass of the prefix)
    dtype: str = "float32"
    memory_budget_mb: float | None = None  # None: cache.py decides from the available memory


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (DESIGN.md §6). Build it with `load_recipe`; write it with `dump_recipe`.

    Keys:
        data: the data section, as `inceptune.data.data_config_from_dict` returns it (a `DataConfig`). Required.
        model: see `ModelConfig`. Defaults to all of `ModelConfig`'s defaults.
        stages: non-empty list of stages, names unique. See `Stage`. Required.
        cache: see `CacheConfig`. Defaults to "auto".
        seed: int in [0, 2**32). Seeds splits, initialisation and shuffling. Defaults to 0.
    """

    data: Any  # inceptune.data.DataConfig (a plain dict only while inceptune.data is absent)
    model: ModelConfig
    stages: tuple[Stage, ...]
    cache: CacheConfig = field(default_factory=CacheConfig)
    seed: int = 0


# === YAML: 1e-5 is a float, duplicate keys are errors ===

_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.1's float pattern with the decimal point and the exponent sign made optional (YAML 1.2 reads 1e-5).
_FLOAT_RE = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def _recipe_resolvers() -> dict:
    resolvers = {ch: [(tag, rx) for tag, rx in items if tag != _FLOAT_TAG]
                 for ch, items in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for ch in "-+0123456789.":
        resolvers.setdefault(ch, []).append((_FLOAT_TAG, _FLOAT_RE))
    return resolvers


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, reading `1e-5` as a float and refusing a key written twice in one mapping."""

    yaml_implicit_resolvers = _recipe_resolvers()

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_show(key)} (first written on line {first + 1}); "
                        "YAML would silently keep only the last one", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _RecipeDumper(yaml.SafeDumper):
    """SafeDumper whose resolvers match `_RecipeLoader`, so a string like "1e-5" is quoted when written."""

    yaml_implicit_resolvers = _recipe_resolvers()


def _yaml_error(e: yaml.YAMLError, where: str) -> RecipeError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = ""
    if mark is not None:
        where = f"{where}, line {mark.line + 1}, column {mark.column + 1}"
        lines = (getattr(mark, "buffer", None) or "").splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
    problem = ", ".join(str(p) for p in (getattr(e, "context", None), getattr(e, "problem", None)) if p) or str(e)
    if "duplicate key" in problem:
        hint = "keep one of the two entries."
    elif "constructor for the tag '!" in problem or re.search(r"(?:^|[:,{\[-])\s*!", line):
        hint = 'a value starting with "!" is a YAML tag: quote selectors such as train: "!name:*mixed*".'
    elif "alias" in problem or "anchor" in problem or re.search(r"(?:^|[:,{\[-])\s*[*&]", line):
        hint = 'a value starting with "*" or "&" is a YAML alias or anchor: quote it, e.g. train: "*mixed*".'
    else:
        hint = ('check the indentation, and quote values that contain ": " or " #", or start with '
                '"!", "&", "*", "[" or "{".')
    return RecipeError(f"{where}: not valid YAML: {problem}. HINT: {hint}")


# === Messages ===

def _show(value: Any) -> str:
    """Shows a received value the way it would be written in JSON/YAML flow style: "fast", 3, null, [64]."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _err(key: str, message: str, hint: str | None = None) -> RecipeError:
    """A RecipeError whose message starts with the key path; `.key` keeps the path for blaming overrides."""
    error = RecipeError(f"{key}: {message}" + (f" HINT: {hint}" if hint else ""))
    error.key = key
    return error


def _expected(key: str, what: str, value: Any, hint: str | None = None) -> RecipeError:
    return _err(key, f"expected {what}, got {_show(value)}.", hint)


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(str(key), ensure_ascii=False)}]"


# === Value checks ===

_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _as_float(value: Any) -> float | None:
    """A finite float from an int, a float or a numeric string ("1e-4"); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def _number(value: Any, key: str, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, what: str | None = None,
            hint: str | None = None) -> float:
    number = _as_float(value)
    ok = number is not None
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        if what is None:
            if low == 0 and low_open and high is None:
                what = "a positive number"
            elif low == 0 and high is None:
                what = "a number >= 0"
            else:
                lo = ("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}")
                hi = ("inf" if high is None else f"{high:g}") + (")" if high_open or high is None else "]")
                what = f"a number in {lo}, {hi}"
        raise _expected(key, what, value, hint)
    return number


def _integer(value: Any, key: str, *, minimum: int | None = None, maximum: int | None = None,
             hint: str | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        what = "a whole number"
        if minimum is not None and maximum is not None:
            what += f" from {minimum} to {maximum}"
        elif minimum is not None:
            what += f" >= {minimum}"
        raise _expected(key, what, value, hint)
    return value


def _string(value: Any, key: str, what: str = "a non-empty string", hint: str | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _expected(key, what, value, hint)
    return value.strip()


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _expected(key, "true or false", value)
    return value


def _choice(value: Any, key: str, choices: Iterable[str], what: str) -> str:
    choices = tuple(choices)
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    allowed = ", ".join(choices)
    if not isinstance(value, str):
        raise _expected(key, f"one of {allowed}", value)
    near = closest(value.strip().lower(), choices)
    hint = f"did you mean {' or '.join(_show(n) for n in near)}?" if near else f"use one of {allowed}."
    raise _err(key, f"unknown {what} {_show(value)}. Allowed: {allowed}.", hint)


def _mapping(value: Any, key: str, what: str = "a mapping (key: value lines)") -> dict:
    if not isinstance(value, dict):
        raise _expected(key, what, value)
    return value


def _sequence(value: Any, key: str, what: str = "a list") -> list:
    if not isinstance(value, (list, tuple)):
        raise _expected(key, what, value, f"write a YAML list, e.g. {key.rsplit('.', 1)[-1]}: [...].")
    return list(value)


def _check_keys(d: dict, path: str, allowed: Iterable[str], required: Iterable[str] = (),
                section: str | None = None) -> None:
    allowed = tuple(allowed)
    where = section or (f"`{path}`" if path else "the recipe")
    for k in d:
        if not isinstance(k, str):
            raise _err(_child(path, str(k)), f"keys must be names, got {_show(k)} in {where}.",
                       "quote the key or fix the indentation.")
        if k not in allowed:
            near = closest(k, allowed)
            hint = (f"did you mean {' or '.join(_show(n) for n in near)}?" if near
                    else "remove it, or check its indentation (it may belong to another section).")
            raise _err(_child(path, k), f"unknown key {_show(k)} in {where}. Allowed keys: {', '.join(allowed)}.",
                       hint)
    for k in required:
        if d.get(k) is None:
            raise _err(_child(path, k), f"missing required key {_show(k)} in {where}.", _REQUIRED_HINTS.get(k))


_REQUIRED_HINTS = {
    "data": "add a data section, e.g. data: {dir: path/to/images}.",
    "stages": "add at least one stage, e.g. stages: [{name: head, train: head, epochs: 5, lr: 1.0e-3}].",
    "train": 'name what trains with a selector, e.g. train: head, or train: "head,from:mixed9".',
    "epochs": "add e.g. epochs: 5.",
    "lr": "add a learning rate, e.g. lr: 1.0e-3.",
    "from": "name the layer or block the skip starts at, e.g. from: mixed8.",
    "to": "name the layer or block the skip ends at, e.g. to: mixed10.",
    "after": "name the layer or block to insert after, e.g. after: mixed7.",
}


def _selector(value: Any, key: str) -> str:
    """Checks a selector's syntax with `inceptune.selectors.parse`; a list of selectors means their union."""
    if isinstance(value, (list, tuple)) and value:
        value = ",".join(_selector(v, _child(key, i)) for i, v in enumerate(value))
    text = _string(value, key, "a selector string (e.g. head, all, \"from:mixed9\")",
                   "see the selector forms in DESIGN.md §3; quote selectors that start with \"!\".")
    parse = _optional_attr("inceptune.selectors", "parse")
    if parse is not None:
        try:
            parse(text)
        except SelectorError as e:
            raise _err(key, str(e)) from e
    return text


def _optional_attr(module: str, name: str):
    """`module.name` if the module exists, else None (lets this file work while sibling modules are written)."""
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), name, None)


# === Sections ===

_TOP_KEYS = ("data", "model", "stages", "cache", "seed")
_MODEL_KEYS = ("backbone", "weights", "image_size", "head", "skips", "insert", "batchnorm")
_HEAD_KEYS = ("pooling", "dense", "dropout")
_SKIP_KEYS = ("from", "to", "merge")
_INSERT_KEYS = ("after", "block", "name", "params")
_STAGE_KEYS = ("name", "train", "epochs", "lr", "optimizer", "weight_decay", "momentum", "schedule", "decay_rate",
               "decay_steps", "warmup_epochs", "lr_mult", "early_stopping", "batch_size")
_EARLY_KEYS = ("monitor", "patience", "min_delta", "restore_best")
_CACHE_KEYS = ("mode", "views", "dtype", "memory_budget_mb")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _data_from_dict(value: Any, path: str = "data"):
    from_dict = _optional_attr("inceptune.data", "data_config_from_dict")
    if from_dict is None:  # inceptune.data not written yet: keep the mapping as given
        return copy.deepcopy(_mapping(value, path))
    return from_dict(value, path=path)


def _head_from_dict(value: Any, path: str) -> HeadConfig:
    if value is None:
        return HeadConfig()
    d = _mapping(value, path, "a mapping such as {pooling: avg, dense: [1024], dropout: 0.2}")
    _check_keys(d, path, _HEAD_KEYS)
    dense = d.get("dense", [])
    if dense is None:
        dense = []
    if not isinstance(dense, (list, tuple)):
        raise _expected(f"{path}.dense", "a list of layer widths", dense,
                        f"write dense: [{dense}] for one hidden layer." if isinstance(dense, int) else None)
    return HeadConfig(
        pooling=_choice(d.get("pooling", "avg"), f"{path}.pooling", POOLINGS, "pooling"),
        dense=tuple(_integer(w, f"{path}.dense[{i}]", minimum=1) for i, w in enumerate(dense)),
        dropout=_number(d.get("dropout", 0.0), f"{path}.dropout", low=0, high=1, high_open=True,
                        hint="dropout is the fraction of units dropped, e.g. 0.2."),
    )


def _skip_from_dict(value: Any, path: str) -> SkipConfig:
    d = _mapping(value, path, "a mapping such as {from: mixed8, to: mixed10}")
    _check_keys(d, path, _SKIP_KEYS, required=("from", "to"))
    src = _string(d["from"], f"{path}.from", "a layer or block name")
    dst = _string(d["to"], f"{path}.to", "a layer or block name")
    if src == dst:
        raise _err(f"{path}.to", f"a skip must end downstream of where it starts; from and to are both {_show(src)}.",
                   "name a later block in to, e.g. {from: mixed8, to: mixed10}.")
    return SkipConfig(src=src, dst=dst, merge=_choice(d.get("merge", "add"), f"{path}.merge", MERGES, "merge"))


def _insert_from_dict(value: Any, path: str) -> InsertConfig:
    d = _mapping(value, path, "a mapping such as {after: mixed7, block: residual_inception}")
    _check_keys(d, path, _INSERT_KEYS, required=("after",))
    after = _string(d["after"], f"{path}.after", "a layer or block name")
    block = _choice(d.get("block", "residual_inception"), f"{path}.block", INSERT_BLOCKS, "block")
    name = d.get("name")
    name = f"{after}_{block}" if name is None else _string(name, f"{path}.name")
    params = d.get("params") or {}
    params = _mapping(params, f"{path}.params", "a mapping of the block's keyword arguments")
    _check_keys(params, f"{path}.params", INSERT_BLOCKS[block], section=f"the parameters of block {_show(block)}")
    return InsertConfig(after=after, block=block, name=name, params=copy.deepcopy(params))


def _weights(value: Any, key: str) -> str | None:
    if value is None:
        return None
    text = _string(value, key, 'imagenet, none, or a weights file (".weights.h5", ".h5", ".keras")')
    if text.lower() in _WEIGHT_WORDS:
        return None if text.lower() == "none" else "imagenet"
    if text.endswith(_WEIGHT_SUFFIXES):
        return text
    near = closest(text.lower(), _WEIGHT_WORDS)
    raise _err(key, f"unknown weights {_show(value)}. Allowed: imagenet, none, or a path to a weights file ending in "
                    ".weights.h5, .h5 or .keras.",
               f"did you mean {_show(near[0])}?" if near else "check the file name and its suffix.")


def _model_from_dict(value: Any, path: str = "model") -> ModelConfig:
    if value is None:
        return ModelConfig()
    d = _mapping(value, path)
    _check_keys(d, path, _MODEL_KEYS)
    image_size = d.get("image_size")
    if image_size is not None:
        image_size = _integer(image_size, f"{path}.image_size", minimum=1, hint="the input side in pixels, e.g. 299.")
    skips = tuple(_skip_from_dict(s, f"{path}.skips[{i}]")
                  for i, s in enumerate(_sequence(d.get("skips") or [], f"{path}.skips")))
    inserts = tuple(_insert_from_dict(s, f"{path}.insert[{i}]")
                    for i, s in enumerate(_sequence(d.get("insert") or [], f"{path}.insert")))
    seen: dict[str, int] = {}
    for i, ins in enumerate(inserts):
        if ins.name in seen:
            raise _err(f"{path}.insert[{i}].name", f"duplicate block name {_show(ins.name)} "
                       f"(also {path}.insert[{seen[ins.name]}]); layer names must be unique.",
                       "give each inserted block its own name.")
        seen[ins.name] = i
    return ModelConfig(
        backbone=_string(d.get("backbone", "inception_v3"), f"{path}.backbone",
                         "an architecture name (see `inceptune backbones`) or a .keras file"),
        weights=_weights(d.get("weights", "imagenet"), f"{path}.weights"),
        image_size=image_size,
        head=_head_from_dict(d.get("head"), f"{path}.head"),
        skips=skips,
        insert=inserts,
        batchnorm=_choice(d.get("batchnorm", "frozen"), f"{path}.batchnorm", BATCHNORM_POLICIES, "BatchNorm policy"),
    )


def _early_from_dict(value: Any, path: str) -> EarlyStopping | None:
    if value is None or value is False:
        return None
    if value is True:
        return EarlyStopping()
    d = _mapping(value, path, "a mapping such as {monitor: val_loss, patience: 3}, true, or null")
    _check_keys(d, path, _EARLY_KEYS)
    return EarlyStopping(
        monitor=_string(d.get("monitor", "val_loss"), f"{path}.monitor", "a metric name such as val_loss"),
        patience=_integer(d.get("patience", 3), f"{path}.patience", minimum=0),
        min_delta=_number(d.get("min_delta", 0.0), f"{path}.min_delta", low=0),
        restore_best=_boolean(d.get("restore_best", True), f"{path}.restore_best"),
    )


def _lr_mult_from_dict(value: Any, path: str) -> dict[str, float]:
    if value is None:
        return {}
    d = _mapping(value, path, 'a mapping selector: factor, e.g. {"from:mixed9": 0.1}')
    out: dict[str, float] = {}
    for sel, factor in d.items():
        key = _child(path, str(sel))
        sel = _selector(sel, key)
        out[sel] = _number(factor, key, low=0, what="a factor >= 0",
                           hint="a factor multiplies the stage's lr for those layers: 0.1 is ten times slower, "
                                "0 keeps them unchanged.")
    return out


def _stage_from_dict(value: Any, path: str, index: int) -> Stage:
    d = _mapping(value, path, "a mapping such as {name: head, train: head, epochs: 5, lr: 1.0e-3}")
    name = d.get("name", f"stage{index}")
    section = f"stage {_show(name)}" if isinstance(name, str) else None
    _check_keys(d, path, _STAGE_KEYS, required=("train", "epochs", "lr"), section=section)
    name = _string(name, f"{path}.name", "a stage name")
    if not _NAME_RE.fullmatch(name):
        raise _err(f"{path}.name", f"a stage name may contain only letters, digits, '_', '-' and '.' (it names files), "
                                   f"got {_show(name)}.", f"e.g. name: {re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.")
    epochs = _integer(d["epochs"], f"{path}.epochs", minimum=0)
    warmup = _integer(d.get("warmup_epochs", 0), f"{path}.warmup_epochs", minimum=0)
    if warmup > epochs:
        raise _err(f"{path}.warmup_epochs", f"expected at most the stage's {epochs} epochs, got {warmup}.",
                   "lower warmup_epochs or raise epochs.")
    weight_decay = d.get("weight_decay")
    if weight_decay is not None:
        weight_decay = _number(weight_decay, f"{path}.weight_decay", low=0)
    decay_steps = d.get("decay_steps")
    if decay_steps is not None:
        decay_steps = _integer(decay_steps, f"{path}.decay_steps", minimum=1, hint="or null for one epoch.")
    batch_size = d.get("batch_size")
    if batch_size is not None:
        batch_size = _integer(batch_size, f"{path}.batch_size", minimum=1)
    return Stage(
        name=name,
        train=_selector(d["train"], f"{path}.train"),
        epochs=epochs,
        lr=_number(d["lr"], f"{path}.lr", low=0, low_open=True, what="a positive number",
                   hint="write a learning rate such as 1.0e-3 (fine-tuning usually uses 1e-5 to 1e-3)."),
        optimizer=_choice(d.get("optimizer", "adam"), f"{path}.optimizer", OPTIMIZERS, "optimizer"),
        weight_decay=weight_decay,
        momentum=_number(d.get("momentum", 0.9), f"{path}.momentum", low=0, high=1, high_open=True),
        schedule=_choice(d.get("schedule", "constant"), f"{path}.schedule", SCHEDULES, "schedule"),
        decay_rate=_number(d.get("decay_rate", 0.9), f"{path}.decay_rate", low=0, high=1, low_open=True,
                           hint="the learning rate is multiplied by decay_rate every decay_steps, e.g. 0.9."),
        decay_steps=decay_steps,
        warmup_epochs=warmup,
        lr_mult=_lr_mult_from_dict(d.get("lr_mult"), f"{path}.lr_mult"),
        early_stopping=_early_from_dict(d.get("early_stopping"), f"{path}.early_stopping"),
        batch_size=batch_size,
    )


def _stages_from_list(value: Any, path: str = "stages") -> tuple[Stage, ...]:
    items = _sequence(value, path, "a list of stages")
    if not items:
        raise _err(path, "expected at least one stage, got an empty list.", _REQUIRED_HINTS["stages"])
    stages = tuple(_stage_from_dict(s, f"{path}[{i}]", i) for i, s in enumerate(items))
    seen: dict[str, int] = {}
    for i, stage in enumerate(stages):
        if stage.name in seen:
            raise _err(f"{path}[{i}].name",
                       f"duplicate stage name {_show(stage.name)} (also {path}[{seen[stage.name]}]); stage names must "
                       "be unique (they name history rows and checkpoints).",
                       f'rename one, e.g. name: {stage.name}_{i}.')
        seen[stage.name] = i
    return stages


def _cache_from_value(value: Any, path: str = "cache") -> CacheConfig:
    if value is None or value is True:  # `cache: on` is YAML 1.1's true
        return CacheConfig()
    if value is False:  # `cache: off` is YAML 1.1's false
        return CacheConfig(mode="off")
    if isinstance(value, str):
        return CacheConfig(mode=_choice(value, path, CACHE_MODES, "cache mode"))
    d = _mapping(value, path, "auto, off, or a mapping such as {views: 4, dtype: float16}")
    _check_keys(d, path, _CACHE_KEYS)
    mode = d.get("mode", "auto")
    if isinstance(mode, bool):
        mode = "auto" if mode else "off"
    budget = d.get("memory_budget_mb")
    if budget is not None:
        budget = _number(budget, f"{path}.memory_budget_mb", low=0, low_open=True)
    return CacheConfig(
        mode=_choice(mode, f"{path}.mode", CACHE_MODES, "cache mode"),
        views=_integer(d.get("views", 1), f"{path}.views", minimum=1),
        dtype=_choice(d.get("dtype", "float32"), f"{path}.dtype", CACHE_DTYPES, "dtype"),
        memory_budget_mb=budget,
    )


def _recipe_from_dict(raw: Any) -> Recipe:
    d = _mapping(raw, "recipe", "a mapping with the keys data, model, stages, cache, seed")
    _check_keys(d, "", _TOP_KEYS, required=("data", "stages"))
    return Recipe(
        data=_data_from_dict(d["data"], "data"),
        model=_model_from_dict(d.get("model"), "model"),
        stages=_stages_from_list(d["stages"], "stages"),
        cache=_cache_from_value(d.get("cache"), "cache"),
        seed=_integer(d.get("seed", 0), "seed", minimum=0, maximum=2**32 - 1),
    )


# === Paths ===

def _absolutize(raw: dict, base: Path) -> None:
    """Makes the file paths of a raw recipe absolute, relative to `base` (in place)."""

    def fix(section: Any, key: str, is_path) -> None:
        if isinstance(section, dict) and isinstance(section.get(key), str) and is_path(section[key]):
            p = Path(os.path.expanduser(section[key]))
            section[key] = os.path.normpath(p if p.is_absolute() else base / p)

    data, model = raw.get("data"), raw.get("model")
    fix(data, "dir", lambda v: True)
    fix(data, "csv", lambda v: True)
    fix(data, "manifest", lambda v: True)
    fix(model, "weights", lambda v: v.strip().lower() not in _WEIGHT_WORDS and v.endswith(_WEIGHT_SUFFIXES))
    fix(model, "backbone", lambda v: v.endswith(_MODEL_FILE_SUFFIXES))


# === Overrides ===

_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX_TOKEN = re.compile(r"\[\s*(-?[0-9]+)\s*\]")
_QUOTED_TOKEN = re.compile(r"""\[\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)')\s*\]""")


def _override_error(text: str, message: str, hint: str | None = None) -> RecipeError:
    return RecipeError(f"--set {text}: {message}" + (f" HINT: {hint}" if hint else ""))


def _parse_override(text: str) -> tuple[list, Any]:
    """Splits `stages[1].lr=1e-5` into (["stages", 1, "lr"], 1e-05); the value is read as YAML."""
    if not isinstance(text, str):
        raise RecipeError(f"--set: expected a KEY=VALUE string, got {_show(text)}.")
    tokens: list = []
    pos, expect_name = 0, True
    usage = 'write KEY=VALUE, e.g. --set stages[1].lr=1e-5 or --set \'stages[0].lr_mult["from:mixed9"]=0.1\'.'
    while True:
        if expect_name:
            m = _NAME_TOKEN.match(text, pos)
            if not m:
                what = "nothing" if pos >= len(text) else _show(text[pos:pos + 1])
                raise _override_error(text, f"expected a key name at position {pos}, found {what}.", usage)
            tokens.append(m.group(0))
            pos, expect_name = m.end(), False
            continue
        if pos >= len(text):
            raise _override_error(text, "missing '=VALUE'.", usage)
        c = text[pos]
        if c == "=":
            break
        if c == ".":
            pos, expect_name = pos + 1, True
            continue
        m = _INDEX_TOKEN.match(text, pos) or _QUOTED_TOKEN.match(text, pos)
        if c == "[" and m:
            if m.re is _INDEX_TOKEN:
                tokens.append(int(m.group(1)))
            else:
                key = m.group(1) if m.group(1) is not None else m.group(2)
                tokens.append(re.sub(r"\\(.)", r"\1", key) if m.group(1) is not None else key)
            pos = m.end()
            continue
        raise _override_error(text, f"unexpected {_show(c)} at position {pos} in the key.",
                              'keys containing ":" "." or "," go in quoted brackets: lr_mult["from:mixed9"]. ' + usage)
    value_text = text[pos + 1:]
    try:
        value = yaml.load(value_text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        value = value_text  # not YAML (e.g. "!name:*mixed*"): the literal text
    return tokens, value


def _path_text(tokens: list) -> str:
    path = ""
    for t in tokens:
        path = _child(path, t)
    return path


def _descend(node: Any, token: Any, next_token: Any, text: str, where: str) -> Any:
    """The child of `node` at `token`, created (as {} or []) when missing; shorthands become mappings."""
    fresh = [] if isinstance(next_token, int) else {}
    if isinstance(token, int):
        if not isinstance(node, list):
            raise _override_error(text, f"{where or 'the recipe'} is {_kind(node)}, not a list, "
                                        f"so it has no [{token}].")
        index = _list_index(node, token, text, where, allow_append=True)
        if index == len(node):
            node.append(fresh)
        elif node[index] is None:
            node[index] = fresh
        return node[index]
    if not isinstance(node, dict):
        raise _override_error(text, f"{where or 'the recipe'} is {_kind(node)}, not a mapping, "
                                    f"so it has no key {_show(token)}.")
    child = node.get(token)
    here = _child(where, token)
    if child is None:
        node[token] = fresh
    elif isinstance(fresh, dict) and not isinstance(child, dict):
        if here == "cache" and isinstance(child, (str, bool)):  # cache: auto|off -> {mode: ...}
            node[token] = {"mode": ("auto" if child else "off") if isinstance(child, bool) else child}
        elif here.endswith(".early_stopping") and isinstance(child, bool):  # true|false -> {} (turns it on)
            node[token] = {}
        else:
            raise _override_error(text, f"{here} is {_kind(child)}, not a mapping.",
                                  f"set {here} itself, e.g. --set {here}=VALUE.")
    return node[token]


def _list_index(node: list, token: int, text: str, where: str, allow_append: bool) -> int:
    index = token + len(node) if token < 0 else token
    top = len(node) if allow_append else len(node) - 1
    if not 0 <= index <= top:
        have = f"{len(node)} entries ({where}[0] to {where}[{len(node) - 1}])" if node else "no entries"
        raise _override_error(text, f"{where}[{token}] does not exist: {where} has {have}.",
                              f"use an index from 0 to {len(node) - 1}, or {where}[{len(node)}] to add an entry."
                              if node else f"use {where}[0] to add the first entry.")
    return index


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({_show(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({_show(value)})"
    if isinstance(value, str):
        return f"a string ({_show(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def apply_overrides(raw: dict, overrides: Iterable[str] = ()) -> dict:
    """Applies `--set KEY=VALUE` overrides to a raw (not yet validated) recipe mapping.

    Keys are dotted paths with list indices and quoted keys: `model.backbone`, `stages[1].lr`, `stages[-1].epochs`,
    `stages[0].lr_mult["from:mixed9"]`. Values are read as YAML (`1e-5` is a number, `[64]` a list,
    `{"from:mixed9": 0.1}` a mapping, `none` the string none, an empty value null); text that is not valid
    YAML (`!name:*mixed*`) is kept as a string. Missing mappings along the path are created, `stages[N]` with
    N equal to the number of stages appends a stage, and `cache: auto` / `early_stopping: true` turn into
    mappings when a key below them is set. Validation happens afterwards, in `load_recipe`.

    Args:
        raw: dict. The recipe as read from YAML; it is not modified.
        overrides: iterable of str. `KEY=VALUE` strings, applied in order (later ones win).

    Returns:
        A new dict with the overrides applied.

    Example:
        >>> apply_overrides({"seed": 0}, ["seed=3"])
        {'seed': 3}
    """
    out = copy.deepcopy(raw)
    for text in overrides:
        tokens, value = _parse_override(text)
        node, where = out, ""
        for token, next_token in zip(tokens[:-1], tokens[1:]):
            node = _descend(node, token, next_token, text, where)
            where = _child(where, token)
        last = tokens[-1]
        if isinstance(last, int):
            if not isinstance(node, list):
                raise _override_error(text, f"{where} is {_kind(node)}, not a list, so it has no [{last}].")
            index = _list_index(node, last, text, where, allow_append=True)
            if index == len(node):
                node.append(value)
            else:
                node[index] = value
        else:
            if not isinstance(node, dict):
                raise _override_error(text, f"{where or 'the recipe'} is {_kind(node)}, not a mapping, "
                                            f"so it has no key {_show(last)}.")
            node[last] = value
    return out


def _new_part(raw: Any, tokens: list) -> list:
    """The shortest prefix of `tokens` that does not exist in `raw` yet (all of them if the key exists)."""
    node, out = raw, []
    for token in tokens:
        if isinstance(token, int) and isinstance(node, list) and -len(node) <= token < len(node):
            token = token % len(node)
            node = node[token]
        elif isinstance(token, str) and isinstance(node, dict) and node.get(token) is not None:
            node = node[token]
        else:
            if isinstance(token, int) and isinstance(node, list) and token < 0:
                token += len(node)
            return out + [token]
        out.append(token)
    return out


def _blamed_override(error: Exception, parsed: list[tuple[str, str]]) -> str | None:
    """The last override whose key path contains, or is contained in, the key the error is about."""
    key = getattr(error, "key", None)
    if key is None:
        m = re.match(r"([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*|\[[^\]]*\])*): ", str(error))
        key = m.group(1) if m else None
    if key is None:
        return None

    def inside(a: str, b: str) -> bool:  # a is b or below b
        return a == b or (a.startswith(b) and a[len(b)] in ".[")

    for text, path in reversed(parsed):
        if inside(key, path) or inside(path, key):
            return text
    return None


# === Loading ===

def _read_source(source: Any) -> tuple[Any, str | None, Path]:
    """Returns (raw mapping, file label or None, folder that relative paths start from)."""
    if isinstance(source, Recipe):
        return recipe_to_dict(source), None, Path.cwd()
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None, Path.cwd()
    if not isinstance(source, (str, os.PathLike)):
        raise RecipeError(f"a recipe is a YAML file path, a dict or a Recipe, got {type(source).__name__}.")
    path = Path(source)
    if not path.is_file():
        hint = "check the path; recipes are YAML files such as examples/staged_top_blocks.yaml."
        if path.is_dir():
            raise RecipeError(f"{path}: is a folder, not a recipe file. HINT: {hint}")
        raise RecipeError(f"{path}: recipe file not found. HINT: {hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a text file ({e.reason}). HINT: a recipe is a UTF-8 YAML file.") from e
    try:
        raw = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise _yaml_error(e, str(path)) from e
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty. HINT: {_REQUIRED_HINTS['data']} and "
                          f"{_REQUIRED_HINTS['stages']}")
    return raw, str(path), path.resolve().parent


def load_recipe(source: str | os.PathLike | Mapping | Recipe, overrides: Iterable[str] = ()) -> Recipe:
    """Reads, overrides and validates a recipe.

    Args:
        source: str, Path, dict or Recipe. A YAML file, or the recipe as a mapping (e.g. from Python code).
        overrides: iterable of str. `--set` strings such as `stages[1].lr=1e-5`, applied before validation
            (see `apply_overrides`). Defaults to none.

    Returns:
        A `Recipe` with every default filled in and every file path absolute.

    Raises:
        RecipeError: the file is missing or not YAML (file and line named), an override is malformed, or a key is
            unknown, of the wrong type or impossible (key path named, and the override that set it if one did).
            Errors of the data section come from `inceptune.data` and are prefixed the same way.

    Example:
        >>> recipe = load_recipe("recipe.yaml", ["model.backbone=inception_mini", "stages[1].lr=1e-5"])
    """
    raw, label, base = _read_source(source)
    if not isinstance(raw, dict):
        where = f"{label}: " if label else ""
        raise RecipeError(f"{where}expected a mapping with the keys {', '.join(_TOP_KEYS)} at the top of the recipe, "
                          f"got {_kind(raw)}. HINT: start the file with `data:` and `stages:` sections.")
    _absolutize(raw, base)
    parsed = []  # (override, the key path it set or created): errors under that path are blamed on it
    for text in overrides:
        parsed.append((text, _path_text(_new_part(raw, _parse_override(text)[0]))))
        raw = apply_overrides(raw, [text])
    _absolutize(raw, Path.cwd())  # paths given by overrides are relative to the current folder
    try:
        return _recipe_from_dict(raw)
    except InceptuneError as e:
        blamed = _blamed_override(e, parsed)
        prefix = f"--set {blamed}: " if blamed else (f"{label}: " if label else "")
        if not prefix:
            raise
        error = type(e)(prefix + str(e))
        if hasattr(e, "key"):
            error.key = e.key
        raise error from e


# === Writing ===

def _plain(value: Any) -> Any:
    """Dataclasses, tuples, paths and enums as plain YAML values (a generic fallback for the data section)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "value") and type(value).__module__ != "builtins" and hasattr(type(value), "__members__"):
        return _plain(value.value)  # an Enum
    return value


def _data_to_dict(data: Any) -> Any:
    if isinstance(data, Mapping):
        return copy.deepcopy(dict(data))
    to_dict = _optional_attr("inceptune.data", "data_config_to_dict")
    if to_dict is not None:
        return to_dict(data)
    if hasattr(data, "to_dict"):
        return data.to_dict()
    return _plain(data)


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as a plain mapping, every key written out, that `load_recipe` reads back to an equal Recipe.

    Args:
        recipe: Recipe.

    Returns:
        dict with the keys data, model, stages, cache, seed (YAML key names: skips use `from`/`to`).
    """
    m = recipe.model
    return _plain({
        "data": _data_to_dict(recipe.data),
        "model": {
            "backbone": m.backbone,
            "weights": m.weights,
            "image_size": m.image_size,
            "head": {"pooling": m.head.pooling, "dense": list(m.head.dense), "dropout": m.head.dropout},
            "skips": [{"from": s.src, "to": s.dst, "merge": s.merge} for s in m.skips],
            "insert": [{"after": i.after, "block": i.block, "name": i.name, "params": copy.deepcopy(i.params)}
                       for i in m.insert],
            "batchnorm": m.batchnorm,
        },
        "stages": [_stage_to_dict(s) for s in recipe.stages],
        "cache": dataclasses.asdict(recipe.cache),
        "seed": recipe.seed,
    })


def _stage_to_dict(stage: Stage) -> dict:
    d = {f.name: getattr(stage, f.name) for f in dataclasses.fields(stage)}
    d["lr_mult"] = dict(stage.lr_mult)
    d["early_stopping"] = None if stage.early_stopping is None else dataclasses.asdict(stage.early_stopping)
    return d




def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Writes the resolved recipe as YAML, atomically (temporary file, then rename).

    Args:
        recipe: Recipe.
        path: str or Path. The file to write (its folder is created if needed); an existing file is replaced.

    Returns:
        The Path written. `load_recipe(path)` returns a Recipe equal to `recipe`.
    """
    path = Path(path)
    body = yaml.dump(recipe_to_dict(recipe), Dumper=_RecipeDumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=None, width=100)
    header = "# Resolved inceptune recipe: every default written out, file paths absolute.\n"
    atomic_write_text(path, header + body)
    return path
