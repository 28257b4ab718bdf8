"""The one validation layer of the recipe: value checks that raise `RecipeError` with the key path.

Every message follows one formula (STYLE.md §9): the key path, what is wrong or what was expected, what was
received, then the fix when it is known::

    stages[1].lr: expected a positive number, got "fast". HINT: write a learning rate such as 1.0e-3 ...
    data.balance: unknown balance mode "weights". Allowed: none, class-weight, oversample. HINT: ...

Each error carries its key path as `.key`, so `load_recipe` can blame the `--set` override that set the key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from inceptune.errors import RecipeError, closest

__all__ = ["show", "describe", "error", "expected", "child", "as_float", "number", "integer", "string", "boolean",
           "choice", "mapping", "sequence", "check_keys", "switch", "REQUIRED_HINTS"]

# === Messages ===

def show(value: Any) -> str:
    """Shows a received value the way it would be written in JSON/YAML flow style: "fast", 3, null, [64]."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(value: Any) -> str:
    """Names a value's kind for messages: `a number (3)`, `a string ("x")`, `a list`, `a mapping`."""
    if isinstance(value, bool):
        return f"a boolean ({show(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({show(value)})"
    if isinstance(value, str):
        return f"a string ({show(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def error(key: str, message: str, hint: str | None = None) -> RecipeError:
    """A RecipeError whose message starts with the key path; `.key` keeps the path for blaming overrides."""
    return RecipeError(f"{key}: {message}" + (f" HINT: {hint}" if hint else ""), key=key)


def expected(key: str, what: str, value: Any, hint: str | None = None) -> RecipeError:
    """`KEY: expected WHAT, got VALUE. HINT: ...`"""
    return error(key, f"expected {what}, got {show(value)}.", hint)


def child(path: str, key: Any) -> str:
    """The key path of `key` below `path`: `stages[1]`, `model.head`, `lr_mult["from:mixed9"]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(str(key), ensure_ascii=False)}]"


# === Value checks ===

_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def as_float(value: Any) -> float | None:
    """A finite float from an int, a float or a numeric string ("1e-4"); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def number(value: Any, key: str, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, what: str | None = None,
            hint: str | None = None) -> float:
    number = as_float(value)
    ok = number is not None
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        if what is None:
            if low == 0 and low_open and high is None:
                what = "a positive number"
            elif low == 0 and high is None:
                what = "a number >= 0"
            else:
                lo = ("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}")
                hi = ("inf" if high is None else f"{high:g}") + (")" if high_open or high is None else "]")
                what = f"a number in {lo}, {hi}"
        raise expected(key, what, value, hint)
    return number


def integer(value: Any, key: str, *, minimum: int | None = None, maximum: int | None = None,
             hint: str | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        what = "a whole number"
        if minimum is not None and maximum is not None:
            what += f" from {minimum} to {maximum}"
        elif minimum is not None:
            what += f" >= {minimum}"
        raise expected(key, what, value, hint)
    return value


def string(value: Any, key: str, what: str = "a non-empty string", hint: str | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise expected(key, what, value, hint)
    return value.strip()


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise expected(key, "true or false", value)
    return value


def choice(value: Any, key: str, choices: Iterable[str], what: str) -> str:
    choices = tuple(choices)
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    allowed = ", ".join(choices)
    if not isinstance(value, str):
        raise expected(key, f"one of {allowed}", value)
    near = closest(value.strip().lower(), choices)
    hint = f"did you mean {' or '.join(show(n) for n in near)}?" if near else f"use one of {allowed}."
    raise error(key, f"unknown {what} {show(value)}. Allowed: {allowed}.", hint)


def mapping(value: Any, key: str, what: str = "a mapping (key: value lines)") -> dict:
    if not isinstance(value, dict):
        raise expected(key, what, value)
    return value


def sequence(value: Any, key: str, what: str = "a list") -> list:
    if not isinstance(value, (list, tuple)):
        raise expected(key, what, value, f"write a YAML list, e.g. {key.rsplit('.', 1)[-1]}: [...].")
    return list(value)


def check_keys(d: dict, path: str, allowed: Iterable[str], required: Iterable[str] = (),
                section: str | None = None) -> None:
    allowed = tuple(allowed)
    where = section or (f"`{path}`" if path else "the recipe")
    for k in d:
        if not isinstance(k, str):
            raise error(child(path, str(k)), f"keys must be names, got {show(k)} in {where}.",
                       "quote the key or fix the indentation.")
        if k not in allowed:
            near = closest(k, allowed)
            hint = (f"did you mean {' or '.join(show(n) for n in near)}?" if near
                    else "remove it, or check its indentation (it may belong to another section).")
            raise error(child(path, k), f"unknown key {show(k)} in {where}. Allowed keys: {', '.join(allowed)}.",
                       hint)
    for k in required:
        if d.get(k) is None:
            raise error(child(path, k), f"missing required key {show(k)} in {where}.", REQUIRED_HINTS.get(k))


def switch(value: Any, path: str, keys: Iterable[str], example: str) -> dict | None:
    """A section that is off (null or false), on with its defaults (true) or a mapping of `keys`
    (`early_stopping`, `ema`, `data.mixup`, `data.cutmix`). Returns None (off), {} (defaults) or the mapping."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    d = mapping(value, path, f"a mapping such as {example}, true, or null")
    check_keys(d, path, keys)
    return d


REQUIRED_HINTS = {
    "data": "add a data section, e.g. data: {dir: path/to/images}.",
    "stages": "add at least one stage, e.g. stages: [{name: head, train: head, epochs: 5, lr: 1.0e-3}].",
    "train": 'name what trains with a selector, e.g. train: head, or train: "head,from:mixed9".',
    "epochs": "add e.g. epochs: 5.",
    "lr": "add a learning rate, e.g. lr: 1.0e-3.",
    "from": "name the layer or block the skip starts at, e.g. from: mixed8.",
    "to": "name the layer or block the skip ends at, e.g. to: mixed10.",
    "after": "name the layer or block to insert after, e.g. after: mixed7.",
}
