"""InceptionV3's compiled forward at 299x299 as a fraction of this CPU's FP32 peak, under what TensorFlow offers.

Each configuration runs in a fresh process (thread pools and oneDNN are fixed when TensorFlow starts): the
compiled path inceptune uses (`inference.compiled_forward`: one `tf.function`, batch dimension open), random
weights, random inputs, the first call (tracing) left out, the best of three timed passes.

    default         batch 32, TensorFlow's own thread pools, oneDNN on (what `import inceptune` sets on x86-64;
                    TensorFlow's own default only on CPUs with AVX-512 VNNI/BF16 or AMX)
    batch N         another batch size
    intra/inter     tf.config.threading intra-op / inter-op pool sizes
    no-onednn       TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels)
    jit             the forward compiled with XLA (jit_compile=True)

Peak: cores x GHz x FLOP per cycle per core (`peak_gflops`: 32 with two 256-bit FMA units, AVX2 + FMA or AMD's
Zen 4; 64 with 512-bit units, Intel's AVX-512 or Zen 5), at the clock /proc/cpuinfo reports; beside it, the rate
of a 4096x4096 float32 matrix product on the same cores (what the simplest dense kernel reaches here).
InceptionV3 at 299x299: 5.7 G multiply-adds = 11.4 GFLOP per image. The layout stays channels-last:
TensorFlow's CPU convolutions take NHWC only (channels-first is not implemented on the CPU).

Run:  .venv/bin/python benchmarks/forward_peak.py          (about 5 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

FLOP_PER_IMAGE = 2 * 5.7e9

CONFIGS = [
    ("default (batch 32)", {}, {}),
    ("batch 16", {"batch": 16}, {}),
    ("batch 64", {"batch": 64}, {}),
    ("intra 2, inter 1", {"intra": 2, "inter": 1}, {}),
    ("no-onednn", {}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    ("jit (XLA)", {"jit": True}, {}),
]


def peak_gflops() -> tuple[float, str]:
    """The nominal FP32 peak from /proc/cpuinfo: cores x the clock it reports x FLOP per cycle per core.

    FLOP per cycle: 64 with AVX-512 on Intel and on AMD from Zen 5 (family 26; two 512-bit FMA units), 32 with
    AVX2 + FMA and on Zen 4 (family 25: AVX-512 instructions on 256-bit units), 16 otherwise. A virtual machine
    reports the base clock, not the boost clock the cores run at, so this can understate the real peak: the
    SGEMM line beside it is the rate this machine reaches on the simplest dense kernel.
    """
    mhz, flags, vendor, family = None, "", "", 0
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "flags" and not flags:
                flags = value.split()
            elif key == "vendor_id" and not vendor:
                vendor = value
            elif key == "cpu family" and not family:
                family = int(value)
    except (OSError, ValueError):
        pass
    ghz = (mhz or 2500.0) / 1000.0
    wide = "avx512f" in flags and (vendor != "AuthenticAMD" or family >= 26)
    per_cycle = 64 if wide else 32 if "fma" in flags else 16
    cores = os.cpu_count() or 1
    return cores * ghz * per_cycle, f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle, {vendor} family {family}"


def sgemm_gflops() -> float:
    """The best rate of a 4096x4096 float32 matrix product through TensorFlow on every core (its own kernels)."""
    import inceptune  # noqa: F401  (the same kernels as the forward's)
    import tensorflow as tf

    a = tf.random.uniform((4096, 4096))
    b = tf.random.uniform((4096, 4096))
    tf.linalg.matmul(a, b).numpy()  # the first call sets up the kernels
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = max(best, 2 * 4096 ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def child(options: dict) -> dict:
    import inceptune  # noqa: F401  (first, as in a run: the TensorFlow settings it makes before TF loads)
    import numpy as np
    import tensorflow as tf

    if "intra" in options:
        tf.config.threading.set_intra_op_parallelism_threads(options["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(options["inter"])
    import keras

    batch = options.get("batch", 32)
    n = max(64, 2 * batch)
    model = keras.applications.InceptionV3(weights=None, include_top=False, input_shape=(299, 299, 3))
    x = np.random.default_rng(0).uniform(-1, 1, (n, 299, 299, 3)).astype("float32")
    if options.get("jit"):
        fwd = tf.function(lambda t: model(t, training=False), jit_compile=True)
    else:
        from inceptune.inference import compiled_forward

        fwd = compiled_forward(model)
    np.asarray(fwd(x[:batch]))
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for i in range(0, n, batch):
            np.asarray(fwd(x[i:i + batch]))
        best = max(best, n / (time.perf_counter() - t))
    return {"images_per_second": best}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "sgemm":
        print(json.dumps({"gflops": sgemm_gflops()}))
        return
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    peak, how = peak_gflops()
    proc = subprocess.run([sys.executable, __file__, "--child", "sgemm"], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=True)
    sgemm = json.loads(proc.stdout.strip().splitlines()[-1])["gflops"]
    print(f"FP32 peak {peak:.0f} GFLOP/s nominal ({how}); SGEMM 4096 measured {sgemm:.0f} GFLOP/s; "
          f"InceptionV3 @299 {FLOP_PER_IMAGE / 1e9:.1f} GFLOP/image")
    print(f"{'configuration':<22}{'img/s':>8}{'GFLOP/s':>9}{'of peak':>9}{'of SGEMM':>10}")
    for name, options, env in CONFIGS:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(options)], capture_output=True,
                              text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env))
        if proc.returncode != 0:
            print(f"{name:<22} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        rate = json.loads(proc.stdout.strip().splitlines()[-1])["images_per_second"]
        gflops = rate * FLOP_PER_IMAGE / 1e9
        print(f"{name:<22}{rate:8.2f}{gflops:9.1f}{gflops / peak:9.1%}{gflops / sgemm:10.1%}", flush=True)


if __name__ == "__main__":
    main()
