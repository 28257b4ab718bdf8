"""The recipe's schema: frozen dataclasses, one per section, every default written once (DESIGN.md §6).

`load_recipe` builds them from YAML (`inceptune.recipe.sections` validates every key); `recipe_to_dict`
writes them back. Allowed values of the string keys are the tables of `inceptune.choices`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Recipe", "DataConfig", "SplitConfig", "MixConfig", "ModelConfig", "HeadConfig", "SkipConfig",
           "InsertConfig", "Stage", "EarlyStopping", "EmaConfig", "CacheConfig", "DistributeConfig"]

# === data ===

@dataclass(frozen=True)
class SplitConfig:
    """How files are split into train/val/test.

    Args:
        val: float. Fraction of each class for validation, in [0, 1). Defaults to 0.15.
        test: float. Fraction of each class for the test split, in [0, 1). Defaults to 0.15.
        seed: int. Seed of the split (stable-hash mixes it into every file's hash). Defaults to 0.
        method: str. ``stable-hash`` (a file's split depends only on its name, so adding files never moves
            old ones; names sharing a ``_nohash_`` prefix stay together) or ``stratified`` (scikit-learn's
            stratified shuffle split, exact proportions, but adding files reshuffles). Defaults to
            ``stable-hash``.
    """

    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    method: str = "stable-hash"


@dataclass(frozen=True)
class MixConfig:
    """Mixup or CutMix of training batches (`data.mixup`, `data.cutmix`); `true` means all defaults, `null` none.

    Keys:
        alpha: float > 0. The mixing weight is drawn from Beta(alpha, alpha) per batch: small alphas keep most
            pairs close to one image, 1 draws it uniformly. Defaults to 0.2 (mixup) / 1.0 (cutmix), timm's values.
        prob: float in [0, 1]. Share of batches mixed. Defaults to 1.0.
    """

    alpha: float = 0.2
    prob: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    """The recipe's ``data:`` section.

    Args:
        dir: str | None. A class-per-folder directory (one level). Exactly one of dir/csv/manifest.
        csv: str | None. A CSV with a header ``path,label[,split]``; relative paths resolve against its folder.
        manifest: str | None. A ``manifest.csv`` saved by an earlier run, reused as is (no re-validation).
        image_size: int | None. Square input side; None means the architecture's default (the trainer fills it).
        resize: str. ``stretch`` (ignore aspect), ``crop`` (centre crop to the target aspect) or ``pad``
            (keep aspect, letterbox with black). Defaults to ``stretch``.
        split: SplitConfig. Fractions, seed and method of the split.
        augment: str | list. A preset (``none|light|standard|heavy``) or a list of ops such as
            ``[{flip: horizontal}, {rotation: 40}]``. Applied to the training split only. Defaults to ``none``.
        balance: str. ``none``, ``class-weight`` (balanced sample weights) or ``oversample`` (each training
            epoch draws classes equally). Defaults to ``none``.
        min_side: int. Images whose shorter side is below this are skipped. Defaults to 16.
        allow_outside: bool. Allow CSV paths that escape the CSV's folder. Defaults to False.
        batch_size: int. Defaults to 32.
        mixup: MixConfig | None. Mixup (Zhang et al. 2018) of training batches: pixels and labels of image pairs
            blended with one weight; in a cached stage the cached features are blended instead (manifold mixup
            at the cut, Verma et al. 2019: a different regulariser). Off when None. Defaults to None.
        cutmix: MixConfig | None. CutMix (Yun et al. 2019): a box of each image replaced by its partner's, the
            labels mixed by area; image batches only. Off when None. Defaults to None.
    """

    dir: str | None = None
    csv: str | None = None
    manifest: str | None = None
    image_size: int | None = None  # None: the architecture's default size
    resize: str = "stretch"
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: str | list = "none"
    balance: str = "none"
    min_side: int = 16
    allow_outside: bool = False  # CSV paths outside the CSV's folder are refused unless this is set
    batch_size: int = 32
    mixup: MixConfig | None = None  # images in uncached stages; the features at the cut in cached stages
    cutmix: MixConfig | None = None  # images only (uncached stages)

    @property
    def source(self) -> str:
        """The one source path that is set (dir, csv or manifest)."""
        return self.dir or self.csv or self.manifest or ""

    @property
    def source_kind(self) -> str:
        """``dir``, ``csv`` or ``manifest``."""
        return "dir" if self.dir else "csv" if self.csv else "manifest"

    def to_dict(self) -> dict:
        """Returns the section as plain YAML-safe types (for the resolved recipe)."""
        d = asdict(self)
        if not isinstance(self.augment, str):
            d["augment"] = [dict(op) if isinstance(op, dict) else op for op in self.augment]
        return d


# === model ===

@dataclass(frozen=True)
class HeadConfig:
    """The classification head put on top of the backbone (`model.head`).

    Keys:
        pooling: str. How the backbone's last feature map becomes a vector: `avg` or `max` (global pooling) or
            `flatten`. Defaults to "avg".
        dense: list of int. Widths of hidden Dense layers (ReLU) between pooling and the classifier; `[]` puts the
            classifier right after pooling. Defaults to [].
        dropout: float in [0, 1). Dropout rate after pooling and after each hidden layer; 0 adds no Dropout
            layer. Defaults to 0.0.
    """

    pooling: str = "avg"
    dense: tuple[int, ...] = ()  # empty: pooling -> final Dense(num_classes), the seeds' feature-extractor head
    dropout: float = 0.0  # 0 adds no Dropout layer at all (not a Dropout(0) layer)


@dataclass(frozen=True)
class SkipConfig:
    """One new skip connection (`model.skips[i]`), added with `surgery.add_skip` (DESIGN.md §5).

    Keys:
        from: str. Layer or block whose output feeds the new path (stored as `src`).
        to: str. Layer or block whose output the path is merged into (stored as `dst`); downstream of `from`.
        merge: str. `add` or `concat`. Defaults to "add".
    """

    src: str
    dst: str
    merge: str = "add"  # with the zero-initialised projection, `add` leaves the outputs unchanged before training


@dataclass(frozen=True)
class InsertConfig:
    """One block spliced into the backbone (`model.insert[i]`), with `surgery.insert_after`.

    Keys:
        after: str. Layer or block after which the block is inserted.
        block: str. `residual_inception` or `inception` (functions of `inceptune.blocks`).
            Defaults to "residual_inception".
        name: str. Name prefix of the new layers. Defaults to "<after>_<block>".
        params: mapping. Keyword arguments of the block function (`residual_inception`: filters, out_channels,
            scale, activation, zero_init; `inception`: filters_1x1, filters_3x3_reduce, filters_3x3,
            filters_5x5_reduce, filters_5x5, filters_pool). Defaults to {}.
    """

    after: str
    block: str = "residual_inception"  # keeps the channel count, so it can go anywhere in the backbone
    name: str | None = None  # filled in by the loader as "<after>_<block>"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """The model to fine-tune (`model:`).

    Keys:
        backbone: str. An architecture name (`inceptune backbones`), any `keras.applications` name, or a
            saved `.keras` file. Defaults to "inception_v3".
        weights: str or null. `imagenet`, `none` (random initialisation) or a weights file
            (`.weights.h5`, `.h5`, `.keras`). Defaults to "imagenet".
        image_size: int or null. Input side in pixels. Defaults to null: `data.image_size`, else the
            backbone's default size.
        head: mapping. See `HeadConfig`. Defaults to an average-pooling head with no hidden layer.
        skips: list of mappings `{from, to, merge}`. See `SkipConfig`. Defaults to [].
        insert: list of mappings `{after, block, name, params}`. See `InsertConfig`. Defaults to [].
        batchnorm: str. BatchNorm policy (DESIGN.md §4): `frozen` (BN layers never train and always use their
            moving statistics), `follow` (BN layers train when their block trains) or `train` (BN layers
            always train). Defaults to "frozen".
        cut: str or null. A block (or layer) of the backbone: the head is built on its output and every layer
            above it is dropped. Defaults to null: the whole backbone.
        features: list of str. Blocks whose outputs are each pooled and concatenated into the head, in the order
            listed (multi-level features); layers above the deepest one are dropped. Defaults to []: the
            backbone's (or the cut's) last output only.
        preprocess: str or null. How raw 0-255 pixels are scaled at the model's input, as the weights were
            trained: `tf` (x/127.5 - 1), `torch` (ImageNet mean/std), `caffe` (BGR minus ImageNet means),
            `none` (raw 0-255) or `unit` (x/255, the tutorials' `rescale=1./255`). Defaults to null: the
            backbone's own (`tf` for the Keras Inceptions).
    """

    backbone: str = "inception_v3"
    weights: str | None = "imagenet"  # None: random initialisation (`weights: none` in YAML)
    image_size: int | None = None  # None: data.image_size, else the backbone's default (299 for inception_v3)
    head: HeadConfig = field(default_factory=HeadConfig)
    skips: tuple[SkipConfig, ...] = ()
    insert: tuple[InsertConfig, ...] = ()
    batchnorm: str = "frozen"  # small fine-tuning batches give noisy batch statistics: keep ImageNet's
    cut: str | None = None  # None: the whole backbone
    features: tuple[str, ...] = ()  # empty: one pooled output (the backbone's last block, or the cut)
    preprocess: str | None = None  # None: the architecture's own scaling (ArchSpec.preprocess)


# === stages ===

@dataclass(frozen=True)
class EarlyStopping:
    """Early stopping for one stage (`stages[i].early_stopping`); `true` means all defaults, `null` none.

    Keys:
        monitor: str. The metric watched, as Keras logs it. Defaults to "val_loss".
        patience: int >= 0. Epochs without improvement before the stage stops. Defaults to 3.
        min_delta: float >= 0. Smallest change counted as an improvement. Defaults to 0.0.
        restore_best: bool. Restore the weights of the best epoch when the stage ends. Defaults to true.
    """

    monitor: str = "val_loss"
    patience: int = 3  # Keras's default 0 stops at the first noisy epoch
    min_delta: float = 0.0
    restore_best: bool = True  # unlike Keras's default, so a stage hands its best weights to the next one


@dataclass(frozen=True)
class EmaConfig:
    """An exponential moving average of the stage's trainable weights (`stages[i].ema`); `true`: the defaults.

    Keys:
        decay: float in (0, 1). After every step, ema = decay * ema + (1 - decay) * weights. Defaults to 0.999
            (averages about the last 1000 steps; use 0.99 for short stages).
    """

    decay: float = 0.999


@dataclass(frozen=True)
class Stage:
    """One stage of staged fine-tuning (`stages[i]`): what trains, for how long, and how fast.

    Everything the `train` selector does not select is frozen for the stage. The stage runner recompiles the
    model at the start of each stage.

    Keys:
        name: str of letters, digits, `_`, `-`, `.`. Used in history.csv and checkpoint names.
            Defaults to "stage<i>".
        train: str (selector, DESIGN.md §3) or a list of selectors (their union). Required.
        epochs: int >= 0. Defaults to 5.
        lr: float > 0. Base learning rate (peak, after warmup). Defaults to 1.0e-3 (right for a new head; use
            about a tenth of it for stages that train backbone blocks).
        optimizer: str. `adam`, `adamw` or `sgd`. Defaults to "adam".
        weight_decay: float >= 0 or null. Defaults to null: the optimizer's own default.
        momentum: float in [0, 1). Momentum of `sgd` (ignored by the others). Defaults to 0.9.
        schedule: str. `constant`, `cosine` (from lr down to 0 over `decay_steps`) or `exponential`
            (lr * decay_rate ** (step / decay_steps), Keras's `ExponentialDecay`). Defaults to "constant".
        decay_rate: float in (0, 1]. Factor of the exponential schedule. Defaults to 0.9.
        decay_steps: int > 0 or null. Steps of one decay period. Defaults to null: one epoch for
            `exponential`, the whole stage after warmup for `cosine`.
        warmup_epochs: int in [0, epochs]. Linear warmup from 0 to lr. Defaults to 0.
        lr_mult: mapping selector -> factor >= 0. Scales the learning rate of those layers' variables
            (discriminative learning rates); later entries win where selectors overlap; 0 freezes the
            variables while keeping their layers' training-mode behaviour. Defaults to {}.
        early_stopping: mapping, true or null. See `EarlyStopping`. Defaults to null (no early stopping).
        batch_size: int > 0 or null. Defaults to null: the data section's batch size.
        label_smoothing: float in [0, 0.3]. Targets become (1 - s) on the class and s / K spread over all K
            classes (Keras's `CategoricalCrossentropy(label_smoothing=s)`). Defaults to 0.
        clip_norm: float > 0 or null. Gradients are rescaled so that their global norm is at most this (Keras's
            `global_clipnorm`). Defaults to null: no clipping.
        ema: mapping, true or null. See `EmaConfig`. Defaults to null (no EMA).
    """

    name: str
    train: str
    epochs: int = 5
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float | None = None  # None: Keras's default for the optimizer (adamw: 0.004; adam, sgd: none)
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"
    decay_rate: float = 0.9  # exponential only; the seeds' ExponentialDecay(..., decay_rate=0.9)
    decay_steps: int | None = None  # None: one epoch (exponential) / the whole stage after warmup (cosine)
    warmup_epochs: int = 0
    lr_mult: dict[str, float] = field(default_factory=dict)  # selector -> factor; unlisted variables use 1
    early_stopping: EarlyStopping | None = None
    batch_size: int | None = None  # None: the data section's batch size
    label_smoothing: float = 0.0
    clip_norm: float | None = None  # None: no gradient clipping
    ema: EmaConfig | None = None  # None: no weight EMA


# === cache and the whole recipe ===

@dataclass(frozen=True)
class CacheConfig:
    """The frozen-prefix feature cache (`cache:`): `auto`, `off`, or a mapping with these keys.

    Keys:
        mode: str. `auto` (cache the output of the frozen prefix when a stage trains only layers after it) or
            `off`. Defaults to "auto".
        views: int >= 1. Augmented views of each training image encoded into the cache; epochs cycle through
            them. 1 encodes the un-augmented image only. Defaults to 1.
        dtype: str. `float32` or `float16` (half the memory). Defaults to "float32".
        memory_budget_mb: number > 0 or null. Most memory the cached features may take. Defaults to null:
            the cache module decides.
    """

    mode: str = "auto"
    views: int = 1  # 1: no augmentation in cached stages (each extra view costs one more pass of the prefix)
    dtype: str = "float32"
    memory_budget_mb: float | None = None  # None: cache.py decides from the available memory


@dataclass(frozen=True)
class DistributeConfig:
    """Data-parallel training on several devices or machines (`distribute:`; `inceptune.distribute`).

    Keys:
        strategy: str. `none` (one device), `auto` (`mirrored` when more than one GPU is visible, else `none`),
            `mirrored` (tf.distribute.MirroredStrategy: the devices of one machine), `multi-worker`
            (tf.distribute.MultiWorkerMirroredStrategy: the machines named by the `TF_CONFIG` environment
            variable) or `jax-data-parallel` (refused: not implemented). Defaults to "none".
        devices: list of str. The devices `mirrored` replicates the model on, e.g. [GPU:0, GPU:1]. Defaults to
            []: every visible GPU (the CPU when there is none).
        scale_lr: str. `none` (every stage's lr is used as written) or `linear` (multiplied by the number of
            replicas: the rule for an lr tuned for one device's batch when the global batch grew with the
            replicas). Defaults to "none".

    `data.batch_size` (and `stages[i].batch_size`) is the global batch: each of R replicas computes batch / R.
    """

    strategy: str = "none"
    devices: tuple[str, ...] = ()  # empty: MirroredStrategy's own choice (all GPUs, else the CPU)
    scale_lr: str = "none"  # never rescaled silently: `linear` must be asked for


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (DESIGN.md §6). Build it with `load_recipe`; write it with `dump_recipe`.

    Keys:
        data: see `DataConfig`. Required.
        model: see `ModelConfig`. Defaults to all of `ModelConfig`'s defaults.
        stages: non-empty list of stages, names unique. See `Stage`. Required.
        cache: see `CacheConfig`. Defaults to "auto".
        seed: int in [0, 2**32). Seeds splits, initialisation and shuffling. Defaults to 0.
        calibrate: str. `temperature` (after training, one temperature is fitted on the validation split and
            built into the saved model as its last layers) or `none`. Defaults to "temperature".
        precision: str. `float32`, `mixed_float16` or `mixed_bfloat16` (Keras mixed-precision policy: layers
            compute in 16 bits, weights stay float32, the head's output layer computes in float32). Defaults to
            "float32".
        distribute: see `DistributeConfig`. Defaults to strategy none (one device).
    """

    data: DataConfig
    model: ModelConfig
    stages: tuple[Stage, ...]
    cache: CacheConfig = field(default_factory=CacheConfig)
    seed: int = 0
    calibrate: str = "temperature"  # the argmax never changes, so accuracy is untouched; needs a validation split
    precision: str = "float32"  # refused at the start of a run where the device cannot compute in it
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
