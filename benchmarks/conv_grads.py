"""The kernel gradient of a trained convolution: TensorFlow's `Conv2DBackpropFilter` against one matrix product
(`inceptune.conv_grads`), per InceptionV3 shape, and a cached mixed9-10 training step with each; then the same
step with Adam's update in one kernel (`inceptune.training.fused_adam`) against Keras's.

Part 1, one process: for the convolution shapes of InceptionV3's blocks (batch 32, the map sides at 150 px and
299 px), milliseconds of the kernel gradient alone, each a graph function, alternated, the median of 5 rounds.
Part 2, fresh processes alternating (native, product, native, product, ...): ms per training step of the suffix a
cached `head,from:mixed9` stage trains (mixed9, mixed10 and the head on mixed8's features, the runner's suffix
model, Keras's Adam, BatchNorm frozen), graph mode, after a warm-up; `INCEPTUNE_CONV_GRADS=native` for
TensorFlow's own.
Part 3, the same processes with the product: Keras's Adam update against `ResourceApplyAdam` (`fused_adam.fuse`).

Run:  .venv/bin/python benchmarks/conv_grads.py [--size 150] [--rounds 3]     (about 6 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (map side, kernel, in channels, out channels): InceptionV3's convolutions at 150 px (3, 7, 16) and 299 px (8)
SHAPES = [(3, (1, 1), 1280, 320), (3, (3, 3), 448, 384), (3, (1, 3), 384, 384), (3, (1, 1), 2048, 448),
          (8, (1, 1), 1280, 320), (8, (3, 3), 448, 384), (8, (1, 3), 384, 384),
          (17, (1, 1), 768, 192), (17, (7, 1), 192, 192), (35, (1, 1), 288, 64), (35, (3, 3), 64, 96)]


def kernel_gradients(rounds: int = 5) -> None:
    import inceptune  # noqa: F401  (its TensorFlow settings, as in a run)
    import numpy as np
    import tensorflow as tf

    from inceptune.conv_grads import MAX_PATCH_POSITIONS, kernel_gradient

    print(f"{'map':>5}{'kernel':>8}{'in':>6}{'out':>6}{'native ms':>11}{'product ms':>12}{'ratio':>7}  used")
    for side, k, cin, cout in SHAPES:
        x = tf.random.normal((32, side, side, cin))
        dy = tf.random.normal((32, side, side, cout))
        shape = k + (cin, cout)
        native = tf.function(lambda x, dy, shape=shape: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=shape, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"))
        product = tf.function(lambda x, dy, shape=shape: kernel_gradient(x, dy, shape, "SAME"))
        times = {native: [], product: []}
        for f in times:
            np.asarray(f(x, dy))
        for _ in range(rounds):
            for f in times:
                t = time.perf_counter()
                for _ in range(3):
                    out = f(x, dy)
                np.asarray(out)
                times[f].append((time.perf_counter() - t) / 3 * 1000)
        a, b = (statistics.median(times[f]) for f in (native, product))
        used = "product" if k == (1, 1) or side * side <= MAX_PATCH_POSITIONS else "native"
        print(f"{side:>5}{'x'.join(map(str, k)):>8}{cin:>6}{cout:>6}{a:11.2f}{b:12.2f}{a / b:7.2f}  {used}", flush=True)


def child_step(size: int, steps: int = 20) -> dict:
    import inceptune  # noqa: F401
    import keras
    import numpy as np
    import tensorflow as tf

    from inceptune import conv_grads, freezing
    from inceptune.heads import build_classifier
    from inceptune.prefix_cut import find_cut, suffix_model
    from inceptune.training import fused_adam

    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    model = build_classifier(base, 10, {"dense": [1024]}, check_inputs=False, consume_backbone=True)
    freezing.unfreeze(model, "head,from:mixed9", batchnorm="frozen")
    installed = conv_grads.install(model)
    suffix = suffix_model(model, find_cut(model))
    suffix.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    suffix.optimizer.build(suffix.trainable_variables)
    fused = os.environ.get("BENCH_FUSED") == "1" and fused_adam.fuse(suffix.optimizer)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32,) + tuple(suffix.inputs[0].shape[1:])).astype("float32")
    y = rng.integers(0, 10, 32)
    step = tf.function(lambda a, b: suffix.train_step((a, b)))
    for _ in range(3):
        step(x, y)
    t = time.perf_counter()
    for _ in range(steps):
        out = step(x, y)
    float(out["loss"])
    return {"ms": (time.perf_counter() - t) / steps * 1000, "installed": installed, "fused": fused}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3, help="process pairs of part 2")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_step(args.size)))
        return
    print("Part 1: the kernel gradient alone, batch 32 (ms, median of 5)")
    kernel_gradients()
    print(f"\nPart 2: a cached mixed9-10 training step at {args.size} px, batch 32 (ms per step, fresh processes)")
    variants = {"native": {"INCEPTUNE_CONV_GRADS": "native"}, "product": {"INCEPTUNE_CONV_GRADS": "product"},
                "product + fused Adam": {"INCEPTUNE_CONV_GRADS": "product", "BENCH_FUSED": "1"}}
    results = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, env in variants.items():
            out = subprocess.run([sys.executable, __file__, "--child", "--size", str(args.size)],
                                 env=dict(os.environ, **env), capture_output=True, text=True, check=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            results[name].append(res["ms"])
            print(f"  {name:22} {res['ms']:7.1f} ms  ({res['installed']} convolutions with the product, Adam "
                  f"{'in one kernel' if res['fused'] else 'as Keras writes it'})", flush=True)
    a, b, c = (statistics.median(results[k]) for k in variants)
    print(f"median: TensorFlow's gradient {a:.1f} ms, the product {b:.1f} ms ({a / b:.2f}x)")
    print(f"Part 3: with Adam in one kernel {c:.1f} ms ({b / c:.2f}x the product alone, {a / c:.2f}x in all)")

if __name__ == "__main__":
    main()
