"""Runs distributed training for tests/test_distribute.py in a fresh process (logical devices and collectives
must be configured before TensorFlow starts, so these runs cannot share the pytest process).

    python tests/distribute_worker.py compare SPEC.json RESULT.json
        splits the CPU into 2 logical devices, trains SPEC's recipe with strategy none, then with strategy mirrored on
        CPU:0 and CPU:1, and writes the largest weight difference and both logs.
    python tests/distribute_worker.py worker SPEC.json RESULT.json
        one worker of a multi-worker run (TF_CONFIG from the environment); writes what it saw.

SPEC: {"recipe": {...}, "out": "dir", "resume": false, "stop_after_epochs": null}
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _weights(model):
    import numpy as np

    return [np.asarray(v.numpy(), dtype="float64") for v in model.weights]


def compare(spec: dict) -> dict:
    import numpy as np

    from inceptune.distribute import split_cpu

    split_cpu(2)
    from inceptune import train

    out, result = spec["out"], {}
    runs = {}
    for name, dist in (("single", {"strategy": "none"}),
                       ("mirrored", {"strategy": "mirrored", "devices": ["CPU:0", "CPU:1"],
                                     **spec.get("distribute", {})})):
        recipe = dict(spec["recipe"], distribute=dist)
        t0 = time.time()
        runs[name] = run = train(recipe, out=os.path.join(out, name), verbose=False)
        result[f"{name}_seconds"] = round(time.time() - t0, 2)
        result[f"{name}_log"] = open(os.path.join(out, name, "log.txt")).read()
        result[f"{name}_history"] = run.history
        result[f"{name}_accuracy"] = run.metrics["accuracy"] if run.metrics else None
    a, b = _weights(runs["single"].model), _weights(runs["mirrored"].model)
    result["weights"] = len(a)
    result["max_abs_diff"] = max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))
    result["max_abs_change"] = max(float(np.max(np.abs(x))) for x in a)  # the weights are not all zero
    return result


def worker(spec: dict) -> dict:
    import numpy as np

    from inceptune import train

    t0 = time.time()
    run = train(spec["recipe"], out=spec["out"], resume=spec.get("resume", False), verbose=False,
                stop_after_epochs=spec.get("stop_after_epochs"))
    w = _weights(run.model)
    return {"seconds": round(time.time() - t0, 2), "dir": str(run.dir), "history": run.history,
            "fingerprint": float(sum(np.sum(x) for x in w)), "tf_config": json.loads(os.environ["TF_CONFIG"])}


if __name__ == "__main__":
    mode, spec_path, result_path = sys.argv[1:4]
    spec = json.loads(open(spec_path).read())
    result = {"compare": compare, "worker": worker}[mode](spec)
    with open(result_path, "w") as f:
        json.dump(result, f, default=float)
