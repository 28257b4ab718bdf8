"""Features from any block: cut a backbone at a block, or tap several blocks for multi-level features.

`model.cut: mixed7` builds the classifier on the output of `mixed7` and drops every layer above it (fewer
parameters and FLOPs). For images far from ImageNet
(scans, drawings, greyscale) middle blocks often transfer better than the top. `model.features: [mixed7,
mixed10]` pools each named block's output and concatenates the vectors into the head (heads.add_head), in the
order listed.

The cut backbone is a plain functional model over the backbone's own layers, so block maps (the architecture is
recognised from what remains of its signature), selectors, surgery, the feature cache and export keep working;
on a flat model there is no nested base to tap and so no "Graph disconnected" (keras #16123).

Example:
    base = load_backbone("inception_v3", weights=None, image_size=75)
    cut = cut_backbone(base, "mixed7")            # == keras.Model(base.input, base.get_layer("mixed7").output)
    model = build_classifier(cut, 5)
    model = build_classifier(base, 5, features=["mixed7", "mixed10"])
"""

from __future__ import annotations

from collections.abc import Sequence

from inceptune.errors import RecipeError, closest

__all__ = ["block_output", "cut_backbone", "deepest", "feature_outputs"]


def block_output(model, name: str, *, key: str = "model.cut", bmap=None) -> str:
    """The layer whose output a block (or a layer) name stands for.

    Args:
        model: keras.Model. A backbone or a classifier.
        name: str. A block name (`mixed7`, `block17_3`: its output layer) or any layer name.
        key: str. The recipe key named in errors. Defaults to "model.cut".
        bmap: BlockMap or None. Defaults to `block_map(model)`.

    Returns:
        str. A layer name of `model`.

    Raises:
        RecipeError: no block or layer has that name (the blocks and the closest names are listed).
    """
    from inceptune.architectures import block_map

    bmap = bmap if bmap is not None else block_map(model)
    blocks = [b for b in bmap.order if b != "head"]
    if name in bmap.outputs and name != "head":
        return bmap.outputs[name]
    layers = [layer.name for layer in model.layers]
    if name in layers:
        return name
    near = closest(name, blocks + layers)
    shown = ", ".join(blocks[:40]) + (", ..." if len(blocks) > 40 else "")
    raise RecipeError(
        f"{key}: {model.name!r} has no block or layer named {name!r}. Its blocks: {shown}."
        + (f" HINT: did you mean {' or '.join(repr(n) for n in near)}?" if near
           else " HINT: `inceptune inspect BACKBONE --layers` lists every layer."), key=key)


def cut_backbone(backbone, at: str, *, key: str = "model.cut"):
    """The backbone up to the output of block (or layer) `at`; every layer above it is dropped.

    Args:
        backbone: keras.Model. A functional backbone (as `load_backbone` returns it).
        at: str. Block or layer name, e.g. "mixed7".
        key: str. The recipe key named in errors. Defaults to "model.cut".

    Returns:
        keras.Model over the backbone's own layer objects (weights shared, not copied), with the backbone's name;
        the backbone itself when `at` is its last output.

    Raises:
        RecipeError: unknown block or layer.
    """
    import keras

    layer = backbone.get_layer(block_output(backbone, at, key=key))
    out = layer.output
    if any(out is t for t in backbone.outputs):
        return backbone
    return keras.Model(backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs, out,
                       name=backbone.name)


def deepest(model, blocks: Sequence[str], *, key: str = "model.features") -> str:
    """Of several blocks (or layers), the one whose output comes last in the graph."""
    from inceptune import graph as _graph

    order = {name: i for i, name in enumerate(_graph.parents(model))}
    outs = [block_output(model, b, key=f"{key}[{i}]") for i, b in enumerate(blocks)]
    return blocks[max(range(len(blocks)), key=lambda i: order[outs[i]])]


def feature_outputs(model, blocks: Sequence[str], *, key: str = "model.features") -> dict[str, str]:
    """Block name -> output layer name of each block in `blocks`, in the order given.

    Raises:
        RecipeError: an unknown block, or one listed twice.
    """
    out: dict[str, str] = {}
    for i, b in enumerate(blocks):
        if b in out:
            raise RecipeError(f"{key}[{i}]: {b!r} is listed twice; each block is pooled once.", key=f"{key}[{i}]")
        out[b] = block_output(model, b, key=f"{key}[{i}]")
    return out
