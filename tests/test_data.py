"""Tests for inceptune.data: sources, validation of every file, splits, leakage, pipelines, balance.

The corpus is generated here (tmp_path): one file per kind of bad or unusual image, checked file by file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from inceptune import data as D
from inceptune.data import DataConfig, SplitConfig, prepare, sources, splits
from inceptune.errors import DataError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# === Corpus helpers ===


def _pattern(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    """A random 4x4 block pattern: distinct images get distinct difference hashes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.NEAREST))


def _save(path, arr_or_im, fmt=None, **kw):
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path, fmt, **kw)


def _png_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims another size (a decompression bomb never needs decoding)."""
    raw = bytearray(_png_bytes(Image.new("L", (1, 1))))
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(raw[ihdr:ihdr + 17])) & 0xFFFFFFFF
    raw[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(raw)


def _two_halves(h, w, left, right) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = left
    a[:, w // 2:] = right
    return a


@dataclasses.dataclass
class Kind:
    name: str  # file name inside its class folder
    skip: str | None  # expected reason (prefix) when skipped
    shape: tuple | None = None  # expected decoded shape when kept
    check: object = None  # callable(arr) -> None, asserting pixel values


def _build_corpus(root) -> dict[str, Kind]:
    """Writes one file per kind into root/{cat,dog}. Returns {relative path: Kind}."""
    root = str(root)
    kinds: dict[str, Kind] = {}

    def add(rel, kind, data=None):
        kinds[rel] = kind
        if data is not None:
            with open(os.path.join(root, rel), "wb") as f:
                f.write(data)

    for c in ("cat", "dog"):
        os.makedirs(os.path.join(root, c))
    base = _pattern(1, 40, 60)
    jpg = io.BytesIO()
    Image.fromarray(base).save(jpg, "JPEG", quality=90)
    jpg = jpg.getvalue()
    png = _png_bytes(Image.fromarray(base))

    # --- bad files: skipped with a reason ---
    add("cat/empty.jpg", Kind("empty", "empty file: 0 bytes"), b"")
    add("cat/truncated.jpg", Kind("truncated jpeg", "truncated: "), jpg[: len(jpg) // 2])
    add("dog/truncated.png", Kind("truncated png", "truncated: "), png[: len(png) // 2])
    bad = bytearray(png)
    at = bad.index(b"IDAT") + 10
    bad[at:at + 30] = bytes(b ^ 0x55 for b in bad[at:at + 30])
    add("dog/corrupt.png", Kind("corrupt png data", "corrupt: broken data stream"), bytes(bad))
    add("cat/notes.jpg", Kind("text named .jpg", "not an image: Pillow cannot identify the file's format"),
        b"shopping list: milk, eggs\n")
    add("dog/page.png", Kind("html named .png", "not an image: Pillow cannot identify the file's format"),
        b"<!doctype html><html><body>404 Not Found</body></html>")
    _save(os.path.join(root, "cat/tiny.png"), _pattern(2, 8, 8))
    add("cat/tiny.png", Kind("too small", "too small: 8x8 pixels, the shorter side is below min_side=16"))
    add("dog/bomb.png", Kind("decompression bomb", "decompression bomb: 10000x10000 = 100000000 pixels, more "
                             "than Pillow's limit of 89478485"), _png_with_size(10000, 10000))
    add("dog/huge_bomb.png", Kind("decompression bomb over 2x the limit", "decompression bomb: "),
        _png_with_size(30000, 30000))
    os.symlink(os.path.join(root, "nowhere.jpg"), os.path.join(root, "cat/broken_link.jpg"))
    add("cat/broken_link.jpg", Kind("broken link", "unreadable: file not found (or a broken link)"))
    os.mkfifo(os.path.join(root, "dog/pipe.jpg"))
    add("dog/pipe.jpg", Kind("fifo (special file)", "unreadable: not a regular file"))

    # --- unusual but valid files: decoded to 8-bit RGB ---
    def exact(expected):
        return lambda a: np.testing.assert_array_equal(a, expected)

    def near(expected, tol):
        return lambda a: np.testing.assert_allclose(a.astype(int), np.broadcast_to(expected, a.shape), atol=tol)

    _save(os.path.join(root, "cat/plain.jpg"), _pattern(3))
    add("cat/plain.jpg", Kind("baseline jpeg", None, (24, 32, 3)))
    _save(os.path.join(root, "cat/UPPER.JPG"), _pattern(4))
    add("cat/UPPER.JPG", Kind("upper-case extension", None, (24, 32, 3)))
    _save(os.path.join(root, "cat/progressive.jpg"), np.full((20, 30, 3), (200, 30, 30), np.uint8),
          progressive=True, quality=95)
    add("cat/progressive.jpg", Kind("progressive jpeg", None, (20, 30, 3), near((200, 30, 30), 6)))
    _save(os.path.join(root, "dog/cmyk.jpg"), Image.new("CMYK", (30, 20), (0, 255, 255, 0)), quality=95)
    add("dog/cmyk.jpg", Kind("cmyk jpeg", None, (20, 30, 3), near(RED, 6)))
    stored = Image.fromarray(_two_halves(20, 40, RED, BLUE))  # 40 wide, 20 high; displays rotated 90 cw
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(os.path.join(root, "dog/exif_rotated.jpg"), stored, quality=95, exif=exif)

    def rotated(a):  # displayed: the stored left (red) half is on top
        np.testing.assert_allclose(a[:16].astype(int), np.broadcast_to(RED, (16, 20, 3)), atol=12)
        np.testing.assert_allclose(a[24:].astype(int), np.broadcast_to(BLUE, (16, 20, 3)), atol=12)

    add("dog/exif_rotated.jpg", Kind("exif orientation 6", None, (40, 20, 3), rotated))
    g16 = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 109).astype(np.uint16)
    _save(os.path.join(root, "cat/gray16.png"), Image.fromarray(g16))
    expect16 = np.repeat(np.rint(g16 / 257.0).astype(np.uint8)[..., None], 3, axis=2)
    add("cat/gray16.png", Kind("16-bit grayscale png", None, (20, 30, 3), exact(expect16)))
    gray = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (20, 1))
    _save(os.path.join(root, "cat/gray.png"), gray)
    add("cat/gray.png", Kind("8-bit grayscale png", None, (20, 30, 3), exact(np.repeat(gray[..., None], 3, 2))))
    pal = Image.fromarray(np.array([[0, 1] * 15] * 20, np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    _save(os.path.join(root, "dog/palette_transparent.png"), pal, transparency=0)
    expect_pal = np.array([[WHITE, GREEN] * 15] * 20, np.uint8)
    add("dog/palette_transparent.png", Kind("palette png with transparency", None, (20, 30, 3), exact(expect_pal)))
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :15] = (10, 20, 30, 0)  # fully transparent: composited onto white
    rgba[:, 15:] = (200, 0, 0, 255)
    _save(os.path.join(root, "cat/rgba.png"), Image.fromarray(rgba, "RGBA"))
    add("cat/rgba.png", Kind("rgba png", None, (20, 30, 3), exact(_two_halves(20, 30, WHITE, (200, 0, 0)))))
    la = np.zeros((20, 30, 2), np.uint8)
    la[:, :15] = (50, 0)
    la[:, 15:] = (50, 255)
    _save(os.path.join(root, "dog/gray_alpha.png"), Image.fromarray(la, "LA"))
    add("dog/gray_alpha.png", Kind("grayscale+alpha png", None, (20, 30, 3),
                                   exact(_two_halves(20, 30, WHITE, (50, 50, 50)))))
    frames = [Image.new("RGB", (30, 20), RED).convert("P"), Image.new("RGB", (30, 20), BLUE).convert("P")]
    frames[0].save(os.path.join(root, "dog/animated.gif"), save_all=True, append_images=frames[1:], duration=50)
    add("dog/animated.gif", Kind("animated gif (first frame)", None, (20, 30, 3), exact(np.full((20, 30, 3), RED))))
    p5 = _pattern(5, 20, 30)
    _save(os.path.join(root, "cat/image.bmp"), p5)
    add("cat/image.bmp", Kind("bmp", None, (20, 30, 3), exact(p5)))
    p6 = _pattern(6, 20, 30)
    _save(os.path.join(root, "dog/image.tiff"), p6)
    add("dog/image.tiff", Kind("tiff", None, (20, 30, 3), exact(p6)))
    p7 = _pattern(7, 20, 30)
    _save(os.path.join(root, "dog/image.webp"), p7, lossless=True)
    add("dog/image.webp", Kind("lossless webp", None, (20, 30, 3), exact(p7)))
    p8 = _pattern(8, 20, 30)
    add("dog/png_named.jpg", Kind("png content, .jpg name", None, (20, 30, 3), exact(p8)),
        _png_bytes(Image.fromarray(p8)))
    for i in range(3):  # plain filler so both classes can be split
        _save(os.path.join(root, f"dog/filler_{i}.png"), _pattern(20 + i))
        add(f"dog/filler_{i}.png", Kind("filler", None, (24, 32, 3)))

    # --- entries that are not candidate images: ignored with a count ---
    with open(os.path.join(root, "cat/.DS_Store"), "wb") as f:
        f.write(b"\0\0\0\1Bud1")
    with open(os.path.join(root, "cat/readme.txt"), "w") as f:
        f.write("not an image")
    os.makedirs(os.path.join(root, "dog/sub.jpg"))  # a nested folder, even with an image-like name
    with open(os.path.join(root, "labels.md"), "w") as f:
        f.write("# notes")
    return kinds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    kinds = _build_corpus(root)
    run = tmp_path_factory.mktemp("run")
    cfg = DataConfig(dir=str(root), split=SplitConfig(val=0.2, test=0.2, method="stratified"))
    return root, kinds, prepare(cfg, run, progress=False), run


# === The corpus, file by file ===


def test_corpus_has_at_least_15_kinds(corpus):
    _, kinds, _, _ = corpus
    names = {k.name for k in kinds.values() if k.name != "filler"}
    assert len(names) == 26  # 11 bad kinds and 15 unusual-but-valid kinds


def test_every_bad_file_is_skipped_with_its_reason(corpus):
    root, kinds, data, _ = corpus
    skipped = dict(data.skipped)
    kept = {r["path"] for r in data.rows}
    for rel, kind in kinds.items():
        path = os.path.join(str(root), rel)
        if kind.skip is None:
            assert path in kept, f"{kind.name}: {rel} should be kept, skipped as {skipped.get(path)}"
            assert path not in skipped
        else:
            assert path not in kept, f"{kind.name}: {rel} should be skipped"
            assert skipped[path].startswith(kind.skip), f"{kind.name}: {skipped[path]!r}"
    assert len(skipped) == sum(1 for k in kinds.values() if k.skip)


def test_every_valid_file_decodes_to_rgb_with_the_right_shape_and_pixels(corpus):
    root, kinds, _, _ = corpus
    for rel, kind in kinds.items():
        if kind.skip:
            continue
        arr = D.load_image(os.path.join(str(root), rel))
        assert arr.dtype == np.uint8, kind.name
        assert arr.shape == kind.shape, f"{kind.name}: {arr.shape}"
        if kind.check:
            kind.check(arr)


def test_load_image_raises_data_error_with_the_reason(corpus):
    root, _, _, _ = corpus
    with pytest.raises(DataError, match=r"cannot load image .*truncated\.jpg: truncated: "):
        D.load_image(os.path.join(str(root), "cat/truncated.jpg"))
    with pytest.raises(DataError, match="empty file: 0 bytes"):
        D.load_image(os.path.join(str(root), "cat/empty.jpg"), 16)
    assert D.read_image_reason(os.path.join(str(root), "cat/plain.jpg")) is None
    assert D.read_image_reason(os.path.join(str(root), "cat/plain.jpg"), min_side=30) == (
        "too small: 32x24 pixels, the shorter side is below min_side=30"
    )


def test_threads_and_serial_validation_agree(corpus):
    root, kinds, _, _ = corpus
    paths = sorted(os.path.join(str(root), rel) for rel in kinds)
    assert sources.inspect_all(paths, 16, executor="thread") == sources.inspect_all(paths, 16, executor="serial")


def test_progress_bar_only_on_a_terminal_and_large_folders(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    show = sources._show_progress
    assert show(True, 200) and not show(True, 199) and not show(False, 500)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not sources._show_progress(True, 500)


def test_ignored_entries_are_counted_not_skipped(corpus):
    _, _, data, _ = corpus
    assert data.ignored == {"hidden": 1, "not an image extension": 1, "nested folders": 1,
                            "outside class folders": 1}


def test_run_files_are_written(corpus):
    root, kinds, data, run = corpus
    with open(run / "skipped.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "reason"]
    assert [tuple(r) for r in rows[1:]] == list(data.skipped)
    with open(run / "manifest.csv", newline="") as f:
        man = list(csv.DictReader(f))
    assert [dict(r) for r in man] == data.rows
    assert json.loads((run / "labels.json").read_text()) == ["cat", "dog"]
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]  # atomic writes leave no temp files
    # hashes are SHA-256 of the bytes
    import hashlib

    r0 = data.rows[0]
    assert r0["hash"] == hashlib.sha256(open(r0["path"], "rb").read()).hexdigest()


def test_pipeline_decodes_every_kept_file(corpus):
    _, _, data, _ = corpus
    paths = [r["path"] for r in data.rows]
    batches = list(D.files_dataset(paths, batch_size=64, image_size=(18, 20), resize="pad"))
    assert len(batches) == 1
    x = batches[0].numpy()
    assert x.shape == (len(paths), 18, 20, 3) and x.dtype == np.float32
    expected = np.stack([D.load_image(p, (18, 20), "pad") for p in paths]).astype(np.float32)
    np.testing.assert_array_equal(x, expected)


def test_summary_reports_skips_by_kind(corpus):
    root, kinds, data, _ = corpus
    s = D.summary(str(root), split=SplitConfig(val=0.2, test=0.2, method="stratified"), progress=False)
    assert s["total"] == len(data.rows)
    assert list(s["skipped_by_kind"].items()) == [
        ("decompression bomb", 2), ("not an image", 2), ("truncated", 2), ("unreadable", 2), ("corrupt", 1),
        ("empty file", 1), ("too small", 1)]
    text = D.format_summary(s)
    assert "Skipped 11 file(s)" in text
    assert "cat/tiny.png: too small: 8x8 pixels" in text
    assert "Ignored (not candidate images): 1 hidden, 1 nested folders" in text
    line = [ln for ln in text.splitlines() if ln.strip().startswith("total")][0]
    assert line.split()[-1] == str(len(data.rows))
    c = data.counts()
    assert data.summary_line() == (
        f"{len(data.rows)} images in 2 classes (train {sum(c['train'].values())}, val {sum(c['val'].values())}, "
        f"test {sum(c['test'].values())}); skipped 11: 2 decompression bomb, 2 not an image, 2 truncated, "
        f"2 unreadable, 1 corrupt, 1 empty file, 1 too small; {len(data.leaks)} near-duplicate pair(s) across "
        f"splits")


# === Splits (pure: names, labels and hashes only) ===


def _names(label, n, start=0):
    return [f"/d/{label}/{label}_{i:05d}.jpg" for i in range(start, start + n)]


@pytest.mark.parametrize("method", ["stable-hash", "stratified"])
def test_split_proportions_per_class(method):
    paths, labels = [], []
    for lab, n in (("a", 1000), ("b", 400), ("c", 200)):
        paths += _names(lab, n)
        labels += [lab] * n
    splits = D.assign_splits(paths, labels, None, SplitConfig(val=0.15, test=0.1, seed=3, method=method))
    for lab, n in (("a", 1000), ("b", 400), ("c", 200)):
        got = [s for s, l2 in zip(splits, labels) if l2 == lab]
        val, test = got.count("val") / n, got.count("test") / n
        tol = 1.5 / n if method == "stratified" else 0.05  # stratified: off by at most one image per split
        assert abs(val - 0.15) <= tol and abs(test - 0.1) <= tol, (lab, val, test)


def test_stable_hash_never_moves_old_files_when_20_percent_are_added():
    old = _names("a", 500) + _names("b", 500)
    labels = ["a"] * 500 + ["b"] * 500
    before = D.assign_splits(old, labels)
    new = old + _names("a", 100, 500) + _names("b", 100, 500)
    after = D.assign_splits(new, labels + ["a"] * 100 + ["b"] * 100)
    assert after[: len(old)] == before
    # the seed matters, and stratified does reshuffle (the reason stable-hash exists)
    assert D.assign_splits(old, labels, None, SplitConfig(seed=1)) != before
    s_before = D.assign_splits(old, labels, None, SplitConfig(method="stratified"))
    s_after = D.assign_splits(new, labels + ["a"] * 100 + ["b"] * 100, None, SplitConfig(method="stratified"))
    assert s_after[: len(old)] != s_before


@pytest.mark.parametrize("method", ["stable-hash", "stratified"])
def test_duplicates_and_nohash_groups_share_a_split(method):
    paths = _names("a", 60) + _names("b", 60)
    labels = ["a"] * 60 + ["b"] * 60
    hashes = [f"h{i}" for i in range(120)]
    for i in range(0, 60, 6):  # 10 duplicate pairs across the two classes' names
        hashes[60 + i] = hashes[i]
    paths[10:14] = [f"/d/a/speaker7_nohash_{k}.jpg" for k in range(4)]
    for seed in range(5):
        s = D.assign_splits(paths, labels, hashes, SplitConfig(seed=seed, method=method))
        for i in range(0, 60, 6):
            assert s[i] == s[60 + i]
        assert len(set(s[10:14])) == 1


def test_too_few_images_is_fatal_and_says_what_to_change():
    paths = _names("a", 20) + _names("b", 3)
    with pytest.raises(DataError) as e:
        D.assign_splits(paths, ["a"] * 20 + ["b"] * 3, None, SplitConfig(val=0.15, test=0.15))
    assert str(e.value) == (
        "class 'b' has 3 valid image(s); splitting with val=0.15, test=0.15 needs at least 7 per class. "
        "HINT: add images to 'b', lower data.split.val/test, or remove the class"
    )


def test_stable_hash_missing_split_is_reported():
    # 10 names whose stable hashes put none in test: found by scanning names, so the test is deterministic.
    cand = [f"x{i}.jpg" for i in range(400)]
    no_test = [p for p in cand if splits._split_of_fraction(splits._hash_fraction(p, 0), 0.15, 0.15) != "test"][:10]
    paths = _names("a", 50) + no_test
    hint = r"HINT: use data.split.method: stratified, add images to 'b', or set data.split.test: 0$"
    with pytest.raises(DataError, match=r"class 'b' has 10 valid image\(s\) but none in test .*" + hint):
        D.assign_splits(paths, ["a"] * 50 + ["b"] * 10)
    s = D.assign_splits(paths, ["a"] * 50 + ["b"] * 10, None, SplitConfig(method="stratified"))
    assert s[50:].count("test") >= 1


# === Sources: folders and CSVs ===


def _mini_tree(root, counts, size=(20, 20), start_seed=100):
    """Writes PNGs root/<label>/<label>_<i>.png with distinct patterns. Returns {label: [paths]}."""
    out = {}
    seed = start_seed
    for lab, n in counts.items():
        out[lab] = []
        for i in range(n):
            p = os.path.join(str(root), lab, f"{lab}_{i:03d}.png")
            _save(p, _pattern(seed, *size))
            seed += 1
            out[lab].append(p)
    return out


def test_fatal_no_class_and_one_class(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no classes found in .*empty: expected one sub-folder per class"):
        prepare(DataConfig(dir=str(tmp_path / "empty")))
    _mini_tree(tmp_path / "one", {"cat": 8})
    with pytest.raises(DataError, match=r"only one class \('cat'\) found .* needs at least 2 classes"):
        prepare(DataConfig(dir=str(tmp_path / "one")))


def test_relative_dir_resolves_against_base_dir(tmp_path):
    _mini_tree(tmp_path / "imgs", {"a": 7, "b": 7})
    data = prepare(DataConfig(dir="imgs", split=SplitConfig(method="stratified")), None, base_dir=tmp_path,
                   progress=False)
    c = data.counts()
    # scikit-learn holds out ceil(14 * 0.3) = 5 images, split ceil(5 * 0.5) = 3 test and 2 val
    assert [sum(c[s].values()) for s in ("train", "val", "test")] == [9, 2, 3]
    assert all(c[s][lab] >= 1 for s in c for lab in ("a", "b"))
    assert all(os.path.isabs(r["path"]) for r in data.rows)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_source_relative_paths_given_split_and_missing_file(tmp_path):
    tree = _mini_tree(tmp_path / "imgs", {"a": 3, "b": 3})
    rows = [[os.path.relpath(p, tmp_path), lab, s] for lab in ("a", "b")
            for p, s in zip(tree[lab], ("train", "val", "test"))]
    rows.append(["imgs/a/missing.png", "a", "train"])
    _write_csv(tmp_path / "list.csv", ["path", "label", "split"], rows)
    data = prepare(DataConfig(csv="list.csv"), None, base_dir=tmp_path, progress=False)
    assert [(os.path.relpath(r["path"], tmp_path), r["label"], r["split"]) for r in data.rows] == [
        tuple(r) for r in rows[:-1]]
    assert data.skipped == [(str(tmp_path / "imgs/a/missing.png"), "unreadable: file not found (or a broken link)")]


def test_csv_missing_columns_and_bad_split_and_outside_paths(tmp_path):
    tree = _mini_tree(tmp_path / "imgs", {"a": 7, "b": 7})
    _write_csv(tmp_path / "bad.csv", ["file", "class"], [["x.png", "a"]])
    with pytest.raises(DataError) as e:
        prepare(DataConfig(csv=str(tmp_path / "bad.csv")))
    assert "missing column(s) path, label; expected a header row path,label[,split], found columns: file, class" \
        in str(e.value)
    _write_csv(tmp_path / "imgs/s.csv", ["path", "label", "split"], [["a/a_000.png", "a", "valid"]])
    with pytest.raises(DataError, match=r"s.csv:2: split must be one of train \| val \| test, got \"valid\""):
        prepare(DataConfig(csv=str(tmp_path / "imgs/s.csv")))
    sub = tmp_path / "imgs" / "lists"
    sub.mkdir()
    rows = [[os.path.relpath(p, sub), lab] for lab in ("a", "b") for p in tree[lab]]
    _write_csv(sub / "up.csv", ["path", "label"], rows)
    with pytest.raises(DataError, match=r"14 path\(s\) point outside the CSV's folder .*"
                                        r"HINT: move the CSV up, or set data.allow_outside: true"):
        prepare(DataConfig(csv=str(sub / "up.csv")))
    data = prepare(DataConfig(csv=str(sub / "up.csv"), allow_outside=True, split=SplitConfig(method="stratified")),
                   progress=False)
    assert len(data.rows) == 14


# === Duplicates, leakage, manifest round-trip ===


def test_exact_duplicates_share_a_split_and_near_duplicate_leak_is_warned(tmp_path):
    tree = _mini_tree(tmp_path / "d", {"a": 8, "b": 8}, size=(32, 32))
    src = tree["a"][0]
    dup = os.path.join(str(tmp_path / "d/a"), "zz_copy.png")
    with open(src, "rb") as f, open(dup, "wb") as g:
        g.write(f.read())
    data = prepare(DataConfig(dir=str(tmp_path / "d"), split=SplitConfig(method="stratified")), progress=False)
    assert data.duplicate_groups == [[src, dup]]
    split_of = {r["path"]: r["split"] for r in data.rows}
    assert split_of[src] == split_of[dup]
    assert data.leaks == []

    # A near-duplicate (re-encoded JPEG, a little brighter) planted in the test split of a CSV.
    near = str(tmp_path / "d/b/near.jpg")
    arr = np.clip(np.asarray(Image.open(tree["b"][1])).astype(int) + 6, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(near, quality=80)
    rows = [[p, lab, "train"] for lab in ("a", "b") for p in tree[lab][:6]]
    rows += [[p, lab, "val"] for lab in ("a", "b") for p in tree[lab][6:]]
    rows += [[near, "b", "test"], [dup, "a", "test"], [tree["a"][1], "a", "test"]]  # the copy crosses splits
    _write_csv(tmp_path / "d/list.csv", ["path", "label", "split"], rows)
    data = prepare(DataConfig(csv=str(tmp_path / "d/list.csv")), progress=False)
    assert data.skipped == [(tree["a"][1], "repeated: listed again on line 20 of the CSV (first on line 3)")]
    assert data.leaks == [(tree["b"][1], near, data.leaks[0][2])]
    assert data.leaks[0][2] <= splits.NEAR_DUPLICATE_DISTANCE
    assert any(w.startswith("leakage: 1 near-duplicate pair(s) across splits") for w in data.warnings)
    assert any(w.startswith("leakage: 1 group(s) of identical files span several splits") for w in data.warnings)
    s = D.format_summary(D.summary(str(tmp_path / "d/list.csv"), progress=False))
    assert f"b/b_001.png [train] ~ b/near.jpg [test] (distance {data.leaks[0][2]})" in s
    assert "Identical files: 1 group(s)\n  a/a_000.png [train] = a/zz_copy.png [test]" in s


def test_near_duplicate_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 60, dtype=np.int64).astype(np.uint64)
    hashes = list(base)
    for i in range(0, 60, 3):  # plant neighbours at distances 0..6
        flip = np.uint64(0)
        for b in rng.choice(64, size=i % 7, replace=False):
            flip |= np.uint64(1) << np.uint64(int(b))
        hashes.append(base[i] ^ flip)
    hashes = [int(h) for h in hashes]
    lumas = [100.0] * len(hashes)
    got = splits.near_duplicate_pairs(hashes, lumas)
    brute = [(i, j, bin(hashes[i] ^ hashes[j]).count("1")) for i in range(len(hashes))
             for j in range(i + 1, len(hashes)) if bin(hashes[i] ^ hashes[j]).count("1") <= 4]
    assert got == brute and len(brute) >= 10
    assert splits.near_duplicate_pairs(hashes[:2] + hashes[:1], [0.0, 0.0, 200.0]) == []  # brightness differs


def test_manifest_round_trip(tmp_path):
    _mini_tree(tmp_path / "d", {"a": 9, "b": 7})
    data = prepare(DataConfig(dir=str(tmp_path / "d"), split=SplitConfig(method="stratified")), tmp_path / "r1",
                   progress=False)
    again = prepare(DataConfig(manifest="manifest.csv"), tmp_path / "r2", base_dir=tmp_path / "r1")
    assert again.rows == data.rows and again.labels == data.labels and again.source_kind == "manifest"
    assert (tmp_path / "r1/manifest.csv").read_bytes() == (tmp_path / "r2/manifest.csv").read_bytes()
    os.remove(data.rows[0]["path"])
    with pytest.raises(DataError, match="1 file\\(s\\) listed in the manifest no longer exist"):
        prepare(DataConfig(manifest=str(tmp_path / "r1/manifest.csv")))


# === Pipelines ===


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """9 'a' + 3 'b' images of 20x28, all in train (val/test fractions 0 keep the numbers simple)."""
    root = tmp_path_factory.mktemp("small")
    _mini_tree(root, {"a": 9, "b": 3}, size=(20, 28))
    full = prepare(DataConfig(dir=str(root), split=SplitConfig(val=0.0, test=0.0)), progress=False)
    rows = [dict(r, split=("val" if i % 4 == 3 else "train")) for i, r in enumerate(full.rows)]
    return dataclasses.replace(full, rows=rows)


def test_dataset_shapes_order_and_pixels(small):
    val = small.dataset("val", batch_size=2, image_size=16)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in val])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(y, small.label_ids("val"))
    np.testing.assert_array_equal(x, np.stack([D.load_image(p, 16) for p in small.paths("val")]).astype("float32"))
    assert small.steps_per_epoch("train", 4) == 3


def test_resize_crop_and_pad_geometry(tmp_path):
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, :100], a[:, 100:200], a[:, 200:] = RED, GREEN, BLUE
    p = str(tmp_path / "wide.png")
    _save(p, a)
    cropped = D.load_image(p, 32, "crop")  # the centre 100x100 square; the filter reaches 1 px past its edges
    np.testing.assert_array_equal(cropped[:, 1:-1], np.full((32, 30, 3), GREEN, np.uint8))
    assert (cropped[:, [0, -1], 1] > 200).all()
    padded = D.load_image(p, 30, "pad")  # 300x100 fits as 30x10, centred: 10 black rows above and below
    assert padded.shape == (30, 30, 3)
    assert not padded[:10].any() and not padded[20:].any()
    np.testing.assert_array_equal(padded[10:20, 12:18], np.full((10, 6, 3), GREEN, np.uint8))
    stretched = D.load_image(p, (10, 30))
    np.testing.assert_array_equal(stretched[:, 12:18], np.full((10, 6, 3), GREEN, np.uint8))


def test_augmentation_only_in_train(small):
    def two_passes(split, augment):
        ds = small.dataset(split, batch_size=16, image_size=16, augment=augment, shuffle=False)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(2)]

    plain = two_passes("train", None)
    np.testing.assert_array_equal(plain[0], plain[1])
    aug = two_passes("train", "heavy")
    assert np.abs(aug[0] - plain[0]).mean() > 5 and np.abs(aug[0] - aug[1]).mean() > 5
    assert aug[0].min() >= 0 and aug[0].max() <= 255
    val = two_passes("val", "heavy")  # augment is ignored outside train
    np.testing.assert_array_equal(val[0], val[1])
    np.testing.assert_array_equal(val[0], np.stack([D.load_image(p, 16) for p in small.paths("val")]))


def test_make_augmenter_layers_and_seed_settings():
    assert D.make_augmenter("none") is None and D.make_augmenter([]) is None
    aug = D.make_augmenter([{"flip": "horizontal"}, {"rotation": 40}, {"translation": 0.2}, {"shear": 0.2},
                            {"zoom": {"factor": 0.2, "fill_mode": "nearest"}}, "flip"], seed=7)
    names = [layer.name for layer in aug.layers]
    assert names == ["augment_flip", "augment_rotation", "augment_translation", "augment_shear", "augment_zoom",
                     "augment_flip_2"]
    rot = aug.get_layer("augment_rotation")
    assert rot.factor == (-40 / 360, 40 / 360) and rot.seed == 8
    assert aug.get_layer("augment_zoom").fill_mode == "nearest"
    assert [type(layer).__name__ for layer in D.make_augmenter("heavy").layers] == [
        "RandomFlip", "RandomRotation", "RandomTranslation", "RandomShear", "RandomZoom", "RandomContrast",
        "RandomBrightness"]


def test_class_weights_change_the_loss_as_expected(small):
    import keras
    from sklearn.utils.class_weight import compute_class_weight

    y = small.label_ids("train")
    cw = small.class_weight()
    ref = compute_class_weight("balanced", classes=np.arange(2), y=y)
    assert cw == pytest.approx({0: ref[0], 1: ref[1]})
    assert list(np.bincount(y)) == [7, 2] and cw == pytest.approx({0: 9 / 14, 1: 9 / 4})

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy")
    weighted = small.dataset("train", batch_size=64, image_size=16, balance="class-weight", shuffle=False)
    x, yb, w = next(iter(weighted))
    np.testing.assert_allclose(w.numpy(), [cw[int(i)] for i in yb.numpy()], rtol=1e-6)
    p = model.predict(x, verbose=0).astype(np.float64)
    ce = -np.log(p[np.arange(len(yb)), yb.numpy()])
    loss_w = model.evaluate(weighted, verbose=0)
    loss = model.evaluate(small.dataset("train", batch_size=64, image_size=16, shuffle=False), verbose=0)
    assert loss_w == pytest.approx(float((w.numpy() * ce).sum() / len(ce)), rel=1e-5)
    assert loss == pytest.approx(float(ce.mean()), rel=1e-5)
    assert abs(loss_w - loss) > 1e-4


def test_oversampling_draws_classes_equally_each_epoch(small):
    assert small.steps_per_epoch("train", 4, "oversample") == 3  # 2 classes x ceil(9 / 2) = 10 draws
    ds = small.dataset("train", batch_size=4, image_size=16, balance="oversample", seed=1)
    seen_b = set()
    for _ in range(2):  # two epochs, each balanced
        labels, n_batches = [], 0
        for x, y in ds:
            labels += list(y.numpy())
            n_batches += 1
            seen_b |= {x.numpy()[i].tobytes() for i in np.flatnonzero(y.numpy() == 1)}
        assert n_batches == 3 and np.bincount(labels).tolist() == [5, 5]
    assert len(seen_b) == 2  # both minority images are drawn (repeated)
    rep = small.dataset("train", batch_size=5, image_size=16, balance="oversample", repeat=True)
    ys = np.concatenate([y.numpy() for _, y in rep.take(6)])
    assert np.bincount(ys).tolist() == [15, 15]


def test_same_file_name_in_different_classes_is_not_a_group():
    from inceptune.data import SplitConfig, assign_splits

    paths = [f"/d/{c}/img_{i:03d}.jpg" for c in ("cats", "dogs") for i in range(40)]
    labels = [p.split("/")[2] for p in paths]
    hashes = [f"h{i}" for i in range(len(paths))]
    splits = assign_splits(paths, labels, hashes, SplitConfig(val=0.2, test=0.2, seed=0))
    for c in ("cats", "dogs"):
        got = {s for s, lab in zip(splits, labels) if lab == c}
        assert got == {"train", "val", "test"}
    # stable-hash: the split is a function of the name, so the same name lands in the same split in each class
    assert splits[:40] == splits[40:]


@pytest.mark.parametrize("balance", ["none", "oversample"])
def test_dataset_yields_the_epoch_order(small, balance):
    # one ordering logic serves both the image pipeline and the feature cache's batches
    order = small.epoch_order("train", seed=3, balance=balance)
    ds = small.dataset("train", batch_size=4, image_size=16, seed=3, balance=balance)
    pixels = np.concatenate([x.numpy() for x, _ in ds])
    expected = np.stack([D.load_image(small.paths("train")[i], 16) for i in order]).astype("float32")
    np.testing.assert_array_equal(pixels, expected)
    assert len(order) == (10 if balance == "oversample" else 9)


def test_scan_lists_validates_and_filters_before_reading(tmp_path):
    _mini_tree(tmp_path / "imgs", {"a": 3, "b": 2})
    (tmp_path / "imgs" / "b" / "bad.jpg").write_bytes(b"not a jpeg")
    found = D.scan(tmp_path / "imgs")
    assert found.kind == "dir" and found.classes == {"a": 3, "b": 3}
    assert [os.path.basename(p) for p, _ in found.skipped] == ["bad.jpg"]
    assert found.labels == ["a", "a", "a", "b", "b"] and len(set(found.hashes)) == 5
    rows = [(p, lab, "test" if i % 2 else "train") for i, (p, lab) in enumerate(zip(found.paths, found.labels))]
    csv_path = tmp_path / "imgs" / "list.csv"
    csv_path.write_text("path,label,split\n" + "".join(f"{p},{lab},{s}\n" for p, lab, s in rows + rows[:1]))
    found = D.scan(csv_path, keep=lambda path, label, split: split == "test")
    assert found.kind == "csv" and found.has_split and found.splits == ["test", "test"]
    assert found.paths == [rows[1][0], rows[3][0]]
    found = D.scan(csv_path)
    assert found.skipped == [(rows[0][0], "repeated: listed again on line 7 of the CSV (first on line 2)")]
    with pytest.raises(DataError, match=r"only one class \('a'\) found"):
        D.scan(csv_path, min_classes=2, keep=lambda path, label, split: label == "a")


def test_data_errors_name_their_recipe_key(tmp_path):
    # the key travels with the error, as with every recipe error (the CLI blames the --set that set it)
    _mini_tree(tmp_path / "one", {"cat": 3})
    with pytest.raises(DataError) as e:
        prepare(DataConfig(dir=str(tmp_path / "one")), progress=False)
    assert e.value.key == "data.dir"
    with pytest.raises(DataError) as e:
        prepare(DataConfig(csv=str(tmp_path / "missing.csv")), progress=False)
    assert e.value.key == "data.csv"
    _mini_tree(tmp_path / "few", {"a": 2, "b": 2})
    with pytest.raises(DataError) as e:
        prepare(DataConfig(dir=str(tmp_path / "few")), progress=False)
    assert e.value.key == "data.split"


def test_upsampled_digits_are_not_near_duplicates(tmp_path):
    # 8x8 digits scaled to 32 px share 64-bit hashes by the thousand; their 16x16 thumbnails tell them apart
    from inceptune.demo import write_digits

    write_digits(tmp_path / "digits")  # all 1,797, as the demo writes them
    data = prepare(DataConfig(dir=str(tmp_path / "digits")), progress=False)
    assert len(data.rows) == 1797 and data.leaks == []
    assert not [w for w in data.warnings if "leakage" in w]
    found = sources.scan(tmp_path / "digits", progress=False)  # no pair at all, whatever the split
    assert splits.near_duplicate_pairs(found.dhashes, found.lumas, details=found.details) == []
    assert len(splits.near_duplicate_pairs(found.dhashes, found.lumas)) > 1000  # what the hash alone reports


def test_summary_lists_at_most_20_leaks_then_counts_the_rest():
    leaks = [{"a": f"/d/a/{i}.png", "b": f"/d/b/{i}.png", "split_a": "train", "split_b": "test", "distance": 1}
             for i in range(25)]
    info = {"source": "/d", "kind": "dir", "total": 50, "labels": ["a", "b"],
            "counts": {s: {"a": 25 if s == "train" else 0, "b": 25 if s == "test" else 0} for s in D.SPLITS},
            "skipped": [], "skipped_by_kind": {}, "ignored": {}, "duplicate_groups": [], "leaks": leaks,
            "warnings": []}
    lines = D.format_summary(info).splitlines()
    listed = [line for line in lines if " ~ " in line]
    assert len(listed) == 20 and listed[0] == "  a/0.png [train] ~ b/0.png [test] (distance 1)"
    assert "  ... and 5 more pairs (all of them: --json)" in lines
