"""Training throughput on 1 vs 2 logical CPU devices: strategy none against mirrored (distribute.py's code path).

Each configuration runs in a fresh process (logical devices must be set before TensorFlow starts): the CPU is split
into 2 logical devices in both, so the only difference is the strategy. The model is built, compiled and trained
as a run does it (`build_model`, `compile_stage` inside `Distribution.scope()`, Keras `fit` on a tf.data pipeline
of the global batch); the first epoch (tracing) is left out. Expected on a CPU: no gain, since both logical devices
share the same cores, and the all-reduce and the batch split cost a little.

What a GPU user should expect instead: the training steps scale with the GPUs (each replica computes
batch / replicas images, the strategy all-reduces the gradients), close to linearly while the per-replica batch
keeps each GPU busy; the feature-cache pass, calibration, test predictions and the report stay on one device
per process (README, "Beyond one device").

Run:  .venv/bin/python benchmarks/distribute.py [--size 64] [--batch 32] [--steps 8]     (about 2 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(strategy: str, size: int, batch: int, steps: int, epochs: int) -> dict:
    from inceptune.distribute import setup_distribution, split_cpu

    split_cpu(2)
    import numpy as np
    import tensorflow as tf

    from inceptune.recipe.schema import DistributeConfig, ModelConfig, Stage
    from inceptune.training.model import build_model, compile_stage

    devices = ("CPU:0", "CPU:1") if strategy == "mirrored" else ()
    dist = setup_distribution(DistributeConfig(strategy, devices))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * steps, size, size, 3)).astype("float32")
    y = rng.integers(0, 5, batch * steps)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().prefetch(2)
    with dist.scope():
        model = build_model(ModelConfig(backbone="inception_mini", weights=None), 5, size)
        compile_stage(model, Stage(name="all", train="all", lr=1e-3))
        t0 = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)  # tracing
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.fit(ds, epochs=epochs, verbose=0)
        seconds = time.perf_counter() - t0
    return {"strategy": strategy, "replicas": dist.replicas, "first_epoch_s": round(first, 2),
            "images_per_s": round(batch * steps * epochs / seconds, 1), "per_replica_batch": batch // dist.replicas}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--one", choices=("none", "mirrored"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.size, args.batch, args.steps, args.epochs)))
        return
    print(f"inception_mini at {args.size} px, global batch {args.batch}, {args.steps} steps x {args.epochs} epochs, "
          f"{os.cpu_count()} cores, CPU split into 2 logical devices")
    rows = []
    for strategy in ("none", "mirrored"):
        out = subprocess.run([sys.executable, __file__, "--one", strategy, "--size", str(args.size), "--batch",
                              str(args.batch), "--steps", str(args.steps), "--epochs", str(args.epochs)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"  {r['strategy']:<9} {r['replicas']} replica(s), {r['per_replica_batch']:>3} per replica: "
              f"{r['images_per_s']:>7.1f} img/s (first epoch, tracing: {r['first_epoch_s']:.1f} s)")
    print(f"  mirrored / none: {rows[1]['images_per_s'] / rows[0]['images_per_s']:.2f}x")


if __name__ == "__main__":
    main()
