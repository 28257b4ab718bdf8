"""`inceptune lr-find` on a cached stage: InceptionV3 at 150 px, 400 generated images, the head stage.

ImageNet weights cannot be downloaded here, so the backbone has random weights (`weights: none`); the timing does
not depend on the weight values. Side by side in one process: the sweep on a cold cache (one feature pass over the
images, then 100 steps on the cached features), the same sweep again on the warm cache, and, for the ratio, a
short sweep of the same stage with `cache: off` (every step runs the whole network on images).

Run:  .venv/bin/python benchmarks/lr_find.py            (about 3 minutes on 2 cores)
      .venv/bin/python benchmarks/lr_find.py --quick    (fewer images and steps, a smoke run)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    per_class, steps, image_steps = (20, 30, 5) if args.quick else (80, 100, 10)
    work = Path(tempfile.mkdtemp(prefix="inceptune-bench-lrf-"))
    os.environ["INCEPTUNE_CACHE_DIR"] = str(work / "cache")  # a cold cache first
    from helpers import make_image_folder

    import inceptune as it

    data = make_image_folder(work / "images", classes=5, per_class=per_class, size=150)
    recipe = {
        "data": {"dir": str(data), "image_size": 150, "split": {"val": 0.15, "test": 0.15}, "batch_size": 32},
        "model": {"backbone": "inception_v3", "weights": "none"},
        "stages": [{"name": "head", "train": "head", "epochs": 10, "lr": 1e-3},
                   {"name": "top", "train": "head,from:mixed9", "epochs": 5, "lr": 1e-4}],
        "cache": "auto",
    }
    rows = []
    for label, over, n in (("cached, cold cache", [], steps), ("cached, warm cache", [], steps),
                           ("cache: off (images)", ["cache=off"], image_steps)):
        t0 = time.perf_counter()
        r = it.lr_find(recipe, "head", overrides=over, out=work / label.split(",")[0].replace(" ", "_"), steps=n,
                       verbose=False)
        total = time.perf_counter() - t0
        rows.append((label, total, r))
        print(f"{label:<22} total {total:6.1f} s (build and any feature pass included)  sweep {r.seconds:6.2f} s "
              f"for {len(r.lrs)} steps = {r.seconds / len(r.lrs) * 1000:7.1f} ms/step  steepest {r.steepest:.2e}  "
              f"minimum/10 {r.minimum_div10:.2e}", flush=True)
    print("(the cold sweep includes the feature pass, done at its first batch; each sweep's first step includes "
          "tracing, which weighs most in the 10-step sweep on images)")
    cold, warm, images = rows
    per_step = images[2].seconds / len(images[2].lrs)
    print(f"{len(cold[2].lrs)} steps on images would take about {per_step * len(cold[2].lrs):.0f} s of sweep alone; "
          f"per step, images / cached features = {per_step / (warm[2].seconds / len(warm[2].lrs)):.0f}x")
    print(f"whole command, cold cache: {cold[1]:.1f} s; warm cache: {warm[1]:.1f} s")


if __name__ == "__main__":
    main()
