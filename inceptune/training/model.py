"""The model of a run and the compile step of each stage: build the classifier, freeze per stage, optimizers.

Imports Keras: `inceptune.training` is loaded when a run starts (the CLI imports it inside `inceptune train`).
"""

from __future__ import annotations

import keras

from inceptune import freezing, surgery
from inceptune.architectures import ARCHITECTURES, load_backbone
from inceptune.choices import OPTIMIZERS
from inceptune.errors import RecipeError
from inceptune.heads import build_classifier
from inceptune.schedules import scale_updates
from inceptune.selectors import resolve

__all__ = ["resolve_image_size", "build_model", "stage_lr_multipliers", "make_optimizer", "compile_stage"]


def resolve_image_size(recipe) -> int:
    """The input side of a recipe's model: `model.image_size`, else `data.image_size`, else the backbone's."""
    size = recipe.model.image_size or recipe.data.image_size
    if size:
        return int(size)
    spec = ARCHITECTURES.get(recipe.model.backbone)
    return spec.default_size if spec else 224


def build_model(model_cfg, num_classes: int, image_size: int, *, seed: int = 0):
    """Builds the recipe's classifier: backbone → preprocessing → head, then skips and inserted blocks.

    Args:
        model_cfg: the recipe's `ModelConfig`. num_classes: int. image_size: int. seed: int.

    Returns:
        A flat functional keras.Model.
    """
    keras.utils.set_random_seed(seed)
    backbone = load_backbone(model_cfg.backbone, weights=model_cfg.weights, image_size=image_size)
    model = build_classifier(backbone, num_classes, head=model_cfg.head)
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
    if stage.weight_decay is not None:
        kwargs["weight_decay"] = float(stage.weight_decay)
    if stage.optimizer == "adam":
        return keras.optimizers.Adam(**kwargs)
    if stage.optimizer == "adamw":
        return keras.optimizers.AdamW(**kwargs)
    if stage.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=float(stage.momentum), **kwargs)
    raise RecipeError(f"unknown optimizer {stage.optimizer!r}. Allowed: {', '.join(OPTIMIZERS)}.")


def compile_stage(model, stage, *, batchnorm: str = "frozen", bmap=None):
    """Applies a stage's `train` selector and the BatchNorm policy, then compiles with the stage's optimizer.

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
    optimizer = make_optimizer(stage)
    mult = stage_lr_multipliers(model, stage, bmap) if stage.lr_mult else {}
    scale_updates(optimizer, mult, model.trainable_variables)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return report, optimizer
