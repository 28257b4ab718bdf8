import json
import os
import subprocess
import sys
import textwrap

from helpers import make_image_folder

import inceptune
from inceptune import architectures as A
from inceptune.cli import main


def _run(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "inceptune", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_inspect_json_through_mixed7(capsys):
    rc = main(["inspect", "inception_v3", "--weights", "none", "--image-size", "75", "--freeze", "through:mixed7",
               "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert sum(b["trainable_params"] + b["frozen_params"] for b in data["blocks"]) == 21_802_784
    states = {b["block"]: b["state"] for b in data["blocks"]}
    assert [states[f"mixed{i}"] for i in (8, 9, 10)] == ["trainable"] * 3
    assert {states[b] for b in states if b not in ("mixed8", "mixed9", "mixed10")} == {"frozen"}
    frozen = {b["block"]: b for b in data["blocks"]}
    assert all(frozen[f"mixed{i}"]["trainable_params"] == 0 for i in range(8))


def test_inspect_unknown_block_exits_2_without_traceback():
    proc = _run("inspect", "inception_v3", "--freeze", "block:mixed11")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: selector 'block:mixed11': unknown block 'mixed11'")
    assert "mixed10" in err and "\n\n" not in err  # one paragraph
    assert proc.stdout == ""


def test_inspect_bad_selector_syntax_is_fast_and_clear(capsys):
    assert main(["inspect", "inception_v3", "--freeze", "first:-3"]) == 2
    assert "first:N needs a whole number" in capsys.readouterr().err


def test_unknown_backbone(capsys):
    assert main(["inspect", "inception_v4"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_usage_error_exit_code(capsys):
    assert main(["inspect"]) == 2
    assert main(["no-such-command"]) == 2


def test_backbones_lists_blocks(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "inception_v3" in out and "mixed10" in out and "block17_20" in out and "inception_mini" in out
    assert "ResNet50" in out  # the keras.applications names, read without importing Keras
    assert main(["backbones", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [a["blocks"] for a in data["architectures"]] == [list(s.block_names) for s in A.ARCHITECTURES.values()]
    assert "InceptionV3" in data["keras_applications"]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"inceptune {inceptune.__version__}\n" == "inceptune 0.1.0\n"


def test_fast_commands_import_neither_keras_nor_tensorflow(tmp_path):
    """--help, --version, backbones (text and JSON) and data summary, in a fresh interpreter."""
    data = make_image_folder(tmp_path / "images", classes=2, per_class=8, size=32)
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from inceptune.cli import main
        codes, summary = [], ["data", "summary", {str(data)!r}, "--method", "stratified"]
        for argv in (["--help"], ["--version"], ["backbones"], ["backbones", "--json"], summary):
            with contextlib.redirect_stdout(io.StringIO()):
                codes.append(main(argv))
        print(codes, sorted(m for m in ("keras", "tensorflow") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split("\n")[-2] == "[0, 0, 0, 0, 0] []", done.stdout + done.stderr


def test_inspect_builds_the_model_once(monkeypatch, capsys):
    built = []
    build = A.build_inception_mini
    monkeypatch.setattr(A, "build_inception_mini", lambda *a, **k: built.append(1) or build(*a, **k))
    assert main(["inspect", "inception_mini", "--freeze", "through:mixed1", "--layers"]) == 0
    assert main(["inspect", "inception_mini", "--train", "head,from:mixed2", "--json"]) == 0
    assert len(built) == 2  # one build per command
    assert "mixed1" in capsys.readouterr().out


def test_usage_hint_names_the_command(capsys):
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "`inceptune train --help`" in err  # a quoted command is never split across lines
    assert "HINT: run `inceptune train --help` for the options" in " ".join(err.split()) and "COMMAND" not in err


def test_inspect_table(capsys):
    assert main(["inspect", "inception_mini", "--train", "from:mixed2"]) == 0
    out = capsys.readouterr().out
    assert "mixed3" in out and "trainable" in out and "total" in out
