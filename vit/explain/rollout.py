"""What attention maps say: one head or the mean / max over heads, the class token's attention to the
patches, and attention rollout over every layer (Abnar & Zuidema 2020). The maps themselves come from
vit.models.attention's explicit forward pass.
"""
from __future__ import annotations

import numpy as np
import torch

from vit.explain.errors import RequestError

HEAD_REDUCTIONS = ("mean", "max")


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


def parse_head(head: str | int | None, num_heads: int) -> int | str:
    """The page's and the API's head: 'mean' / 'max' / 'head 2' (heads count from 1 on screen), or an
    index already parsed -> what `head_select` takes; RequestError for a head the model lacks."""
    if isinstance(head, int) and not isinstance(head, bool):
        if not 0 <= head < num_heads:
            raise RequestError(f"head {head + 1} does not exist: this model has heads 1 .. {num_heads}",
                               "request.no_head", head=head + 1, heads=num_heads)
        return head
    if head is None or head in HEAD_REDUCTIONS:
        return head or "mean"
    try:
        index = int(str(head).split()[-1])
    except ValueError:
        raise RequestError(f"unknown head {head!r}: use 'mean', 'max' or 'head 1' .. 'head {num_heads}'",
                           "request.unknown_head", head=head, heads=num_heads) from None
    if not 1 <= index <= num_heads:
        raise RequestError(f"head {index} does not exist: this model has heads 1 .. {num_heads}", "request.no_head",
                           head=index, heads=num_heads)
    return index - 1


def head_choices(num_heads: int) -> list[str]:
    """The head menu: the reductions, then every head counted from 1."""
    return list(HEAD_REDUCTIONS) + [f"head {i + 1}" for i in range(num_heads)]
