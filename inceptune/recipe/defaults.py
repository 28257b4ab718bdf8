"""The built-in recipe of `inceptune train DIR`, sized to the data, and the commented starter of `recipe init`.

The default is two stages, the classic way to fine-tune an ImageNet Inception: first the new head alone on the
frozen backbone (lr 1e-3), then the head with the backbone's top blocks (lr 1e-4, cosine, early stopping), with
BatchNorm frozen, light augmentation and the feature cache. What depends on the data is chosen from the number of
images per class (listed, not yet validated) and said in one line:

- split: `stratified` (exact proportions per class) below `STRATIFIED_BELOW` images in the smallest class,
  `stable-hash` (a file's split never moves when files are added) from there on;
- batch size: 32, or 16 below 500 training images, or 8 below 100;
- epochs per stage: 10 below 200 images per class (on average), 6 below 1,000, else 3 (`epochs=` overrides).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

__all__ = ["DefaultRecipe", "default_recipe", "starter_recipe", "TOP_BLOCKS", "NO_PRETRAINED", "STRATIFIED_BELOW"]

STRATIFIED_BELOW = 300  # images in the smallest class below which splits are stratified
# The block from which the second stage trains ("the top blocks"), per architecture; other backbones have no
# block map, so their second stage trains everything at a lower learning rate.
TOP_BLOCKS = {"inception_v3": "mixed9", "inception_resnet_v2": "mixed_7a", "inception_mini": "mixed3"}
NO_PRETRAINED = ("inception_mini",)  # backbones without ImageNet weights: their recipes say weights: none


@dataclasses.dataclass(frozen=True)
class DefaultRecipe:
    """A default recipe (`raw`, the mapping `load_recipe` takes) and the one line that says how it was sized."""

    raw: dict
    summary: str


def _weights(backbone: str) -> str:
    return "none" if backbone in NO_PRETRAINED else "imagenet"


def _epochs_for(per_class: float) -> int:
    return 10 if per_class < 200 else 6 if per_class < 1000 else 3


def _batch_size_for(train_images: int) -> int:
    return 8 if train_images < 100 else 16 if train_images < 500 else 32


def default_recipe(source: str, counts: Mapping[str, int], *, kind: str = "dir", backbone: str = "inception_v3",
                   epochs: int | None = None, image_size: int | None = None) -> DefaultRecipe:
    """The recipe `inceptune train DIR` runs, sized to the data.

    Args:
        source: str. The class-per-folder directory or the CSV.
        counts: mapping label -> number of listed images (`inceptune.data.sources.class_counts`).
        kind: str. `dir` or `csv`. Defaults to `dir`.
        backbone: str. Any name `inceptune backbones` lists, a `keras.applications` name or a `.keras` file.
            Defaults to `inception_v3`.
        epochs: int or None. Epochs of each stage. Defaults to None: chosen from the images per class.
        image_size: int or None. Input side. Defaults to None: the backbone's default size.

    Returns:
        DefaultRecipe.
    """
    total = sum(counts.values())
    smallest = min(counts.values()) if counts else 0
    per_class = total / max(len(counts), 1)
    method = "stratified" if smallest < STRATIFIED_BELOW else "stable-hash"
    batch = _batch_size_for(int(total * 0.7))
    n_epochs = int(epochs) if epochs is not None else _epochs_for(per_class)
    top = TOP_BLOCKS.get(backbone)
    second = ({"name": "top", "train": f"head, from:{top}", "lr": 1.0e-4} if top
              else {"name": "all", "train": "all", "lr": 1.0e-5})
    raw = {
        "data": {kind: source, "image_size": image_size, "split": {"val": 0.15, "test": 0.15, "method": method},
                 "augment": "light", "batch_size": batch},
        "model": {"backbone": backbone, "weights": _weights(backbone), "head": {"pooling": "avg", "dense": [1024],
                                                                          "dropout": 0.2}, "batchnorm": "frozen"},
        "stages": [
            {"name": "head", "train": "head", "epochs": n_epochs, "lr": 1.0e-3},
            {**second, "epochs": n_epochs, "schedule": "cosine",
             "early_stopping": {"monitor": "val_loss", "patience": 3, "restore_best": True}},
        ],
        "cache": {"mode": "auto", "views": 3},  # augmentation is on: 3 augmented views of each image are cached
    }
    why = (f"no recipe given: the default recipe for {total} images in {len(counts)} classes (smallest class "
           f"{smallest}): {method} split, batch size {batch}, '{raw['stages'][0]['name']}' then "
           f"'{second['name']}' ({second['train']}), {n_epochs} epochs each"
           + ("" if epochs is not None else f" (from {math.floor(per_class)} images per class)")
           + "; written to recipe.yaml in the run folder")
    return DefaultRecipe(raw, why)


def starter_recipe(backbone: str = "inception_v3") -> str:
    """A fully commented starting recipe (YAML text) for `inceptune recipe init`; it loads as written."""
    top = TOP_BLOCKS.get(backbone)
    if top:
        second = f'''  - name: top                   # then the top blocks as well, ten times slower
    train: "head, from:{top}"      # a selector: the head and every layer from block {top} on
    lr: 1.0e-4'''
    else:
        second = '''  - name: all                   # then everything, 100x slower (this backbone has no block map)
    train: all
    lr: 1.0e-5'''
    return f'''# inceptune recipe: edit, then run `inceptune train recipe.yaml`; `inceptune recipe show recipe.yaml`
# prints it with every default filled in. Keys left out take their documented defaults.
data:
  dir: path/to/images          # one sub-folder per class (or csv: file.csv with path,label[,split] columns)
  image_size: null             # null: the backbone's default size
  split: {{val: 0.15, test: 0.15, seed: 0, method: stable-hash}}   # or method: stratified
  augment: light               # none | light | standard | heavy, or a list: [{{flip: horizontal}}, {{rotation: 20}}]
  balance: none                # none | class-weight | oversample
  batch_size: 32
model:
  backbone: {backbone:<18} # see `inceptune backbones`
  weights: {_weights(backbone):<19} # imagenet | none | path/to/file.weights.h5
  head: {{pooling: avg, dense: [1024], dropout: 0.2}}
  batchnorm: frozen            # frozen | follow | train
  preprocess: null             # input scaling: null (the backbone's own) | tf | torch | caffe | none | unit
stages:                        # each stage needs only `train`; epochs default to 5, lr to 1.0e-3
  - name: head                  # first the new head alone, on the frozen backbone
    train: head
    epochs: 10
    lr: 1.0e-3
{second}
    epochs: 10
    schedule: cosine           # constant | cosine | exponential
    early_stopping: {{monitor: val_loss, patience: 3, restore_best: true}}
cache: {{mode: auto, views: 3}}  # reuse the frozen part's features; 3 augmented views of each training image
seed: 0
'''
