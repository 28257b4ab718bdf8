"""Tests for inceptune.progress and what a run shows: one progress display per phase on a terminal (never Keras's
own), plain lines in a pipe."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading

import pytest
import yaml
from helpers import make_image_folder, mini_recipe

from inceptune.progress import Bar

# a cached head stage, then an uncached stage that trains everything
STAGES = [{"name": "head", "train": "head", "epochs": 2, "lr": 1e-2},
          {"name": "all", "train": "all", "epochs": 2, "lr": 3e-3}]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    images = make_image_folder(root / "images", classes=2, per_class=10)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(mini_recipe(images, stages=STAGES, cache="auto")))
    return path


def _train(recipe_file, out, terminal: bool) -> str:
    """Runs `inceptune train` in a pseudo-terminal (as in a real terminal) or with pipes; returns what it printed."""
    cmd = [sys.executable, "-m", "inceptune", "train", str(recipe_file), "--out", str(out)]
    env = dict(os.environ, COLUMNS="100")
    if not terminal:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert proc.wait(timeout=600) == 0
    reader.join(timeout=10)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_one_bar_per_epoch_and_never_keras_s(recipe_file, tmp_path):
    text = _train(recipe_file, tmp_path / "tty", terminal=True)
    assert "Epoch 1/" not in text and "━" not in text  # Keras's own header and bar
    for stage in ("head", "all"):
        for epoch in (1, 2):
            line = f"  {stage} epoch {epoch}/2  loss "
            assert text.count(line) == 1, (line, text)  # the epoch's result line, once
            assert f"{stage} epoch {epoch}/2:" in text  # its bar (tqdm writes "desc: ...")
    assert "(cached features)" in text and "batch" in text


def test_a_pipe_gets_plain_lines_only(recipe_file, tmp_path):
    text = _train(recipe_file, tmp_path / "pipe", terminal=False)
    assert "\r" not in text and "Epoch 1/" not in text and "batch/s" not in text
    assert [line.split("  loss")[0] for line in text.splitlines() if line.startswith("  ") and " epoch " in line] == [
        "  head epoch 1/2", "  head epoch 2/2", "  all epoch 1/2", "  all epoch 2/2"]
    assert "best epoch by val_loss: stage '" in text  # names the epoch, not only the value


def test_bar_is_silent_off_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with Bar(10, "work") as bar:
        bar.update(5, loss=0.5)
        assert not bar.shown
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with Bar(10, "work", show=False) as bar:
        assert not bar.shown
    with Bar(10, "work") as bar:
        assert bar.shown
        bar.update(10, loss=0.25)
    assert "work" in capsys.readouterr().err


def test_quiet_prints_only_the_summary(recipe_file, tmp_path, capsys):
    from inceptune.cli import main

    assert main(["train", str(recipe_file), "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("stage ") and lines[1].startswith("head ") and lines[2].startswith("all ")
    assert lines[3].startswith("test accuracy ") and lines[4] == f"run folder: {tmp_path / 'quiet'}"
    assert len(lines) == 5
