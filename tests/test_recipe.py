"""Tests of inceptune.recipe: schema defaults, validation messages, --set overrides, YAML numbers, round trip."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from inceptune.choices import INSERT_BLOCKS
from inceptune.errors import RecipeError
from inceptune.recipe import (CacheConfig, EarlyStopping, HeadConfig, InsertConfig, ModelConfig, Recipe, SkipConfig,
                              Stage, apply_overrides, dump_recipe, load_recipe, recipe_to_dict, sections)
from inceptune.recipe.checks import show
from inceptune.recipe.yaml_format import RecipeLoader

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

DESIGN_EXAMPLE = """\
data:
  dir: images
  image_size: 299
  split: {val: 0.15, test: 0.15, seed: 0, method: stable-hash}
  augment: standard
  balance: class-weight
model:
  backbone: inception_v3
  weights: imagenet
  head: {pooling: avg, dense: [1024], dropout: 0.2}
  skips: [{from: mixed8, to: mixed10}]
  batchnorm: frozen
stages:
  - {name: head, train: head, epochs: 10, lr: 1.0e-3, optimizer: adam}
  - {name: top, train: "head,from:mixed9", epochs: 5, lr: 1.0e-4, schedule: cosine,
     lr_mult: {"from:mixed9": 0.1}, early_stopping: {monitor: val_loss, patience: 3}}
cache: auto
seed: 0
"""


@pytest.fixture
def images(tmp_path):
    """An image folder (two empty class folders) for the data section to point at."""
    for cls in ("cats", "dogs"):
        (tmp_path / "images" / cls).mkdir(parents=True)
    return tmp_path / "images"


def _write(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _minimal(images) -> dict:
    return {"data": {"dir": str(images)},
            "stages": [{"name": "head", "train": "head", "epochs": 2, "lr": 1e-3}]}


def _error(source, overrides=()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(source, overrides)
    return str(info.value)


# === Defaults and the documented schema ===

def test_minimal_recipe_gets_the_documented_defaults(images):
    r = load_recipe(_minimal(images))
    assert r.model == ModelConfig(backbone="inception_v3", weights="imagenet", image_size=None, head=HeadConfig(),
                                  skips=(), insert=(), batchnorm="frozen")
    assert r.model.head == HeadConfig(pooling="avg", dense=(), dropout=0.0)
    assert r.stages == (Stage(name="head", train="head", epochs=2, lr=0.001, optimizer="adam", weight_decay=None,
                              momentum=0.9, schedule="constant", decay_rate=0.9, decay_steps=None, warmup_epochs=0,
                              lr_mult={}, early_stopping=None, batch_size=None),)
    assert r.cache == CacheConfig(mode="auto", views=1, dtype="float32", memory_budget_mb=None)
    assert r.seed == 0


def test_yaml_keys_are_the_dataclass_fields_and_each_is_documented():
    for cls, keys in [(ModelConfig, sections._MODEL_KEYS), (HeadConfig, sections._HEAD_KEYS),
                      (Stage, sections._STAGE_KEYS), (EarlyStopping, sections._EARLY_KEYS),
                      (CacheConfig, sections._CACHE_KEYS), (InsertConfig, sections._INSERT_KEYS),
                      (Recipe, sections.TOP_KEYS)]:
        assert tuple(f.name for f in dataclasses.fields(cls)) == keys, cls.__name__
        for key in keys:
            assert re.search(rf"^\s+{key}: ", cls.__doc__, re.M), f"{cls.__name__} docstring lacks {key}"
    assert [f.name for f in dataclasses.fields(SkipConfig)] == ["src", "dst", "merge"]
    assert sections._SKIP_KEYS == ("from", "to", "merge")


def test_insert_block_parameters_match_the_block_functions():
    blocks = pytest.importorskip("inceptune.blocks")
    for block, fn in [("residual_inception", blocks.residual_inception_module), ("inception", blocks.inception_module)]:
        params = [p for p in inspect.signature(fn).parameters if p not in ("x", "name")]
        assert tuple(params) == INSERT_BLOCKS[block]


def test_design_example_loads(tmp_path, images):
    r = load_recipe(_write(tmp_path, DESIGN_EXAMPLE))
    assert r.model.head == HeadConfig(pooling="avg", dense=(1024,), dropout=0.2)
    assert r.model.skips == (SkipConfig(src="mixed8", dst="mixed10", merge="add"),)
    assert [(s.name, s.train, s.epochs, s.lr, s.schedule) for s in r.stages] == [
        ("head", "head", 10, 0.001, "constant"), ("top", "head,from:mixed9", 5, 0.0001, "cosine")]
    assert r.stages[1].lr_mult == {"from:mixed9": 0.1}
    assert r.stages[1].early_stopping == EarlyStopping(monitor="val_loss", patience=3, min_delta=0.0,
                                                       restore_best=True)
    assert r.cache == CacheConfig()


@pytest.mark.parametrize("name", ["feature_extractor", "first100_then_100_200", "freeze_mixed", "staged_top_blocks",
                                  "exponential_decay"])
def test_examples_load(name):
    path = EXAMPLES / f"{name}.yaml"
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# Replaces the seed"), first_line
    r = load_recipe(path)
    data = r.data.to_dict()
    assert data["dir"] == str(EXAMPLES / "images")  # relative to the recipe file, not to the current folder
    expected = {
        "feature_extractor": [("head", "head", 0.001, "constant")],
        "first100_then_100_200": [("freeze_first_100", "!first:100", 0.001, "constant"),
                                  ("layers_100_200", "head, first:200 & !first:100", 0.0001, "constant")],
        "freeze_mixed": [("no_mixed", "!name:*mixed*", 0.0001, "constant")],
        "staged_top_blocks": [("head", "head", 0.001, "constant"), ("top_blocks", "head, from:mixed9", 0.0001,
                                                                     "cosine")],
        "exponential_decay": [("head", "head", 0.001, "exponential")],
    }[name]
    assert [(s.name, s.train, s.lr, s.schedule) for s in r.stages] == expected
    if name == "exponential_decay":
        s = r.stages[0]
        assert (s.decay_rate, s.decay_steps) == (0.9, 1000)
        assert s.early_stopping == EarlyStopping(monitor="val_loss", patience=3, min_delta=0.0, restore_best=True)
    if name == "staged_top_blocks":
        assert r.stages[1].early_stopping.patience == 3


def test_examples_load_with_the_test_overrides(tmp_path, images):
    # How the trainer's tests run them: a tiny backbone and a generated dataset.
    r = load_recipe(EXAMPLES / "staged_top_blocks.yaml",
                    ["model.backbone=inception_mini", "model.weights=none", f"data.dir={images}",
                     "stages[0].epochs=1", "stages[1].epochs=1", "stages[1].train=head,from:mixed3"])
    assert (r.model.backbone, r.model.weights) == ("inception_mini", None)
    assert r.data.to_dict()["dir"] == str(images)
    assert [(s.epochs, s.train) for s in r.stages] == [(1, "head"), (1, "head,from:mixed3")]


# === YAML numbers and shorthands ===

def test_yaml_reads_exponent_numbers_as_floats(tmp_path, images):
    path = _write(tmp_path, f"""\
        data: {{dir: {images}}}
        stages:
          - {{name: a, train: head, epochs: 1, lr: 1e-4, weight_decay: 1E-5, momentum: .5}}
          - {{name: b, train: head, epochs: 1, lr: 1.0e-3, decay_rate: 5e-1}}
          - {{name: "1e3", train: head, epochs: 1, lr: 2e+0}}
        """)
    r = load_recipe(path)
    assert [s.lr for s in r.stages] == [1e-4, 1e-3, 2.0]
    assert all(type(s.lr) is float for s in r.stages)
    assert (r.stages[0].weight_decay, r.stages[0].momentum, r.stages[1].decay_rate) == (1e-5, 0.5, 0.5)
    assert r.stages[2].name == "1e3"  # quoted: still a string
    assert yaml.safe_load("lr: 1e-4") == {"lr": "1e-4"}  # why the custom loader exists
    assert yaml.load("a: 1e-4\nb: 1e4\nc: 10\nd: 1.5\ne: 0x1F\nf: off", Loader=RecipeLoader) == {
        "a": 1e-4, "b": 1e4, "c": 10, "d": 1.5, "e": 31, "f": False}


def test_numbers_given_as_strings_in_a_dict_are_read(images):
    d = _minimal(images)
    d["stages"][0]["lr"] = "1e-4"
    assert load_recipe(d).stages[0].lr == 1e-4


def test_cache_off_and_shorthands(images):
    d = _minimal(images)
    for value, expected in [(False, CacheConfig(mode="off")), ("off", CacheConfig(mode="off")),
                            (True, CacheConfig()), ("auto", CacheConfig()),
                            ({"views": 4, "dtype": "float16"}, CacheConfig(views=4, dtype="float16")),
                            ({"mode": "off", "memory_budget_mb": 512}, CacheConfig(mode="off", memory_budget_mb=512))]:
        d["cache"] = value
        assert load_recipe(d).cache == expected, value
    d["stages"][0]["early_stopping"] = True
    assert load_recipe(d).stages[0].early_stopping == EarlyStopping()
    d["stages"][0]["train"] = ["head", "from:mixed9"]
    assert load_recipe(d).stages[0].train == "head,from:mixed9"


def test_cache_off_written_in_yaml(tmp_path, images):
    path = _write(tmp_path, f"""\
        data: {{dir: {images}}}
        stages: [{{name: a, train: head, epochs: 1, lr: 0.001}}]
        cache: off
        """)
    assert load_recipe(path).cache.mode == "off"


def test_weights_none_and_paths(tmp_path, images):
    d = _minimal(images)
    d["model"] = {"weights": "none"}
    assert load_recipe(d).model.weights is None
    d["model"] = {"weights": None}
    assert load_recipe(d).model.weights is None
    d["model"] = {"weights": "w/best.weights.h5", "backbone": "saved/model.keras"}
    path = _write(tmp_path, yaml.safe_dump(d))
    m = load_recipe(path).model
    assert m.weights == str(tmp_path / "w" / "best.weights.h5")
    assert m.backbone == str(tmp_path / "saved" / "model.keras")


def test_relative_data_dir_is_relative_to_the_recipe_file(tmp_path, images, monkeypatch):
    sub = tmp_path / "recipes"
    sub.mkdir()
    path = _write(sub, "data: {dir: ../images}\nstages: [{name: a, train: head, epochs: 1, lr: 0.1}]\n")
    monkeypatch.chdir(images)  # the current folder does not matter for paths written in the file
    assert load_recipe(path).data.to_dict()["dir"] == str(images)
    # ... but does for paths given by --set
    assert load_recipe(path, ["data.dir=cats"]).data.to_dict()["dir"] == str(images / "cats")


# === Mistakes: each gives its key path, what is allowed, what was received and the fix ===

def test_wrong_type_for_lr(images):
    d = _minimal(images)
    d["stages"].append({"name": "top", "train": "head", "epochs": 1, "lr": "fast"})
    assert _error(d) == ('stages[1].lr: expected a positive number, got "fast". HINT: write a learning rate such as '
                         '1.0e-3 (fine-tuning usually uses 1e-5 to 1e-3).')


@pytest.mark.parametrize("lr", [0, -1e-3])
def test_non_positive_lr(images, lr):
    d = _minimal(images)
    d["stages"][0]["lr"] = lr
    assert _error(d).startswith(f"stages[0].lr: expected a positive number, got {lr}.")


def test_negative_epochs(images):
    d = _minimal(images)
    d["stages"][0]["epochs"] = -1
    assert _error(d) == "stages[0].epochs: expected a whole number >= 0, got -1."
    d["stages"][0]["epochs"] = 2.5
    assert _error(d) == "stages[0].epochs: expected a whole number >= 0, got 2.5."


def test_unknown_top_level_key_suggests_the_closest(images):
    d = _minimal(images)
    d["stage"] = d.pop("stages")
    assert _error(d) == ('stage: unknown key "stage" in the recipe. Allowed keys: data, model, stages, cache, seed, '
                         'calibrate, precision, distribute. HINT: did you mean "stages"?')


def test_unknown_stage_key_suggests_the_closest(images):
    d = _minimal(images)
    d["stages"][0]["learning_rate"] = d["stages"][0].pop("lr")
    assert _error(d) == (
        'stages[0].learning_rate: unknown key "learning_rate" in stage "head". Allowed keys: name, train, epochs, lr, '
        "optimizer, weight_decay, momentum, schedule, decay_rate, decay_steps, warmup_epochs, lr_mult, "
        'early_stopping, batch_size, label_smoothing, clip_norm, ema. HINT: did you mean "decay_rate"?')
    d["stages"][0]["lr"] = 0.1
    del d["stages"][0]["learning_rate"]
    d["stages"][0]["optimiser"] = "adam"
    assert _error(d).endswith('HINT: did you mean "optimizer"?')


def test_unknown_optimizer_schedule_batchnorm_pooling(images):
    cases = [
        (("stages", 0, "optimizer"), "adan",
         'stages[0].optimizer: unknown optimizer "adan". Allowed: adam, adamw, sgd. HINT: did you mean "adam" or '
         '"adamw"?'),
        (("stages", 0, "schedule"), "cosin",
         'stages[0].schedule: unknown schedule "cosin". Allowed: constant, cosine, exponential. '
         'HINT: did you mean "cosine"?'),
        (("model", "batchnorm"), "freeze",
         'model.batchnorm: unknown BatchNorm policy "freeze". Allowed: frozen, follow, train. '
         'HINT: did you mean "frozen"?'),
        (("model", "head", "pooling"), "mean",
         'model.head.pooling: unknown pooling "mean". Allowed: avg, max, flatten. HINT: use one of avg, max, flatten.'),
    ]
    for (section, *rest), value, expected in cases:
        d = _minimal(images)
        node = d.setdefault(section, {})
        for k in rest[:-1]:
            node = node[k] if isinstance(k, int) else node.setdefault(k, {})
        node[rest[-1]] = value
        assert _error(d) == expected
    d = _minimal(images)
    d["stages"][0]["optimizer"] = "SGD"  # case does not matter
    assert load_recipe(d).stages[0].optimizer == "sgd"


def test_empty_and_missing_stages(images):
    d = _minimal(images)
    d["stages"] = []
    assert _error(d) == ("stages: expected at least one stage, got an empty list. HINT: add at least one stage, e.g. "
                         "stages: [{name: head, train: head, epochs: 5, lr: 1.0e-3}].")
    del d["stages"]
    assert _error(d).startswith('stages: missing required key "stages" in the recipe.')


def test_duplicate_stage_names(images):
    d = _minimal(images)
    d["stages"].append(dict(d["stages"][0]))
    assert _error(d) == ('stages[1].name: duplicate stage name "head" (also stages[0]); stage names must be unique '
                         '(they name history rows and checkpoints). HINT: rename one, e.g. name: head_1.')


def test_default_stage_names_and_bad_names(images):
    d = _minimal(images)
    del d["stages"][0]["name"]
    d["stages"].append({"train": "all", "epochs": 1, "lr": 1e-4})
    assert [s.name for s in load_recipe(d).stages] == ["stage0", "stage1"]
    d["stages"][1]["name"] = "top blocks/2"
    assert _error(d) == ("stages[1].name: a stage name may contain only letters, digits, '_', '-' and '.' (it names "
                         'files), got "top blocks/2". HINT: e.g. name: top_blocks_2.')


def test_a_stage_needs_only_train(images):
    d = _minimal(images)
    d["stages"] = [{"train": "head"}]
    stage = load_recipe(d).stages[0]
    assert (stage.name, stage.train, stage.epochs, stage.lr, stage.optimizer) == ("stage0", "head", 5, 1e-3, "adam")
    del d["stages"][0]["train"]
    assert _error(d) == ('stages[0].train: missing required key "train" in stage "stage0". HINT: name what trains '
                         'with a selector, e.g. train: head, or train: "head,from:mixed9".')


def test_selector_that_does_not_parse(images):
    pytest.importorskip("inceptune.selectors")
    d = _minimal(images)
    d["stages"][0]["train"] = "head,,from:mixed9"
    msg = _error(d)
    assert msg.startswith("stages[0].train: invalid selector 'head,,from:mixed9' at position 5: expected a selector "
                          "here.")
    d["stages"][0]["train"] = "form:mixed9"
    assert _error(d).startswith("stages[0].train: invalid selector 'form:mixed9' at position 0: unknown selector kind "
                                "'form:' (did you mean from:")
    d["stages"][0]["train"] = "head"
    d["stages"][0]["lr_mult"] = {"blocks:mixed9": 0.1}
    assert _error(d).startswith('stages[0].lr_mult["blocks:mixed9"]: invalid selector \'blocks:mixed9\'')


def test_selector_of_the_wrong_type(images):
    d = _minimal(images)
    d["stages"][0]["train"] = 100
    assert _error(d) == ('stages[0].train: expected a selector string (e.g. head, all, "from:mixed9"), got 100. '
                         'HINT: see the selector forms in DESIGN.md §3; quote selectors that start with "!".')


def test_negative_lr_mult(images):
    d = _minimal(images)
    d["stages"][0]["lr_mult"] = {"from:mixed9": -0.1}
    assert _error(d) == ('stages[0].lr_mult["from:mixed9"]: expected a factor >= 0, got -0.1. HINT: a factor '
                         "multiplies the stage's lr for those layers: 0.1 is ten times slower, 0 keeps them "
                         "unchanged.")


def test_fractions_outside_their_range(images):
    d = _minimal(images)
    d["model"] = {"head": {"dropout": 1.0}}
    assert _error(d) == ("model.head.dropout: expected a number in [0, 1), got 1.0. HINT: dropout is the fraction of "
                         "units dropped, e.g. 0.2.")
    d["model"] = {}
    d["stages"][0]["momentum"] = 1.5
    assert _error(d) == "stages[0].momentum: expected a number in [0, 1), got 1.5."
    d["stages"][0]["momentum"] = 0.9
    d["stages"][0]["decay_rate"] = 0
    assert _error(d) == ("stages[0].decay_rate: expected a number in (0, 1], got 0. HINT: the learning rate is "
                         "multiplied by decay_rate every decay_steps, e.g. 0.9.")


def test_warmup_longer_than_the_stage(images):
    d = _minimal(images)
    d["stages"][0]["warmup_epochs"] = 3
    assert _error(d) == ("stages[0].warmup_epochs: expected at most the stage's 2 epochs, got 3. "
                         "HINT: lower warmup_epochs or raise epochs.")


def test_misspelt_weights(images):
    d = _minimal(images)
    d["model"] = {"weights": "imagnet"}
    assert _error(d) == ('model.weights: unknown weights "imagnet". Allowed: imagenet, none, or a path to a weights '
                         'file ending in .weights.h5, .h5 or .keras. HINT: did you mean "imagenet"?')


def test_model_section_mistakes(images):
    d = _minimal(images)
    d["model"] = {"head": {"dense": 1024}}
    assert _error(d) == "model.head.dense: expected a list of layer widths, got 1024. HINT: write dense: [1024] for " \
                        "one hidden layer."
    d["model"] = {"skips": [{"from": "mixed8", "to": "mixed8"}]}
    assert _error(d) == ("model.skips[0].to: a skip must end downstream of where it starts; from and to are both "
                         '"mixed8". HINT: name a later block in to, e.g. {from: mixed8, to: mixed10}.')
    d["model"] = {"skips": [{"src": "mixed8", "to": "mixed10"}]}
    assert _error(d).startswith('model.skips[0].src: unknown key "src" in `model.skips[0]`. Allowed keys: from, to, '
                                "merge.")
    d["model"] = {"insert": [{"after": "mixed7", "params": {"filter": 16}}]}
    assert _error(d) == ('model.insert[0].params.filter: unknown key "filter" in the parameters of block '
                         '"residual_inception". Allowed keys: filters, out_channels, scale, activation, zero_init. '
                         'HINT: did you mean "filters"?')
    d["model"] = {"insert": [{"after": "mixed7"}, {"after": "mixed7"}]}
    assert _error(d) == ('model.insert[1].name: duplicate block name "mixed7_residual_inception" (also '
                         "model.insert[0]); layer names must be unique. HINT: give each inserted block its own name.")
    d["model"] = {"image_size": 0}
    assert _error(d) == ("model.image_size: expected a whole number >= 1, got 0. "
                         "HINT: the input side in pixels, e.g. 299.")


def test_cache_and_seed_mistakes(images):
    d = _minimal(images)
    d["cache"] = {"views": 0}
    assert _error(d) == "cache.views: expected a whole number >= 1, got 0."
    d["cache"] = "always"
    assert _error(d) == 'cache: unknown cache mode "always". Allowed: auto, off. HINT: use one of auto, off.'
    d["cache"] = {"dtype": "float64"}
    assert _error(d) == ('cache.dtype: unknown dtype "float64". Allowed: float32, float16. '
                         'HINT: did you mean "float16" or "float32"?')
    d["cache"] = "auto"
    d["seed"] = -1
    assert _error(d) == "seed: expected a whole number from 0 to 4294967295, got -1."


def test_early_stopping_mistakes(images):
    d = _minimal(images)
    d["stages"][0]["early_stopping"] = {"patience": -1}
    assert _error(d) == "stages[0].early_stopping.patience: expected a whole number >= 0, got -1."
    d["stages"][0]["early_stopping"] = {"restore_best_weights": True}
    assert _error(d).endswith('HINT: did you mean "restore_best"?')
    d["stages"][0]["early_stopping"] = "val_loss"
    assert _error(d) == ("stages[0].early_stopping: expected a mapping such as {monitor: val_loss, patience: 3}, true, "
                         'or null, got "val_loss".')


def test_yaml_syntax_error_names_file_and_line(tmp_path, images):
    path = _write(tmp_path, f"""\
        data: {{dir: {images}}}
        stages:
          - name: head
            train: head
           epochs: 3
        """)
    msg = _error(path)
    assert msg.startswith(f"{path}, line 5, column 4: not valid YAML: ")
    assert msg.endswith('HINT: check the indentation, and quote values that contain ": " or " #", or start with "!", '
                        '"&", "*", "[" or "{".')


def test_duplicate_yaml_key_is_an_error(tmp_path, images):
    path = _write(tmp_path, f"""\
        data: {{dir: {images}}}
        stages:
          - name: head
            train: head
            epochs: 3
            lr: 1.0e-3
            lr: 1.0e-2
        """)
    assert _error(path) == (f'{path}, line 7, column 5: not valid YAML: duplicate key "lr" (first written on line 6);'
                            " YAML would silently keep only the last one. HINT: keep one of the two entries.")


def test_unquoted_bang_selector_gets_a_hint(tmp_path, images):
    hint = 'HINT: a value starting with "!" is a YAML tag: quote selectors such as train: "!name:*mixed*".'
    path = _write(tmp_path, f"""\
        data: {{dir: {images}}}
        stages:
          - name: a
            train: !name:*mixed*
            epochs: 1
            lr: 0.1
        """)
    assert _error(path) == (f"{path}, line 4, column 12: not valid YAML: could not determine a constructor for the tag "
                            f"'!name:*mixed*'. {hint}")
    path = _write(tmp_path, f"""\
        data: {{dir: {images}}}
        stages:
          - {{name: a, train: !name:*mixed*, epochs: 1, lr: 0.1}}
        """)
    assert _error(path) == (f"{path}, line 3, column 43: not valid YAML: while parsing a flow mapping, expected ',' or "
                            f"'}}', but got ':'. {hint}")


def test_errors_in_a_file_name_the_file(tmp_path, images):
    path = _write(tmp_path, f"""\
        data: {{dir: {images}}}
        stages: [{{name: a, train: head, epochs: 1, lr: fast}}]
        """)
    assert _error(path).startswith(f'{path}: stages[0].lr: expected a positive number, got "fast".')


def test_missing_file_empty_file_and_not_a_mapping(tmp_path):
    assert _error(tmp_path / "nope.yaml") == (f"{tmp_path / 'nope.yaml'}: recipe file not found. HINT: check the "
                                              "path; recipes are YAML files such as examples/staged_top_blocks.yaml.")
    assert _error(_write(tmp_path, "# nothing\n")).startswith(f"{tmp_path / 'recipe.yaml'}: the recipe is empty.")
    assert _error(_write(tmp_path, "- a\n- b\n")).startswith(
        f"{tmp_path / 'recipe.yaml'}: expected a mapping with the keys data, model, stages, cache, seed, calibrate, "
        "precision, distribute at the top of the recipe, got a list.")


def test_data_section_mistakes_are_checked_like_every_section(tmp_path, images):
    d = _minimal(images)
    d["data"]["split"] = {"val": 1.5}
    assert _error(d).startswith("data.split.val: expected a number between 0 and 1, got 1.5")
    d["data"]["split"] = {"val": 0.6, "test": 0.4}
    assert _error(d).startswith("data.split: val + test must leave images for training (below 1), "
                                "got val=0.6 + test=0.4 = 1")
    d["data"]["split"] = {"val": 0.2}
    assert _error(d, ["data.split.test=0.9"]).startswith(
        "--set data.split.test=0.9: data.split: val + test must leave images for training")
    d["data"]["split"] = {"val": 0.2, "tset": 0.1}
    assert _error(d).startswith('data.split.tset: unknown key')
    path = _write(tmp_path, yaml.safe_dump({**_minimal(images), "data": {"dir": "images", "balance": "weights"}}))
    assert _error(path).startswith(f'{path}: data.balance: unknown balance mode "weights". Allowed: none, '
                                   'class-weight, oversample.')


def test_data_section_values_and_paths(tmp_path, images):
    path = _write(tmp_path, DESIGN_EXAMPLE)
    data = load_recipe(path).data
    from inceptune.data import DataConfig, SplitConfig

    assert data == DataConfig(dir=str(tmp_path / "images"), image_size=299, augment="standard", balance="class-weight",
                              split=SplitConfig(val=0.15, test=0.15, seed=0, method="stable-hash"))
    d = _minimal(images)
    d["data"] = {"manifest": "old_run/manifest.csv"}
    assert load_recipe(_write(tmp_path, yaml.safe_dump(d))).data.manifest == str(tmp_path / "old_run" / "manifest.csv")


# === Overrides ===

def test_overrides_apply_before_validation(tmp_path, images):
    path = _write(tmp_path, DESIGN_EXAMPLE.replace("dir: images", f"dir: {images}"))
    r = load_recipe(path, [
        "stages[1].lr=1e-5",
        "model.backbone=inception_mini",
        "model.head.dense=[64]",
        'stages[0].lr_mult={"from:mixed9": 0.1}',
        'stages[1].lr_mult["from:mixed9"]=0.5',
        "stages[-1].epochs=7",
        "stages[0].train=!first:100",
        "stages[0].early_stopping.patience=5",
        "cache.views=4",
        "model.weights=none",
        "seed=42",
    ])
    assert r.stages[1].lr == 1e-5 and type(r.stages[1].lr) is float
    assert r.model.backbone == "inception_mini"
    assert r.model.weights is None
    assert r.model.head == HeadConfig(pooling="avg", dense=(64,), dropout=0.2)
    assert r.stages[0].lr_mult == {"from:mixed9": 0.1}
    assert r.stages[1].lr_mult == {"from:mixed9": 0.5}
    assert r.stages[1].epochs == 7
    assert r.stages[0].train == "!first:100"
    assert r.stages[0].early_stopping == EarlyStopping(patience=5)
    assert r.cache == CacheConfig(mode="auto", views=4)
    assert r.seed == 42


def test_data_override(images):
    r = load_recipe(_minimal(images), ["data.split.val=0.2"])
    assert r.data.to_dict()["split"]["val"] == 0.2


def test_override_appends_a_stage(images):
    r = load_recipe(_minimal(images), ["stages[1]={name: all, train: all, epochs: 1, lr: 1e-5}"])
    assert [(s.name, s.train, s.lr) for s in r.stages] == [("head", "head", 0.001), ("all", "all", 1e-5)]


def test_apply_overrides_does_not_modify_its_input():
    raw = {"stages": [{"lr": 0.1}], "cache": "off"}
    out = apply_overrides(raw, ["stages[0].lr=1e-2", "cache.views=2", "model.head.dropout=0.5"])
    assert raw == {"stages": [{"lr": 0.1}], "cache": "off"}
    assert out == {"stages": [{"lr": 0.01}], "cache": {"mode": "off", "views": 2}, "model": {"head": {"dropout": 0.5}}}


def test_override_mistakes(images):
    d = _minimal(images)
    assert _error(d, ["stages[0].lr"]) == (
        "--set stages[0].lr: missing '=VALUE'. HINT: write KEY=VALUE, e.g. --set stages[1].lr=1e-5 or --set "
        "'stages[0].lr_mult[\"from:mixed9\"]=0.1'.")
    assert _error(d, ["stages[3].lr=1e-5"]) == (
        "--set stages[3].lr=1e-5: stages[3] does not exist: stages has 1 entries (stages[0] to stages[0]). "
        "HINT: use an index from 0 to 0, or stages[1] to add an entry.")
    assert _error(d, ["stages[0].lr.value=1"]) == (
        "--set stages[0].lr.value=1: stages[0].lr is a number (0.001), not a mapping. "
        "HINT: set stages[0].lr itself, e.g. --set stages[0].lr=VALUE.")
    assert _error(d, ["stages[0][1]=x"]) == (
        "--set stages[0][1]=x: stages[0] is a mapping, not a list, so it has no [1].")
    assert _error(d, ["data.dir.x=1"]) == (f"--set data.dir.x=1: data.dir is a string ({show(str(images))}), not a "
                                           "mapping. HINT: set data.dir itself, e.g. --set data.dir=VALUE.")
    assert _error(d, ["stages[0].lr_mult.from:mixed9=0.1"]).startswith(
        "--set stages[0].lr_mult.from:mixed9=0.1: unexpected \":\" at position 22 in the key. HINT: keys containing "
        "\":\" \".\" or \",\" go in quoted brackets: lr_mult[\"from:mixed9\"].")


def test_override_that_makes_the_recipe_invalid_is_named(tmp_path, images):
    path = _write(tmp_path, yaml.safe_dump(_minimal(images)))
    assert _error(path, ["model.hed.dense=[64]"]) == (
        '--set model.hed.dense=[64]: model.hed: unknown key "hed" in `model`. Allowed keys: backbone, weights, '
        'image_size, head, skips, insert, batchnorm, cut, features, preprocess. HINT: did you mean "head"?')
    assert _error(path, ["stages[0].lr=-1"]).startswith("--set stages[0].lr=-1: stages[0].lr: expected a positive")
    assert _error(path, ["stages[1].lr=1e-5"]) == (
        '--set stages[1].lr=1e-5: stages[1].train: missing required key "train" in stage "stage1". HINT: name what '
        'trains with a selector, e.g. train: head, or train: "head,from:mixed9".')
    # a mistake the overrides did not touch is blamed on the file
    assert _error(path, ["seed=3", "cache=sometimes"]).startswith('--set cache=sometimes: cache: unknown cache mode')
    assert _error(path, ["seed=3", "stages[0].schedule=cosin"]).startswith(
        '--set stages[0].schedule=cosin: stages[0].schedule: unknown schedule "cosin"')
    bad = _write(tmp_path, yaml.safe_dump({**_minimal(images), "seed": -2}), "bad.yaml")
    assert _error(bad, ["stages[0].epochs=3"]).startswith(f"{bad}: seed: expected a whole number")


# === Round trip and writing ===

def _full_recipe(images) -> dict:
    return {
        "data": {"dir": str(images)},
        "model": {"backbone": "inception_v3", "weights": "none", "image_size": 150,
                  "head": {"pooling": "max", "dense": [256, 64], "dropout": 0.25},
                  "skips": [{"from": "mixed8", "to": "mixed10", "merge": "concat"}],
                  "insert": [{"after": "mixed7", "params": {"filters": 16, "zero_init": True}}],
                  "batchnorm": "follow"},
        "stages": [
            {"name": "head", "train": "head", "epochs": 3, "lr": 1e-3},
            {"name": "1e3", "train": "head,from:mixed9 & !type:BatchNormalization", "epochs": 4, "lr": 1e-5,
             "optimizer": "sgd", "momentum": 0.8, "weight_decay": 1e-4, "schedule": "exponential",
             "decay_rate": 0.5, "decay_steps": 10, "warmup_epochs": 1, "lr_mult": {"from:mixed9": 0.1, "head": 0},
             "early_stopping": {"monitor": "val_accuracy", "patience": 0, "min_delta": 1e-3, "restore_best": False},
             "batch_size": 16},
        ],
        "cache": {"mode": "auto", "views": 3, "dtype": "float16", "memory_budget_mb": 256.5},
        "seed": 7,
    }


def test_round_trip_through_yaml(tmp_path, images):
    r = load_recipe(_full_recipe(images))
    assert r.model.insert == (InsertConfig(after="mixed7", block="residual_inception", name="mixed7_residual_inception",
                                           params={"filters": 16, "zero_init": True}),)
    out = dump_recipe(r, tmp_path / "run" / "recipe.yaml")
    assert out == tmp_path / "run" / "recipe.yaml"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Resolved inceptune recipe")
    assert "lr: 1.0e-05" in text and "name: '1e3'" in text  # the string 1e3 is quoted, or it would read back a float
    back = load_recipe(out)
    assert back == r
    assert recipe_to_dict(back) == recipe_to_dict(r)
    assert load_recipe(recipe_to_dict(r)) == r
    assert load_recipe(r) == r  # a Recipe is accepted as a source too


def test_round_trip_of_the_design_example_and_the_examples(tmp_path, images):
    sources = [_write(tmp_path, DESIGN_EXAMPLE.replace("dir: images", f"dir: {images}"))]
    sources += sorted(EXAMPLES.glob("*.yaml"))
    for i, src in enumerate(sources):
        r = load_recipe(src)
        assert load_recipe(dump_recipe(r, tmp_path / f"out{i}" / "recipe.yaml")) == r, src


def test_dump_is_atomic(tmp_path, images, monkeypatch):
    r = load_recipe(_minimal(images))
    target = tmp_path / "recipe.yaml"
    dump_recipe(r, target)
    before = target.read_bytes()
    r2 = dataclasses.replace(r, seed=9)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        dump_recipe(r2, target)
    assert target.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "recipe.yaml"]  # no temporary file left
    monkeypatch.undo()
    dump_recipe(r2, target)
    assert load_recipe(target).seed == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "recipe.yaml"]


def test_loading_a_recipe_imports_no_keras():
    # recipes (selectors included) are validated without TensorFlow: `recipe show` and early errors stay fast
    code = ("import sys; from inceptune.recipe import load_recipe; load_recipe(sys.argv[1]); "
            "print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / "staged_top_blocks.yaml")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
