"""Images per second of ``inference.predict_proba`` (compiled tf.function) vs ``model.predict``, side by side.

Model: InceptionV3, weights=None, 299x299, 64 random images, batch size 32. Both paths are warmed up first
(tracing excluded); each is then timed ``--repeats`` times and the best run is kept.

Run: .venv/bin/python benchmarks/predict_path.py [--images 64] [--size 299] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from inceptune.inference import predict_proba

    model = keras.applications.InceptionV3(weights=None, input_shape=(args.size, args.size, 3))
    images = np.random.default_rng(0).uniform(0, 255, (args.images, args.size, args.size, 3)).astype("float32")
    images = images / 127.5 - 1.0  # keras.applications InceptionV3 expects [-1, 1] (no preprocess layer)

    def fast():
        return predict_proba(model, images, batch_size=args.batch_size)

    def stock():
        return model.predict(images, batch_size=args.batch_size, verbose=0)

    # Warm-up: tracing and first-call allocation, excluded from the timings.
    a, b = fast(), stock()
    diff = float(np.abs(a - b).max())

    # Interleave the two paths so background load affects both alike.
    t_fast, t_stock = [], []
    for _ in range(args.repeats):
        t_fast.append(_once(fast))
        t_stock.append(_once(stock))
    fast_ips = args.images / min(t_fast)
    stock_ips = args.images / min(t_stock)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"InceptionV3 weights=None @{args.size}, {args.images} images, batch {args.batch_size}, "
          f"{device}, best of {args.repeats}")
    print(f"{'path':<34}{'img/s':>10}{'s/run':>10}")
    print(f"{'predict_proba (tf.function)':<34}{fast_ips:>10.1f}{min(t_fast):>10.2f}")
    print(f"{'model.predict':<34}{stock_ips:>10.1f}{min(t_stock):>10.2f}")
    print(f"ratio predict_proba / model.predict: {fast_ips / stock_ips:.2f}x   (max abs diff of outputs {diff:.2g})")


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
