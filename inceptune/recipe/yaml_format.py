"""YAML as recipes need it: PyYAML's safe loader, reading `1e-5` as a number and refusing duplicate keys.

YAML 1.1 reads `1e-5` as a string and silently keeps the last of two equal keys; both are mistakes in a recipe.
`RecipeDumper` quotes strings that `RecipeLoader` would read as numbers, so a dumped recipe reads back equal.
"""

from __future__ import annotations

import re

import yaml

from inceptune.errors import RecipeError
from inceptune.recipe.checks import show

__all__ = ["RecipeLoader", "RecipeDumper", "yaml_error"]

_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.1's float pattern with the decimal point and the exponent sign made optional (YAML 1.2 reads 1e-5).
_FLOAT_RE = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def _recipe_resolvers() -> dict:
    resolvers = {ch: [(tag, rx) for tag, rx in items if tag != _FLOAT_TAG]
                 for ch, items in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for ch in "-+0123456789.":
        resolvers.setdefault(ch, []).append((_FLOAT_TAG, _FLOAT_RE))
    return resolvers


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, reading `1e-5` as a float and refusing a key written twice in one mapping."""

    yaml_implicit_resolvers = _recipe_resolvers()

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {show(key)} (first written on line {first + 1}); "
                        "YAML would silently keep only the last one", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class RecipeDumper(yaml.SafeDumper):
    """SafeDumper whose resolvers match `RecipeLoader`, so a string like "1e-5" is quoted when written."""

    yaml_implicit_resolvers = _recipe_resolvers()


def yaml_error(e: yaml.YAMLError, where: str) -> RecipeError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = ""
    if mark is not None:
        where = f"{where}, line {mark.line + 1}, column {mark.column + 1}"
        lines = (getattr(mark, "buffer", None) or "").splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
    problem = ", ".join(str(p) for p in (getattr(e, "context", None), getattr(e, "problem", None)) if p) or str(e)
    if "duplicate key" in problem:
        hint = "keep one of the two entries."
    elif "constructor for the tag '!" in problem or re.search(r"(?:^|[:,{\[-])\s*!", line):
        hint = 'a value starting with "!" is a YAML tag: quote selectors such as train: "!name:*mixed*".'
    elif "alias" in problem or "anchor" in problem or re.search(r"(?:^|[:,{\[-])\s*[*&]", line):
        hint = 'a value starting with "*" or "&" is a YAML alias or anchor: quote it, e.g. train: "*mixed*".'
    else:
        hint = ('check the indentation, and quote values that contain ": " or " #", or start with '
                '"!", "&", "*", "[" or "{".')
    return RecipeError(f"{where}: not valid YAML: {problem}. HINT: {hint}")
