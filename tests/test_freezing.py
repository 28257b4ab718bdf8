import json

import keras
import numpy as np
import pytest
from helpers import fresh_backbone

from inceptune.architectures import block_map, build_inception_mini
from inceptune.errors import SelectorError
from inceptune.freezing import freeze, unfreeze
from inceptune.heads import build_classifier


def _bn(model):
    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


@pytest.fixture(scope="module")
def v3():
    return fresh_backbone("inception_v3")


def test_through_mixed7_exact_counts(v3):
    rep = freeze(v3, "through:mixed7")
    # trainable: the kernels and BN betas of mixed8..mixed10, minus the frozen-policy BN betas
    assert rep.trainable_params == 12_804_096
    assert rep.frozen_params == 8_998_688
    assert rep.total_params == v3.count_params() == 21_802_784
    # the same numbers straight from Keras
    assert rep.trainable_params == sum(int(np.prod(w.shape)) for w in v3.trainable_weights)
    assert sum(b.trainable_params + b.frozen_params for b in rep.blocks) == 21_802_784
    states = {b.block: b.state for b in rep.blocks}
    assert [states[f"mixed{i}"] for i in (8, 9, 10)] == ["trainable"] * 3
    assert all(states[b] == "frozen" for b in ["stem"] + [f"mixed{i}" for i in range(8)])


def test_batchnorm_policies(v3):
    freeze(v3, "through:mixed7", batchnorm="frozen")
    assert not any(l.trainable for l in _bn(v3))
    freeze(v3, "through:mixed7", batchnorm="follow")
    bm = block_map(v3)
    late = {l.name for l in _bn(v3) if bm.layer_block[l.name] in ("mixed8", "mixed9", "mixed10")}
    assert len(late) == 24
    assert {l.name for l in _bn(v3) if l.trainable} == late
    freeze(v3, "through:mixed7", batchnorm="train")
    assert all(l.trainable for l in _bn(v3))
    with pytest.raises(SelectorError, match="unknown BatchNorm policy 'frozn'.*Allowed: frozen, follow, train"):
        freeze(v3, "all", batchnorm="frozn")


def test_unfreeze_is_the_reverse(v3):
    a = freeze(v3, "through:mixed7", batchnorm="follow")
    b = unfreeze(v3, "!through:mixed7", batchnorm="follow")
    assert a.trainable_params == b.trainable_params


def test_report_json_and_table(v3):
    rep = freeze(v3, "through:mixed7")
    d = json.loads(rep.to_json())
    assert [b["block"] for b in d["blocks"]][:2] == ["stem", "mixed0"]
    assert d["trainable_params"] + d["frozen_params"] == 21_802_784
    text = str(rep)
    assert text.splitlines()[0] == "inception_v3  (freeze through:mixed7, batchnorm: frozen)"  # the verb once
    assert "mixed8" in text and "12,804,096" in text
    assert str(unfreeze(v3, "from:mixed8", batchnorm="follow")).splitlines()[0] == (
        "inception_v3  (train from:mixed8, batchnorm: follow)")
    assert len(json.loads(rep.to_json(layers=True))["layers"]) == 311


def test_preprocess_never_trains():
    model = build_classifier(build_inception_mini(), 3)
    unfreeze(model, "all")
    assert not model.get_layer("preprocess").trainable


def _fit_once(model, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, 8)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)


def _moving_means(model):
    return {l.name: l.moving_mean.numpy().copy() for l in _bn(model)}


def test_keras3_training_false_does_not_keep_bn_frozen():
    """The measurement behind the `frozen` policy (README "BatchNorm, measured"): the Keras guide's
    `base(inputs, training=False)` does not stop BN moving statistics from updating once BN layers are trainable."""
    keras.utils.set_random_seed(0)
    base = build_inception_mini()
    inputs = keras.Input((32, 32, 3))
    x = base(inputs, training=False)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    base.trainable = True
    before = {l.name: l.moving_mean.numpy().copy() for l in _bn(base)}
    _fit_once(model)
    changed = [n for n, v in before.items() if not np.array_equal(v, base.get_layer(n).moving_mean.numpy())]
    assert changed, "Keras kept BN frozen: update the README's BatchNorm finding"


def test_frozen_policy_keeps_bn_statistics():
    keras.utils.set_random_seed(0)
    model = build_classifier(build_inception_mini(), 3)
    unfreeze(model, "all", batchnorm="frozen")
    before = _moving_means(model)
    _fit_once(model)
    after = _moving_means(model)
    assert all(np.array_equal(before[n], after[n]) for n in before)
    unfreeze(model, "all", batchnorm="train")
    _fit_once(model)
    assert any(not np.array_equal(before[n], v) for n, v in _moving_means(model).items())
