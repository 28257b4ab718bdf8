import csv
import json
import os
import stat
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from helpers import make_image_folder, mini_recipe, train_killed_and_resumed

from inceptune.architectures import build_inception_mini
from inceptune.errors import InceptuneError, RecipeError
from inceptune.heads import build_classifier
from inceptune.recipe import load_recipe
from inceptune.schedules import ScheduleSpec, lr_at
from inceptune.training import compile_stage, train

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=4, per_class=60)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("small") / "images", classes=3, per_class=20)


def test_end_to_end_two_stages(images_dir, tmp_path):
    run = train(mini_recipe(images_dir), out=tmp_path / "run", verbose=False)
    assert run.metrics["accuracy"] >= 0.9
    for name in ("recipe.yaml", "manifest.csv", "skipped.csv", "labels.json", "history.csv", "model.keras",
                 "metrics.json", "report.html", "log.txt"):
        assert (run.dir / name).exists(), name
    assert load_recipe(run.dir / "recipe.yaml").stages[1].name == "all"
    rows = list(csv.DictReader(open(run.dir / "history.csv")))
    assert [(r["stage"], r["epoch"]) for r in rows] == [("head", "1"), ("head", "2"), ("all", "1"), ("all", "2"),
                                                          ("all", "3")]
    assert all(float(r["lr"]) > 0 and r["val_loss"] for r in rows)
    assert json.loads((run.dir / "labels.json").read_text()) == ["class_0", "class_1", "class_2", "class_3"]
    assert json.loads((run.dir / "metrics.json").read_text())["accuracy"] == run.metrics["accuracy"]
    loaded = keras.saving.load_model(run.dir / "model.keras", safe_mode=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), run.model(x), atol=1e-6)
    assert any((run.dir / "tensorboard").rglob("*"))
    # a handful of validation images is too few for a temperature: skipped, said so, nothing half-calibrated
    num_val = sum(1 for r in csv.DictReader(open(run.dir / "manifest.csv")) if r["split"] == "val")
    assert 0 < num_val < 100 and not (run.dir / "calibration.json").exists()
    assert (f"calibration: skipped: {num_val} validation images, fewer than the 100 a reliable temperature needs"
            in " ".join((run.dir / "log.txt").read_text().split()))
    assert "temperature_scaling" not in run.metrics and loaded.layers[-1].name == "head_output"
    # never overwritten without --force
    with pytest.raises(InceptuneError, match="already exists and is not empty.*--resume.*--force"):
        train(mini_recipe(images_dir), out=run.dir, verbose=False)


def _model():
    keras.utils.set_random_seed(0)
    return build_classifier(build_inception_mini(), 3)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32"), rng.integers(0, 3, 16)


def _stage(**kw):
    base = {"name": "s", "train": "all", "epochs": 1, "lr": 1e-2}
    base.update(kw)
    return load_recipe({"data": {"dir": "x"}, "stages": [base]}).stages[0]


def test_frozen_variables_bit_identical_and_bn_statistics_fixed():
    model = _model()
    stage = _stage(train="from:mixed2")
    compile_stage(model, stage, batchnorm="frozen")
    before = {v.path: v.numpy().copy() for v in model.weights}
    trainable = {v.path for v in model.trainable_weights}
    x, y = _batch()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = {v.path: v.numpy() for v in model.weights}
    for path, value in before.items():
        if path in trainable:
            assert not np.array_equal(value, after[path]), path
        else:
            assert np.array_equal(value, after[path]), path  # frozen kernels AND every BN moving statistic
    assert any("moving_mean" in p for p in before if p not in trainable)


def _first_step_deltas(lr_mult):
    model = _model()
    compile_stage(model, _stage(train="all", lr=1e-3, lr_mult=lr_mult), batchnorm="frozen")
    before = {v.path: v.numpy().copy() for v in model.trainable_weights}
    x, y = _batch()
    model.train_on_batch(x, y)
    return {p: model.get_layer(p.split("/")[0]).name and
            next(v for v in model.trainable_weights if v.path == p).numpy() - b for p, b in before.items()}


def test_lr_mult_zero_and_tenth():
    base = _first_step_deltas({})
    tenth = _first_step_deltas({"block:mixed3": 0.1})
    zero = _first_step_deltas({"block:mixed3": 0})
    mixed3 = [p for p in base if p.split("/")[0].startswith("mixed3")]
    others = [p for p in base if p not in mixed3]
    assert mixed3 and others
    for p in mixed3:
        # Adam: 1/10 the step (atol: float32 rounding of w - dw)
        np.testing.assert_allclose(tenth[p], 0.1 * base[p], rtol=1e-3, atol=5e-8)
        assert not np.any(zero[p])  # untouched
        assert np.any(base[p])
    for p in others:
        np.testing.assert_allclose(tenth[p], base[p], rtol=1e-5, atol=5e-8)
        np.testing.assert_allclose(zero[p], base[p], rtol=1e-5, atol=5e-8)


def test_schedules_are_pure_functions():
    cos = ScheduleSpec(1e-3, "cosine", total_steps=100)
    assert lr_at(0, cos) == pytest.approx(1e-3)
    assert lr_at(50, cos) == pytest.approx(5e-4)
    assert lr_at(100, cos) == pytest.approx(0.0)
    warm = ScheduleSpec(1e-3, "cosine", total_steps=110, warmup_steps=10)
    assert [lr_at(i, warm) for i in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])
    assert lr_at(60, warm) == pytest.approx(5e-4)
    exp = ScheduleSpec(1e-3, "exponential", total_steps=5000, decay_steps=1000, decay_rate=0.9)
    assert lr_at(1000, exp) == pytest.approx(9e-4)
    assert lr_at(2500, exp) == pytest.approx(1e-3 * 0.9 ** 2.5)
    # the same numbers as Keras's ExponentialDecay
    keras_exp = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=1000, decay_rate=0.9)
    assert lr_at(2500, exp) == pytest.approx(float(keras_exp(2500)), rel=1e-6)
    assert lr_at(7, ScheduleSpec(1e-3, "constant", total_steps=10)) == 1e-3


def test_selector_matching_nothing_is_an_error():
    model = _model()
    with pytest.raises(RecipeError, match="matches no layer"):
        compile_stage(model, _stage(train="name:nothing_*"), batchnorm="frozen")
    with pytest.raises(RecipeError, match="nothing would train"):
        compile_stage(model, _stage(train="type:BatchNormalization"), batchnorm="frozen")


def _write_recipe(path, recipe):
    path.write_text(yaml.safe_dump(recipe))
    return path


def _weights(run_dir):
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    return {v.path: v.numpy() for v in model.weights}


def test_resume_after_sigkill_matches_uninterrupted(small_dir, tmp_path):
    recipe = mini_recipe(small_dir, stages=[
        {"name": "head", "train": "head", "epochs": 2, "lr": 1e-2},
        {"name": "all", "train": "all", "epochs": 5, "lr": 3e-3, "schedule": "cosine"},
    ])
    recipe["data"]["batch_size"] = 8
    path = _write_recipe(tmp_path / "recipe.yaml", recipe)
    _, killed_dir, state = train_killed_and_resumed(path, tmp_path, kill_after="all,1,")  # inside epoch 2
    assert state["stage"] == 1 and 1 <= state["epoch"] < 5
    a, b = _weights(tmp_path / "full"), _weights(killed_dir)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
    rows = list(csv.DictReader(open(killed_dir / "history.csv")))
    assert [(r["stage"], r["epoch"]) for r in rows][-5:] == [("all", str(i)) for i in range(1, 6)]


EXAMPLE_OVERRIDES = {
    "feature_extractor.yaml": [],
    "first100_then_100_200.yaml": ["stages[0].train=!first:20", "stages[1].train=head, first:40 & !first:20"],
    "freeze_mixed.yaml": [],
    "staged_top_blocks.yaml": ["stages[1].train=head,from:mixed3"],
    "exponential_decay.yaml": ["stages[0].decay_steps=5"],
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_OVERRIDES))
def test_examples_run_on_inception_mini(name, small_dir, tmp_path):
    recipe = load_recipe(EXAMPLES / name, [f"data.dir={small_dir}", "model.backbone=inception_mini",
                                           "model.weights=none", "model.image_size=32", "model.head.dense=[8]",
                                           "data.batch_size=16", "cache=off"]
                         + [f"stages[{i}].epochs=1" for i in range(len(load_recipe(EXAMPLES / name).stages))]
                         + EXAMPLE_OVERRIDES[name])
    run = train(recipe, out=tmp_path / "run", verbose=False)
    rows = list(csv.DictReader(open(run.dir / "history.csv")))
    assert len(rows) == len(recipe.stages)
    assert (run.dir / "model.keras").exists()


def test_two_stage_recipe_with_a_skip_and_an_inserted_block(small_dir, tmp_path):
    recipe = mini_recipe(small_dir, stages=[
        {"name": "head", "train": "head", "epochs": 1, "lr": 1e-2},
        {"name": "skip", "train": "head,name:skip_*,name:*_gate", "epochs": 2, "lr": 1e-2},
    ])
    recipe["model"]["skips"] = [{"from": "mixed1", "to": "mixed3"}]
    recipe["model"]["insert"] = [{"after": "mixed2", "block": "residual_inception", "params": {"filters": 4}}]
    run = train(recipe, out=tmp_path / "run", verbose=False)
    names = [l.name for l in run.model.layers]
    assert "skip_mixed1_mixed3_proj" in names and "skip_mixed1_mixed3_add" in names
    assert any(n.endswith("_gate") for n in names)
    loaded = keras.saving.load_model(run.dir / "model.keras", safe_mode=True)
    proj = loaded.get_layer("skip_mixed1_mixed3_proj")
    assert np.any(proj.kernel.numpy() != 0)  # zero-initialised, then trained in stage 2
    from inceptune.architectures import block_map

    bm = block_map(run.model)
    assert "skip_mixed1_mixed3_add" not in bm.head_layers and bm.layer_block["skip_mixed1_mixed3_add"] == "mixed3"


def test_failed_run_leaves_no_half_written_folder(tmp_path):
    from inceptune.errors import DataError

    recipe = mini_recipe(tmp_path / "missing-images")
    with pytest.raises(DataError, match="does not exist"):
        train(recipe, out=tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError):
        train(recipe, out=tmp_path / "mine", verbose=False)
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_checkpoints_store_a_base_then_only_what_changed(small_dir, tmp_path):
    """A head stage's epoch checkpoints hold the head's variables only; loading base + epoch file restores
    exactly the model's weights."""
    recipe = mini_recipe(small_dir, stages=[{"name": "head", "train": "head", "epochs": 2, "lr": 1e-2}])
    run = train(recipe, out=tmp_path / "run", verbose=False)
    ckpt = run.dir / "checkpoints"
    state = json.loads((ckpt / "state.json").read_text())
    base, last = np.load(ckpt / state["base"]), np.load(ckpt / state["weights"])
    weights = run.model.weights
    assert len(base.files) == len(weights)
    head_positions = {i for i, v in enumerate(weights) if v.path.startswith("head_")}
    stored = {int(k[1:]) for k in last.files}
    assert stored and stored <= head_positions  # the frozen backbone is not written again
    # the trainer's reader restores base + changes into a fresh model
    from inceptune.training import CheckpointWeights

    model = build_classifier(build_inception_mini(), len(run.labels), {"dense": [], "dropout": 0.0})
    CheckpointWeights(model, ckpt, state["base"]).load(state["weights"])
    expected = {i: (last[f"v{i}"] if i in stored else base[f"v{i}"]) for i in range(len(weights))}
    for i, v in enumerate(model.weights):
        np.testing.assert_array_equal(v.numpy(), expected[i])
    # the epoch file differs from the base in every variable it holds
    assert all(not np.array_equal(last[f"v{i}"], base[f"v{i}"]) for i in stored)
    # the optimizer state of a stage's last epoch is never read back (a next stage starts a fresh optimizer):
    # the last epoch's is not written, and nothing names one
    assert state["optimizer"] is None and not (ckpt / "epoch-2.optimizer.npz").exists()
    assert sorted(p.name for p in ckpt.iterdir()) == sorted({state["base"], state["weights"], state["best_weights"],
                                                             "state.json"})


def test_every_file_of_a_run_is_readable_by_others_under_umask_022(small_dir, tmp_path):
    old = os.umask(0o022)
    try:
        run = train(mini_recipe(small_dir, stages=[{"name": "head", "train": "head", "epochs": 1, "lr": 1e-2}]),
                    out=tmp_path / "run", verbose=False)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(run.dir)): stat.S_IMODE(p.stat().st_mode) for p in run.dir.rglob("*")}
    assert {"model.keras", "report.html", "metrics.json", "recipe.yaml", "checkpoints/state.json"} <= set(modes)
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o755 if (run.dir / name).is_dir() else 0o644)}
    assert wrong == {}


@pytest.mark.parametrize("lr", [1e-2, 3.0])
def test_the_kept_model_is_the_best_epochs_and_loaded_only_when_the_model_lacks_it(small_dir, tmp_path, lr,
                                                                                   monkeypatch):
    """`model.keras` holds the best epoch's weights: read back from its checkpoint when an earlier epoch was best
    (a learning rate of 3 overshoots in its second epoch), not read at all when the last epoch was."""
    from inceptune.training import CheckpointWeights

    loads = []
    real_load = CheckpointWeights.load
    monkeypatch.setattr(CheckpointWeights, "load", lambda self, name: (loads.append(name), real_load(self, name)))
    recipe = mini_recipe(small_dir, stages=[{"name": "head", "train": "head", "epochs": 2, "lr": lr}])
    run = train(recipe, out=tmp_path / "run", verbose=False)
    ckpt = run.dir / "checkpoints"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["best_epoch"] == (2 if lr == 1e-2 else 1)  # both branches are exercised
    assert loads == ([] if state["best_epoch"] == 2 else [state["best_weights"]])
    model = build_classifier(build_inception_mini(), len(run.labels), {"dense": [], "dropout": 0.0})
    real_load(CheckpointWeights(model, ckpt, state["base"]), state["best_weights"])
    kept = keras.saving.load_model(run.dir / "model.keras", safe_mode=True)
    for want, got in zip(model.weights, kept.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
