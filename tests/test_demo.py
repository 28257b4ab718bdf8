"""Tests for inceptune.demo: the bundled digits written as images, the two tasks, the three recipes, the folder
rules, the pretrained-weights cache, and `demo --quick` end to end twice (slow)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from inceptune import demo
from inceptune.cli import main
from inceptune.demo import (LABELLED, SCRATCH_STAGES, SOURCE_RECIPE, TRANSFER_STAGES, VALIDATION, demo_recipes,
                            format_table, pretrained_dir, split_digits, write_digits)
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


def test_split_digits_makes_two_disjoint_tasks(tmp_path):
    write_digits(tmp_path / "images", per_class=30)
    source, target = split_digits(tmp_path / "images")
    assert {label for _, label in source} == set("01234") and len(source) == 5 * 30
    assert {label for _, label, _ in target} == set("56789") and len(target) == 5 * 30
    for digit in "56789":
        splits = [split for _, label, split in target if label == digit]
        assert splits == ["train"] * LABELLED + ["val"] * VALIDATION + ["test"] * (30 - LABELLED - VALIDATION)
    assert not {p for p, _ in source} & {p for p, _, _ in target}
    first_train = sorted((tmp_path / "images" / "5").glob("*.png"))[:LABELLED]
    assert [p for p, label, split in target if label == "5" and split == "train"] == [str(p) for p in first_train]
    few_source, few_test = split_digits(tmp_path / "images", source_per_class=4, test_per_class=3)
    assert len(few_source) == 20 and sum(1 for r in few_test if r[2] == "test") == 15


def test_demo_recipes_compare_like_with_like(tmp_path):
    recipes = demo_recipes(tmp_path / "s.csv", tmp_path / "t.csv", tmp_path / "src.weights.h5")
    pre, transfer, scratch = (load_recipe(recipes[k]) for k in ("pretrain", "transfer", "scratch"))
    assert pre.model.weights is None and pre.model.batchnorm == "train" and pre.data.csv == str(tmp_path / "s.csv")
    assert transfer.model.weights == str(tmp_path / "src.weights.h5") and scratch.model.weights is None
    # the same data, head, BatchNorm policy, batch size and seed; only the starting weights and stages differ
    assert transfer.data == scratch.data and transfer.data.csv == str(tmp_path / "t.csv")
    assert transfer.model.head == scratch.model.head and transfer.model.batchnorm == scratch.model.batchnorm
    assert transfer.seed == scratch.seed
    assert [(s.train, s.epochs) for s in transfer.stages] == [("head", 20), ("all", 30)]
    # scratch trains everything for at least as many epochs as transfer fine-tunes everything
    full_transfer = sum(s.epochs for s in transfer.stages if s.train == "all")
    assert [s.train for s in scratch.stages] == ["all"] and scratch.stages[0].epochs >= full_transfer
    quick = demo_recipes(tmp_path / "s.csv", tmp_path / "t.csv", tmp_path / "src.weights.h5", quick=True)
    assert [s["epochs"] for s in quick["transfer"]["stages"]] == list(demo.QUICK["transfer_epochs"])
    # the tables themselves are never mutated
    assert SOURCE_RECIPE["data"]["csv"] is None and TRANSFER_STAGES[0]["epochs"] == 20
    assert SCRATCH_STAGES[0]["epochs"] == 46


def test_pretrained_dir_follows_the_cache_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("INCEPTUNE_CACHE_DIR", str(tmp_path / "c"))
    assert pretrained_dir() == tmp_path / "c" / "pretrained"
    monkeypatch.delenv("INCEPTUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained_dir() == tmp_path / "xdg" / "inceptune" / "pretrained"


def test_format_table_aligns_the_comparison():
    text = format_table([
        {"method": "pretraining", "labelled_images": 910, "test_accuracy": 1.0, "test_size": 91, "seconds": 0.0},
        {"method": "transfer", "labelled_images": 50, "test_accuracy": 0.75, "test_size": 800, "seconds": 31.4},
    ])
    lines = text.splitlines()
    assert lines[0].split("  ")[0] == "method" and "test accuracy" in lines[0]
    assert lines[1].endswith("cached") and "1.000 (91 images)" in lines[1]
    assert lines[2].endswith("31 s") and "0.750 (800 images)" in lines[2]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns end together


def test_demo_never_overwrites_a_folder(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["demo", "--out", str(tmp_path / "mine"), "--quick"]) == 2
    assert "already exists and is not empty" in " ".join(capsys.readouterr().err.split())
    assert main(["demo", "--out", str(tmp_path / "mine"), "--quick", "--force"]) == 2
    assert "does not look like an inceptune demo folder" in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_demo_quick_end_to_end_then_reuses_pretraining(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INCEPTUNE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "demo.json").read_text())
    assert result["quick"] is True and result["pretraining_cached"] is False
    pre, transfer, scratch = result["table"]
    assert pre["labelled_images"] == 300 and transfer["labelled_images"] == scratch["labelled_images"] == 50
    assert transfer["test_size"] == scratch["test_size"] == 200
    for row in result["table"]:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["seconds"] > 0
    assert transfer["test_accuracy"] > 0.2  # better than chance on five digits
    for run in ("transfer", "scratch"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        row = transfer if run == "transfer" else scratch
        assert metrics["accuracy"] == row["test_accuracy"] and metrics["num_samples"] == 200
        assert (out / run / "report.html").is_file() and (out / run / "model.keras").is_file()
    weights = tmp_path / "cache" / "pretrained"
    assert len(list(weights.glob("*.weights.h5"))) == 1 and result["pretrained_weights"].startswith(str(weights))
    assert json.loads((out / "export" / "labels.json").read_text()) == list("56789")
    assert result["export_check"].endswith("-> OK")
    assert len(result["predictions"]) == 5 and all(len(p["top"]) == 3 for p in result["predictions"])
    target = {r["path"]: r for r in csv.DictReader(open(out / "target.csv"))}
    assert all(target[p["path"]]["split"] == "test" and target[p["path"]]["label"] == p["true"]
               for p in result["predictions"])
    assert format_table(result["table"]) in printed and "leakage" not in printed
    assert "inceptune train photos/ --out runs/photos" in printed.splitlines()[-1]

    # a second demo skips pretraining, says so, and starts from the same cached weights
    assert main(["demo", "--out", str(out), "--quick", "--force", "--quiet"]) == 0
    printed = capsys.readouterr().out
    again = json.loads((out / "demo.json").read_text())
    assert again["pretraining_cached"] is True and again["table"][0]["seconds"] == 0.0
    assert again["pretrained_weights"] == result["pretrained_weights"] and not (out / "pretrain").exists()
    assert again["table"][0]["test_accuracy"] == pre["test_accuracy"]
    assert "pretraining was reused from" in printed
