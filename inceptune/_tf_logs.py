"""TensorFlow's C++ start-up lines, held to the level TF_CPP_MIN_LOG_LEVEL asks for.

Since TensorFlow 2.21 some start-up lines (`port.cc:153] oneDNN custom operations are on ...`, with absl's
`WARNING: All log messages before absl::InitializeLog() is called are written to STDERR` preamble) go straight to
absl's logger, which prints every severity before it is initialised and ignores TF_CPP_MIN_LOG_LEVEL. They come
while `import tensorflow` runs, so `install()` puts a finder in front of the import system that runs that one
module's code with file descriptor 2 pointed at a temporary file, then writes back to stderr every line the level keeps
(errors always, anything that is not a log line always). Nothing is dropped that the user's level would show.
"""

from __future__ import annotations

import importlib.abc
import os
import re
import sys
import tempfile

__all__ = ["install", "kept_lines"]

# absl's prefix `I0000 00:00:1796290414.852124    1983 port.cc:153] ...` and TensorFlow's older
# `2026-01-30 22:44:42.456316: I tensorflow/core/util/port.cc:153] ...`
_LOG_LINE = re.compile(r"^(?:([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ |\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) )")
_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def _min_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def kept_lines(text: str, min_level: int) -> str:
    """The lines of `text` that TF_CPP_MIN_LOG_LEVEL=`min_level` shows: log lines at or above the level, the
    preamble only while INFO is shown, and every line that is not TensorFlow's log (a Python warning, a crash)."""
    kept = []
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == _PREAMBLE:
            if min_level <= 0:
                kept.append(line)
            continue
        match = _LOG_LINE.match(line)
        if match and _SEVERITY[match.group(1) or match.group(2)] < min_level:
            continue
        kept.append(line)
    return "".join(kept)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the finders behind it and runs its module code with fd 2 captured."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)   # one import only; the lookup below goes to the finders behind this one
        if _min_level() <= 0:
            return None   # the user asked to see everything: the normal import, untouched
        spec = next((s for s in (getattr(f, "find_spec", lambda *a: None)(name, path, target) for f in sys.meta_path)
                     if s is not None), None)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _CapturingLoader(spec.loader)
        return spec


class _CapturingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # the module keeps the real loader (importlib.resources and pkgutil ask it for files)
        module.__spec__.loader = module.__loader__ = self.loader
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile(mode="w+b") as held:
            os.dup2(held.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                held.seek(0)
                text = kept_lines(held.read().decode("utf-8", "replace"), _min_level())
                if text:
                    sys.stderr.write(text)
                    sys.stderr.flush()


def install() -> None:
    """Quiet the next `import tensorflow` (a no-op when TensorFlow is imported already, or fd 2 is not open)."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    try:
        os.fstat(2)
    except OSError:
        return
    sys.meta_path.insert(0, _QuietImport())
