"""Issue #18's training toolbox: label smoothing, mixup/CutMix (images and cached features), weight EMA, gradient
clipping, mixed precision, and what the recipe, log and history say about them."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from helpers import make_image_folder, mini_recipe, train_killed_and_resumed
from scipy import stats

from inceptune.cli import main
from inceptune.errors import RecipeError
from inceptune.recipe import load_recipe, recipe_yaml
from inceptune.recipe.schema import MixConfig, Stage
from inceptune.regularize import mix_features, mix_images, mix_parameters
from inceptune.training import train
from inceptune.training.ema import EmaCallback, WeightEMA
from inceptune.training.model import check_precision, compile_stage, make_optimizer, precision_policy, stage_loss


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("toolbox") / "images", classes=3, per_class=10)


def _dense_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,), name="x")
    out = keras.layers.Dense(3, activation="softmax", name="head_output")(inp)
    return keras.Model(inp, out)


# === recipe keys ===

def test_recipe_keys_validate_round_trip_and_show(tmp_path, capsys):
    raw = {"data": {"dir": str(tmp_path), "mixup": {"alpha": 0.4}, "cutmix": True},
           "stages": [{"train": "head", "label_smoothing": 0.1, "clip_norm": 1, "ema": {"decay": 0.99}},
                      {"train": "all", "ema": True}],
           "precision": "mixed_float16"}
    recipe = load_recipe(raw)
    assert recipe.data.mixup == MixConfig(alpha=0.4, prob=1.0) and recipe.data.cutmix == MixConfig(alpha=1.0)
    assert recipe.stages[0].label_smoothing == 0.1 and recipe.stages[0].clip_norm == 1.0
    assert recipe.stages[0].ema.decay == 0.99 and recipe.stages[1].ema.decay == 0.999
    assert recipe.stages[1].ema is not None and recipe.stages[1].label_smoothing == 0.0
    assert recipe.precision == "mixed_float16"
    text = recipe_yaml(recipe)
    assert load_recipe(yaml.safe_load(text)) == recipe
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["recipe", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    for line in ("mixup: {alpha: 0.4, prob: 1.0}", "cutmix: {alpha: 1.0, prob: 1.0}", "label_smoothing: 0.1",
                 "clip_norm: 1.0", "ema: {decay: 0.99}", "precision: mixed_float16"):
        assert line in shown, line
    defaults = load_recipe({"data": {"dir": str(tmp_path)}, "stages": [{"train": "head"}]})
    assert (defaults.data.mixup, defaults.data.cutmix, defaults.precision) == (None, None, "float32")
    assert (defaults.stages[0].label_smoothing, defaults.stages[0].clip_norm, defaults.stages[0].ema) == (0, None, None)


@pytest.mark.parametrize("key,value,message", [
    ("stages[0].label_smoothing", 0.5, r"stages\[0\]\.label_smoothing: expected a number in \[0, 0.3\], got 0.5"),
    ("stages[0].clip_norm", 0, r"stages\[0\]\.clip_norm: expected a positive number, got 0"),
    ("stages[0].ema", {"decay": 1.0}, r"stages\[0\]\.ema\.decay: expected a number in \(0, 1\), got 1.0"),
    ("stages[0].ema", {"rate": 0.9}, r'stages\[0\]\.ema\.rate: unknown key "rate".*Allowed keys: decay'),
    ("data.mixup", {"alpha": -1}, r"data\.mixup\.alpha: expected a positive number, got -1"),
    ("data.cutmix", {"prob": 2}, r"data\.cutmix\.prob: expected a number in \[0, 1\], got 2"),
    ("data.mixup", {"alfa": 1}, r'data\.mixup\.alfa: unknown key "alfa".*did you mean "alpha"'),
    ("precision", "fp16", r'precision: unknown precision "fp16"\. Allowed: float32, mixed_float16, mixed_bfloat16'),
])
def test_bad_values_name_the_key(tmp_path, key, value, message):
    raw = {"data": {"dir": str(tmp_path)}, "stages": [{"train": "head"}]}
    section, _, name = key.rpartition(".")
    target = raw if not section else raw["data"] if section == "data" else raw["stages"][0]
    target[name] = value
    with pytest.raises(RecipeError, match=message) as info:
        load_recipe(raw)
    assert info.value.key.startswith(key)


def test_cli_bad_precision_exits_2_in_one_paragraph(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"data": {"dir": str(tmp_path)}, "stages": [{"train": "head"}]}))
    assert main(["recipe", "show", str(path), "--set", "precision=half"]) == 2
    err = capsys.readouterr().err
    assert "precision" in err and "mixed_float16" in err and "Traceback" not in err


# === label smoothing ===

def test_label_smoothing_changes_the_loss_exactly_as_keras_does():
    model = _dense_model()
    stage = Stage(name="s", train="head", label_smoothing=0.2)
    compile_stage(model, stage, soft_labels=True)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2, 0, 1]]
    got = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    p = model.predict(x, verbose=0)
    want = float(keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(y, p))
    by_hand = float(np.mean(-np.sum((0.8 * y + 0.2 / 3) * np.log(p), axis=1)))
    plain = float(keras.losses.CategoricalCrossentropy()(y, p))
    assert got == pytest.approx(want, rel=1e-5) and want == pytest.approx(by_hand, rel=1e-5)
    assert abs(got - plain) > 1e-3  # it did change the loss
    assert stage_loss(Stage(name="s", train="head"))[0] == "sparse_categorical_crossentropy"  # off: ids as before


# === mixup and CutMix ===

def _constant_images(n=6, size=8):
    values = np.linspace(10, 250, n).astype("float32")
    x = np.ones((n, size, size, 3), "float32") * values[:, None, None, None]
    return tf.constant(x), tf.constant(np.eye(n, dtype="float32")), values


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_batches_are_convex_combinations_whose_pixels_match_their_labels(kind):
    x, y, values = _constant_images()
    cfg = MixConfig(alpha=0.7, prob=1.0)
    for s in range(5):
        (xm, ym, wm), lam = mix_images(x, y, tf.constant([3, s], tf.int64), mixup=cfg if kind == "mixup" else None,
                                       cutmix=cfg if kind == "cutmix" else None, w=tf.ones(6) * 2.0)
        xm, ym = xm.numpy(), ym.numpy()
        np.testing.assert_allclose(ym.sum(axis=1), 1.0, atol=1e-6)
        assert (ym >= -1e-7).all() and 0.0 <= float(lam) <= 1.0
        # each image was one class's constant colour: its mean pixel is the label mix of those colours
        np.testing.assert_allclose(xm.mean(axis=(1, 2, 3)), ym @ values, rtol=1e-5)
        np.testing.assert_allclose(wm.numpy(), 2.0, rtol=1e-6)
        if kind == "cutmix":  # pasted pixels: every pixel is exactly one of the two images
            for i in range(6):
                assert set(np.unique(xm[i])) <= {values[k] for k in np.flatnonzero(ym[i] > 0)}


def test_mixup_weights_follow_beta_alpha_alpha_and_prob():
    x, y, _ = _constant_images(4)
    alpha = 0.4
    lams = [float(mix_images(x, y, tf.constant([1, s], tf.int64), mixup=MixConfig(alpha, 1.0))[1]) for s in range(300)]
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    assert stats.kstest(lams, stats.beta(2.0, 2.0).cdf).pvalue < 1e-6  # the test can tell another alpha apart
    feature_lams = [mix_parameters(7, s, 16, MixConfig(alpha, 1.0))[0] for s in range(300)]
    assert stats.kstest(feature_lams, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    half = [mix_parameters(7, s, 16, MixConfig(alpha, 0.5))[0] for s in range(400)]
    assert 0.4 < np.mean(np.array(half) == 1.0) < 0.6  # prob: the share of batches mixed


def test_feature_mixup_is_a_pure_function_of_seed_and_step():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5)).astype("float32"), np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]
    a, b = mix_features(x, y, 11, 2, MixConfig(0.5, 1.0)), mix_features(x, y, 11, 2, MixConfig(0.5, 1.0))
    np.testing.assert_array_equal(a[0], b[0])
    lam, perm = mix_parameters(11, 2, 8, MixConfig(0.5, 1.0))
    np.testing.assert_allclose(a[0], lam * x + (1 - lam) * x[perm], rtol=1e-6)
    np.testing.assert_allclose(a[1], lam * y + (1 - lam) * y[perm], rtol=1e-6)
    assert mix_features(x, y, 11, 2, None)[0] is x


# === EMA and clipping ===

def test_ema_equals_a_hand_computed_ema_after_3_steps():
    model = _dense_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    decay = 0.9
    ema = WeightEMA(model.trainable_variables, decay)
    seen = [[v.numpy().copy() for v in model.trainable_variables]]

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([v.numpy().copy() for v in model.trainable_variables])

    x = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
    model.fit(x, np.array([0, 1, 2, 0, 1, 2]), batch_size=2, epochs=1, shuffle=False, verbose=0,
              callbacks=[EmaCallback(ema), Record()])
    assert len(seen) == 4
    want = seen[0]
    for step in seen[1:]:
        want = [decay * e + (1 - decay) * w for e, w in zip(want, step)]
    for got, expected, raw in zip(ema.values(), want, seen[-1]):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        assert not np.allclose(got, raw)  # the average lags the weights
    with ema.applied():
        np.testing.assert_allclose(model.trainable_variables[0].numpy(), want[0], rtol=1e-6)
    np.testing.assert_array_equal(model.trainable_variables[0].numpy(), seen[-1][0])  # raw weights are back


def test_clip_norm_rescales_the_global_gradient_norm():
    opt = make_optimizer(Stage(name="s", train="head", optimizer="sgd", momentum=0.0, lr=1.0, clip_norm=0.5))
    a, b = keras.Variable(np.zeros(3, "float32")), keras.Variable(np.zeros(2, "float32"))
    ga, gb = np.array([3.0, 0.0, 4.0], "float32"), np.array([0.0, 12.0], "float32")  # global norm 13
    opt.apply([tf.constant(ga), tf.constant(gb)], [a, b])
    np.testing.assert_allclose(a.numpy(), -ga * 0.5 / 13, rtol=1e-5)
    np.testing.assert_allclose(b.numpy(), -gb * 0.5 / 13, rtol=1e-5)
    assert make_optimizer(Stage(name="s", train="head")).global_clipnorm is None


# === precision ===

def test_mixed_float16_runs_on_this_cpu_with_a_float32_output_and_loss_scaling():
    """On a CPU, TensorFlow has float16 kernels: the probe step runs, and the note says it brings no speed-up."""
    from inceptune.recipe.schema import ModelConfig
    from inceptune.training.model import build_model

    note = check_precision("mixed_float16")
    if tf.config.list_logical_devices("GPU"):
        assert note is None
    else:
        assert "runs on this CPU" in note and "no speed-up" in note
    with precision_policy("mixed_float16"):
        model = build_model(ModelConfig(backbone="inception_mini", weights=None), 3, 32)
    assert keras.config.dtype_policy().name == "float32"  # the global policy came back
    assert model.get_layer("head_output").compute_dtype == "float32" and model.outputs[0].dtype == "float32"
    assert model.get_layer("mixed0").compute_dtype == "float16"
    _, opt = compile_stage(model, Stage(name="s", train="head"))
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    opt.build(model.trainable_variables)
    names = [v.path for v in opt.variables]  # what save_optimizer checkpoints: the loss scale and Adam's state
    assert "loss_scale_optimizer/dynamic_scale" in names
    assert {v.path for v in opt.inner_optimizer.variables} <= set(names)


def test_a_policy_the_device_cannot_run_is_refused_naming_the_key(monkeypatch):
    def no_kernel(self, *a, **k):
        raise tf.errors.NotFoundError(None, None, "No registered 'Conv2D' OpKernel for 'CPU' devices compatible "
                                                  "with node {{node conv2d}} T=DT_BFLOAT16")

    monkeypatch.setattr(keras.Model, "train_on_batch", no_kernel)
    with pytest.raises(RecipeError, match=r"precision: mixed_bfloat16 cannot run on this machine's devices.*"
                                          r"NotFoundError.*HINT: use precision: float32") as info:
        check_precision("mixed_bfloat16")
    assert info.value.key == "precision"
    assert keras.config.dtype_policy().name == "float32"


# === in a run ===

def _toolbox_recipe(data_dir, epochs=3):
    recipe = mini_recipe(data_dir, stages=[
        {"name": "head", "train": "head", "epochs": epochs, "lr": 3e-2, "label_smoothing": 0.1,
         "ema": {"decay": 0.8}, "clip_norm": 5.0}])
    recipe["data"].update(batch_size=8, mixup={"alpha": 0.4})
    recipe["cache"] = "auto"
    recipe["calibrate"] = "none"
    return recipe


def _model_weights(run):
    return [v.numpy() for v in run.model.weights]


def test_cached_feature_mixup_with_ema_trains_and_resumes_exactly(small_dir, tmp_path):
    recipe = _toolbox_recipe(small_dir)
    full = train(recipe, out=tmp_path / "full", verbose=False)
    log = (full.dir / "log.txt").read_text()
    assert "mixup alpha 0.4 prob 1 on the cached features at the cut (manifold mixup" in log
    assert "label smoothing 0.1" in log and "EMA of the weights, decay 0.8" in log
    assert "gradient clipping at global norm 5" in log
    rows = list(csv.DictReader(open(full.dir / "history.csv")))
    assert [r["cached"] for r in rows] == ["1", "1", "1"]
    assert all(float(r["val_ema_loss"]) > 0 and r["val_ema_accuracy"] for r in rows)
    assert len({r["loss"] for r in rows}) == 3

    train(recipe, out=tmp_path / "cut", verbose=False, stop_after_epochs=2)
    state = json.loads((tmp_path / "cut" / "checkpoints" / "state.json").read_text())
    assert state["ema_weights"] == "epoch-2.ema.weights.npz"
    assert (tmp_path / "cut" / "checkpoints" / state["ema_weights"]).exists()
    resumed = train(None, out=tmp_path / "cut", resume=True, verbose=False)
    assert [r["loss"] for r in resumed.history] == [float(r["loss"]) for r in rows]
    assert [r["val_ema_loss"] for r in resumed.history] == [float(r["val_ema_loss"]) for r in rows]
    for a, b in zip(_model_weights(full), _model_weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert full.history[-1]["val_ema_loss"] != full.history[-1]["val_loss"]


@pytest.mark.slow
def test_resume_after_sigkill_with_ema_and_image_mixup_equals_the_uninterrupted_run(small_dir, tmp_path):
    recipe = mini_recipe(small_dir, stages=[
        {"name": "head", "train": "head", "epochs": 2, "lr": 1e-2, "ema": {"decay": 0.9}},
        {"name": "all", "train": "all", "epochs": 4, "lr": 3e-3, "ema": {"decay": 0.7}, "label_smoothing": 0.1},
    ])
    recipe["data"].update(batch_size=8, mixup={"alpha": 0.4, "prob": 0.7}, cutmix={"alpha": 1.0, "prob": 0.7})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _, killed, state = train_killed_and_resumed(path, tmp_path, kill_after="all,2,", timeout=400)  # epoch 3
    assert state["stage"] == 1 and 2 <= state["epoch"] < 4 and state["ema_weights"]
    a = keras.saving.load_model(tmp_path / "full" / "model.keras", safe_mode=True)
    b = keras.saving.load_model(killed / "model.keras", safe_mode=True)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=0, atol=1e-6, err_msg=va.path)
    ha = list(csv.DictReader(open(tmp_path / "full" / "history.csv")))
    hb = list(csv.DictReader(open(killed / "history.csv")))
    assert [(r["stage"], r["epoch"]) for r in hb] == [(r["stage"], r["epoch"]) for r in ha]
    for ra, rb in zip(ha, hb):
        for k in ("loss", "val_loss", "val_ema_loss"):
            assert float(ra[k]) == pytest.approx(float(rb[k]), abs=1e-6), (ra["stage"], ra["epoch"], k)
    assert "mixup alpha 0.4 prob 0.7 on images" in (killed / "log.txt").read_text()


@pytest.mark.slow
def test_a_mixed_float16_run_trains_on_this_cpu(small_dir, tmp_path):
    recipe = mini_recipe(small_dir, stages=[{"name": "head", "train": "head", "epochs": 1, "lr": 1e-2},
                                            {"name": "all", "train": "all", "epochs": 2, "lr": 3e-3}])
    recipe["precision"] = "mixed_float16"
    recipe["cache"] = "auto"
    run = train(recipe, out=tmp_path / "run", verbose=False)
    assert run.model.get_layer("mixed0").compute_dtype == "float16"
    assert all(np.isfinite(r["loss"]) for r in run.history)
    assert "precision=mixed_float16" in (run.dir / "log.txt").read_text()
    loaded = keras.saving.load_model(run.dir / "model.keras", safe_mode=True)
    assert loaded.outputs[0].dtype == "float32"
