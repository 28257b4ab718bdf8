"""Tests for inceptune._io: atomic writes give the permissions a plain open() would (0o666 & ~umask)."""

from __future__ import annotations

import contextlib
import os
import stat
import threading

import pytest

from inceptune import _io

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _write_every_way(folder) -> list:
    """One file per atomic writer; atomic_path with a writer that creates its file 0600 (as mkstemp does)."""
    paths = [_io.atomic_write_text(folder / "a.txt", "text\n"), _io.atomic_write_bytes(folder / "b.bin", b"\x00"),
             _io.atomic_write_json(folder / "c.json", {"k": 1})]
    target = folder / "d.npz"
    with _io.atomic_path(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"npz")
        os.close(fd)
    return [*paths, target]


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_atomic_writer_gives_open_permissions(tmp_path, mask, expected):
    with _umask(mask):
        paths = _write_every_way(tmp_path)
        with open(tmp_path / "plain.txt", "w") as fh:  # the reference: what open() gives
            fh.write("x")
    assert _mode(tmp_path / "plain.txt") == expected
    assert {p.name: _mode(p) for p in paths} == {p.name: expected for p in paths}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json", "d.npz", "plain.txt"]


def test_a_replaced_file_takes_the_new_mode(tmp_path):
    with _umask(0o077):
        private = _write_every_way(tmp_path)
    assert all(_mode(p) == 0o600 for p in private)
    with _umask(0o022):
        shared = _write_every_way(tmp_path)
    assert shared == private and all(_mode(p) == 0o644 for p in shared)
    assert (tmp_path / "a.txt").read_text() == "text\n"


def test_umask_is_read_without_changing_it():
    with _umask(0o027):
        assert _io._current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # left as it was


def test_fallback_reading_is_thread_safe(tmp_path, monkeypatch):
    """Without /proc (macOS), threads writing at once still all get the umask's mode and leave it unchanged."""
    real_open = open

    def no_proc(file, *args, **kwargs):
        if str(file) == "/proc/self/status":
            raise OSError("no /proc here")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    errors = []

    def work(i):
        try:
            for j in range(20):
                with _io.atomic_path(tmp_path / f"t{i}-{j}.bin") as tmp:
                    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # chmod needed
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    with _umask(0o022):
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert os.umask(0o022) == 0o022
    assert not errors
    assert {_mode(p) for p in tmp_path.iterdir()} == {0o644}
