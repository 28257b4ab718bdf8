"""Backbones by name, with their sizes, preprocessing and block maps.

``ARCHITECTURES`` is a plain table (name -> `ArchSpec`). A block map is derived from the graph, never from
Keras's automatic layer names (``conv2d_93`` depends on how many layers the process built before): each spec
names its blocks' *output layers* by anchors Keras does name (``mixed7``, ``block17_3_ac``), and membership
follows from the graph: a layer belongs to the first block (in block order) whose output it feeds; the
``stem`` is everything up to the single tensor that feeds the first block; layers after the last block are
the ``head``.

Importing this module does not import Keras (every function that needs it imports it), so the table, with each
architecture's block names as static data (`ArchSpec.block_names`), is readable without loading TensorFlow:
`inceptune backbones` prints it instantly.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inceptune.choices import PREPROCESS_MODES
from inceptune.errors import ModelLoadError, closest
from inceptune.models import initial_draws_skipped, keras_saving_skipsets, load_model

if TYPE_CHECKING:  # annotations only: the functions import Keras when they run
    import keras

__all__ = [
    "ArchSpec",
    "ARCHITECTURES",
    "load_backbone",
    "check_backbone",
    "block_map",
    "BlockMap",
    "preprocessing_layer",
    "detect_architecture",
    "PREPROCESS_LAYER",
    "application_names",
]

# Name of the preprocessing layer that build_classifier puts at the input of every classifier.
PREPROCESS_LAYER = "preprocess"


@dataclass(frozen=True)
class ArchSpec:
    """One backbone architecture.

    Attributes:
        name: str. Name used in recipes and the CLI.
        builder: callable `(weights, input_shape) -> keras.Model` building the backbone without its top.
        default_size: int. Image side the ImageNet weights were trained at.
        min_size: int. Smallest accepted image side.
        preprocess: str. Input scaling the weights expect: "tf" (x/127.5 - 1), "torch" (ImageNet mean/std on
            x/255), "caffe" (BGR, ImageNet means subtracted) or "none" (the model rescales itself).
        block_outputs: callable `(model) -> list[(block_name, output_layer_name)]` in order, or None (then
            every layer is its own block).
        signature: layer names whose presence identifies this architecture inside any model.
        description: str. One line for `inceptune backbones`.
        block_names: the blocks in order as `block_map(model).order` lists them for a backbone (`stem` first),
            kept as static data so they can be listed without building the model; a test checks them against
            the built models.
    """

    name: str
    builder: Callable
    default_size: int
    min_size: int
    preprocess: str = "tf"
    block_outputs: Callable | None = None
    signature: tuple[str, ...] = ()
    description: str = ""
    block_names: tuple[str, ...] = ()


# === InceptionV3 ===

_INCEPTION_V3_BLOCKS = ("stem",) + tuple(f"mixed{i}" for i in range(11))


def _inception_v3_blocks(model) -> list[tuple[str, str]]:
    # mixed0..mixed10 are the only names Keras gives InceptionV3's modules; mixed9_0, mixed9_1 and the
    # `concatenate*` layers are internal to mixed9 / mixed10 and fall into those blocks by graph membership.
    return [(b, b) for b in _INCEPTION_V3_BLOCKS[1:]]


def _build_inception_v3(weights, input_shape):
    import keras

    return keras.applications.InceptionV3(weights=weights, include_top=False, input_shape=input_shape)


# === InceptionResNetV2 ===

_INCEPTION_RESNET_V2_BLOCKS = (("stem", "mixed_5b") + tuple(f"block35_{i}" for i in range(1, 11)) + ("mixed_6a",)
                               + tuple(f"block17_{i}" for i in range(1, 21)) + ("mixed_7a",)
                               + tuple(f"block8_{i}" for i in range(1, 11)) + ("conv_7b",))


def _inception_resnet_v2_blocks(model) -> list[tuple[str, str]]:
    from inceptune import graph as _graph

    names = {layer.name for layer in model.layers}
    out = [("mixed_5b", "mixed_5b")]
    out += [(f"block35_{i}", f"block35_{i}_ac") for i in range(1, 11)]
    out += [("mixed_6a", "mixed_6a")]
    out += [(f"block17_{i}", f"block17_{i}_ac") for i in range(1, 21)]
    out += [("mixed_7a", "mixed_7a")]
    out += [(f"block8_{i}", f"block8_{i}_ac") for i in range(1, 10)]
    # block8_10 has no activation: its output is an automatically named scale layer, found as what conv_7b eats.
    feeds_conv_7b = _graph.parents(model).get("conv_7b", [])
    if "block8_10_ac" in names:
        out += [("block8_10", "block8_10_ac")]
    elif len(feeds_conv_7b) == 1:
        out += [("block8_10", feeds_conv_7b[0])]
    out += [("conv_7b", "conv_7b_ac")]
    return out


def _build_inception_resnet_v2(weights, input_shape):
    import keras

    return keras.applications.InceptionResNetV2(weights=weights, include_top=False, input_shape=input_shape)


# === inception_mini ===

_INCEPTION_MINI_BLOCKS = ("stem", "mixed0", "mixed1", "mixed2", "mixed3")


def _inception_mini_blocks(model) -> list[tuple[str, str]]:
    return [(b, b) for b in _INCEPTION_MINI_BLOCKS[1:]]


def build_inception_mini(input_shape=(32, 32, 3), width: int = 8, name: str = "inception_mini") -> keras.Model:
    """A small Inception-style backbone built from `inceptune.blocks`, trainable on a CPU in seconds.

    Blocks: `stem` (3×3/2 conv, 3×3 conv), `mixed0` (Inception module), `mixed1` (residual Inception module),
    `mixed2` (grid reduction: 3×3/2 conv ‖ 3×3/2 max-pool), `mixed3` (residual Inception module).

    Args:
        input_shape: (H, W, 3). H and W at least 32. Defaults to (32, 32, 3).
        width: int. Base channel count. Defaults to 8.
        name: str. Model name. Defaults to "inception_mini".

    Returns:
        A functional `keras.Model` without a top, output `H/4 × W/4 × 12·width` (for 32×32 inputs: 8×8×96).
    """
    import keras
    from keras import layers

    from inceptune import blocks as _blocks

    w = width
    inputs = keras.Input(shape=input_shape, name="input")
    # stem: 32 x 32 x 3 -> 16 x 16 x 2w
    x = _blocks.conv_bn(inputs, 2 * w, 3, strides=2, name="stem_conv1")
    x = _blocks.conv_bn(x, 2 * w, 3, name="stem_conv2")
    # mixed0: 16 x 16 x 2w -> 16 x 16 x 6w
    x = _blocks.inception_module(x, 2 * w, w, 2 * w, w // 2 or 1, w, w, name="mixed0")
    # mixed1: 16 x 16 x 6w (residual)
    x = _blocks.residual_inception_module(x, w, scale=0.5, name="mixed1")
    # mixed2 (reduction): 16 x 16 x 6w -> 8 x 8 x 12w
    conv = _blocks.conv_bn(x, 6 * w, 3, strides=2, name="mixed2_conv")
    pool = layers.MaxPooling2D(3, strides=2, padding="same", name="mixed2_pool")(x)
    x = layers.Concatenate(axis=-1, name="mixed2")([conv, pool])
    # mixed3: 8 x 8 x 12w (residual)
    x = _blocks.residual_inception_module(x, 2 * w, scale=0.5, name="mixed3")
    return keras.Model(inputs, x, name=name)


def _build_inception_mini(weights, input_shape):
    model = build_inception_mini(input_shape)
    if weights not in (None, "imagenet"):
        model.load_weights(weights)
    return model


ARCHITECTURES: dict[str, ArchSpec] = {
    "inception_v3": ArchSpec(
        "inception_v3", _build_inception_v3, default_size=299, min_size=75, preprocess="tf",
        block_outputs=_inception_v3_blocks, signature=_INCEPTION_V3_BLOCKS[1:], block_names=_INCEPTION_V3_BLOCKS,
        description="InceptionV3 (Szegedy et al. 2016), keras.applications, 21.8M parameters without top"),
    "inception_resnet_v2": ArchSpec(
        "inception_resnet_v2", _build_inception_resnet_v2, default_size=299, min_size=75, preprocess="tf",
        block_outputs=_inception_resnet_v2_blocks, signature=("mixed_5b", "block35_1_ac", "mixed_7a", "conv_7b_ac"),
        block_names=_INCEPTION_RESNET_V2_BLOCKS,
        description="InceptionResNetV2 (Szegedy et al. 2017), keras.applications, 54.3M parameters without top"),
    "inception_mini": ArchSpec(
        "inception_mini", _build_inception_mini, default_size=32, min_size=32, preprocess="tf",
        block_outputs=_inception_mini_blocks, signature=("stem_conv1_conv", "mixed0", "mixed3_up", "mixed3"),
        block_names=_INCEPTION_MINI_BLOCKS,
        description="inceptune's small Inception-style backbone for demos and tests (no ImageNet weights)"),
}


# === loading ===

def application_names() -> list[str]:
    """The builder functions of ``keras.applications`` (``"InceptionV3"``, ``"ResNet50"``, ...).

    While Keras is not imported yet, the names are read from the installed Keras's generated API file
    (``keras/applications/__init__.py``) without importing it, so listing them does not load TensorFlow;
    otherwise, or when that file cannot be read, from ``dir(keras.applications)``.

    Returns:
        list of str, sorted. Each name is accepted by ``load_backbone`` (any case, ``_`` ignored).
    """
    if "keras" not in sys.modules:
        names = _application_names_from_source()
        if names:
            return names
    import keras

    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def _application_names_from_source() -> list[str]:
    """The capitalised names ``keras.applications`` re-exports, parsed from its source; [] when not found."""
    try:
        spec = importlib.util.find_spec("keras")  # a top-level name: finds the package without running it
    except (ImportError, ValueError):
        return []
    for root in (spec.submodule_search_locations or []) if spec else []:
        for rel in (("applications", "__init__.py"), ("api", "applications", "__init__.py")):
            try:
                tree = ast.parse(Path(root, *rel).read_text(encoding="utf-8"))
            except (OSError, SyntaxError, ValueError):
                continue
            names = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     for a in node.names}
            found = sorted(n for n in names if n[:1].isupper())
            if found:
                return found
    return []


def _application(name: str):
    """Finds a keras.applications builder by function name (case-insensitive, `_` ignored)."""
    import keras

    key = name.replace("_", "").lower()
    for fn in application_names():
        if fn.lower() == key:
            return fn, getattr(keras.applications, fn)
    return None, None


def _weights_arg(weights) -> object:
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "null", "")):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    path = Path(os.fspath(weights)).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"weights file {str(path)!r} does not exist. Allowed: 'imagenet' (downloaded and cached by Keras), "
            f"'none' (random initialisation) or a path to a weights file. Received: weights={weights!r}.")
    return str(path)


def check_backbone(name, image_size: int | None = None, weights=None) -> None:
    """Checks a backbone name, an image size and a weights path without building anything (no Keras import).

    The checks `load_backbone` makes before it builds, so that `train` and `cv` can make them before the data scan
    (seconds to minutes on a large folder): the name is one of `ARCHITECTURES`, a `keras.applications` name or an
    existing `.keras` file; the size is at least the architecture's minimum; a weights file exists.

    Raises:
        ModelLoadError: with `.key` "backbone", "image_size" or "weights" (the `model.` key of the recipe).
    """
    text = str(name)
    if text.endswith(".keras"):
        if not Path(text).expanduser().is_file():
            raise ModelLoadError(f"backbone file {text!r} does not exist; expected a saved .keras model, a name in "
                                 "`inceptune backbones` or a keras.applications name.", key="backbone")
        return
    spec = ARCHITECTURES.get(text)
    if spec is None:
        key = text.replace("_", "").lower()
        if not any(fn.lower() == key for fn in application_names()):
            near = closest(text, list(ARCHITECTURES) + application_names())
            raise ModelLoadError(
                f"unknown backbone {text!r}. Allowed: {', '.join(ARCHITECTURES)}, any keras.applications name "
                f"(`inceptune backbones` lists them) or a .keras file."
                + (f" Did you mean {', '.join(near)}?" if near else ""), key="backbone")
    min_size, default_size = (spec.min_size, spec.default_size) if spec else (32, 224)
    size = int(image_size or default_size)
    if size < min_size:
        raise ModelLoadError(
            f"image_size {size} is too small for backbone {text!r}: its minimum is {min_size}×{min_size}. "
            f"Received: image_size={image_size}. HINT: use image_size >= {min_size} (default {default_size}).",
            key="image_size")
    if weights is not None:
        try:
            _weights_arg(weights)
        except ModelLoadError as exc:
            raise ModelLoadError(str(exc), key="weights") from exc


def _build_loaded(builder, w, size: int):
    if w == "imagenet":
        return builder(w, (size, size, 3))  # Keras downloads (once) and loads them
    model = builder(None, (size, size, 3))
    keras_saving_skipsets()
    model.load_weights(w)
    return model


def _zero_kernel(model) -> bool:
    """Whether a layer's kernel is all zeros (a draw the load did not overwrite would be)."""
    return any(not np.any(layer.kernel.numpy()) for layer in model.layers if getattr(layer, "kernel", None) is not None)


def load_backbone(name: str, weights="imagenet", image_size: int | None = None) -> keras.Model:
    """Builds a backbone without its classification top.

    Args:
        name: str. A name in `ARCHITECTURES`, any `keras.applications` function name (e.g. "ResNet50" or
            "resnet50"), or a path to a saved `.keras` model.
        weights: "imagenet" (downloaded once and cached by Keras in `$KERAS_HOME/models`), None/"none" (random
            initialisation), or a path to a weights file (`.weights.h5` or Keras's own `.h5` files for the
            same architecture). Defaults to "imagenet".
        image_size: int. Square input side. Defaults to the architecture's default size.

    Returns:
        A functional `keras.Model`, as `keras.applications` builds it (`include_top=False`).

    Raises:
        ModelLoadError: unknown name, an image size below the architecture's minimum, a missing weights file,
            or ImageNet weights that cannot be downloaded.
    """
    if isinstance(name, (str, os.PathLike)) and str(name).endswith(".keras"):
        return load_model(name)  # a saved model: loaded in safe mode
    check_backbone(name, image_size)
    spec = ARCHITECTURES.get(name)
    builder = spec.builder if spec else None
    default_size = spec.default_size if spec else 224
    if spec is None:
        fn_name, fn = _application(str(name))
        builder = lambda weights, input_shape: fn(weights=weights, include_top=False, input_shape=input_shape)  # noqa: E731
    size = int(image_size or default_size)
    w = _weights_arg(weights)
    # every variable of these backbones is loaded from the weights (Keras refuses a file that lacks one), so
    # their initial draws are skipped (models.initial_draws_skipped); other applications may set variables
    # that their weights file does not hold, and build as Keras builds them
    loaded = w is not None and spec is not None and spec.name != "inception_mini"
    try:
        with initial_draws_skipped() if loaded else contextlib.nullcontext():
            model = _build_loaded(builder, w, size) if loaded else builder(w, (size, size, 3))
        if loaded and _zero_kernel(model):  # a kernel the load left at zero (or a file that stores one): as Keras
            model = _build_loaded(builder, w, size)  # builds it, so nothing differs from a build without the skip
    except ModelLoadError:
        raise
    except Exception as exc:  # Keras raises a bare Exception("URL fetch failure ...") offline
        text = str(exc)
        if w == "imagenet" and ("URL fetch failure" in text or "urlopen" in text.lower() or "HTTP" in text):
            cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
            raise ModelLoadError(
                f"could not download the ImageNet weights of {name!r}: no network was reachable "
                f"({text.splitlines()[0]}). "
                f"Keras caches downloaded weights in {cache}. HINT: copy the weights file there, pass a local "
                f"file with weights=PATH (--set model.weights=PATH), or use weights=none to start from random "
                f"initialisation.") from exc
        if w not in (None, "imagenet"):
            raise ModelLoadError(
                f"could not load weights file {w!r} into backbone {name!r} at image_size {size}: "
                f"{text.splitlines()[0] if text else type(exc).__name__}. "
                f"HINT: the file must hold weights of the same architecture (without its top).") from exc
        raise
    return model


def detect_architecture(model) -> ArchSpec | None:
    """The `ArchSpec` whose signature layers all exist in `model` (a backbone or a classifier), or None."""
    names = {layer.name for layer in model.layers}
    for spec in ARCHITECTURES.values():
        if spec.signature and all(s in names for s in spec.signature):
            return spec
    # A backbone cut at a block (`model.cut`) keeps the first 2+ layers of its signature and none of the rest:
    # the architecture whose signature it keeps the largest share of wins.
    best, share = None, 0.0
    for spec in ARCHITECTURES.values():
        kept = next((i for i, s in enumerate(spec.signature) if s not in names), len(spec.signature))
        if kept >= 2 and not any(s in names for s in spec.signature[kept:]) and kept / len(spec.signature) > share:
            best, share = spec, kept / len(spec.signature)
    return best


# === block maps ===

@dataclass(frozen=True)
class BlockMap:
    """Which block every layer belongs to.

    Attributes:
        order: block names in graph order (`stem` first, `head` last when present).
        outputs: block name -> name of its output layer.
        layer_block: layer name -> block name (every layer of the model, exactly once).
        backbone_layers: names of the backbone's own layers in `keras.applications` order, i.e. what
            `base_model.layers` lists: the input layer first, then the backbone's layers, without the
            preprocessing layer and the head.
        head_layers: names of the layers after the last block (the classification head), in order.
    """

    order: tuple[str, ...]
    outputs: dict[str, str]
    layer_block: dict[str, str]
    backbone_layers: tuple[str, ...]
    head_layers: tuple[str, ...] = ()
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def layers_of(self, block: str) -> tuple[str, ...]:
        return self.members[block]


def _immediate_dominator(graph: dict[str, list[str]], target: str, sources: set[str]) -> str | None:
    """The last layer every path from an input to `target` goes through (excluding `target`)."""
    from inceptune import graph as _graph

    anc = _graph.closure(target, graph)
    order = [n for n in graph if n in anc and n != target]
    for cand in reversed(order):
        # cand dominates target iff target's ancestors, walked without passing cand, contain no source.
        seen, stack = {target}, [target]
        reached = False
        while stack and not reached:
            for p in graph.get(stack.pop(), ()):
                if p == cand or p in seen:
                    continue
                if p in sources:
                    reached = True
                    break
                seen.add(p)
                stack.append(p)
        if not reached:
            return cand
    return None


def block_map(model, spec: ArchSpec | None = None) -> BlockMap:
    """Derives the block of every layer of `model` from its graph.

    Args:
        model: a functional backbone or a flat classifier built by `build_classifier`.
        spec: the architecture. Defaults to `detect_architecture(model)`; without one every layer is a block.

    Returns:
        A `BlockMap`.
    """
    import keras

    from inceptune import graph as _graph

    spec = spec if spec is not None else detect_architecture(model)
    graph = _graph.parents(model)
    order_all = list(graph)
    input_names = {n for n, ps in graph.items() if not ps and isinstance(model.get_layer(n), keras.layers.InputLayer)}
    names = set(order_all)
    pairs = [(b, o) for b, o in (spec.block_outputs(model) if spec and spec.block_outputs else []) if o in names]
    if not pairs:
        # No block map (an architecture without named blocks, or any functional model): every backbone layer
        # is its own block; our `head_*` layers, when a classifier was built on it, are still the head.
        head = tuple(l.name for l in model.layers if l.name.startswith("head_"))
        head_set = set(head)
        layer_block = {n: ("head" if n in head_set else n) for n in order_all}
        blocks = [n for n in order_all if n not in head_set] + (["head"] if head else [])
        outputs = {n: n for n in order_all if n not in head_set}
        members = {n: (n,) for n in order_all if n not in head_set}
        if head:
            outputs["head"] = head[-1]
            members["head"] = head
        backbone = tuple(l.name for l in model.layers if l.name != PREPROCESS_LAYER and l.name not in head_set)
        return BlockMap(tuple(blocks), outputs, layer_block, backbone, head, members)
    layer_block: dict[str, str] = {}
    stem_out = _immediate_dominator(graph, pairs[0][1], input_names)
    blocks_in_order = ([("stem", stem_out)] if stem_out else []) + pairs
    for block, out in blocks_in_order:
        for n in _graph.closure(out, graph):
            layer_block.setdefault(n, block)
    trailing = [n for n in order_all if n not in layer_block]
    # Layers after the last block: the head. When the head is ours (`head_*` names), other trailing layers
    # (e.g. a skip connection merged into the last block's output) belong to the last block.
    ours = [n for n in trailing if n.startswith("head_")]
    head = ours if ours else trailing
    last_block = pairs[-1][0]
    for n in trailing:
        layer_block[n] = "head" if n in head else last_block
    order = [b for b, _ in blocks_in_order] + (["head"] if head else [])
    members = {b: tuple(n for n in order_all if layer_block[n] == b) for b in order}
    head_set = set(head)
    model_order = [l.name for l in model.layers]
    backbone = tuple(n for n in model_order if n not in head_set and n != PREPROCESS_LAYER)
    outputs = {b: o for b, o in blocks_in_order}
    if head:
        outputs["head"] = head[-1]
    return BlockMap(tuple(order), outputs, layer_block, backbone, tuple(n for n in model_order if n in head_set),
                    members)


# === preprocessing ===

_TORCH_MEAN = np.array([0.485, 0.456, 0.406])
_TORCH_STD = np.array([0.229, 0.224, 0.225])
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def _detect_preprocess_mode(name: str) -> str:
    """Infers a keras.applications model's input scaling by probing its module's `preprocess_input`."""
    import keras

    fn_name, _ = _application(name)
    module = None
    for mod_name in dir(keras.applications):
        mod = getattr(keras.applications, mod_name)
        if hasattr(mod, fn_name or "") and hasattr(mod, "preprocess_input"):
            module = mod
            break
    if module is None:
        return "none"
    probe = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    got = np.asarray(module.preprocess_input(probe.copy()))
    candidates = {
        "none": probe,
        "tf": probe / 127.5 - 1.0,
        "torch": (probe / 255.0 - _TORCH_MEAN) / _TORCH_STD,
        "caffe": probe[..., ::-1] - _CAFFE_MEAN_BGR,
    }
    for mode, expected in candidates.items():
        if got.shape == expected.shape and np.allclose(got, expected, atol=1e-3):
            return mode
    return "none"


def preprocessing_layer(mode: str, name: str = PREPROCESS_LAYER) -> keras.layers.Layer:
    """A stock Keras layer that maps raw 0–255 RGB pixels to what a backbone expects.

    Args:
        mode: "tf", "torch", "caffe", "none" (see `ArchSpec.preprocess`) or "unit" (x/255).
        name: layer name. Defaults to "preprocess".

    Returns:
        A layer with no trainable weights (`trainable=False`).
    """
    import keras
    from keras import layers

    if mode == "tf":
        layer = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
    elif mode == "torch":
        layer = layers.Normalization(mean=(255.0 * _TORCH_MEAN).tolist(), variance=((255.0 * _TORCH_STD) ** 2).tolist(),
                                     name=name)
    elif mode == "caffe":
        # RGB -> BGR and mean subtraction as a fixed 1x1 convolution (a stock layer, so it saves safely).
        perm = np.zeros((1, 1, 3, 3), dtype="float32")
        for i in range(3):
            perm[0, 0, 2 - i, i] = 1.0
        layer = layers.Conv2D(3, 1, name=name, kernel_initializer=keras.initializers.Constant(perm),
                              bias_initializer=keras.initializers.Constant(-_CAFFE_MEAN_BGR))
    elif mode == "none":
        layer = layers.Rescaling(1.0, name=name)
    elif mode == "unit":  # x/255, ImageDataGenerator(rescale=1./255): for weights trained on 0-1 inputs
        layer = layers.Rescaling(1.0 / 255.0, name=name)
    else:
        raise ModelLoadError(f"unknown preprocessing mode {mode!r}. Allowed: {', '.join(PREPROCESS_MODES)}. "
                             "HINT: use the scaling the weights were trained with (tf for the Keras Inceptions).")
    layer.trainable = False
    return layer


def preprocess_mode(name_or_model) -> str:
    """The preprocessing mode of an architecture name (or of a model whose architecture can be detected)."""
    if isinstance(name_or_model, str):
        spec = ARCHITECTURES.get(name_or_model)
        return spec.preprocess if spec else _detect_preprocess_mode(name_or_model)
    spec = detect_architecture(name_or_model)
    if spec is not None:
        return spec.preprocess
    return _detect_preprocess_mode(getattr(name_or_model, "name", ""))
