"""The offline demo: the whole pipeline on real data that ships with scikit-learn, in about two minutes on a CPU.

The data is scikit-learn's ``load_digits``: 1,797 real 8×8 grey-level scans of handwritten digits (UCI "Optical
Recognition of Handwritten Digits", 43 writers), bundled inside scikit-learn, so nothing is downloaded. Each
is written as a 32×32 RGB PNG (bilinear upsampling, ink bright on black) into ``OUT/images/<digit>/``, a
plain class-per-folder dataset like a user's own. Then, with nothing but the public pipeline:

1. ``train`` runs ``DEMO_RECIPE`` (``inception_mini`` from scratch, a stratified 70/15/15 split, two stages:
   the head alone, then everything with a cosine schedule; BatchNorm frozen; feature cache ``auto``) into
   ``OUT/run/``: checkpoints, ``model.keras``, test ``metrics.json`` and ``report.html``;
2. ``predict`` classifies a few test images through the compiled fast path;
3. ``export_model`` writes ``OUT/export/digits.keras`` (preprocessing inside, ``labels.json`` beside it) and
   verifies it against the trained model on real test images.

``OUT/demo.json`` records the numbers (test accuracy, wall time, paths). ``--quick`` trains on 40 images per
digit (for tests; under a minute).

Example:
    >>> result = run_demo("demo_run")
    >>> result["test_accuracy"]
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from inceptune._io import atomic_write_json, prepare_output_dir
from inceptune.data import load_image
from inceptune.export import export_model, verify_export
from inceptune.prediction import predict
from inceptune.recipe import dump_recipe, load_recipe

__all__ = ["DEMO_RECIPE", "QUICK_OVERRIDES", "write_digits", "demo_recipe", "run_demo", "format_demo"]

IMAGE_SIZE = 32  # inception_mini's minimum; the 8x8 digits are upsampled 4x
# The recipe the demo trains (its `data.dir` is filled in with OUT/images).
DEMO_RECIPE = {
    "data": {
        "dir": None,
        "image_size": IMAGE_SIZE,
        "split": {"val": 0.15, "test": 0.15, "seed": 0, "method": "stratified"},  # exact 70/15/15 per digit
        "batch_size": 32,  # more, smaller steps: a from-scratch net leaves its initial plateau sooner
        "augment": "none",  # digits must not be flipped; rotations blur 8x8 strokes
    },
    "model": {"backbone": "inception_mini", "weights": "none", "head": {"pooling": "avg", "dense": [],
                                                                         "dropout": 0.1},
              "batchnorm": "frozen"},
    "stages": [
        {"name": "head", "train": "head", "epochs": 1, "lr": 1e-2},
        {"name": "all", "train": "all", "epochs": 12, "lr": 3e-3, "schedule": "cosine", "warmup_epochs": 1},
    ],
    "cache": "auto",
    "seed": 0,
}
# --quick: 40 images per digit, for the test suite; 9 steps an epoch, so more epochs to leave the initial plateau.
QUICK_PER_CLASS = 40
QUICK_OVERRIDES = ("stages[0].epochs=1", "stages[1].epochs=24")  # `--set` strings applied to DEMO_RECIPE


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




def demo_recipe(images_dir) -> dict:
    """The demo's recipe as a dict, reading ``images_dir`` (``--quick`` adds ``QUICK_OVERRIDES`` when loading it).

    Args:
        images_dir: str or Path. The class-per-folder digits.

    Returns:
        dict. A recipe for ``load_recipe`` / ``train``.
    """
    recipe = copy.deepcopy(DEMO_RECIPE)
    recipe["data"]["dir"] = str(Path(images_dir).resolve())
    return recipe


def run_demo(out="demo_run", *, quick: bool = False, force: bool = False, verbose: bool = True) -> dict:
    """Runs the offline demo: digits → train → test metrics and report → predict → export, all under ``out``.

    Args:
        out: str or Path. The demo folder: ``images/``, ``recipe.yaml``, ``run/``, ``export/``, ``demo.json``.
            Defaults to ``demo_run``.
        quick: bool. 40 images per digit (400 in all) and ``QUICK_OVERRIDES`` epochs. Defaults to False.
        force: bool. Replace an earlier demo folder. Defaults to False.
        verbose: bool. Print progress. Defaults to True.

    Returns:
        dict. What ``demo.json`` holds: ``test_accuracy``, ``macro_f1``, ``num_images``, ``seconds``,
        ``predictions`` (a few test files with their true digit and top-3), ``export_check`` and the paths.

    Raises:
        InceptuneError: ``out`` exists and is not empty (without ``force``).
    """
    from inceptune.training import train  # imports Keras: demo (and the CLI) stay light

    t0 = time.time()
    out = Path(out)
    prepare_output_dir(out, force=force, kind="demo", markers=("demo.json", "images"))
    say = print if verbose else (lambda *a, **k: None)

    # === data: real handwritten digits, bundled with scikit-learn ===
    counts = write_digits(out / "images", per_class=QUICK_PER_CLASS if quick else None)
    total = sum(counts.values())
    say(f"demo: wrote {total} real handwritten digits (scikit-learn load_digits, 8x8 upsampled to "
        f"{IMAGE_SIZE}x{IMAGE_SIZE} RGB PNG) to {out / 'images'}")
    recipe = load_recipe(demo_recipe(out / "images"), QUICK_OVERRIDES if quick else ())
    dump_recipe(recipe, out / "recipe.yaml")

    # === train: staged fine-tuning, test metrics and the report ===
    run = train(recipe, out=out / "run", verbose=verbose)
    metrics = run.metrics or {}

    # === predict a few test images ===
    test = [r for r in _manifest(run.dir) if r["split"] == "test"]
    ordered = sorted(test, key=lambda r: (r["label"], r["path"]))
    picks = ordered[:: max(1, len(ordered) // 5)][:5]  # five test images spread over the digits
    preds = predict(run, [r["path"] for r in picks], top_k=3)
    truth = {r["path"]: r["label"] for r in picks}
    shown = [{"path": p["path"], "true": truth.get(p["path"]), "top": [[lab, round(prob, 4)] for lab, prob in p["top"]]}
             for p in preds]

    # === export, verified on real test images ===
    images = np.stack([load_image(r["path"], IMAGE_SIZE) for r in test[:8]]).astype(np.float32)
    export_path = export_model(run.model, out / "export" / "digits.keras", format="keras",
                               labels=run.labels, verify_images=images)
    check = verify_export(export_path, "keras", run.model, images)

    result = {
        "data": "scikit-learn load_digits (real 8x8 handwritten digits)",
        "quick": bool(quick),
        "num_images": total,
        "counts": counts,
        "test_accuracy": metrics.get("accuracy"),
        "macro_f1": (metrics.get("macro_avg") or {}).get("f1"),
        "test_size": metrics.get("num_samples"),
        "predictions": shown,
        "export_check": str(check),
        "seconds": round(time.time() - t0, 1),
        "paths": {
            "images": str(out / "images"),
            "recipe": str(out / "recipe.yaml"),
            "run": str(run.dir),
            "model": str(run.dir / "model.keras"),
            "metrics": str(run.dir / "metrics.json"),
            "report": str(run.dir / "report.html"),
            "export": str(export_path),
        },
    }
    atomic_write_json(out / "demo.json", result)
    say("")
    say(format_demo(result))
    return result


def _manifest(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def format_demo(result: dict) -> str:
    """The closing summary ``inceptune demo`` prints: accuracy, a few predictions, and where everything is.

    Args:
        result: dict. As returned by ``run_demo``.

    Returns:
        str.
    """
    p = result["paths"]
    acc = result["test_accuracy"]
    lines = [
        f"demo finished in {result['seconds']:.0f} s: test accuracy {acc:.4f} on {result['test_size']} held-out "
        f"digits (macro F1 {result['macro_f1']:.4f})" if acc is not None else "demo finished (no test split)",
        "predictions on a few test images (true digit -> top-3):",
    ]
    for item in result["predictions"]:
        top = ", ".join(f"{lab} {prob:.2f}" for lab, prob in item["top"])
        lines.append(f"  {Path(item['path']).name}: {item['true']} -> {top}")
    lines += [
        f"export check: {result['export_check']}",
        f"images:   {p['images']}",
        f"run:      {p['run']}  (model.keras, metrics.json, history.csv, log.txt)",
        f"report:   {p['report']}  (open it in a browser)",
        f"export:   {p['export']}  (+ labels.json)",
        "next:     inceptune predict " + p["run"] + " " + str(Path(p["images"]) / "3") + " --top-k 3",
    ]
    return "\n".join(lines)
