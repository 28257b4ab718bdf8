import re
import warnings

import keras
import pytest
from helpers import backbone, fresh_backbone

from inceptune import graph
from inceptune.architectures import block_map
from inceptune.errors import SelectorError
from inceptune.freezing import freeze
from inceptune.heads import build_classifier
from inceptune.selectors import SelectorWarning, parse, resolve, select


@pytest.fixture(scope="module")
def v3():
    return backbone("inception_v3")


@pytest.fixture(scope="module")
def clf():
    return build_classifier(backbone("inception_v3"), 4, {"dense": [8]})


def names(model):
    return [l.name for l in model.layers]


def test_words(v3, clf):
    assert resolve(v3, "all") == set(names(v3))
    assert resolve(v3, "none") == set()
    assert resolve(v3, "head") == set()
    assert resolve(clf, "head") == {"head_pool", "head_dense_0", "head_output"}
    assert resolve(clf, "backbone") == set(names(clf)) - {"preprocess", "head_pool", "head_dense_0", "head_output"}


def test_first_and_last_match_base_model_layers(v3, clf):
    assert resolve(v3, "first:100") == set(names(v3)[:100])
    with pytest.warns(SelectorWarning, match="last:20 cuts block 'mixed10'.*HINT: use 'from:mixed10'"):
        assert resolve(v3, "last:20") == set(names(v3)[-20:])
    assert resolve(v3, "last:0") == set()
    # with preprocessing and a head attached, first:N still counts the backbone's own layers
    base_names = names(v3)
    got = [n for n in names(clf) if n in resolve(clf, "first:100")]
    assert got[0] == "image" and got[1:] == base_names[1:100]
    assert resolve(clf, "last:31") == set(base_names[-31:]) == resolve(clf, "block:mixed10")


def test_name_glob_and_regex(v3):
    assert resolve(v3, "name:*mixed*") == {n for n in names(v3) if "mixed" in n}
    assert resolve(v3, "name:mixed1*") == {"mixed1", "mixed10"}
    assert resolve(v3, "re:^mixed\\d$") == {f"mixed{i}" for i in range(10)}
    assert resolve(v3, "re:mixed(9|10)$") == {"mixed9", "mixed10"}
    assert resolve(v3, "re:mixed[0\\,1]$") == {"mixed0", "mixed1"}


def test_blocks(v3):
    bm = block_map(v3)
    assert resolve(v3, "block:mixed7") == set(bm.members["mixed7"])
    assert resolve(v3, "blocks:mixed5..mixed7") == set(bm.members["mixed5"]) | set(bm.members["mixed6"]) | set(
        bm.members["mixed7"])
    assert resolve(v3, "block:stem") == set(bm.members["stem"])


def test_through_and_from_follow_the_graph(v3, clf):
    bm = block_map(v3)
    through = resolve(v3, "through:mixed7")
    assert through == graph.ancestors(v3, "mixed7")
    assert through == set().union(*(bm.members[b] for b in bm.order[:9]))
    frm = resolve(v3, "from:mixed9")
    assert frm == set(bm.members["mixed9"]) | set(bm.members["mixed10"])
    assert through.isdisjoint(resolve(v3, "from:mixed8"))
    assert resolve(clf, "from:mixed10") >= {"head_pool", "head_output"}
    # a plain layer name works too
    assert resolve(v3, "through:mixed9_0") == graph.ancestors(v3, "mixed9_0")


def test_type_and_operators(v3):
    bn = {l.name for l in v3.layers if isinstance(l, keras.layers.BatchNormalization)}
    assert resolve(v3, "type:BatchNormalization") == bn
    assert resolve(v3, "type:batchnormalization") == bn
    assert resolve(v3, "from:mixed9 & !type:BatchNormalization") == resolve(v3, "from:mixed9") - bn
    assert resolve(v3, "block:mixed0, block:mixed1") == resolve(v3, "blocks:mixed0..mixed1")
    assert resolve(v3, "!(block:mixed0, block:mixed1)") == set(names(v3)) - resolve(v3, "blocks:mixed0..mixed1")
    assert resolve(v3, "type:Conv2D") == {l.name for l in v3.layers if isinstance(l, keras.layers.Conv2D)}


def test_select_returns_layers_in_order(v3):
    got = select(v3, "block:mixed0")
    assert [l.name for l in got] == [n for n in names(v3) if n in resolve(v3, "block:mixed0")]


def test_seed_freeze_first_100():
    m = fresh_backbone("inception_v3")
    freeze(m, "first:100", batchnorm="follow")
    assert [l.trainable for l in m.layers[:100]] == [False] * 100
    assert all(l.trainable for l in m.layers[100:] if not isinstance(l, keras.layers.InputLayer))


def test_seed_freeze_mixed_names():
    m = fresh_backbone("inception_v3")
    freeze(m, "name:*mixed*", batchnorm="follow")
    for layer in m.layers[1:]:
        assert layer.trainable == ("mixed" not in layer.name), layer.name


def test_positional_cut_splitting_a_block_warns(v3):
    with pytest.warns(SelectorWarning, match=r"first:200 cuts block 'mixed7' in two.*through:mixed6"):
        resolve(v3, "first:200")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve(v3, "first:249")  # model.layers[249] is the first layer after mixed8: a clean cut


@pytest.mark.parametrize("selector,pattern", [
    ("block:mixed11",
     r"unknown block 'mixed11'\. Did you mean 'mixed1', 'mixed10'.*Valid blocks of 'inception_v3': stem, mixed0"),
    ("through:mixd7", r"unknown block or layer 'mixd7'\. Did you mean 'mixed7'[^?]*\? Blocks of 'inception_v3': stem, "
                      r"mixed0, .*, mixed10\. HINT: `inceptune inspect inception_v3 --layers` lists all 311 layers\.$"),
    ("first:-3", r"first:N needs a whole number N >= 0.*Received: first:-3"),
    ("re:(", r"re:\( is not a valid regular expression"),
    ("blocks:mixed7..mixed5", r"'mixed7' comes after 'mixed5'.*blocks:mixed5\.\.mixed7"),
    ("frm:mixed7", r"unknown selector kind 'frm:'.*did you mean from:"),
    ("name:mixed77", r"unknown layer 'mixed77'\. Did you mean 'mixed7'.*Blocks of 'inception_v3': stem, mixed0"),
    ("type:BatchNorm", r"unknown layer class 'BatchNorm'\. Did you mean 'BatchNormalization'.*Classes in "
                       r"'inception_v3': .*Conv2D.*; or any class of keras\.layers"),
    ("head,", r"expected a selector here"),
    ("", r"it is empty"),
])
def test_errors(v3, selector, pattern):
    with pytest.raises(SelectorError, match=pattern):
        resolve(v3, selector)


def test_unknown_name_lists_blocks_not_automatic_layer_names(v3):
    with pytest.raises(SelectorError) as err:
        resolve(v3, "through:mixd7")
    text = str(err.value)
    assert text.index("Did you mean 'mixed7'") < text.index("Blocks of") < text.index("inceptune inspect")
    assert not re.search(r"conv2d|batch_normalization|activation", text)  # Keras's automatic names
    assert "in all" not in text and len(text) < 400


def test_long_block_lists_shorten_numbered_runs():
    from inceptune.architectures import ARCHITECTURES
    from inceptune.selectors import _shorten

    assert _shorten(list(ARCHITECTURES["inception_resnet_v2"].block_names)) == [
        "stem", "mixed_5b", "block35_1 … block35_10", "mixed_6a", "block17_1 … block17_20", "mixed_7a",
        "block8_1 … block8_10", "conv_7b"]
    v3 = list(ARCHITECTURES["inception_v3"].block_names)
    assert _shorten(v3) == v3  # short lists in full


def test_unknown_name_in_a_model_without_named_blocks():
    """Every layer is its own block: listing the blocks would list the layers."""
    x = inp = keras.Input((4,), name="x")
    for i in range(70):
        x = keras.layers.Dense(4, name=f"d{i}")(x)
    model = keras.Model(inp, x, name="plain")
    with pytest.raises(SelectorError, match=r"Did you mean 'd7'.*'plain' has no named blocks \(every layer is its own "
                                            r"block\)\. HINT: `inceptune inspect MODEL --layers` lists all 71"):
        resolve(model, "through:d7x")


def test_parse_roundtrip_text():
    assert str(parse("head, from:mixed9 & !type:BatchNormalization")) == "(head,(from:mixed9&!type:BatchNormalization))"


def test_head_and_backbone_on_a_model_without_named_blocks():
    """Any functional backbone (no block map): 'head' is the head we added, 'backbone' the rest."""
    import keras

    from inceptune.architectures import block_map
    from inceptune.heads import build_classifier
    from inceptune.selectors import resolve

    x = inp = keras.Input((32, 32, 3))
    for filters in (4, 8):
        x = keras.layers.Conv2D(filters, 3, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
    model = build_classifier(keras.Model(inp, x), 3, {"dense": [8]})
    head = {"head_pool", "head_dense_0", "head_output"}
    assert resolve(model, "head") == head
    assert block_map(model).head_layers == ("head_pool", "head_dense_0", "head_output")
    backbone = resolve(model, "backbone")
    assert backbone == {"image", "conv2d", "batch_normalization", "conv2d_1", "batch_normalization_1"} or (
        not backbone & head and len(backbone) == 5)  # input, convolutions, BatchNorm; never preprocess or head
    assert resolve(model, "last:2") == set(list(block_map(model).backbone_layers)[-2:])
