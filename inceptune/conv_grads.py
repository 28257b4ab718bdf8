"""Faster kernel gradients for the convolutions a stage trains, on CPU: one matrix product instead of TensorFlow's
`Conv2DBackpropFilter`.

The gradient of a stride-1 convolution's kernel is `patches(x)^T @ dy`: for a 1x1 kernel the patches are `x`
itself, for a larger one the `kh*kw` shifted copies of `x` side by side (`tf.image.extract_patches`). On the CPU
measured (benchmarks/conv_grads.py: 2 cores, AMD EPYC, oneDNN's kernels), that product is faster than
`Conv2DBackpropFilter` for every 1x1 kernel (1.07-1.65x on InceptionV3's shapes) and, for larger kernels, on
feature maps of at most `MAX_PATCH_POSITIONS` positions (InceptionV3's mixed9-10: 3x3 at 150 px, 8x8 at 299 px;
1.2-2.1x), slower on bigger maps (0.8-0.9x: 17x17 with a 7x1 kernel, 35x35 with 3x3); a cached mixed9-10
training step at 150 px is 1.16-1.28x faster with it (two runs).
`install` gives each eligible trainable `keras.layers.Conv2D` of a model a `convolution_op` whose forward is
Keras's own op, unchanged, and whose gradients are the input's `Conv2DBackpropInput` (the op TensorFlow's
gradient uses) and that product for the kernel: the same values, summed in another order (within float32
rounding, 1e-6 relative).

Only where it was measured to pay: the TensorFlow backend on a machine without GPUs, channels-last, stride and
dilation 1, no groups, and graph-mode steps (a step traced under `native_gradients()`, as a cached stage's XLA
step is, keeps TensorFlow's own gradient). The choice is made per call from the static shape, when the step is
traced. `INCEPTUNE_CONV_GRADS=native` turns it off.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import types

__all__ = ["install", "native_gradients", "eligible", "MAX_PATCH_POSITIONS"]

MAX_PATCH_POSITIONS = 64  # kernels larger than 1x1: the product pays on maps of up to 8x8 (measured, see above)
_NATIVE = contextvars.ContextVar("inceptune_native_conv_grads", default=False)


@contextlib.contextmanager
def native_gradients():
    """Steps traced inside keep TensorFlow's own kernel gradients (used for XLA programs, not measured there)."""
    token = _NATIVE.set(True)
    try:
        yield
    finally:
        _NATIVE.reset(token)


@functools.lru_cache(maxsize=1)
def _cpu_only() -> bool:
    import keras

    if keras.backend.backend() != "tensorflow" or os.environ.get("INCEPTUNE_CONV_GRADS", "") == "native":
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def eligible(layer) -> bool:
    """A plain `Conv2D` (its `convolution_op` not overridden) the product can differentiate: channels-last,
    stride 1, dilation 1, one group."""
    import keras
    from keras.src.layers.convolutional.base_conv import BaseConv

    return (isinstance(layer, keras.layers.Conv2D) and type(layer).convolution_op is BaseConv.convolution_op
            and layer.data_format == "channels_last" and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1) and layer.groups == 1)


def install(model) -> int:
    """Gives every trainable, eligible `Conv2D` of `model` the product's kernel gradient (once per layer; a
    layer frozen later keeps it: its forward is unchanged and its kernel gets no gradient). Returns how many
    layers have it now; 0 where it does not apply (see the module docstring)."""
    if not _cpu_only():
        return 0
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not eligible(layer):
            continue
        if layer.trainable and "convolution_op" not in vars(layer):
            layer.convolution_op = types.MethodType(_convolution_op, layer)
        count += "convolution_op" in vars(layer)
    return count


def _product_pays(x, kernel) -> bool:
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    h, w = x.shape[1], x.shape[2]
    if _NATIVE.get():
        return False
    return (kh, kw) == (1, 1) or (h is not None and w is not None and h * w <= MAX_PATCH_POSITIONS)


def _convolution_op(layer, inputs, kernel):
    from keras.src.layers.convolutional.base_conv import BaseConv

    forward = functools.partial(BaseConv.convolution_op, layer)
    if not _product_pays(inputs, kernel):
        return forward(inputs, kernel)
    import tensorflow as tf

    padding = layer.padding.upper()

    @tf.custom_gradient
    def conv(x, k):
        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=k, out_backprop=dy,
                                                strides=[1, 1, 1, 1], padding=padding)
            return dx, kernel_gradient(x, dy, k.shape, padding)

        return forward(x, k), grad

    # the kernel as a tensor (its read, autocast under mixed precision) so the gradient is the tensor's
    return conv(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


def kernel_gradient(x, dy, kernel_shape, padding: str):
    """The gradient of a stride-1 convolution's kernel of `kernel_shape` (kh, kw, cin, cout) from its input `x`
    and output gradient `dy` (NHWC): `patches(x)^T @ dy`, reshaped to the kernel."""
    import tensorflow as tf

    kh, kw, cin, cout = (int(d) for d in kernel_shape)
    patches = x if (kh, kw) == (1, 1) else tf.image.extract_patches(
        x, sizes=[1, kh, kw, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding=padding)
    product = tf.matmul(tf.reshape(patches, (-1, kh * kw * cin)), tf.reshape(dy, (-1, cout)), transpose_a=True)
    return tf.reshape(product, (kh, kw, cin, cout))
