"""Training-step time of one model under float32, mixed_float16 and mixed_bfloat16, side by side on this machine.

Same model (InceptionV3, random weights, 75 px, the top blocks `head,from:mixed9` training, as a fine-tuning
stage), same batches, the policy set while the model is built (as `precision:` does). The first steps (tracing)
are left out. On a CPU, mixed precision is expected to bring no speed-up: CPUs lack the 16-bit matrix units of
GPUs and TPUs; this script measures it.

Run:  .venv/bin/python benchmarks/precision.py     (about 3 minutes on 2 cores)
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def step_time(policy: str, size: int = 75, batch: int = 16, steps: int = 8, warmup: int = 2) -> float:
    import keras
    import numpy as np

    from inceptune.recipe.schema import ModelConfig, Stage
    from inceptune.training.model import build_model, compile_stage, precision_policy

    keras.backend.clear_session()
    with precision_policy(policy):
        model = build_model(ModelConfig(backbone="inception_v3", weights=None), 5, size)
    compile_stage(model, Stage(name="top", train="head,from:mixed9", lr=1e-4))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 5, batch)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - t0) / steps


def main():
    times = {p: step_time(p) for p in ("float32", "mixed_float16", "mixed_bfloat16")}
    for p, t in times.items():
        print(f"{p:<15} {t * 1000:8.1f} ms/step   {t / times['float32']:5.2f}x float32")


if __name__ == "__main__":
    main()
