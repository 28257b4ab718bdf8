"""`inceptune data summary`: class counts per split, skipped files, duplicates and leakage of a folder or CSV."""

from __future__ import annotations

import os

from inceptune.choices import SPLITS
from inceptune.data.prepared import count_kinds, prepare
from inceptune.errors import DataError
from inceptune.recipe.schema import DataConfig, SplitConfig

__all__ = ["summary", "format_summary", "MAX_LISTED"]

MAX_LISTED = 20  # duplicate groups and leaking pairs printed by `data summary` (the JSON has them all)


def summary(
    source: str | os.PathLike,
    *,
    split: SplitConfig = SplitConfig(),
    min_side: int = 16,
    allow_outside: bool = False,
    progress: bool = True,
) -> dict:
    """Scans a folder or CSV and reports counts per split, skipped files, duplicates and leakage.

    Args:
        source: str | PathLike. A class-per-folder directory or a CSV (path,label[,split]).
        split: SplitConfig. How to split (ignored when the CSV has a split column). Defaults to SplitConfig().
        min_side: int. Minimum shorter side in pixels. Defaults to 16.
        allow_outside: bool. Allow CSV paths outside the CSV's folder. Defaults to False.
        progress: bool. Progress bar on large folders. Defaults to True.

    Returns:
        dict with ``source``, ``kind``, ``labels``, ``counts`` ({split: {label: n}}), ``total``, ``skipped``
        ([{file, reason}]), ``skipped_by_kind``, ``ignored``, ``duplicate_groups`` ([[{file, split}]]), ``leaks``
        ([{a, b, split_a, split_b, distance}]) and ``warnings``.
    """
    src = os.path.abspath(os.fspath(source))
    if os.path.isdir(src):
        cfg = DataConfig(dir=src, split=split, min_side=min_side)
    elif os.path.isfile(src):
        cfg = DataConfig(csv=src, split=split, min_side=min_side, allow_outside=allow_outside)
    else:
        raise DataError(f"{src} does not exist; expected a class-per-folder directory or a CSV (path,label[,split])",
                        key="data")
    data = prepare(cfg, None, progress=progress)
    split_of = {r["path"]: r["split"] for r in data.rows}
    return {
        "source": data.source,
        "kind": data.source_kind,
        "labels": list(data.labels),
        "counts": data.counts(),
        "total": len(data.rows),
        "skipped": [{"file": f, "reason": r} for f, r in data.skipped],
        "skipped_by_kind": count_kinds(data.skipped),
        "ignored": dict(data.ignored),
        "duplicate_groups": [[{"file": p, "split": split_of[p]} for p in g] for g in data.duplicate_groups],
        "leaks": [{"a": a, "b": b, "split_a": split_of[a], "split_b": split_of[b], "distance": d}
                  for a, b, d in data.leaks],
        "warnings": list(data.warnings),
    }


def _rel(path: str, root: str) -> str:
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _capped(lines: list[str], what: str) -> list[str]:
    """At most MAX_LISTED lines, then one line counting the rest."""
    if len(lines) <= MAX_LISTED:
        return lines
    return lines[:MAX_LISTED] + [f"  ... and {len(lines) - MAX_LISTED} more {what} (all of them: --json)"]


def format_summary(d: dict) -> str:
    """Formats ``summary()``'s dict as the text ``inceptune data summary`` prints.

    Args:
        d: dict. The output of ``summary``.

    Returns:
        str. A class-by-split table, then skipped files with reasons, duplicate groups, leakage and warnings.
    """
    root = d["source"] if d.get("kind") == "dir" else os.path.dirname(d["source"])
    lines = [f"{d['source']} ({d['kind']}): {d['total']} images in {len(d['labels'])} classes"]
    width = max([len("class"), len("total")] + [len(lab) for lab in d["labels"]])
    header = f"  {'class':<{width}}  " + "  ".join(f"{s:>6}" for s in (*SPLITS, "total"))
    lines += ["", header]
    totals = {s: 0 for s in SPLITS}
    for lab in d["labels"]:
        n = [d["counts"][s].get(lab, 0) for s in SPLITS]
        for s, v in zip(SPLITS, n):
            totals[s] += v
        lines.append(f"  {lab:<{width}}  " + "  ".join(f"{v:>6}" for v in (*n, sum(n))))
    lines.append(f"  {'total':<{width}}  " + "  ".join(f"{v:>6}" for v in (*totals.values(), sum(totals.values()))))
    if d.get("ignored"):
        lines += ["", "Ignored (not candidate images): " + ", ".join(f"{n} {k}" for k, n in
                                                                      sorted(d["ignored"].items()))]
    if d["skipped"]:
        kinds = ", ".join(f"{n} {k}" for k, n in d["skipped_by_kind"].items())
        lines += ["", f"Skipped {len(d['skipped'])} file(s): {kinds}"]
        lines += [f"  {_rel(s['file'], root)}: {s['reason']}" for s in d["skipped"]]
    if d["duplicate_groups"]:
        lines += ["", f"Identical files: {len(d['duplicate_groups'])} group(s)"]
        lines += _capped(["  " + " = ".join(f"{_rel(x['file'], root)} [{x['split']}]" for x in g)
                          for g in d["duplicate_groups"]], "groups")
    if d["leaks"]:
        lines += ["", f"Leakage: {len(d['leaks'])} near-duplicate pair(s) in different splits"]
        lines += _capped([f"  {_rel(x['a'], root)} [{x['split_a']}] ~ {_rel(x['b'], root)} [{x['split_b']}] "
                          f"(distance {x['distance']})" for x in d["leaks"]], "pairs")
    other = [w for w in d["warnings"] if not w.startswith("leakage: ") and "group(s) of identical" not in w]
    if other:
        lines += ["", "Warnings:"] + [f"  {w}" for w in other]
    return "\n".join(lines)
