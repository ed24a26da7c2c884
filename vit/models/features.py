"""Penultimate features: what the classifier's last Linear reads, computed in the same pass as the logits.

timm models split their forward as `forward_features` + `forward_head(x, pre_logits=True)` (the
pooled, normalised vector the head reads); our ViT (vit/models/scratch_vit.py) has the same split, its features
being the class token (and, for a distilled model, the distillation token beside it) after the final
LayerNorm (Eq. 4).
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from tqdm import tqdm

from vit.data.images import open_image
from vit.data.preprocess import eval_transform
from vit.models.scratch_vit import VisionTransformer

log = logging.getLogger(__name__)


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> logits (B, classes) and penultimate features (B, D), from one forward pass."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: its module's methods
    if isinstance(model, VisionTransformer):
        tokens = model.forward_features(x)[0]  # (B, N, D)
        features = tokens[:, :model.cfg.num_prefix_tokens].flatten(1)  # (B, D) or (B, 2D) distilled
        return model.forward_head(tokens), features
    if not hasattr(model, "forward_head"):
        raise TypeError(f"{type(model).__name__} has no forward_features / forward_head split")
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)  # (B, D)
    return model.get_classifier()(pooled), pooled


class WithFeatures(nn.Module):
    """model -> (logits, features): one traceable module for the ONNX export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits_and_features(self.model, x)


@torch.inference_mode()
def extract(model: nn.Module, samples: list, preprocessing: dict, *, batch_size: int = 32
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (N, C), features (N, D) and labels (N,) of ImageFolder `samples` (vit.data.datasets.Sample),
    each photo prepared by the model's own eval transform."""
    transform = eval_transform(preprocessing)
    model.eval()
    logits, features = [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="features", leave=False, disable=len(samples) < 64):
        batch = [transform(open_image(s.path)) for s in samples[start:start + batch_size]]  # as a request
        lo, fe = logits_and_features(model, torch.stack(batch))
        logits.append(lo.float())
        features.append(fe.float())
    labels = torch.tensor([s.label for s in samples])
    return torch.cat(logits), torch.cat(features), labels


@torch.inference_mode()
def extract_images(model: nn.Module, images: list, preprocessing: dict, *, batch_size: int = 32
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and features of PIL images (the non-food set), prepared as the samples are."""
    transform = eval_transform(preprocessing)
    model.eval()
    out = [logits_and_features(model, torch.stack([transform(open_image(im)) for im in images[i:i + batch_size]]))
           for i in range(0, len(images), batch_size)]
    return torch.cat([o[0] for o in out]).float(), torch.cat([o[1] for o in out]).float()
