"""The seeds' fine-tuning recipe: plain Keras (A, A') against `inceptune train` (B) and B's floor, in one run.

Every figure is a whole process, timed from its start to its exit, as a user runs it:

    A   plain Keras as the seeds write it: frozen InceptionV3, new head (GAP -> Dense(1024) -> Dense(classes)),
        Adam 1e-3 for 10 epochs; then `base_model.layers[249:]` (mixed9, mixed10) unfrozen, Adam 1e-4, 5 epochs;
        `model.fit` on images every epoch, BatchNorm layers of the unfrozen blocks updating their statistics.
    A'  the same with BatchNorm kept in inference mode (the fix Keras's transfer-learning guide gives).
    B   `inceptune train recipe.yaml` of the same recipe (`batchnorm: frozen`, `cache: auto`, an empty cache).
    floor  what a cached run cannot avoid, each part measured alone: starting Python and importing TensorFlow,
        one pass of the frozen prefix over every image at the compiled-forward rate (decoded images in memory),
        and each stage's training steps and validation on the features at their steady rate (after the first,
        tracing epoch), times its epochs.

Same data, same split (one manifest), same initial backbone (saved once, loaded by all), same initial head and
the same batch order in every epoch, so A' and B compute the same thing and their test accuracies can be
compared (the accuracy column: the last epoch's model for A/A', the model B keeps, chosen by val_loss).
The main table runs B (each with an empty feature cache), its floor and A' once per seed (`--seeds`, default 3)
and reports their median times: one run of the same process varies by 10-20% on these shared machines.

Data: Fashion-MNIST (70,000 real 28x28 images, Debian package `dataset-fashion-mnist`) when it is installed,
else generated images of 5 distinct classes. ImageNet weights cannot be downloaded here: the backbone is a
random InceptionV3 whose BatchNorm statistics are set from one pass over training images (`calibrate_batchnorm`).

The second table: how B grows with images and epochs, A' at the other sizes estimated from its own per-epoch
times measured there (a run of two epochs per stage: its time, plus its second, steady epochs' times for each
further epoch).

Run:  .venv/bin/python benchmarks/seed_recipe.py                (about 40 minutes on 2 cores)
      .venv/bin/python benchmarks/seed_recipe.py --no-growth    (the main table, ~25 minutes)
      .venv/bin/python benchmarks/seed_recipe.py --growth-only  (the growth table's larger rows, ~20 minutes)
      .venv/bin/python benchmarks/seed_recipe.py --quick        (a smoke run of every part, ~4 minutes)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A and A' run plain Keras in the environment this script was started in, TensorFlow's own defaults included:
# `import inceptune` (here, in setup) may set TF_ENABLE_ONEDNN_OPTS, which is B's choice, not plain Keras's
PLAIN_ENV = dict(os.environ)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
TOP_FROM = 249  # base_model.layers[249:] is mixed9 and mixed10 (B's `from:mixed9`)


# === data and the shared starting point (not timed) ===

def _fashion_images(n: int, seed: int = 0):
    """n Fashion-MNIST training images (a class-balanced random draw) as (uint8 28x28 arrays, labels)."""
    names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        if not any((FASHION / f"{stem}{ext}").exists() for ext in (".gz", "")):
            return None
    def read(stem, offset):
        path = FASHION / f"{stem}.gz"
        raw = gzip.open(path).read() if path.exists() else (FASHION / stem).read_bytes()
        return np.frombuffer(raw, np.uint8, offset=offset)

    x = read("train-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    y = read("train-labels-idx1-ubyte", 8)
    rng = np.random.default_rng(seed)
    per = n // 10
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per, replace=False) for c in range(10)])
    return x[idx], [names[c] for c in y[idx]]


def write_images(folder: Path, n: int, size: int) -> str:
    """n images in class folders; returns which data it is."""
    from PIL import Image

    found = _fashion_images(n)
    if found is None:
        from helpers import make_image_folder

        make_image_folder(folder, classes=5, per_class=n // 5, size=size)
        return f"generated images, 5 classes, {size}x{size}"
    for i, (img, label) in enumerate(zip(*found)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).convert("RGB").save(folder / label / f"{i:05d}.png")
    return "Fashion-MNIST, 10 classes, 28x28 resized to the input"


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


def setup(work: Path, n: int, size: int, epochs, seeds=(0,)) -> dict:
    """Images, the manifest (split once), the backbone weights, and per seed B's recipe and its initial head
    (`recipe.yaml` and `head_init.npz` for seed 0, `recipe-<s>.yaml` and `head_init-<s>.npz` for the others)."""
    import keras
    import yaml

    from inceptune.data import DataConfig, SplitConfig, prepare
    from inceptune.recipe import load_recipe
    from inceptune.training import build_model

    what = write_images(work / "images", n, size)
    # a third of the images test the models: enough that 2 points of accuracy are several images
    split = SplitConfig(val=0.1, test=1 / 3, seed=0, method="stratified")
    data = prepare(DataConfig(dir=str(work / "images"), split=split), work / "prep", progress=False)
    keras.utils.set_random_seed(0)
    base = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    calibrate_batchnorm(base, data, size)
    base.save_weights(work / "backbone.weights.h5")
    recipe = {
        "data": {"manifest": str(work / "prep" / "manifest.csv"), "image_size": size, "batch_size": 32},
        "model": {"backbone": "inception_v3", "weights": str(work / "backbone.weights.h5"),
                  "head": {"dense": [1024]}, "batchnorm": "frozen"},
        "stages": [{"name": "head", "train": "head", "epochs": epochs[0], "lr": 1e-3},
                   {"name": "top", "train": "head,from:mixed9", "epochs": epochs[1], "lr": 1e-4}],
        "cache": "auto", "calibrate": "none", "seed": 0,
    }
    for seed in seeds:  # the seed sets B's initial head and every epoch's batch order; A and A' take the same
        recipe["seed"] = seed
        (work / _seeded("recipe.yaml", seed)).write_text(yaml.safe_dump(recipe))
        initial = build_model(load_recipe(recipe).model, data.num_classes, size, seed=seed)
        np.savez(work / _seeded("head_init.npz", seed),
                 **{f"{name}_{i}": w for name in ("head_dense_0", "head_output")
                    for i, w in enumerate(initial.get_layer(name).get_weights())})
    counts = {s: len(data.paths(s)) for s in ("train", "val", "test")}
    return {"data": what, "counts": counts, "size": size, "epochs": list(epochs)}


# === the measured processes ===

def _seeded(name: str, seed: int) -> str:
    """The file of a seed: `name` itself for seed 0, `stem-<seed>.ext` for the others."""
    stem, ext = name.split(".", 1)
    return name if seed == 0 else f"{stem}-{seed}.{ext}"


def child_plain(work: Path, size: int, epochs, freeze_bn: bool, seed: int = 0) -> dict:
    """A / A': the seeds' code on the prepared split, in this process (timed by the parent)."""
    t_start = time.perf_counter()
    import keras
    from keras.applications.inception_v3 import InceptionV3, preprocess_input

    from inceptune.data import DataConfig, prepare
    from inceptune.training import epoch_seed

    data = prepare(DataConfig(manifest=str(work / "prep" / "manifest.csv")), None, progress=False)
    keras.utils.set_random_seed(seed)
    base = InceptionV3(weights=None, include_top=False, input_shape=(size, size, 3))
    base.load_weights(work / "backbone.weights.h5")
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    hidden = keras.layers.Dense(1024, activation="relu")
    out_layer = keras.layers.Dense(data.num_classes, activation="softmax")
    model = keras.Model(base.input, out_layer(hidden(x)))
    init = np.load(work / _seeded("head_init.npz", seed))
    hidden.set_weights([init["head_dense_0_0"], init["head_dense_0_1"]])
    out_layer.set_weights([init["head_output_0"], init["head_output_1"]])
    steps = data.steps_per_epoch("train", 32)

    def stage_data(stage, n_epochs):
        # every epoch's batches in B's order (inceptune seeds each epoch's shuffle by (seed, stage, epoch)),
        # read by ONE fit(epochs=...) per stage, as the seeds write it
        ds = None
        for e in range(n_epochs):
            d = data.dataset("train", batch_size=32, image_size=size, seed=epoch_seed(seed, stage, e))
            ds = d if ds is None else ds.concatenate(d)
        return ds.map(lambda im, y: (preprocess_input(im), y))

    class Times(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.t = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.t[-1] = time.perf_counter() - self.t[-1]

    val = data.dataset("val", batch_size=32, image_size=size).map(lambda im, y: (preprocess_input(im), y))
    for layer in base.layers:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t_fit = time.perf_counter()
    times = [Times(), Times()]
    head = model.fit(stage_data(0, epochs[0]), validation_data=val, epochs=epochs[0], steps_per_epoch=steps,
                     verbose=0, callbacks=[times[0]])
    assert base.layers[TOP_FROM - 1].name == "mixed8"
    for layer in base.layers[TOP_FROM:]:
        layer.trainable = not (freeze_bn and isinstance(layer, keras.layers.BatchNormalization))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(stage_data(1, epochs[1]), validation_data=val, epochs=epochs[1], steps_per_epoch=steps, verbose=0,
              callbacks=[times[1]])
    t_test = time.perf_counter()
    test = data.dataset("test", batch_size=32, image_size=size).map(lambda im, y: (preprocess_input(im), y))
    _, acc = model.evaluate(test, verbose=0)
    return {"accuracy": float(acc), "until_fit": t_fit - t_start, "test": time.perf_counter() - t_test,
            "head_epochs": times[0].t, "top_epochs": times[1].t, "head_loss": head.history["loss"]}


def child_floor(work: Path, size: int, epochs) -> dict:
    """B's floor, each part alone: the prefix over every image at the compiled-forward rate, then each stage's
    steps and validation on its features at the steady rate (the runner's own suffix, loss and XLA choice)."""
    import inceptune  # noqa: F401  (first, as in B's process: the TensorFlow settings it makes before TF loads)
    import keras
    import tensorflow as tf

    from inceptune import freezing
    from inceptune.cached_stage import use_xla
    from inceptune.prefix_cut import find_cut, suffix_model
    from inceptune.data import DataConfig, load_image, prepare
    from inceptune.inference import compiled_forward
    from inceptune.recipe import load_recipe
    from inceptune.selectors import resolve
    from inceptune.training import build_model
    from inceptune.training.model import compile_stage

    recipe = load_recipe(work / "recipe.yaml")
    data = prepare(DataConfig(manifest=str(work / "prep" / "manifest.csv")), None, progress=False)
    model = build_model(recipe.model, data.num_classes, size, seed=0)
    paths = [r["path"] for r in data.rows]
    images = np.stack([load_image(p, size) for p in paths]).astype("float32")
    cuts = []
    for stage in recipe.stages:
        freezing.apply_trainable(model, resolve(model, stage.train), batchnorm="frozen")
        cuts.append(find_cut(model).layer)
    prefix = keras.Model(model.inputs, [model.get_layer(c).output for c in dict.fromkeys(cuts)])
    forward = compiled_forward(prefix)
    forward(images[:32])
    t = time.perf_counter()
    outs = [[np.asarray(o) for o in tf.nest.flatten(forward(images[i:i + 32]))] for i in range(0, len(images), 32)]
    prefix_s = time.perf_counter() - t
    feats = {c: np.concatenate([o[k] for o in outs]) for k, c in enumerate(dict.fromkeys(cuts))}
    split = np.array([r["split"] for r in data.rows])
    parts = {"prefix_pass": prefix_s, "images": len(images)}
    for stage, cut in zip(recipe.stages, cuts):
        _, optimizer = compile_stage(model, stage, batchnorm="frozen")
        optimizer.build(model.trainable_variables)
        suffix = suffix_model(model, find_cut(model))
        suffix.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        xt, yt = feats[cut][split == "train"], data.label_ids("train")
        xv, yv = feats[cut][split == "val"], data.label_ids("val")
        suffix.test_step((xt[:1], yt[:1]))
        seconds = _steady_epoch(suffix, xt, yt, xv, yv, jit=use_xla(suffix, stage.epochs))
        parts[f"{stage.name}_epoch"] = seconds
        parts[f"{stage.name}_steps"] = seconds * stage.epochs
    return parts


def _steady_epoch(suffix, xt, yt, xv, yv, *, jit: bool, batch: int = 32) -> float:
    """Seconds of one epoch of a suffix's training steps and validation, after a first (tracing) epoch, as the
    runner runs them: with XLA every batch through one XLA program, the last one filled up to the full batch
    with zero-weighted rows (where `pads_exactly`), else the last batch through a graph function."""
    import tensorflow as tf

    from inceptune.cached_stage import fill_batch, pads_exactly

    pad = jit and pads_exactly(suffix)
    full = tf.function(lambda *a: suffix.train_step(a), jit_compile=jit)
    rest = tf.function(lambda *a: suffix.train_step(a), reduce_retracing=True)
    test = tf.function(lambda a, b: suffix.test_step((a, b)), reduce_retracing=True)

    def step(x, y):
        if pad:
            return full(*fill_batch(x, y, None, batch))
        return (full if len(x) == batch else rest)(x, y)

    def epoch():
        for i in range(0, len(xt), batch):
            step(xt[i:i + batch], yt[i:i + batch])
        for i in range(0, len(xv), batch):
            result = test(xv[i:i + batch], yv[i:i + batch])
        return float(result["loss"])

    epoch()  # the first epoch traces (and compiles with XLA): not part of the floor
    t = time.perf_counter()
    epoch()
    return time.perf_counter() - t


def timed(cmd, env=None) -> tuple[float, str]:
    """Seconds of a process from its start to its exit, and its output; `env`: its whole environment."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ if env is None else env, cwd=ROOT)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def run_child(kind: str, work: Path, args: list[str] = (), env=None) -> tuple[float, dict]:
    """A measured child: plain Keras (`plain`: in `PLAIN_ENV`, updated by `env`) or the floor (this environment)."""
    env = dict(PLAIN_ENV, **(env or {})) if kind == "plain" else None
    seconds, out = timed([sys.executable, __file__, "--child", kind, "--work", str(work), *args], env)
    return seconds, json.loads(out.strip().splitlines()[-1])


def run_b(work: Path, name: str, seed: int = 0, cache: str | None = None) -> tuple[float, dict, str]:
    cache = work / f"cache-{cache or name}"  # by default an empty feature cache: B pays its own image pass
    seconds, _ = timed([sys.executable, "-m", "inceptune", "train", str(work / _seeded("recipe.yaml", seed)), "--out",
                        str(work / name)], env=dict(os.environ, INCEPTUNE_CACHE_DIR=str(cache)))
    metrics = json.loads((work / name / "metrics.json").read_text())
    phases = [line for line in (work / name / "log.txt").read_text().splitlines() if line.startswith("time:")]
    return seconds, metrics, phases[-1] if phases else ""


def last_epoch_accuracy(work: Path, name: str, size: int, kept_accuracy: float) -> tuple[float, int, int]:
    """B's test accuracy at its last epoch (A and A' keep their last epoch: the same computation), the epoch B
    kept (its best val_loss) and the last. Not timed: the run folder's model with the last epoch's checkpoint."""
    state = json.loads((work / name / "checkpoints" / "state.json").read_text())
    best, last = state["best_epoch"], state["n"]
    if best == last:
        return kept_accuracy, best, last
    import keras

    from inceptune.data import DataConfig, prepare

    data = prepare(DataConfig(manifest=str(work / "prep" / "manifest.csv")), None, progress=False)
    images = data.dataset("test", batch_size=32, image_size=size, shuffle=False).map(lambda x, y: x)
    truth = np.asarray(data.label_ids("test"))
    model = keras.models.load_model(work / name / "model.keras")

    def accuracy():
        return float(np.mean(np.argmax(model.predict(images, verbose=0), axis=1) == truth))

    # the kept model scored here as the run scored it: the check that this path reads the split and labels alike
    assert abs(accuracy() - kept_accuracy) <= 1.5 / len(truth), "the test split is read differently here"
    folder = work / name / "checkpoints"
    base, changed = np.load(folder / state["base"]), np.load(folder / state["weights"])
    for i, variable in enumerate(model.weights):
        variable.assign((changed if f"v{i}" in changed.files else base)[f"v{i}"])
    return accuracy(), best, last


def plain_line(name: str, seconds: float, res: dict) -> str:
    """A plain-Keras child's result line: its time, test accuracy and median epoch times per stage."""
    return (f"{LABELS[name]}: {seconds:7.1f} s, test accuracy {res['accuracy']:.4f}; per epoch: head "
            f"{np.median(res['head_epochs']):.1f} s, top {np.median(res['top_epochs']):.1f} s")


def same_computation(work: Path, b_name: str, plain_loss: list) -> str:
    """A' and B side by side on the head stage's training loss per epoch: the same computation (the same
    initial head, batches and updates) differs only in float rounding, which the epochs then amplify."""
    import csv

    with open(work / b_name / "history.csv") as f:
        ours = [float(r["loss"]) for r in csv.DictReader(f) if r["stage"] == "head"]
    pairs = ", ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(plain_loss[:3], ours[:3]))
    rel = [abs(a - b) / abs(a) for a, b in zip(plain_loss, ours)]
    return (f"head-stage training loss per epoch, A'/B: {pairs}; relative difference epoch 1 {rel[0]:.1e}, "
            f"epoch {len(rel)} {rel[-1]:.1e}")


def floor_total(start: float, parts: dict) -> float:
    return start + parts["prefix_pass"] + sum(v for k, v in parts.items() if k.endswith("_steps"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=900, help="images of the main table (a third are the test split)")
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 150 images at 75 px, 2+1 epochs")
    ap.add_argument("--no-growth", action="store_true", help="the main table only")
    ap.add_argument("--growth-only", action="store_true", help="the growth table's larger rows only (no A, A/B)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--seeds", type=int, default=3,
                    help="seeds of the main table (A', B and the floor once per seed; their median times)")
    ap.add_argument("--freeze-bn", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        work = Path(args.work)
        meta = json.loads((work / "setup.json").read_text())
        epochs = meta["epochs"]
        if args.child == "plain":
            print(json.dumps(child_plain(work, meta["size"], epochs, args.freeze_bn, args.seed)))
        elif args.child == "floor":
            print(json.dumps(child_floor(work, meta["size"], epochs)))
        return
    if args.quick:
        args.images, args.size = 150, 75
    epochs = (2, 1) if args.quick else (10, 5)
    sizes = [(args.images, epochs)] + ([] if args.no_growth else
                                       [(args.images * 2, epochs), (args.images * 2, tuple(2 * e for e in epochs))])
    first_row = 0  # the row whose A and A' run whole (the main table)
    if args.growth_only:
        sizes, first_row = sizes[1:], None
    base = Path(tempfile.mkdtemp(prefix="inceptune-seed-bench-"))
    start = [sys.executable, "-c", "import tensorflow, keras; from tensorflow.python.util import _pywrap_util_port "
             "as port; print(port.IsMklEnabled())"]
    runs = [timed(start, PLAIN_ENV) for _ in range(3)]
    starts = sorted(t for t, _ in runs)
    start_s = starts[1]  # the median of three: one start varies by seconds on this VM
    # plain Keras's kernels here: TensorFlow's default (oneDNN only on CPUs with AVX-512 VNNI/BF16 or AMX)
    plain_onednn = runs[0][1].split()[-1] == "True"
    print(f"python start + import tensorflow, keras: {start_s:.1f} s "
          f"(median of {', '.join(f'{s:.1f}' for s in starts)}); TensorFlow's oneDNN kernels "
          f"{'on' if plain_onednn else 'off'} by default on this CPU (B: on)")

    rows = []
    for k, (n, ep) in enumerate(sizes):
        work = base / f"n{n}-e{ep[0]}-{ep[1]}"
        work.mkdir()
        seeds = range(args.seeds) if k == first_row else (0,)
        meta = setup(work, n, args.size, ep, seeds)
        (work / "setup.json").write_text(json.dumps(meta))
        print(f"\n[{n} images: {meta['data']}; split {meta['counts']}; epochs {ep[0]}+{ep[1]}]", flush=True)
        row = {"images": n, "counts": meta["counts"], "epochs": f"{ep[0]}+{ep[1]}", "runs": []}
        for seed in seeds:  # per seed (initial head, batch order): B with an empty cache, the floor, and A'
            b_name = "b" if seed == 0 else f"b-{seed}"
            t_b, metrics_b, phases_b = run_b(work, b_name, seed)
            acc_last, kept, last = last_epoch_accuracy(work, b_name, args.size, metrics_b["accuracy"])
            print(f"  seed {seed}: B  inceptune train: {t_b:7.1f} s, test accuracy {metrics_b['accuracy']:.4f} (the "
                  f"epoch it kept: {kept} of {last}, by val_loss; at its last epoch {acc_last:.4f})\n"
                  f"     {phases_b}", flush=True)
            _, parts = run_child("floor", work)
            floor = floor_total(start_s, parts)
            print(f"  seed {seed}: floor {floor:.1f} s: start {start_s:.1f} + prefix pass {parts['prefix_pass']:.1f} "
                  f"({parts['images'] / parts['prefix_pass']:.1f} img/s) + "
                  + " + ".join(f"{name} {parts[f'{name}_steps']:.1f} ({parts[f'{name}_epoch']:.2f}/epoch)"
                               for name in ("head", "top")), flush=True)
            run = {"seed": seed, "B": t_b, "floor": floor, "acc_B": metrics_b["accuracy"], "acc_B_last": acc_last}
            if k == first_row:
                t, res = run_child("plain", work, ["--freeze-bn", "--seed", str(seed)])
                run["A2"], run["acc_A2"] = t, res["accuracy"]
                print(f"  seed {seed}: {plain_line('A2', t, res)}", flush=True)
                print(f"  seed {seed}: {same_computation(work, b_name, res['head_loss'])}", flush=True)
            row["runs"].append(run)
        for name in ("B", "floor", "A2"):  # the median over seeds: one run of each varies by 10-20% on this VM
            if name in row["runs"][0]:
                row[name] = float(np.median([r[name] for r in row["runs"]]))
        for name in ("acc_B", "acc_B_last", "acc_A2"):
            if name in row["runs"][0]:
                row[name] = float(np.mean([r[name] for r in row["runs"]]))
        if k == first_row:  # A once (seed 0): the seeds' own code, BatchNorm statistics drifting
            t, res = run_child("plain", work)
            row["A"], row["acc_A"] = t, res["accuracy"]
            print(f"  {plain_line('A', t, res)}", flush=True)
            if not plain_onednn:  # A' with the kernels B runs, once (seed 0): how much of A'/B they account for
                t, res = run_child("plain", work, ["--freeze-bn"], env={"TF_ENABLE_ONEDNN_OPTS": "1"})
                row["A2_onednn"], row["acc_A2_onednn"] = t, res["accuracy"]
                print(f"  {plain_line('A2_onednn', t, res)}", flush=True)
        else:  # A' from its own per-epoch times at this size: a run of 2+2 epochs, its second epochs steady
            (work / "setup.json").write_text(json.dumps(dict(meta, epochs=[2, 2])))
            t2, res = run_child("plain", work, ["--freeze-bn"])
            head, top = res["head_epochs"][-1], res["top_epochs"][-1]
            row["A2"] = t2 + (ep[0] - 2) * head + (ep[1] - 2) * top
            print(f"  A' estimated: {row['A2']:7.1f} s (a 2+2-epoch run {t2:.1f} s; steady epochs: head {head:.1f} s, "
                  f"top {top:.1f} s)", flush=True)
        rows.append(row)

    first = rows[0]
    if first_row is None:
        print_growth(rows)
        return
    runs = first["runs"]
    print(f"\nThe seeds' recipe, {first['images']} images ({first['counts']}), process start to exit; A' and B: the "
          f"median time and the mean test accuracy over {len(runs)} seed(s), A: seed 0:")
    print(f"{'':34}{'seconds':>8}{'test acc':>10}   seconds per seed")
    for name in ("A", "A2", "A2_onednn", "B", "floor"):
        if name not in first:
            continue
        acc = first.get(f"acc_{name}")
        each = ", ".join(f"{r[name]:.1f}" for r in runs) if name in runs[0] else ""
        print(f"{LABELS[name]:<34}{first[name]:8.1f}{'' if acc is None else f'{acc:.4f}':>10}   {each}")
    print(f"A/B {first['A'] / first['B']:.2f}   A'/B {first['A2'] / first['B']:.2f}   B/floor "
          f"{first['B'] / first['floor']:.2f}   test accuracy B - A' {100 * (first['acc_B'] - first['acc_A2']):+.1f} "
          f"points, at B's last epoch {100 * (first['acc_B_last'] - first['acc_A2']):+.1f} (means over seeds)")
    if "A2_onednn" in first:
        print(f"A' with oneDNN on (seed 0) / B (median) {first['A2_onednn'] / first['B']:.2f}")
    if len(runs) > 1:
        a2, b, b_last = (np.array([r[key] for r in runs]) for key in ("acc_A2", "acc_B", "acc_B_last"))
        print(f"test accuracy over {len(a2)} seeds (initial head and batch order; the same split): A' "
              f"{a2.mean():.4f} ({a2.min():.4f}-{a2.max():.4f}), B {b.mean():.4f} ({b.min():.4f}-{b.max():.4f}), "
              f"B at its last epoch {b_last.mean():.4f} ({b_last.min():.4f}-{b_last.max():.4f})")
        for label, ours in (("B (the epoch it kept)", b), ("B at its last epoch, as A' keeps", b_last)):
            diff = 100 * (ours - a2)
            print(f"  {label} - A' per seed {', '.join(f'{round(d, 1) + 0.0:+.1f}' for d in diff)}, mean "
                  f"{diff.mean():+.1f} points")
        a2_b = ", ".join(f"{r['A2'] / r['B']:.2f}" for r in runs)
        b_floor = ", ".join(f"{r['B'] / r['floor']:.2f}" for r in runs)
        print(f"per seed: A'/B {a2_b}; B/floor {b_floor}")
    if len(rows) > 1:
        print_growth(rows)


def print_growth(rows):
    print("\nHow B grows with images and epochs (seconds; A' beyond the main table's row from its per-epoch times):")
    print(f"{'images':>7}{'epochs':>8}{QUOTE.join(['A', '']):>9}{'B':>8}{'floor':>8}"
          f"{QUOTE.join(['A', '/B']):>7}{'B/floor':>9}")
    for r in rows:
        print(f"{r['images']:>7}{r['epochs']:>8}{r['A2']:9.1f}{r['B']:8.1f}{r['floor']:8.1f}"
              f"{r['A2'] / r['B']:7.2f}{r['B'] / r['floor']:9.2f}")


QUOTE = "'"
LABELS = {"A": "A  plain Keras (the seeds)", "A2": "A' plain Keras, BatchNorm frozen",
          "A2_onednn": "A' with oneDNN on (seed 0)",
          "B": "B  inceptune train", "floor": "B's floor"}


if __name__ == "__main__":
    main()
