"""Splits, duplicates and leakage: which file goes to train, val or test, and which files are (nearly) the same.

`stable-hash` splits make a file's split a function of its name (TensorFlow's Speech Commands `which_set`),
so adding files never moves old ones; `stratified` uses scikit-learn, seeded. Exact duplicates and names
sharing a `_nohash_` prefix stay in one split; near-duplicates across splits (difference hash) are leakage.
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import re
from collections.abc import Sequence

import numpy as np

from inceptune.choices import SPLIT_METHODS, SPLITS
from inceptune.errors import DataError
from inceptune.recipe.checks import show
from inceptune.recipe.schema import SplitConfig

__all__ = ["assign_splits", "duplicate_groups", "near_duplicate_pairs", "NEAR_DUPLICATE_DISTANCE",
           "NEAR_DUPLICATE_LUMA", "NEAR_DUPLICATE_DETAIL"]

NEAR_DUPLICATE_DISTANCE = 4  # max Hamming distance between two 64-bit difference hashes
NEAR_DUPLICATE_LUMA = 16  # ... and max difference of mean brightness (0..255): keeps flat images apart
NEAR_DUPLICATE_DETAIL = 3.0  # ... and max mean difference (0..255) of their 16x16 thumbnails, brightness removed:
# a re-encoded, brightened copy measured 0.25; two writers' look-alike 8x8 digits 3.9 to 8
_NOHASH_RE = re.compile(r"_nohash_.*$")

# === Splits ===


def _stable_key(path: str) -> str:
    """The name that decides a file's split: its basename, cut at ``_nohash_`` (Speech Commands style)."""
    return _NOHASH_RE.sub("", os.path.basename(path))


def _hash_fraction(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _split_of_fraction(u: float, val: float, test: float) -> str:
    if u < val:
        return "val"
    if u < val + test:
        return "test"
    return "train"


def _union_groups(n: int, keys_per_item: Sequence[Sequence[str]]) -> list[int]:
    """Union-find: items sharing any key share a group. Returns the group root of each item."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, keys in enumerate(keys_per_item):
        for k in keys:
            if not k:
                continue
            if k in first:
                a, b = find(i), find(first[k])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[k] = i
    return [find(i) for i in range(n)]


def _min_per_class(split: SplitConfig) -> int:
    fracs = [f for f in (split.val, split.test) if f > 0]
    need = 1 + len(fracs)
    for f in fracs:
        need = max(need, math.ceil(1.0 / f - 1e-9))
    return need


def assign_splits(
    paths: Sequence[str], labels: Sequence[str], hashes: Sequence[str] | None = None, split: SplitConfig = SplitConfig()
) -> list[str]:
    """Assigns train/val/test to files, keeping exact duplicates and ``_nohash_`` groups together.

    ``stable-hash``: a file's split is a function of its basename (cut at ``_nohash_``) and the seed, so adding
    files never moves old ones. A duplicate group takes the split of its smallest name. ``stratified``:
    scikit-learn's ``train_test_split`` with ``stratify``, seeded, on duplicate groups.

    Args:
        paths: sequence of str. File paths (only basenames matter for stable-hash).
        labels: sequence of str. Class of each file.
        hashes: sequence of str | None. Content hash of each file; equal hashes share a split.
        split: SplitConfig. Fractions, seed and method.

    Returns:
        list of str, one of ``train|val|test`` per file.

    Raises:
        DataError: a class has too few images (or groups) to split as asked, naming the class and the fix.
    """
    n = len(paths)
    if n == 0:
        return []
    hashes = list(hashes) if hashes is not None else [""] * n
    keys = [_stable_key(p) for p in paths]
    # Name groups (`_nohash_`) are per class: `cats/img_001.jpg` and `dogs/img_001.jpg` are unrelated files.
    roots = _union_groups(n, [(f"h:{h}" if h else "", f"k:{lab}/{k}") for h, k, lab in zip(hashes, keys, labels)])
    members: dict[int, list[int]] = collections.defaultdict(list)
    for i, r in enumerate(roots):
        members[r].append(i)
    unit_ids = sorted(members)
    unit_label = {}
    for u in unit_ids:
        c = collections.Counter(labels[i] for i in members[u])
        unit_label[u] = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]

    # Enough images (and groups) per class?
    need = _min_per_class(split)
    img_count = collections.Counter(labels)
    unit_count = collections.Counter(unit_label.values())
    for label in sorted(img_count):
        units = unit_count.get(label, 0)
        if units < need:
            extra = f" in {units} group(s) of duplicates/_nohash_ names" if units != img_count[label] else ""
            raise DataError(
                f"class '{label}' has {img_count[label]} valid image(s){extra}; splitting with val={split.val:g}, "
                f"test={split.test:g} needs at least {need} per class. HINT: add images to '{label}', "
                f"lower data.split.val/test, or remove the class", key="data.split"
            )

    out = [""] * n
    if split.method == "stable-hash":
        for u in unit_ids:
            key = min(keys[i] for i in members[u])
            s = _split_of_fraction(_hash_fraction(key, split.seed), split.val, split.test)
            for i in members[u]:
                out[i] = s
    elif split.method == "stratified":
        unit_split = _stratified_units(unit_ids, [unit_label[u] for u in unit_ids], split)
        for u, s in zip(unit_ids, unit_split):
            for i in members[u]:
                out[i] = s
    else:
        raise DataError(f"split.method: expected one of {' | '.join(SPLIT_METHODS)}, got {show(split.method)}")

    _check_split_counts(labels, out, split)
    return out


def _stratified_units(units: list[int], unit_labels: list[str], split: SplitConfig) -> list[str]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(units))
    y = np.asarray(unit_labels)
    res = np.array(["train"] * len(units), dtype=object)
    hold = split.val + split.test
    if hold <= 0:
        return list(res)
    try:
        _, held = train_test_split(idx, test_size=hold, stratify=y, random_state=split.seed, shuffle=True)
        if split.val == 0:
            res[held] = "test"
        elif split.test == 0:
            res[held] = "val"
        else:
            va, te = train_test_split(
                held, test_size=split.test / hold, stratify=y[held], random_state=split.seed, shuffle=True
            )
            res[va] = "val"
            res[te] = "test"
    except ValueError as exc:
        raise DataError(
            f"stratified split failed: {exc}. HINT: add images to the smallest classes or lower "
            f"data.split.val/test", key="data.split"
        ) from exc
    return list(res)


def _check_split_counts(labels: Sequence[str], splits: Sequence[str], split: SplitConfig) -> None:
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for lab, s in zip(labels, splits):
        counts[lab][s] += 1
    wanted = ["train"] + [s for s, f in (("val", split.val), ("test", split.test)) if f > 0]
    for label in sorted(counts):
        c = counts[label]
        empty = [s for s in wanted if c[s] == 0]
        if empty:
            got = ", ".join(f"{s} {c[s]}" for s in SPLITS)
            why = (
                " A stable-hash split fixes each file's split by its name, so small classes can miss a split."
                if split.method == "stable-hash" else ""
            )
            zero = " or ".join(f"data.split.{s}: 0" for s in empty if s != "train")
            hint = (
                f"use data.split.method: stratified, add images to '{label}'" + (f", or set {zero}" if zero else "")
                if split.method == "stable-hash" else f"add images to '{label}' or lower data.split.val/test"
            )
            raise DataError(
                f"class '{label}' has {sum(c.values())} valid image(s) but none in {' and '.join(empty)} "
                f"({got}).{why} HINT: {hint}", key="data.split"
            )


# === Duplicates and leakage ===


def duplicate_groups(paths: Sequence[str], hashes: Sequence[str]) -> list[list[int]]:
    by_hash: dict[str, list[int]] = collections.defaultdict(list)
    for i, h in enumerate(hashes):
        if h:
            by_hash[h].append(i)
    return [g for g in by_hash.values() if len(g) > 1]


def near_duplicate_pairs(
    dhashes: Sequence[int],
    lumas: Sequence[float],
    max_distance: int = NEAR_DUPLICATE_DISTANCE,
    max_luma: float = NEAR_DUPLICATE_LUMA,
    details: Sequence[bytes] | None = None,
    max_detail: float = NEAR_DUPLICATE_DETAIL,
) -> list[tuple[int, int, int]]:
    """Pairs (i, j, distance) with dHash Hamming distance <= max_distance and similar brightness.

    Pigeonhole banding: split the 64 bits into max_distance + 1 bands; two hashes within the distance agree
    exactly on at least one band, so only items sharing a band value are compared. With `details` (16x16
    greyscale thumbnails), a pair is kept only when the thumbnails also agree once their mean brightness is
    removed (mean absolute difference <= max_detail): 64 bits say little about small, smooth or upsampled images
    (8x8 digits scaled to 32 px share hashes by the thousand), the 256 pixels tell a re-encoded copy from a
    different drawing of the same digit.
    """
    n = len(dhashes)
    if n < 2:
        return []
    dh = np.array([int(x) for x in dhashes], dtype=np.uint64)
    lu = np.asarray(lumas, dtype=np.float64)
    bands = max_distance + 1
    width = math.ceil(64 / bands)
    found: dict[tuple[int, int], int] = {}
    for b in range(bands):
        shift = b * width
        if shift >= 64:
            break
        keys = (dh >> np.uint64(shift)) & np.uint64((1 << min(width, 64 - shift)) - 1)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        cuts = np.flatnonzero(np.diff(sk)) + 1
        for grp in np.split(order, cuts):
            if len(grp) < 2:
                continue
            grp = np.sort(grp)
            for start in range(0, len(grp), 1024):  # bounded memory for huge buckets
                rows = grp[start:start + 1024]
                d = np.bitwise_count(dh[rows][:, None] ^ dh[grp][None, :]).astype(np.int64)
                ok = (d <= max_distance) & (np.abs(lu[rows][:, None] - lu[grp][None, :]) <= max_luma)
                ok &= rows[:, None] < grp[None, :]
                for r, c in zip(*np.nonzero(ok)):
                    found[(int(rows[r]), int(grp[c]))] = int(d[r, c])
    if details is not None:
        found = {(i, j): d for (i, j), d in found.items() if _detail_distance(details[i], details[j]) <= max_detail}
    return sorted((i, j, d) for (i, j), d in found.items())


def _detail_distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference (0..255) of two greyscale thumbnails, each minus its own mean brightness."""
    x, y = np.frombuffer(a, np.uint8).astype(np.float32), np.frombuffer(b, np.uint8).astype(np.float32)
    if x.size == 0 or x.size != y.size:
        return 0.0  # no thumbnail: the hash decides alone
    return float(np.abs((x - x.mean()) - (y - y.mean())).mean())
