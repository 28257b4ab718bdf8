"""Peak memory of scanning, training (cached and uncached) and evaluating on 20,000 small generated images.

Each step runs as its own `inceptune` process under `/usr/bin/time -v`, whose "Maximum resident set size" is the
figure reported. The bound (issue 16): each step's peak stays under 2 GB beyond the model itself, where "the
model itself" is the peak of `inceptune inspect` of the same backbone (TensorFlow, Keras and the built model,
no data): `peak - baseline < 2048 MB`.

Steps, on N generated 32x32 PNG images in 4 class folders (default N = 20,000):

0. baseline: `inceptune inspect inception_mini --image-size 32`
1. scan: `inceptune data summary DIR --json` (every file read, hashed and fully decoded; near-duplicate search)
2. train, uncached: inception_mini, one stage `train: all`, 1 epoch, `cache: off` (the tf.data image pipeline)
3. train, cached: one stage `train: head`, 2 epochs, `cache: {mode: auto, memory_budget_mb: 64}` (the features
   of all 20,000 images on disk, memory-mapped past the budget)
4. evaluate: `inceptune evaluate RUN --data DIR` (every image through the model, metrics and report)

Usage:
    .venv/bin/python benchmarks/memory.py [--images 20000] [--work /tmp/inceptune-memory] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BOUND_MB = 2048
ROOT = Path(__file__).resolve().parent.parent


def make_images(root: Path, n: int, classes: int = 4, size: int = 32, seed: int = 0) -> Path:
    """n distinct small PNGs: a colour per class, a random pattern per image (no two files alike)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = np.array([(200, 40, 40), (40, 180, 60), (50, 70, 210), (128, 128, 128)], dtype="float32")
    for i in range(n):
        k = i % classes
        folder = root / f"class_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        img = colours[k % len(colours)] * rng.uniform(0.7, 1.2) + rng.normal(0, 40, (size, size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype("uint8")).save(folder / f"img_{i:05d}.png")
    return root


def recipe(data: Path, out: Path, *, stage: dict, cache) -> Path:
    import yaml

    text = {"data": {"dir": str(data), "image_size": 32, "batch_size": 64,
                     "split": {"val": 0.1, "test": 0.1, "method": "stable-hash"}},
            "model": {"backbone": "inception_mini", "weights": "none", "head": {"dense": [], "dropout": 0.0}},
            "stages": [stage], "cache": cache, "seed": 0}
    out.write_text(yaml.safe_dump(text))
    return out


def peak(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, exit code) of a command under /usr/bin/time -v."""
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
    return (int(m.group(1)) / 1024 if m else float("nan")), wall, done.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--work", default="/tmp/inceptune-memory")
    ap.add_argument("--keep", action="store_true", help="keep the generated images and runs")
    args = ap.parse_args()
    if not os.path.exists("/usr/bin/time"):
        print("needs GNU time at /usr/bin/time (apt-get install time)")
        return 2
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    data = make_images(work / "images", args.images)
    print(f"generated {args.images} images in {time.perf_counter() - t0:.0f}s into {data}")

    cli = [sys.executable, "-m", "inceptune"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", INCEPTUNE_CACHE_DIR=str(work / "features"),
               KERAS_HOME=os.environ.get("KERAS_HOME", str(work / "keras-home")))
    uncached = recipe(data, work / "uncached.yaml", cache="off",
                      stage={"name": "all", "train": "all", "epochs": 1, "lr": 1e-3})
    cached = recipe(data, work / "cached.yaml", cache={"mode": "auto", "memory_budget_mb": 64},
                    stage={"name": "head", "train": "head", "epochs": 2, "lr": 1e-2})
    steps = [
        ("baseline: inspect (TensorFlow + model)", cli + ["inspect", "inception_mini", "--image-size", "32"]),
        ("scan: data summary", cli + ["data", "summary", str(data), "--json"]),
        ("train, uncached (1 epoch)", cli + ["train", str(uncached), "--out", str(work / "run-uncached"), "--quiet"]),
        ("train, cached (2 epochs)", cli + ["train", str(cached), "--out", str(work / "run-cached"), "--quiet"]),
        ("evaluate", cli + ["evaluate", str(work / "run-uncached"), "--data", str(data), "--out",
                            str(work / "eval"), "--quiet"]),
    ]
    rows = []
    for name, cmd in steps:
        mb, wall, rc = peak(cmd, env)
        rows.append({"step": name, "peak_mb": round(mb, 1), "seconds": round(wall, 1), "exit": rc})
        print(f"{name:<42} peak {mb:8.1f} MB  {wall:7.1f} s  exit {rc}", flush=True)
    base = rows[0]["peak_mb"]
    print(f"\nbound: peak - baseline < {BOUND_MB} MB (baseline {base:.0f} MB: TensorFlow, Keras, the model)")
    ok = True
    for r in rows[1:]:
        extra = r["peak_mb"] - base
        ok &= extra < BOUND_MB and r["exit"] == 0
        print(f"  {r['step']:<40} {extra:+8.1f} MB beyond the baseline  {'OK' if extra < BOUND_MB else 'OVER'}")
    (work / "memory.json").write_text(json.dumps({"images": args.images, "bound_mb": BOUND_MB, "steps": rows},
                                                 indent=2))
    print(f"figures: {work / 'memory.json'}")
    if not args.keep:
        for sub in ("images", "features", "run-uncached", "run-cached", "eval"):
            shutil.rmtree(work / sub, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
