"""Models from the registry: build a new one by family name, or rebuild one from its checkpoint.

    built = build("effnet", num_classes=3, pretrained="lite0-imagenet")   # a new model + its record
    ckpt = load("checkpoints/effnet.safetensors")                         # from the file alone

The factory stands above the three things it joins, as timm's `_factory.create_model` stands above
its registry and its checkpoint helpers: the registry (vit.models.families) says how a family is built,
the builders (vit.models.zoo) build it, the file format (vit.models.checkpoint) holds the record and the weights.
None of those three imports this module.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vit.models import families
from vit.models.checkpoint import Checkpoint, CheckpointError, load_weights
from vit.models.checkpoint import read_meta as _read_meta

if TYPE_CHECKING:
    from torch import nn

    from vit.models.zoo import Built


def build(family: str, arch: dict | None = None, *, num_classes: int, pretrained: str | None = None) -> Built:
    """Build a model of any registered family (vit.models.families). `arch` holds the family's architecture
    arguments (its default if None); `pretrained` is None (random), "lite0-imagenet" or "timm-hub"."""
    spec = families.get(family)
    arch = dict(spec.default_arch if arch is None else arch, num_classes=num_classes)
    built = spec.build(arch, num_classes, pretrained)
    built.family = family
    return built


def preprocessing(model: nn.Module, family: str) -> dict:
    """The model's own eval preprocessing as a JSON-ready timm data config (the family says how)."""
    return families.get(family).preprocessing_for(model)


def read_meta(path: str | os.PathLike) -> dict:
    """A checkpoint's metadata record alone (no weights, no timm), its family checked against the registry."""
    return _read_meta(path, families.names())


def load(path: str | os.PathLike, *, expect_family: str | None = None, lazy: bool = False) -> Checkpoint:
    """Rebuild the model from the file alone and load its weights (fp32, eval mode). `lazy`: read and
    validate the metadata now, build the model when `.model` is first used."""
    path = Path(path)
    meta = read_meta(path)
    if expect_family is not None and meta["family"] != expect_family:
        raise CheckpointError(f"{path}: holds a {meta['family']} model, expected {expect_family}")
    ckpt = Checkpoint(meta, path, build=lambda: _model(path, meta))
    if not lazy:
        ckpt.model  # noqa: B018 - builds it, raising CheckpointError here
    return ckpt


def _model(path: Path, meta: dict) -> nn.Module:
    model = build(meta["family"], meta["arch"], num_classes=len(meta["class_names"])).model
    return load_weights(model, path, meta["family"])
