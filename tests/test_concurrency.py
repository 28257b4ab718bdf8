"""Two runs sharing one feature-cache folder at the same time (issue #16).

A cache entry is filled by exactly one process under a `flock` on `<entry>.lock` while the others wait, written
whole into a staging folder and renamed into place, `meta.json` inside: no reader ever sees half an entry, and no
entry is computed twice. The default test checks the lock between two processes; the slow one runs two
`inceptune train` processes on one cache folder at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml
from helpers import make_image_folder, mini_recipe

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from inceptune.cache import entry_lock
    entry = Path(sys.argv[1])
    with entry_lock(entry) as held:
        assert held
        (entry.parent / "holding").write_text("1")
        while not (entry.parent / "let-go").exists():  # held until the other process asks
            time.sleep(0.02)
        time.sleep(0.3)
        (entry.parent / "released").write_text("1")
""")

WAITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from inceptune.cache import entry_lock
    entry = Path(sys.argv[1])
    with entry_lock(entry, wait=False) as held:
        print("try:", held)
    (entry.parent / "let-go").write_text("1")
    with entry_lock(entry) as held:
        print("wait:", held, (entry.parent / "released").exists())
""")


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_an_entry_lock_is_held_by_one_process_at_a_time(tmp_path):
    entry = tmp_path / "0123abcd"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(entry)])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "holding").exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not take the lock"
            time.sleep(0.02)
        waiter = subprocess.run([sys.executable, "-c", WAITER, str(entry)], capture_output=True, text=True,
                                timeout=60)
    finally:
        holder.wait(timeout=60)
    assert waiter.returncode == 0, waiter.stderr
    # without waiting: refused while the other process holds it; waiting: granted only after it let go
    assert waiter.stdout.split("\n")[:2] == ["try: False", "wait: True True"]
    assert holder.returncode == 0


@pytest.mark.slow
def test_two_trainers_share_one_cache_folder(tmp_path):
    """Two `inceptune train` runs started together on one INCEPTUNE_CACHE_DIR: every entry is computed once (one
    `cache miss` per entry over both logs, the other run reads it: `cache hit`), every entry is complete, nothing
    is left half-written, and both runs end with the same metrics as a run with a cache of its own."""
    data = make_image_folder(tmp_path / "images", classes=3, per_class=120)
    recipe = mini_recipe(data, stages=[
        {"name": "head", "train": "head", "epochs": 2, "lr": 1e-2},
        {"name": "top", "train": "head,from:mixed3", "epochs": 2, "lr": 3e-3},
    ], cache="auto")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    shared = tmp_path / "shared-cache"

    def start(name, cache):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", INCEPTUNE_CACHE_DIR=str(cache))
        return subprocess.Popen([sys.executable, "-m", "inceptune", "train", str(path), "--out",
                                 str(tmp_path / name), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    procs = [start("a", shared), start("b", shared)]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    alone = start("alone", tmp_path / "own-cache")
    assert alone.wait(timeout=900) == 0, alone.stderr.read()

    logs = [(tmp_path / n / "log.txt").read_text() for n in ("a", "b")]
    # each store's set of arrays for this manifest (feature_store.py); no staging folder or uncommitted shard left
    entries = sorted(p for p in shared.glob("*/sets/*") if p.is_dir())
    assert entries and not [p for p in shared.rglob("*") if p.name.endswith(".partial")]
    assert all(npy.with_suffix(".json").exists() for npy in shared.glob("*/shards/*.npy"))
    for entry in entries:
        meta = json.loads((entry / "meta.json").read_text())
        for names in meta["files"].values():
            for name in names if isinstance(names, list) else [names]:
                arr = np.load(entry / name, mmap_mode="r")
                assert np.isfinite(np.asarray(arr, dtype="float64")).all(), (entry, name)
        computed = sum(str(entry) in line for log in logs for line in log.splitlines() if "cache miss:" in line)
        assert computed == 1, f"{entry.name} computed {computed} times"
        assert sum(f"cache hit: {entry} " in log for log in logs) >= 1
    want = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    for name in ("a", "b"):
        got = json.loads((tmp_path / name / "metrics.json").read_text())
        assert got["accuracy"] == want["accuracy"] and got["confusion_matrix"] == want["confusion_matrix"]
        assert got["log_loss"] == pytest.approx(want["log_loss"], abs=1e-5)
