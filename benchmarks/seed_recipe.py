"""The seeds' fine-tuning recipe, plain Keras (A) against `inceptune train` with `cache: auto` (B), side by side.

Same machine, same data (generated, 5 visually distinct classes), same split (one manifest), same initial
backbone weights (random, saved once and loaded by both), same seed. The seeds' recipe:

    stage 1: backbone frozen, new head (GAP -> Dense(1024) -> Dense(classes)), Adam 1e-3, 10 epochs
    stage 2: unfreeze the top blocks (base_model.layers[249:] = mixed9, mixed10), recompile at 1e-4, 5 epochs

A runs it as the seeds write it (`model.fit` on images every epoch). B runs the equivalent recipe through
inceptune, whose feature cache computes the frozen prefix once per stage. Prints both wall times, A/B, both
test accuracies; then forward throughput at 299x299 of the compiled path and of `model.predict`, and the
fraction of this CPU's FP32 peak the compiled path reaches (InceptionV3 ~5.7 G multiply-adds per image).

Run:  .venv/bin/python benchmarks/seed_recipe.py            (about 16 minutes on 2 cores)
      .venv/bin/python benchmarks/seed_recipe.py --quick    (a smoke run)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402


def _peak_gflops() -> tuple[float, str]:
    """FP32 peak: cores x GHz x 32 FLOP/cycle (two 8-wide AVX2 FMA units) — the usual x86 server figure."""
    mhz = None
    flags = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":")[1])
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    ghz = (mhz or 2500.0) / 1000.0
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 16
    cores = os.cpu_count() or 1
    return cores * ghz * per_cycle, f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"


def calibrate_batchnorm(base, data, size, n=64):
    """A stand-in for ImageNet weights (which cannot be downloaded here): a random InceptionV3 whose
    BatchNorm moving statistics are set from one training-mode pass over n training images (momentum 0), so
    its frozen features are normalised and informative instead of collapsing through 94 random layers."""
    import keras
    from keras.applications.inception_v3 import preprocess_input

    x = np.concatenate([b for b, _ in data.dataset("train", batch_size=32, image_size=size, shuffle=False)])[:n]
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    base(preprocess_input(x), training=True)
    for bn, m in zip(bns, saved):
        bn.momentum = m


def plain_keras(data, size, weights_path, labels, head_init, epochs=(10, 5), batch=32, seed=0, freeze_bn=False):
    """The seeds' code, with the data already split (the same manifest as inceptune's run).

    Two things are made identical to B so that the two runs compute the same thing and their accuracies can
    be compared: the head starts from the same initial weights (`head_init`), and every epoch sees the training
    images in the same order as B's epoch (inceptune seeds each epoch's shuffle by (seed, stage, epoch)). The
    order is delivered as one dataset per stage, read by ONE `fit(epochs=...)` call per stage with
    `steps_per_epoch` (Keras 3 then carries the iterator across epochs), as the seeds write it.
    """
    import keras
    from keras.applications.inception_v3 import InceptionV3, preprocess_input

    from inceptune.training import epoch_seed

    keras.utils.set_random_seed(seed)
    base = InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    base.load_weights(weights_path)
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    hidden = keras.layers.Dense(1024, activation="relu")
    out_layer = keras.layers.Dense(len(labels), activation="softmax")
    out = out_layer(hidden(x))
    model = keras.Model(base.input, out)
    hidden.set_weights(head_init["head_dense_0"])
    out_layer.set_weights(head_init["head_output"])
    steps = data.steps_per_epoch("train", batch)

    def train_stage(stage, n_epochs):
        ds = None
        for e in range(n_epochs):
            d = data.dataset("train", batch_size=batch, image_size=size, seed=epoch_seed(seed, stage, e))
            ds = d if ds is None else ds.concatenate(d)
        return ds.map(lambda im, y: (preprocess_input(im), y))

    val = data.dataset("val", batch_size=batch, image_size=size).map(lambda im, y: (preprocess_input(im), y))
    for layer in base.layers:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h1 = model.fit(train_stage(0, epochs[0]), validation_data=val, epochs=epochs[0], steps_per_epoch=steps, verbose=0)
    assert base.layers[248].name == "mixed8"  # layers[249:] is mixed9 and mixed10, B's from:mixed9
    for layer in base.layers[249:]:
        # freeze_bn: the fix Keras's transfer-learning guide gives, BatchNorm layers kept in inference mode
        layer.trainable = not (freeze_bn and isinstance(layer, keras.layers.BatchNormalization))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h2 = model.fit(train_stage(1, epochs[1]), validation_data=val, epochs=epochs[1], steps_per_epoch=steps, verbose=0)
    test = data.dataset("test", batch_size=batch, image_size=size).map(lambda im, y: (preprocess_input(im), y))
    _, acc = model.evaluate(test, verbose=0)
    history = [{k: float(v[e]) for k, v in h.history.items()} for h in (h1, h2) for e in range(len(h.history["loss"]))]
    return float(acc), history


def last_epoch_accuracy(run, data, size):
    """Test accuracy of the run's LAST epoch (what A reports), restored from its checkpoints."""
    import json

    from inceptune.inference import predict_proba
    from inceptune.training import CheckpointWeights

    state = json.loads((run.dir / "checkpoints" / "state.json").read_text())
    CheckpointWeights(run.model, run.dir / "checkpoints", state["base"]).load(state["weights"])
    probs = predict_proba(run.model, data.dataset("test", batch_size=32, image_size=size))
    return float(np.mean(np.argmax(probs, axis=1) == data.label_ids("test")))


def phases(run) -> str:
    lines = [line for line in (run.dir / "log.txt").read_text().splitlines() if line.startswith("time:")]
    return lines[-1] if lines else ""


def throughput(size=299, n=64, batch=32):
    import keras
    import tensorflow as tf

    model = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    x = np.random.default_rng(0).uniform(-1, 1, (n, size, size, 3)).astype("float32")
    fwd = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    fwd(x[:batch])
    model.predict(x[:batch], batch_size=batch, verbose=0)
    best = {"compiled": 0.0, "predict": 0.0}
    for _ in range(2):
        t = time.perf_counter()
        for i in range(0, n, batch):
            np.asarray(fwd(x[i:i + batch]))
        best["compiled"] = max(best["compiled"], n / (time.perf_counter() - t))
        t = time.perf_counter()
        model.predict(x, batch_size=batch, verbose=0)
        best["predict"] = max(best["predict"], n / (time.perf_counter() - t))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600, help="total images (5 classes)")
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--quick", action="store_true", help="100 images at 75px, 2+1 epochs, no throughput part")
    ap.add_argument("--no-extras", action="store_true", help="A and B only (no float16, BatchNorm or throughput runs)")
    args = ap.parse_args()
    if args.quick:
        args.images, args.size = 100, 75
    epochs = (2, 1) if args.quick else (10, 5)

    import keras
    from helpers import make_image_folder

    from inceptune.data import DataConfig, SplitConfig, prepare
    from inceptune.training import train

    work = Path(tempfile.mkdtemp(prefix="inceptune-bench-"))
    os.environ.setdefault("INCEPTUNE_CACHE_DIR", str(work / "cache"))
    make_image_folder(work / "images", classes=5, per_class=args.images // 5, size=args.size)
    data = prepare(DataConfig(dir=str(work / "images"), split=SplitConfig(val=0.15, test=0.15, seed=0)),
                   work / "prep", progress=False)
    keras.utils.set_random_seed(0)
    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(args.size, args.size, 3))
    calibrate_batchnorm(base, data, args.size)
    weights = work / "backbone.weights.h5"
    base.save_weights(weights)
    counts = {s: len(data.paths(s)) for s in ("train", "val", "test")}
    print(f"data: {counts} images, {args.size}x{args.size}, 5 classes; epochs {epochs}")

    recipe = {
        "data": {"manifest": str(work / "prep" / "manifest.csv"), "image_size": args.size, "batch_size": 32},
        "model": {"backbone": "inception_v3", "weights": str(weights), "head": {"dense": [1024]},
                  "batchnorm": "follow"},  # the seeds' BatchNorm behaviour: unfrozen BN layers train
        "stages": [{"name": "head", "train": "head", "epochs": epochs[0], "lr": 1e-3},
                   {"name": "top", "train": "head,from:mixed9", "epochs": epochs[1], "lr": 1e-4}],
        "cache": "auto",
        "seed": 0,
    }
    from inceptune.recipe import load_recipe
    from inceptune.training import build_model

    # B's initial head weights (its model is built from the recipe with seed 0): A starts from the same ones
    initial = build_model(load_recipe(recipe).model, 5, args.size, seed=0)
    head_init = {n: initial.get_layer(n).get_weights() for n in ("head_dense_0", "head_output")}
    del initial

    t = time.perf_counter()
    acc_a, hist_a = plain_keras(data, args.size, weights, data.labels, head_init, epochs=epochs)
    time_a = time.perf_counter() - t
    print(f"A plain Keras (seeds):         {time_a:8.1f} s   test accuracy {acc_a:.4f} (last epoch)", flush=True)

    t = time.perf_counter()
    run = train(recipe, out=work / "run", verbose=False)
    time_b = time.perf_counter() - t
    x = np.concatenate([b for b, _ in data.dataset("test", batch_size=32, image_size=args.size)])
    kept_probs = np.asarray(run.model(x))
    acc_b_last = last_epoch_accuracy(run, data, args.size)
    acc_b = run.metrics["accuracy"]
    print(f"B inceptune train, cache auto: {time_b:8.1f} s   test accuracy {acc_b_last:.4f} (last epoch, as A), "
          f"{acc_b:.4f} (the model inceptune keeps: best epoch by val_loss)")
    print(f"A/B = {time_a / time_b:.2f}   last-epoch accuracy difference B-A {100 * (acc_b_last - acc_a):+.1f} points")
    print("  B " + phases(run))
    print("  the same computation, epoch by epoch (A: fit on images; B: cached features):")
    print("    stage epoch   A loss    B loss   A val_loss  B val_loss  A val_acc B val_acc")
    for a, b in zip(hist_a, run.history):
        print(f"    {b['stage']:<5} {b['epoch']:>5} {a['loss']:9.4f} {b['loss']:9.4f} {a['val_loss']:11.4f} "
              f"{b['val_loss']:11.4f} {a['val_accuracy']:9.4f} {b['val_accuracy']:9.4f}")
    cached = [line for line in (work / "run" / "log.txt").read_text().splitlines()
              if line.strip().startswith(("cache", "test predictions"))]
    print("\n".join("  " + c.strip() for c in cached))

    if args.no_extras:
        return
    # float16 feature storage: half the memory; its effect on accuracy and predictions, same recipe and seed
    recipe16 = dict(recipe, cache={"mode": "auto", "dtype": "float16"})
    t = time.perf_counter()
    run16 = train(recipe16, out=work / "run16", verbose=False)
    time_16 = time.perf_counter() - t
    diff = float(np.max(np.abs(kept_probs - np.asarray(run16.model(x)))))
    print(f"B with float16 cache:          {time_16:8.1f} s   test accuracy {run16.metrics['accuracy']:.4f} "
          f"({100 * (run16.metrics['accuracy'] - acc_b):+.1f} points vs float32; max |prob diff| {diff:.2e})")

    # The same pair with BatchNorm kept in inference mode in the unfrozen blocks (A: Keras's documented fix;
    # B: inceptune's default policy `batchnorm: frozen`). Stage 2 then does not collapse, so the last-epoch
    # accuracies measure the models rather than where a collapsed model happens to land.
    t = time.perf_counter()
    acc_a2, _ = plain_keras(data, args.size, weights, data.labels, head_init, epochs=epochs, freeze_bn=True)
    time_a2 = time.perf_counter() - t
    print(f"A' plain Keras, BN frozen:     {time_a2:8.1f} s   test accuracy {acc_a2:.4f} (last epoch)", flush=True)
    recipe_bn = dict(recipe, model=dict(recipe["model"], batchnorm="frozen"))
    os.environ["INCEPTUNE_CACHE_DIR"] = str(work / "cache-bn")  # an empty cache: B' pays its own image pass
    t = time.perf_counter()
    run_bn = train(recipe_bn, out=work / "run-bn-frozen", verbose=False)
    time_bn = time.perf_counter() - t
    acc_b2 = last_epoch_accuracy(run_bn, data, args.size)
    print(f"B' batchnorm: frozen:          {time_bn:8.1f} s   test accuracy {acc_b2:.4f} (last epoch), "
          f"{run_bn.metrics['accuracy']:.4f} (kept)")
    print(f"A'/B' = {time_a2 / time_bn:.2f}   last-epoch accuracy difference B'-A' "
          f"{100 * (acc_b2 - acc_a2):+.1f} points")

    if not args.quick:
        tp = throughput()
        peak, how = _peak_gflops()
        flops = 2 * 5.7e9
        print(f"\nforward @299, InceptionV3, batch 32: compiled {tp['compiled']:.1f} img/s, model.predict "
              f"{tp['predict']:.1f} img/s, ratio {tp['compiled'] / tp['predict']:.2f}")
        gflops = tp["compiled"] * flops / 1e9
        print(f"compiled path: {gflops:.0f} GFLOP/s = {100 * gflops / peak:.0f}% "
              f"of FP32 peak {peak:.0f} GFLOP/s ({how})")


if __name__ == "__main__":
    main()
