"""Data: image folders and CSV manifests, every bad file reported, stable splits, tf.data pipelines.

The pipeline, top to bottom:

1. **Source**: a class-per-folder directory (one level), a CSV (``path,label[,split]``), or a manifest
   saved by an earlier run (``path,label,split,hash``, reused as is).
2. **Validation**: every file is read, hashed (SHA-256) and fully decoded by Pillow, in parallel. A bad file
   is skipped with a reason (``skipped.csv``), never fatal.
3. **Splits**: ``stable-hash`` (a file's split is a function of its name, as in TensorFlow's Speech Commands
   ``which_set``) or ``stratified`` (scikit-learn, seeded). Exact duplicates stay in one split; near-duplicates
   across splits (difference hash) are reported as leakage.
4. **Pipelines**: ``tf.data`` datasets that decode with the same Pillow code that validated the files (so
   every supported format, EXIF orientation and alpha are handled alike in training and prediction), resize
   (``stretch``, ``crop``, ``pad``), batch, augment the training split only, and balance classes.

Pixels leave the pipeline as float32 RGB in 0..255; each architecture's own preprocessing lives in the model.

The package, top to bottom: `overview` (`inceptune data summary`), `prepared` (`prepare` and `PreparedData`),
`pipeline` (tf.data), `augment` (Keras augmentation layers), `sources` (listing and validating files, `scan`),
`splits` (splits, duplicates, leakage) and `decode` (one image, with Pillow).

Example:
    >>> cfg = DataConfig(dir="photos", image_size=299)
    >>> data = prepare(cfg, "runs/exp1")
    >>> train = data.dataset("train", batch_size=32, image_size=299, augment="standard")
"""

from inceptune.choices import AUGMENT_OPS, AUGMENT_PRESETS, BALANCE_MODES, RESIZE_MODES, SPLIT_METHODS, SPLITS
from inceptune.data.augment import make_augmenter
from inceptune.data.decode import load_image
from inceptune.data.overview import format_summary, summary
from inceptune.data.pipeline import files_dataset
from inceptune.data.prepared import PreparedData, prepare
from inceptune.data.sources import IMAGE_EXTENSIONS, Scan, read_image_reason, scan
from inceptune.data.splits import assign_splits
from inceptune.recipe.data_section import data_config_from_dict, parse_augment
from inceptune.recipe.schema import DataConfig, SplitConfig

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESIZE_MODES",
    "SPLITS",
    "SPLIT_METHODS",
    "BALANCE_MODES",
    "AUGMENT_OPS",
    "AUGMENT_PRESETS",
    "SplitConfig",
    "DataConfig",
    "PreparedData",
    "Scan",
    "data_config_from_dict",
    "prepare",
    "scan",
    "assign_splits",
    "load_image",
    "read_image_reason",
    "files_dataset",
    "parse_augment",
    "make_augmenter",
    "summary",
    "format_summary",
]
