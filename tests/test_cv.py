"""Tests for inceptune.cv: the fold assignment (exactly scikit-learn's StratifiedKFold over the train+val pool,
the test split held out, identical files kept together), the fold manifests, and a 3-fold run (slow)."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
from helpers import make_image_folder, mini_recipe

from inceptune.cli import main
from inceptune.cv import cross_validate, fold_manifest_rows, make_folds
from inceptune.errors import DataError, InceptuneError


def _rows(counts=(("a", 9), ("b", 7), ("c", 5)), test_every=4):
    rows = []
    for label, n in dict(counts).items():
        for i in range(n):
            split = "test" if test_every and i % test_every == 0 else ("val" if i % 3 == 0 else "train")
            rows.append({"path": f"/d/{label}/{i}.png", "label": label, "split": split, "hash": f"{label}{i}"})
    return rows


def test_folds_equal_sklearn_stratified_kfold_on_the_pool():
    from sklearn.model_selection import StratifiedKFold

    rows = _rows()
    fold_of = make_folds(rows, 3, seed=7)
    pool = [i for i, r in enumerate(rows) if r["split"] != "test"]
    expected = [-1] * len(rows)
    y = [rows[i]["label"] for i in pool]
    for k, (_, val) in enumerate(StratifiedKFold(3, shuffle=True, random_state=7).split(np.zeros(len(pool)), y)):
        for j in val:
            expected[pool[j]] = k
    assert fold_of == expected
    assert [f for r, f in zip(rows, fold_of) if r["split"] == "test"] == [-1] * 7  # 3 + 2 + 2 test rows
    assert sorted(Counter(f for f in fold_of if f >= 0).values()) == [4, 5, 5]  # 14 pool rows (6 + 5 + 3), 3 folds
    per_class = Counter((r["label"], f) for r, f in zip(rows, fold_of) if f >= 0)
    assert [per_class[("a", k)] for k in range(3)] == [2, 2, 2]  # 'a': 6 pool rows -> 2 per fold
    assert make_folds(rows, 3, seed=7) == fold_of
    assert make_folds(rows, 3, seed=8) != fold_of


def test_identical_files_share_a_fold():
    rows = _rows({"a": 8, "b": 8}, test_every=0)  # no test rows
    rows[1]["hash"] = rows[2]["hash"] = rows[5]["hash"] = "same"
    rows[9]["hash"] = rows[10]["hash"] = "twin"
    for seed in range(5):
        fold_of = make_folds(rows, 4, seed=seed)
        assert fold_of[1] == fold_of[2] == fold_of[5]
        assert fold_of[9] == fold_of[10]
        assert sorted(set(fold_of)) == [0, 1, 2, 3]


def test_fold_manifest_rows_rotate_validation_and_keep_test():
    rows = _rows()
    fold_of = make_folds(rows, 3, seed=0)
    seen_val = []
    for k in range(3):
        m = fold_manifest_rows(rows, fold_of, k)
        assert [r["path"] for r in m] == [r["path"] for r in rows]
        assert [r["split"] for r, o in zip(m, rows) if o["split"] == "test"] == ["test"] * 7
        assert {r["split"] for r, f in zip(m, fold_of) if f == k} == {"val"}
        assert {r["split"] for r, f in zip(m, fold_of) if f not in (k, -1)} == {"train"}
        seen_val += [r["path"] for r in m if r["split"] == "val"]
    pool = [r["path"] for r in rows if r["split"] != "test"]
    assert sorted(seen_val) == sorted(pool)  # every pool image validates exactly once


def test_too_few_images_per_class_and_bad_fold_counts():
    rows = _rows({"a": 9, "b": 3}, test_every=0)
    with pytest.raises(DataError, match=r"4 folds need at least 4 train\+val images per class; too few in 'b' \(3\)"
                                        r"\. HINT: lower --folds to 3"):
        make_folds(rows, 4)
    with pytest.raises(InceptuneError, match=r"--folds must be an integer >= 2, received folds=1"):
        make_folds(rows, 1)


def test_cli_cv_refuses_an_existing_folder(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    (tmp_path / "r.yaml").write_text("data: {dir: nowhere}\nstages: [{train: head, epochs: 1, lr: 0.01}]\n")
    assert main(["cv", str(tmp_path / "r.yaml"), "--folds", "3", "--out", str(tmp_path / "out")]) == 2
    assert "already exists and is not empty" in " ".join(capsys.readouterr().err.split())
    assert main(["cv", str(tmp_path / "r.yaml"), "--folds", "3", "--out", str(tmp_path / "out"), "--force"]) == 2
    assert "does not look like an inceptune cv folder" in " ".join(capsys.readouterr().err.split())
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


@pytest.mark.slow
def test_three_fold_cv_end_to_end(tmp_path):
    data = make_image_folder(tmp_path / "images", classes=3, per_class=12)
    recipe = mini_recipe(data, stages=[{"name": "head", "train": "head", "epochs": 1, "lr": 1e-2},
                                       {"name": "all", "train": "all", "epochs": 1, "lr": 3e-3}])
    out = tmp_path / "cv"
    result = cross_validate(recipe, 3, out, verbose=False)
    saved = json.loads((out / "cv.json").read_text())
    assert saved["num_folds"] == 3 and len(saved["folds"]) == 3 and saved["labels"] == ["class_0", "class_1", "class_2"]
    assert result["folds"] == saved["folds"] and result["dir"] == str(out)

    manifest = list(csv.DictReader(open(out / "manifest.csv")))
    test_paths = sorted(r["path"] for r in manifest if r["split"] == "test")
    pool_paths = sorted(r["path"] for r in manifest if r["split"] != "test")
    assert saved["test_size"] == len(test_paths) > 0 and saved["pool_size"] == len(pool_paths)
    val_seen = []
    for k, fold in enumerate(saved["folds"]):
        run_manifest = list(csv.DictReader(open(out / f"fold-{k}" / "manifest.csv")))
        assert sorted(r["path"] for r in run_manifest if r["split"] == "test") == test_paths  # held out in every fold
        val = [r["path"] for r in run_manifest if r["split"] == "val"]
        assert fold["val_size"] == len(val) and fold["train_size"] == len(pool_paths) - len(val)
        val_seen += val
        history = list(csv.DictReader(open(out / f"fold-{k}" / "history.csv")))
        assert fold["best_val_accuracy"] == max(float(r["val_accuracy"]) for r in history)
        assert fold["best_val_loss"] == min(float(r["val_loss"]) for r in history)
        run_metrics = json.loads((out / f"fold-{k}" / "metrics.json").read_text())
        assert fold["test_accuracy"] == run_metrics["accuracy"]
        assert fold["val_loss"] == pytest.approx(fold["best_val_loss"], abs=1e-4)  # model.keras = best val_loss
        for name in ("model.keras", "report.html", "labels.json"):
            assert (out / f"fold-{k}" / name).is_file()
    assert sorted(val_seen) == pool_paths
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_macro_f1"):
        values = [f[key] for f in saved["folds"]]
        assert saved["mean"][key] == pytest.approx(float(np.mean(values)), abs=1e-12)
        assert saved["std"][key] == pytest.approx(float(np.std(values)), abs=1e-12)
    ensemble = json.loads((out / "metrics.json").read_text())
    assert saved["ensemble_test"]["accuracy"] == ensemble["accuracy"] and ensemble["num_samples"] == len(test_paths)
    html = (out / "report.html").read_text()
    assert '<section id="cross-validation">' in html and "mean ± std" in html
