"""Prepared data: a validated, split dataset (`PreparedData`) and `prepare`, which makes one from a recipe's
`data:` section: scan and validate the source (or read a saved manifest), split it, find duplicates and leakage,
and write `manifest.csv`, `skipped.csv` and `labels.json` into the run folder.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from inceptune._io import atomic_write_text
from inceptune.choices import SPLITS
from inceptune.data.pipeline import epoch_order, split_dataset
from inceptune.data.sources import Scan, check_classes, read_manifest, scan
from inceptune.data.splits import NEAR_DUPLICATE_DISTANCE, assign_splits, duplicate_groups, near_duplicate_pairs
from inceptune.errors import DataError
from inceptune.recipe.checks import show
from inceptune.recipe.schema import DataConfig, SplitConfig

__all__ = ["PreparedData", "prepare", "count_kinds", "write_skipped", "MANIFEST_COLUMNS"]

MANIFEST_COLUMNS = ("path", "label", "split", "hash")

def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def count_kinds(skipped: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Skips per kind of reason, most frequent first (ties by name)."""
    c = collections.Counter(_reason_kind(r) for _, r in skipped)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A validated, split dataset: the manifest rows plus what was skipped and why.

    Args:
        labels: list of str. Class names, sorted; a label's id is its index.
        rows: list of dict. ``path`` (absolute), ``label``, ``split``, ``hash`` (SHA-256 of the file).
        skipped: list of (file, reason).
        warnings: list of str. Leakage, conflicting labels, ignored folders.
        ignored: dict. Counts of entries not considered images (hidden, not an image extension, ...).
        duplicate_groups: list of list of str. Paths with identical content (one split per group, unless a CSV
            or manifest gave the splits).
        leaks: list of (path_a, path_b, distance). Near-duplicates that landed in different splits.
        source: str. The folder or CSV the rows came from.
        source_kind: str. ``dir``, ``csv`` or ``manifest``.
    """

    labels: list
    rows: list
    skipped: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    ignored: dict = dataclasses.field(default_factory=dict)
    duplicate_groups: list = dataclasses.field(default_factory=list)
    leaks: list = dataclasses.field(default_factory=list)
    source: str = ""
    source_kind: str = "dir"

    # --- queries ---

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.labels)

    def counts(self) -> dict:
        """Returns ``{split: {label: n}}`` for every split and label (zeros included)."""
        out = {s: {lab: 0 for lab in self.labels} for s in SPLITS}
        for r in self.rows:
            out[r["split"]][r["label"]] += 1
        return out

    def _rows(self, split: str) -> list[dict]:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {' | '.join(SPLITS)}, got {show(split)}")
        return [r for r in self.rows if r["split"] == split]

    def paths(self, split: str) -> list[str]:
        """Returns the absolute paths of a split, in manifest order.

        Args:
            split: str. ``train``, ``val`` or ``test``.

        Returns:
            list of str.
        """
        return [r["path"] for r in self._rows(split)]

    def label_ids(self, split: str) -> np.ndarray:
        """Returns the integer class ids of a split, in manifest order.

        Args:
            split: str. ``train``, ``val`` or ``test``.

        Returns:
            np.ndarray of int64.
        """
        index = {lab: i for i, lab in enumerate(self.labels)}
        return np.array([index[r["label"]] for r in self._rows(split)], dtype=np.int64)

    def class_weight(self) -> dict:
        """Returns balanced class weights from the train split: ``n / (classes * n_c)``.

        Returns:
            dict of int -> float, equal to scikit-learn's ``compute_class_weight("balanced")``.
        """
        y = self.label_ids("train")
        counts = np.bincount(y, minlength=self.num_classes)
        n, k = len(y), self.num_classes
        return {i: (float(n) / (k * counts[i]) if counts[i] else 0.0) for i in range(k)}

    def steps_per_epoch(self, split: str = "train", batch_size: int = 32, balance: str = "none") -> int:
        """Returns the number of batches in one epoch of ``dataset(split, ...)``.

        Args:
            split: str. Defaults to ``train``.
            batch_size: int. Defaults to 32.
            balance: str. With ``oversample`` (train only) an epoch holds ``classes * ceil(n / classes)``
                draws (n: train images), the same number from each class. Defaults to ``none``.

        Returns:
            int.
        """
        return math.ceil(self.epoch_size(split, balance) / batch_size)

    def epoch_size(self, split: str, balance: str) -> int:
        n = len(self._rows(split))
        if balance == "oversample" and split == "train":
            k = len(set(self.label_ids("train").tolist()))  # classes present in train
            return k * math.ceil(n / k) if k else 0
        return n

    def summary_line(self) -> str:
        """One line: files used per split and skipped files by kind."""
        c = self.counts()
        per = ", ".join(f"{s} {sum(c[s].values())}" for s in SPLITS)
        line = f"{len(self.rows)} images in {self.num_classes} classes ({per})"
        if self.skipped:
            kinds = count_kinds(self.skipped)
            line += f"; skipped {len(self.skipped)}: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
        if self.leaks:
            line += f"; {len(self.leaks)} near-duplicate pair(s) across splits"
        return line

    # --- outputs ---

    def write(self, run_dir: str | os.PathLike) -> None:
        """Writes ``manifest.csv``, ``skipped.csv`` and ``labels.json`` into ``run_dir`` (atomically).

        Args:
            run_dir: str | PathLike. Created if missing.
        """
        run_dir = os.fspath(run_dir)
        atomic_write_text(
            os.path.join(run_dir, "manifest.csv"),
            _csv_text(MANIFEST_COLUMNS, ([r[c] for c in MANIFEST_COLUMNS] for r in self.rows)),
        )
        write_skipped(run_dir, self.skipped)
        atomic_write_text(os.path.join(run_dir, "labels.json"), json.dumps(list(self.labels), indent=2) + "\n")

    # --- pipelines ---

    def dataset(
        self,
        split: str,
        *,
        batch_size: int,
        image_size,
        resize: str = "stretch",
        augment=None,
        balance: str = "none",
        shuffle: bool | None = None,
        seed: int = 0,
        repeat: bool = False,
    ):
        """Builds a ``tf.data`` pipeline for one split.

        Files are shuffled (train) as paths, then decoded in parallel with Pillow (``load_image``), resized,
        batched, augmented (train only, Keras preprocessing layers) and prefetched. Val and test keep the
        manifest order and are never augmented or oversampled.

        Args:
            split: str. ``train``, ``val`` or ``test``.
            batch_size: int. Images per batch (the last batch may be smaller).
            image_size: int | (int, int). Output side, or (height, width).
            resize: str. ``stretch``, ``crop`` or ``pad``. Defaults to ``stretch``.
            augment: str | list | keras.Layer | None. A preset, a list of ops, or a built augmenter; train only.
            balance: str. ``none``, ``class-weight`` (adds per-sample weights, so Keras applies them to the
                loss) or ``oversample`` (train only: every epoch draws the same number from each class).
                Defaults to ``none``.
            shuffle: bool | None. None shuffles train only. Defaults to None.
            seed: int. Seed of shuffling, oversampling and augmentation. Defaults to 0.
            repeat: bool. Repeat forever (pass ``steps_per_epoch`` to ``fit``). Defaults to False.

        Returns:
            tf.data.Dataset of ``(images float32 [B,H,W,3] in 0..255, labels int32 [B])``, or
            ``(images, labels, sample_weights float32 [B])`` when balance is ``class-weight``.
        """
        return split_dataset(self, split, batch_size=batch_size, image_size=image_size, resize=resize, augment=augment,
                             balance=balance, shuffle=shuffle, seed=seed, repeat=repeat)

    def epoch_order(self, split: str = "train", *, seed: int = 0, balance: str = "none",
                    shuffle: bool | None = None) -> np.ndarray:
        """Returns the row indices (into ``paths(split)``) of one epoch, in the order ``dataset`` yields them.

        The feature cache uses it to train on cached features in exactly the batches the image pipeline would
        give with the same seed.

        Args:
            split: str. Defaults to ``train``. seed: int. balance: str. shuffle: bool | None (None: train only).

        Returns:
            np.ndarray of int64.
        """
        return epoch_order(self, split, seed=seed, balance=balance, shuffle=shuffle)


def write_skipped(run_dir: str, skipped: Sequence[tuple[str, str]]) -> None:
    atomic_write_text(os.path.join(run_dir, "skipped.csv"), _csv_text(("file", "reason"), skipped))


# === prepare ===


def _resolve(path: str, base_dir) -> str:
    p = os.path.expanduser(path)
    if base_dir is not None and not os.path.isabs(p):
        p = os.path.join(os.fspath(base_dir), p)
    return os.path.abspath(p)


def prepare(
    cfg: DataConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    progress: bool = True,
    executor: str = "thread",
) -> PreparedData:
    """Scans and validates the source (or reads a saved manifest), splits it and writes the run's data files.

    Args:
        cfg: DataConfig. The recipe's data section.
        run_dir: str | PathLike | None. Where ``manifest.csv``, ``skipped.csv`` and ``labels.json`` go
            (atomic writes); None writes nothing.
        base_dir: str | PathLike | None. Folder that relative dir/csv/manifest paths resolve against (the
            recipe's folder). Defaults to the working directory.
        progress: bool. Show a progress bar on large folders when stderr is a terminal. Defaults to True.
        executor: str. ``thread``, ``process`` or ``serial`` validation. Threads (Pillow and hashlib release the
            GIL) measured 2.5x faster than a spawned process pool and on par with or faster than serial on a
            busy 2-core machine (benchmarks/data_pipeline.py). Defaults to ``thread``.

    Returns:
        PreparedData.

    Raises:
        DataError: no classes, one class, a class too small to split as asked, a CSV without the required
            columns, paths outside the CSV's folder, or missing files in a reused manifest.
    """
    kinds = [k for k in ("dir", "csv", "manifest") if getattr(cfg, k)]
    if len(kinds) != 1:
        raise DataError(
            f"data: expected exactly one of dir, csv or manifest, got {', '.join(kinds) or 'none of them'}",
            key="data",
        )
    kind = kinds[0]
    source = _resolve(getattr(cfg, kind), base_dir)
    if kind == "manifest":
        data = _prepare_manifest(source)
    else:
        data = _prepare_scan(source, kind, cfg, run_dir, progress, executor)
    if run_dir is not None:
        data.write(run_dir)
    return data


def _prepare_manifest(source: str) -> PreparedData:
    rows = read_manifest(source)
    labels = sorted({r["label"] for r in rows})
    check_classes(labels, source, key="data.manifest")
    warns = []
    dups = duplicate_groups([r["path"] for r in rows], [r["hash"] for r in rows])
    groups = [[rows[i]["path"] for i in g] for g in dups]
    crossing = [g for g in dups if len({rows[i]["split"] for i in g}) > 1]
    if crossing:
        warns.append(
            f"leakage: {len(crossing)} group(s) of identical files span several splits in the manifest, e.g. "
            + " = ".join(f"{rows[i]['path']} [{rows[i]['split']}]" for i in crossing[0])
        )
    return PreparedData(labels=labels, rows=rows, warnings=warns, duplicate_groups=groups, source=source,
                        source_kind="manifest")


def _prepare_scan(source: str, kind: str, cfg: DataConfig, run_dir, progress: bool, executor: str) -> PreparedData:
    found = scan(source, kind=kind, min_side=cfg.min_side, allow_outside=cfg.allow_outside, min_classes=2,
                 progress=progress, executor=executor)
    try:
        splits, warns = _splits(found, cfg.split)
    except DataError:
        if run_dir is not None:
            write_skipped(os.fspath(run_dir), found.skipped)
        raise
    paths, labs, hashes = found.paths, found.labels, found.hashes
    rows = [{"path": p, "label": lab, "split": s, "hash": h} for p, lab, s, h in zip(paths, labs, splits, hashes)]
    if kind == "dir":
        rows.sort(key=lambda r: (r["label"], r["path"]))
    order = {r["path"]: j for j, r in enumerate(rows)}
    dup_idx = duplicate_groups(paths, hashes)
    warns += _duplicate_warnings(dup_idx, found, splits)
    leaks = _leaks(found, splits, order)
    if leaks:
        split_of = dict(zip(paths, splits))
        a, b, d = leaks[0]
        warns.append(
            f"leakage: {len(leaks)} near-duplicate pair(s) across splits (difference hash within "
            f"{NEAR_DUPLICATE_DISTANCE} bits), e.g. {a} [{split_of[a]}] ~ {b} [{split_of[b]}] (distance {d}). "
            f"HINT: remove one of each pair, or give them a shared `_nohash_` name prefix"
        )
    return PreparedData(
        labels=list(found.classes), rows=rows, skipped=found.skipped, warnings=warns, ignored=found.ignored,
        duplicate_groups=[sorted((paths[i] for i in g), key=order.get) for g in dup_idx], leaks=leaks,
        source=source, source_kind=kind,
    )


def _splits(found: Scan, split: SplitConfig) -> tuple[list[str], list[str]]:
    """The split of every usable file (the CSV's, or assigned), and the scan's warnings plus split warnings."""
    warns = list(found.warnings)
    valid = collections.Counter(found.labels)
    empty = [lab for lab in found.classes if valid[lab] == 0]
    if empty:
        # the reasons go in the message itself: a run that fails here leaves no skipped.csv behind
        lab = empty[0]
        theirs = _skipped_of_class(found, lab)
        kinds = ("" if found.kind == "dir" else f"skipped in {found.source}: ") + ", ".join(
            f"{n} {k}" for k, n in count_kinds(theirs).items())
        shown = "; ".join(f"{p}: {r}" for p, r in theirs[:3]) + ("; ..." if len(theirs) > 3 else "")
        raise DataError(
            f"class '{lab}' has 0 valid images: all {found.classes[lab]} of its files were skipped ({kinds}), e.g. "
            f"{shown}. Every class needs images to train and test on. HINT: fix or replace its files (`inceptune "
            f"data summary {found.source}` lists every skipped file with its reason), or remove the class",
            key=f"data.{found.kind}",
        )
    if not found.has_split:
        return assign_splits(found.paths, found.labels, found.hashes, split), warns
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for lab, s in zip(found.labels, found.splits):
        counts[lab][s] += 1
    if all(c["train"] == 0 for c in counts.values()):
        raise DataError(f"{found.source}: the split column puts no image in train. HINT: mark rows as train",
                        key="data.csv")
    for lab in found.classes:
        missing = [s for s in SPLITS if counts[lab][s] == 0]
        if missing:
            warns.append(f"class '{lab}' has no images in {' and '.join(missing)} (splits as given in the CSV)")
    return list(found.splits), warns


def _skipped_of_class(found: Scan, label: str) -> list[tuple[str, str]]:
    """The skipped files of one class: those in its folder, or the CSV rows that name it."""
    if found.kind == "dir":
        folder = os.path.join(found.source, label) + os.sep
        return [(p, r) for p, r in found.skipped if p.startswith(folder)]
    return list(found.skipped)  # a CSV's skipped rows keep no label: all of them, the class's among them


def _duplicate_warnings(dup_idx: list[list[int]], found: Scan, splits: list[str]) -> list[str]:
    """Exact duplicates: same split by construction (or a leak when splits are given), maybe conflicting labels."""
    if not dup_idx:
        return []
    paths, labs = found.paths, found.labels
    n_files = sum(len(g) for g in dup_idx)
    warns = [f"{len(dup_idx)} group(s) of identical files ({n_files} files)"
             + ("" if found.has_split else "; each group is kept in one split")]
    conflicting = [g for g in dup_idx if len({labs[i] for i in g}) > 1]
    for g in conflicting[:5]:
        warns.append("identical files with different labels: " + ", ".join(f"{paths[i]} ({labs[i]})" for i in g))
    crossing = [g for g in dup_idx if len({splits[i] for i in g}) > 1]
    if crossing:
        warns.append(f"leakage: {len(crossing)} group(s) of identical files span several splits, e.g. "
                     + " = ".join(f"{paths[i]} [{splits[i]}]" for i in crossing[0]))
    return warns


def _leaks(found: Scan, splits: list[str], order: dict) -> list[tuple[str, str, int]]:
    """Near-duplicate pairs (difference hash) that landed in different splits, in manifest order."""
    paths, hashes = found.paths, found.hashes
    leaks = []
    for a, b, d in near_duplicate_pairs(found.dhashes, found.lumas, details=found.details):
        if splits[a] != splits[b] and hashes[a] != hashes[b]:
            pa, pb = sorted((paths[a], paths[b]), key=order.get)
            leaks.append((pa, pb, d))
    return leaks
