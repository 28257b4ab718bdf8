"""The selector language: one string names a set of layers (DESIGN.md §3).

Grammar (lowest precedence first)::

    selector := term ("," term)*            union
    term     := factor ("&" factor)*        intersection
    factor   := "!" factor | "(" selector ")" | atom
    atom     := all | none | head | backbone | first:N | last:N | name:GLOB | re:REGEX
              | block:B | blocks:A..B | through:B | from:B | type:CLASS

`first:N`/`last:N` count the backbone's own layers in `keras.applications` order, so `first:100` means what
`base_model.layers[:100]` means in the Keras guides even when preprocessing and a head are attached.
`through:B`/`from:B` follow the graph (ancestors / descendants), not list positions. `B` is a block name or a
layer name. `re:` uses `re.search` (like the seeds' `'mixed' in layer.name`); `name:` matches whole names with
shell globs. A regular expression may contain `,` `&` `!` inside brackets or parentheses, or escaped with `\\`.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from dataclasses import dataclass

import keras

from inceptune import graph as _graph
from inceptune.architectures import BlockMap, block_map
from inceptune.errors import SelectorError, closest

__all__ = ["parse", "select", "resolve", "SelectorWarning", "Node"]

_KINDS = ("first", "last", "name", "re", "block", "blocks", "through", "from", "type")
_WORDS = ("all", "none", "head", "backbone")


class SelectorWarning(UserWarning):
    """A selector is valid but probably not what was meant (e.g. a positional cut that splits a block)."""


@dataclass(frozen=True)
class Node:
    """A parsed selector: `op` is "atom", "or", "and" or "not"."""

    op: str
    kind: str = ""
    arg: str = ""
    children: tuple = ()

    def __str__(self) -> str:
        if self.op == "atom":
            return f"{self.kind}:{self.arg}" if self.arg or self.kind in _KINDS else self.kind
        if self.op == "not":
            return f"!{self.children[0]}"
        sep = "," if self.op == "or" else "&"
        return "(" + sep.join(str(c) for c in self.children) + ")"


# === parsing ===

def _fail(text: str, pos: int, what: str) -> SelectorError:
    return SelectorError(
        f"invalid selector {text!r} at position {pos}: {what}. Allowed forms: all, none, head, backbone, first:N, "
        f"last:N, name:GLOB, re:REGEX, block:B, blocks:A..B, through:B, from:B, type:CLASS, combined with ',' "
        f"(union), '&' (intersection), '!' (complement) and parentheses.")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def _skip(self):
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _peek(self) -> str:
        self._skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> Node:
        if not self.text.strip():
            raise _fail(self.text, 0, "it is empty")
        node = self._union()
        if self._peek():
            raise _fail(self.text, self.pos, f"unexpected {self.text[self.pos]!r}")
        return node

    def _union(self) -> Node:
        items = [self._inter()]
        while self._peek() == ",":
            self.pos += 1
            items.append(self._inter())
        return items[0] if len(items) == 1 else Node("or", children=tuple(items))

    def _inter(self) -> Node:
        items = [self._factor()]
        while self._peek() == "&":
            self.pos += 1
            items.append(self._factor())
        return items[0] if len(items) == 1 else Node("and", children=tuple(items))

    def _factor(self) -> Node:
        c = self._peek()
        if c == "!":
            self.pos += 1
            return Node("not", children=(self._factor(),))
        if c == "(":
            self.pos += 1
            node = self._union()
            if self._peek() != ")":
                raise _fail(self.text, self.pos, "missing ')'")
            self.pos += 1
            return node
        if not c or c in ",&)":
            raise _fail(self.text, self.pos, "expected a selector here")
        return self._atom()

    def _atom(self) -> Node:
        start = self.pos
        m = re.match(r"[A-Za-z_]+", self.text[self.pos:])
        word = m.group(0) if m else ""
        self.pos += len(word)
        if self.pos < len(self.text) and self.text[self.pos] == ":":
            self.pos += 1
            if word not in _KINDS:
                near = closest(word, _KINDS + _WORDS)
                raise _fail(self.text, start, f"unknown selector kind {word + ':'!r}"
                            + (f" (did you mean {', '.join(n + ':' for n in near)}?)" if near else ""))
            arg = self._regex_arg() if word == "re" else self._plain_arg()
            arg = arg.strip() if word != "re" else arg
            if not arg:
                raise _fail(self.text, start, f"{word}: needs an argument")
            return _check_atom(self.text, start, word, arg)
        if word in _WORDS:
            return Node("atom", kind=word)
        near = closest(word, _WORDS + tuple(k + ":" for k in _KINDS))
        raise _fail(self.text, start, f"unknown selector {word or self.text[start:start + 1]!r}"
                    + (f" (did you mean {', '.join(near)}?)" if near else ""))

    def _plain_arg(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",&)":
            self.pos += 1
        return self.text[start:self.pos]

    def _regex_arg(self) -> str:
        # A regex ends at a top-level ',', '&' or unmatched ')'; brackets, parentheses and escapes nest.
        out, depth, in_class = [], 0, False
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and self.pos + 1 < len(self.text):
                nxt = self.text[self.pos + 1]
                out.append(nxt if nxt in ",&" else c + nxt)
                self.pos += 2
                continue
            if in_class:
                in_class = c != "]"
            elif c == "[":
                in_class = True
            elif c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            elif c in ",&" and depth == 0:
                break
            out.append(c)
            self.pos += 1
        return "".join(out).strip()


def _check_atom(text: str, pos: int, kind: str, arg: str) -> Node:
    if kind in ("first", "last"):
        if not re.fullmatch(r"\d+", arg):
            raise SelectorError(
                f"invalid selector {text!r}: {kind}:N needs a whole number N >= 0 (a count of backbone layers "
                f"from the {'start' if kind == 'first' else 'end'}). Received: {kind}:{arg}. HINT: to select all "
                f"but the last 3 layers write '!last:3'.")
    elif kind == "re":
        try:
            re.compile(arg)
        except re.error as exc:
            raise SelectorError(
                f"invalid selector {text!r}: re:{arg} is not a valid regular expression ({exc}). HINT: escape "
                f"special characters with a backslash, e.g. re:mixed\\( , or use name:GLOB for simple patterns."
            ) from None
    elif kind == "blocks":
        if ".." not in arg:
            raise SelectorError(f"invalid selector {text!r}: blocks: needs a range A..B. Received: blocks:{arg}. "
                                f"HINT: write blocks:mixed5..mixed7, or block:{arg} for one block.")
    return Node("atom", kind=kind, arg=arg)


def parse(text: str) -> Node:
    """Parses a selector string.

    Args:
        text: str. A selector, e.g. `"head,from:mixed9 & !type:BatchNormalization"`.

    Returns:
        The parsed `Node` tree.

    Raises:
        SelectorError: the text does not parse, with the position and the allowed forms.
    """
    if not isinstance(text, str):
        raise SelectorError(f"a selector must be a string. Received: {text!r} ({type(text).__name__}).")
    return _Parser(text).parse()


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

    def unknown(self, what: str, name: str, valid: list[str], selector: str) -> SelectorError:
        near = closest(name, valid)
        shown = ", ".join(valid[:60]) + (f", … ({len(valid)} in all)" if len(valid) > 60 else "")
        return SelectorError(
            f"selector {selector!r}: unknown {what} {name!r}."
            + (f" Did you mean {', '.join(repr(n) for n in near)}?" if near else "")
            + f" Valid {what}s of {self.model.name!r}: {shown}.")

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
                    raise self.unknown("layer class", arg, known, selector)
            return found
        raise SelectorError(f"selector {selector!r}: unknown kind {kind!r}")  # unreachable after parse


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
    names = resolve(model, selector)
    return [layer for layer in model.layers if layer.name in names]
