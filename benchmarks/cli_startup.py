"""Start-up time of the `inceptune` command, this checkout beside another one (before/after), as a table.

What it times, each command started ``--runs`` times after one warm-up run that is not counted (median, min, max of
the wall time of the whole process, start-up included):

1. ``inceptune --help``
2. ``inceptune --version``
3. ``inceptune backbones``
4. ``inceptune data summary DIR`` on 100 generated 32x32 images (4 classes, ``tests/helpers.make_image_folder``)
5. ``inceptune train RECIPE``: the time to its first line of output (stdout or stderr, read through a
   pseudo-terminal as a user's terminal would show it); the process is then killed. The recipe is
   ``tests/helpers.mini_recipe`` (inception_mini, cache off) on the same 100 images.

The targets of issue 13: each of the first three under 1 s on a 2-core machine.

With ``--before DIR`` (a checkout of an earlier commit, e.g. ``git worktree add --detach /tmp/before HEAD~1``) both
are timed, in turn (before, after, before, after, ...: a drift of the machine's speed hits both alike), and shown
side by side. DIR runs with ``DIR/.venv`` when it has one; otherwise with this side's command and
``PYTHONPATH=DIR``, so that DIR's ``inceptune`` package is the one imported (check the "package" lines printed
first). A command the other checkout does not have (``--version`` before it existed) shows its exit code.

Usage:
    .venv/bin/python benchmarks/cli_startup.py [--runs 5] [--python PATH | --cli PATH]
        [--before DIR [--before-python PATH | --before-cli PATH]]

``--python PATH`` runs ``PATH -m inceptune``, ``--cli PATH`` runs a console script ``PATH``; by default this
checkout's ``.venv/bin/inceptune`` (or, without one, the running interpreter with ``-m inceptune``).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the children get the caller's environment as it was (plus a scratch KERAS_HOME), not what this process sets
CHILD_ENV = dict(os.environ)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # tests/helpers imports Keras into this process
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Side:
    """One checkout's way of running `inceptune`: a command prefix and extra environment."""

    label: str
    prefix: list[str]
    python: str
    env: dict = field(default_factory=dict)

    def environ(self) -> dict:
        return {**CHILD_ENV, **self.env}


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    codes: set = field(default_factory=set)
    first_line: str = ""

    def cell(self) -> str:
        if not self.seconds:
            return "-"
        med = statistics.median(self.seconds)
        text = f"{med:6.2f} s ({min(self.seconds):.2f}-{max(self.seconds):.2f})"
        bad = sorted(c for c in self.codes if c not in (0, None))
        return text + (f" exit {','.join(map(str, bad))}" if bad else "")


def _interpreter_of(script: str) -> str:
    """The interpreter of a console script (its `#!` line), for the "package" check."""
    with open(script, encoding="utf-8", errors="replace") as fh:
        line = fh.readline()
    return line[2:].strip().split()[0] if line.startswith("#!") else sys.executable


def _side(label: str, python: str | None, cli: str | None, checkout: Path | None = None,
          like: Side | None = None) -> Side:
    """How to run one side. A `checkout` without its own venv runs like the side `like`, with PYTHONPATH=checkout."""
    if checkout is not None and python is None and cli is None:
        venv_cli = checkout / ".venv" / "bin" / "inceptune"
        if venv_cli.exists():
            cli = str(venv_cli)
        else:
            path = os.pathsep.join(p for p in (str(checkout), CHILD_ENV.get("PYTHONPATH", "")) if p)
            return Side(label, list(like.prefix), like.python, {"PYTHONPATH": path})
    if cli is not None:
        return Side(label, [cli], _interpreter_of(cli))
    if python is None:
        own = ROOT / ".venv" / "bin" / "inceptune"
        if own.exists():
            return Side(label, [str(own)], _interpreter_of(str(own)))
        python = sys.executable
    return Side(label, [python, "-m", "inceptune"], python)


def _package_of(side: Side) -> str:
    done = subprocess.run([side.python, "-c", "import inceptune; print(inceptune.__file__)"], capture_output=True,
                          text=True, env=side.environ(), cwd=tempfile.gettempdir())
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def _time_run(side: Side, args: list[str], timing: Timing) -> None:
    start = time.perf_counter()
    done = subprocess.run(side.prefix + args, capture_output=True, env=side.environ(), cwd=tempfile.gettempdir())
    timing.seconds.append(time.perf_counter() - start)
    timing.codes.add(done.returncode)


def _time_first_line(side: Side, args: list[str], timing: Timing, limit: float = 300.0) -> None:
    """Seconds from the start of `args` to its first non-empty line on a pseudo-terminal; then kills it."""
    import pty

    master, slave = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(side.prefix + args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=side.environ(), cwd=tempfile.gettempdir(), start_new_session=True)
    os.close(slave)
    buf, line = b"", None
    try:
        while line is None and time.perf_counter() - start < limit:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal (it exited)
                    chunk = b""
                if not chunk:
                    break
                buf += chunk
                for piece in re.split(rb"[\r\n]", buf)[:-1]:
                    text = _ANSI.sub("", piece.decode("utf-8", "replace")).strip()
                    if text:
                        line = text
                        break
            elif proc.poll() is not None:
                break
        elapsed = time.perf_counter() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(master)
    if line is None:
        timing.codes.add(proc.returncode if proc.returncode is not None else "timeout")
        line = _ANSI.sub("", buf.decode("utf-8", "replace")).strip()[:200] or "(nothing)"
    else:
        timing.codes.add(0)
    timing.seconds.append(elapsed)
    timing.first_line = line


def _workload(tmp: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    import yaml
    from helpers import make_image_folder, mini_recipe

    data = make_image_folder(tmp / "images", classes=4, per_class=25, size=32)
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(mini_recipe(data)), encoding="utf-8")
    return data, recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5), after 1 warm-up")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--python", help="interpreter whose `-m inceptune` is timed (default: this checkout's venv)")
    g.add_argument("--cli", help="console script `inceptune` to time")
    parser.add_argument("--before", type=Path, metavar="DIR", help="a checkout of an earlier commit, timed beside")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--before-python", help="interpreter for --before (default DIR/.venv, else --python's)")
    g.add_argument("--before-cli", help="console script for --before")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="inceptune-cli-bench-"))
    CHILD_ENV.setdefault("KERAS_HOME", str(tmp / "keras_home"))
    try:
        after = _side("after", args.python, args.cli)
        sides = [after]
        if args.before is not None:
            sides.insert(0, _side("before", args.before_python, args.before_cli, args.before.resolve(), after))
        for side in sides:
            print(f"{side.label:>6}: {' '.join(side.prefix)}  (package {_package_of(side)})")
        data, recipe = _workload(tmp)
        commands = [
            ("inceptune --help", ["--help"], False),
            ("inceptune --version", ["--version"], False),
            ("inceptune backbones", ["backbones"], False),
            ("inceptune data summary (100 images)", ["data", "summary", str(data)], False),
            ("inceptune train: first line", ["train", str(recipe)], True),
        ]
        results: dict[tuple[str, str], Timing] = {}
        for title, cmd, first_line in commands:
            for i in range(args.runs + 1):
                for side in sides:
                    timing = results.setdefault((title, side.label), Timing()) if i else Timing()
                    if first_line:
                        run_dir = tmp / f"run-{side.label}-{i}"
                        _time_first_line(side, cmd + ["--out", str(run_dir)], timing)
                        shutil.rmtree(run_dir, ignore_errors=True)
                    else:
                        _time_run(side, cmd, timing)
            print(f"  timed {title}", file=sys.stderr)
        _print_table(commands, sides, results, args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _print_table(commands, sides, results, runs: int) -> None:
    print(f"\nwall time, median (min-max) of {runs} runs, {os.cpu_count()} CPUs")
    header = f"{'command':<38}" + "".join(f"{s.label:<30}" for s in sides) + ("after/before" if len(sides) > 1 else "")
    print(header)
    print("-" * len(header))
    for title, _, _ in commands:
        row = f"{title:<38}" + "".join(f"{results[(title, s.label)].cell():<30}" for s in sides)
        if len(sides) > 1:
            before, after = (results[(title, s.label)] for s in sides)
            if before.seconds and after.seconds and before.codes == after.codes == {0}:  # both ran, both succeeded
                row += f"{statistics.median(after.seconds) / statistics.median(before.seconds):.2f}x"
        print(row)
    for side in sides:
        print(f"first line of train ({side.label}): {results[(commands[-1][0], side.label)].first_line[:100]}")


if __name__ == "__main__":
    main()
