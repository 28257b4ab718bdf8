import keras
import numpy as np
import pytest
from helpers import make_image_folder, mini_recipe

from inceptune import cache as C
from inceptune import prefix_cut as P
from inceptune.architectures import build_inception_mini
from inceptune.data import DataConfig, SplitConfig, prepare
from inceptune.freezing import unfreeze
from inceptune.heads import build_classifier
from inceptune.recipe import load_recipe
from inceptune.training import train


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INCEPTUNE_CACHE_DIR", str(tmp_path / "feature-cache"))


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cache-data") / "images", classes=3, per_class=20)


def _model(head=None, seed=0):
    keras.utils.set_random_seed(seed)
    return build_classifier(build_inception_mini(), 3, head or {})


@pytest.mark.parametrize("selector,batchnorm,expected", [
    ("head", "frozen", "head_pool"),
    ("from:mixed3", "frozen", "mixed2"),
    ("from:mixed2", "frozen", "mixed1"),
    ("head,block:mixed3", "frozen", "mixed2"),
    ("head", "train", None),          # every BN trains: only the first conv is deterministic, too little
    ("all", "frozen", None),          # everything with weights trains: nothing upstream to compute once
    ("from:mixed3", "follow", "mixed2"),
])
def test_cut_for_stage_selectors(selector, batchnorm, expected):
    model = _model()
    unfreeze(model, selector, batchnorm=batchnorm)
    cut = P.find_cut(model)
    assert cut.layer == expected, cut.reason
    if selector == "all":
        assert cut.reason == "every layer with weights trains in this stage: nothing to compute once"
    elif expected is None:
        assert "too little to be worth caching" in cut.reason


def test_cut_skips_dropout_and_dense_head():
    model = _model({"dense": [8], "dropout": 0.3})
    unfreeze(model, "head")
    assert P.find_cut(model).layer == "head_pool"  # the dropout after it runs in the suffix


def _prepared(images_dir, tmp_path):
    cfg = DataConfig(dir=str(images_dir), split=SplitConfig(val=0.25, test=0.25, seed=0), image_size=32)
    return prepare(cfg, None, progress=False)


def _ctx(data, model, tmp_path, **cache):
    recipe = load_recipe({"data": {"dir": "x", "image_size": 32, "batch_size": 8},
                          "stages": [{"name": "s", "train": "head", "epochs": 1, "lr": 1e-3}],
                          "cache": cache or "auto"})
    return C.CacheContext(recipe, data, model, tmp_path, image_size=32, log=lambda *_: None)


def test_suffix_on_cached_features_equals_full_model(images_dir, tmp_path):
    data = _prepared(images_dir, tmp_path)
    model = _model({"dense": [8]})
    unfreeze(model, "head,from:mixed3")
    cut = P.find_cut(model)
    ctx = _ctx(data, model, tmp_path)
    feats = ctx.features(model, cut)
    suffix = P.suffix_model(model, cut)
    images = np.concatenate([x for x, _ in data.dataset("train", batch_size=8, image_size=32, shuffle=False)])
    full = np.asarray(model(images, training=False))
    via_cache = np.asarray(suffix(np.asarray(feats["train"][0]), training=False))
    assert np.max(np.abs(full - via_cache)) < 1e-4
    # the suffix shares variables with the full model: training it changes the full model
    assert {id(v) for v in suffix.trainable_weights} <= {id(v) for v in model.trainable_weights}


def test_cache_hit_miss_and_invalidation(images_dir, tmp_path):
    data = _prepared(images_dir, tmp_path)
    model = _model()
    unfreeze(model, "head")
    cut = P.find_cut(model)
    ctx = _ctx(data, model, tmp_path)
    ctx.features(model, cut)
    assert (ctx.hits, ctx.misses) == (0, 1)
    ctx.features(model, cut)
    assert (ctx.hits, ctx.misses) == (1, 1)
    # a new run (new context) with the same key reuses the files
    ctx2 = _ctx(data, model, tmp_path)
    ctx2.features(model, cut)
    assert (ctx2.hits, ctx2.misses) == (1, 0)
    # prefix weights change -> new key
    k1 = ctx.key(model, cut)
    conv = model.get_layer("mixed1_b1_conv")
    conv.kernel.assign(conv.kernel.numpy() * 1.01)
    assert ctx.key(model, cut) != k1
    ctx.features(model, cut)
    assert ctx.misses == 2
    # another dtype or manifest -> new key
    assert _ctx(data, model, tmp_path, dtype="float16").key(model, cut) != ctx.key(model, cut)
    data.rows[0] = dict(data.rows[0], hash="changed")
    assert _ctx(data, model, tmp_path).key(model, cut) != ctx.key(model, cut)


def test_incomplete_cache_folder_is_recomputed(images_dir, tmp_path):
    data = _prepared(images_dir, tmp_path)
    model = _model()
    unfreeze(model, "head")
    cut = P.find_cut(model)
    ctx = _ctx(data, model, tmp_path)
    folder = C.cache_root() / ctx.key(model, cut)
    folder.mkdir(parents=True)
    (folder / "train-0.npy").write_bytes(b"garbage from a killed run")
    feats = ctx.features(model, cut)
    assert ctx.misses == 1 and feats["train"][0].shape[0] == len(data.paths("train"))


def test_training_with_and_without_cache_reaches_the_same_weights(images_dir, tmp_path):
    stages = [{"name": "head", "train": "head", "epochs": 3, "lr": 1e-2}]
    runs = {}
    for mode in ("off", "auto"):
        recipe = mini_recipe(images_dir, stages=stages, cache=mode)
        recipe["data"]["batch_size"] = 8
        runs[mode] = train(recipe, out=tmp_path / mode, verbose=False)
    a = {v.path: v.numpy() for v in runs["off"].model.weights}
    b = {v.path: v.numpy() for v in runs["auto"].model.weights}
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=2e-5, err_msg=k)
    hist = (tmp_path / "auto" / "history.csv").read_text().splitlines()
    assert all(line.endswith(",1") for line in hist[1:])  # every epoch ran on cached features
    assert "cache miss" in (tmp_path / "auto" / "log.txt").read_text()
    assert runs["off"].metrics["accuracy"] == runs["auto"].metrics["accuracy"]
    # the cached run's test predictions come from the cached features, and equal the full model's on images
    assert "test predictions from the cached features at 'head_pool'" in (tmp_path / "auto" / "log.txt").read_text()
    probs = np.asarray(runs["auto"].metrics["predictions"]["probs"])
    images = np.concatenate([x for x, _ in prepare(runs["auto"].recipe.data, None, progress=False).dataset(
        "test", batch_size=8, image_size=32)])
    assert probs.shape[0] == len(images) > 0
    assert np.max(np.abs(probs - np.asarray(runs["auto"].model(images, training=False)))) < 1e-4


def test_augmentation_without_views_is_not_cached(images_dir, tmp_path):
    recipe = mini_recipe(images_dir, stages=[{"name": "head", "train": "head", "epochs": 1, "lr": 1e-2}],
                         cache="auto")
    recipe["data"]["augment"] = "light"
    run = train(recipe, out=tmp_path / "aug", verbose=False)
    log = (run.dir / "log.txt").read_text()
    assert "augmentation is on" in log and "views" in log
    recipe["cache"] = {"views": 2}
    run = train(recipe, out=tmp_path / "views", verbose=False, force=True)
    assert "cache miss" in (run.dir / "log.txt").read_text()


def test_one_pass_fills_the_caches_of_later_stages(images_dir, tmp_path):
    stages = [{"name": "head", "train": "head", "epochs": 1, "lr": 1e-2},
              {"name": "top", "train": "head,from:mixed3", "epochs": 1, "lr": 1e-3},
              {"name": "more", "train": "head,from:mixed2", "epochs": 1, "lr": 1e-3}]
    run = train(mini_recipe(images_dir, stages=stages, cache="auto"), out=tmp_path / "run", verbose=False)
    log = (run.dir / "log.txt").read_text()
    # stage 1's pass also fills stage 2's cut (mixed2) and stage 3's (mixed1): neither prefix trains before
    assert "cache miss: computed" in log and "(and mixed2, mixed1 for later stages)" in log
    assert log.count("cache miss") == 1 and log.count("cache hit") == 2


def test_cache_key_ignores_automatic_layer_names(images_dir, tmp_path):
    """The same model built after other models gets other automatic names (conv2d_3...): same key."""
    data = _prepared(images_dir, tmp_path)

    def backbone():
        keras.utils.set_random_seed(1)
        x = inp = keras.Input((32, 32, 3))
        for filters in (4, 8, 8):
            x = keras.layers.Conv2D(filters, 3, padding="same")(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation("relu")(x)
        return keras.Model(inp, x)

    keys = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        model = build_classifier(backbone(), 3, {"dense": [8]})
        unfreeze(model, "head")
        keys.append((P.find_cut(model).layer, _ctx(data, model, tmp_path).key(model, P.find_cut(model)),
                     [layer.name for layer in model.layers]))
    assert keys[0][2] != keys[1][2]  # the names did change...
    assert keys[0][0] == keys[1][0] == "head_pool" and keys[0][1] == keys[1][1]  # ...the key did not
