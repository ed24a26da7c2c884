"""ROAD: RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML), a faithfulness metric without a blur baseline.

Removed pixels are not blurred but imputed by noisy linear imputation (Sec. 4.2): each removed pixel
takes the weighted mean of its 8 neighbours (1/6 for the 4 direct ones, 1/12 for the diagonals, as the
authors' `road.imputations.NoisyLinearImputer`), removed neighbours included, which is one sparse linear
system per channel, plus Gaussian noise (0.01 on the normalised image) on the imputed pixels, so that
the shape of the removed region does not leak the ranking. The system is solved by conjugate gradients
on the symmetric form D u - W u = b (D: each pixel's total neighbour weight inside the image), batched
over images and channels, from a normalised convolution of the known pixels, for at most CG_ITERS
steps (a relative residual of CG_TOL), on a grid pooled to at most 64 px a side, instead of the authors'
exact scipy `spsolve` at full resolution (which takes seconds per image on a CPU).

MoRF removes the cells the map ranks highest first, LeRF the lowest first, at 10 % .. 90 % of the
cells; each curve's mean probability of the class (MoRF: lower is better; LeRF: higher) and their
difference (LeRF - MoRF, higher is better) are the scores, as pytorch-grad-cam's `ROADCombined`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vit.explain.perturb import BATCH, blur, cell_ids

PERCENTILES = tuple(p / 10 for p in range(1, 10))  # share of the map's cells removed
NOISE = 0.01  # std of the noise on imputed pixels (normalised units), the authors' default
CG_ITERS, CG_TOL = 100, 1e-3  # conjugate-gradient iterations at most, relative residual to stop at
COARSE_SIDE = 64  # larger images are imputed on a pooled grid of at most this side (see `impute`)
_NEIGHBOURS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


@dataclass
class Road:
    morf: float  # mean class probability, most relevant cells removed first (lower is better)
    lerf: float  # the same, least relevant first (higher is better)
    morf_curve: list[float]  # one value per percentile
    lerf_curve: list[float]

    @property
    def combined(self) -> float:
        """LeRF - MoRF: higher is better."""
        return self.lerf - self.morf


def impute(x: torch.Tensor, removed: torch.Tensor, *, noise: float = NOISE, seed: int = 0) -> torch.Tensor:
    """Noisy linear imputation of the `removed` pixels (B, H, W, True = removed) of images x (B, C, H, W).
    Images wider than COARSE_SIDE are solved on a grid average-pooled f times (a pooled pixel is unknown
    if any of its pixels is) and the solution upsampled bilinearly: 16 times fewer unknowns at 224 px."""
    m = removed[:, None].to(x.dtype)  # (B, 1, H, W), 1 = unknown
    f = _pool_factor(x.shape[-2], x.shape[-1])
    if f > 1:
        xc, mc = F.avg_pool2d(x, f), F.max_pool2d(m, f)  # fully known blocks keep their mean
        coarse = xc * (1 - mc) + _solve(xc, mc)  # (B, C, H / f, W / f), the known blocks included
        u = F.interpolate(coarse, scale_factor=f, mode="bilinear", align_corners=False)
    else:
        u = _solve(x, m)
    g = torch.Generator().manual_seed(seed)
    return x * (1 - m) + m * (u + noise * torch.randn(x.shape, generator=g, dtype=x.dtype))


def _pool_factor(h: int, w: int) -> int:
    """The smallest factor dividing both sides that brings the longer one to COARSE_SIDE or less (else 1)."""
    return next((f for f in range(1, max(h, w) + 1) if h % f == 0 and w % f == 0 and max(h, w) <= COARSE_SIDE * f), 1)


def _solve(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Values of the unknown pixels (m = 1) that are each the neighbour-weighted mean of their neighbours."""
    b, c, h, w = x.shape
    m = m.expand(b, c, h, w)
    kernel = _NEIGHBOURS.to(x.dtype).view(1, 1, 3, 3)
    conv = lambda t: F.conv2d(t.reshape(-1, 1, h, w), kernel, padding=1).view(b, c, h, w)  # noqa: E731
    degree = conv(torch.ones_like(x))  # total neighbour weight inside the image
    apply = lambda u: m * (degree * u - conv(u * m))  # noqa: E731  the SPD operator on the unknowns
    known = 1 - m
    rhs = m * conv(x * known)  # what the known neighbours contribute
    start = m * blur(x * known) / blur(known).clamp(min=1e-6)  # normalised convolution of the known pixels only
    return _conjugate_gradients(apply, rhs, start)


def _conjugate_gradients(apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                         u: torch.Tensor) -> torch.Tensor:
    """Solve apply(u) = rhs for every (image, channel) system at once (sums over H, W)."""
    dot = lambda a, b: (a * b).sum(dim=(2, 3), keepdim=True)  # noqa: E731
    r = rhs - apply(u)
    p, rr = r.clone(), dot(r, r)
    stop = CG_TOL**2 * dot(rhs, rhs).clamp(min=1e-30)
    for _ in range(CG_ITERS):
        if bool((rr <= stop).all()):
            break
        ap = apply(p)
        alpha = rr / dot(p, ap).clamp(min=1e-30)
        u, r = u + alpha * p, r - alpha * ap
        rr_new = dot(r, r)
        p, rr = r + (rr_new / rr.clamp(min=1e-30)) * p, rr_new
    return u


def road(forward_batch: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, heat: np.ndarray, target: int, *,
         percentiles: tuple[float, ...] = PERCENTILES, seed: int = 0) -> Road:
    """ROAD MoRF and LeRF of a (rows, cols) map for class `target` on image x (1, 3, H, W)."""
    rows, cols = heat.shape
    cell = torch.from_numpy(cell_ids(x.shape[-2], x.shape[-1], rows, cols))  # (H, W)
    order = np.argsort(-np.asarray(heat, dtype=np.float64).ravel(), kind="stable")  # most relevant first
    masks = []
    for first in (order, order[::-1]):  # MoRF, then LeRF
        for p in percentiles:
            gone = torch.zeros(rows * cols, dtype=torch.bool)
            gone[torch.from_numpy(first[:round(p * rows * cols)].copy())] = True
            masks.append(gone[cell])  # (H, W)
    removed = torch.stack(masks)  # (2 * len(percentiles), H, W)
    probs = []
    for start in range(0, len(removed), BATCH):
        chunk = removed[start:start + BATCH]
        images = impute(x.expand(len(chunk), -1, -1, -1).float(), chunk, seed=seed + start)
        probs.append(forward_batch(images).detach().float().softmax(-1)[:, target].cpu())
    p = torch.cat(probs).double().numpy()
    n = len(percentiles)
    return Road(float(p[:n].mean()), float(p[n:].mean()), p[:n].tolist(), p[n:].tolist())
