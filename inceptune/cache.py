"""The frozen-prefix feature cache: compute the frozen part of the network once, train the rest on its output.

When a stage trains only layers downstream of some tensor, and nothing upstream of it trains or is random, the
activations at that tensor (the *cut*) are the same every epoch. The cache computes them once per image with a
compiled function (`inference.compiled_forward`, not `model.predict`), keeps them on disk in a per-image store
(`feature_store.py`: `<cache root>/<prefix key>/`, memory-mapped when larger than the memory budget), and the
stage trains a *suffix model* (cut → outputs) that shares its layers and variables with the full model: when the
stage ends the full model is already trained.

The cut is the deepest layer such that (1) no layer with trainable weights and no random layer (Dropout,
noise, augmentation layers, BatchNorm in training mode) lies at or upstream of it, and (2) everything
downstream can be computed from its output alone. BatchNorm under the `frozen` policy is deterministic.
`prefix_cut.py` finds the cut and builds the suffix model; `cached_stage.py` trains a stage's suffix on the
features (its compiled steps, XLA, the padded last batch); this module plans the cuts, fills and reads the
store, and predicts from it at the end of a run.

The store's key covers what the prefix computes for one image: the prefix's layer configs (architecture and
preprocessing), a fingerprint of every prefix weight, the cut, the image size and resize mode, and the storage
dtype. Inside it, features are kept by each image's content hash, so a run reads only what it lacks: a second
run of the same data computes nothing, a cross-validation fold or another split of the same images computes
nothing (its arrays are assembled from the store), and images added to a folder cost one forward each. Anything
that changes what the prefix computes means another store, so stale features are never used.

Augmentation: with `data.augment` on, cached features would freeze one augmentation forever, so a stage is
cached only when `cache: {views: K}` asks for K augmented views of each training image (computed once, K
passes of the prefix); epoch e trains on view e mod K. This trades augmentation diversity (K fixed draws instead
of a fresh draw each epoch) for speed; the validation split is never augmented.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np


try:
    import fcntl
except ImportError:  # Windows: no advisory locks (entries are still renamed into place whole)
    fcntl = None
from inceptune.data import load_image
from inceptune.feature_store import FeatureStore
from inceptune.cached_stage import StageFitter
from inceptune.inference import compiled_forward, one_pass_graphs
from inceptune.prefix_cut import Cut, find_cut, suffix_model
from inceptune.progress import Bar

# graph, freezing and selectors import Keras at module level: they are imported inside the functions that use
# them, so that importing this module stays light.

__all__ = ["CacheContext", "cache_root", "extract_features", "entry_lock"]

def cache_root() -> Path:
    """Where features are stored: `$INCEPTUNE_CACHE_DIR`, else `$XDG_CACHE_HOME/inceptune/features`."""
    env = os.environ.get("INCEPTUNE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "inceptune" / "features"


def extract_features(forward, dataset, n: int, out_paths: list, dtype: str, progress=None) -> None:
    """Runs `forward` (returning one tensor per output path) over a batched dataset of (images, labels[,
    weights]) and writes each output as an (n, ...) `.npy` array, via a temporary name then a rename."""
    arrays, tmps = None, [p.with_name(f"tmp-{os.getpid()}-{p.name}") for p in out_paths]
    i = 0
    for batch in dataset:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        ys = forward(x)
        ys = [np.asarray(y).astype(dtype) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]
        if arrays is None:
            arrays = [np.lib.format.open_memmap(t, mode="w+", dtype=dtype, shape=(n,) + y.shape[1:])
                      for t, y in zip(tmps, ys)]
        for arr, y in zip(arrays, ys):
            arr[i:i + len(y)] = y
        i += len(ys[0])
        if progress is not None:
            progress(len(ys[0]))
    for arr in arrays or []:
        arr.flush()
    del arrays
    for tmp, path in zip(tmps, out_paths):
        os.replace(tmp, path)


def decoded_batches(paths, image_size, resize: str = "stretch", batch_size: int = 32):
    """Yields float32 batches of decoded images in order, one batch ahead in one background thread.

    The same decoder as the training pipeline (`data.load_image`), so the pixels are identical. For a pass of
    the whole network over images (the cache fill) this beats `tf.data`'s parallel decode on a small CPU: its
    decode threads compete with the convolutions for the cores (measured here: 600 images through InceptionV3
    at 150 px, 24.4-26.4 s this way against 29.0-29.7 s through the `tf.data` pipeline).
    """
    from concurrent.futures import ThreadPoolExecutor

    chunks = [list(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]

    def load(chunk):
        return np.stack([load_image(p, image_size, resize) for p in chunk]).astype("float32")

    if not chunks:
        return
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, chunks[0])
        for k in range(len(chunks)):
            batch = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(load, chunks[k + 1])
            yield batch


def _hash_update_json(h, obj) -> None:
    h.update(json.dumps(obj, sort_keys=True, default=str).encode())


def _prefix_fingerprint(model, cut: Cut) -> str:
    """What the prefix computes: each layer's type and config, its inputs, and its weights, by position.

    Names are left out: Keras's automatic names (`conv2d_17`) depend on what the process built before, so the
    same model built in another process would otherwise get another key. Trainable flags are left out too: in a
    valid prefix nothing trains, and a weightless layer's flag does not change what it computes.
    """
    from inceptune import graph as _graph

    parents = _graph.parents(model)
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    h = hashlib.sha256()
    for layer in model.layers:
        if layer.name not in cut.prefix:
            continue
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
        _hash_update_json(h, [position[layer.name], type(layer).__name__, config,
                              sorted(position[p] for p in parents.get(layer.name, ()))])
        for v in layer.weights:
            h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def entry_lock(folder: Path, *, wait: bool = True):
    """Holds an exclusive lock on the cache entry `folder` (a `flock` on `<folder>.lock`), so that of several
    runs sharing a cache folder exactly one computes an entry while the others wait, then read it.

    Yields True when the lock is held; with `wait=False`, False at once when another process holds it. Where
    `fcntl` does not exist (Windows) it yields True without locking: entries still appear whole (renamed into
    place), at worst computed twice.
    """
    if fcntl is None:
        yield True
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.with_name(folder.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _memory_budget_bytes(cfg) -> int:
    if cfg.memory_budget_mb:
        return int(float(cfg.memory_budget_mb) * 2**20)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 4 * 2**30
    return int(avail * 0.25)


class CacheContext:
    """Per-run cache state, used by the trainer (`cache: auto`).

    Args:
        recipe, data, model, out: the run's recipe, `PreparedData`, full model and folder.
        image_size: int. resize: str. log: callable for progress lines.
    """

    def __init__(self, recipe, data, model, out, *, image_size: int, resize: str = "stretch", log=print,
                 progress: bool = True):
        cfg = recipe.cache
        self.cfg, self.data, self.out, self.log = cfg, data, Path(out), log
        self.image_size, self.resize, self.progress = int(image_size), resize, progress
        self.seed = int(recipe.seed)
        self.dtype = cfg.dtype
        self.augment = recipe.data.augment
        self.augment_on = self.augment not in (None, "none", [], ())
        self.views = cfg.views if self.augment_on else 1
        self.balance = recipe.data.balance
        self.batch_size = recipe.data.batch_size
        self.data_cfg = recipe.data
        self.mixup = getattr(recipe.data, "mixup", None)  # mixup at the cut (regularize.py); cutmix needs images
        self.train_y = data.label_ids("train")
        self.val_y = data.label_ids("val") if data.paths("val") else None
        self.test_n = len(data.paths("test"))
        self.planned: list = []
        self.cache_test = False
        self.budget = _memory_budget_bytes(cfg)
        self.hits = 0
        self.misses = 0
        self.seconds = 0.0  # time spent computing and loading features
        self.fitters: dict = {}
        self._hashes: dict = {}
        h = hashlib.sha256()
        _hash_update_json(h, [[r["path"], r.get("hash"), r["split"], r["label"]] for r in data.rows])
        self.manifest_hash = h.hexdigest()
        # augmented views depend on the training split's order, the augmentation, the seed and the batching
        self.views_key = ""
        if self.views > 1:
            h = hashlib.sha256()
            _hash_update_json(h, [[self._sha(r) for r in data.rows if r["split"] == "train"], self.augment,
                                  self.seed, self.batch_size])
            self.views_key = h.hexdigest()[:16]
        h = hashlib.sha256()
        _hash_update_json(h, [self.manifest_hash, self.views, self.views_key])
        self.set_key = h.hexdigest()[:24]

    def targets(self, ids, soft: bool):
        """Class ids as the stage's loss wants them: as they are, or one-hot float32 (`soft`)."""
        if ids is None or not soft:
            return ids
        return np.eye(self.data.num_classes, dtype="float32")[np.asarray(ids, dtype="int64")]

    def fitter(self, stage, stage_index: int, model, *, loss) -> StageFitter:
        """The stage's fitter at the model's current cut; `loss`: (loss, metrics) its suffix compiles with."""
        fitter = StageFitter(self, stage, stage_index, model, find_cut(model), loss)
        if fitter.active:
            fitter.earlier = self.fitters.get(fitter.cut.layer)  # whose compiled steps it may reuse
            self.fitters[fitter.cut.layer] = fitter  # the latest stage at each cut: its suffix predicts at the end
        return fitter

    def prefix_key(self, model, cut: Cut) -> str:
        """The feature store of `cut`: what the prefix computes for one image (never which images or splits)."""
        h = hashlib.sha256()
        cut_at = [layer.name for layer in model.layers].index(cut.layer)
        _hash_update_json(h, {"cut": cut_at, "prefix": _prefix_fingerprint(model, cut), "size": self.image_size,
                              "resize": self.resize, "dtype": self.dtype, "version": 3})
        return h.hexdigest()[:24]

    def key(self, model, cut: Cut) -> str:
        """The run's set of arrays at `cut` (relative to the cache root): the store, then the manifest's set."""
        return f"{self.prefix_key(model, cut)}/sets/{self.set_key}"

    def _items(self) -> dict[str, list[str]]:
        """The store items of each array of a run's set: `train-<v>` per view, `val`, and `test` when cached."""
        rows = self.data.rows
        by_split = {s: [self._sha(r) for r in rows if r["split"] == s] for s in ("train", "val", "test")}
        out = {}
        for v in range(self.views):
            out[f"train-{v}"] = ([f"aug:{self.views_key}:{v}:{sha}" for sha in by_split["train"]] if self.views > 1
                                 else by_split["train"])
        if self.val_y is not None:
            out["val"] = by_split["val"]
        if self.cache_test:
            out["test"] = by_split["test"]
        return out

    def _sha(self, row) -> str:
        """The row's content hash (the manifest's, or the file's SHA-256 when a hand-made manifest has none)."""
        if row.get("hash"):
            return row["hash"]
        path = row["path"]
        if path not in self._hashes:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._hashes[path] = h.hexdigest()
        return self._hashes[path]

    def plan(self, model, stages, batchnorm: str, bmap=None) -> None:
        """Finds every stage's cut in advance (trainable flags are set per stage later by the trainer), so
        that one pass over the images can fill the caches of later stages whose prefix stays frozen."""
        from inceptune import freezing
        from inceptune.selectors import resolve

        self.planned = []
        for stage in stages:
            freezing.apply_trainable(model, resolve(model, stage.train, bmap=bmap), batchnorm=batchnorm, bmap=bmap)
            trained = {layer.name for layer in model.layers if layer.trainable and layer.trainable_weights}
            self.planned.append((find_cut(model), trained))
        # The test split joins the pass when the last stage is cached: the final model's prefix at that cut is
        # then unchanged, and its test predictions come from the cache instead of another pass over the images.
        self.cache_test = bool(self.test_n and self.planned and self.planned[-1][0].layer is not None)

    def _extras(self, stage_index: int, cut: Cut) -> list[Cut]:
        """Later stages' cuts that this stage's pass can fill: upstream of `cut`, and nothing in their prefix
        trains in this stage or any stage before theirs."""
        out = []
        plan = self.planned
        for j in range(stage_index + 1, len(plan)):
            later, _ = plan[j]
            if later.layer is None or later.layer == cut.layer or not later.prefix <= cut.prefix:
                continue
            if any(later.prefix & plan[k][1] for k in range(stage_index, j)):
                continue
            if all(later.layer != c.layer for c in out):
                out.append(later)
        return out

    def features(self, model, cut: Cut, stage_index: int = -1) -> dict:
        """Returns {"train": [view arrays], "val": array} for the cut, from the cache or computed now (with the
        caches of later stages' cuts that the same pass can fill)."""
        t_start = time.perf_counter()
        try:
            return self._features(model, cut, stage_index)
        finally:
            self.seconds += time.perf_counter() - t_start

    def _features(self, model, cut: Cut, stage_index: int) -> dict:
        store = FeatureStore(cache_root() / self.prefix_key(model, cut))
        folder = store.set_folder(self.set_key)
        if self._complete(folder):
            return self._hit(folder, cut)
        with entry_lock(store.folder):
            if self._complete(folder):  # another run filled it while this one waited for the lock
                return self._hit(folder, cut)
            with contextlib.ExitStack() as held:
                # later stages' cuts that the same pass can fill: each under its own lock, taken without waiting
                # (a run holding one fills it itself), so two runs never wait on each other in a circle
                extras = []
                for c in self._extras(stage_index, cut):
                    s = FeatureStore(cache_root() / self.prefix_key(model, c))
                    if not self._complete(s.set_folder(self.set_key)) \
                            and held.enter_context(entry_lock(s.folder, wait=False)) \
                            and not self._complete(s.set_folder(self.set_key)):
                        extras.append((c, s))
                self._fill(model, [(cut, store), *extras])
        return self._load(folder)

    def _complete(self, folder: Path) -> bool:
        """A set that exists whole and holds every array this run wants."""
        try:
            files = json.loads((folder / "meta.json").read_text())["files"]
        except (OSError, ValueError, KeyError):
            return False
        want = self._items()
        return len(files["train"]) == self.views and all(s in files for s in want if not s.startswith("train"))

    def _hit(self, folder: Path, cut: Cut) -> dict:
        self.hits += 1
        self.log(f"    cache hit: {folder} ({cut.layer})")
        return self._load(folder)

    def _fill(self, model, cuts: list) -> None:
        """Computes what the stores of `cuts` (a list of (cut, store)) lack in one pass over those images, then
        assembles this run's set in each (the caller holds the stores' locks)."""
        items = self._items()
        for _, store in cuts:
            store.remove_incomplete()
        indexes = [store.index() for _, store in cuts]
        wanted = [item for name in items for item in items[name]]
        missing = list(dict.fromkeys(i for i in wanted if any(i not in index for index in indexes)))
        total, seconds = self._compute(model, cuts, set(missing)) if missing else (0, 0.0)
        files = {"train": [f"train-{v}.npy" for v in range(self.views)],
                 **{name: f"{name}.npy" for name in items if not name.startswith("train")}}
        meta = {"files": files, "images": len(wanted), "computed": total, "dtype": self.dtype,
                "seconds": round(seconds, 3)}
        finals = [store.assemble(self.set_key, items, dict(meta, cut=c.layer)) for c, store in cuts]
        also = f" (and {', '.join(c.layer for c, _ in cuts[1:])} for later stages)" if len(cuts) > 1 else ""
        reused = len(set(wanted)) - len(missing)
        if total:
            self.misses += 1
            self.log(f"    cache miss: computed {total} feature maps at {cuts[0][0].layer}{also} in {seconds:.1f}s "
                     f"({total / max(seconds, 1e-9):.1f} img/s)"
                     + (f", {reused} already stored" if reused else "")
                     + f" into {', '.join(str(f) for f in finals)}")
        else:
            self.hits += 1
            self.log(f"    cache hit: the features of all {reused} images at {cuts[0][0].layer}{also} were stored "
                     f"by earlier runs (other splits): assembled into {', '.join(str(f) for f in finals)}, no "
                     "image pass")

    def _compute(self, model, cuts: list, missing: set) -> tuple[int, float]:
        """One pass of the prefix over the images whose items are `missing`, one new shard per store.

        Returns:
            (feature maps computed, seconds).
        """
        import keras

        prefix = keras.Model(model.inputs, [model.get_layer(c.layer).output for c, _ in cuts],
                             name=f"{model.name}_prefix")
        forward = compiled_forward(prefix)
        stores = [store for _, store in cuts]
        rows = self.data.rows
        plain = {}  # sha -> path, unaugmented items in manifest order (each content once)
        for r in rows:
            sha = self._sha(r)
            if sha in missing and sha not in plain:
                plain[sha] = r["path"]
        train_items = self._items()
        views = [v for v in range(self.views) if self.views > 1
                 and any(i in missing for i in train_items[f"train-{v}"])]
        total = len(plain) + sum(len(train_items[f"train-{v}"]) for v in views)
        t0 = time.time()
        bar = Bar(total, f"caching features at {', '.join(c.layer for c, _ in cuts)}", show=self.progress)
        passes = []
        if plain:
            passes.append((list(plain), decoded_batches(list(plain.values()), self.image_size, self.resize,
                                                        self.batch_size)))
        for v in views:  # augmented views: the training pipeline's augmentation, seeded per view, whole
            passes.append((train_items[f"train-{v}"],
                           self.data.dataset("train", batch_size=self.batch_size, image_size=self.image_size,
                                             resize=self.resize, shuffle=False, augment=self.augment,
                                             seed=self.seed * 7919 + v)))
        with one_pass_graphs():  # the prefix's function runs this pass only
            for names, batches in passes:
                shards = [store.new_shard() for store in stores]
                extract_features(forward, batches, len(names), shards, self.dtype, bar.update)
                for shard in shards:
                    FeatureStore.commit(shard, names)
        bar.close()
        return total, time.time() - t0

    def predict(self, model, split: str = "test", batch_size: int = 64):
        """`model`'s outputs for a split, computed from cached features when a planned cut's stored prefix is
        still `model`'s (same key: same prefix weights), else None.

        Returns:
            (np.ndarray of outputs, cut layer name) or None.
        """
        return self.predict_splits(model, (split,), batch_size).get(split)

    def predict_splits(self, model, splits, batch_size: int = 64) -> dict:
        """`predict` for several splits of the same model: each planned cut's key (a hash of its prefix's
        weights) is computed once for all of them.

        Returns:
            {split: (np.ndarray of outputs, cut layer name)} for the splits cached features can predict.
        """
        return self.predict_sources(model, self.locate(model, splits), batch_size)

    def locate(self, model, splits) -> list:
        """Where cached features can predict `splits` of `model`: the stored sets whose key (a hash of the prefix's
        weights now) matches, the smallest suffix first. The key reads every prefix weight, so a caller that
        starts other work on the model's weights (the run's background save of `model.keras`) locates first.

        Returns:
            [(cut, folder, {split: file name})]: what `predict_sources` computes from.
        """
        cuts = {c.layer: c for c, _ in self.planned if c.layer is not None}
        found, covered = [], set()
        for cut in sorted(cuts.values(), key=lambda c: len(c.suffix)):  # the smallest suffix first
            wanted = [s for s in splits if s not in covered]
            if not wanted:
                break
            folder = cache_root() / self.key(model, cut)
            if not (folder / "meta.json").exists():
                continue
            files = json.loads((folder / "meta.json").read_text())["files"]
            wanted = {s: files[s] for s in wanted if s in files}
            if wanted:
                found.append((cut, folder, wanted))
                covered.update(wanted)
        return found

    def predict_sources(self, model, sources: list, batch_size: int = 64) -> dict:
        """The suffix's outputs on the stored features that `locate` found (the model's weights unchanged since).

        Returns:
            {split: (np.ndarray of outputs, cut layer name)}.
        """
        out = {}
        for cut, folder, files in sources:
            # the suffix the stage trained and its compiled forward, already traced when an earlier split
            # (validation) was predicted: the final passes add no model and no trace
            fitter = self.fitters.get(cut.layer)
            if fitter is not None and fitter.suffix is not None:
                forward = fitter.forward()
            else:
                suffix = suffix_model(model, cut)  # held here: the compiled function refers to it weakly
                forward = compiled_forward(suffix)
            for split, name in files.items():
                feats = np.load(folder / name, mmap_mode="r")
                outs = [np.asarray(forward(np.asarray(feats[i:i + batch_size], dtype="float32")))
                        for i in range(0, len(feats), batch_size)]
                out[split] = (np.concatenate(outs), cut.layer)
        return out

    def _load(self, folder: Path) -> dict:
        meta = json.loads((folder / "meta.json").read_text())
        files = meta["files"]
        sizes = sum((folder / f).stat().st_size for f in files["train"])
        sizes += (folder / files["val"]).stat().st_size if "val" in files else 0
        mode = None if sizes <= self.budget else "r"  # in memory under the budget, memory-mapped above it
        out = {"train": [np.load(folder / f, mmap_mode=mode) for f in files["train"]]}
        if "val" in files:
            out["val"] = np.load(folder / files["val"], mmap_mode=mode)
        return out
