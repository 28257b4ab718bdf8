"""The bad-input corpus (issue #16): every CLI command that reads user input, fed broken input.

Each case runs `inceptune.cli.main` in-process and checks the contract of DESIGN.md §8: exit code 2 (or a
documented success with a warning), one paragraph on stderr that names the file, key or layer at fault, no
traceback (unless `--debug`), and nothing the user gave lost or overwritten. The inputs are generated here; the
only model files are a tiny stock-layer classifier saved once for the module (and broken copies of it).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import TINY_LABELS, make_image_folder, tiny_classifier

from inceptune.cli import main

# === shared inputs (built once for the module) ===


@dataclasses.dataclass
class World:
    """The module's inputs: a good data folder, a good model run, and a scratch folder per case."""

    root: Path
    data: Path  # 3 classes x 6 images of 32x32
    run: Path  # model.keras (tiny_classifier) + labels.json
    case: Path = None  # this case's own scratch folder

    def recipe(self, text: str, name: str = "recipe.yaml") -> str:
        path = self.case / name
        path.write_text(textwrap.dedent(text).replace("DATA", str(self.data)), encoding="utf-8")
        return str(path)

    def good_recipe(self, **edits) -> str:
        """A valid inception_mini recipe with `edits` (dotted YAML lines) replacing parts of it."""
        model = edits.get("model", "{backbone: inception_mini, weights: none, image_size: 32}")
        stages = edits.get("stages", "[{name: head, train: head, epochs: 1, lr: 0.01}]")
        data = edits.get("data", "{dir: DATA, batch_size: 8, split: {val: 0.2, test: 0.2, method: stratified}}")
        return self.recipe(f"data: {data}\nmodel: {model}\nstages: {stages}\ncache: off\n")


@pytest.fixture(autouse=True)
def _clear_keras_session():
    """Overrides conftest's per-test `clear_session` (0.8 s a call here, most of this module's time): these cases
    build at most a tiny model each, and nothing in them depends on Keras's automatic layer names."""
    yield


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    data = make_image_folder(root / "images", classes=3, per_class=6, size=32)
    run = root / "run"
    run.mkdir()
    tiny_classifier().save(run / "model.keras")
    (run / "labels.json").write_text(json.dumps(TINY_LABELS))
    return World(root, data, run)


@pytest.fixture
def w(world, tmp_path):
    world.case = tmp_path
    return world


def _snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes: what a failed command must leave exactly as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# === the corpus ===


@dataclasses.dataclass
class Case:
    """One bad input: `argv(w)` builds the command line; the error must contain every string of `says`."""

    name: str
    argv: Callable
    says: tuple
    code: int = 2
    after: Callable | None = None  # extra checks on the world after the command


def _one_class(w):
    d = w.case / "one"
    make_image_folder(d, classes=1, per_class=6)
    return d


def _empty_classes(w):
    d = w.case / "some-empty"
    make_image_folder(d, classes=2, per_class=10)
    (d / "class_2").mkdir()
    (d / "class_3").mkdir()
    (d / "class_3" / "notes.txt").write_text("no images here")
    return d


def _all_corrupt(w):
    d = w.case / "corrupt"
    make_image_folder(d, classes=2, per_class=6)
    for p in (d / "class_1").iterdir():
        p.write_bytes(p.read_bytes()[:40])  # truncated PNGs
    return d


def _outside_csv(w):
    csv_dir = w.case / "lists"
    csv_dir.mkdir()
    rows = [f"{p},{p.parent.name}" for p in sorted(w.data.rglob("*.png"))]
    rows[0] = f"../../../{rows[0].split(',')[0].lstrip('/')},class_0"
    rows.insert(0, "path,label")
    rows[1] = "../escape.png,class_0"
    (csv_dir / "data.csv").write_text("\n".join(rows) + "\n")
    return csv_dir / "data.csv"


def _broken_model(w, kind):
    d = w.case / kind
    d.mkdir()
    real = (w.run / "model.keras").read_bytes()
    body = {"garbage": b"this is not a zip file at all\n" * 10, "truncated": real[: len(real) // 2]}[kind]
    (d / "model.keras").write_bytes(body)
    shutil.copy(w.run / "labels.json", d / "labels.json")
    return d


def _labels_disagree(w):
    d = w.case / "labels-run"
    shutil.copytree(w.run, d)
    (d / "labels.json").write_text(json.dumps(["cat", "dog"]))
    return d


def _labels_not_json(w):
    d = w.case / "labels-bad"
    shutil.copytree(w.run, d)
    (d / "labels.json").write_text("[cat, dog")
    return d


def _lambda_model(w):
    import keras

    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale_by_lambda")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    out = keras.layers.Dense(3, activation="softmax", name="head_dense")(x)
    d = w.case / "lambda-run"
    d.mkdir()
    keras.Model(inp, out).save(d / "model.keras")
    (d / "labels.json").write_text(json.dumps(TINY_LABELS))
    return d


def _existing_out(w):
    out = w.case / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    return out


def _no_run_folder_left(path):
    def check(w):
        assert not Path(path(w)).exists(), f"{path(w)} was left behind"
    return check


def _unchanged(path_of, expected):
    def check(w):
        assert _snapshot(path_of(w)) == expected(w)
    return check


CASES = [
    # --- train: the recipe file ---
    Case("recipe-malformed-yaml", lambda w: ["train", w.recipe("data: {dir: DATA\nstages: [\n")],
         ("recipe.yaml", "line")),
    Case("recipe-is-a-list", lambda w: ["train", w.recipe("- data: DATA\n- stages: []\n")],
         ("recipe.yaml", "expected a mapping", "got a list")),
    Case("recipe-not-found", lambda w: ["train", str(w.case / "nope.yaml")], ("nope.yaml", "recipe file not found")),
    Case("recipe-binary", lambda w: ["train", str(_write(w.case / "r.yaml", b"\xff\xfe\x00\x01"))],
         ("r.yaml", "not a text file")),
    Case("recipe-empty", lambda w: ["train", str(_write(w.case / "r.yaml", b""))], ("r.yaml", "recipe is empty")),
    Case("unknown-top-key", lambda w: ["train", w.recipe("data: {dir: DATA}\nstagse: []\n")],
         ("stagse", "unknown key", "did you mean", "stages")),
    Case("unknown-stage-key", lambda w: ["train", w.good_recipe(stages="[{train: head, epoch: 2}]")],
         ("stages[0].epoch", "did you mean", "epochs")),
    Case("wrong-type-lr", lambda w: ["train", w.good_recipe(stages="[{train: head, lr: fast}]")],
         ("stages[0].lr", "expected a positive number", '"fast"')),
    Case("impossible-split", lambda w: ["train", w.good_recipe(data="{dir: DATA, split: {val: 0.7, test: 0.6}}")],
         ("data.split",)),
    Case("negative-epochs", lambda w: ["train", w.good_recipe(stages="[{train: head, epochs: -1}]")],
         ("stages[0].epochs", ">= 0")),
    Case("selector-syntax", lambda w: ["train", w.good_recipe(stages="[{train: 'first:-3'}]")],
         ("stages[0].train", "first:N needs a whole number")),
    Case("set-without-equals", lambda w: ["train", w.good_recipe(), "--set", "stages[0].lr"],
         ("--set", "stages[0].lr", "KEY=VALUE")),
    Case("set-unknown-key", lambda w: ["train", w.good_recipe(), "--set", "model.backbon=inception_v3"],
         ("--set model.backbon=inception_v3", "did you mean", "backbone")),
    # --- train: checks that need no data run before the scan (the data folder here does not even exist) ---
    Case("unknown-backbone-before-scan",
         lambda w: ["train", w.good_recipe(data="{dir: /no/such/folder}", model="{backbone: inception_v4}")],
         ("model.backbone", "unknown backbone 'inception_v4'", "Did you mean", "inception_v3")),
    Case("image-size-below-minimum-before-scan",
         lambda w: ["train", w.good_recipe(data="{dir: /no/such/folder}",
                                           model="{backbone: inception_mini, weights: none, image_size: 16}")],
         ("model.image_size", "16", "minimum is 32")),
    Case("weights-file-missing-before-scan",
         lambda w: ["train", w.good_recipe(data="{dir: /no/such/folder}",
                                           model="{backbone: inception_mini, weights: /no/such/w.weights.h5}")],
         ("model.weights", "/no/such/w.weights.h5", "does not exist")),
    Case("output-folder-exists-before-scan",
         lambda w: ["train", w.good_recipe(data="{dir: /no/such/folder}"), "--out", str(_existing_out(w))],
         ("mine", "already exists", "--force"),
         after=lambda w: _check_kept(w.case / "mine")),
    Case("force-over-a-folder-not-ours",
         lambda w: ["train", w.good_recipe(), "--out", str(_existing_out(w)), "--force"],
         ("does not look like an inceptune run folder", "nothing was deleted"),
         after=lambda w: _check_kept(w.case / "mine")),
    Case("resume-without-checkpoint", lambda w: ["train", "--resume", "--out", str(_existing_out(w))],
         ("cannot resume", "state.json")),
    # --- train: the data ---
    Case("data-folder-missing", lambda w: ["train", w.good_recipe(data="{dir: /no/such/folder}")],
         ("/no/such/folder", "does not exist")),
    Case("one-class", lambda w: ["train", w.good_recipe(data=f"{{dir: {_one_class(w)}}}"), "--out",
                                 str(w.case / "run")],
         ("one", "class"), after=_no_run_folder_left(lambda w: w.case / "run")),
    Case("only-corrupt-files", lambda w: ["train", w.good_recipe(data=f"{{dir: {_all_corrupt(w)}}}"), "--out",
                                          str(w.case / "run")],
         ("class 'class_1' has 0 valid images", "all 6 of its files were skipped (6 not an image)",
          "c1_img_000.png: not an image"),
         after=_no_run_folder_left(lambda w: w.case / "run")),
    Case("csv-paths-outside-its-folder", lambda w: ["train", w.good_recipe(data=f"{{csv: {_outside_csv(w)}}}")],
         ("data.csv", "escape.png", "outside", "allow_outside")),
    # --- train: what needs the built model, before any feature pass or epoch ---
    Case("selector-matches-nothing", lambda w: ["train", w.good_recipe(
        stages="[{train: head, epochs: 1}, {name: two, train: 'name:nothing*', epochs: 1}]"), "--out",
        str(w.case / "run")],
         ("stages[1].train", "name:nothing*", "matches no layer"),
         after=_no_run_folder_left(lambda w: w.case / "run")),
    Case("unknown-block", lambda w: ["train", w.good_recipe(stages="[{train: 'from:mixed7'}]")],
         ("stages[0].train", "mixed7", "mixed3")),
    Case("lr-mult-matches-nothing", lambda w: ["train", w.good_recipe(
        stages="[{train: all, lr_mult: {'name:zzz*': 0.1}}]"), "--out", str(w.case / "run")],
         ("stages[0].lr_mult", "name:zzz*", "matches no layer"),
         after=_no_run_folder_left(lambda w: w.case / "run")),
    Case("early-stopping-monitor-unknown", lambda w: ["train", w.good_recipe(
        stages="[{train: head, early_stopping: {monitor: val_acc}}]"), "--out", str(w.case / "run")],
         ("stages[0].early_stopping.monitor", "val_acc", "val_accuracy"),
         after=_no_run_folder_left(lambda w: w.case / "run")),
    Case("skip-from-unknown-layer", lambda w: ["train", w.good_recipe(
        model="{backbone: inception_mini, weights: none, skips: [{from: mixed9, to: mixed3}]}")],
         ("mixed9",)),
    # --- train: the output folder ---
    Case("output-under-a-file", lambda w: ["train", w.good_recipe(), "--out",
                                           str(_write(w.case / "afile", b"x") / "run")],
         ("afile", "cannot write"), after=lambda w: _check_bytes(w.case / "afile", b"x")),
    # --- evaluate ---
    Case("evaluate-model-not-a-model", lambda w: ["evaluate", str(_broken_model(w, "garbage")), "--data", str(w.data)],
         ("garbage/model.keras", "not a loadable .keras file")),
    Case("evaluate-truncated-keras", lambda w: ["evaluate", str(_broken_model(w, "truncated")), "--data", str(w.data)],
         ("truncated/model.keras", "not a loadable .keras file")),
    Case("evaluate-labels-disagree", lambda w: ["evaluate", str(_labels_disagree(w)), "--data", str(w.data)],
         ("labels.json", "names 2 classes", "3 outputs")),
    Case("evaluate-labels-not-json", lambda w: ["evaluate", str(_labels_not_json(w)), "--data", str(w.data)],
         ("labels.json", "not readable JSON")),
    Case("evaluate-data-missing", lambda w: ["evaluate", str(w.run), "--data", str(w.case / "gone")],
         ("gone", "does not exist")),
    Case("evaluate-unknown-class", lambda w: ["evaluate", str(w.run), "--data", str(_one_class(w).parent / "x"),
                                              "--out", str(w.case / "ev")],
         ("does not exist",)),
    Case("evaluate-out-exists", lambda w: ["evaluate", str(w.run), "--data", str(w.data), "--out",
                                           str(_existing_out(w))],
         ("mine", "already exists"), after=lambda w: _check_kept(w.case / "mine")),
    Case("evaluate-batch-size-zero", lambda w: ["evaluate", str(w.run), "--data", str(w.data), "--batch-size", "0"],
         ("batch_size", ">= 1")),
    # --- predict ---
    Case("predict-model-missing", lambda w: ["predict", str(w.case / "nomodel.keras"), str(w.data)],
         ("nomodel.keras", "does not exist")),
    Case("predict-lambda-refused", lambda w: ["predict", str(_lambda_model(w)), str(w.data)],
         ("lambda-run/model.keras", "safe mode", "Lambda", "Python code", "--trust-model")),
    Case("predict-lambda-trusted", lambda w: ["predict", str(_lambda_model(w)), str(w.data / "class_0"),
                                              "--trust-model"],
         ("6 image(s) predicted",), code=0),
    Case("predict-top-k-zero", lambda w: ["predict", str(w.run), str(w.data), "--top-k", "0"], ("top_k", ">= 1")),
    Case("predict-nothing-usable", lambda w: ["predict", str(w.run), str(_write(w.case / "a.png", b"png?"))],
         ("no image could be predicted", "a.png")),
    Case("predict-h5", lambda w: ["predict", str(_write(w.case / "m.h5", b"x")), str(w.data)],
         ("m.h5", "legacy HDF5")),
    # --- inspect ---
    Case("inspect-unknown-backbone", lambda w: ["inspect", "inceptionv3x"], ("inceptionv3x", "Did you mean")),
    Case("inspect-image-size-too-small", lambda w: ["inspect", "inception_mini", "--image-size", "8"],
         ("image_size 8", "minimum is 32")),
    Case("inspect-truncated-keras", lambda w: ["inspect", str(_broken_model(w, "truncated") / "model.keras")],
         ("model.keras", "not a loadable .keras file")),
    Case("inspect-selector-unknown-layer", lambda w: ["inspect", str(w.run), "--freeze", "through:stem_convv"],
         ("stem_convv", "stem_conv")),
    # --- export ---
    Case("export-not-a-model", lambda w: ["export", str(_broken_model(w, "garbage")), "--format", "keras"],
         ("model.keras", "not a loadable .keras file")),
    Case("export-out-is-a-folder", lambda w: ["export", str(w.run), "--format", "tflite", "--out",
                                              str(_existing_out(w))],
         ("mine",), after=lambda w: _check_kept(w.case / "mine")),
    # --- data summary ---
    Case("summary-missing-folder", lambda w: ["data", "summary", str(w.case / "nothing")],
         ("nothing", "does not exist")),
    Case("summary-csv-without-label", lambda w: ["data", "summary", str(_write(w.case / "l.csv", b"path\na.png\n"))],
         ("l.csv", "label")),
    Case("summary-impossible-fractions", lambda w: ["data", "summary", str(w.data), "--val", "0.8", "--test", "0.5"],
         ("val", "test")),
    Case("summary-one-class", lambda w: ["data", "summary", str(_one_class(w))], ("only one class", "class_0")),
    Case("summary-empty-classes-warned", lambda w: ["data", "summary", str(_empty_classes(w))],
         ("folder 'class_2' has no image files; it is not used as a class", "folder 'class_3' has no image files"),
         code=0),
    # --- cv ---
    Case("cv-one-fold", lambda w: ["cv", w.good_recipe(), "--folds", "1"], ("folds", ">= 2")),
    Case("cv-recipe-malformed", lambda w: ["cv", w.recipe("stages: [\n"), "--folds", "2"], ("recipe.yaml", "line")),
    Case("cv-unknown-backbone-before-scan", lambda w: ["cv", w.good_recipe(data="{dir: /no/such/folder}",
                                                                           model="{backbone: resnet5}"),
                                                       "--folds", "2", "--out", str(w.case / "cv")],
         ("model.backbone", "resnet5"), after=_no_run_folder_left(lambda w: w.case / "cv")),
    Case("cv-more-folds-than-images", lambda w: ["cv", w.good_recipe(), "--folds", "50", "--out", str(w.case / "cv")],
         ("folds", "50")),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _check_kept(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]
    assert (folder / "thesis.txt").read_text() == "years of work"


def _check_bytes(path: Path, data: bytes) -> None:
    assert path.read_bytes() == data


def test_the_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    commands = {c.name.split("-")[0] for c in CASES}
    assert {"evaluate", "predict", "inspect", "export", "summary", "cv"} <= commands
    assert sum(1 for c in CASES if c.name.split("-")[0] not in commands - {"x"} or True) == len(CASES)


def _check_error(err: str, says, debug: bool = False) -> str:
    assert err.startswith("error: "), err
    assert ("Traceback" in err) == debug, err
    text = err if debug else err.strip()
    if not debug:
        assert "\n\n" not in text, f"more than one paragraph:\n{err}"
    flat = " ".join(err.split())
    for needle in says:
        assert needle in flat, f"{needle!r} not in: {flat}"
    return flat


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, w, capsys):
    argv = case.argv(w)
    before = _snapshot(w.data), _snapshot(w.run)
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == case.code, f"exit {rc}\nstdout: {captured.out}\nstderr: {captured.err}"
    if case.code == 2:
        _check_error(_last_error(captured.err), case.says)
    else:  # a documented success: the warning or result is printed, and nothing went wrong
        assert "Traceback" not in captured.err and "error" not in captured.err, captured.err
        flat = " ".join((captured.out + captured.err).split())
        assert all(needle in flat for needle in case.says), flat
    assert (_snapshot(w.data), _snapshot(w.run)) == before  # the user's inputs are untouched
    if case.after is not None:
        case.after(w)


def _last_error(err: str) -> str:
    """The error paragraph (`skipped: ...` lines of predict/evaluate may come first)."""
    start = err.find("error: ")
    assert start >= 0, err
    return err[start:]


def test_debug_adds_the_traceback(w, capsys):
    assert main(["--debug", "train", w.good_recipe(stages="[{train: head, lr: fast}]")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RecipeError" in err
    _check_error(err[err.index("error: "):], ("stages[0].lr",))


# === fail fast: what needs no data comes before the scan, what needs the model before the feature pass ===


@pytest.mark.parametrize("argv, says", [
    (lambda w: ["train", w.good_recipe(model="{backbone: inception_v4}")], "model.backbone"),
    (lambda w: ["train", w.good_recipe(model="{backbone: inception_mini, image_size: 31}")], "model.image_size"),
    (lambda w: ["train", w.good_recipe(data="{dir: DATA, image_size: 20}", model="{backbone: inception_mini}")],
     "data.image_size"),
    (lambda w: ["train", w.good_recipe(stages="[{train: 'head,first:x'}]")], "stages[0].train"),
    (lambda w: ["train", w.good_recipe(), "--out", str(_existing_out(w))], "already exists"),
    (lambda w: ["train", str(w.data), "--backbone", "inception_v4"], "unknown backbone 'inception_v4'"),
    (lambda w: ["train", str(w.data), "--backbone", "inception_mini", "--image-size", "16"], "minimum is 32"),
    (lambda w: ["cv", w.good_recipe(model="{backbone: nope}"), "--folds", "2", "--out", str(w.case / "cv")],
     "model.backbone"),
], ids=["backbone", "model-image-size", "data-image-size", "selector-syntax", "out-exists", "dir-backbone",
        "dir-image-size", "cv-backbone"])
def test_checks_that_need_no_data_run_before_the_scan(argv, says, w, capsys, monkeypatch):
    from inceptune.data import prepared

    def no_scan(*a, **k):
        raise AssertionError("the data was scanned before a check that needs no data")

    monkeypatch.setattr(prepared, "scan", no_scan)
    assert main(argv(w)) == 2
    _check_error(capsys.readouterr().err, (says,))
    assert not (w.case / "cv").exists()


def test_selectors_matching_nothing_stop_the_run_before_the_feature_pass(w, capsys, monkeypatch):
    from inceptune import cache

    def no_pass(*a, **k):
        raise AssertionError("the feature pass started before every stage's selectors were checked")

    monkeypatch.setenv("INCEPTUNE_CACHE_DIR", str(w.case / "features"))
    monkeypatch.setattr(cache.CacheContext, "_fill", no_pass)
    recipe = w.good_recipe(stages="[{train: head}, {name: top, train: 'head,from:mixed3', lr_mult: {'re:^zz': 0.1}}]")
    (w.case / "r.yaml").write_text(Path(recipe).read_text().replace("cache: off", "cache: auto"))
    assert main(["train", str(w.case / "r.yaml"), "--out", str(w.case / "run")]) == 2
    _check_error(capsys.readouterr().err, ('stages[1].lr_mult["re:^zz"]', "matches no layer"))
    assert not (w.case / "run").exists() and not (w.case / "features").exists()


# === the file system: a read-only folder, a full disk ===


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into: a read-only tmpfs for root (whom permissions do not stop), else mode 555."""
    d = tmp_path / "read-only"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


@pytest.mark.parametrize("argv", [
    lambda w, ro: ["train", w.good_recipe(), "--out", str(ro / "run")],
    lambda w, ro: ["evaluate", str(w.run), "--data", str(w.data), "--out", str(ro / "ev")],
    lambda w, ro: ["export", str(w.run), "--format", "keras", "--out", str(ro / "m.keras")],
    lambda w, ro: ["cv", w.good_recipe(), "--folds", "2", "--out", str(ro / "cv")],
], ids=["train", "evaluate", "export", "cv"])
def test_a_read_only_output_folder(argv, w, read_only_dir, capsys):
    before = _snapshot(w.run)
    assert main(argv(w, read_only_dir)) == 2
    err = _check_error(capsys.readouterr().err, (str(read_only_dir),))
    assert "read-only" in err or "permission denied" in err
    assert "choose an --out folder you can write to" in err
    assert _snapshot(w.run) == before and not any(read_only_dir.iterdir())


def _fill_the_disk_at(name: str, monkeypatch):
    """Injects a full disk: every atomic write of a file called `name` fails with ENOSPC (as `write()` would)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see which file a write goes to")
    real_fsync = os.fsync

    def full_disk(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    return real_fsync


def test_a_full_disk_before_the_first_epoch_leaves_nothing(w, capsys, monkeypatch):
    _fill_the_disk_at("manifest.csv", monkeypatch)
    run = w.case / "run"
    assert main(["train", w.good_recipe(), "--out", str(run)]) == 2
    _check_error(capsys.readouterr().err, (f"cannot write {run / 'manifest.csv'}", "no space left on the device",
                                           "free space on that disk"))
    assert not run.exists()  # a run that fails before its first epoch leaves nothing behind


@pytest.mark.slow
def test_a_full_disk_while_writing_metrics_keeps_the_run_resumable(w, capsys, monkeypatch):
    """A write error injected where the disk fills up after training (metrics.json): exit 2 naming the file; the
    completed epochs are kept, nothing is half-written, and --resume finishes the run once there is space."""
    real_fsync = _fill_the_disk_at("metrics.json", monkeypatch)
    run = w.case / "run"
    assert main(["train", w.good_recipe(), "--out", str(run), "--quiet"]) == 2
    err = _check_error(capsys.readouterr().err, (f"cannot write {run / 'metrics.json'}", "no space left"))
    assert "--resume" in err
    assert (run / "checkpoints" / "state.json").is_file() and not (run / "metrics.json").exists()
    assert not [p for p in run.rglob("*") if ".tmp" in p.name or p.name.startswith("tmp-")]
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text())["num_samples"] == 4


@pytest.mark.slow
def test_a_real_full_disk(w, tmp_path):
    """`inceptune train` onto a 160 kB tmpfs: the first checkpoint does not fit. Exit 2, and the run, which had
    not completed an epoch, is removed (DESIGN.md §7), leaving the disk as it was."""
    disk = tmp_path / "tiny-disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        proc = subprocess.run([os.sys.executable, "-m", "inceptune", "train", w.good_recipe(), "--out",
                               str(disk / "run")], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert proc.returncode == 2, proc.stderr
        _check_error(proc.stderr, (str(disk / "run"), "no space left on the device"))
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
