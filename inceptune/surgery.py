"""Graph surgery on functional models: skip connections, block insertion, head replacement (DESIGN.md §5).

Every edit walks the model's graph with `graph.rebuild`, which clones each layer from its config, copies its
weights and lets a call function splice new layers in. So every edit returns a NEW flat functional model made
of stock Keras layers (it saves to `.keras` and loads in safe mode with no custom objects), every unchanged
layer keeps its weights and trainable flag, and the original model is left untouched.

Edits are identity-initialised where they can be: a new skip or inserted block passes through a zero-initialised
layer, so the edited model computes what the old one did until it is trained (tests check this to 1e-5).

Example:
    >>> model = build_classifier(load_backbone("inception_v3", image_size=150), num_classes=5)
    >>> model = add_skip(model, "mixed2", "mixed7")            # 16x16x288 -> pool 4/2 -> 1x1 conv -> + mixed7
    >>> model = insert_after(model, "mixed8", "residual_inception", filters=64)
    >>> model = replace_head(model, num_classes=10, head={"dense": [256], "dropout": 0.2})
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import layers

from inceptune import blocks as _blocks
from inceptune import graph as _graph
from inceptune.architectures import block_map
from inceptune.errors import SurgeryError, closest
from inceptune.heads import add_head

__all__ = ["INITS", "MERGES", "PROJECTIONS", "add_skip", "insert_after", "replace_head"]

MERGES = ("add", "concat")
PROJECTIONS = ("auto", "conv", "none")  # or an int: a 1x1 convolution with that many channels
INITS = ("zeros", "default")


# === names and shapes ===

def _shape_text(shape) -> str:
    """(None, 8, 8, 1280) -> "8×8×1280"."""
    dims = [("?" if d is None else str(d)) for d in tuple(shape)[1:]]
    return "×".join(dims) if dims else "scalar"


def _summary(names, limit: int = 8) -> str:
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:5]) + ", …, " + ", ".join(names[-2:])


def _is_functional(model) -> bool:
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth") and bool(model.inputs)


def _flat(model):
    """The model itself when it is a flat functional model; a flattened copy when it nests functional models."""
    if not _is_functional(model):
        raise SurgeryError(
            f"graph surgery needs a functional keras.Model. Received: {type(model).__name__} "
            f"{getattr(model, 'name', '')!r}. HINT: build the model with the functional API (`keras.Model(inputs, "
            f"outputs)`), e.g. with inceptune.build_classifier.")
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        return _graph.rebuild(model)
    return model


def _resolve(model, name: str, role: str) -> str:
    """The layer name that `name` (a layer or block name) denotes; SurgeryError with closest names otherwise."""
    layer_names = [layer.name for layer in model.layers]
    if name in layer_names:
        return name
    bmap = block_map(model)
    if name in bmap.outputs:
        return bmap.outputs[name]
    blocks = list(bmap.order)
    near = closest(str(name), list(dict.fromkeys(list(bmap.order) + layer_names)))
    raise SurgeryError(
        f"unknown {role} {name!r}: model {model.name!r} has no layer or block of that name. Allowed: a layer name "
        f"or a block name (blocks: {_summary(blocks)}). Received: {role}={name!r}."
        + (f" Did you mean {', '.join(repr(n) for n in near)}?" if near else "")
        + " HINT: `inceptune inspect MODEL` lists the blocks and layers.")


def _output(model, layer_name: str):
    out = model.get_layer(layer_name).output
    if isinstance(out, (list, tuple)):
        raise SurgeryError(
            f"layer {layer_name!r} has {len(out)} outputs; surgery connects layers with a single output. "
            f"Received: {layer_name!r}. HINT: pick the layer that consumes the output you mean.")
    return out


def _check_free(model, prefix: str, what: str) -> None:
    taken = [l.name for l in model.layers if l.name == prefix or l.name.startswith(prefix + "_")]
    if taken:
        raise SurgeryError(
            f"cannot name the new layers of this {what} {prefix!r}: model {model.name!r} already has layer(s) "
            f"{_summary(taken)}. Allowed: a prefix no existing layer name starts with. Received: name={prefix!r}. "
            f"HINT: pass another name=.")


def _zero_init(layer) -> None:
    """Makes a Conv2D/Dense layer start at zero (kernel and bias)."""
    layer.kernel_initializer = keras.initializers.Zeros()
    layer.bias_initializer = keras.initializers.Zeros()


def _pointwise(channels: int, rank: int, *, zeros: bool, name: str):
    """A 1×1 convolution (4-D tensors) or a Dense layer (2-D tensors) with `channels` outputs."""
    init = "zeros" if zeros else "glorot_uniform"
    if rank == 4:
        return layers.Conv2D(channels, 1, kernel_initializer=init, bias_initializer="zeros", name=name)
    return layers.Dense(channels, kernel_initializer=init, bias_initializer="zeros", name=name)


def _spatial(x, src_hw: tuple, dst_hw: tuple, prefix: str):
    """Brings `x` from the spatial size `src_hw` to `dst_hw` with one stock layer (or none when equal).

    Downsampling always fits one valid-padded average pooling exactly: with stride s = ⌊S/D⌋ and window
    k = S − (D−1)·s (so s ≤ k < 2s) the windows tile the whole input and give exactly D outputs — an integer
    ratio gives k = s (plain S/D pooling); 35 → 17 gives a 3×3 window with stride 2, as InceptionV3's own grid
    reductions do. Upsampling uses UpSampling2D for integer ratios and bilinear Resizing otherwise.
    """
    if src_hw == dst_hw:
        return x
    if all(s >= d for s, d in zip(src_hw, dst_hw)):
        strides = tuple(s // d for s, d in zip(src_hw, dst_hw))
        pool = tuple(s - (d - 1) * st for s, d, st in zip(src_hw, dst_hw, strides))
        return layers.AveragePooling2D(pool, strides=strides, padding="valid", name=f"{prefix}_pool")(x)
    if all(d >= s and d % s == 0 for s, d in zip(src_hw, dst_hw)):
        size = tuple(d // s for s, d in zip(src_hw, dst_hw))
        return layers.UpSampling2D(size, name=f"{prefix}_upsample")(x)
    return layers.Resizing(dst_hw[0], dst_hw[1], interpolation="bilinear", name=f"{prefix}_resize")(x)


# === concat: widening the consumers of a tensor that gained channels ===

# Layers that treat every channel alike: a tensor with extra channels passes through them unchanged in meaning.
_CHANNEL_FREE = (
    layers.ReLU, layers.LeakyReLU, layers.ELU, layers.MaxPooling2D, layers.AveragePooling2D,
    layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D, layers.Dropout, layers.SpatialDropout2D,
    layers.GaussianNoise, layers.GaussianDropout, layers.ZeroPadding2D, layers.Cropping2D, layers.UpSampling2D,
    layers.Identity, layers.Resizing,
)
_WIDENABLE = "Conv2D, Dense, BatchNormalization, Concatenate (channel axis) and channel-independent layers " \
             "(activations, pooling, dropout, padding)"


def _channel_axis_last(layer, rank: int, axis) -> bool:
    return axis in (-1, rank - 1)


def _widen_kind(layer, rank: int) -> str | None:
    """How `layer` handles an input whose channels grew: "weights" (kernel or per-channel weights are widened),
    "same" (output keeps the input's channel layout), "concat", or None (cannot)."""
    kind = type(layer)
    cfg = layer.get_config()
    if kind is layers.Conv2D:
        ok = cfg.get("groups", 1) == 1 and cfg.get("data_format", "channels_last") == "channels_last"
        return "weights" if ok else None
    if kind is layers.Dense:
        return "weights"
    if kind is layers.BatchNormalization:
        return "bn" if _channel_axis_last(layer, rank, cfg.get("axis", -1)) else None
    if kind is layers.Concatenate:
        return "concat" if _channel_axis_last(layer, rank, cfg.get("axis", -1)) else None
    if kind is layers.Activation:
        return None if cfg.get("activation") in ("softmax", "log_softmax") else "same"
    if kind is layers.Rescaling:
        scale, offset = cfg.get("scale"), cfg.get("offset")
        return "same" if np.ndim(scale) == 0 and np.ndim(offset) == 0 else None
    if kind in _CHANNEL_FREE:
        data_format = cfg.get("data_format") or "channels_last"
        return "same" if data_format == "channels_last" else None
    return None


def _widened_copy(init: str, masks: dict[str, np.ndarray]) -> Callable:
    """A `copy_fn` for `graph.rebuild`: plain copies, except for layers whose input gained channels, whose old
    weights go to the old channels' positions; new kernel rows are zeros (init="zeros") or stay as initialised."""

    def copy(old, new):
        if new.name not in masks:
            _graph.copy_weights(old, new)
            return
        mask = masks[new.name]
        for ov, nv in zip(old.weights, new.weights):
            value = ov.numpy()
            if tuple(ov.shape) == tuple(nv.shape):
                nv.assign(value)
                continue
            axes = [i for i, (a, b) in enumerate(zip(ov.shape, nv.shape)) if a != b]
            fresh = np.array(nv.numpy())
            if init == "zeros" and nv.name == "kernel":
                fresh[...] = 0.0
            index = [slice(None)] * fresh.ndim
            index[axes[0]] = mask
            fresh[tuple(index)] = value
            nv.assign(fresh)
        new.trainable = old.trainable

    return copy


# === add_skip ===

def add_skip(model, src: str, dst: str, *, merge: str = "add", projection="auto", init: str = "zeros",
             name: str | None = None) -> keras.Model:
    """Adds a skip connection from the output of `src` to the output of `dst`.

    Every consumer of `dst` then sees `merge(dst_output, project(src_output))` instead of `dst_output`.
    `project` matches the spatial size (average pooling, exact for any downsampling ratio, see `_spatial`;
    upsampling or resizing otherwise) and the channels (a named 1×1 convolution, a Dense layer for 2-D
    tensors). New layers are named `{name}_pool` / `_upsample` / `_resize`, `{name}_proj`, `{name}_add` /
    `_concat`, with `name` defaulting to `skip_{src}_{dst}` (e.g. `skip_mixed8_mixed10_proj`).

    With `merge="add"` and `init="zeros"` the projection is zero-initialised (kernel and bias), so the new model
    computes exactly what the old one did; the projection still receives gradient, so training makes the skip
    live. With `merge="concat"` the channels downstream of `dst` grow: the consumers (through channel-independent
    layers and concatenations) that own per-input-channel weights (Conv2D, Dense, BatchNormalization) are
    re-created wider, their old weights copied to the old channels, and with `init="zeros"` their kernel rows for
    the new channels start at zero (so outputs are unchanged while the new channels, which carry the source
    features, still train them). Consumers that cannot widen (Add, Multiply, Flatten, custom layers, ...) make
    the call fail with a `SurgeryError`. Those widened consumers must be trainable for a concat skip to learn;
    a model output reached through channel-independent layers gains the new channels.

    Args:
        model: keras.Model. A functional model (a flat classifier from `build_classifier` or a backbone); nested
            functional models are flattened first. Not modified.
        src: str. Layer name or block name (a block means its output layer, e.g. "block17_3" ->
            "block17_3_ac"). Must be strictly upstream of `dst`.
        dst: str. Layer name or block name.
        merge: "add" or "concat". Defaults to "add".
        projection: "auto" (a 1×1 convolution when `merge="add"` needs one: different channel counts or
            `init="zeros"`; none for "concat"), "conv" (always a 1×1 convolution), "none" (never; "add" then
            needs equal channels) or an int (a 1×1 convolution to that many channels). Defaults to "auto".
        init: "zeros" (identity start, see above) or "default" (Keras's default initialisers: the outputs change
            at once). Defaults to "zeros".
        name: str. Prefix of the new layers. Defaults to `skip_{src}_{dst}`.

    Returns:
        A new flat functional `keras.Model`: the old layers with their weights and trainable flags, plus the new,
        trainable skip layers.

    Raises:
        SurgeryError: unknown `src`/`dst` (with the closest names), `src` not strictly upstream of `dst`,
            tensors of different ranks, `projection="none"` with shapes that need one, or (for "concat") a
            downstream layer whose weights cannot take the new channels.

    Example:
        >>> model = add_skip(model, "mixed8", "mixed10")     # mixed10 := mixed10 + conv1x1(mixed8), conv starts at 0
    """
    merge, projection, init = _check_skip_args(merge, projection, init)
    model = _flat(model)
    src_name, dst_name, src_shape, dst_shape, where = _skip_endpoints(model, src, dst)
    rank = len(dst_shape)
    src_c, dst_c = int(src_shape[-1]), int(dst_shape[-1])
    conv_channels = _projection_channels(merge, projection, init, src_c, dst_c, where)
    prefix = name or f"skip_{src}_{dst}"
    _check_free(model, prefix, "skip")

    masks: dict[int, np.ndarray] = {}  # id(new tensor) -> True at its old channels (concat only)
    widened: dict[str, np.ndarray] = {}  # layer name -> mask of its input's old channels

    def call_fn(layer, args, kwargs, outputs_by_name):
        if layer.name == dst_name:
            out = layer(*args, **kwargs)
            s = outputs_by_name[src_name]
            if rank == 4:
                s = _spatial(s, src_shape[1:3], dst_shape[1:3], prefix)
            if conv_channels:
                zeros = init == "zeros" and merge == "add"
                s = _pointwise(conv_channels, rank, zeros=zeros, name=f"{prefix}_proj")(s)
            if merge == "add":
                return layers.Add(name=f"{prefix}_add")([out, s])
            merged = layers.Concatenate(axis=-1, name=f"{prefix}_concat")([out, s])
            masks[id(merged)] = np.arange(int(merged.shape[-1])) < int(out.shape[-1])
            return merged
        inputs = [t for t in keras.tree.flatten((args, kwargs)) if keras.backend.is_keras_tensor(t)]
        in_masks = [masks.get(id(t)) for t in inputs]
        if all(m is None for m in in_masks):
            return layer(*args, **kwargs)
        return _call_widened(layer, args, kwargs, inputs, in_masks, masks, widened, where)

    return _graph.rebuild(model, call_fn=call_fn, copy_fn=_widened_copy(init, widened))


def _skip_endpoints(model, src: str, dst: str):
    """Resolves and checks a skip's ends: (src layer, dst layer, src shape, dst shape, text naming both)."""
    src_name, dst_name = _resolve(model, src, "src"), _resolve(model, dst, "dst")
    src_out, dst_out = _output(model, src_name), _output(model, dst_name)
    src_shape, dst_shape = tuple(src_out.shape), tuple(dst_out.shape)
    where = (f"from {src!r} (layer {src_name!r}, output {_shape_text(src_shape)}) to {dst!r} "
             f"(layer {dst_name!r}, output {_shape_text(dst_shape)})")
    graph = _graph.parents(model)
    if src_name == dst_name:
        raise SurgeryError(f"cannot add a skip {where}: src and dst are the same layer. Allowed: src strictly "
                           f"upstream of dst. Received: src={src!r}, dst={dst!r}.")
    if src_name not in _graph.ancestors(model, dst_name, graph=graph):
        if dst_name in _graph.ancestors(model, src_name, graph=graph):
            raise SurgeryError(
                f"cannot add a skip {where}: src must be upstream of dst, but {src_name!r} is downstream of "
                f"{dst_name!r} (a skip that way would make a cycle). Received: src={src!r}, dst={dst!r}. "
                f"HINT: swap them: add_skip(model, {dst!r}, {src!r}).")
        raise SurgeryError(
            f"cannot add a skip {where}: src must be upstream of dst, but they are on parallel paths (neither "
            f"feeds the other). Received: src={src!r}, dst={dst!r}. HINT: pick a src that feeds dst, e.g. a "
            f"block output before dst.")
    rank = len(dst_shape)
    if len(src_shape) != rank or rank not in (2, 4):
        raise SurgeryError(
            f"cannot merge a skip {where}: both outputs must be 4-D feature maps (N, H, W, C) or both 2-D "
            f"(N, C). Received: {len(src_shape)}-D and {len(dst_shape)}-D. HINT: connect two feature maps "
            f"(block outputs), or two layers of the head.")
    if rank == 4 and None in src_shape[1:3] + dst_shape[1:3]:
        raise SurgeryError(
            f"cannot shape a skip {where}: the spatial sizes must be known. Received: {src_shape} and "
            f"{dst_shape}. HINT: build the model for a fixed image size (image_size=...).")
    return src_name, dst_name, src_shape, dst_shape, where


def _check_skip_args(merge, projection, init):
    if merge not in MERGES:
        raise SurgeryError(f"unknown skip merge. Allowed: {', '.join(MERGES)}. Received: merge={merge!r}.")
    if init not in INITS:
        raise SurgeryError(f"unknown skip init. Allowed: {', '.join(INITS)}. Received: init={init!r}.")
    valid = projection in PROJECTIONS or (isinstance(projection, int) and projection > 0)
    if isinstance(projection, bool) or not valid:
        raise SurgeryError(f"unknown skip projection. Allowed: {', '.join(PROJECTIONS)} or a positive number of "
                           f"channels. Received: projection={projection!r}.")
    return merge, projection, init


def _projection_channels(merge, projection, init, src_c, dst_c, where) -> int:
    """Output channels of the skip's 1×1 projection, or 0 when there is none."""
    if merge == "add":
        if isinstance(projection, int) and projection != dst_c:
            raise SurgeryError(
                f"cannot add a skip {where} with projection={projection}: an add needs the skip to have the "
                f"{dst_c} channels of dst. Received: projection={projection}. HINT: use projection='auto'.")
        if projection == "none":
            if src_c != dst_c:
                raise SurgeryError(
                    f"cannot add a skip {where} without a projection: the channels differ ({src_c} vs {dst_c}). "
                    f"Allowed: equal channels for projection='none'. Received: projection='none'. "
                    f"HINT: use projection='auto' (a 1×1 convolution) or merge='concat'.")
            if init == "zeros":
                raise SurgeryError(
                    f"cannot add a skip {where} with init='zeros' and projection='none': there is no projection "
                    f"layer to start at zero, so the outputs would change. Received: projection='none', "
                    f"init='zeros'. HINT: use projection='auto', or init='default' to add src as it is.")
            return 0
        if projection == "auto" and src_c == dst_c and init != "zeros":
            return 0
        return dst_c
    if isinstance(projection, int):
        return projection
    return src_c if projection == "conv" else 0


def _call_widened(layer, args, kwargs, inputs, in_masks, masks, widened, where):
    """Calls `layer` on inputs of which some gained channels (merge="concat"); records the new output masks."""
    rank = len(inputs[0].shape)
    kind = _widen_kind(layer, rank)
    wide = next(t for t, m in zip(inputs, in_masks) if m is not None)
    if kind is None:
        old_c = int(np.sum(masks[id(wide)]))
        raise SurgeryError(
            f"cannot concat a skip {where}: it widens the tensor feeding layer {layer.name!r} "
            f"({type(layer).__name__}) from {old_c} to {int(wide.shape[-1])} channels, and that layer cannot take "
            f"extra channels. Allowed downstream of a concat skip: {_WIDENABLE}. "
            f"HINT: use merge='add', or choose a dst whose consumers are convolutions.")
    if kind == "weights" or kind == "bn":
        if len(inputs) != 1:
            raise SurgeryError(f"cannot widen layer {layer.name!r}: it has {len(inputs)} inputs. Allowed: one.")
        widened[layer.name] = in_masks[0]
    out = layer(*args, **kwargs)
    if kind == "weights":
        return out
    if kind == "concat":
        out_mask = np.concatenate([m if m is not None else np.ones(int(t.shape[-1]), bool)
                                   for t, m in zip(inputs, in_masks)])
    else:
        out_mask = in_masks[0]
    for t in keras.tree.flatten(out):
        masks[id(t)] = out_mask
    return out


# === insert_after ===

def _block_function(block_fn) -> tuple[Callable, str]:
    """The callable and a short label for a block given as a callable or a name in `inceptune.blocks`."""
    if callable(block_fn):
        return block_fn, getattr(block_fn, "__name__", "block").removesuffix("_module")
    names = list(_blocks.__all__)
    if isinstance(block_fn, str):
        for candidate in (block_fn, f"{block_fn}_module"):
            if candidate in names:
                return getattr(_blocks, candidate), block_fn
    near = closest(str(block_fn), names + [n.removesuffix("_module") for n in names if n.endswith("_module")])
    raise SurgeryError(
        f"unknown block {block_fn!r}. Allowed: a callable `(x, name=...) -> tensor` or a function of "
        f"inceptune.blocks: {', '.join(names)} (the `_module` suffix may be left out). Received: "
        f"block_fn={block_fn!r}." + (f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""))


def insert_after(model, layer: str, block_fn="residual_inception", *, residual: bool = True,
                 name: str | None = None, **block_kwargs) -> keras.Model:
    """Splices a block after a layer (or block output): every consumer of `layer` then reads the block's output.

    With `residual=True` the block becomes a zero-initialised residual branch: `out = x + gate(block(x))`, where
    `gate` is a 1×1 convolution (`{name}_gate`, Dense for 2-D tensors) to x's channels starting at zero, merged by
    `{name}_residual` (Add). So the new model computes exactly what the old one did, whatever the block is
    (activations included), and the gate's gradient (block(x)ᵀ·δ) is non-zero, so training switches the block
    on; the block may change the channel count. With `residual=False` the block's output replaces x as it is
    (outputs change; its shape must equal x's).

    Args:
        model: keras.Model. A functional model; nested functional models are flattened first. Not modified.
        layer: str. Layer name or block name (its output layer).
        block_fn: callable `(x, name=..., **block_kwargs) -> tensor`, or the name of a function in
            `inceptune.blocks` ("residual_inception", "inception", "inception_resnet_a", "inception_resnet_b",
            "inception_resnet_c", ...; "_module" may be left out). Defaults to "residual_inception".
        residual: bool. Insert as a zero-initialised residual branch. Defaults to True.
        name: str. Prefix of the new layers (the block's own output layer is named `name`). Defaults to
            `{block}_after_{layer}`, e.g. "residual_inception_after_mixed7".
        **block_kwargs: passed to `block_fn` (e.g. `filters=64`, `scale=0.2`).

    Returns:
        A new flat functional `keras.Model`; old layers keep their weights, new layers are trainable.

    Raises:
        SurgeryError: unknown layer or block function, a block that fails on the layer's output (wrong
            arguments, wrong rank), or a block whose output cannot be merged back.

    Example:
        >>> model = insert_after(model, "mixed7", "residual_inception", filters=32)
    """
    fn, label = _block_function(block_fn)
    model = _flat(model)
    target = _resolve(model, layer, "layer")
    x_old = _output(model, target)
    prefix = name or f"{label}_after_{layer}"
    _check_free(model, prefix, "insertion")
    where = f"after {layer!r} (layer {target!r}, output {_shape_text(x_old.shape)})"

    def call_fn(lyr, args, kwargs, outputs_by_name):
        out = lyr(*args, **kwargs)
        if lyr.name != target:
            return out
        try:
            y = fn(out, name=prefix, **block_kwargs)
        except SurgeryError:
            raise
        except Exception as exc:  # a block that cannot take this tensor or these arguments
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SurgeryError(
                f"cannot insert block {label!r} {where}: {type(exc).__name__}: {first}. Allowed: a block that "
                f"accepts this tensor and the arguments given. Received: block_kwargs={block_kwargs!r}. "
                f"HINT: check the block's signature (help(inceptune.blocks.{getattr(fn, '__name__', label)})) "
                f"and insert after a 4-D feature map for convolutional blocks.") from exc
        if not keras.backend.is_keras_tensor(y):
            raise SurgeryError(f"block {label!r} must return one tensor. Received: {type(y).__name__}.")
        x_shape, y_shape = tuple(out.shape), tuple(y.shape)
        if not residual:
            if x_shape != y_shape:
                raise SurgeryError(
                    f"cannot insert block {label!r} {where} with residual=False: its output {_shape_text(y_shape)} "
                    f"must have the shape of its input. Received: {_shape_text(y_shape)}. HINT: use "
                    f"residual=True (a 1×1 gate maps the block's channels back).")
            return y
        if len(y_shape) != len(x_shape) or y_shape[1:-1] != x_shape[1:-1]:
            raise SurgeryError(
                f"cannot insert block {label!r} {where} as a residual branch: its output {_shape_text(y_shape)} "
                f"must keep the input's spatial size. Received: {_shape_text(y_shape)}. HINT: use a block that "
                f"keeps the grid (no strides).")
        gate = _pointwise(int(x_shape[-1]), len(x_shape), zeros=True, name=f"{prefix}_gate")(y)
        return layers.Add(name=f"{prefix}_residual")([out, gate])

    return _graph.rebuild(model, call_fn=call_fn)


# === replace_head ===

def _head_cut(model) -> tuple[str | None, set[str]]:
    """(feature layer, head layers): the layer the head reads, and the head's layers to drop."""
    graph = _graph.parents(model)
    head = {n for n in graph if n.startswith("head_")}
    if not head:
        bmap = block_map(model)
        head = set(bmap.head_layers)
    out_names = {t._keras_history.operation.name for t in model.outputs}
    if not head:
        return (next(iter(out_names)) if len(out_names) == 1 else None), set()
    feeding = {p for n in head for p in graph[n] if p not in head}
    kids = _graph.children(model)
    leaks = sorted(c for n in head for c in kids[n] if c not in head)
    if len(feeding) != 1 or leaks or not out_names <= head:
        raise SurgeryError(
            f"cannot find the head of model {model.name!r}: its head layers ({_summary(sorted(head))}) must read "
            f"one feature layer and end the model. Received: head fed by {sorted(feeding)}, layers after the head: "
            f"{leaks}. HINT: build the classifier with inceptune.build_classifier, or pass a backbone.")
    return next(iter(feeding)), head


def replace_head(model, num_classes: int, head=None, *, name: str | None = None) -> keras.Model:
    """Drops the classification head and adds a new one (`heads.add_head`, layers named `head_*`).

    The head is the `head_*` layers when the model has them (models from `build_classifier`), else the layers
    after the last backbone block (`block_map(model).head_layers`); a model without a head (a backbone) just
    gets one.

    Args:
        model: keras.Model. A functional classifier or backbone; nested models are flattened first. Not modified.
        num_classes: int. Number of classes (>= 2).
        head: HeadSpec, dict (`{"pooling": "avg", "dense": [256], "dropout": 0.2, "activation": "softmax"}`) or
            None (global average pooling -> softmax).
        name: str. Name of the new model. Defaults to the old one's.

    Returns:
        A new flat functional `keras.Model`; the backbone layers keep their weights, the head is new.

    Example:
        >>> model = replace_head(model, num_classes=10, head={"dense": [256]})
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise SurgeryError(f"a classification head needs an integer number of classes >= 2. "
                           f"Received: num_classes={num_classes!r}.")
    model = _flat(model)
    feature, _ = _head_cut(model)
    if feature is None:
        raise SurgeryError(f"cannot replace the head of model {model.name!r}: it has {len(model.outputs)} outputs. "
                           f"Allowed: a model with one output.")
    trunk = keras.Model(model.inputs, _output(model, feature), name=model.name)
    return _graph.rebuild(trunk, outputs_fn=lambda out, _: add_head(out, int(num_classes), head),
                          name=name or model.name)
