"""Tests for inceptune.recipe.data_section: the recipe's `data:` section, validated like every other section."""

from __future__ import annotations

import dataclasses

import pytest

from inceptune.errors import RecipeError
from inceptune.recipe import DataConfig, SplitConfig, data_config_from_dict


def test_data_config_defaults_and_parsing():
    cfg = data_config_from_dict({"dir": "imgs"})
    assert cfg == DataConfig(dir="imgs")
    assert (cfg.resize, cfg.balance, cfg.augment, cfg.min_side, cfg.batch_size) == ("stretch", "none", "none", 16, 32)
    assert cfg.split == SplitConfig(val=0.15, test=0.15, seed=0, method="stable-hash")
    cfg = data_config_from_dict({
        "csv": "a.csv", "image_size": 299, "resize": "pad", "split": {"val": 0.1, "test": 0, "method": "stratified"},
        "augment": [{"flip": "horizontal"}, {"rotation": 40}], "balance": "oversample", "allow_outside": True,
    })
    assert cfg.split == SplitConfig(val=0.1, test=0.0, seed=0, method="stratified")
    assert cfg.augment == [{"flip": "horizontal"}, {"rotation": 40}]
    assert cfg.to_dict()["split"] == {"val": 0.1, "test": 0.0, "seed": 0, "method": "stratified"}


@pytest.mark.parametrize("cls", [DataConfig, SplitConfig])
def test_documented_defaults_match_the_dataclass(cls):
    import re

    args = cls.__doc__.split("Args:")[1]
    entries = re.split(r"\n {8}(?=\w+: )", args)
    documented = {}
    for e in entries:
        m = re.match(r"(\w+): .*?Defaults to\s+(.+?)\.(?:\s|$)", e.strip(), re.S)
        if m:
            documented[m.group(1)] = m.group(2).strip("`")
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    assert len(documented) == {DataConfig: 8, SplitConfig: 4}[cls]
    assert all(str(defaults[k]) == v for k, v in documented.items()), (documented, defaults)


@pytest.mark.parametrize("d, message", [
    ({"dir": "x", "split": {"val": "x"}}, 'data.split.val: expected a number between 0 and 1, got "x".'),
    ({"dir": "x", "splt": {}}, 'data.splt: unknown key "splt" in `data`. Allowed keys: dir, csv, manifest, '
                               "image_size, resize, split, augment, balance, min_side, allow_outside, batch_size, "
                               'mixup, cutmix. HINT: did you mean "split"?'),
    ({"dir": "x", "csv": "y"}, "data: expected exactly one of dir, csv or manifest, got dir, csv"),
    ({"image_size": 299}, "data: expected exactly one of dir, csv or manifest, got none of them"),
    ({"dir": "x", "image_size": True}, "data.image_size: expected a whole number >= 1, got true. HINT: the input "
                                       "side in pixels, e.g. 299, or null for the backbone's default."),
    ({"dir": "x", "balance": "class_weight"}, 'data.balance: unknown balance mode "class_weight". Allowed: none, '
                                              'class-weight, oversample. HINT: did you mean "class-weight"?'),
    ({"dir": "x", "split": {"method": "hash"}}, 'data.split.method: unknown split method "hash". Allowed: '
                                                'stable-hash, stratified.'),
    ({"dir": "x", "split": {"val": 0.5, "test": 0.5}}, "data.split: val + test must leave images for training"),
    ({"dir": "x", "augment": "strong"}, 'data.augment: expected a preset none | light | standard | heavy or a list'),
    ({"dir": "x", "augment": [{"rotate": 40}]}, 'data.augment[0].rotate: unknown augmentation op "rotate". Allowed: '
                                                "flip, rotation, translation, zoom, shear, contrast, brightness. "
                                                'HINT: did you mean "rotation"?'),
    ({"dir": "x", "augment": [{"rotation": 400}]}, "data.augment[0].rotation: expected maximum angle in degrees, "
                                                   "e.g. 40, got 400"),
    ({"dir": "x", "allow_outside": "yes"}, 'data.allow_outside: expected true or false, got "yes"'),
    ({"dir": "x", "augment": [{"rotation": {"degres": 40}}]}, "data.augment[0].rotation: expected a mapping "
                                                             "{degrees: ...} with an optional fill_mode, got "
                                                             '{"degres": 40}'),
    ({"dir": "x", "batch_size": 0}, "data.batch_size: expected a whole number >= 1, got 0."),  # as stages[i].batch_size
])
def test_data_config_errors_name_the_key(d, message):
    with pytest.raises(RecipeError) as e:
        data_config_from_dict(d)
    assert str(e.value).startswith(message), str(e.value)
    assert message.startswith(e.value.key + ":")  # the key path travels with the error (for --set blame)
