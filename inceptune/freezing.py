"""Freezing: apply a selector as a freeze plan, the BatchNorm policy, and the trainable report.

BatchNorm in Keras 3 (measured here, see README "BatchNorm, measured"): a BatchNormalization layer uses batch
statistics and updates its moving mean/variance only when it is called with `training=True` *and* the layer is
trainable. `training=False` passed when a functional model is built does not stick: `fit()` calls the whole
model with `training=True`, so once the layer is unfrozen its moving statistics drift. The only reliable way to
keep a BN layer in inference mode is `layer.trainable = False`, which is what the `frozen` policy does.

Changing `trainable` takes effect in training only after the model is (re)compiled: the stage runner recompiles
between stages; Python users must call `model.compile(...)` after `freeze`/`unfreeze`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import keras
import numpy as np

from inceptune.architectures import PREPROCESS_LAYER, BlockMap, block_map
from inceptune.choices import BATCHNORM_POLICIES
from inceptune.errors import SelectorError
from inceptune.footguns import freeze_warnings, warn_all
from inceptune.selectors import resolve

__all__ = ["freeze", "unfreeze", "apply_trainable", "FreezeReport", "BlockRow", "BATCHNORM_POLICIES", "report"]

# frozen: every BatchNormalization layer stays trainable=False (inference mode, moving statistics fixed), even
#         inside unfrozen blocks. The safe default for fine-tuning on small data.
# follow: BN layers follow their selection like any other layer.
# train:  BN layers always train (batch statistics, moving statistics updated), even in frozen blocks.


def _count(variables) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def _is_bn(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


@dataclass(frozen=True)
class BlockRow:
    """One block of a `FreezeReport`."""

    block: str
    layers: int
    output_shape: str
    trainable_params: int
    frozen_params: int
    # "trainable" (every weighted layer but policy-frozen BN trains), "frozen", "partial" or "-" (no weights)
    state: str


@dataclass(frozen=True)
class FreezeReport:
    """What trains, per block.

    Attributes:
        model: model name. selector: the plan applied, verb included ("freeze through:mixed7", "train head"),
            or "" for a report of the flags as they are. batchnorm: the policy.
        blocks: per-block rows in graph order. trainable_params / frozen_params / total_params: totals (frozen
            counts every non-trainable variable, BatchNorm moving statistics included, so the two add up to
            `model.count_params()`).
        warnings: texts of warnings raised while selecting (e.g. a positional cut splitting a block).
    """

    model: str
    selector: str
    batchnorm: str
    blocks: tuple[BlockRow, ...]
    trainable_params: int
    frozen_params: int
    total_params: int
    warnings: tuple[str, ...] = ()
    layers: tuple[dict, ...] = field(default=(), repr=False)

    def to_dict(self, layers: bool = False) -> dict:
        d = asdict(self)
        d["blocks"] = [asdict(b) for b in self.blocks]
        d["layers"] = list(self.layers) if layers else []
        if not layers:
            d.pop("layers")
        return d

    def to_json(self, layers: bool = False, indent: int = 2) -> str:
        return json.dumps(self.to_dict(layers=layers), indent=indent)

    def block(self, name: str) -> BlockRow:
        for b in self.blocks:
            if b.block == name:
                return b
        raise KeyError(name)

    def __str__(self) -> str:
        head = ("block", "layers", "output shape", "trainable", "frozen", "state")
        rows = [(b.block, str(b.layers), b.output_shape, f"{b.trainable_params:,}", f"{b.frozen_params:,}", b.state)
                for b in self.blocks]
        rows.append(("total", str(sum(b.layers for b in self.blocks)), "", f"{self.trainable_params:,}",
                     f"{self.frozen_params:,}", ""))
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        right = {1, 3, 4}

        def fmt(r):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

        plan = self.selector or "trainable flags as set"  # "freeze through:mixed7", "train head"
        if self.batchnorm:
            plan += f", batchnorm: {self.batchnorm}"
        lines = [f"{self.model}  ({plan})", fmt(head), "  ".join("-" * w for w in widths)]
        lines += [fmt(r) for r in rows[:-1]] + ["  ".join("-" * w for w in widths), fmt(rows[-1])]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def report(model, *, selector: str = "", batchnorm: str = "", bmap: BlockMap | None = None,
           warnings: tuple[str, ...] = ()) -> FreezeReport:
    """Builds a `FreezeReport` of the model's current trainable flags (no change made)."""
    bmap = bmap or block_map(model)
    layers = {layer.name: layer for layer in model.layers}
    model_trainable = model.trainable
    rows, layer_rows = [], []
    for blk in bmap.order:
        members = [layers[n] for n in bmap.members[blk] if n in layers]
        t = f = 0
        weighted, training = 0, 0
        for layer in members:
            lt = _count(layer.trainable_weights) if model_trainable else 0
            lf = _count(layer.weights) - lt
            t, f = t + lt, f + lf
            if layer.weights and not (_is_bn(layer) and batchnorm == "frozen") and layer.name != PREPROCESS_LAYER:
                weighted += 1
                training += bool(lt)
            layer_rows.append({"name": layer.name, "type": type(layer).__name__, "block": blk,
                               "trainable": bool(layer.trainable and model_trainable), "trainable_params": lt,
                               "frozen_params": lf})
        state = "-" if not weighted else ("trainable" if training == weighted else "frozen" if not t else "partial")
        out_layer = layers.get(bmap.outputs.get(blk, ""))
        shape = ""
        if out_layer is not None:
            try:
                shape = "x".join("?" if d is None else str(d) for d in out_layer.output.shape[1:])
            except (AttributeError, ValueError):
                shape = ""
        rows.append(BlockRow(blk, len(members), shape, t, f, state))
    trainable = sum(r.trainable_params for r in rows)
    frozen = sum(r.frozen_params for r in rows)
    return FreezeReport(model.name, selector, batchnorm, tuple(rows), trainable, frozen, trainable + frozen,
                        tuple(warnings), tuple(layer_rows))


def _check_policy(batchnorm: str) -> None:
    if batchnorm not in BATCHNORM_POLICIES:
        raise SelectorError(f"unknown BatchNorm policy {batchnorm!r}. Allowed: {', '.join(BATCHNORM_POLICIES)}. "
                            "HINT: 'frozen' keeps every BatchNormalization layer in inference mode (the safe "
                            "default).")


def apply_trainable(model, trainable: set[str], *, batchnorm: str = "frozen", selector: str = "",
                    bmap: BlockMap | None = None, warnings: tuple[str, ...] = ()) -> FreezeReport:
    """Makes exactly the layers named in `trainable` trainable, then applies the BatchNorm policy.

    The preprocessing layer never trains. Recompile the model afterwards for training to see the change.

    Returns:
        A `FreezeReport`.
    """
    _check_policy(batchnorm)
    bmap = bmap or block_map(model)
    model.trainable = True  # Keras propagates this to every layer; then set each one.
    for layer in model.layers:
        flag = layer.name in trainable
        if _is_bn(layer) and batchnorm != "follow":
            flag = batchnorm == "train"
        if layer.name == PREPROCESS_LAYER or isinstance(layer, keras.layers.InputLayer):
            flag = False
        layer.trainable = flag
    return report(model, selector=selector, batchnorm=batchnorm, bmap=bmap, warnings=warnings)


def freeze(model, selector: str = "all", *, batchnorm: str = "frozen") -> FreezeReport:
    """Freezes the selected layers and makes every other layer trainable.

    Args:
        model: keras.Model. A backbone or a flat classifier.
        selector: str. Which layers to freeze (DESIGN.md §3), e.g. "through:mixed7". Defaults to "all".
        batchnorm: str. BatchNorm policy: "frozen", "follow" or "train". Defaults to "frozen".

    Returns:
        A `FreezeReport`; `print(report)` shows the per-block table.

    Note:
        Recompile the model (`model.compile(...)`) before training: Keras reads trainable flags at compile time.

    Example:
        >>> report = freeze(base, "through:mixed7")
        >>> report.block("mixed8").state
        'trainable'
    """
    _check_policy(batchnorm)
    bmap = block_map(model)
    warns: list[str] = []
    frozen = resolve(model, selector, bmap=bmap, warnings_out=warns)
    trainable = {layer.name for layer in model.layers} - frozen
    found = freeze_warnings(model, selector, trainable, batchnorm=batchnorm, bmap=bmap, verb="freeze")
    warn_all(found)  # weightless terms, BatchNorm that will update its statistics (docs/from-snippets.md)
    warns += found
    return apply_trainable(model, trainable, batchnorm=batchnorm, selector=f"freeze {selector}", bmap=bmap,
                           warnings=tuple(warns))


def unfreeze(model, selector: str = "all", *, batchnorm: str = "frozen") -> FreezeReport:
    """Makes the selected layers trainable and freezes every other layer (the reverse of `freeze`).

    Args:
        model: keras.Model.
        selector: str. Which layers train, e.g. "head,from:mixed9". Defaults to "all".
        batchnorm: str. BatchNorm policy: "frozen", "follow" or "train". Defaults to "frozen".

    Returns:
        A `FreezeReport`. Recompile the model before training.
    """
    _check_policy(batchnorm)
    bmap = block_map(model)
    warns: list[str] = []
    trainable = resolve(model, selector, bmap=bmap, warnings_out=warns)
    found = freeze_warnings(model, selector, trainable, batchnorm=batchnorm, bmap=bmap, verb="unfreeze")
    warn_all(found)  # ... and an unfreeze of layers that are trainable already
    warns += found
    return apply_trainable(model, trainable, batchnorm=batchnorm, selector=f"train {selector}", bmap=bmap,
                           warnings=tuple(warns))
