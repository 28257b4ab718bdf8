"""Detectors of requests that are valid but probably not what was meant: each returns warning texts naming the fix.

The tutorials' Keras snippets fail silently in a few recurring ways (docs/from-snippets.md): a loop over layers
whose names contain `mixed` freezes 13 weightless `Concatenate` layers, `layers[-5:]` unfreezes five activations,
a second stage "unfreezes" layers that were never frozen, `layers[-20:]` cuts a block in two and lets its
BatchNorm layers drift, `rescale=1./255` feeds 0-1 pixels to a model that expects another range. inceptune
accepts the literal translation of each, and says so:

- `weightless_terms`: a selector term whose layers hold no weights (`name:*mixed*`, `last:5`);
- `already_trainable`: an `unfreeze` of layers that are all trainable already;
- `batchnorm_starts`: BatchNorm layers that start updating their moving statistics (policies `follow`/`train`);
- `stage_warnings`: the above per stage of a recipe, plus a stage that trains exactly what the stage before it
  trained;
- `preprocess_mismatch`: `model.preprocess` differs from the scaling the backbone's ImageNet weights expect;
- `input_range` / `watch_inputs`: the first batch of `fit`/`predict`/`evaluate` is not raw 0-255 pixels
  (a classifier from `build_classifier` applies its own preprocessing).

The positional cut that splits a block is detected where `first:N`/`last:N` is resolved (`inceptune.selectors`).
`freezing.freeze`/`unfreeze` and `build_classifier` emit these as `FootgunWarning`s (and keep them in the
`FreezeReport`); the stage runner writes them as `warning:` lines to the terminal and the run's log.txt.
"""

from __future__ import annotations

import functools
import warnings

import keras
import numpy as np

from inceptune.architectures import ARCHITECTURES, PREPROCESS_LAYER, BlockMap, block_map
from inceptune.selector_syntax import Node, parse
from inceptune.selectors import SelectorWarning, resolve

__all__ = ["FootgunWarning", "empty_terms", "weightless_terms", "already_trainable", "batchnorm_starts",
           "freeze_warnings", "stage_warnings", "trainable_layers", "preprocess_mismatch", "input_range",
           "watch_inputs", "warn_all"]

# Names listed in a message before the rest are only counted.
_SHOW = 4


class FootgunWarning(UserWarning):
    """A valid request that probably does not do what was meant (the message names the fix)."""


def warn_all(messages, stacklevel: int = 3) -> None:
    """Emits each message as a `FootgunWarning`."""
    for message in messages:
        warnings.warn(message, FootgunWarning, stacklevel=stacklevel)


# === helpers ===

def _is_bn(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def _would_train(layer, batchnorm: str) -> bool:
    """Whether making `layer` trainable trains weights under the BatchNorm policy (apply_trainable's rule)."""
    if layer.name == PREPROCESS_LAYER or isinstance(layer, keras.layers.InputLayer) or not layer.weights:
        return False
    return not (_is_bn(layer) and batchnorm == "frozen")


def _names(names, limit: int = _SHOW) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _blocks_of(layers: set[str], bmap: BlockMap) -> list[str]:
    return [b for b in bmap.order if any(n in layers for n in bmap.members[b])]


def _has_blocks(bmap: BlockMap) -> bool:
    return any(len(bmap.members[b]) > 1 for b in bmap.order if b != "head")


def _atoms(node: Node):
    if node.op == "atom":
        yield node
    for c in node.children:
        yield from _atoms(c)


def _terms(selector: str) -> list[str]:
    """The top-level union terms of a selector, as text (`head, first:200 & !first:100` -> 2 terms)."""
    node = parse(selector)
    parts = node.children if node.op == "or" else (node,)
    return [str(p).removeprefix("(").removesuffix(")") if p.op == "and" else str(p) for p in parts]


def _quiet_resolve(model, selector, bmap) -> set[str]:
    """`resolve` without re-emitting the positional-cut warning (the caller's own resolve emitted it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SelectorWarning)
        return resolve(model, selector, bmap=bmap)


def trainable_layers(model, selector: str, batchnorm: str, bmap: BlockMap | None = None) -> set[str]:
    """The layers whose weights train when `selector` trains under the BatchNorm policy (flags left unchanged)."""
    bmap = bmap or block_map(model)
    selected = _quiet_resolve(model, selector, bmap)
    out = set()
    for layer in model.layers:
        if not _would_train(layer, batchnorm):
            continue
        if (_is_bn(layer) and batchnorm == "train") or layer.name in selected:
            out.add(layer.name)
    return out


def _suggestion(kind: str, layers: set[str], bmap: BlockMap) -> str | None:
    """The block selector naming the whole blocks that `layers` (weightless) belong to."""
    if not _has_blocks(bmap):
        return None
    blocks = [b for b in _blocks_of(layers, bmap) if b != "head"]
    if not blocks:
        return None
    if kind == "last":
        return f"from:{blocks[0]}"
    if kind == "first":
        return f"through:{blocks[-1]}"
    if len(blocks) == 1:
        return f"block:{blocks[0]}"
    i, j = bmap.order.index(blocks[0]), bmap.order.index(blocks[-1])
    if list(bmap.order[i:j + 1]) == blocks:
        return f"blocks:{blocks[0]}..{blocks[-1]}"
    return ",".join(f"block:{b}" for b in blocks)


# === detectors ===

def empty_terms(model, selector: str, bmap: BlockMap | None = None) -> list[str]:
    """Warnings for each `name:`/`re:`/`type:` term of `selector` that matches no layer at all.

    Example: the tutorials' check `layer.name.startswith('inception_v3')` (`name:inception_v3*`) matches nothing
    in a flat model, so a loop asserting on those layers asserts nothing.
    """
    bmap = bmap or block_map(model)
    out = []
    for atom in _atoms(parse(selector)):
        if atom.kind in ("name", "re", "type") and not _quiet_resolve(model, atom, bmap):
            out.append(f"'{atom}' matches no layer of '{model.name}', so it selects nothing (and a check over "
                       "those layers checks nothing). HINT: `inceptune inspect MODEL --layers` lists the layer names; "
                       "a model from build_classifier is flat (no nested backbone layer): 'backbone' names the "
                       "backbone's layers, 'head' the new ones.")
    return out


def weightless_terms(model, selector: str, bmap: BlockMap | None = None) -> list[str]:
    """Warnings for each term of `selector` that selects layers none of which holds a weight, and for each
    `name:`/`re:`/`type:` term that matches no layer (`empty_terms`).

    Example: `name:*mixed*` on InceptionV3 selects the 13 `Concatenate` layers mixed0 … mixed10, mixed9_0 and
    mixed9_1, so freezing them freezes nothing.
    """
    bmap = bmap or block_map(model)
    layers = {layer.name: layer for layer in model.layers}
    out = []
    seen = set()
    for atom in _atoms(parse(selector)):
        text = str(atom)
        if atom.kind in ("none", "all") or text in seen:
            continue
        seen.add(text)
        chosen = {n for n in _quiet_resolve(model, atom, bmap) if n != PREPROCESS_LAYER
                  and not isinstance(layers[n], keras.layers.InputLayer)}
        if not chosen or any(layers[n].weights for n in chosen):
            continue
        kinds = sorted({type(layers[n]).__name__ for n in chosen})
        ordered = [n for n in layers if n in chosen]
        fix = _suggestion(atom.kind, chosen, bmap)
        hint = (f"did you mean '{fix}' (the whole blocks those layers belong to)?" if fix else
                "select layers with weights (`inceptune inspect MODEL --layers` lists them).")
        out.append(f"'{text}' selects {len(chosen)} layers, none with weights ({'/'.join(kinds)}: "
                   f"{_names(ordered)}), so freezing or training them changes nothing. HINT: {hint}")
    return out + empty_terms(model, selector, bmap)


def already_trainable(model, selected: set[str], selector: str, batchnorm: str) -> list[str]:
    """A warning when `unfreeze(model, selector)` would unfreeze nothing: every layer with weights it selects is
    trainable already while other layers are frozen (the seeds' `layers[100:200]` after freezing `layers[:100]`)."""
    candidates = [layer for layer in model.layers if _would_train(layer, batchnorm)]
    picked = [layer for layer in candidates if layer.name in selected]
    frozen = [layer.name for layer in candidates if not (layer.trainable and model.trainable)]
    if not picked or not frozen or any(not layer.trainable for layer in picked) or not model.trainable:
        return []
    return [f"unfreeze('{selector}'): all {len(picked)} layers with weights it selects are trainable already "
            f"({len(frozen)} others are frozen: {_names(frozen)}), so it unfreezes nothing; it only freezes the "
            "layers it does not select. HINT: unfreeze layers that are frozen now (FreezeReport.blocks shows "
            "each block's state), e.g. a block range with 'blocks:A..B' or 'from:B'."]


def batchnorm_starts(model, started: set[str], batchnorm: str, bmap: BlockMap, where: str) -> list[str]:
    """A warning that the BatchNorm layers `started` begin updating their moving statistics."""
    if not started or batchnorm == "frozen":
        return []
    blocks = [b for b in _blocks_of(started, bmap)]
    return [f"{where}: {len(started)} BatchNormalization layers (in {_names(blocks)}) start updating their moving "
            f"statistics from this training's batches (batchnorm: {batchnorm}); on small batches of new data this "
            "overwrites the pretrained statistics and often collapses validation accuracy. HINT: use batchnorm "
            "'frozen' (the default: BatchNorm layers stay in inference mode while their blocks train)."]


def freeze_warnings(model, selector: str, trainable: set[str], *, batchnorm: str, bmap: BlockMap | None = None,
                    verb: str = "freeze") -> list[str]:
    """The warnings of `freeze(model, selector)` / `unfreeze(...)` (verb), computed before the flags change:
    weightless selector terms, an unfreeze of layers that are all trainable already, and BatchNorm layers that
    will update their statistics (policies `follow`/`train`) while part of the model stays frozen.

    Args:
        model: keras.Model. selector: str. trainable: the layers the call makes trainable. batchnorm: the policy.
        bmap: optional BlockMap. verb: "freeze" or "unfreeze".
    """
    bmap = bmap or block_map(model)
    out = weightless_terms(model, selector, bmap)
    if verb == "unfreeze":
        out += already_trainable(model, trainable, selector, batchnorm)
    weighted = [layer for layer in model.layers if _would_train(layer, batchnorm)]
    will = {layer.name for layer in weighted if layer.name in trainable or (_is_bn(layer) and batchnorm == "train")}
    if len(will) < len(weighted):  # training everything (from scratch) is no fine-tuning stage
        started = {layer.name for layer in weighted if layer.name in will and _is_bn(layer)}
        out += batchnorm_starts(model, started, batchnorm, bmap, f"{verb}('{selector}')")
    return out


def stage_warnings(model, stages, index: int, *, batchnorm: str, bmap: BlockMap | None = None,
                   pretrained: bool = True) -> list[str]:
    """The warnings of stage `index` of a recipe: weightless selector terms; for a later stage, a trainable set
    equal to the previous stage's and terms that add only layers the previous stage trained already; and, on a
    pretrained backbone under `follow`/`train`, BatchNorm layers that start updating their statistics.

    Args:
        model: the run's keras.Model. stages: the recipe's stages. index: int. batchnorm: the policy.
        bmap: optional BlockMap. pretrained: whether the backbone holds pretrained weights. Defaults to True.

    Returns:
        A list of warning texts (empty when nothing looks wrong).
    """
    bmap = bmap or block_map(model)
    stage = stages[index]
    out = [f"stage '{stage.name}': {w}" for w in weightless_terms(model, stage.train, bmap)]
    now = trainable_layers(model, stage.train, batchnorm, bmap)
    prev_bn: set[str] = set()
    if index > 0:
        prev = stages[index - 1]
        before = trainable_layers(model, prev.train, batchnorm, bmap)
        prev_bn = {n for n in before if _is_bn(model.get_layer(n))}
        layers = {layer.name: layer for layer in model.layers}
        params = sum(int(np.prod(v.shape)) for n in now for v in layers[n].weights
                     if not (_is_bn(layers[n]) and v.path.endswith(("moving_mean", "moving_variance"))))
        if now == before:
            out.append(f"stage '{stage.name}' trains exactly the layers stage '{prev.name}' trained ({len(now)} "
                       f"layers, {params:,} trainable parameters): train '{stage.train}' unfreezes nothing new, "
                       "so this stage only continues the previous one. HINT: to unfreeze more of the backbone, "
                       "add blocks that were frozen (e.g. 'from:B' or 'blocks:A..B'); `inceptune inspect BACKBONE "
                       f"--train \"{prev.train}\"` shows what the previous stage trained.")
        prev_terms = set(_terms(prev.train))
        for term in _terms(stage.train):
            if term in prev_terms:
                continue
            added = trainable_layers(model, term, batchnorm, bmap) & now
            if added and added <= before:
                out.append(f"stage '{stage.name}': '{term}' selects {len(added)} layers with weights that stage "
                           f"'{prev.name}' already trained, so it unfreezes nothing. HINT: select layers that "
                           f"stage '{prev.name}' kept frozen (`inceptune inspect BACKBONE --train \"{prev.train}\"` "
                           "shows them).")
    if pretrained:
        started = {n for n in now if _is_bn(model.get_layer(n))} - prev_bn
        out += batchnorm_starts(model, started, batchnorm, bmap, f"stage '{stage.name}'")
    return out


def preprocess_mismatch(backbone: str, weights, preprocess: str | None) -> list[str]:
    """A warning when `preprocess` differs from the scaling the backbone's ImageNet weights were trained with."""
    spec = ARCHITECTURES.get(backbone)
    if preprocess is None or weights != "imagenet" or spec is None or spec.preprocess == preprocess:
        return []
    return [f"model.preprocess is '{preprocess}' but the ImageNet weights of {backbone} were trained with "
            f"'{spec.preprocess}' scaling: every pixel reaches the backbone in the wrong range. HINT: remove "
            f"model.preprocess (or set it to {spec.preprocess}); a different scaling is for weights trained "
            "elsewhere with it (e.g. unit for a model trained on rescale=1./255 images)."]


# === input range ===

_EXPECTED = {"tf": "x/127.5 - 1", "torch": "ImageNet mean/std", "caffe": "BGR minus the ImageNet means",
             "none": "no scaling", "unit": "x/255"}


def _first_batch(x, batch_size):
    """The first batch of `fit`/`predict`'s `x` as a NumPy array, or None when it cannot be read without
    consuming it (a Python generator) or holds several inputs."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            return _first_batch(element[0] if isinstance(element, tuple) else element, None)
        return None
    if isinstance(x, keras.utils.PyDataset):
        element = x[0]
        return _first_batch(element[0] if isinstance(element, tuple) else element, None)
    if isinstance(x, (dict, list, tuple)) or x is None or not hasattr(x, "shape"):
        return None
    return np.asarray(x[: int(batch_size or 32)])


def input_range(batch, mode: str, model_name: str, call: str) -> list[str]:
    """A warning when `batch` does not look like raw 0-255 RGB pixels, which a classifier built by
    `build_classifier` expects (its first layer applies the `mode` preprocessing)."""
    if batch is None or batch.size == 0 or not np.issubdtype(batch.dtype, np.number):
        return []
    lo, hi = float(np.min(batch)), float(np.max(batch))
    seen = f"first batch: min {lo:.3g}, max {hi:.3g}"
    does = f"its first layer '{PREPROCESS_LAYER}' applies the '{mode}' scaling ({_EXPECTED.get(mode, mode)}) itself"
    if lo >= 0 and 0 < hi <= 1.0 + 1e-6:
        return [f"{model_name}.{call}: the inputs look scaled to 0-1 ({seen}), but this model takes raw 0-255 RGB "
                f"pixels: {does}, so the backbone sees nearly black images. HINT: pass the pixels unscaled (drop "
                "rescale=1./255 or x/255); for weights trained on 0-1 inputs build the model with "
                "preprocess='unit' (recipe: model.preprocess: unit) and still pass 0-255 pixels."]
    if lo < 0:
        return [f"{model_name}.{call}: the inputs look preprocessed already ({seen}), but this model takes raw "
                f"0-255 RGB pixels: {does}, so they are scaled twice. HINT: drop preprocess_input (or your own "
                "normalisation) and pass the pixels as loaded."]
    if hi > 255.0 + 1e-3:
        return [f"{model_name}.{call}: the inputs exceed 255 ({seen}), but this model takes 8-bit 0-255 RGB "
                f"pixels: {does}. HINT: convert 16-bit images to 8 bits (divide by 257) before feeding them."]
    return []


def watch_inputs(model, mode: str):
    """Makes `model.fit`, `model.predict` and `model.evaluate` check the range of their first batch and warn
    (`FootgunWarning`) when it is not raw 0-255 pixels. The model is otherwise unchanged (its saved file too).

    Arrays, `tf.data.Dataset`s and `keras.utils.PyDataset`s (the legacy `ImageDataGenerator` iterators) are
    checked; a dataset gives one batch more for the check. Python generators are not checked.

    Returns:
        The model.
    """
    for call in ("fit", "predict", "evaluate"):
        original = getattr(model, call)

        @functools.wraps(original)
        def checked(*args, _original=original, _call=call, **kwargs):
            x = args[0] if args else kwargs.get("x")
            if "_use_cached_eval_dataset" not in kwargs:  # fit's own validation pass: checked by fit already
                warn_all(input_range(_first_batch(x, kwargs.get("batch_size")), mode, model.name, _call))
            return _original(*args, **kwargs)

        object.__setattr__(model, call, checked)
    return model
