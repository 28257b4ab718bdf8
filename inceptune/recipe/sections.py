"""Validation of the recipe's model, stages and cache sections, and of the whole recipe mapping.

Each `*_from_dict` takes the raw YAML value and its key path and returns a schema dataclass, or raises
`RecipeError` naming the key (`inceptune.recipe.checks`). The data section is `inceptune.recipe.data_section`.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from inceptune.choices import (BATCHNORM_POLICIES, CACHE_DTYPES, CACHE_MODES, CALIBRATION_METHODS,
                               DISTRIBUTE_STRATEGIES, INSERT_BLOCKS, LABEL_SMOOTHING_MAX, MERGES, OPTIMIZERS, POOLINGS,
                               PRECISIONS, PREPROCESS_MODES, SCALE_LR_RULES, SCHEDULES)
from inceptune.errors import SelectorError, closest
from inceptune.recipe.checks import (REQUIRED_HINTS, boolean, check_keys, child, choice, error, expected, integer,
                                     mapping, number, sequence, show, string, switch)
from inceptune.recipe.data_section import data_config_from_dict
from inceptune.recipe.schema import (CacheConfig, DistributeConfig, EarlyStopping, EmaConfig, HeadConfig,
                                     InsertConfig, ModelConfig, Recipe, SkipConfig, Stage)
from inceptune.selector_syntax import parse

__all__ = ["recipe_from_dict", "TOP_KEYS", "WEIGHT_WORDS", "WEIGHT_SUFFIXES", "MODEL_FILE_SUFFIXES"]

# `model.weights` values that are not files, and the suffixes that make a value a file path.
WEIGHT_WORDS = ("imagenet", "none")
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")
MODEL_FILE_SUFFIXES = (".keras", ".h5")

TOP_KEYS = ("data", "model", "stages", "cache", "seed", "calibrate", "precision", "distribute")
_MODEL_KEYS = ("backbone", "weights", "image_size", "head", "skips", "insert", "batchnorm", "cut", "features",
               "preprocess")
_HEAD_KEYS = ("pooling", "dense", "dropout")
_SKIP_KEYS = ("from", "to", "merge")
_INSERT_KEYS = ("after", "block", "name", "params")
_STAGE_KEYS = ("name", "train", "epochs", "lr", "optimizer", "weight_decay", "momentum", "schedule", "decay_rate",
               "decay_steps", "warmup_epochs", "lr_mult", "early_stopping", "batch_size", "label_smoothing",
               "clip_norm", "ema")
_EMA_KEYS = ("decay",)
_EARLY_KEYS = ("monitor", "patience", "min_delta", "restore_best")
_CACHE_KEYS = ("mode", "views", "dtype", "memory_budget_mb")
_DISTRIBUTE_KEYS = ("strategy", "devices", "scale_lr")
# a device as TensorFlow names it: GPU:0, /gpu:1, /device:CPU:0, /job:localhost/replica:0/task:0/device:GPU:1
_DEVICE_RE = re.compile(r"(?:/job:[^/]+/replica:\d+/task:\d+)?/?(?:device:)?(cpu|gpu|tpu):(\d+)", re.IGNORECASE)
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _selector(value: Any, key: str) -> str:
    """Checks a selector's syntax with `inceptune.selectors.parse`; a list of selectors means their union."""
    if isinstance(value, (list, tuple)) and value:
        value = ",".join(_selector(v, child(key, i)) for i, v in enumerate(value))
    text = string(value, key, "a selector string (e.g. head, all, \"from:mixed9\")",
                   "see the selector forms in DESIGN.md §3; quote selectors that start with \"!\".")
    try:
        parse(text)
    except SelectorError as e:
        raise error(key, str(e)) from e
    return text


def _head_from_dict(value: Any, path: str) -> HeadConfig:
    if value is None:
        return HeadConfig()
    d = mapping(value, path, "a mapping such as {pooling: avg, dense: [1024], dropout: 0.2}")
    check_keys(d, path, _HEAD_KEYS)
    dense = d.get("dense", [])
    if dense is None:
        dense = []
    if not isinstance(dense, (list, tuple)):
        raise expected(f"{path}.dense", "a list of layer widths", dense,
                        f"write dense: [{dense}] for one hidden layer." if isinstance(dense, int) else None)
    return HeadConfig(
        pooling=choice(d.get("pooling", "avg"), f"{path}.pooling", POOLINGS, "pooling"),
        dense=tuple(integer(w, f"{path}.dense[{i}]", minimum=1) for i, w in enumerate(dense)),
        dropout=number(d.get("dropout", 0.0), f"{path}.dropout", low=0, high=1, high_open=True,
                        hint="dropout is the fraction of units dropped, e.g. 0.2."),
    )


def _skip_from_dict(value: Any, path: str) -> SkipConfig:
    d = mapping(value, path, "a mapping such as {from: mixed8, to: mixed10}")
    check_keys(d, path, _SKIP_KEYS, required=("from", "to"))
    src = string(d["from"], f"{path}.from", "a layer or block name")
    dst = string(d["to"], f"{path}.to", "a layer or block name")
    if src == dst:
        raise error(f"{path}.to", f"a skip must end downstream of where it starts; from and to are both {show(src)}.",
                   "name a later block in to, e.g. {from: mixed8, to: mixed10}.")
    return SkipConfig(src=src, dst=dst, merge=choice(d.get("merge", "add"), f"{path}.merge", MERGES, "merge"))


def _insert_from_dict(value: Any, path: str) -> InsertConfig:
    d = mapping(value, path, "a mapping such as {after: mixed7, block: residual_inception}")
    check_keys(d, path, _INSERT_KEYS, required=("after",))
    after = string(d["after"], f"{path}.after", "a layer or block name")
    block = choice(d.get("block", "residual_inception"), f"{path}.block", INSERT_BLOCKS, "block")
    name = d.get("name")
    name = f"{after}_{block}" if name is None else string(name, f"{path}.name")
    params = d.get("params") or {}
    params = mapping(params, f"{path}.params", "a mapping of the block's keyword arguments")
    check_keys(params, f"{path}.params", INSERT_BLOCKS[block], section=f"the parameters of block {show(block)}")
    return InsertConfig(after=after, block=block, name=name, params=copy.deepcopy(params))


def _weights(value: Any, key: str) -> str | None:
    if value is None:
        return None
    text = string(value, key, 'imagenet, none, or a weights file (".weights.h5", ".h5", ".keras")')
    if text.lower() in WEIGHT_WORDS:
        return None if text.lower() == "none" else "imagenet"
    if text.endswith(WEIGHT_SUFFIXES):
        return text
    near = closest(text.lower(), WEIGHT_WORDS)
    raise error(key, f"unknown weights {show(value)}. Allowed: imagenet, none, or a path to a weights file ending in "
                    ".weights.h5, .h5 or .keras.",
               f"did you mean {show(near[0])}?" if near else "check the file name and its suffix.")


def _block_name(value: Any, key: str, blocks: tuple[str, ...]) -> str:
    """A block of the backbone (checked against its static block list when the architecture is known)."""
    text = string(value, key, "a block name such as mixed7")
    if blocks and text not in blocks:
        near = closest(text, blocks)
        raise error(key, f"unknown block {show(text)}. The backbone's blocks: {', '.join(blocks)}.",
                   f"did you mean {' or '.join(show(n) for n in near)}?" if near
                   else "`inceptune backbones` lists every architecture's blocks.")
    return text


def _cut_and_features(d: dict, path: str, backbone: Any) -> tuple[str | None, tuple[str, ...]]:
    """`model.cut` and `model.features`: known blocks of the backbone, features unique and at or below the cut."""
    from inceptune.architectures import ARCHITECTURES  # static block lists: no Keras import

    spec = ARCHITECTURES.get(backbone) if isinstance(backbone, str) else None
    blocks = tuple(spec.block_names) if spec else ()
    cut = d.get("cut")
    cut = None if cut is None else _block_name(cut, f"{path}.cut", blocks)
    raw = d.get("features")
    raw = [] if raw is None else [raw] if isinstance(raw, str) else sequence(raw, f"{path}.features")
    features = tuple(_block_name(f, f"{path}.features[{i}]", blocks) for i, f in enumerate(raw))
    for i, name in enumerate(features):
        if name in features[:i]:
            raise error(f"{path}.features[{i}]", f"{show(name)} is listed twice; each block is pooled once.",
                       "remove the repeated name.")
        if cut is not None and blocks and blocks.index(name) > blocks.index(cut):
            raise error(f"{path}.features[{i}]", f"block {show(name)} lies above model.cut {show(cut)}, which drops "
                       "it.", f"list blocks up to {cut}, or move the cut up (cut: {name}).")
    return cut, features


def _model_from_dict(value: Any, path: str = "model") -> ModelConfig:
    if value is None:
        return ModelConfig()
    d = mapping(value, path)
    check_keys(d, path, _MODEL_KEYS)
    image_size = d.get("image_size")
    if image_size is not None:
        image_size = integer(image_size, f"{path}.image_size", minimum=1, hint="the input side in pixels, e.g. 299.")
    skips = tuple(_skip_from_dict(s, f"{path}.skips[{i}]")
                  for i, s in enumerate(sequence(d.get("skips") or [], f"{path}.skips")))
    inserts = tuple(_insert_from_dict(s, f"{path}.insert[{i}]")
                    for i, s in enumerate(sequence(d.get("insert") or [], f"{path}.insert")))
    cut, features = _cut_and_features(d, path, d.get("backbone", "inception_v3"))
    seen: dict[str, int] = {}
    for i, ins in enumerate(inserts):
        if ins.name in seen:
            raise error(f"{path}.insert[{i}].name", f"duplicate block name {show(ins.name)} "
                       f"(also {path}.insert[{seen[ins.name]}]); layer names must be unique.",
                       "give each inserted block its own name.")
        seen[ins.name] = i
    return ModelConfig(
        backbone=string(d.get("backbone", "inception_v3"), f"{path}.backbone",
                         "an architecture name (see `inceptune backbones`) or a .keras file"),
        weights=_weights(d.get("weights", "imagenet"), f"{path}.weights"),
        image_size=image_size,
        head=_head_from_dict(d.get("head"), f"{path}.head"),
        skips=skips,
        insert=inserts,
        batchnorm=choice(d.get("batchnorm", "frozen"), f"{path}.batchnorm", BATCHNORM_POLICIES, "BatchNorm policy"),
        cut=cut,
        features=features,
        preprocess=(None if d.get("preprocess") is None
                    else choice(d["preprocess"], f"{path}.preprocess", PREPROCESS_MODES, "input scaling")),
    )


def _early_from_dict(value: Any, path: str) -> EarlyStopping | None:
    d = switch(value, path, _EARLY_KEYS, "{monitor: val_loss, patience: 3}")
    if d is None:
        return None
    return EarlyStopping(
        monitor=string(d.get("monitor", "val_loss"), f"{path}.monitor", "a metric name such as val_loss"),
        patience=integer(d.get("patience", 3), f"{path}.patience", minimum=0),
        min_delta=number(d.get("min_delta", 0.0), f"{path}.min_delta", low=0),
        restore_best=boolean(d.get("restore_best", True), f"{path}.restore_best"),
    )


def _ema_from_dict(value: Any, path: str) -> EmaConfig | None:
    d = switch(value, path, _EMA_KEYS, "{decay: 0.999}")
    if d is None:
        return None
    return EmaConfig(decay=number(d.get("decay", EmaConfig.decay), f"{path}.decay", low=0, high=1, low_open=True,
                                  high_open=True, hint="the share of the average kept at each step, e.g. 0.999 "
                                                       "(about the last 1000 steps) or 0.99 for short stages."))


def _lr_mult_from_dict(value: Any, path: str) -> dict[str, float]:
    if value is None:
        return {}
    d = mapping(value, path, 'a mapping selector: factor, e.g. {"from:mixed9": 0.1}')
    out: dict[str, float] = {}
    for sel, factor in d.items():
        key = child(path, str(sel))
        sel = _selector(sel, key)
        out[sel] = number(factor, key, low=0, what="a factor >= 0",
                           hint="a factor multiplies the stage's lr for those layers: 0.1 is ten times slower, "
                                "0 keeps them unchanged.")
    return out


def _stage_from_dict(value: Any, path: str, index: int) -> Stage:
    d = mapping(value, path, "a mapping such as {name: head, train: head, epochs: 5, lr: 1.0e-3}")
    name = d.get("name", f"stage{index}")
    section = f"stage {show(name)}" if isinstance(name, str) else None
    check_keys(d, path, _STAGE_KEYS, required=("train",), section=section)
    name = string(name, f"{path}.name", "a stage name")
    if not _NAME_RE.fullmatch(name):
        fixed = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        raise error(f"{path}.name", "a stage name may contain only letters, digits, '_', '-' and '.' (it names "
                                   f"files), got {show(name)}.", f"e.g. name: {fixed}.")
    epochs = integer(d.get("epochs", Stage.epochs), f"{path}.epochs", minimum=0)
    warmup = integer(d.get("warmup_epochs", 0), f"{path}.warmup_epochs", minimum=0)
    if warmup > epochs:
        raise error(f"{path}.warmup_epochs", f"expected at most the stage's {epochs} epochs, got {warmup}.",
                   "lower warmup_epochs or raise epochs.")
    weight_decay = d.get("weight_decay")
    if weight_decay is not None:
        weight_decay = number(weight_decay, f"{path}.weight_decay", low=0)
    decay_steps = d.get("decay_steps")
    if decay_steps is not None:
        decay_steps = integer(decay_steps, f"{path}.decay_steps", minimum=1, hint="or null for one epoch.")
    batch_size = d.get("batch_size")
    if batch_size is not None:
        batch_size = integer(batch_size, f"{path}.batch_size", minimum=1)
    clip_norm = d.get("clip_norm")
    if clip_norm is not None:
        clip_norm = number(clip_norm, f"{path}.clip_norm", low=0, low_open=True,
                           hint="the largest global gradient norm allowed, e.g. 1.0, or null for no clipping.")
    return Stage(
        name=name,
        train=_selector(d["train"], f"{path}.train"),
        epochs=epochs,
        lr=number(d.get("lr", Stage.lr), f"{path}.lr", low=0, low_open=True, what="a positive number",
                   hint="write a learning rate such as 1.0e-3 (fine-tuning usually uses 1e-5 to 1e-3)."),
        optimizer=choice(d.get("optimizer", "adam"), f"{path}.optimizer", OPTIMIZERS, "optimizer"),
        weight_decay=weight_decay,
        momentum=number(d.get("momentum", 0.9), f"{path}.momentum", low=0, high=1, high_open=True),
        schedule=choice(d.get("schedule", "constant"), f"{path}.schedule", SCHEDULES, "schedule"),
        decay_rate=number(d.get("decay_rate", 0.9), f"{path}.decay_rate", low=0, high=1, low_open=True,
                           hint="the learning rate is multiplied by decay_rate every decay_steps, e.g. 0.9."),
        decay_steps=decay_steps,
        warmup_epochs=warmup,
        lr_mult=_lr_mult_from_dict(d.get("lr_mult"), f"{path}.lr_mult"),
        early_stopping=_early_from_dict(d.get("early_stopping"), f"{path}.early_stopping"),
        batch_size=batch_size,
        label_smoothing=number(d.get("label_smoothing", 0.0), f"{path}.label_smoothing", low=0,
                               high=LABEL_SMOOTHING_MAX, hint="a share of the target spread over all classes, e.g. "
                                                              "0.1 (timm's --smoothing)."),
        clip_norm=clip_norm,
        ema=_ema_from_dict(d.get("ema"), f"{path}.ema"),
    )


def _stages_from_list(value: Any, path: str = "stages") -> tuple[Stage, ...]:
    items = sequence(value, path, "a list of stages")
    if not items:
        raise error(path, "expected at least one stage, got an empty list.", REQUIRED_HINTS["stages"])
    stages = tuple(_stage_from_dict(s, f"{path}[{i}]", i) for i, s in enumerate(items))
    seen: dict[str, int] = {}
    for i, stage in enumerate(stages):
        if stage.name in seen:
            raise error(f"{path}[{i}].name",
                       f"duplicate stage name {show(stage.name)} (also {path}[{seen[stage.name]}]); stage names must "
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
        return CacheConfig(mode=choice(value, path, CACHE_MODES, "cache mode"))
    d = mapping(value, path, "auto, off, or a mapping such as {views: 4, dtype: float16}")
    check_keys(d, path, _CACHE_KEYS)
    mode = d.get("mode", "auto")
    if isinstance(mode, bool):
        mode = "auto" if mode else "off"
    budget = d.get("memory_budget_mb")
    if budget is not None:
        budget = number(budget, f"{path}.memory_budget_mb", low=0, low_open=True)
    return CacheConfig(
        mode=choice(mode, f"{path}.mode", CACHE_MODES, "cache mode"),
        views=integer(d.get("views", 1), f"{path}.views", minimum=1),
        dtype=choice(d.get("dtype", "float32"), f"{path}.dtype", CACHE_DTYPES, "dtype"),
        memory_budget_mb=budget,
    )


def _distribute_from_dict(value: Any, path: str = "distribute") -> DistributeConfig:
    """`distribute:` a strategy name, or a mapping {strategy, devices, scale_lr}. Device names are checked for
    form here and against the machine's devices when the run starts (`inceptune.distribute.setup_distribution`)."""
    if value is None:
        return DistributeConfig()
    if isinstance(value, str):
        value = {"strategy": value}
    d = mapping(value, path, "a strategy name (none, auto, mirrored, multi-worker) or a mapping such as "
                             "{strategy: mirrored, devices: [GPU:0, GPU:1]}")
    check_keys(d, path, _DISTRIBUTE_KEYS)
    strategy = choice(d.get("strategy", "none"), f"{path}.strategy", DISTRIBUTE_STRATEGIES, "strategy")
    raw = d.get("devices") or []
    raw = [raw] if isinstance(raw, str) else sequence(raw, f"{path}.devices")
    devices = []
    for i, dev in enumerate(raw):
        key = f"{path}.devices[{i}]"
        m = _DEVICE_RE.fullmatch(dev.strip()) if isinstance(dev, str) else None
        if m is None:
            raise expected(key, "a device name such as GPU:0 or CPU:0", dev, "list devices as TensorFlow names them, "
                           "e.g. devices: [GPU:0, GPU:1]; leave devices out to use every visible GPU.")
        name = f"{m.group(1).upper()}:{int(m.group(2))}"
        if name in devices:
            raise error(key, f"{show(name)} is listed twice; each device holds one replica.", "remove the repeat.")
        devices.append(name)
    if devices and strategy != "mirrored":
        raise error(f"{path}.devices", f"devices are chosen by strategy mirrored only, got strategy {show(strategy)}.",
                    "set distribute.strategy: mirrored, or remove devices (multi-worker uses every GPU of each "
                    "machine in TF_CONFIG).")
    return DistributeConfig(strategy=strategy, devices=tuple(devices),
                            scale_lr=choice(d.get("scale_lr", "none"), f"{path}.scale_lr", SCALE_LR_RULES,
                                            "learning-rate scaling rule"))


def _calibrate(value: Any, key: str = "calibrate") -> str:
    if value is None or value is True:  # `calibrate: on` is YAML 1.1's true
        return "temperature"
    if value is False:  # `calibrate: off` / `no`
        return "none"
    return choice(value, key, CALIBRATION_METHODS, "calibration method")


def recipe_from_dict(raw: Any) -> Recipe:
    d = mapping(raw, "recipe", "a mapping with the keys data, model, stages, cache, seed, calibrate, precision")
    check_keys(d, "", TOP_KEYS, required=("data", "stages"))
    return Recipe(
        data=data_config_from_dict(d["data"], "data"),
        model=_model_from_dict(d.get("model"), "model"),
        stages=_stages_from_list(d["stages"], "stages"),
        cache=_cache_from_value(d.get("cache"), "cache"),
        seed=integer(d.get("seed", 0), "seed", minimum=0, maximum=2**32 - 1),
        calibrate=_calibrate(d.get("calibrate", "temperature")),
        precision=choice(d.get("precision", "float32"), "precision", PRECISIONS, "precision"),
        distribute=_distribute_from_dict(d.get("distribute"), "distribute"),
    )
