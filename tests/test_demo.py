"""Tests for inceptune.demo: the bundled digits written as images, the folder rules, and `demo --quick` (slow)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from inceptune.cli import main
from inceptune.demo import DEMO_RECIPE, QUICK_OVERRIDES, demo_recipe, write_digits
from inceptune.recipe import load_recipe


def test_write_digits_writes_the_real_scans(tmp_path):
    from sklearn.datasets import load_digits

    counts = write_digits(tmp_path / "images", per_class=3)
    assert counts == {str(d): 3 for d in range(10)}
    digits = load_digits()
    first = digits.images[0]  # a 0
    img = np.asarray(Image.open(tmp_path / "images" / str(digits.target[0]) / "digit_0000.png"))
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()  # grey as RGB
    # 4x4 block means of the upsampled image follow the 8x8 scan (ink 0..16 -> 0..255)
    blocks = img[..., 0].astype(float).reshape(8, 4, 8, 4).mean(axis=(1, 3))
    assert np.corrcoef(blocks.ravel(), first.ravel())[0, 1] > 0.95
    assert img.max() >= 0.8 * first.max() * 255 / 16 and img[0, 0, 0] == 0 == first[0, 0]  # ink bright on black
    files = sorted(p.name for p in (tmp_path / "images" / "7").iterdir())
    sevens = [f"digit_{i:04d}.png" for i in np.flatnonzero(digits.target == 7)[:3]]
    assert files == sevens


def test_demo_recipe_is_valid_and_staged():
    recipe = load_recipe(demo_recipe("/tmp/digits"))
    assert recipe.model.backbone == "inception_mini" and recipe.model.batchnorm == "frozen"
    assert [(s.name, s.train, s.schedule) for s in recipe.stages] == [("head", "head", "constant"),
                                                                      ("all", "all", "cosine")]
    assert recipe.cache.mode == "auto" and recipe.data.dir == "/tmp/digits"
    quick = load_recipe(demo_recipe("/tmp/digits"), QUICK_OVERRIDES)
    assert [s.epochs for s in quick.stages] == [1, 24]
    assert DEMO_RECIPE["data"]["dir"] is None  # the table itself is never mutated


def test_demo_never_overwrites_a_folder(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["demo", "--out", str(tmp_path / "mine"), "--quick"]) == 2
    assert "already exists and is not empty" in " ".join(capsys.readouterr().err.split())
    assert main(["demo", "--out", str(tmp_path / "mine"), "--quick", "--force"]) == 2
    assert "does not look like an inceptune demo folder" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "demo.json").read_text())
    assert result["num_images"] == 400 and result["quick"] is True
    assert result["test_accuracy"] >= 0.7  # 60 held-out digits; measured 0.87 here (full demo: 0.978)
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] == result["test_accuracy"] and metrics["num_samples"] == result["test_size"] == 60
    for rel in ("recipe.yaml", "run/model.keras", "run/report.html", "run/history.csv", "run/labels.json",
                "export/digits.keras", "export/labels.json"):
        assert (out / rel).is_file(), rel
    assert json.loads((out / "export" / "labels.json").read_text()) == [str(d) for d in range(10)]
    assert result["export_check"].endswith("-> OK")
    assert len(result["predictions"]) == 5 and all(len(p["top"]) == 3 for p in result["predictions"])
    manifest = {r["path"]: r for r in csv.DictReader(open(out / "run" / "manifest.csv"))}
    assert all(manifest[p["path"]]["split"] == "test" and manifest[p["path"]]["label"] == p["true"]
               for p in result["predictions"])
    assert f"test accuracy {result['test_accuracy']:.4f}" in printed and str(out / "run" / "report.html") in printed
