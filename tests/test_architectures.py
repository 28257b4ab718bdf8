import re

import keras
import numpy as np
import pytest
from helpers import backbone, fresh_backbone, images

from inceptune import architectures as A
from inceptune.errors import ModelLoadError
from inceptune.heads import build_classifier

V3_BLOCKS = ["stem"] + [f"mixed{i}" for i in range(11)]
IRV2_BLOCKS = (["stem", "mixed_5b"] + [f"block35_{i}" for i in range(1, 11)] + ["mixed_6a"]
               + [f"block17_{i}" for i in range(1, 21)] + ["mixed_7a"] + [f"block8_{i}" for i in range(1, 11)]
               + ["conv_7b"])


def test_inception_v3_facts():
    m = backbone("inception_v3")
    assert len(m.layers) == 311
    assert m.count_params() == 21_802_784
    bm = A.block_map(m)
    assert list(bm.order) == V3_BLOCKS
    # every layer in exactly one block
    assert sorted(bm.layer_block) == sorted(layer.name for layer in m.layers)
    assert sum(len(v) for v in bm.members.values()) == 311
    assert bm.layer_block["mixed9_0"] == "mixed9"
    assert bm.layer_block["mixed9_1"] == "mixed10"  # Keras names the i=1 pass of the mixed9 loop mixed9_1 -> mixed10
    concats = [l.name for l in m.layers if isinstance(l, keras.layers.Concatenate) and not l.name.startswith("mixed")]
    assert len(concats) == 2
    assert [bm.layer_block[n] for n in concats] == ["mixed9", "mixed10"]
    # the stem ends at the 35x35x192 (here 7x7x192) pooling that feeds mixed0
    assert bm.members["stem"][0] == m.layers[0].name and len(bm.members["stem"]) == 18
    assert [l.name for l in m.layers].index(bm.outputs["stem"]) == 17


def test_block_map_does_not_depend_on_automatic_names():
    first = fresh_backbone("inception_v3")
    # build other layers first: every automatic name of the next model shifts
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), keras.layers.Dense(2)])
    A.build_inception_mini()
    second = fresh_backbone("inception_v3")
    assert [l.name for l in first.layers] != [l.name for l in second.layers]
    b1, b2 = A.block_map(first), A.block_map(second)
    assert [b1.layer_block[l.name] for l in first.layers] == [b2.layer_block[l.name] for l in second.layers]


@pytest.mark.parametrize("size", [75])
def test_inception_resnet_v2_facts(size):
    m = backbone("inception_resnet_v2", size)
    assert len(m.layers) == 780
    assert m.count_params() == 54_336_736
    bm = A.block_map(m)
    assert list(bm.order) == IRV2_BLOCKS
    assert len(bm.order) == 45
    assert sorted(bm.layer_block) == sorted(layer.name for layer in m.layers)
    # block8_10 has no activation: its output is an automatically named scale layer
    assert type(m.get_layer(bm.outputs["block8_10"])).__name__ == "CustomScaleLayer"
    assert bm.layer_block["block17_3_conv"] == "block17_3"
    assert bm.layer_block["conv_7b_bn"] == "conv_7b"


@pytest.mark.parametrize("name", sorted(A.ARCHITECTURES))
def test_static_block_names_match_the_built_model(name):
    """`ArchSpec.block_names` (what `inceptune backbones` prints without building anything) is the block map's order
    of the model built at its minimum size (the session's cached backbone: InceptionResNetV2 at 75 px, ~6 s)."""
    spec = A.ARCHITECTURES[name]
    assert spec.block_names, name
    assert A.block_map(backbone(name, spec.min_size)).order == spec.block_names


def test_application_names_read_without_keras_match_keras():
    assert A._application_names_from_source() == sorted(n for n in dir(keras.applications) if n[:1].isupper())
    assert "InceptionV3" in A.application_names() and "ResNet50" in A.application_names()


def test_inception_mini_is_named_and_blocked():
    m = A.build_inception_mini()
    bm = A.block_map(m)
    assert list(bm.order) == ["stem", "mixed0", "mixed1", "mixed2", "mixed3"]
    auto = re.compile(r"^(conv2d|batch_normalization|activation|concatenate|add|rescaling|max_pooling2d)(_\d+)?$")
    assert not [l.name for l in m.layers if auto.match(l.name)]
    assert tuple(m.output.shape) == (None, 8, 8, 96)
    assert A.detect_architecture(m).name == "inception_mini"


def test_image_size_below_minimum():
    with pytest.raises(ModelLoadError,
                       match=r"image_size 64 is too small for backbone 'inception_v3': its minimum is 75"):
        A.load_backbone("inception_v3", weights=None, image_size=64)


def test_unknown_backbone_suggests():
    with pytest.raises(ModelLoadError, match=r"unknown backbone 'inception_v4'.*Did you mean .*inception_v3"):
        A.load_backbone("inception_v4", weights=None)


def test_missing_weights_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"weights file .*nope.h5.* does not exist"):
        A.load_backbone("inception_mini", weights=str(tmp_path / "nope.h5"))


def test_local_weights_file_round_trip(tmp_path, monkeypatch):
    """A backbone built from a weights file holds the file's values, bit for bit, and draws no initial values
    on the way (they would be overwritten unread); a file that stores a zero kernel keeps it."""
    from keras.src.backend.tensorflow import core
    from keras.src.initializers import random_initializers

    keras.utils.set_random_seed(1)
    m = A.load_backbone("inception_v3", weights=None, image_size=75)
    path = tmp_path / "v3.weights.h5"
    m.save_weights(path)
    draws = []
    real_draw = random_initializers.VarianceScaling.__call__
    monkeypatch.setattr(random_initializers.VarianceScaling, "__call__",
                        lambda self, *a, **k: draws.append(1) or real_draw(self, *a, **k))
    hook = core.Variable._initialize_with_initializer
    keras.utils.set_random_seed(2)
    loaded = A.load_backbone("inception_v3", weights=str(path), image_size=75)
    assert draws == [] and core.Variable._initialize_with_initializer is hook  # no draw; the hook restored
    for a, b in zip(m.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    A.load_backbone("inception_v3", weights=None, image_size=75)  # random initialisation still draws
    assert len(draws) == 94  # one per convolution kernel

    conv = next(layer for layer in m.layers if isinstance(layer, keras.layers.Conv2D))
    conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    m.save_weights(tmp_path / "zero.weights.h5")
    loaded = A.load_backbone("inception_v3", weights=str(tmp_path / "zero.weights.h5"), image_size=75)
    for a, b in zip(m.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_weights_file_missing_a_layer_is_refused(tmp_path):
    """The initial draws are skipped only because a load that succeeds sets every variable: Keras refuses a
    file without one of the layers."""
    import h5py

    path = tmp_path / "v3.weights.h5"
    A.load_backbone("inception_v3", weights=None, image_size=75).save_weights(path)
    with h5py.File(path, "a") as f:
        del f["layers"]["conv2d_5"]
    with pytest.raises(ModelLoadError, match=r"could not load weights file .*v3.weights.h5.* into backbone "
                                             r"'inception_v3'.*could not be loaded"):
        A.load_backbone("inception_v3", weights=str(path), image_size=75)


def test_initial_draws_are_skipped_on_this_thread_only():
    import threading

    from inceptune.models import initial_draws_skipped

    other = {}
    with initial_draws_skipped():
        mine = keras.Variable(initializer="ones", shape=(3,))
        thread = threading.Thread(target=lambda: other.update(v=keras.Variable(initializer="ones", shape=(3,))))
        thread.start()
        thread.join()
    after = keras.Variable(initializer="ones", shape=(3,))
    assert mine.numpy().tolist() == [0, 0, 0]
    assert other["v"].numpy().tolist() == [1, 1, 1] and after.numpy().tolist() == [1, 1, 1]


def test_imagenet_offline_is_a_clear_error(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- unreachable")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ModelLoadError) as err:
        A.load_backbone("inception_v3", weights="imagenet", image_size=75)
    text = str(err.value)
    assert "no network was reachable" in text and "weights=PATH" in text and "weights=none" in text


@pytest.mark.parametrize("name,mode", [("ResNet50", "caffe"), ("MobileNetV2", "tf"), ("DenseNet121", "torch"),
                                       ("EfficientNetB0", "none"), ("inception_v3", "tf")])
def test_preprocess_mode_detection(name, mode):
    assert A.preprocess_mode(name) == mode


@pytest.mark.parametrize("module,mode", [(keras.applications.resnet50, "caffe"), (keras.applications.densenet, "torch"),
                                         (keras.applications.inception_v3, "tf")])
def test_preprocessing_layer_matches_keras(module, mode):
    x = images(2, 8)
    layer = A.preprocessing_layer(mode)
    np.testing.assert_allclose(np.asarray(layer(x)), module.preprocess_input(x.copy()), rtol=1e-5, atol=1e-4)
    assert not layer.trainable_weights


def test_other_keras_application_by_name():
    m = A.load_backbone("mobilenet_v2", weights=None, image_size=32)
    bm = A.block_map(m)
    assert len(bm.order) == len(m.layers)  # no block map: every layer is a block


def test_build_classifier_is_flat_and_keeps_weights():
    base = backbone("inception_v3")
    model = build_classifier(base, 5, {"dense": [16], "dropout": 0.2})
    assert not any(isinstance(l, keras.Model) for l in model.layers)
    names = [l.name for l in model.layers]
    assert names[:2] == ["image", "preprocess"]
    assert names[2:2 + 310] == [l.name for l in base.layers[1:]]
    assert names[-5:] == ["head_pool", "head_dropout", "head_dense_0", "head_dropout_0", "head_output"]
    model.get_layer("mixed7")  # no "Graph disconnected", no nested lookup
    for layer in base.layers[1:]:
        for a, b in zip(layer.weights, model.get_layer(layer.name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = images(2)
    features = keras.Model(model.input, model.get_layer("mixed10").output)(x)
    expected = base(keras.applications.inception_v3.preprocess_input(x.copy()))
    np.testing.assert_allclose(np.asarray(features), np.asarray(expected), atol=1e-5)
    assert A.block_map(model).order[-1] == "head"
