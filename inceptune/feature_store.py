"""The per-image feature store: what a frozen prefix computed for each image, kept by the image's content.

One store per prefix (`<cache root>/<prefix key>/`; the key covers the prefix's layers and weights, the cut, the
image size and resize mode and the storage dtype, never the manifest). Each image pass adds one *shard* to
`shards/`: `<id>.npy` (one row per item) and `<id>.json` (the item of each row), the JSON written last, so a
shard without it is the remains of a killed pass and is removed by the next writer. An item is an image's
SHA-256, or `aug:<views key>:<v>:<sha>` for augmented view v of a training image (an augmented view depends on
the training split's order and the seed, so only a run with the same training split reuses it).

A run reads its arrays (each training view, val, test, in manifest order) from a *set*,
`sets/<manifest key>/`, assembled from the shards (rows copied, no forward) and renamed into place whole,
`meta.json` inside. So a second run of the same manifest reads its set as it is; another split of the same
images (a cross-validation fold, a re-split) assembles a new set without an image pass; and adding images to a
folder costs one forward per new image.

Writers hold the store's lock (`cache.entry_lock` on the store folder); readers need none (shards and sets only
ever appear whole).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from inceptune._io import atomic_write_json

__all__ = ["FeatureStore"]


class FeatureStore:
    """The shards of one prefix's features and the sets assembled from them.

    Args:
        folder: Path of the store (`<cache root>/<prefix key>`).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.shards = self.folder / "shards"

    def index(self) -> dict[str, tuple[str, int]]:
        """item -> (shard file name, row) over every complete shard (the oldest shard wins for an item)."""
        out: dict[str, tuple[str, int]] = {}
        for meta in sorted(self.shards.glob("*.json")):
            npy = meta.with_suffix(".npy")
            try:
                items = json.loads(meta.read_text())["items"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not npy.exists():
                continue
            for row, item in enumerate(items):
                out.setdefault(item, (npy.name, row))
        return out

    def remove_incomplete(self) -> None:
        """Removes shards a killed pass left without their JSON (the caller holds the store's lock)."""
        if not self.shards.is_dir():
            return
        for npy in self.shards.glob("*.npy"):
            if not npy.with_suffix(".json").exists():
                npy.unlink(missing_ok=True)
        for tmp in self.shards.glob("tmp-*"):
            tmp.unlink(missing_ok=True)

    def new_shard(self) -> Path:
        """The `.npy` path of a new shard (its JSON is written by `commit`)."""
        self.shards.mkdir(parents=True, exist_ok=True)
        return self.shards / f"{time.time_ns()}-{os.getpid()}.npy"

    @staticmethod
    def commit(shard: Path, items: list[str]) -> None:
        """Makes a written shard visible: its JSON names the item of each row."""
        atomic_write_json(shard.with_suffix(".json"), {"items": list(items)})

    def set_folder(self, set_key: str) -> Path:
        return self.folder / "sets" / set_key

    def assemble(self, set_key: str, splits: dict[str, list[str]], meta: dict) -> Path:
        """Writes the set `set_key`: one `<name>.npy` per entry of `splits` (name -> items, in order) gathered
        from the shards, plus `meta.json`; staged beside it and renamed into place, replacing an older set.

        Raises:
            KeyError: an item is in no shard (the caller computes missing items first).
        """
        index = self.index()
        final = self.set_folder(set_key)
        stage = final.with_name(f".{final.name}.{os.getpid()}.partial")
        for stale in final.parent.glob(f".{final.name}.*.partial"):  # a killed writer's (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        stage.mkdir(parents=True)
        try:
            opened: dict[str, np.ndarray] = {}
            for name, items in splits.items():
                where = [index[item] for item in items]
                for file, _ in where:
                    if file not in opened:
                        opened[file] = np.load(self.shards / file, mmap_mode="r")
                first = opened[where[0][0]] if where else None
                shape = (len(items),) + (first.shape[1:] if first is not None else ())
                out = np.lib.format.open_memmap(stage / f"{name}.npy", mode="w+",
                                                dtype=first.dtype if first is not None else "float32", shape=shape)
                by_file: dict[str, tuple[list[int], list[int]]] = {}
                for pos, (file, row) in enumerate(where):
                    dest, rows = by_file.setdefault(file, ([], []))
                    dest.append(pos)
                    rows.append(row)
                for file, (dest, rows) in by_file.items():
                    out[np.asarray(dest)] = opened[file][np.asarray(rows)]
                out.flush()
                del out
            del opened
            atomic_write_json(stage / "meta.json", meta)  # written last: a set without it is assembled again
            if final.exists():
                shutil.rmtree(final)
            os.rename(stage, final)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return final
