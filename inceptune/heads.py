"""Classification heads and the flat classifier.

`build_classifier` returns ONE flat functional model: input (raw 0–255 RGB) → `preprocess` → every backbone
layer → head. Flat (no nested model), so `get_layer("mixed7")`, every selector and graph surgery work on it, and
intermediate outputs never raise "Graph disconnected".
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from inceptune import graph as _graph
from inceptune.architectures import PREPROCESS_LAYER, preprocess_mode, preprocessing_layer
from inceptune.choices import POOLINGS, PREPROCESS_MODES
from inceptune.errors import InceptuneError
from inceptune.footguns import watch_inputs

__all__ = ["HeadSpec", "head_spec", "add_head", "build_classifier"]



@dataclass(frozen=True)
class HeadSpec:
    """A classification head.

    Attributes:
        pooling: "avg" (GlobalAveragePooling2D, the seeds' choice), "max" or "flatten". Defaults to "avg".
        dense: hidden Dense layer sizes (ReLU), e.g. (1024,). Defaults to none.
        dropout: dropout rate after pooling and each hidden layer (0 = none). Defaults to 0.
        activation: final activation, "softmax" (or None for logits). Defaults to "softmax".
    """

    pooling: str = "avg"
    dense: tuple[int, ...] = ()
    dropout: float = 0.0
    activation: str | None = "softmax"


def head_spec(head) -> HeadSpec:
    """A `HeadSpec` from None, a HeadSpec, a dict (`{"pooling": "avg", "dense": [1024], "dropout": 0.2}`) or an
    object with those attributes (the recipe's head section)."""
    if head is None:
        return HeadSpec()
    if isinstance(head, HeadSpec):
        return head
    if isinstance(head, dict):
        unknown = set(head) - {"pooling", "dense", "dropout", "activation"}
        if unknown:
            raise InceptuneError(f"unknown head key(s) {sorted(unknown)}. Allowed: pooling, dense, dropout, "
                                 "activation.")
        d = dict(head)
    else:
        d = {k: getattr(head, k) for k in ("pooling", "dense", "dropout", "activation") if hasattr(head, k)}
    dense = d.get("dense") or ()
    spec = HeadSpec(pooling=d.get("pooling", "avg"), dense=tuple(int(u) for u in dense),
                    dropout=float(d.get("dropout", 0.0) or 0.0), activation=d.get("activation", "softmax"))
    if spec.pooling not in POOLINGS:
        raise InceptuneError(f"head pooling must be one of {', '.join(POOLINGS)}. Received: pooling={spec.pooling!r}.")
    if not 0.0 <= spec.dropout < 1.0:
        raise InceptuneError(f"head dropout must be in [0, 1). Received: dropout={spec.dropout}.")
    return spec


def _pool(x, pooling: str, name: str):
    if len(x.shape) != 4:
        return x
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=name)(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=name)(x)
    return layers.Flatten(name=name)(x)


def add_head(x, num_classes: int, head=None):
    """Appends a classification head to feature map `x`; every layer is named `head_*`.

    Args:
        x: a feature-map tensor, or a dict block name -> tensor (multi-level features, `model.features`): each
            is pooled (`head_pool_<block>`) and the vectors are concatenated in the dict's order (`head_features`).
        num_classes: int. head: HeadSpec, dict or None.

    Returns:
        The output tensor (class probabilities with the default softmax).
    """
    spec = head_spec(head)
    if isinstance(x, dict):
        pooled = [_pool(t, spec.pooling, f"head_pool_{name}") for name, t in x.items()]
        x = pooled[0] if len(pooled) == 1 else layers.Concatenate(axis=-1, name="head_features")(pooled)
    else:
        x = _pool(x, spec.pooling, "head_pool")
    if spec.dropout:
        x = layers.Dropout(spec.dropout, name="head_dropout")(x)
    for i, units in enumerate(spec.dense):
        x = layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
        if spec.dropout:
            x = layers.Dropout(spec.dropout, name=f"head_dropout_{i}")(x)
    return layers.Dense(num_classes, activation=spec.activation, name="head_output", dtype="float32")(x)


def build_classifier(backbone, num_classes: int, head=None, *, preprocess: str | None = None,
                     name: str | None = None, features=None, check_inputs: bool = True,
                     consume_backbone: bool = False) -> keras.Model:
    """Builds one flat functional classifier: raw pixels → preprocessing → backbone layers → head.

    Args:
        backbone: keras.Model. A backbone (e.g. from `load_backbone`); nested models are inlined. Its weights
            and trainable flags are copied; the backbone object itself is not modified or shared.
        num_classes: int. Number of classes (>= 2).
        head: HeadSpec, dict or None. Defaults to `HeadSpec()` (global average pooling → softmax).
        preprocess: "tf" (x/127.5 - 1), "torch" (ImageNet mean/std), "caffe" (BGR minus ImageNet means), "none"
            (raw 0-255) or "unit" (x/255, the tutorials' `rescale=1./255`): the scaling the backbone's weights
            were trained with. Defaults to the backbone architecture's own mode; when the backbone already has
            a `preprocess` layer none is added.
        name: model name. Defaults to "<backbone>_classifier".
        features: list of block (or layer) names, or None. Pool each block's output and concatenate them into
            the head, in this order (multi-level features, `model.features`); layers that feed none of them are
            left out. Defaults to None: the backbone's output only.
        check_inputs: bool. Make `fit`/`predict`/`evaluate` warn (`FootgunWarning`) when their first batch is
            not raw 0-255 pixels, e.g. images already divided by 255 (`footguns.watch_inputs`). Defaults to True.
        consume_backbone: bool. The backbone's own layers (and weights) become the classifier's, with no copy
            (InceptionV3: ~2 s faster); the backbone object must not be used afterwards. For a backbone built
            only for this classifier. Defaults to False (the backbone is copied and left as it was).

    Returns:
        A `keras.Model` taking float32 0–255 RGB images.
    """
    if int(num_classes) < 2:
        raise InceptuneError(f"a classifier needs at least 2 classes. Received: num_classes={num_classes}.")
    if preprocess is not None and preprocess not in PREPROCESS_MODES:
        raise InceptuneError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)} (or None for the backbone's "
                             f"own). Received: preprocess={preprocess!r}. HINT: use the input scaling the weights "
                             "were trained with; 'unit' is x/255 (rescale=1./255).", key="model.preprocess")
    has_pre = any(layer.name == PREPROCESS_LAYER for layer in backbone.layers)
    mode = preprocess or preprocess_mode(backbone)
    inputs = keras.Input(shape=tuple(backbone.inputs[0].shape[1:]), name="image")
    input_fn = None if has_pre else (lambda x: preprocessing_layer(mode)(x))
    taps = None
    if features:
        from inceptune.cut import feature_outputs

        taps = feature_outputs(backbone, list(features), key="features")

    def outputs_fn(out, by_name):
        return add_head(out if taps is None else {b: by_name[layer] for b, layer in taps.items()}, int(num_classes),
                        head)

    model = _graph.rebuild(backbone, inputs=inputs, input_fn=input_fn, outputs_fn=outputs_fn,
                           name=name or f"{backbone.name}_classifier", clone=not consume_backbone,
                           move=consume_backbone)
    return watch_inputs(model, mode) if check_inputs else model
