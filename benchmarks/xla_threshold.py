"""When XLA pays for a cached stage: compile cost against per-epoch saving, for the suffixes the seeds' recipe trains.

For each suffix of InceptionV3 (the runner's own suffix model, loss, optimizer and Keras `train_step`, on
random features of the cut's shape), one process measures, with and without XLA (`jit_compile=True` on the
full-batch step; the last, smaller batch through the graph function either way, as `cache._StageFitter` runs
it): the first epoch (tracing, and compiling with XLA) and the steady epoch after it. XLA pays from
`break-even = (first_xla - first_graph) / (epoch_graph - epoch_xla)` epochs on. The runner's rule
(`cache.use_xla`: from how many epochs on it compiles a suffix with XLA) is printed beside each row.

Run:  .venv/bin/python benchmarks/xla_threshold.py [--size 150] [--train 431]     (about 4 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SUFFIXES = [("head (GAP, Dense 1024, Dense 5)", "head"), ("mixed10 + head", "head,from:mixed10"),
            ("mixed9-10 + head", "head,from:mixed9")]


def child(selector: str, size: int, n: int, jit: bool, batch: int = 32) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from inceptune import freezing
    from inceptune.prefix_cut import find_cut, suffix_model
    from inceptune.heads import build_classifier

    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    model = build_classifier(base, 5, {"dense": [1024]}, check_inputs=False, consume_backbone=True)
    freezing.unfreeze(model, selector, batchnorm="frozen")
    suffix = suffix_model(model, find_cut(model))
    suffix.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])
    suffix.optimizer.build(suffix.trainable_variables)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n,) + tuple(suffix.inputs[0].shape[1:])).astype("float32")
    y = rng.integers(0, 5, n)
    suffix.test_step((x[:1], y[:1]))
    params = sum(int(np.prod(v.shape)) for v in suffix.trainable_weights)
    signature = [tf.TensorSpec((None,) + x.shape[1:], tf.float32), tf.TensorSpec((None,), tf.int64)]
    graph = tf.function(lambda a, b: suffix.train_step((a, b)), input_signature=signature)
    full = tf.function(lambda a, b: suffix.train_step((a, b)), jit_compile=True) if jit else graph

    def epoch():
        t = time.perf_counter()
        for i in range(0, n, batch):
            (full if len(x[i:i + batch]) == batch else graph)(x[i:i + batch], y[i:i + batch])
        float(suffix.metrics[0].result())
        return time.perf_counter() - t

    first = epoch()
    steady = min(epoch() for _ in range(2))
    from inceptune.cached_stage import use_xla

    from_epochs = next((e for e in range(1, 100) if use_xla(suffix, e)), None)
    return {"first": first, "epoch": steady, "params": params, "xla_from": from_epochs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--train", type=int, default=431, help="training images per epoch")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        selector, jit = json.loads(args.child)
        print(json.dumps(child(selector, args.size, args.train, jit)))
        return
    print(f"InceptionV3 at {args.size} px, {args.train} training images, batch 32 (seconds)")
    print(f"{'suffix':<34}{'params':>11}{'first':>7}{'epoch':>7}{'first XLA':>10}{'epoch XLA':>10}"
          f"{'break-even':>12}  runner")
    for label, selector in SUFFIXES:
        got = {}
        for jit in (False, True):
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps([selector, jit]), "--size",
                                   str(args.size), "--train", str(args.train)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            got[jit] = json.loads(proc.stdout.strip().splitlines()[-1])
        g, x = got[False], got[True]
        saving = g["epoch"] - x["epoch"]
        even = (x["first"] - g["first"]) / saving if saving > 0 else float("inf")
        rule = f"XLA from {g['xla_from']} epochs" if g["xla_from"] else "no XLA"
        print(f"{label:<34}{g['params']:>11,}{g['first']:7.2f}{g['epoch']:7.2f}{x['first']:10.2f}{x['epoch']:10.2f}"
              f"{even:12.1f}  {rule}", flush=True)


if __name__ == "__main__":
    main()
