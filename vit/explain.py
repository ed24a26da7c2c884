"""Why a model predicts what it does: attention maps, attention rollout, Grad-CAM, patch grids, overlays.

Attention maps come from an explicit softmax computed on request, never from hooks on modules
that the fused (SDPA) path skips, and nothing is stored on the model: two requests at once get
their own maps.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw
from torch import nn

HEAD_REDUCTIONS = ("mean", "max")


def attention_maps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and one (B, heads, N, N) attention map per block, for our ViT or a timm ViT."""
    if hasattr(model, "forward_with_attention"):
        return model.forward_with_attention(x)
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return _timm_vit_with_attention(model, x)
    raise TypeError(f"{type(model).__name__} has no attention maps (not a ViT)")


def _timm_vit_with_attention(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """timm's VisionTransformer.forward, block by block, with timm's own explicit attention math
    (`Attention.forward` when fused_attn is off) so the softmax weights can be returned."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))  # (B, N, D)
    maps = []
    for block in model.blocks:
        attn_out, weights = _timm_attention(block.attn, block.norm1(x))
        x = x + block.drop_path1(block.ls1(attn_out))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        maps.append(weights)
    return model.forward_head(model.norm(x)), maps


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


def grad_cam(model: nn.Module, x: torch.Tensor, class_idx: int | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM (Selvaraju et al. 2017) on a timm CNN's last feature map (`forward_features`).
    x: (1, 3, H, W). Returns the (h, w) map for `class_idx` (default: the top class) and the logits.
    Gradients come from autograd.grad on a graph of this call alone: no hooks, no .grad state."""
    with torch.enable_grad():
        feats = model.forward_features(x.requires_grad_(False))  # (1, C, h, w)
        logits = model.forward_head(feats)  # (1, classes)
        c = int(logits[0].argmax()) if class_idx is None else class_idx
        (grads,) = torch.autograd.grad(logits[0, c], feats)
    return cam_from(feats.detach()[0], grads[0]), logits.detach()


def cam_from(feats: torch.Tensor, grads: torch.Tensor) -> np.ndarray:
    """Grad-CAM from one image's (C, h, w) activations and their gradients: ReLU of the
    activations weighted by the spatially averaged gradients."""
    weights = grads.mean(dim=(1, 2))  # (C,)
    cam = torch.relu((weights[:, None, None] * feats).sum(0))  # (h, w)
    return cam.float().cpu().numpy()


def normalise(heat: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (all zeros stays all zeros)."""
    heat = heat - heat.min()
    top = heat.max()
    return heat / top if top > 0 else heat


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend a (rows, cols) heat map, stretched to the image's size, over the image."""
    h = Image.fromarray(np.uint8(normalise(heat) * 255)).resize(image.size, Image.BILINEAR)
    colour = (colormaps[cmap](np.asarray(h) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(colour), float(np.clip(alpha, 0.0, 1.0)))


def patch_grid(image: Image.Image, patch: int, colour: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The image with lines between the patches the ViT cuts it into (Eq. 1)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for x in range(patch, out.width, patch):
        draw.line([(x, 0), (x, out.height)], fill=colour, width=1)
    for y in range(patch, out.height, patch):
        draw.line([(0, y), (out.width, y)], fill=colour, width=1)
    return out


def layer_mosaic(image: Image.Image, heats: list[np.ndarray], alpha: float = 0.5, cols: int | None = None,
                 tile: int = 160) -> Image.Image:
    """Every layer's overlay at once, in reading order, each labelled with its layer number."""
    cols = cols or min(len(heats), 4)
    rows = math.ceil(len(heats) / cols)
    small = image.convert("RGB").resize((tile, tile), Image.BICUBIC)
    mosaic = Image.new("RGB", (cols * tile, rows * tile), (255, 255, 255))
    draw = ImageDraw.Draw(mosaic)
    for i, heat in enumerate(heats):
        x, y = (i % cols) * tile, (i // cols) * tile
        mosaic.paste(overlay(small, heat, alpha), (x, y))
        draw.rectangle([x, y + tile - 14, x + 26, y + tile], fill=(0, 0, 0))  # bottom-left: clear of labels
        draw.text((x + 2, y + tile - 13), f"L{i + 1}", fill=(255, 255, 255))
    return mosaic
