"""CLI tests of evaluate, predict and export on one run trained once for the module (inception_mini, tiny data)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import shutil

import pytest
from helpers import make_image_folder, mini_recipe

from inceptune.cli import main
from inceptune.training import train

STAGES = [{"name": "head", "train": "head", "epochs": 1, "lr": 1e-2},
          {"name": "all", "train": "all", "epochs": 1, "lr": 3e-3}]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cli") / "images", classes=3, per_class=15)


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    run = train(mini_recipe(data_dir, stages=STAGES), out=tmp_path_factory.mktemp("runs") / "run", verbose=False)
    return run.dir


# === evaluate ===


def test_evaluate_test_split_reproduces_the_run_metrics(run_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["evaluate", str(run_dir), "--data", str(run_dir / "manifest.csv"), "--split", "test",
               "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    ours = json.loads((out / "metrics.json").read_text())
    theirs = json.loads((run_dir / "metrics.json").read_text())  # written by train on the same test split
    tests = [r for r in csv.DictReader(open(run_dir / "manifest.csv")) if r["split"] == "test"]
    assert ours["num_samples"] == theirs["num_samples"] == len(tests) > 0
    assert ours["accuracy"] == theirs["accuracy"]
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]
    assert ours["log_loss"] == pytest.approx(theirs["log_loss"], abs=1e-5)
    assert (out / "report.html").is_file() and (out / "skipped.csv").is_file()
    assert f"accuracy {theirs['accuracy']:.4f}" in text
    assert f"macro F1 {theirs['macro_avg']['f1']:.4f}" in text
    for name in ("class_0", "class_1", "class_2", "macro avg", "weighted avg"):
        assert name in text


def test_evaluate_default_out_is_in_the_run_and_never_overwritten(run_dir, data_dir, capsys):
    default = run_dir / f"eval-{data_dir.name}"
    assert main(["evaluate", str(run_dir), "--data", str(data_dir), "--quiet"]) == 0
    assert json.loads((default / "metrics.json").read_text())["num_samples"] == 45
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", str(data_dir), "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"error: evaluate: the output folder {default} already exists and is not empty")
    assert "HINT: pass --force to write over it" in err


def test_evaluate_refuses_to_write_into_the_data_folder(run_dir, data_dir, capsys):
    assert main(["evaluate", str(run_dir), "--data", str(data_dir), "--out", str(data_dir / "eval")]) == 2
    assert "inside the data folder" in " ".join(capsys.readouterr().err.split())
    assert not (data_dir / "eval").exists()


def test_evaluate_missing_class_warns_and_reports_bad_files(run_dir, data_dir, tmp_path, capsys):
    part = tmp_path / "part"
    shutil.copytree(data_dir / "class_1", part / "class_1")
    shutil.copytree(data_dir / "class_2", part / "class_2")
    (part / "class_2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert main(["evaluate", str(run_dir), "--data", str(part), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "warning: model classes ['class_0'] have no image in the data" in captured.out
    assert f"skipped: {part / 'class_2' / 'broken.png'}:" in captured.err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_samples"] == 30 and metrics["per_class"]["class_0"]["support"] == 0
    rows = list(csv.reader(open(tmp_path / "ev" / "skipped.csv")))
    assert rows[0] == ["file", "reason"] and rows[1][0] == str(part / "class_2" / "broken.png")


def test_evaluate_unknown_class_exits_2_without_traceback(run_dir, data_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(data_dir / "class_0", bad / "class_0")
    shutil.copytree(data_dir / "class_1", bad / "dog")
    assert main(["evaluate", str(run_dir), "--data", str(bad), "--out", str(tmp_path / "ev")]) == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "Traceback" not in captured.err and captured.out == ""
    assert err.startswith("error: The data has classes the model does not know: 'dog'")
    assert "The model knows ['class_0', 'class_1', 'class_2']" in err
    assert not (tmp_path / "ev").exists()


# === predict ===


def test_predict_json_reports_bad_files(run_dir, data_dir, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    good = data_dir / "class_0" / "c0_img_000.png"
    rc = main(["predict", str(run_dir), str(good), str(tmp_path / "bad.jpg"), str(data_dir / "class_1"),
               "--top-k", "2", "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["labels"] == ["class_0", "class_1", "class_2"] and out["top_k"] == 2
    assert [p["path"] for p in out["predictions"]] == [str(good)] + sorted(
        str(p) for p in (data_dir / "class_1").iterdir())
    assert all(len(p["top"]) == 2 and p["top"][0]["probability"] >= p["top"][1]["probability"]
               for p in out["predictions"])
    assert out["skipped"] == [{"path": str(tmp_path / "bad.jpg"),
                               "reason": "not an image: Pillow cannot identify the file's format"}]
    assert f"skipped: {tmp_path / 'bad.jpg'}: not an image" in captured.err


def test_predict_csv_and_text(run_dir, data_dir, capsys):
    assert main(["predict", str(run_dir), str(data_dir / "class_2"), "--csv", "--top-k", "3"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 15
    assert sorted(rows[0]) == sorted(["path"] + [f"{k}_{i}" for i in (1, 2, 3) for k in ("label", "probability")])
    assert sum(float(rows[0][f"probability_{i}"]) for i in (1, 2, 3)) == pytest.approx(1.0, abs=1e-4)
    assert main(["predict", str(run_dir / "model.keras"), str(data_dir / "class_2" / "c2_img_000.png")]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"{data_dir / 'class_2' / 'c2_img_000.png'}  class_")
    assert text[-1] == "1 image(s) predicted"


def test_predict_nothing_usable_exits_2(run_dir, tmp_path, capsys):
    (tmp_path / "bad.png").write_text("x")
    assert main(["predict", str(run_dir), str(tmp_path / "bad.png"), str(tmp_path / "missing.png")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: no image could be predicted: 2 file(s) skipped" in err
    assert f"skipped: {tmp_path / 'missing.png'}: does not exist" in err


def test_predict_refuses_a_non_keras_model(tmp_path, capsys):
    (tmp_path / "model.h5").write_bytes(b"x")
    assert main(["predict", str(tmp_path / "model.h5"), str(tmp_path)]) == 2
    assert "legacy HDF5 files are not supported" in " ".join(capsys.readouterr().err.split())


# === export ===


def test_export_keras_verified_and_never_overwritten(run_dir, capsys):
    assert main(["export", str(run_dir), "--format", "keras"]) == 0
    out = capsys.readouterr().out.splitlines()
    path = run_dir / "export" / "model.keras"
    assert re.fullmatch(r"exported keras in \d+\.\ds: " + re.escape(f"{path} (labels.json: "
                                                                    f"{run_dir / 'export' / 'labels.json'})"), out[0])
    assert out[1] == ("verified: keras: top-1 agrees on 4/4 images, max abs diff 0 (limit 0.001) -> OK on real "
                      "images of the run")
    assert json.loads((run_dir / "export" / "labels.json").read_text()) == ["class_0", "class_1", "class_2"]
    assert main(["export", str(run_dir), "--format", "keras"]) == 2
    assert "already exists; an export never replaces" in " ".join(capsys.readouterr().err.split())


def test_export_missing_converter_says_how_to_install(run_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "missing: ['tf2onnx']" in err and 'pip install "inceptune[export]"' in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_unknown_format_is_a_usage_error(run_dir, capsys):
    assert main(["export", str(run_dir), "--format", "coreml"]) == 2
    assert "invalid choice: 'coreml'" in capsys.readouterr().err


def test_a_head_stage_on_a_random_backbone_is_warned_about(run_dir):
    log = (run_dir / "log.txt").read_text()
    head, rest = log.split("=== stage 1/2 'head'")[1].split("=== stage 2/2 'all'")
    assert ("warning: the backbone has random weights (weights: none) and this stage keeps " in head
            and "frozen random features rarely transfer. HINT: use model.weights: imagenet" in head)
    assert "random weights" not in rest  # the stage that trains everything is fine


def test_evaluate_warns_when_the_data_holds_training_images(run_dir, data_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--data", str(data_dir), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    with open(run_dir / "manifest.csv", newline="") as fh:
        n_train = sum(1 for r in csv.DictReader(fh) if r["split"] == "train")
    assert (f"warning: {n_train} of the 45 evaluated images are in the run's training split (same file content): "
            "these metrics overstate how the model does on new images. HINT: score the held-out test split with "
            f"--data {run_dir / 'manifest.csv'} --split test") in out
    assert main(["evaluate", str(run_dir), "--data", str(run_dir / "manifest.csv"), "--split", "test",
                 "--out", str(tmp_path / "ev2"), "--quiet"]) == 0
    assert "training split" not in capsys.readouterr().out
