"""TensorFlow's oneDNN kernels against its default (Eigen) kernels, on what a cached run computes.

`import inceptune` sets TF_ENABLE_ONEDNN_OPTS=1 on x86-64 unless it is set: TensorFlow itself turns oneDNN on
only on CPUs that report AVX-512 VNNI/BF16 or AMX instructions. This measures both settings side by side, each
in a fresh process (the switch is read once, when TensorFlow loads), alternating, `--rounds` times:

    top step    one training step of a cached stage's suffix: InceptionV3's mixed9-mixed10 and a Dense head on
                the stored mixed8 features (150x150 input: 3x3x1280), BatchNorm frozen, Adam, batch 32
                (`prefix_cut.suffix_model`, Keras's `train_step` in one tf.function, as the runner runs it)
    forward N   the compiled forward (`inference.compiled_forward`) of the whole InceptionV3 at NxN, batch 32:
                the feature pass's work (150) and the forward `forward_peak.py` reports (299)

Random weights and inputs, the first calls (tracing) left out, the best of three timed passes in each process;
the table gives each setting's median over the rounds and oneDNN's speed-up (Eigen's time / oneDNN's).

Run:  .venv/bin/python benchmarks/onednn.py            (about 8 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SETTINGS = ("0", "1")   # TF_ENABLE_ONEDNN_OPTS: Eigen's kernels, oneDNN's


def child() -> dict:
    import inceptune  # noqa: F401  (the setting is the parent's: an explicit 0 or 1, which inceptune keeps)
    import keras
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    from inceptune.inference import compiled_forward
    from inceptune.prefix_cut import find_cut, suffix_model

    def best(fn, n_calls):
        fn()   # tracing
        times = []
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(n_calls):
                out = fn()
            [np.asarray(v) for v in tf.nest.flatten(out)]
            times.append(time.perf_counter() - t)
        return min(times) / n_calls

    out = {"onednn": bool(_pywrap_util_port.IsMklEnabled())}
    rng = np.random.default_rng(0)
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(150, 150, 3), pooling="avg")
    head = keras.layers.Dense(10, activation="softmax")(keras.layers.Dense(1024, activation="relu")(base.output))
    model = keras.Model(base.input, head)
    upto = [layer.name for layer in model.layers].index("mixed8")
    for i, layer in enumerate(model.layers):
        layer.trainable = i > upto and not isinstance(layer, keras.layers.BatchNormalization)
    suffix = suffix_model(model, find_cut(model))
    suffix.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    x = rng.random((32, *suffix.inputs[0].shape[1:]), dtype="float32")
    y = rng.integers(0, 10, 32)
    step = tf.function(lambda a, b: suffix.train_step((a, b)))
    out["top_step_s"] = best(lambda: step(x, y), 8)
    for size in (150, 299):
        net = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(size, size, 3),
                                             pooling="avg")
        forward = compiled_forward(net)
        images = rng.random((32, size, size, 3), dtype="float32")
        out[f"forward_{size}_img_s"] = 32 / best(lambda f=forward, x=images: f(x), 4)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child()))
        return
    runs = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for s in SETTINGS:
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=s, TF_CPP_MIN_LOG_LEVEL="2")
            done = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, env=env,
                                  check=True)
            res = json.loads(done.stdout.strip().splitlines()[-1])
            assert res["onednn"] == (s == "1"), res   # the setting reached TensorFlow
            runs[s].append(res)
            print(f"round {r + 1}, TF_ENABLE_ONEDNN_OPTS={s}: top step {1000 * res['top_step_s']:.0f} ms, forward "
                  f"150 px {res['forward_150_img_s']:.1f} img/s, 299 px {res['forward_299_img_s']:.1f} img/s",
                  flush=True)
    med = {s: {k: float(np.median([r[k] for r in runs[s]])) for k in runs[s][0] if k != "onednn"} for s in SETTINGS}
    print(f"\nmedians over {args.rounds} rounds     Eigen (0)   oneDNN (1)   oneDNN's speed-up")
    e, o = med["0"], med["1"]
    print(f"top step (ms)                {1000 * e['top_step_s']:9.0f}   {1000 * o['top_step_s']:10.0f}   "
          f"{e['top_step_s'] / o['top_step_s']:10.2f}")
    for size in (150, 299):
        k = f"forward_{size}_img_s"
        print(f"forward {size} px (img/s)     {e[k]:9.1f}   {o[k]:10.1f}   {o[k] / e[k]:10.2f}")


if __name__ == "__main__":
    main()
