"""The selector language resolved against a model: one string names a set of layers (DESIGN.md §3).

The grammar and `parse` live in `inceptune.selector_syntax` (no Keras needed); `resolve` and `select` evaluate a
parsed selector on a model's graph and block map: `first:N`/`last:N` count the backbone's own layers in
`keras.applications` order, `through:B`/`from:B` follow the graph (ancestors / descendants), not list positions.
"""

from __future__ import annotations

import fnmatch
import re
import warnings

import keras

from inceptune import graph as _graph
from inceptune.architectures import ARCHITECTURES, BlockMap, block_map
from inceptune.errors import SelectorError, closest
from inceptune.selector_syntax import Node, parse

__all__ = ["parse", "select", "resolve", "SelectorWarning", "Node"]

# Block lists longer than this shorten numbered runs (`block35_1 … block35_10`); longer still after that: only counted.
_LIST_IN_FULL = 20
_LIST_AT_MOST = 60


class SelectorWarning(UserWarning):
    """A selector is valid but probably not what was meant (e.g. a positional cut that splits a block)."""


# === evaluation ===

class _Context:
    def __init__(self, model, bmap: BlockMap | None):
        self.model = model
        self.bmap = bmap or block_map(model)
        self.names = [layer.name for layer in model.layers]
        self.layers = {layer.name: layer for layer in model.layers}
        self.parents = _graph.parents(model)
        self.children = _graph.invert(self.parents)
        self.warnings: list[str] = []
        self.closure = _graph.closure

    def unknown(self, what: str, name: str, valid: list[str], selector: str, listing: str | None = None
                ) -> SelectorError:
        """The error for a name that is not in `valid`: the closest names first, then the block names (never the
        layers' automatic names: `inceptune inspect MODEL --layers` lists those), or `listing` when given."""
        near = closest(name, valid)
        text = f"selector {selector!r}: unknown {what} {name!r}." + (
            f" Did you mean {', '.join(repr(n) for n in near)}?" if near else "")
        if listing is not None:
            return SelectorError(f"{text} {listing}")
        blocks = _shorten(list(self.bmap.order))
        if all(len(self.bmap.members[b]) == 1 for b in self.bmap.order if b != "head"):
            # no block map (any keras.applications model): its blocks are its layers, automatic names included
            text += f" {self.model.name!r} has no named blocks (every layer is its own block)."
        elif len(blocks) <= _LIST_AT_MOST:
            label = "Valid blocks" if what == "block" else "Blocks"
            text += f" {label} of {self.model.name!r}: {', '.join(blocks)}."
        else:
            text += f" {self.model.name!r} has {len(self.bmap.order)} blocks."
        target = self.model.name if self.model.name in ARCHITECTURES else "MODEL"
        where = "" if target != "MODEL" else " (MODEL: a backbone name, a .keras file or a run folder)"
        return SelectorError(f"{text} HINT: `inceptune inspect {target} --layers` lists all {len(self.names)} "
                             f"layers{where}.")

    def block_or_layer(self, name: str, selector: str) -> tuple[set[str], str]:
        """Members and output layer of block `name`, or ({name}, name) for a plain layer name."""
        if name in self.bmap.members:
            return set(self.bmap.members[name]), self.bmap.outputs[name]
        if name in self.layers:
            return {name}, name
        raise self.unknown("block or layer", name, list(self.bmap.order) + [n for n in self.names
                                                                            if n not in self.bmap.members], selector)

    def block(self, name: str, selector: str) -> set[str]:
        if name not in self.bmap.members:
            raise self.unknown("block", name, list(self.bmap.order), selector)
        return set(self.bmap.members[name])

    def check_cut(self, kind: str, n: int, backbone: list[str]):
        k = n if kind == "first" else len(backbone) - n
        if k <= 0 or k >= len(backbone):
            return
        before, after = backbone[k - 1], backbone[k]
        blk = self.bmap.layer_block.get(before)
        if blk is None or blk != self.bmap.layer_block.get(after):
            return
        members = [m for m in backbone if self.bmap.layer_block.get(m) == blk]
        inside = set(backbone[:k])
        weighted = [m for m in members if self.layers[m].weights]
        left = sum(1 for m in weighted if m in inside)
        right = len(weighted) - left
        if left and right:
            i = self.bmap.order.index(blk)
            if kind == "first":
                prev = self.bmap.order[i - 1] if i > 0 else None
                fix = (f"'through:{prev}' or " if prev else "") + f"'through:{blk}'"
            else:
                nxt = self.bmap.order[i + 1] if i + 1 < len(self.bmap.order) else None
                fix = f"'from:{blk}'" + (f" or 'from:{nxt}'" if nxt and nxt != "head" else "")
            msg = (f"{kind}:{n} cuts block {blk!r} in two ({left} layers with weights on one side, {right} on the "
                   f"other): a positional cut rarely means that. HINT: use {fix} to cut at a block boundary.")
            self.warnings.append(msg)
            warnings.warn(msg, SelectorWarning, stacklevel=4)

    def eval(self, node: Node, selector: str) -> set[str]:
        if node.op == "or":
            out: set[str] = set()
            for c in node.children:
                out |= self.eval(c, selector)
            return out
        if node.op == "and":
            out = self.eval(node.children[0], selector)
            for c in node.children[1:]:
                out &= self.eval(c, selector)
            return out
        if node.op == "not":
            return set(self.names) - self.eval(node.children[0], selector)
        kind, arg = node.kind, node.arg
        if kind == "all":
            return set(self.names)
        if kind == "none":
            return set()
        if kind == "head":
            return set(self.bmap.head_layers)
        if kind == "backbone":
            return set(self.bmap.backbone_layers)
        if kind in ("first", "last"):
            n = int(arg)
            backbone = list(self.bmap.backbone_layers)
            self.check_cut(kind, n, backbone)
            chosen = backbone[:n] if kind == "first" else (backbone[len(backbone) - n:] if n else [])
            return set(chosen)
        if kind == "name":
            found = {n for n in self.names if fnmatch.fnmatchcase(n, arg)}
            if not found and not any(ch in arg for ch in "*?["):
                raise self.unknown("layer", arg, self.names, selector)
            return found
        if kind == "re":
            pattern = re.compile(arg)
            return {n for n in self.names if pattern.search(n)}
        if kind == "block":
            return self.block(arg, selector)
        if kind == "blocks":
            a, b = (s.strip() for s in arg.split("..", 1))
            self.block(a, selector), self.block(b, selector)
            ia, ib = self.bmap.order.index(a), self.bmap.order.index(b)
            if ia > ib:
                raise SelectorError(f"selector {selector!r}: blocks:{a}..{b} is empty because {a!r} comes after "
                                    f"{b!r} in block order. HINT: write blocks:{b}..{a}.")
            out = set()
            for blk in self.bmap.order[ia:ib + 1]:
                out |= set(self.bmap.members[blk])
            return out
        if kind == "through":
            _, out_layer = self.block_or_layer(arg, selector)
            return self.closure({out_layer}, self.parents)
        if kind == "from":
            members, _ = self.block_or_layer(arg, selector)
            return self.closure(members, self.children)
        if kind == "type":
            found = {n for n, layer in self.layers.items()
                     if any(c.__name__.lower() == arg.lower() for c in type(layer).__mro__)}
            if not found:
                known = sorted({c.__name__ for layer in self.layers.values() for c in type(layer).__mro__
                                if c.__module__.startswith("keras")}
                               | {n for n in dir(keras.layers) if n[:1].isupper()})
                if not any(k.lower() == arg.lower() for k in known):
                    used = sorted({type(layer).__name__ for layer in self.layers.values()})
                    raise self.unknown("layer class", arg, known, selector,
                                       listing=f"Classes in {self.model.name!r}: {', '.join(used)}; or any class "
                                               "of keras.layers, by name (any case).")
            return found
        raise SelectorError(f"selector {selector!r}: unknown kind {kind!r}")  # unreachable after parse


def _shorten(names: list[str]) -> list[str]:
    """`names`, with runs of 3 or more numbered names (`block35_1`, `block35_2`, …) written `first … last` when the
    list is longer than `_LIST_IN_FULL`."""
    if len(names) <= _LIST_IN_FULL:
        return names
    out, i = [], 0
    while i < len(names):
        m = re.fullmatch(r"(.*?)(\d+)", names[i])
        j = i + 1
        if m:
            prefix, start = m.group(1), int(m.group(2))
            while j < len(names) and names[j] == f"{prefix}{start + j - i}":
                j += 1
        out.extend([f"{names[i]} … {names[j - 1]}"] if j - i >= 3 else names[i:j])
        i = j
    return out


def resolve(model, selector: str | Node, *, bmap: BlockMap | None = None, warnings_out: list | None = None) -> set[str]:
    """The names of the layers of `model` that `selector` names.

    Args:
        model: a functional keras.Model (a backbone or a flat classifier).
        selector: str or parsed `Node`.
        bmap: optional precomputed `BlockMap`.
        warnings_out: optional list that receives the warning texts (e.g. a cut splitting a block).

    Returns:
        A set of layer names.
    """
    node = parse(selector) if isinstance(selector, str) else selector
    ctx = _Context(model, bmap)
    out = ctx.eval(node, str(selector))
    if warnings_out is not None:
        warnings_out.extend(ctx.warnings)
    return out


def select(model, selector: str) -> list:
    """The layers of `model` named by `selector`, in `model.layers` order.

    Args:
        model: keras.Model.
        selector: str. See the module docstring for the grammar.

    Returns:
        A list of layers.

    Example:
        >>> layers = select(model, "from:mixed9 & !type:BatchNormalization")
    """
    from inceptune.footguns import empty_terms, warn_all  # footguns builds on this module

    names = resolve(model, selector)
    warn_all(empty_terms(model, selector))  # `name:inception_v3*` on a flat model: a check that checks nothing
    return [layer for layer in model.layers if layer.name in names]
