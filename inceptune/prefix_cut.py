"""Where a stage's frozen prefix ends: the cut, and the suffix model that trains on its output.

`find_cut` finds the deepest tensor such that nothing trainable or random lies at or upstream of it and
everything downstream can be computed from it alone (BatchNorm under the `frozen` policy is deterministic);
`suffix_model` builds cut -> outputs over the model's own layer objects, so training the suffix trains the full
model. The feature cache (`cache.py`) stores the prefix's outputs at the cut; `cached_stage.py` trains the suffix.

Example:
    cut = find_cut(model)              # Cut(layer="mixed8", ...) for `head,from:mixed9`
    suffix = suffix_model(model, cut)  # keras.Model(cached mixed8 output -> predictions)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Cut", "find_cut", "suffix_model"]

# A cut must leave at least this share of the layers with weights upstream, or caching costs more (feature
# maps near the input are large) than it saves.
MIN_PREFIX_SHARE = 0.2

_RANDOM_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                  "GaussianDropout", "AlphaDropout")


def _is_random(layer) -> bool:
    import keras

    name = type(layer).__name__
    if name in _RANDOM_LAYERS or name.startswith("Random"):
        return True
    return isinstance(layer, keras.layers.BatchNormalization) and layer.trainable


@dataclass(frozen=True)
class Cut:
    """Result of `find_cut`: `layer` is the cut layer's name (None when no cut exists) and `reason` says why."""

    layer: str | None
    reason: str
    prefix: frozenset = frozenset()
    suffix: frozenset = frozenset()


def find_cut(model) -> Cut:
    """Finds the deepest cacheable cut of a model with its current trainable flags.

    Args:
        model: a functional keras.Model.

    Returns:
        A `Cut`.
    """
    from inceptune import graph as _graph

    parents = _graph.parents(model)
    children = _graph.invert(parents)
    layers = {layer.name: layer for layer in model.layers}
    unsafe = {n for n, layer in layers.items() if (layer.trainable and layer.trainable_weights) or _is_random(layer)}
    trainable = {n for n, layer in layers.items() if layer.trainable and layer.trainable_weights}
    if not trainable:
        return Cut(None, "nothing trains in this stage")
    outputs = {t._keras_history.operation.name for t in model.outputs}
    inputs = {n for n, ps in parents.items() if not ps}
    order = list(parents)
    for cand in reversed(order):
        if cand in inputs or cand in unsafe:
            continue
        up = _graph.closure(cand, parents)
        if up & unsafe:
            continue
        down = _graph.closure(cand, children) - {cand}
        if not outputs <= down or not trainable <= down:
            continue
        if any(p not in down and p != cand for n in down for p in parents[n]):
            continue  # something downstream also needs a tensor from beside the cut
        weighted = [n for n in order if layers[n].weights]
        share = sum(1 for n in weighted if n in up) / max(len(weighted), 1)
        if share == 0:
            return Cut(None, "every layer with weights trains in this stage: nothing to compute once")
        if share < MIN_PREFIX_SHARE:
            return Cut(None, f"the deepest cacheable cut, {cand!r}, leaves {share:.0%} of the layers with weights "
                             f"upstream: too little to be worth caching (needs {MIN_PREFIX_SHARE:.0%})")
        return Cut(cand, f"cut at {cand!r}: {len(up)} layers computed once, {len(down)} trained per epoch",
                   frozenset(up), frozenset(down))
    first = next(n for n in order if n in unsafe)
    kind = "a random layer" if _is_random(layers[first]) else "a trainable layer"
    return Cut(None, f"no cacheable cut: {first!r} ({kind}) sits right after the input")


def suffix_model(model, cut: Cut):
    """cut → outputs, calling the model's own layer objects (so training it trains the full model)."""
    import keras

    from inceptune import graph as _graph

    cut_layer = model.get_layer(cut.layer)
    cut_out = cut_layer.output
    new_in = keras.Input(batch_shape=cut_out.shape, dtype=cut_out.dtype, name=f"cached_{cut.layer}")
    tensors = {id(cut_out): new_in}
    for node in _graph.model_nodes(model):
        op = node.operation
        if op is None or node.is_input or op.name not in cut.suffix:
            continue
        if any(id(x) not in tensors for x in node.input_tensors):
            continue
        args, kwargs = node.arguments.fill_in(tensors)
        result = op(*args, **kwargs)
        for x, y in zip(node.outputs, keras.tree.flatten(result)):
            tensors[id(x)] = y
    outs = [tensors[id(t)] for t in model.outputs]
    return keras.Model(new_in, outs[0] if len(outs) == 1 else outs, name=f"{model.name}_suffix")
