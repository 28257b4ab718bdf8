"""The model of a run and the compile step of each stage: build the classifier, freeze per stage, optimizers.

Imports Keras: `inceptune.training` is loaded when a run starts (the CLI imports it inside `inceptune train`).
"""

from __future__ import annotations

import contextlib

import keras

from inceptune import conv_grads, freezing, surgery
from inceptune.architectures import ARCHITECTURES, load_backbone
from inceptune.choices import OPTIMIZERS
from inceptune.cut import cut_backbone, deepest
from inceptune.errors import RecipeError
from inceptune.heads import build_classifier
from inceptune.schedules import scale_updates
from inceptune.selectors import resolve
from inceptune.training import fused_adam

__all__ = ["resolve_image_size", "build_model", "stage_lr_multipliers", "make_optimizer", "compile_stage",
           "stage_loss", "precision_policy", "check_precision"]


def resolve_image_size(recipe) -> int:
    """The input side of a recipe's model: `model.image_size`, else `data.image_size`, else the backbone's."""
    size = recipe.model.image_size or recipe.data.image_size
    if size:
        return int(size)
    spec = ARCHITECTURES.get(recipe.model.backbone)
    return spec.default_size if spec else 224


def build_model(model_cfg, num_classes: int, image_size: int, *, seed: int = 0):
    """Builds the recipe's classifier: backbone (cut at `model.cut`) → preprocessing → head (on `model.features`
    when set), then skips and inserted blocks.

    Args:
        model_cfg: the recipe's `ModelConfig`. num_classes: int. image_size: int. seed: int.

    Returns:
        A flat functional keras.Model.
    """
    keras.utils.set_random_seed(seed)
    backbone = load_backbone(model_cfg.backbone, weights=model_cfg.weights, image_size=image_size)
    # `model.cut` / `model.features`: drop the layers above the cut (or above the deepest tapped block)
    at = deepest(backbone, model_cfg.features) if model_cfg.features else model_cfg.cut
    if at is not None:
        backbone = cut_backbone(backbone, at, key="model.features" if model_cfg.features else "model.cut")
    # the runner feeds its own 0-255 pipeline: no first-batch range check (check_inputs) on every epoch's fit
    model = build_classifier(backbone, num_classes, head=model_cfg.head, features=model_cfg.features or None,
                             preprocess=model_cfg.preprocess, check_inputs=False, consume_backbone=True)
    for skip in model_cfg.skips:
        model = surgery.add_skip(model, skip.src, skip.dst, merge=skip.merge)
    for ins in model_cfg.insert:
        model = surgery.insert_after(model, ins.after, ins.block, name=ins.name, **dict(ins.params))
    return model


def stage_lr_multipliers(model, stage, bmap=None) -> dict[str, float]:
    """Maps variable paths to the stage's `lr_mult` factors (later selectors win where they overlap)."""
    out: dict[str, float] = {}
    layers = {layer.name: layer for layer in model.layers}
    for selector, factor in stage.lr_mult.items():
        for name in resolve(model, selector, bmap=bmap):
            for v in layers[name].trainable_weights:
                out[v.path] = float(factor)
    return out


def make_optimizer(stage):
    """The Keras optimizer of a stage (its learning rate is set per step by the trainer)."""
    kwargs = {"learning_rate": float(stage.lr)}
    if getattr(stage, "clip_norm", None) is not None:  # `stages[i].clip_norm`: the global norm of all gradients
        kwargs["global_clipnorm"] = float(stage.clip_norm)
    if stage.weight_decay is not None:
        kwargs["weight_decay"] = float(stage.weight_decay)
    if stage.optimizer in ("adam", "adamw"):
        optimizer = (keras.optimizers.Adam if stage.optimizer == "adam" else keras.optimizers.AdamW)(**kwargs)
        fused_adam.fuse(optimizer)  # its update in one TensorFlow kernel per variable
        return optimizer
    if stage.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=float(stage.momentum), **kwargs)
    raise RecipeError(f"unknown optimizer {stage.optimizer!r}. Allowed: {', '.join(OPTIMIZERS)}.")


def stage_loss(stage, soft_labels: bool | None = None):
    """The loss and metrics of a stage: sparse cross-entropy on class ids, or, with label smoothing, mixup or
    CutMix, Keras's `CategoricalCrossentropy(label_smoothing=...)` on one-hot (or mixed) targets.

    Args:
        stage: the recipe's Stage. soft_labels: bool or None. Targets are one-hot; None: when label smoothing
            is on.

    Returns:
        (loss, metrics) for `model.compile`.
    """
    smoothing = float(getattr(stage, "label_smoothing", 0.0) or 0.0)
    if soft_labels is None:
        soft_labels = smoothing > 0
    if not soft_labels:
        return "sparse_categorical_crossentropy", ["accuracy"]
    return (keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
            [keras.metrics.CategoricalAccuracy(name="accuracy")])


def compile_stage(model, stage, *, batchnorm: str = "frozen", bmap=None, soft_labels: bool | None = None):
    """Applies a stage's `train` selector and the BatchNorm policy, then compiles with the stage's optimizer.

    Under a `mixed_float16` model the optimizer is wrapped in Keras's `LossScaleOptimizer` here (Keras would do
    it inside `compile`), so the returned optimizer's variables include the loss scale and a checkpoint holds it.

    Args:
        soft_labels: bool or None. Train on one-hot targets (see `stage_loss`). Defaults to None: when the stage
            smooths labels.

    Returns:
        (FreezeReport, optimizer).
    """
    warns: list[str] = []
    selected = resolve(model, stage.train, bmap=bmap, warnings_out=warns)
    if not selected:
        raise RecipeError(
            f"stages[{stage.name}].train: the selector {stage.train!r} matches no layer of {model.name!r}. "
            f"HINT: `inceptune inspect {model.name.replace('_classifier', '')}` lists the blocks; 'head' trains the "
            "new head.")
    report = freezing.apply_trainable(model, selected, batchnorm=batchnorm, selector=f"train {stage.train}", bmap=bmap,
                                      warnings=tuple(warns))
    if report.trainable_params == 0:
        raise RecipeError(
            f"stage {stage.name!r}: train={stage.train!r} selects only layers without trainable weights under "
            f"batchnorm={batchnorm!r}, so nothing would train. HINT: select layers with weights (e.g. 'head').")
    conv_grads.install(model)  # the trained convolutions' kernel gradients as one matrix product, where it pays
    optimizer = make_optimizer(stage)
    mult = stage_lr_multipliers(model, stage, bmap) if stage.lr_mult else {}
    scale_updates(optimizer, mult, model.trainable_variables)
    if model.dtype_policy.name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    loss, metrics = stage_loss(stage, soft_labels)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return report, optimizer


# === precision ===

@contextlib.contextmanager
def precision_policy(name: str):
    """Builds layers under the Keras dtype policy `name` within the block (the global policy comes back after:
    the layers keep theirs, and the head's output layer is float32 whatever the policy)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_precision(name: str) -> str | None:
    """Trains one step of a tiny convolutional model under the policy `name` on the default device, to find out
    before the run whether the device computes in it.

    Returns:
        None for float32 or on a GPU/TPU; on a CPU, a note that the policy runs but brings no speed-up.

    Raises:
        RecipeError: (key `precision`) the device has no kernels for the policy's compute type.
    """
    if name == "float32":
        return None
    import numpy as np

    try:
        with precision_policy(name):
            inp = keras.Input((8, 8, 3))
            x = keras.layers.Conv2D(4, 3)(inp)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.GlobalAveragePooling2D()(x)
            out = keras.layers.Dense(2, activation="softmax", dtype="float32")(x)
            probe = keras.Model(inp, out)
        probe.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        probe.train_on_batch(np.zeros((2, 8, 8, 3), "float32"), np.zeros(2, "int32"))
    except Exception as exc:  # noqa: BLE001 - any failure here means this device cannot train in the policy
        devices = ", ".join(sorted({d.device_type for d in _devices()})) or "unknown"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RecipeError(
            f"precision: {name} cannot run on this machine's devices ({devices}): a training step in it failed "
            f"with {type(exc).__name__}: {first}. HINT: use precision: float32 here; mixed_float16 needs a GPU "
            "with float16 support (compute capability 7.0 or newer to be faster), mixed_bfloat16 a TPU, a recent "
            "GPU or a CPU with bfloat16 kernels.", key="precision") from exc
    if not any(d.device_type in ("GPU", "TPU") for d in _devices()):
        return (f"{name} runs on this CPU (TensorFlow has CPU kernels for it), but expect no speed-up: CPUs lack "
                "the 16-bit matrix units that make it fast on GPUs and TPUs (benchmarks/precision.py measures it)")
    return None


def _devices():
    try:
        import tensorflow as tf

        return tf.config.list_logical_devices()
    except Exception:  # noqa: BLE001
        return []
