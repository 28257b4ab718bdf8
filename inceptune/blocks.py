"""Inception building blocks as functions of stock Keras layers.

Every block takes a tensor and a ``name`` prefix and returns a tensor; every layer it creates is named from the
prefix (``{name}_b1_conv``, ``{name}_concat``, ...), so selectors and surgery can anchor on them and a saved
model loads with no custom objects. The block's output layer is named exactly ``name`` so the block shows up
as a named block in `inceptune inspect`.

References:
- GoogLeNet / Inception v1: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015.
- Inception v3: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
- Inception-ResNet: Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections
  on Learning", AAAI 2017.
"""

from __future__ import annotations

from keras import layers

__all__ = [
    "conv_bn",
    "inception_module",
    "residual_inception_module",
    "inception_resnet_a",
    "inception_resnet_b",
    "inception_resnet_c",
    "reduction_a",
    "reduction_b",
]


def _channels(x) -> int:
    return int(x.shape[-1])


def conv_bn(x, filters: int, kernel_size, *, strides=1, padding="same", activation="relu", name: str):
    """Convolution → BatchNormalization → activation, the unit every Inception network is made of.

    Args:
        x: input tensor (NHWC).
        filters: int. Output channels.
        kernel_size: int or (int, int).
        strides: int. Defaults to 1.
        padding: "same" or "valid". Defaults to "same".
        activation: activation name or None. Defaults to "relu".
        name: str. Prefix: creates `{name}_conv`, `{name}_bn` and `{name}_act`.

    Returns:
        The output tensor.
    """
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(scale=False, name=f"{name}_bn")(x)
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_act")(x)
    return x


def inception_module(x, filters_1x1: int, filters_3x3_reduce: int, filters_3x3: int, filters_5x5_reduce: int,
                     filters_5x5: int, filters_pool: int, *, name: str):
    """The GoogLeNet Inception module: four parallel branches concatenated on the channel axis.

    Branches: 1×1; 1×1 → 3×3; 1×1 → 5×5 (factorised as two 3×3 as in Inception v3); 3×3 max-pool → 1×1.
    Spatial size is preserved. Reference: Szegedy et al., CVPR 2015, Figure 2(b).

    Args:
        x: input tensor.
        filters_1x1, filters_3x3_reduce, filters_3x3, filters_5x5_reduce, filters_5x5, filters_pool: int.
            Channels of each branch, in the paper's column order.
        name: str. Prefix of every layer; the concatenation is named `name`.

    Returns:
        A tensor with `filters_1x1 + filters_3x3 + filters_5x5 + filters_pool` channels.

    Example:
        >>> y = inception_module(x, 64, 96, 128, 16, 32, 32, name="inception_3a")
    """
    b1 = conv_bn(x, filters_1x1, 1, name=f"{name}_b1")
    b2 = conv_bn(x, filters_3x3_reduce, 1, name=f"{name}_b2_reduce")
    b2 = conv_bn(b2, filters_3x3, 3, name=f"{name}_b2")
    b3 = conv_bn(x, filters_5x5_reduce, 1, name=f"{name}_b3_reduce")
    b3 = conv_bn(b3, filters_5x5, 3, name=f"{name}_b3a")
    b3 = conv_bn(b3, filters_5x5, 3, name=f"{name}_b3b")
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_b4_pool")(x)
    b4 = conv_bn(b4, filters_pool, 1, name=f"{name}_b4")
    return layers.Concatenate(axis=-1, name=name)([b1, b2, b3, b4])


def _residual(x, branches, *, scale: float, activation, name: str, zero_init: bool = False):
    """branches → concat → 1×1 linear projection → scale → add to (projected) shortcut → activation."""
    mixed = layers.Concatenate(axis=-1, name=f"{name}_mixed")(branches) if len(branches) > 1 else branches[0]
    channels = _channels(x)
    up = layers.Conv2D(channels, 1, use_bias=True, name=f"{name}_up",
                       kernel_initializer="zeros" if zero_init else "glorot_uniform")(mixed)
    up = layers.Rescaling(scale, name=f"{name}_scale")(up)
    out = layers.Add(name=f"{name}_add" if activation else name)([x, up])
    if activation:
        out = layers.Activation(activation, name=name)(out)
    return out


def residual_inception_module(x, filters: int = 32, *, out_channels: int | None = None, scale: float = 1.0,
                              activation: str | None = "relu", zero_init: bool = False, name: str):
    """A residual Inception module: Inception branches → concat → 1×1 linear projection → scaled residual add.

    Branches: 1×1; 1×1 → 3×3; 1×1 → 3×3 → 3×3 (each with `filters` channels). When `out_channels` differs from
    the input's channels the shortcut is projected with a 1×1 convolution (`{name}_shortcut`).
    Reference: Szegedy et al., AAAI 2017, §3 (Inception-ResNet).

    Args:
        x: input tensor.
        filters: int. Channels of each branch. Defaults to 32.
        out_channels: int. Output channels. Defaults to the input's.
        scale: float. Residual scale (the paper uses 0.1–0.3 for stability). Defaults to 1.0.
        activation: activation after the add, or None. Defaults to "relu".
        zero_init: bool. Zero-initialise the residual projection so the module starts as the identity (of its
            shortcut). Defaults to False.
        name: str. Prefix of every layer; the output layer is named `name`.

    Returns:
        The output tensor, same spatial size, `out_channels` channels.
    """
    out_channels = out_channels or _channels(x)
    shortcut = x
    if out_channels != _channels(x):
        shortcut = layers.Conv2D(out_channels, 1, name=f"{name}_shortcut")(x)
    b1 = conv_bn(x, filters, 1, name=f"{name}_b1")
    b2 = conv_bn(x, filters, 1, name=f"{name}_b2_reduce")
    b2 = conv_bn(b2, filters, 3, name=f"{name}_b2")
    b3 = conv_bn(x, filters, 1, name=f"{name}_b3_reduce")
    b3 = conv_bn(b3, filters, 3, name=f"{name}_b3a")
    b3 = conv_bn(b3, filters, 3, name=f"{name}_b3b")
    return _residual(shortcut, [b1, b2, b3], scale=scale, activation=activation, name=name, zero_init=zero_init)


def inception_resnet_a(x, *, scale: float = 0.17, activation="relu", name: str):
    """Inception-ResNet-A (35×35 grid): 1×1 | 1×1→3×3 | 1×1→3×3→3×3 (32, 32, 48/64 channels), scaled residual.

    Reference: Szegedy et al., AAAI 2017, Figure 16 (InceptionResNetV2's `block35`).

    Args:
        x: input tensor. name: str prefix. scale: float residual scale. Defaults to 0.17.
        activation: activation after the add. Defaults to "relu".

    Returns:
        A tensor with the input's shape.
    """
    b0 = conv_bn(x, 32, 1, name=f"{name}_b0")
    b1 = conv_bn(x, 32, 1, name=f"{name}_b1_reduce")
    b1 = conv_bn(b1, 32, 3, name=f"{name}_b1")
    b2 = conv_bn(x, 32, 1, name=f"{name}_b2_reduce")
    b2 = conv_bn(b2, 48, 3, name=f"{name}_b2a")
    b2 = conv_bn(b2, 64, 3, name=f"{name}_b2b")
    return _residual(x, [b0, b1, b2], scale=scale, activation=activation, name=name)


def inception_resnet_b(x, *, scale: float = 0.1, activation="relu", name: str):
    """Inception-ResNet-B (17×17 grid): 1×1 | 1×1→1×7→7×1 (192, 128/160/192 channels), scaled residual.

    Reference: Szegedy et al., AAAI 2017, Figure 17 (InceptionResNetV2's `block17`).

    Returns:
        A tensor with the input's shape.
    """
    b0 = conv_bn(x, 192, 1, name=f"{name}_b0")
    b1 = conv_bn(x, 128, 1, name=f"{name}_b1_reduce")
    b1 = conv_bn(b1, 160, (1, 7), name=f"{name}_b1a")
    b1 = conv_bn(b1, 192, (7, 1), name=f"{name}_b1b")
    return _residual(x, [b0, b1], scale=scale, activation=activation, name=name)


def inception_resnet_c(x, *, scale: float = 0.2, activation="relu", name: str):
    """Inception-ResNet-C (8×8 grid): 1×1 | 1×1→1×3→3×1 (192, 192/224/256 channels), scaled residual.

    Reference: Szegedy et al., AAAI 2017, Figure 19 (InceptionResNetV2's `block8`).

    Returns:
        A tensor with the input's shape.
    """
    b0 = conv_bn(x, 192, 1, name=f"{name}_b0")
    b1 = conv_bn(x, 192, 1, name=f"{name}_b1_reduce")
    b1 = conv_bn(b1, 224, (1, 3), name=f"{name}_b1a")
    b1 = conv_bn(b1, 256, (3, 1), name=f"{name}_b1b")
    return _residual(x, [b0, b1], scale=scale, activation=activation, name=name)


def reduction_a(x, k: int = 256, l: int = 256, m: int = 384, n: int = 384, *, name: str):
    """Reduction-A (35×35 → 17×17): 3×3/2 conv (n) | 1×1 (k) → 3×3 (l) → 3×3/2 (m) | 3×3/2 max-pool.

    Halves the grid with stride-2 "valid" layers (side S → ⌊(S−3)/2⌋+1) and concatenates the branches.
    Reference: Szegedy et al., AAAI 2017, Figure 7 and Table 1 (InceptionResNetV2's `mixed_6a`: k=256, l=256,
    m=384, n=384).

    Args:
        x: input tensor. k, l, m, n: int. Branch channels in the paper's notation.
        name: str. Prefix of every layer; the concatenation is named `name`.

    Returns:
        A tensor with `n + m + channels(x)` channels on the reduced grid.
    """
    b0 = conv_bn(x, n, 3, strides=2, padding="valid", name=f"{name}_b0")
    b1 = conv_bn(x, k, 1, name=f"{name}_b1_reduce")
    b1 = conv_bn(b1, l, 3, name=f"{name}_b1a")
    b1 = conv_bn(b1, m, 3, strides=2, padding="valid", name=f"{name}_b1b")
    pool = layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{name}_pool")(x)
    return layers.Concatenate(axis=-1, name=name)([b0, b1, pool])


def reduction_b(x, reduce: int = 256, outputs=(384, 288, 320), *, name: str):
    """Reduction-B (17×17 → 8×8): three 1×1 → 3×3/2 conv branches (one with an extra 3×3) | 3×3/2 max-pool.

    Reference: Szegedy et al., AAAI 2017, Figure 18 (InceptionResNetV2's `mixed_7a`: reduce=256,
    outputs=(384, 288, 320), and 288 channels before the last branch's stride-2 conv).

    Args:
        x: input tensor.
        reduce: int. Channels of each branch's 1×1 reduction. Defaults to 256.
        outputs: (int, int, int). Channels of the three stride-2 convolutions. Defaults to (384, 288, 320).
        name: str. Prefix of every layer; the concatenation is named `name`.

    Returns:
        A tensor with `sum(outputs) + channels(x)` channels on the reduced grid.
    """
    c0, c1, c2 = outputs
    b0 = conv_bn(x, reduce, 1, name=f"{name}_b0_reduce")
    b0 = conv_bn(b0, c0, 3, strides=2, padding="valid", name=f"{name}_b0")
    b1 = conv_bn(x, reduce, 1, name=f"{name}_b1_reduce")
    b1 = conv_bn(b1, c1, 3, strides=2, padding="valid", name=f"{name}_b1")
    b2 = conv_bn(x, reduce, 1, name=f"{name}_b2_reduce")
    b2 = conv_bn(b2, c1, 3, name=f"{name}_b2a")
    b2 = conv_bn(b2, c2, 3, strides=2, padding="valid", name=f"{name}_b2b")
    pool = layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{name}_pool")(x)
    return layers.Concatenate(axis=-1, name=name)([b0, b1, b2, pool])
