"""The learning-rate range test (`inceptune lr-find`, `it.lr_find`; module `inceptune.lr_range`)."""

import csv
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import make_image_folder, mini_recipe

import inceptune as it
from inceptune.cli import main
from inceptune.lr_range import lr_sweep, smooth_losses, suggest
from inceptune.training import train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("lrf") / "images", classes=3, per_class=12)


def _recipe(data_dir, tmp_path, **stage0):
    recipe = mini_recipe(data_dir, stages=[{"name": "head", "train": "head", "epochs": 2, "lr": 1e-2, **stage0},
                                           {"name": "all", "train": "all", "epochs": 2, "lr": 3e-3}])
    recipe["data"]["batch_size"] = 8
    recipe["cache"] = "auto"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_sweep_smoothing_and_suggestions_by_hand():
    lrs = lr_sweep(1e-6, 1.0, 61)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.diff(np.log10(lrs)), 0.1)  # exponential: 10 steps a decade
    s = smooth_losses([1.0, 2.0, 3.0], beta=0.5)
    np.testing.assert_allclose(s, [1.0, (0.25 + 1.0) / 0.75, (0.625 + 1.5) / 0.875])
    # a curve falling fastest at 1e-3, lowest at 1e-2, diverging after
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(2.5 * (x + 3)) + np.where(x > -2, 8 * (x + 2) ** 2, 0)
    steepest, div10, at_min = suggest(lrs, losses)
    assert steepest == pytest.approx(1e-3, rel=0.3)
    assert at_min == pytest.approx(lrs[np.argmin(losses)]) and div10 == pytest.approx(at_min / 10)


def test_cli_lr_find_on_a_cached_stage_writes_png_and_csv(data_dir, tmp_path, capsys):
    path = _recipe(data_dir, tmp_path)
    out = tmp_path / "lrf"
    temporary = set(Path(tempfile.gettempdir()).glob("inceptune-lr-find-*"))
    assert main(["lr-find", str(path), "--stage", "head", "--out", str(out), "--steps", "60", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "on cached features at 'head_pool'" in text
    assert "steepest descent" in text and "minimum/10" in text
    rows = list(csv.DictReader(open(out / "lr_find.csv")))
    assert 20 <= len(rows) <= 60 and list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-7)
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(Path(tempfile.gettempdir()).glob("inceptune-lr-find-*")) == temporary  # its scratch run is gone


@pytest.mark.parametrize("args,message", [
    (["--stage", "top"], "--stage: the recipe has no stage 'top'. Stages: head, all."),
    (["--stage", "5"], "--stage: the recipe has 2 stage(s), numbered 0 to 1, got 5."),
    (["--from", "nowhere"], "--from: nowhere has no checkpoints/state.json"),
    (["--steps", "1"], "--steps: expected a whole number >= 2, got 1."),
])
def test_cli_lr_find_bad_options_exit_2_in_one_paragraph(data_dir, tmp_path, capsys, args, message):
    assert main(["lr-find", str(_recipe(data_dir, tmp_path)), *args]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err


def _tree_digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_the_suggestion_trains_better_than_100_times_it_and_no_run_changes(data_dir, tmp_path):
    path = _recipe(data_dir, tmp_path)
    run = train(str(path), out=tmp_path / "run", overrides=["stages[1].epochs=0"], verbose=False)
    before = _tree_digest(run.dir)
    result = it.lr_find(str(path), "all", from_run=run.dir, out=tmp_path / "lrf", verbose=False)
    assert _tree_digest(run.dir) == before  # the run was only read
    assert not result.cached and result.steepest < result.loss_minimum_lr
    losses = {}
    for name, lr in (("suggested", result.steepest), ("x100", 100 * result.steepest)):
        r = train(str(path), out=tmp_path / name, verbose=False,
                  overrides=["stages[0].epochs=0", f"stages[1].lr={lr}", "stages[1].epochs=2", "data.mixup=null",
                             "calibrate=none"])
        losses[name] = r.history[-1]["loss"]
    assert losses["suggested"] < losses["x100"], (result.steepest, losses)
