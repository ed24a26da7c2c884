"""Attention maps on request: an explicit, block-by-block forward pass of our ViT or a timm ViT that
returns the softmax weights (and the tokens entering every block), class-token attention, rollout.

Attention maps come from an explicit softmax computed on request, never from hooks on modules
that the fused (SDPA) path skips, and nothing is stored on the model: two requests at once get
their own maps. With autograd on, every returned tensor is in this call's graph (for Chefer
relevance and ViT Grad-CAM).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vit.model import VisionTransformer

HEAD_REDUCTIONS = ("mean", "max")


@dataclass
class Trace:
    """One explicit forward pass of a ViT."""
    logits: torch.Tensor  # (B, classes)
    maps: list[torch.Tensor]  # per block: (B, heads, N, N) softmax attention
    attn_inputs: list[torch.Tensor]  # per block: the (B, N, D) tokens its attention reads (after norm1)


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
    return Trace(model.forward_head(model.norm(x)), maps, inputs)


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
    return Trace(model.forward_head(model.norm(x)), maps, inputs)


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


def head_select(layer_map: torch.Tensor, head: int | str) -> torch.Tensor:
    """(heads, N, N) -> (N, N): one head by index, or the mean / max over heads."""
    if head == "mean":
        return layer_map.mean(0)
    if head == "max":
        return layer_map.max(0).values
    return layer_map[int(head)]


def cls_attention(layer_map: torch.Tensor, grid: tuple[int, int], prefix: int, head: int | str = "mean") -> np.ndarray:
    """The class token's attention to every patch in one layer, as a (rows, cols) array."""
    row = head_select(layer_map, head)[0, prefix:]  # (N_patches,)
    return row.reshape(grid).float().cpu().numpy()


def rollout(maps: list[torch.Tensor], discard_ratio: float = 0.0, head: int | str = "mean") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): multiply the layers' head-fused attention, each
    averaged with the identity for the residual path and re-normalised; optionally first drop the
    weakest `discard_ratio` of each layer's weights (never those to the class token).
    maps: per-layer (heads, N, N). Returns the (N, N) rolled-out matrix, each row summing to 1."""
    n = maps[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    result = eye.clone()
    for layer_map in maps:
        a = head_select(layer_map.double().cpu(), head)
        if discard_ratio > 0:
            flat = a.flatten().clone()
            k = int(flat.numel() * discard_ratio)
            if k:
                idx = flat.topk(k, largest=False).indices
                idx = idx[idx % n != 0]  # keep attention to the class token
                flat[idx] = 0
            a = flat.view(n, n)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
        result = a @ result
    return result.float()


def rollout_map(maps: list[torch.Tensor], grid: tuple[int, int], prefix: int, discard_ratio: float = 0.0,
                head: int | str = "mean") -> np.ndarray:
    """Rolled-out attention from the class token to the patches, as a (rows, cols) array."""
    return rollout(maps, discard_ratio, head)[0, prefix:].reshape(grid).numpy()
