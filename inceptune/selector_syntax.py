"""The selector language's grammar: a selector string parsed into a `Node` tree (DESIGN.md §3).

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

Parsing needs no model and no Keras, so a recipe's selectors are checked when it is loaded; `inceptune.selectors`
resolves a parsed selector against a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inceptune.errors import SelectorError, closest

__all__ = ["parse", "Node"]

_KINDS = ("first", "last", "name", "re", "block", "blocks", "through", "from", "type")
_WORDS = ("all", "none", "head", "backbone")


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
