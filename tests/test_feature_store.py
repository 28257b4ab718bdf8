"""The per-image feature store (feature_store.py) and the cached stage's compiled functions (cache.py).

Image forwards are counted where every forward over images goes: `inference.compiled_forward`, which the feature
cache's image passes and `predict_proba` (cross-validation's fallback, evaluation) both call. Only calls on
image-shaped inputs count (the cached suffix's forwards take feature maps).
"""

import json

import numpy as np
import pytest
from helpers import make_image_folder, mini_recipe
from PIL import Image

from inceptune import cache as C
from inceptune import cached_stage as S
from inceptune import inference
from inceptune.cv import cross_validate
from inceptune.training import train

SIZE = 32
HEAD = [{"name": "head", "train": "head", "epochs": 2, "lr": 1e-2}]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INCEPTUNE_CACHE_DIR", str(tmp_path / "feature-cache"))


@pytest.fixture
def forwards(monkeypatch):
    """Counts the images run through any compiled forward of an image model."""
    counted = {"images": 0}
    real = inference.compiled_forward

    def counting(model):
        fn = real(model)
        if tuple(model.inputs[0].shape[1:]) != (SIZE, SIZE, 3):
            return fn

        def forward(x):
            counted["images"] += len(x)
            return fn(x)
        return forward

    monkeypatch.setattr(inference, "compiled_forward", counting)
    monkeypatch.setattr(C, "compiled_forward", counting)
    return counted


def _add_images(folder, n, seed):
    rng = np.random.default_rng(seed)
    added = []
    for i in range(n):
        path = folder / f"class_{i % 3}" / f"added_{seed}_{i}.png"
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        added.append(path)
    return added


def _log(run_dir):
    return (run_dir / "log.txt").read_text()


def test_cv_computes_each_image_once(tmp_path, forwards):
    images = make_image_folder(tmp_path / "images", classes=3, per_class=16)
    recipe = mini_recipe(images, stages=HEAD, cache="auto")
    result = cross_validate(recipe, 3, out=tmp_path / "cv", verbose=False)
    rows = (tmp_path / "cv" / "manifest.csv").read_text().splitlines()[1:]
    assert forwards["images"] == len(rows) == 48  # every image once, over the three folds
    logs = [_log(tmp_path / "cv" / f"fold-{k}") for k in range(3)]
    assert "cache miss: computed 48 feature maps" in logs[0]
    for log in logs[1:]:
        assert "cache miss" not in log and "were stored by earlier runs (other splits)" in log
        assert "no image pass" in log
    # the folds' validation scores (from the cached features) are those of the saved models on the images
    from inceptune.inference import predict_proba
    from inceptune.models import load_model

    fold = result["folds"][0]
    manifest = (tmp_path / "cv" / "folds" / "fold-0.csv").read_text().splitlines()
    header = manifest[0].split(",")
    val = [dict(zip(header, line.split(","))) for line in manifest[1:]]
    val = [r for r in val if r["split"] == "val"]
    model = load_model(tmp_path / "cv" / "fold-0" / "model.keras")
    x = np.stack([np.asarray(Image.open(r["path"]).convert("RGB"), dtype="float32") for r in val])
    labels = sorted({r["label"] for r in val})
    y = np.array([labels.index(r["label"]) for r in val])
    acc = float(np.mean(np.argmax(predict_proba(model, x), axis=1) == y))
    assert fold["val_accuracy"] == pytest.approx(acc)


def test_added_images_cost_one_forward_each_and_a_resplit_none(tmp_path, forwards, monkeypatch):
    images = make_image_folder(tmp_path / "images", classes=3, per_class=16)
    recipe = mini_recipe(images, stages=HEAD, cache="auto")
    train(recipe, out=tmp_path / "first", verbose=False)
    assert forwards["images"] == 48
    added = _add_images(images, 5, seed=1)
    forwards["images"] = 0
    train(recipe, out=tmp_path / "added", verbose=False)
    assert forwards["images"] == len(added)  # the 48 stored images are not run again
    assert "cache miss: computed 5 feature maps" in _log(tmp_path / "added")
    assert "48 already stored" in _log(tmp_path / "added")

    # another split of the same images: assembled from the store, no forward, and the same result as a run that
    # computes every feature itself
    resplit = dict(recipe, data=dict(recipe["data"], split={"val": 0.3, "test": 0.2, "seed": 7}))
    forwards["images"] = 0
    stored = train(resplit, out=tmp_path / "resplit", verbose=False)
    assert forwards["images"] == 0 and "no image pass" in _log(tmp_path / "resplit")
    monkeypatch.setenv("INCEPTUNE_CACHE_DIR", str(tmp_path / "fresh-cache"))
    fresh = train(resplit, out=tmp_path / "resplit-fresh", verbose=False)
    assert forwards["images"] == 53
    assert stored.history == [dict(h, seconds=s["seconds"]) for h, s in zip(fresh.history, stored.history)]
    got = json.loads((tmp_path / "resplit" / "metrics.json").read_text())
    want = json.loads((tmp_path / "resplit-fresh" / "metrics.json").read_text())
    assert got["confusion_matrix"] == want["confusion_matrix"] and got["log_loss"] == want["log_loss"]


def test_a_killed_pass_leaves_no_shard_that_is_read(tmp_path):
    """A shard without its JSON (the pass was killed after the rows, before the commit) is never indexed, and the
    next writer removes it."""
    from inceptune.feature_store import FeatureStore

    store = FeatureStore(tmp_path / "store")
    done = store.new_shard()
    np.save(done, np.arange(6, dtype="float32").reshape(3, 2))
    FeatureStore.commit(done, ["a", "b", "c"])
    killed = store.new_shard()
    np.save(killed, np.zeros((1, 2), "float32"))
    assert store.index() == {"a": (done.name, 0), "b": (done.name, 1), "c": (done.name, 2)}
    store.remove_incomplete()
    assert not killed.exists() and done.exists()
    folder = store.assemble("set", {"train-0": ["c", "a"]}, {"files": {"train": ["train-0.npy"]}})
    assert np.load(folder / "train-0.npy").tolist() == [[4.0, 5.0], [0.0, 1.0]]
    with pytest.raises(KeyError):
        store.assemble("other", {"train-0": ["missing"]}, {})
    assert not (store.folder / "sets" / "other").exists()


def _fitters(monkeypatch):
    made = []
    real = C.CacheContext.fitter

    def fitter(self, *args, **kwargs):
        made.append(real(self, *args, **kwargs))
        return made[-1]

    monkeypatch.setattr(C.CacheContext, "fitter", fitter)
    return made


@pytest.mark.parametrize("jit", [False, True])
def test_a_cached_stage_traces_its_step_once(tmp_path, monkeypatch, jit):
    """Three epochs of 30 training images in batches of 8 (the last batch 6): the training step is traced once
    for the stage (with XLA: one XLA program, the last batch padded into it: no graph of its own);
    the validation and test predictions at the end reuse the stage's suffix and one compiled forward, traced
    once for both."""
    if jit:
        monkeypatch.setattr(S, "JIT_MIN_PARAMS", 0)
        monkeypatch.setattr(S, "jit_min_epochs", lambda: (1, 1))
    else:
        monkeypatch.setattr(S, "jit_min_epochs", lambda: (100, 100))
    made = _fitters(monkeypatch)
    suffixes = []
    real_suffix = C.suffix_model
    for module in (S, C):  # the stage's suffix, and any the final predictions would build
        monkeypatch.setattr(module, "suffix_model", lambda *a: suffixes.append(real_suffix(*a)) or suffixes[-1])
    images = make_image_folder(tmp_path / "images", classes=3, per_class=20)
    recipe = mini_recipe(images, stages=[dict(HEAD[0], epochs=3)], cache="auto",
                         data=dict(mini_recipe(images)["data"], batch_size=8,
                                   split={"val": 0.25, "test": 0.25, "seed": 0}))
    run = train(recipe, out=tmp_path / "run", verbose=False)
    (fitter,) = made
    assert len(run.history) == 3 and all(h["cached"] for h in run.history)
    assert len(fitter.ctx.data.paths("train")) % 8 != 0  # there is a partial last batch
    assert fitter.jit is jit
    assert fitter.traces == 1
    if jit:
        assert fitter.pads and fitter._step is None
        assert fitter._full_step.experimental_get_tracing_count() == 1
    else:
        assert fitter._step.experimental_get_tracing_count() == 1
    assert len(suffixes) == 1  # the final passes built no other suffix
    forward = inference.compiled_forward(fitter.suffix)
    # every epoch's validation, then the final validation and test predictions: one forward, traced once; the
    # loss and metrics of validation in a function of their own, so Keras's test_step is never traced
    assert forward.experimental_get_tracing_count() == 1
    assert fitter._score.experimental_get_tracing_count() == 1
    assert fitter._test_step is None
    assert run.val_probs is not None and len(run.val_probs) == len(fitter.ctx.data.paths("val"))
    assert "test predictions from the cached features at 'head_pool'" in _log(run.dir)
    # the epoch lines time the epochs only: the feature pass is logged before epoch 1
    log = _log(run.dir)
    assert log.index("cache miss") < log.index("head epoch 1/3")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_validation_through_the_forward_computes_what_test_step_does(tmp_path, monkeypatch, smoothing):
    """Validation as the compiled forward plus a function of the loss and metrics logs what Keras's test_step
    logs (two stages, a partial last validation batch, with and without label smoothing's one-hot targets),
    and a suffix with an activity regularizer (a loss added while it is called) keeps test_step."""
    images = make_image_folder(tmp_path / "images", classes=3, per_class=20)
    stages = [dict(HEAD[0], epochs=2, label_smoothing=smoothing), dict(HEAD[0], name="again", epochs=1, lr=1e-4)]
    recipe = mini_recipe(images, stages=stages, cache="auto",
                         data=dict(mini_recipe(images)["data"], batch_size=8,
                                   split={"val": 0.3, "test": 0.2, "seed": 0}))
    runs, made, scores_apart = {}, _fitters(monkeypatch), S.scores_apart
    for apart in (True, False):
        monkeypatch.setattr(S, "scores_apart", lambda suffix, apart=apart: apart)
        made.clear()
        runs[apart] = train(recipe, out=tmp_path / f"run-{apart}", verbose=False)
        assert all((f._score is not None) is apart for f in made)
    assert len(made[0].ctx.data.paths("val")) % 8 != 0  # a partial last validation batch
    for a, b in zip(runs[True].history, runs[False].history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    np.testing.assert_allclose(runs[True].val_probs, runs[False].val_probs, rtol=1e-6, atol=1e-7)

    import keras

    suffix = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activity_regularizer="l2")])
    assert not scores_apart(suffix)
    assert scores_apart(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))


@pytest.mark.parametrize("balance", ["none", "class-weight"])
def test_the_padded_last_batch_computes_what_the_unpadded_one_does(tmp_path, monkeypatch, balance):
    """Under XLA the last, smaller batch (30 training images in batches of 8: 6 rows) is filled up to 8 rows
    with zero weights and run through the full batch's program. Against the same stage with XLA off (every
    batch as it is, through one graph): every epoch's logged loss and accuracy, the validation loss and the
    trained weights agree to float32 rounding. Unscaled, the 6-row batch's loss would be 6/8 of its mean (the
    weights drift) and the logs would count it as 8 rows (the accuracy moves by several hundredths)."""
    images = make_image_folder(tmp_path / "images", classes=3, per_class=20)
    recipe = mini_recipe(images, stages=[dict(HEAD[0], epochs=3)], cache="auto",
                         data=dict(mini_recipe(images)["data"], batch_size=8, balance=balance,
                                   split={"val": 0.25, "test": 0.25, "seed": 0}))
    runs = {}
    for jit in (False, True):
        monkeypatch.setattr(S, "JIT_MIN_PARAMS", 0 if jit else 10**12)
        monkeypatch.setattr(S, "jit_min_epochs", lambda: (1, 1))
        made = _fitters(monkeypatch)
        runs[jit] = train(recipe, out=tmp_path / f"run-{jit}", verbose=False)
        assert made[0].pads is jit and made[0].jit is jit
        assert len(made[0].ctx.data.paths("train")) % 8 != 0  # there is a partial last batch
    for a, b in zip(runs[False].history, runs[True].history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    for wa, wb in zip(runs[False].model.get_weights(), runs[True].model.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)


def test_a_later_stage_with_the_same_suffix_reuses_the_compiled_steps(tmp_path, monkeypatch):
    """Two cached head stages with the same optimizer settings (another learning rate and schedule): the second
    traces nothing (it trains through the first stage's compiled step, with the optimizer's state reset to a
    fresh one's), and its history and weights equal a run where every stage traces its own steps. A third
    stage with other optimizer settings (weight decay) traces its own."""
    images = make_image_folder(tmp_path / "images", classes=3, per_class=20)
    stages = [dict(HEAD[0], name="warm", epochs=2, lr=1e-2),
              dict(HEAD[0], name="cool", epochs=2, lr=3e-3, schedule="cosine"),
              dict(HEAD[0], name="decay", epochs=1, lr=1e-3, weight_decay=1e-3)]
    recipe = mini_recipe(images, stages=stages, cache="auto",
                         data=dict(mini_recipe(images)["data"], batch_size=8,
                                   split={"val": 0.25, "test": 0.25, "seed": 0}))
    made = _fitters(monkeypatch)
    run = train(recipe, out=tmp_path / "reused", verbose=False)
    warm, cool, decay = made
    assert cool.adopted_from == "warm" and cool._step is warm._step and cool.traces == 0
    assert warm.traces == 1 and warm._step.experimental_get_tracing_count() == 1  # stage 2 traced nothing
    assert decay.adopted_from is None and decay.traces == 1
    assert "compiled steps are reused" in _log(run.dir)
    monkeypatch.setattr(S.StageFitter, "computes_like", lambda self, later: False)
    made.clear()
    fresh = train(recipe, out=tmp_path / "fresh", verbose=False)
    assert [f.traces for f in made] == [1, 1, 1]
    assert len(run.history) == len(fresh.history) == 5
    for a, b in zip(run.history, fresh.history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    for wa, wb in zip(run.model.get_weights(), fresh.model.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def test_xla_thresholds_follow_the_cpu_vendor(monkeypatch):
    """XLA from 2 epochs (convolutions) / 5 (a Dense head) on Intel, 12 / 60 on AMD and any CPU not measured."""
    import keras

    conv_in = keras.Input((5, 5, 8))
    conv = keras.Model(conv_in, keras.layers.Dense(20000)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(64, 3)(conv_in))))
    dense_in = keras.Input((64,))
    dense = keras.Model(dense_in, keras.layers.Dense(3)(keras.layers.Dense(20000)(dense_in)))
    assert all(sum(int(np.prod(v.shape)) for v in m.trainable_weights) >= S.JIT_MIN_PARAMS for m in (conv, dense))
    for vendor, (conv_from, dense_from) in (("GenuineIntel", (2, 5)), ("AuthenticAMD", (12, 60)), ("", (12, 60))):
        monkeypatch.setattr(S, "cpu_vendor", lambda v=vendor: v)
        assert [S.use_xla(conv, e) for e in (conv_from - 1, conv_from)] == [False, True], vendor
        assert [S.use_xla(dense, e) for e in (dense_from - 1, dense_from)] == [False, True], vendor
