"""Tests for inceptune.recipe.defaults and `inceptune train DIR`: the default recipe, sized to the data, and
`inceptune recipe init / show`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from helpers import make_image_folder

from inceptune.cli import main
from inceptune.recipe import default_recipe, load_recipe, starter_recipe

FAST = ["--backbone", "inception_mini"]  # inception_mini has no ImageNet weights: its default is weights: none


def test_default_recipe_is_sized_to_the_counts(tmp_path):
    small = default_recipe(str(tmp_path), {"a": 12, "b": 40})
    d = small.raw
    assert d["data"]["split"]["method"] == "stratified" and d["data"]["batch_size"] == 8
    assert [s["epochs"] for s in d["stages"]] == [10, 10]
    assert [s["train"] for s in d["stages"]] == ["head", "head, from:mixed9"]
    assert "52 images in 2 classes (smallest class 12): stratified split, batch size 8" in small.summary
    big = default_recipe(str(tmp_path), {"a": 5000, "b": 3000}, backbone="inception_resnet_v2").raw
    assert big["data"]["split"]["method"] == "stable-hash" and big["data"]["batch_size"] == 32
    assert [s["epochs"] for s in big["stages"]] == [3, 3] and big["stages"][1]["train"] == "head, from:mixed_7a"
    other = default_recipe(str(tmp_path), {"a": 600, "b": 600}, backbone="resnet50", epochs=4).raw
    assert other["stages"][1]["train"] == "all" and [s["epochs"] for s in other["stages"]] == [4, 4]
    assert other["model"]["weights"] == "imagenet"
    r = load_recipe(d)  # the default is a valid recipe
    assert (r.model.batchnorm, r.data.augment, r.cache.views) == ("frozen", "light", 3)


@pytest.mark.parametrize("backbone", ["inception_v3", "inception_mini", "resnet50"])
def test_recipe_init_prints_a_recipe_that_loads(backbone, tmp_path, capsys):
    assert main(["recipe", "init", "--backbone", backbone]) == 0
    text = capsys.readouterr().out
    assert text == starter_recipe(backbone) and text.count("#") > 10  # commented
    (tmp_path / "recipe.yaml").write_text(text)
    r = load_recipe(tmp_path / "recipe.yaml")
    assert r.model.backbone == backbone and r.data.dir == str(tmp_path / "path" / "to" / "images")
    assert main(["recipe", "show", str(tmp_path / "recipe.yaml"), "--set", "seed=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["seed"] == 7 and shown["stages"][0]["optimizer"] == "adam"  # every default written out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("photos") / "photos", classes=3, per_class=12)


def test_train_a_folder_with_the_defaults(photos, tmp_path, capsys):
    assert main(["train", str(photos), "--out", str(tmp_path / "run"), *FAST, "--quiet"]) == 0
    run = tmp_path / "run"
    log = (run / "log.txt").read_text()
    assert "no recipe given: the default recipe for 36 images in 3 classes (smallest class 12): stratified" in log
    r = load_recipe(run / "recipe.yaml")
    assert r.data.dir == str(photos) and [s.epochs for s in r.stages] == [10, 10]
    history = [row for row in (run / "history.csv").read_text().splitlines()[1:]]
    assert len(history) <= 20 and json.loads((run / "metrics.json").read_text())["num_samples"] == 6


def test_the_written_recipe_reproduces_the_run(photos, tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["train", str(photos), "--out", str(first), *FAST, "--epochs", "1", "--quiet"]) == 0
    assert main(["train", str(first / "recipe.yaml"), "--out", str(again), "--quiet"]) == 0
    assert load_recipe(first / "recipe.yaml") == load_recipe(again / "recipe.yaml")
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    np.testing.assert_allclose(a["predictions"]["probs"], b["predictions"]["probs"], atol=1e-6)


def test_default_recipe_options_need_a_folder(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text(starter_recipe())
    assert main(["train", str(tmp_path / "r.yaml"), "--epochs", "3", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "choose the default recipe of a data folder or CSV" in err and "--set stages[0].epochs=N" in err
    assert not (tmp_path / "x").exists()
