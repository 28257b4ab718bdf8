"""`inceptune cv --folds 5` with the per-image feature store against the same cv recomputing every fold's features.

Before the store, a cache entry was keyed by the whole manifest (paths, splits), so every fold of a
cross-validation (its own split of the same images) ran the frozen prefix over every image again. Now the
features are kept per image (content hash + prefix + cut + size + resize + dtype): the first fold computes them,
the other folds assemble their arrays from the store. "without the store" is the same cross-validation with an
empty feature cache for every fold (what the manifest-keyed cache amounted to for cv).

Each side runs in a fresh process, timed from start to exit; the image forwards of each are counted (every
forward over images goes through `inference.compiled_forward`).

Run:  .venv/bin/python benchmarks/cv_store.py [--images 400] [--size 150] [--folds 5]   (about 5 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(work: Path, folds: int, store: bool) -> dict:
    import inceptune.cache as C
    import inceptune.inference as inference
    from inceptune.cv import cross_validate

    counted = {"images": 0}
    real = inference.compiled_forward

    def counting(model):
        fn = real(model)
        if len(model.inputs[0].shape) != 4 or model.inputs[0].shape[-1] != 3:
            return fn

        def forward(x):
            counted["images"] += len(x)
            return fn(x)
        return forward

    inference.compiled_forward = C.compiled_forward = counting
    if not store:  # every fold starts from an empty feature cache
        fresh = iter(range(10**6))
        init = C.CacheContext.__init__

        def own_cache(self, *args, **kwargs):
            os.environ["INCEPTUNE_CACHE_DIR"] = str(work / f"cache-fold-{next(fresh)}")
            init(self, *args, **kwargs)
        C.CacheContext.__init__ = own_cache
    os.environ["INCEPTUNE_CACHE_DIR"] = str(work / ("cache-store" if store else "cache-none"))
    result = cross_validate(str(work / "recipe.yaml"), folds, out=work / ("cv-store" if store else "cv-none"),
                            verbose=False)
    return {"forwards": counted["images"], "val_accuracy": result["mean"]["val_accuracy"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--child", choices=["store", "none"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.work), args.folds, args.child == "store")))
        return
    import yaml
    from seed_recipe import write_images

    work = Path(tempfile.mkdtemp(prefix="inceptune-cv-bench-"))
    what = write_images(work / "images", args.images, args.size)
    recipe = {"data": {"dir": str(work / "images"), "image_size": args.size, "batch_size": 32,
                       "split": {"val": 0.0, "test": 0.2, "seed": 0}},
              "model": {"backbone": "inception_v3", "weights": "none", "head": {"dense": []}},
              "stages": [{"name": "head", "train": "head", "epochs": 3, "lr": 1e-3}],
              "cache": "auto", "calibrate": "none", "seed": 0}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    print(f"{args.images} images ({what}), InceptionV3 at {args.size} px, a head stage on cached features, "
          f"{args.folds} folds")
    rows = {}
    for side in ("none", "store"):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", side, "--work", str(work), "--folds",
                               str(args.folds)], capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        rows[side] = dict(json.loads(proc.stdout.strip().splitlines()[-1]), seconds=seconds)
    print(f"{'':28}{'seconds':>9}{'image forwards':>16}{'mean val acc':>14}")
    for side, label in (("none", "without the store"), ("store", "with the per-image store")):
        r = rows[side]
        print(f"{label:<28}{r['seconds']:9.1f}{r['forwards']:16d}{r['val_accuracy']:14.4f}")
    print(f"speed-up {rows['none']['seconds'] / rows['store']['seconds']:.2f}x; image forwards "
          f"{rows['none']['forwards'] / max(rows['store']['forwards'], 1):.1f}x fewer")


if __name__ == "__main__":
    main()
