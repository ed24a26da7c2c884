"""Attention maps on request: an explicit, block-by-block forward pass of our ViT or a timm ViT that
returns the softmax weights (and the tokens entering every block), and the token geometry.

Attention maps come from an explicit softmax computed on request, never from hooks on modules
that the fused (SDPA) path skips, and nothing is stored on the model: two requests at once get
their own maps. With autograd on, every returned tensor is in this call's graph (for Chefer
relevance and ViT Grad-CAM). What the maps mean (class-token attention, rollout) is vit.explain's.

How sharp a row of attention weights is (`normalised_entropy`, `peak_ratio`) and where it counts as nearly
uniform (`NEARLY_UNIFORM`) are defined here once, for the overlays' scale (vit.explain.render) and Figure 7's
figures and sentences (vit.explore) alike: two rooms side by side that may not import each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vit.models.scratch_vit import VisionTransformer

# A row's normalised entropy from which it is called nearly uniform (docs/inside.md: where the line is, and why)
NEARLY_UNIFORM = 0.97


@dataclass
class Trace:
    """One explicit forward pass of a ViT."""
    logits: torch.Tensor  # (B, classes)
    maps: list[torch.Tensor]  # per block: (B, heads, N, N) softmax attention
    attn_inputs: list[torch.Tensor]  # per block: the (B, N, D) tokens its attention reads (after norm1)
    features: torch.Tensor | None = None  # (B, D) the penultimate vector the head reads (vit.models.features)


def trace(model: nn.Module, x: torch.Tensor) -> Trace:
    """Logits, every block's attention and every block's normalised attention input, for our ViT or a timm
    ViT."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: trace the module itself
    if isinstance(model, VisionTransformer):
        return _scratch_vit_trace(model, x)
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return _timm_vit_trace(model, x)
    raise TypeError(f"{type(model).__name__} has no attention maps (not a ViT)")


def attention_maps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and one (B, heads, N, N) attention map per block, for our ViT or a timm ViT."""
    t = trace(model, x)
    return t.logits, t.maps


def attention_features(model: nn.Module, x: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Logits (B, classes), the penultimate features (B, D) and one (B, heads, N, N) attention map per
    block, all from one pass: what an explanation needs, and its nearest training photos (vit.explore)."""
    t = trace(model, x)
    return t.logits, t.features, t.maps


def _scratch_vit_trace(model: VisionTransformer, x: torch.Tensor) -> Trace:
    """Our ViT's forward (Eq. 1-4), each `Block.forward` written out with the explicit attention path
    so the normalised tokens entering attention are nodes of the graph too."""
    x = model.embed(x)  # (B, N, D)
    maps, inputs = [], []
    for block in model.blocks:
        normed = block.norm1(x)  # (B, N, D)
        attn_out, weights = block.attn(normed, return_attn=True)
        x = x + block.drop_path(attn_out)  # Eq. 2
        x = x + block.drop_path(block.mlp(block.norm2(x)))  # Eq. 3
        maps.append(weights)
        inputs.append(normed)
    tokens = model.norm(x)  # (B, N, D)
    features = tokens[:, :model.cfg.num_prefix_tokens].flatten(1)  # (B, D) or (B, 2D) distilled, as in features.py
    return Trace(model.forward_head(tokens), maps, inputs, features)


def _timm_vit_trace(model: nn.Module, x: torch.Tensor) -> Trace:
    """timm's VisionTransformer.forward, block by block, with timm's own explicit attention math
    (`Attention.forward` when fused_attn is off) so the softmax weights can be returned."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))  # (B, N, D)
    maps, inputs = [], []
    for block in model.blocks:
        normed = block.norm1(x)  # (B, N, D)
        attn_out, weights = _timm_attention(block.attn, normed)
        x = x + block.drop_path1(block.ls1(attn_out))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        maps.append(weights)
        inputs.append(normed)
    pooled = model.forward_head(model.norm(x), pre_logits=True)  # (B, D): what the classifier reads
    return Trace(model.get_classifier()(pooled), maps, inputs, pooled)


def _timm_vit_with_attention(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and per-block attention of a timm ViT (kept for callers of the old name)."""
    t = _timm_vit_trace(model, x)
    return t.logits, t.maps


def _timm_attention(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if getattr(attn, "gate", None) is not None:
        raise TypeError("gated timm attention is not supported")
    B, N, C = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, N)
    out = (weights @ v).transpose(1, 2).reshape(B, N, -1)  # (B, N, heads * head_dim)
    return attn.proj_drop(attn.proj(attn.norm(out))), weights


def num_prefix_tokens(model: nn.Module) -> int:
    """Class (and distillation) tokens ahead of the patch tokens."""
    if hasattr(model, "cfg"):
        return model.cfg.num_prefix_tokens
    return getattr(model, "num_prefix_tokens", 1)


def token_grid(model: nn.Module) -> tuple[int, int]:
    """(rows, cols) of patch tokens: 14 x 14 for a 224 px image with 16 px patches."""
    grid = model.patch_embed.grid_size
    return (grid, grid) if isinstance(grid, int) else tuple(grid)


def patch_size_px(model: nn.Module, image_size: int) -> int:
    """Pixels per token side in the model's input; for the hybrid, the CNN's stride (16)."""
    return image_size // token_grid(model)[1]


def normalised_entropy(rows: torch.Tensor) -> torch.Tensor:
    """(..., K) distributions -> (...) entropy / log K: 1 for uniform, 0 for one key (0 log 0 = 0)."""
    p = rows.double()
    return -(p * torch.log(p.clamp_min(1e-300))).sum(-1) / math.log(rows.shape[-1])


def peak_ratio(rows: torch.Tensor) -> torch.Tensor:
    """(..., K) distributions -> (...) largest weight x K: 1 for uniform, K for one key."""
    return rows.amax(-1) * rows.shape[-1]
