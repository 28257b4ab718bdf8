"""Loading and writing recipes: file or mapping -> `--set` overrides -> validation -> `Recipe`, and back.

Relative paths (`data.dir`, `data.csv`, `data.manifest`, and `model.weights` and `model.backbone` when they
name files) are made absolute when the recipe is loaded: relative to the recipe file's folder for values written
in the file, relative to the current directory for `--set` values and dict sources. The resolved recipe written
into a run folder therefore loads from anywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from inceptune._io import atomic_write_text
from inceptune.errors import InceptuneError, RecipeError
from inceptune.recipe.checks import REQUIRED_HINTS, describe
from inceptune.recipe.overrides import apply_overrides, blamed_override, new_part, parse_override, path_text
from inceptune.recipe.schema import Recipe, Stage
from inceptune.recipe.sections import MODEL_FILE_SUFFIXES, TOP_KEYS, WEIGHT_SUFFIXES, WEIGHT_WORDS, recipe_from_dict
from inceptune.recipe.yaml_format import RecipeDumper, RecipeLoader, yaml_error

__all__ = ["load_recipe", "recipe_to_dict", "recipe_yaml", "dump_recipe"]

# === Paths ===

def _absolutize(raw: dict, base: Path) -> None:
    """Makes the file paths of a raw recipe absolute, relative to `base` (in place)."""

    def fix(section: Any, key: str, is_path) -> None:
        if isinstance(section, dict) and isinstance(section.get(key), str) and is_path(section[key]):
            p = Path(os.path.expanduser(section[key]))
            section[key] = os.path.normpath(p if p.is_absolute() else base / p)

    data, model = raw.get("data"), raw.get("model")
    fix(data, "dir", lambda v: True)
    fix(data, "csv", lambda v: True)
    fix(data, "manifest", lambda v: True)
    fix(model, "weights", lambda v: v.strip().lower() not in WEIGHT_WORDS and v.endswith(WEIGHT_SUFFIXES))
    fix(model, "backbone", lambda v: v.endswith(MODEL_FILE_SUFFIXES))


# === Loading ===

def _read_source(source: Any) -> tuple[Any, str | None, Path]:
    """Returns (raw mapping, file label or None, folder that relative paths start from)."""
    if isinstance(source, Recipe):
        return recipe_to_dict(source), None, Path.cwd()
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None, Path.cwd()
    if not isinstance(source, (str, os.PathLike)):
        raise RecipeError(f"a recipe is a YAML file path, a dict or a Recipe, got {type(source).__name__}.")
    path = Path(source)
    if not path.is_file():
        hint = "check the path; recipes are YAML files such as examples/staged_top_blocks.yaml."
        if path.is_dir():
            raise RecipeError(f"{path}: is a folder, not a recipe file. HINT: {hint}")
        raise RecipeError(f"{path}: recipe file not found. HINT: {hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a text file ({e.reason}). HINT: a recipe is a UTF-8 YAML file.") from e
    try:
        raw = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise yaml_error(e, str(path)) from e
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty. HINT: {REQUIRED_HINTS['data']} and "
                          f"{REQUIRED_HINTS['stages']}")
    return raw, str(path), path.resolve().parent


def load_recipe(source: str | os.PathLike | Mapping | Recipe, overrides: Iterable[str] = ()) -> Recipe:
    """Reads, overrides and validates a recipe.

    Args:
        source: str, Path, dict or Recipe. A YAML file, or the recipe as a mapping (e.g. from Python code).
        overrides: iterable of str. `--set` strings such as `stages[1].lr=1e-5`, applied before validation
            (see `apply_overrides`). Defaults to none.

    Returns:
        A `Recipe` with every default filled in and every file path absolute.

    Raises:
        RecipeError: the file is missing or not YAML (file and line named), an override is malformed, or a key is
            unknown, of the wrong type or impossible (key path named, and the override that set it if one did).
            Errors of the data section come from `inceptune.data` and are prefixed the same way.

    Example:
        >>> recipe = load_recipe("recipe.yaml", ["model.backbone=inception_mini", "stages[1].lr=1e-5"])
    """
    raw, label, base = _read_source(source)
    if not isinstance(raw, dict):
        where = f"{label}: " if label else ""
        raise RecipeError(f"{where}expected a mapping with the keys {', '.join(TOP_KEYS)} at the top of the recipe, "
                          f"got {describe(raw)}. HINT: start the file with `data:` and `stages:` sections.")
    _absolutize(raw, base)
    parsed = []  # (override, the key path it set or created): errors under that path are blamed on it
    for text in overrides:
        parsed.append((text, path_text(new_part(raw, parse_override(text)[0]))))
        raw = apply_overrides(raw, [text])
    _absolutize(raw, Path.cwd())  # paths given by overrides are relative to the current folder
    try:
        return recipe_from_dict(raw)
    except InceptuneError as e:
        blamed = blamed_override(e, parsed)
        prefix = f"--set {blamed}: " if blamed else (f"{label}: " if label else "")
        if not prefix:
            raise
        raise type(e)(prefix + str(e), key=e.key) from e


# === Writing ===

def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as a plain mapping, every key written out, that `load_recipe` reads back to an equal Recipe.

    Args:
        recipe: Recipe.

    Returns:
        dict with the keys data, model, stages, cache, seed, calibrate (YAML key names: skips use `from`/`to`).
    """
    m = recipe.model
    return {
        "data": recipe.data.to_dict(),
        "model": {
            "backbone": m.backbone,
            "weights": m.weights,
            "image_size": m.image_size,
            "head": {"pooling": m.head.pooling, "dense": list(m.head.dense), "dropout": m.head.dropout},
            "skips": [{"from": s.src, "to": s.dst, "merge": s.merge} for s in m.skips],
            "insert": [{"after": i.after, "block": i.block, "name": i.name, "params": copy.deepcopy(i.params)}
                       for i in m.insert],
            "batchnorm": m.batchnorm,
            "cut": m.cut,
            "features": list(m.features),
            "preprocess": m.preprocess,
        },
        "stages": [_stage_to_dict(s) for s in recipe.stages],
        "cache": dataclasses.asdict(recipe.cache),
        "seed": recipe.seed,
        "calibrate": recipe.calibrate,
        "precision": recipe.precision,
        "distribute": {"strategy": recipe.distribute.strategy, "devices": list(recipe.distribute.devices),
                       "scale_lr": recipe.distribute.scale_lr},
    }


def _stage_to_dict(stage: Stage) -> dict:
    d = {f.name: getattr(stage, f.name) for f in dataclasses.fields(stage)}
    d["lr_mult"] = dict(stage.lr_mult)
    d["early_stopping"] = None if stage.early_stopping is None else dataclasses.asdict(stage.early_stopping)
    d["ema"] = None if stage.ema is None else dataclasses.asdict(stage.ema)
    return d


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Writes the resolved recipe as YAML, atomically (temporary file, then rename).

    Args:
        recipe: Recipe.
        path: str or Path. The file to write (its folder is created if needed); an existing file is replaced.

    Returns:
        The Path written. `load_recipe(path)` returns a Recipe equal to `recipe`.
    """
    path = Path(path)
    atomic_write_text(path, recipe_yaml(recipe))
    return path


def recipe_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML text, as `dump_recipe` writes it (and `inceptune recipe show` prints it)."""
    body = yaml.dump(recipe_to_dict(recipe), Dumper=RecipeDumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=None, width=100)
    return "# Resolved inceptune recipe: every default written out, file paths absolute.\n" + body
