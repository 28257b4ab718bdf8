"""The offline demo: transfer learning shown on real data that ships with scikit-learn, in about two minutes.

The data is scikit-learn's ``load_digits``: 1,797 real 8×8 grey-level scans of handwritten digits (UCI "Optical
Recognition of Handwritten Digits", 43 writers), bundled inside scikit-learn, so nothing is downloaded. Each is
written as a 32×32 RGB PNG (bilinear upsampling, ink bright on black) into ``OUT/images/<digit>/``.

The demo plays transfer learning end to end, with a small network standing in for ImageNet's InceptionV3:

1. **Pretraining** (the *source* task, standing in for ImageNet): ``inception_mini`` learns digits 0–4 from
   random weights (``SOURCE_RECIPE``). Its backbone weights are cached in the user's cache folder
   (``pretrained_dir()``), so a second demo run skips this step and says so.
2. **Transfer** (the *target* task, new classes and few labels): digits 5–9 with ``LABELLED`` labelled images
   per digit (plus ``VALIDATION`` for validation; every other 5–9 image is the test set). The pretrained
   backbone gets a new head, trained alone on cached features, then everything is fine-tuned
   (``TRANSFER_STAGES``).
3. **From scratch**, for comparison: the same model, the same labelled images, random weights, at least as many
   epochs of full training (``SCRATCH_STAGES``).

Then it prints a table (method, labelled images, test accuracy, wall time), predicts a few test images with the
transferred model, exports it (``OUT/export/digits.keras``, verified on real test images) and ends with the
command that trains on the user's own folder with ImageNet weights. ``OUT/demo.json`` records the numbers.
``--quick`` pretrains on fewer images and epochs and tests on fewer images (80 s against 132 s here).

Example:
    >>> result = run_demo("demo_run")
    >>> [(row["method"], row["test_accuracy"]) for row in result["table"]]
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from inceptune._io import atomic_path, atomic_write_json, atomic_write_text, prepare_output_dir

__all__ = ["SOURCE_RECIPE", "TRANSFER_STAGES", "SCRATCH_STAGES", "write_digits", "split_digits", "source_recipe",
           "demo_recipes", "pretrained_dir", "run_demo", "format_table", "format_demo"]

IMAGE_SIZE = 32  # inception_mini's minimum; the 8x8 digits are upsampled 4x
SOURCE_DIGITS = ("0", "1", "2", "3", "4")
TARGET_DIGITS = ("5", "6", "7", "8", "9")
LABELLED = 10  # labelled training images per target digit: the small budget where pretraining pays
VALIDATION = 10  # validation images per target digit (early stopping and the best epoch)

_MODEL = {"backbone": "inception_mini", "head": {"pooling": "avg", "dense": [], "dropout": 0.1}}
# Pretraining on digits 0-4. BatchNorm learns its statistics here (policy `train`), so the transferred backbone
# arrives with statistics of real digits; the target runs then keep them frozen.
SOURCE_RECIPE = {
    "data": {"csv": None, "image_size": IMAGE_SIZE, "batch_size": 32, "augment": "none",
             "split": {"val": 0.1, "test": 0.1, "seed": 0, "method": "stratified"}},
    "model": {**_MODEL, "weights": "none", "batchnorm": "train"},
    "stages": [{"name": "all", "train": "all", "epochs": 13, "lr": 3e-3, "schedule": "cosine", "warmup_epochs": 1}],
    "cache": "auto",
    "seed": 0,
}
# Transfer: the new head alone on the frozen pretrained backbone (cached features: about 0.1 s an epoch), then
# everything at a lower learning rate.
TRANSFER_STAGES = [
    {"name": "head", "train": "head", "epochs": 20, "lr": 1e-2},
    {"name": "all", "train": "all", "epochs": 30, "lr": 1e-3, "schedule": "cosine"},
]
# From scratch: everything trains, for more full epochs than the transfer run gets, at the learning rate that
# trains this network best from random weights (the earlier from-scratch demo's, which reached 0.98 test accuracy
# with all 1,257 training digits).
SCRATCH_STAGES = [{"name": "all", "train": "all", "epochs": 46, "lr": 3e-3, "schedule": "cosine", "warmup_epochs": 1}]
# --quick: pretraining on 60 images per source digit for fewer epochs, 40 test images per target digit.
QUICK = {"source_per_class": 60, "source_epochs": 6, "test_per_class": 40, "transfer_epochs": (10, 10),
         "scratch_epochs": 15}


def write_digits(folder, *, per_class: int | None = None, image_size: int = IMAGE_SIZE) -> dict:
    """Writes scikit-learn's bundled handwritten digits as RGB PNG files, one sub-folder per digit.

    Args:
        folder: str or Path. Created if missing; files go to ``folder/<digit>/digit_<index>.png``.
        per_class: int or None. Keep only the first ``per_class`` images of each digit. Defaults to None (all
            1,797).
        image_size: int. Side of the written images (bilinear upsampling of the 8×8 scans). Defaults to 32.

    Returns:
        dict of str -> int. Images written per digit.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    counts: dict[str, int] = {}
    for index, (image, target) in enumerate(zip(digits.images, digits.target)):
        label = str(int(target))
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        grey = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)  # 0..16 ink levels -> 0..255
        big = Image.fromarray(grey, mode="L").resize((image_size, image_size), Image.BILINEAR).convert("RGB")
        (folder / label).mkdir(parents=True, exist_ok=True)
        big.save(folder / label / f"digit_{index:04d}.png")
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


def split_digits(images_dir, *, labelled: int = LABELLED, validation: int = VALIDATION,
                 source_per_class: int | None = None, test_per_class: int | None = None) -> tuple[list, list]:
    """The demo's two tasks as CSV rows over ``images_dir/<digit>/`` (files in name order).

    Args:
        images_dir: str or Path. As written by ``write_digits``.
        labelled, validation: int. Target images per digit for training and for validation.
        source_per_class: int or None. Source images per digit (None: all; the source run splits them itself).
        test_per_class: int or None. Target test images per digit (None: every remaining image).

    Returns:
        (source_rows, target_rows): ``[path, label]`` rows for digits 0–4 and ``[path, label, split]`` rows for
        digits 5–9, the first ``labelled`` files of each digit ``train``, the next ``validation`` ``val``, then
        ``test``.
    """
    images_dir = Path(images_dir).resolve()
    files = {d: sorted((images_dir / d).glob("*.png")) for d in SOURCE_DIGITS + TARGET_DIGITS}
    source = [[str(p), d] for d in SOURCE_DIGITS for p in files[d][:source_per_class]]
    target = []
    for d in TARGET_DIGITS:
        end = labelled + validation + (test_per_class if test_per_class is not None else len(files[d]))
        for i, p in enumerate(files[d][:end]):
            target.append([str(p), d, "train" if i < labelled else "val" if i < labelled + validation else "test"])
    return source, target


def source_recipe(source_csv, *, quick: bool = False) -> dict:
    """The pretraining recipe (``SOURCE_RECIPE`` reading ``source_csv``; fewer epochs with ``quick``)."""
    source = copy.deepcopy(SOURCE_RECIPE)
    source["data"]["csv"] = str(Path(source_csv).resolve())
    if quick:
        source["stages"][0]["epochs"] = QUICK["source_epochs"]
    return source


def demo_recipes(source_csv, target_csv, source_weights, *, quick: bool = False) -> dict:
    """The demo's three recipes as dicts, for ``load_recipe`` / ``train``.

    Args:
        source_csv, target_csv: str or Path. The CSV files of ``split_digits``'s rows.
        source_weights: str or Path. The pretrained backbone weights (``.weights.h5``) the transfer run starts from.
        quick: bool. Fewer epochs (``QUICK``).

    Returns:
        dict with keys ``pretrain``, ``transfer`` and ``scratch``.
    """
    source = source_recipe(source_csv, quick=quick)
    target_data = {"csv": str(Path(target_csv).resolve()), "image_size": IMAGE_SIZE, "batch_size": 16,
                   "augment": "none"}  # digits must not be flipped; the split comes from the CSV
    transfer_stages, scratch_stages = copy.deepcopy(TRANSFER_STAGES), copy.deepcopy(SCRATCH_STAGES)
    if quick:
        for stage, epochs in zip(transfer_stages, QUICK["transfer_epochs"]):
            stage["epochs"] = epochs
        scratch_stages[0]["epochs"] = QUICK["scratch_epochs"]
    common = {"data": target_data, "cache": "auto", "seed": 0}
    return {
        "pretrain": source,
        "transfer": {**copy.deepcopy(common), "stages": transfer_stages,
                     "model": {**copy.deepcopy(_MODEL), "weights": str(Path(source_weights).resolve()),
                               "batchnorm": "frozen"}},
        "scratch": {**copy.deepcopy(common), "stages": scratch_stages,
                    "model": {**copy.deepcopy(_MODEL), "weights": "none", "batchnorm": "frozen"}},
    }


def pretrained_dir() -> Path:
    """Where the demo keeps its pretrained source weights: ``$INCEPTUNE_CACHE_DIR/pretrained`` when that is set,
    else ``$XDG_CACHE_HOME/inceptune/pretrained`` (``~/.cache/inceptune/pretrained``)."""
    env = os.environ.get("INCEPTUNE_CACHE_DIR")
    if env:
        return Path(env) / "pretrained"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "inceptune" / "pretrained"


def _source_key(recipe: dict, rows: list) -> str:
    """What the pretrained weights depend on: the source recipe (without paths), the images and Keras."""
    import keras

    recipe = copy.deepcopy(recipe)
    recipe["data"].pop("csv")
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for path, label in rows:
        h.update(label.encode() + hashlib.sha256(Path(path).read_bytes()).digest())
    h.update(keras.__version__.encode())
    return h.hexdigest()[:16]


def _pretrain(recipe: dict, rows: list, out: Path, verbose: bool, say) -> dict:
    """The pretrained source backbone: from the user's cache when the same pretraining ran before, else trained
    into ``out`` and cached. Returns the source row of the table plus ``weights`` (the file) and ``cached``."""
    folder = pretrained_dir()
    stem = f"inception_mini-digits{''.join(SOURCE_DIGITS)}-{_source_key(recipe, rows)}"
    weights, info_path = folder / f"{stem}.weights.h5", folder / f"{stem}.json"
    if weights.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        say(f"demo: 1/3 pretraining skipped: reusing the backbone pretrained on digits 0-4 in an earlier demo run "
            f"({weights}; delete it to pretrain again)")
        return {**info, "weights": str(weights), "cached": True, "seconds": 0.0}

    from inceptune.architectures import load_backbone
    from inceptune.training import train

    say(f"demo: 1/3 pretraining inception_mini from random weights on {len(rows)} digits 0-4 (the stand-in for "
        f"ImageNet; done once, then cached in {folder})")
    t0 = time.time()
    run = train(recipe, out=out, verbose=verbose)
    manifest = list(csv.DictReader(open(run.dir / "manifest.csv", newline="", encoding="utf-8")))
    test_accuracy = _precise_batchnorm(run.model, run.labels, manifest)
    seconds = time.time() - t0
    say(f"demo: BatchNorm statistics re-estimated on the {sum(r['split'] == 'train' for r in manifest)} source "
        f"training images with the final weights: source test accuracy {run.metrics['accuracy']:.3f} -> "
        f"{test_accuracy:.3f}")
    backbone = load_backbone("inception_mini", weights=None, image_size=IMAGE_SIZE)
    trained = {layer.name: layer for layer in run.model.layers}
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(trained[layer.name].get_weights())
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights) as tmp:
        backbone.save_weights(tmp)
    info = {"method": "pretraining on digits 0-4 (stand-in for ImageNet)", "labelled_images": len(rows),
            "test_accuracy": test_accuracy, "test_size": sum(r["split"] == "test" for r in manifest)}
    atomic_write_json(info_path, info)
    return {**info, "weights": str(weights), "cached": False, "seconds": round(seconds, 1), "run": str(run.dir)}


def _precise_batchnorm(model, labels: list, manifest: list[dict]) -> float:
    """Sets every BatchNorm layer's moving statistics to the exact statistics of the training images under the
    final weights, and returns the test accuracy after it.

    With Keras's momentum of 0.99, a short run (a few hundred steps) ends with moving averages that still lag the
    weights of its last epochs: the pretrained network scored well on its training batches but far worse in
    inference mode. One forward pass over all training images at once in training mode, with momentum 0, makes
    each layer's moving mean and variance those of the images it sees (the "precise BatchNorm" of Wu & Johnson,
    2021); no weight changes.
    """
    import keras

    from inceptune.data import load_image
    from inceptune.inference import predict_proba

    def images(split):
        rows = [r for r in manifest if r["split"] == split]
        return np.stack([load_image(r["path"], IMAGE_SIZE) for r in rows]).astype(np.float32), rows

    train_images, _ = images("train")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in norms]
    for layer in norms:
        layer.momentum, layer.trainable = 0.0, True
    model(train_images, training=True)
    for layer, (momentum, trainable) in zip(norms, saved):
        layer.momentum, layer.trainable = momentum, trainable
    test_images, rows = images("test")
    predicted = np.asarray(labels)[predict_proba(model, test_images).argmax(axis=1)]
    return float(np.mean(predicted == np.asarray([r["label"] for r in rows])))


def _write_csv(path: Path, header: list, rows: list) -> None:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def run_demo(out="demo_run", *, quick: bool = False, force: bool = False, verbose: bool = True) -> dict:
    """Runs the offline demo: pretraining (or its cache) → transfer and from-scratch runs → table → predict →
    export, all under ``out``.

    Args:
        out: str or Path. The demo folder: ``images/``, ``source.csv``, ``target.csv``, ``pretrain/`` (when
            pretraining ran), ``transfer/`` and ``scratch/`` (run folders), ``export/``, ``demo.json``. Defaults to
            ``demo_run``.
        quick: bool. Shorter pretraining and training, fewer test images (``QUICK``). Defaults to False.
        force: bool. Replace an earlier demo folder. Defaults to False.
        verbose: bool. Print the runs' progress. Defaults to True (the steps and the table print either way
            through ``say``; ``inceptune demo --quiet`` prints only the final summary).

    Returns:
        dict. What ``demo.json`` holds: ``table`` (one row per method: ``method``, ``labelled_images``,
        ``test_accuracy``, ``test_size``, ``seconds``), ``pretraining_cached``, ``predictions`` (a few target test
        files with their true digit and top-3), ``export_check``, ``seconds`` and the ``paths``.

    Raises:
        InceptuneError: ``out`` exists and is not empty (without ``force``).
    """
    from inceptune.training import train  # imports Keras: demo (and the CLI) stay light

    t0 = time.time()
    out = Path(out)
    prepare_output_dir(out, force=force, kind="demo", markers=("demo.json", "images"))
    say = print if verbose else (lambda *a, **k: None)

    # === data: real handwritten digits, bundled with scikit-learn; two tasks over them ===
    counts = write_digits(out / "images")
    source_rows, target_rows = split_digits(
        out / "images", source_per_class=QUICK["source_per_class"] if quick else None,
        test_per_class=QUICK["test_per_class"] if quick else None)
    _write_csv(out / "source.csv", ["path", "label"], source_rows)
    _write_csv(out / "target.csv", ["path", "label", "split"], target_rows)
    labelled = sum(1 for r in target_rows if r[2] == "train")
    say(f"demo: wrote {sum(counts.values())} real handwritten digits (scikit-learn load_digits, 8x8 upsampled to "
        f"{IMAGE_SIZE}x{IMAGE_SIZE} RGB PNG) to {out / 'images'}; source task: digits 0-4 ({len(source_rows)} "
        f"images, {out / 'source.csv'}); target task: digits 5-9 with {LABELLED} labelled images each "
        f"({out / 'target.csv'})")

    # === 1. pretraining, or its cache ===
    source = _pretrain(source_recipe(out / "source.csv", quick=quick), source_rows, out / "pretrain", verbose, say)
    recipes = demo_recipes(out / "source.csv", out / "target.csv", source["weights"], quick=quick)

    # === 2. transfer and 3. from scratch: same model, same labelled images ===
    runs, table = {}, [{key: source[key] for key in ("method", "labelled_images", "test_accuracy", "test_size",
                                                     "seconds")}]
    for step, name, method in ((2, "transfer", "transfer: pretrained backbone, new head, then fine-tuned"),
                               (3, "scratch", "from scratch: same model and images, random weights")):
        say(f"demo: {step}/3 {method} ({labelled} labelled images of digits 5-9)")
        started = time.time()
        runs[name] = run = train(recipes[name], out=out / name, verbose=verbose)
        table.append({"method": method, "labelled_images": labelled,
                      "test_accuracy": (run.metrics or {}).get("accuracy"),
                      "test_size": (run.metrics or {}).get("num_samples"),
                      "seconds": round(time.time() - started, 1)})
    run = runs["transfer"]

    shown, export_path, check = _showcase(run, target_rows, out)

    result = {
        "data": "scikit-learn load_digits (real 8x8 handwritten digits)",
        "quick": bool(quick),
        "counts": counts,
        "table": table,
        "pretraining_cached": source["cached"],
        "pretrained_weights": source["weights"],
        "predictions": shown,
        "export_check": str(check),
        "seconds": round(time.time() - t0, 1),
        "paths": {
            "images": str(out / "images"),
            "target_csv": str(out / "target.csv"),
            "transfer": str(runs["transfer"].dir),
            "scratch": str(runs["scratch"].dir),
            "report": str(runs["transfer"].dir / "report.html"),
            "model": str(runs["transfer"].dir / "model.keras"),
            "export": str(export_path),
        },
    }
    atomic_write_json(out / "demo.json", result)
    say("")
    say(format_demo(result))
    return result


def _showcase(run, target_rows: list, out: Path) -> tuple[list, Path, object]:
    """Predicts five target test images with the transferred run and exports its model, verified on real test
    images. Returns (predictions as demo.json shows them, the export path, the verification)."""
    from inceptune.data import load_image
    from inceptune.export import export_model, verify_export
    from inceptune.prediction import predict

    test = [r for r in target_rows if r[2] == "test"]
    picks = test[:: max(1, len(test) // 5)][:5]  # five test images spread over the digits
    truth = {path: label for path, label, _ in picks}
    shown = [{"path": p["path"], "true": truth.get(p["path"]), "top": [[lab, round(prob, 4)] for lab, prob in p["top"]]}
             for p in predict(run, [path for path, _, _ in picks], top_k=3)]
    images = np.stack([load_image(path, IMAGE_SIZE) for path, _, _ in test[:8]]).astype(np.float32)
    export_path = export_model(run.model, out / "export" / "digits.keras", format="keras",
                               labels=run.labels, verify_images=images)
    return shown, export_path, verify_export(export_path, "keras", run.model, images)


def format_table(table: list[dict]) -> str:
    """The demo's comparison as aligned text: method, labelled images, test accuracy, wall time."""
    rows = [("method", "labelled images", "test accuracy", "wall time")]
    for row in table:
        acc = row["test_accuracy"]
        rows.append((row["method"], str(row["labelled_images"]),
                     "-" if acc is None else f"{acc:.3f} ({row['test_size']} images)",
                     "cached" if row.get("seconds") == 0.0 else f"{row['seconds']:.0f} s"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(r, widths))).rstrip() for r in rows)


def format_demo(result: dict) -> str:
    """The closing summary ``inceptune demo`` prints: the table, a few predictions, and where everything is.

    Args:
        result: dict. As returned by ``run_demo``.

    Returns:
        str.
    """
    p = result["paths"]
    transfer, scratch = result["table"][1], result["table"][2]
    lines = [f"demo finished in {result['seconds']:.0f} s", format_table(result["table"]), ""]
    if transfer["test_accuracy"] is not None and scratch["test_accuracy"] is not None:
        lines.append(f"with {transfer['labelled_images']} labelled images, the pretrained backbone reaches "
                     f"{transfer['test_accuracy']:.3f} test accuracy, training from scratch "
                     f"{scratch['test_accuracy']:.3f}.")
    if result["pretraining_cached"]:
        lines.append(f"pretraining was reused from {result['pretrained_weights']}")
    lines.append("predictions of the transferred model on a few test images (true digit -> top-3):")
    for item in result["predictions"]:
        top = ", ".join(f"{lab} {prob:.2f}" for lab, prob in item["top"])
        lines.append(f"  {Path(item['path']).name}: {item['true']} -> {top}")
    lines += [
        f"export check: {result['export_check']}",
        f"runs:     {p['transfer']}, {p['scratch']}  (model.keras, metrics.json, history.csv, log.txt)",
        f"report:   {p['report']}  (open it in a browser)",
        f"export:   {p['export']}  (+ labels.json)",
        "",
        "your own images, with ImageNet's InceptionV3 (one sub-folder per class, weights downloaded once):",
        "  inceptune train photos/ --out runs/photos",
    ]
    return "\n".join(lines)
