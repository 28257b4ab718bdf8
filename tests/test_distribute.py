"""The `distribute:` section: validation, the errors of bad set-ups, the scaled learning rate, the worker folder
(fast, in this process), and training under `mirrored` on 2 logical CPU devices and `multi-worker` with two
processes on 127.0.0.1 (slow: fresh processes, `tests/distribute_worker.py`)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_image_folder, mini_recipe

from inceptune import cli
from inceptune.distribute import LOCAL, Distribution, read_tf_config, setup_distribution, worker_folder
from inceptune.errors import RecipeError
from inceptune.recipe import load_recipe
from inceptune.recipe.schema import DistributeConfig

WORKER = Path(__file__).resolve().parent / "distribute_worker.py"
ROOT = Path(__file__).resolve().parents[1]


def _recipe(tmp_path, **distribute):
    return load_recipe({"data": {"dir": str(tmp_path)}, "stages": [{"train": "head"}],
                        **({"distribute": distribute} if distribute else {})})


# === the recipe section (no TensorFlow) ===

def test_default_is_one_device_and_round_trips(tmp_path):
    r = _recipe(tmp_path)
    assert r.distribute == DistributeConfig(strategy="none", devices=(), scale_lr="none")
    assert setup_distribution(r.distribute) is LOCAL
    r = load_recipe({"data": {"dir": str(tmp_path)}, "stages": [{"train": "head"}]},
                    ["distribute.strategy=mirrored", "distribute.devices=[gpu:0, /device:GPU:1]",
                     "distribute.scale_lr=linear"])
    assert r.distribute == DistributeConfig("mirrored", ("GPU:0", "GPU:1"), "linear")
    from inceptune.recipe.loading import recipe_to_dict

    assert load_recipe(recipe_to_dict(r)) == r
    assert load_recipe({"data": {"dir": "x"}, "stages": [{"train": "head"}],
                        "distribute": "multi-worker"}).distribute.strategy == "multi-worker"


@pytest.mark.parametrize("override, key, text", [
    ("distribute.strategy=mirorred", "distribute.strategy", 'unknown strategy "mirorred". Allowed: none, auto, '
                                                            'mirrored, multi-worker, jax-data-parallel. HINT: did you '
                                                            'mean "mirrored"?'),
    ("distribute.devices=[GPU-0]", "distribute.devices[0]",
     'expected a device name such as GPU:0 or CPU:0, got "GPU-0"'),
    ("distribute.devices=[GPU:0, gpu:0]", "distribute.devices[1]", '"GPU:0" is listed twice'),
    ("distribute.devices=[GPU:0]", "distribute.devices", "devices are chosen by strategy mirrored only"),
    ("distribute.scale_lr=sqrt", "distribute.scale_lr", 'unknown learning-rate scaling rule "sqrt". Allowed: none, '
                                                        'linear'),
    ("distribute.replicas=2", "distribute.replicas", "unknown key"),
])
def test_bad_values_name_the_key(tmp_path, override, key, text):
    with pytest.raises(RecipeError) as info:
        load_recipe({"data": {"dir": str(tmp_path)}, "stages": [{"train": "head"}]}, [override])
    assert info.value.key == key and text in str(info.value)


def test_recipe_show_prints_the_section(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(f"data: {{dir: {tmp_path}}}\nstages: [{{train: head}}]\n"
                    "distribute: {strategy: mirrored, devices: [GPU:0, GPU:1], scale_lr: linear}\n")
    assert cli.main(["recipe", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "distribute:\n  strategy: mirrored\n  devices: ['GPU:0', 'GPU:1']\n  scale_lr: linear\n" in shown


def test_linear_scaling_multiplies_each_stage_lr_by_the_replicas(tmp_path):
    stage = _recipe(tmp_path).stages[0]
    two = Distribution("mirrored", None, 2, ("GPU:0", "GPU:1"), scale_lr="linear")
    assert two.stage(stage).lr == pytest.approx(2 * stage.lr) and two.stage(stage).name == stage.name
    assert Distribution("mirrored", None, 2, scale_lr="none").stage(stage) is stage  # never rescaled silently
    assert "global batch 32 = 16 per replica" in two.summary(32) and "x2" in two.summary(32)
    assert two.batch_warnings(32, 64) == []
    assert any("multiple of 2" in w for w in two.batch_warnings(33, 66))
    assert any("last batch of each epoch has 4 images" in w for w in two.batch_warnings(8, 20))
    assert LOCAL.batch_warnings(7, 10) == []


# === errors of set-ups this machine cannot run: exit 2 from the CLI, before anything is written ===

@pytest.fixture(scope="module")
def csv_data(tmp_path_factory):
    """32 train / 8 val / 8 test images of 4 classes (a CSV with a split column: exact counts, so the global batch
    of 8 divides the training split)."""
    root = make_image_folder(tmp_path_factory.mktemp("dist") / "images", classes=4, per_class=12)
    rows = []
    for k in range(4):
        files = sorted((root / f"class_{k}").iterdir())
        rows += [(f, f"class_{k}", "train" if i < 8 else "val" if i < 10 else "test") for i, f in enumerate(files)]
    path = root / "data.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows((str(p.relative_to(root)), label, split) for p, label, split in rows)
    return path


def _cli_error(capsys, args) -> str:
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\n\n" not in err.strip() and "Traceback" not in err, err  # one paragraph
    return " ".join(err.split())  # unwrapped


def test_jax_data_parallel_on_the_tensorflow_backend_is_refused(csv_data, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(mini_recipe(csv_data.parent) | {"data": {"csv": str(csv_data), "image_size": 32}}))
    err = _cli_error(capsys, ["train", str(recipe), "--out", str(tmp_path / "run"), "--strategy",
                              "jax-data-parallel"])
    assert "distribute.strategy: jax-data-parallel" in err and "tensorflow backend" in err
    assert "Supported here: none, auto, mirrored, multi-worker" in err
    assert not (tmp_path / "run").exists()


def test_jax_data_parallel_on_jax_says_what_is_supported(monkeypatch):
    import inceptune.distribute as D

    monkeypatch.setattr(D, "_backend", lambda: "jax")
    with pytest.raises(RecipeError, match="jax-data-parallel is not implemented.*Supported: none, auto, mirrored, "
                                          "multi-worker, with KERAS_BACKEND=tensorflow") as info:
        setup_distribution(DistributeConfig("jax-data-parallel"))
    assert info.value.key == "distribute.strategy"
    with pytest.raises(RecipeError, match="mirrored is a TensorFlow strategy.*KERAS_BACKEND=tensorflow"):
        setup_distribution(DistributeConfig("mirrored"))


def test_more_devices_than_exist_and_unknown_strategy_exit_2(csv_data, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(mini_recipe(csv_data.parent) | {"data": {"csv": str(csv_data), "image_size": 32}}))
    err = _cli_error(capsys, ["train", str(recipe), "--out", str(tmp_path / "run"), "--set",
                              "distribute={strategy: mirrored, devices: [CPU:0, CPU:1]}"])
    assert "distribute.devices[1]: no device CPU:1 on this machine" in err and "it has CPU:0" in err
    assert "split_cpu" in err
    err = _cli_error(capsys, ["train", str(recipe), "--out", str(tmp_path / "run"), "--strategy", "mirored"])
    assert 'distribute.strategy: unknown strategy "mirored"' in err and 'did you mean "mirrored"' in err
    assert not (tmp_path / "run").exists()


def test_auto_without_two_gpus_trains_on_one_device():
    dist = setup_distribution(DistributeConfig("auto"))
    assert dist.strategy is None and dist.name == "none" and dist.replicas == 1
    assert "auto found 0 GPUs" in dist.notes[0]


def test_tf_config_is_checked(monkeypatch):
    with pytest.raises(RecipeError, match="multi-worker needs the TF_CONFIG environment variable.*HINT: on each"):
        read_tf_config({})
    with pytest.raises(RecipeError, match="TF_CONFIG is not valid JSON"):
        read_tf_config({"TF_CONFIG": "{cluster"})
    with pytest.raises(RecipeError, match="must hold a cluster of workers and this process's task"):
        read_tf_config({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker",
                                                                                          "index": 1}})})
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(RecipeError) as info:
        setup_distribution(DistributeConfig("multi-worker"))
    assert info.value.key == "distribute.strategy"


def test_worker_folder_is_temporary_and_resumes_from_the_chiefs_epoch(tmp_path):
    chief = tmp_path / "run"
    (chief / "checkpoints").mkdir(parents=True)
    (chief / "recipe.yaml").write_text("r")
    (chief / "manifest.csv").write_text("m")
    for name in ("base-1.weights.npz", "epoch-2.weights.npz", "epoch-2.optimizer.npz", "epoch-1.weights.npz"):
        (chief / "checkpoints" / name).write_bytes(name.encode())
    state = {"base": "base-1.weights.npz", "weights": "epoch-2.weights.npz", "optimizer": "epoch-2.optimizer.npz"}
    (chief / "checkpoints" / "state.json").write_text(json.dumps(state))
    before = sorted(p.relative_to(chief) for p in chief.rglob("*"))
    with worker_folder(chief, resume=True) as folder:
        assert folder != chief and (folder / "recipe.yaml").read_text() == "r"
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == sorted([*state.values(), "state.json"])
        (folder / "log.txt").write_text("the worker's own files")
    assert not folder.exists()
    assert sorted(p.relative_to(chief) for p in chief.rglob("*")) == before  # the chief's folder untouched
    with worker_folder(chief, resume=False) as folder:
        assert list(folder.iterdir()) == []


# === training under the strategies (fresh processes) ===

def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _two_stage(csv_path, cache):
    recipe = mini_recipe(csv_path.parent, cache=cache, stages=[
        {"name": "head", "train": "head", "epochs": 2, "lr": 1e-2},
        {"name": "all", "train": "all", "epochs": 2, "lr": 3e-3, "schedule": "cosine"}])
    recipe["data"] = {"csv": str(csv_path), "image_size": 32, "batch_size": 8}
    return recipe


def _compare(csv_data, tmp_path, cache, **distribute):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"recipe": _two_stage(csv_data, cache), "out": str(tmp_path / "runs"),
                                "distribute": distribute}))
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(WORKER), "compare", str(spec), str(result)], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_equals_one_device(csv_data, tmp_path):
    r = _compare(csv_data, tmp_path, "off")
    log = r["mirrored_log"]
    assert "distribute: mirrored on CPU:0, CPU:1: 2 replicas; global batch 8 = 4 per replica" in log
    assert "distribute:" not in r["single_log"]
    assert r["max_abs_change"] > 0.01
    assert r["max_abs_diff"] < 1e-4, r["max_abs_diff"]
    assert [h["stage"] for h in r["mirrored_history"]] == ["head", "head", "all", "all"]
    for a, b in zip(r["single_history"], r["mirrored_history"]):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["val_loss"] - b["val_loss"]) < 1e-4
    assert r["single_accuracy"] == r["mirrored_accuracy"]


@pytest.mark.slow
def test_mirrored_cached_head_stage_equals_one_device(csv_data, tmp_path):
    r = _compare(csv_data, tmp_path, "auto")
    assert [h["cached"] for h in r["mirrored_history"]] == [1, 1, 0, 0]  # the head stage on cached features
    assert [h["cached"] for h in r["single_history"]] == [1, 1, 0, 0]
    assert r["max_abs_diff"] < 1e-4, r["max_abs_diff"]
    for a, b in zip(r["single_history"], r["mirrored_history"]):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["val_loss"] - b["val_loss"]) < 1e-4


@pytest.mark.slow
def test_mirrored_linear_scaling_doubles_the_logged_lr(csv_data, tmp_path):
    r = _compare(csv_data, tmp_path, "auto", scale_lr="linear")
    for a, b in zip(r["single_history"], r["mirrored_history"]):
        assert b["lr"] == pytest.approx(2 * a["lr"])
    assert "x2 (scale_lr: linear)" in r["mirrored_log"]
    assert r["max_abs_diff"] > 1e-3  # a different learning rate: different weights


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _multi_worker(tmp_path, recipe, out, *, resume=False, stop_after_epochs=None, timeout=420):
    """Starts two workers on 127.0.0.1 (TF_CONFIG each) and waits for both; returns their results."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs, results = [], []
    for i in range(2):
        spec = tmp_path / f"spec{i}-{int(resume)}.json"
        spec.write_text(json.dumps({"recipe": recipe, "out": str(out), "resume": resume,
                                    "stop_after_epochs": stop_after_epochs}))
        results.append(tmp_path / f"result{i}-{int(resume)}.json")
        env = _env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                   INCEPTUNE_CACHE_DIR=str(tmp_path / f"cache{i}"))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), "worker", str(spec), str(results[-1])], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    t0 = time.time()
    try:
        outs = [p.communicate(timeout=max(timeout - (time.time() - t0), 1)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(r.read_text()) for r in results], time.time() - t0


def _cached_two_stage(csv_path):
    """Two stages on cached features."""
    recipe = _two_stage(csv_path, "auto")
    recipe["stages"] = [{"name": "head", "train": "head", "epochs": 2, "lr": 1e-2},
                        {"name": "all", "train": "head", "epochs": 2, "lr": 3e-3, "schedule": "cosine"}]
    return dict(recipe, distribute={"strategy": "multi-worker"})


@pytest.mark.slow
def test_multi_worker_image_stage(csv_data, tmp_path):
    """Stages on images under `multi-worker` (where Keras 3's `fit` fails: keras-team/keras#20585) train in
    inceptune's own loop, Keras's `train_step` on every replica: two workers (2 replicas, 4 images each of the
    global batch of 8) reach the loss, validation loss and weights of one process training batches of 8."""
    import numpy as np

    from inceptune import train

    recipe = dict(_two_stage(csv_data, "off"), distribute={"strategy": "multi-worker"})
    (chief, other), _ = _multi_worker(tmp_path, recipe, tmp_path / "run", timeout=300)
    assert [(h["stage"], h["cached"]) for h in chief["history"]] == [("head", 0), ("head", 0), ("all", 0),
                                                                      ("all", 0)]
    assert chief["fingerprint"] == pytest.approx(other["fingerprint"], rel=1e-6)  # the same weights on both
    single = train(dict(recipe, distribute={"strategy": "none"}), out=tmp_path / "single", verbose=False)
    for a, b in zip(single.history, chief["history"]):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["val_loss"] - b["val_loss"]) < 1e-4, (a, b)
    fingerprint = float(sum(np.sum(np.asarray(v.numpy(), dtype="float64")) for v in single.model.weights))
    assert chief["fingerprint"] == pytest.approx(fingerprint, rel=1e-5)
    assert (tmp_path / "run" / "model.keras").exists() and (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_multi_worker_two_processes_chief_writes_the_run_folder(csv_data, tmp_path):
    recipe = _cached_two_stage(csv_data)
    out = tmp_path / "run"
    (chief, other), seconds = _multi_worker(tmp_path, recipe, out, stop_after_epochs=3)
    assert not (out / "model.keras").exists() and (out / "checkpoints" / "state.json").exists()
    # resume: both workers restart; each continues from the chief's last complete epoch (BackupAndRestore's way)
    (chief, other), more = _multi_worker(tmp_path, recipe, out, resume=True)
    assert seconds + more < 600
    for name in ("recipe.yaml", "manifest.csv", "labels.json", "history.csv", "model.keras", "metrics.json",
                 "report.html", "log.txt", "checkpoints/state.json"):
        assert (out / name).exists(), name
    log = (out / "log.txt").read_text()
    assert "distribute: multi-worker on CPU:0, worker 0 of 2 (chief): 2 replicas; global batch 8 = 4 per replica" in log
    assert "resuming run" in log
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [(r["stage"], r["epoch"]) for r in rows] == [("head", "1"), ("head", "2"), ("all", "1"), ("all", "2")]
    assert chief["dir"] == other["dir"] == str(out)
    assert len(chief["history"]) == len(other["history"]) == 4
    assert chief["fingerprint"] == pytest.approx(other["fingerprint"], rel=1e-6)  # the same weights on both
    assert not [p for p in out.rglob("*") if "worker" in p.name]
