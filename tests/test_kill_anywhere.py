"""Kill anywhere (issue #16): `inceptune train` SIGKILLed at ten random moments of a short run.

The run (inception_mini, the feature cache on, two stages) is first run uninterrupted while the test watches its
`log.txt`, which gives the moments its phases start (data, build, cache fill, the epochs with their validation
and checkpoints, the final save, test and report). Ten kill moments are then drawn, two in each of five
windows of that timeline, and each kill is followed by the same checks:

* every file of the run folder parses: JSON, CSV, YAML, `.npz` checkpoints, `.keras` models (loaded in safe mode);
* `train --resume` (or, when no epoch had completed, the same command with `--force`, as documented) completes,
  leaves no temporary file behind, and ends with the metrics of the uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import make_image_folder, mini_recipe

pytestmark = pytest.mark.slow

KILLS_PER_WINDOW = 2


def _recipe(tmp_path, data):
    recipe = mini_recipe(data, stages=[
        {"name": "head", "train": "head", "epochs": 3, "lr": 1e-2},
        {"name": "all", "train": "all", "epochs": 2, "lr": 3e-3, "schedule": "cosine"},
    ], cache="auto")
    recipe["data"]["batch_size"] = 8
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _env(cache_dir):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", INCEPTUNE_CACHE_DIR=str(cache_dir))


def _watch(proc, log: Path) -> list[tuple[float, str]]:
    """(seconds since start, line) for each log line, as they appear, until the process ends."""
    t0, seen, lines = time.monotonic(), 0, []
    while True:
        done = proc.poll() is not None
        if log.exists():
            text = log.read_text(errors="replace").splitlines()
            for line in text[seen:]:
                lines.append((time.monotonic() - t0, line))
            seen = len(text)
        if done:
            return lines
        time.sleep(0.02)


_MARKERS = [None, lambda s: s.startswith("=== stage 1/"), lambda s: "head epoch 1/" in s,
            lambda s: s.startswith("=== stage 2/"), lambda s: "all epoch 2/" in s]


def _windows(timeline, total: float) -> list[tuple[float, float]]:
    """Five windows of the run, each opened by a log line (`_MARKERS`): start-up to the first stage; the cache fill
    (the first stage's header to its first epoch); the head epochs; the uncached epochs; the final save, test and
    report. Returns the (start, end) seconds of each in the reference run."""
    starts = [0.2]
    for marker in _MARKERS[1:]:
        starts.append(next((t for t, line in timeline if marker(line)), starts[-1] + 1))
    return list(zip(starts, starts[1:] + [total]))


def _kill_in_window(proc, log: Path, window: int, start: float, end: float, fraction: float) -> bool:
    """SIGKILLs `proc` at `fraction` of the way through `window`, measured on this run's own log: waits for the
    window's opening line, then for `fraction` of the reference window's length scaled by how much slower or
    faster this run reached that line. Returns whether the run had already finished."""
    t0, marker = time.monotonic(), _MARKERS[window]
    while marker is not None and proc.poll() is None:
        if log.exists() and any(marker(line) for line in log.read_text(errors="replace").splitlines()):
            break
        time.sleep(0.02)
    reached = time.monotonic() - t0
    speed = reached / start if marker is not None and start > 0.5 else 1.0
    time.sleep(max(0.0, (start if marker is None else 0.0) + fraction * (end - start) * speed))
    if proc.poll() is not None:
        return True
    os.kill(proc.pid, signal.SIGKILL)
    return False


def _phase(run: Path) -> str:
    """Where the killed run was, from the last line of its log."""
    log = run / "log.txt"
    lines = [s for s in log.read_text(errors="replace").splitlines() if s.strip()] if log.exists() else []
    return lines[-1][:60] if lines else "(before the log)"


def _check_every_file(run: Path) -> list[str]:
    """Parses every file of a run folder; returns the temporary files of atomic writes found (never read)."""
    import keras

    partial = []
    for p in sorted(run.rglob("*")):
        if not p.is_file() or "tensorboard" in p.parts:
            continue
        if p.name.endswith(".tmp") or p.name.startswith("tmp-"):
            partial.append(p.name)
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            rows = list(csv.reader(p.open(newline="")))
            assert rows and rows[0], f"{p} has no header"
            assert all(len(r) == len(rows[0]) for r in rows), f"{p} has a short row"
        elif p.suffix == ".yaml":
            assert isinstance(yaml.safe_load(p.read_text()), dict), p
        elif p.suffix == ".npz":
            with np.load(p) as z:
                [z[k] for k in z.files]
        elif p.suffix == ".keras":
            keras.saving.load_model(p, safe_mode=True, compile=False)
        elif p.suffix == ".html":
            assert p.read_text().rstrip().endswith("</html>"), p
    return partial


def test_kill_anywhere_then_resume(tmp_path):
    data = make_image_folder(tmp_path / "images", classes=3, per_class=20)
    recipe = _recipe(tmp_path, data)
    cmd = [sys.executable, "-m", "inceptune", "train", str(recipe), "--quiet"]

    ref_dir = tmp_path / "reference"
    start = time.monotonic()
    proc = subprocess.Popen(cmd + ["--out", str(ref_dir)], env=_env(tmp_path / "cache-ref"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timeline = _watch(proc, ref_dir / "log.txt")
    total = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr.read()
    reference = json.loads((ref_dir / "metrics.json").read_text())

    rng = np.random.default_rng(16)
    kills = [(w, a, b, float(rng.uniform(0, 1))) for w, (a, b) in enumerate(_windows(timeline, total))
             for _ in range(KILLS_PER_WINDOW)]
    report = []
    for i, (window, a, b, fraction) in enumerate(kills):
        moment = a + fraction * (b - a)  # in the reference run's time, for the report
        run, env = tmp_path / f"killed-{i}", _env(tmp_path / f"cache-{i}")
        proc = subprocess.Popen(cmd + ["--out", str(run)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        finished = _kill_in_window(proc, run / "log.txt", window, a, b, fraction)
        proc.wait(timeout=30)
        phase = "finished before the kill" if finished else _phase(run)
        partial = _check_every_file(run) if run.exists() else []
        if finished:
            assert proc.returncode == 0 and partial == []
            assert json.loads((run / "metrics.json").read_text())["accuracy"] == reference["accuracy"]
            report.append(f"kill {i} at {moment:5.2f}s of {total:.1f}s: the run had finished")
            continue
        resumable = (run / "checkpoints" / "state.json").is_file()
        again = ["train", "--resume", "--out", str(run), "--quiet"] if resumable else \
            ["train", str(recipe), "--out", str(run), "--force", "--quiet"]
        done = subprocess.run([sys.executable, "-m", "inceptune", *again], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"kill {i} at {moment:.2f}s ({phase}): {done.stderr}"
        assert _check_every_file(run) == [], f"kill {i}: temporary files left after the resume"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["accuracy"] == reference["accuracy"], f"kill {i} at {moment:.2f}s ({phase})"
        assert metrics["confusion_matrix"] == reference["confusion_matrix"]
        assert metrics["log_loss"] == pytest.approx(reference["log_loss"], abs=1e-5)
        report.append(f"kill {i} at {moment:5.2f}s of {total:.1f}s: {phase!r}; {len(partial)} temporary file(s); "
                      f"{'--resume' if resumable else 'restarted with --force'}")
    print("\n".join(report))
    # the kills landed inside the runs (timed on each run's own log), not after them
    assert sum("the run had finished" in line for line in report) <= 2, report
