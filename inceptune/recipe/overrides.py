"""The `--set KEY=VALUE` mini-language: dotted key paths with list indices and quoted keys, YAML values.

`apply_overrides` edits a raw (not yet validated) recipe mapping; `load_recipe` validates the result and, when
a key is wrong, blames the override that set it (`blamed_override`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import yaml

from inceptune.errors import RecipeError
from inceptune.recipe.checks import child, describe, show
from inceptune.recipe.yaml_format import RecipeLoader

__all__ = ["apply_overrides", "parse_override", "path_text", "new_part", "blamed_override"]

_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX_TOKEN = re.compile(r"\[\s*(-?[0-9]+)\s*\]")
_QUOTED_TOKEN = re.compile(r"""\[\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)')\s*\]""")


def _override_error(text: str, message: str, hint: str | None = None) -> RecipeError:
    return RecipeError(f"--set {text}: {message}" + (f" HINT: {hint}" if hint else ""))


def parse_override(text: str) -> tuple[list, Any]:
    """Splits `stages[1].lr=1e-5` into (["stages", 1, "lr"], 1e-05); the value is read as YAML."""
    if not isinstance(text, str):
        raise RecipeError(f"--set: expected a KEY=VALUE string, got {show(text)}.")
    tokens: list = []
    pos, expect_name = 0, True
    usage = 'write KEY=VALUE, e.g. --set stages[1].lr=1e-5 or --set \'stages[0].lr_mult["from:mixed9"]=0.1\'.'
    while True:
        if expect_name:
            m = _NAME_TOKEN.match(text, pos)
            if not m:
                what = "nothing" if pos >= len(text) else show(text[pos:pos + 1])
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
        raise _override_error(text, f"unexpected {show(c)} at position {pos} in the key.",
                              'keys containing ":" "." or "," go in quoted brackets: lr_mult["from:mixed9"]. ' + usage)
    value_text = text[pos + 1:]
    try:
        value = yaml.load(value_text, Loader=RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        value = value_text  # not YAML (e.g. "!name:*mixed*"): the literal text
    return tokens, value


def path_text(tokens: list) -> str:
    path = ""
    for t in tokens:
        path = child(path, t)
    return path


def _descend(node: Any, token: Any, next_token: Any, text: str, where: str) -> Any:
    """The child of `node` at `token`, created (as {} or []) when missing; shorthands become mappings."""
    fresh = [] if isinstance(next_token, int) else {}
    if isinstance(token, int):
        if not isinstance(node, list):
            raise _override_error(text, f"{where or 'the recipe'} is {describe(node)}, not a list, "
                                        f"so it has no [{token}].")
        index = _list_index(node, token, text, where, allow_append=True)
        if index == len(node):
            node.append(fresh)
        elif node[index] is None:
            node[index] = fresh
        return node[index]
    if not isinstance(node, dict):
        raise _override_error(text, f"{where or 'the recipe'} is {describe(node)}, not a mapping, "
                                    f"so it has no key {show(token)}.")
    existing = node.get(token)
    here = child(where, token)
    if existing is None:
        node[token] = fresh
    elif isinstance(fresh, dict) and not isinstance(existing, dict):
        if here == "cache" and isinstance(existing, (str, bool)):  # cache: auto|off -> {mode: ...}
            node[token] = {"mode": ("auto" if existing else "off") if isinstance(existing, bool) else existing}
        elif here.endswith(".early_stopping") and isinstance(existing, bool):  # true|false -> {} (turns it on)
            node[token] = {}
        else:
            raise _override_error(text, f"{here} is {describe(existing)}, not a mapping.",
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
        tokens, value = parse_override(text)
        node, where = out, ""
        for token, next_token in zip(tokens[:-1], tokens[1:]):
            node = _descend(node, token, next_token, text, where)
            where = child(where, token)
        last = tokens[-1]
        if isinstance(last, int):
            if not isinstance(node, list):
                raise _override_error(text, f"{where} is {describe(node)}, not a list, so it has no [{last}].")
            index = _list_index(node, last, text, where, allow_append=True)
            if index == len(node):
                node.append(value)
            else:
                node[index] = value
        else:
            if not isinstance(node, dict):
                raise _override_error(text, f"{where or 'the recipe'} is {describe(node)}, not a mapping, "
                                            f"so it has no key {show(last)}.")
            node[last] = value
    return out


def new_part(raw: Any, tokens: list) -> list:
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


def blamed_override(error: Exception, parsed: list[tuple[str, str]]) -> str | None:
    """The last override whose key path contains, or is contained in, the key the error is about (`error.key`)."""
    key = getattr(error, "key", None)
    if key is None:
        return None

    def inside(a: str, b: str) -> bool:  # a is b or below b
        return a == b or (a.startswith(b) and a[len(b)] in ".[")

    for text, path in reversed(parsed):
        if inside(key, path) or inside(path, key):
            return text
    return None
