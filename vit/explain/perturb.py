"""Perturbed copies of one image, shared by occlusion and the deletion / insertion scores: a blurred
baseline, the map from pixels to grid cells, and batched forward passes over masked images."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

BATCH = 32  # images per forward pass at most
SIGMA_FRACTION = 0.05  # the blur's sigma as a fraction of the image side: 11.2 px at 224, 4.8 px at 96


def blur_sigma(x: torch.Tensor) -> float:
    """The Gaussian blur's sigma in pixels for an image of x's size."""
    return SIGMA_FRACTION * max(x.shape[-2:])


def blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur of a normalised (B, 3, H, W) batch, reflect-padded (kernel 2*ceil(3 sigma)+1,
    clipped to the image): the 'removed information' baseline of RISE (Petsiuk et al. 2018)."""
    sigma = blur_sigma(x) if sigma is None else sigma
    radius = min(math.ceil(3 * sigma), x.shape[-2] - 1, x.shape[-1] - 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    out = F.pad(x.detach(), (radius, radius, radius, radius), mode="reflect")  # (B, C, H + 2r, W + 2r)
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # rows: (B, C, H + 2r, W)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # cols: (B, C, H, W)


def cell_index(height: int, width: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The grid row of every pixel row (H,) and the grid column of every pixel column (W,)."""
    return np.arange(height) * rows // height, np.arange(width) * cols // width


def cell_ids(height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """(H, W): the grid cell of every pixel, cells numbered row-major."""
    r, c = cell_index(height, width, rows, cols)
    return r[:, None] * cols + c[None, :]


def perturbed_logits(forward_batch: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     baseline: torch.Tensor, masks: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Logits (M, classes) of x (1, 3, H, W) with the pixels of each mask (M, H, W, True = take the
    baseline's pixel) replaced by `baseline`'s; images are built and run `batch` at a time."""
    out = []
    for start in range(0, len(masks), batch):
        m = masks[start:start + batch, None].to(x.device)  # (b, 1, H, W)
        out.append(forward_batch(torch.where(m, baseline, x)).detach().float().cpu())
    return torch.cat(out)
