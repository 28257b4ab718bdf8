"""Features from a middle block vs the top, and temperature scaling, on real data: scikit-learn's digits.

The data is scikit-learn's bundled `load_digits` (1,797 real 8x8 scans of handwritten digits, written as 32x32
RGB PNGs by `inceptune.demo.write_digits`), split 70/15/15 (stratified, seed 0): the same images and split for
every variant. The backbone is `inception_mini` (blocks stem, mixed0, mixed1, mixed2 = grid reduction to 8x8,
mixed3 = residual Inception module), trained from scratch with a two-stage recipe (head 1 epoch, then
everything, cosine): no ImageNet weights can be downloaded here, and InceptionV3 trained from scratch does not fit
2 CPU cores in minutes. The variants differ in one recipe key only:

    full       the whole backbone (top block mixed3)
    cut        model.cut: mixed2 (drops mixed3)
    cut1       model.cut: mixed1 (drops mixed2 and mixed3)
    features   model.features: [mixed2, mixed3] (both pooled, concatenated into the head)

For each: test accuracy, ECE and log loss before/after the temperature fitted on the validation split
(`calibrate: temperature`, the default), the fitted temperature, the parameter count, and test accuracy with
test-time augmentation (`crops`; and `flip`, which mirrors digits and so should hurt). Wall times are printed
for information only.

Run:  .venv/bin/python benchmarks/cut_calibration.py [--out DIR] [--epochs N] [--variants full,cut,...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# The recipe the demo used to train (inception_mini from scratch on all ten digits; 0.978 test accuracy).
RECIPE = {
    "data": {"dir": None, "image_size": 32, "batch_size": 32, "augment": "none",
             "split": {"val": 0.15, "test": 0.15, "seed": 0, "method": "stratified"}},
    "model": {"backbone": "inception_mini", "weights": "none", "batchnorm": "frozen",
              "head": {"pooling": "avg", "dense": [], "dropout": 0.1}},
    "stages": [
        {"name": "head", "train": "head", "epochs": 1, "lr": 1e-2},
        {"name": "all", "train": "all", "epochs": 12, "lr": 3e-3, "schedule": "cosine", "warmup_epochs": 1},
    ],
    "cache": "auto",
    "seed": 0,
}
VARIANTS = {
    "full": {},
    "cut": {"cut": "mixed2"},
    "cut1": {"cut": "mixed1"},
    "features": {"features": ["mixed2", "mixed3"]},
}


def _row(name: str, run, ev_crops, ev_flip, seconds: float) -> dict:
    m, ts = run.metrics, run.metrics["temperature_scaling"]
    return {"variant": name, "model": {k: v for k, v in run.recipe.model.__dict__.items() if k in ("cut", "features")},
            "parameters": int(run.model.count_params()), "test_images": m["num_samples"],
            "accuracy": m["accuracy"], "temperature": ts["temperature"],
            "ece_before": ts["ece_before"], "ece_after": ts["ece_after"],
            "log_loss_before": ts["log_loss_before"], "log_loss_after": ts["log_loss_after"],
            "accuracy_tta_crops": ev_crops.metrics["accuracy"], "accuracy_tta_flip": ev_flip.metrics["accuracy"],
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the 'all' stage (default 12)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = parser.parse_args()

    from inceptune.demo import write_digits
    from inceptune.evaluate import evaluate_data
    from inceptune.training import train

    out = Path(args.out or tempfile.mkdtemp(prefix="inceptune-cut-calibration-"))
    images = out / "images"
    if not images.exists():
        write_digits(images)
    rows = []
    for name in args.variants.split(","):
        recipe = copy.deepcopy(RECIPE)
        recipe["data"]["dir"] = str(images.resolve())
        recipe["model"].update(VARIANTS[name])
        recipe["stages"][1]["epochs"] = args.epochs
        t0 = time.perf_counter()
        run = train(recipe, out=out / name, force=True, verbose=False)
        seconds = time.perf_counter() - t0
        manifest = run.dir / "manifest.csv"
        ev_crops = evaluate_data(run.dir, manifest, run.dir / "eval-crops", split="test", tta="crops", force=True,
                                 progress=False)
        ev_flip = evaluate_data(run.dir, manifest, run.dir / "eval-flip", split="test", tta="flip", force=True,
                                progress=False)
        rows.append(_row(name, run, ev_crops, ev_flip, seconds))
        r = rows[-1]
        print(f"{name:<9} params {r['parameters']:>7,}  test acc {r['accuracy']:.4f}  T {r['temperature']:.3f}  "
              f"ECE {r['ece_before']:.4f} -> {r['ece_after']:.4f}  log loss {r['log_loss_before']:.4f} -> "
              f"{r['log_loss_after']:.4f}  TTA crops {r['accuracy_tta_crops']:.4f}  flip {r['accuracy_tta_flip']:.4f}"
              f"  ({seconds:.0f}s)", flush=True)
    (out / "cut_calibration.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"results: {out / 'cut_calibration.json'}")


if __name__ == "__main__":
    main()
