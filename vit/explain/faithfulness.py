"""How faithful is a map? Deletion and insertion (Petsiuk et al. 2018, "RISE", Sec. 4.1), against
random orders of the same cells.

Deletion blurs the cells the map ranks highest first: a faithful map makes the target's probability
fall fast (low AUC). Insertion starts from the blurred image and reveals those cells first: the
probability should rise fast (high AUC). A random order gives the bar to beat.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from vit.explain.perturb import BATCH, blur, blur_sigma, cell_ids, perturbed_logits

STEPS = 16
SEEDS = (0, 1, 2)


@dataclass
class RandomCurves:
    """Deletion and insertion curves of random cell orders, averaged over the seeds."""
    deletion: list[float]
    insertion: list[float]
    seeds: tuple[int, ...]


@dataclass
class Faithfulness:
    deletion_auc: float  # lower is better
    insertion_auc: float  # higher is better
    random_deletion_auc: float  # the same for random orders, mean over the seeds
    random_insertion_auc: float
    deletion_curve: list[float]  # target probability after 0 .. steps steps (steps + 1 values)
    insertion_curve: list[float]
    steps: int  # K
    baseline: str  # what a removed cell becomes
    random_deletion_curve: list[float] = field(default_factory=list)
    random_insertion_curve: list[float] = field(default_factory=list)
    random_seeds: tuple[int, ...] = ()  # the random orders behind the random figures

    @property
    def deletion_ratio(self) -> float:
        """Deletion AUC over random's: the bar is <= 0.85."""
        return self.deletion_auc / max(self.random_deletion_auc, 1e-12)

    @property
    def insertion_ratio(self) -> float:
        """Insertion AUC over random's: the bar is >= 1.15."""
        return self.insertion_auc / max(self.random_insertion_auc, 1e-12)


def auc(curve: list[float]) -> float:
    """Area under a curve sampled at x = 0, 1/K, ..., 1 (trapezoid rule)."""
    y = np.asarray(curve, dtype=np.float64)
    return float((y.sum() - 0.5 * (y[0] + y[-1])) / (len(y) - 1))


def order_of(heat: np.ndarray) -> np.ndarray:
    """Cell indices (row-major) from the highest value down; ties keep row-major order."""
    return np.argsort(-np.asarray(heat, dtype=np.float64).ravel(), kind="stable")


def random_orders(n: int, seeds: tuple[int, ...]) -> list[np.ndarray]:
    return [np.random.default_rng(s).permutation(n) for s in seeds]


def score(forward_batch: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, heat: np.ndarray, target: int, *,
          steps: int = STEPS, seeds: tuple[int, ...] = SEEDS, random: RandomCurves | None = None,
          ends: Ends | None = None) -> Faithfulness:
    """Deletion and insertion of the cells of `heat` (rows, cols), highest first, on x (1, 3, H, W).

    K = `steps` steps, each removing (deletion) or revealing (insertion) round(k n / K) of the n cells
    in all; step 0 of deletion is the intact image and step K the fully blurred one (insertion the
    reverse). A removed cell takes the pixels of a Gaussian blur of x (sigma = 5 % of the side, see
    `perturb.blur`). Each point is the softmax probability of `target`; AUCs by the trapezoid rule over
    [0, 1]. The random bar averages `seeds` random orders (or pass `random`, from `random_curves`, to
    reuse it across maps of one image). Every image goes through `forward_batch` ((B, 3, H, W) ->
    logits), at most 32 at a time. Deterministic for a fixed image. `ends`: the intact and the fully
    blurred image's logits when the caller has them (the answer's pass, a photo's earlier score)."""
    orders = [order_of(heat)]
    if random is None:
        orders += random_orders(heat.size, seeds)
    curves = _curves(forward_batch, x, heat.shape, target, orders, steps, ends)
    deletion, insertion = curves[0]
    if random is None:
        random = RandomCurves(*_mean_curves(curves[1:]), seeds=tuple(seeds))
    return Faithfulness(auc(deletion), auc(insertion), auc(random.deletion), auc(random.insertion),
                        deletion, insertion, steps, f"gaussian blur sigma={blur_sigma(x):.1f}px",
                        list(random.deletion), list(random.insertion), tuple(random.seeds))


def random_curves(forward_batch: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, shape: tuple[int, int],
                  target: int, *, steps: int = STEPS, seeds: tuple[int, ...] = SEEDS, shared: bool = False,
                  ends: Ends | None = None) -> RandomCurves:
    """The random bar of `score` for one image, target and grid shape, to share between methods.

    `shared`: each random order's masks serve both curves. An order's first m cells are a uniformly random
    set of m cells, whichever curve asks: deletion at step k blurs c_k = round(k n / K) of them, insertion
    at step k blurs n - c_k, which is c_(K - k) except where rounding splits a half; so about K - 1 images
    per order serve both curves instead of 2 (K - 1). Each curve is still the mean over `seeds` uniformly
    random orders, as without `shared` (where insertion blurs an order's last n - c_k cells): only the two
    curves' estimates share their draws. docs/explanations.md has the check that this leaves each model's
    ranking of its methods, and its default, where they were."""
    n = shape[0] * shape[1]
    if not shared:
        curves = _curves(forward_batch, x, shape, target, random_orders(n, seeds), steps, ends)
        return RandomCurves(*_mean_curves(curves), seeds=tuple(seeds))
    counts = _counts(n, steps)
    blurred = sorted({*counts, *(n - c for c in counts)})  # cells blurred, over both curves' inner steps
    pixel_cell = torch.from_numpy(cell_ids(x.shape[-2], x.shape[-1], *shape))  # (H, W)
    orders = random_orders(n, seeds)
    masks = [_pixel_rank(pixel_cell, order) < m for order in orders for m in blurred]
    p_intact, p_blurred, p = _probabilities(forward_batch, x, masks, target, ends)
    at = {(i, m): p[i * len(blurred) + j] for i in range(len(orders)) for j, m in enumerate(blurred)}
    mean = lambda m: float(np.mean([at[i, m] for i in range(len(orders))]))  # noqa: E731 - over the orders
    return RandomCurves([p_intact, *(mean(c) for c in counts), p_blurred],
                        [p_blurred, *(mean(n - c) for c in counts), p_intact], seeds=tuple(seeds))


@dataclass(frozen=True)
class Ends:
    """The two images every curve of a photo shares: the intact image's logits (1, C) and the fully
    blurred one's (1, C), for a caller that has them (Predictor: the answer's pass and the photo's blur)."""
    intact: torch.Tensor
    blurred: torch.Tensor


def blurred_logits(forward_batch: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(1, C) logits of the fully blurred image: one end of every curve."""
    return forward_batch(blur(x)).detach().float().cpu()


def _mean_curves(curves: list[tuple[list[float], list[float]]]) -> tuple[list[float], list[float]]:
    d = np.mean([c[0] for c in curves], axis=0)
    i = np.mean([c[1] for c in curves], axis=0)
    return d.tolist(), i.tolist()


def _counts(n: int, steps: int) -> list[int]:
    """Cells removed (deletion) or revealed (insertion) at the inner steps 1 .. K - 1."""
    if steps < 1 or n < 1:
        raise ValueError(f"need steps >= 1 and a non-empty map, got steps={steps}, {n} cells")
    return [round(k * n / steps) for k in range(1, steps)]


def _pixel_rank(pixel_cell: torch.Tensor, order: np.ndarray) -> torch.Tensor:
    """(H, W): when each pixel's cell comes in `order`."""
    rank = torch.empty(len(order), dtype=torch.long)
    rank[torch.from_numpy(order)] = torch.arange(len(order))
    return rank[pixel_cell]


def _probabilities(forward_batch: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, masks: list[torch.Tensor],
                   target: int, ends: Ends | None) -> tuple[float, float, list[float]]:
    """P(target) of the intact image, the fully blurred one and each masked one (True: blurred), from one
    batched run (the two ends taken from `ends` when given)."""
    if ends is None:
        none = torch.zeros(x.shape[-2:], dtype=torch.bool)
        masks = [none, ~none, *masks]
    logits = perturbed_logits(forward_batch, x, blur(x), torch.stack(masks), batch=BATCH) if masks else \
        torch.empty(0, 0)
    if ends is not None:
        logits = torch.cat([ends.intact.float().reshape(1, -1), ends.blurred.float().reshape(1, -1),
                            logits.reshape(-1, ends.intact.numel())])
    p = logits.softmax(-1)[:, target].tolist()
    return p[0], p[1], p[2:]


def _curves(forward_batch: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, shape: tuple[int, int],
            target: int, orders: list[np.ndarray], steps: int,
            ends: Ends | None = None) -> list[tuple[list[float], list[float]]]:
    """(deletion, insertion) curves for each cell order, from one batched run over every image."""
    counts = _counts(shape[0] * shape[1], steps)
    pixel_cell = torch.from_numpy(cell_ids(x.shape[-2], x.shape[-1], *shape))  # (H, W)
    masks = []
    for order in orders:
        pixel_rank = _pixel_rank(pixel_cell, order)
        masks += [pixel_rank < k for k in counts]  # deletion: the first k cells blurred
        masks += [pixel_rank >= k for k in counts]  # insertion: all but the first k cells blurred
    intact, blurred, inner = _probabilities(forward_batch, x, masks, target, ends)
    out, m = [], steps - 1
    for i in range(len(orders)):
        d, ins = inner[2 * i * m:(2 * i + 1) * m], inner[(2 * i + 1) * m:(2 * i + 2) * m]
        out.append(([intact, *d, blurred], [blurred, *ins, intact]))
    return out
