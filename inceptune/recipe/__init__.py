"""The recipe: one YAML file that describes a whole training run (DESIGN.md §6).

A recipe has five top-level keys::

    data:    where the images are, how they are split, augmented and balanced
    model:   backbone, weights, head, graph surgery (skips, inserted blocks) and the BatchNorm policy
    stages:  the staged fine-tuning plan: an ordered list of stages, each naming what trains, for how long, how fast
    cache:   whether frozen-prefix features may be cached (`auto` | `off`, or a mapping)
    seed:    one integer seeding splits, initialisation and shuffling

Loading is strict: unknown keys, wrong types and impossible values raise `RecipeError` naming the key path
(`stages[1].lr: expected a positive number ..., got "fast"`), what is allowed, and the fix. `--set KEY=VALUE`
overrides are applied to the raw mapping before validation. YAML is read with PyYAML's safe loader, extended
in two ways: `1e-5` is a number (YAML 1.1 reads it as a string), and a key written twice in one mapping is an
error (YAML silently keeps the last one).

Relative paths are made absolute when the recipe is loaded, so the resolved recipe written into a run folder
loads from anywhere.

The package, top to bottom: `loading` (files, overrides, validation, writing), `overrides` (the `--set`
language), `sections` and `data_section` (one validator per section), `checks` (the value checks and the one
message formula they share), `yaml_format` (the YAML dialect) and `schema` (the dataclasses). The allowed
values of every key are the tables of `inceptune.choices`.

Example:
    >>> recipe = load_recipe("examples/staged_top_blocks.yaml", ["stages[1].lr=1e-5"])
    >>> recipe.stages[1].lr
    1e-05
    >>> dump_recipe(recipe, "runs/flowers/recipe.yaml")
"""

from inceptune.recipe.data_section import data_config_from_dict, parse_augment
from inceptune.recipe.defaults import DefaultRecipe, default_recipe, starter_recipe
from inceptune.recipe.loading import dump_recipe, load_recipe, recipe_to_dict, recipe_yaml
from inceptune.recipe.overrides import apply_overrides
from inceptune.recipe.schema import (CacheConfig, DataConfig, EarlyStopping, HeadConfig, InsertConfig, ModelConfig,
                                     Recipe, SkipConfig, SplitConfig, Stage)

__all__ = [
    "Recipe",
    "DataConfig",
    "SplitConfig",
    "ModelConfig",
    "HeadConfig",
    "SkipConfig",
    "InsertConfig",
    "Stage",
    "EarlyStopping",
    "CacheConfig",
    "load_recipe",
    "apply_overrides",
    "recipe_to_dict",
    "recipe_yaml",
    "dump_recipe",
    "data_config_from_dict",
    "parse_augment",
    "DefaultRecipe",
    "default_recipe",
    "starter_recipe",
]
