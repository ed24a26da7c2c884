"""The explanation maps (registered by id in vit.explain.methods, whose `compute` is the entry point), each
a map on the model's own grid (the token grid of a ViT, the last feature map of a CNN).

Every method is per request: no hooks, nothing stored on the model, and gradients come from
`torch.autograd.grad` on a graph built by this call alone, so no parameter keeps a `.grad` and two
concurrent requests on one model cannot mix. (pytorch-grad-cam and captum register hooks on the
shared modules instead: two requests at once could read each other's activations. That is why the
math is written out here.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from vit.explain.lrp import token_relevance
from vit.explain.lrp_cnn import cnn_relevance, pool_to_grid
from vit.explain.perturb import blur, cell_ids, cell_index, perturbed_logits
from vit.explain.rollout import cls_attention, rollout_map
from vit.models.attention import num_prefix_tokens, token_grid, trace

MAX_OCCLUSION_CELLS = 8  # occlusion cells per side at most: larger grids are occluded in blocks
RISE_MASKS, RISE_KEEP, RISE_SEED = 96, 0.5, 0  # masks per map at most, share of cells each keeps, their seed

ForwardBatch = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) -> (B, classes) logits


@dataclass
class Heat:
    """One explanation map and the pass that made it."""
    heat: np.ndarray  # (rows, cols) on the model's grid, larger = more important
    target: int  # the explained class index
    method: str  # its id in vit.explain.methods (set by `compute`)
    logits: torch.Tensor | None = None  # (1, classes) of the pass, when the method ran one
    probs: torch.Tensor | None = None  # (1, classes) softmax of `logits`


@dataclass
class Inputs:
    """What a method's function gets: one image, and what a pass already made gives for free."""
    model: nn.Module  # the float PyTorch model (gradients; a ViT's grid, read without running it)
    x: torch.Tensor  # (1, 3, H, W) normalised image
    target: int | None = None  # explained class (None: the top one)
    layer: int = -1  # block index (-1: the last)
    head: int | str = "mean"  # head index, "mean" or "max"
    discard: float = 0.9  # rollout's discard ratio
    forward_batch: ForwardBatch | None = None  # batched forward of the perturbation methods
    maps: list[torch.Tensor] | None = None  # per layer (heads, N, N) attention of a pass already made: no new pass
    logits: torch.Tensor | None = None  # (1, classes) of that pass


def _attention(i: Inputs) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-layer (heads, N, N) attention and the logits: the pass already made (i.maps), else one now."""
    if i.maps is not None and i.logits is not None:
        return i.maps, i.logits
    with torch.inference_mode():
        t = trace(i.model, i.x)
    return [m[0] for m in t.maps], t.logits


def attention_heat(i: Inputs) -> Heat:
    """The class token's attention to the patches in one block (layer i.layer, head i.head); it does not
    depend on the class (the target only records the top one)."""
    maps, logits = _attention(i)
    heat = cls_attention(maps[i.layer], token_grid(i.model), num_prefix_tokens(i.model), i.head)
    return _heat(heat, _target(logits, i.target), logits)


def rollout_heat(i: Inputs) -> Heat:
    """Attention rollout (Abnar & Zuidema 2020) through every block, i.discard of the weakest dropped."""
    maps, logits = _attention(i)
    heat = rollout_map(maps, token_grid(i.model), num_prefix_tokens(i.model), i.discard, i.head)
    return _heat(heat, _target(logits, i.target), logits)


def _target(logits: torch.Tensor, target: int | None) -> int:
    c = int(logits[0].argmax()) if target is None else int(target)
    if not 0 <= c < logits.shape[-1]:
        raise ValueError(f"target {c} is not a class index (0 .. {logits.shape[-1] - 1})")
    return c


def _heat(heat: np.ndarray | torch.Tensor, target: int, logits: torch.Tensor) -> Heat:
    if isinstance(heat, torch.Tensor):
        heat = heat.detach().float().cpu().numpy()
    logits = logits.detach().float()
    return Heat(np.asarray(heat, dtype=np.float32), target, "", logits, logits.softmax(-1))


def _check_differentiable(model: nn.Module, method: str) -> None:
    """Gradient methods need float modules: dynamic int8 Linears (torch.ao) have no autograd."""
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
        raise TypeError(f"{method} needs gradients, which a dynamically quantised (int8) model has not: "
                        "explain with the float model and pass the fast one as forward_batch")


def _graph_input(x: torch.Tensor) -> torch.Tensor:
    """A copy of x that starts a fresh graph (also from inside inference_mode) and needs a gradient,
    so the graph exists even when no parameter requires one."""
    return x.detach().clone().requires_grad_(True)


def chefer(model: nn.Module, x: torch.Tensor, target: int | None = None) -> Heat:
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf 2021, "Generic Attention-model
    Explainability", Eq. 5-6): R = I; per block R <- R + mean_heads(ReLU(dA * A)) R, with dA the
    gradient of the target logit w.r.t. the block's attention A. The map is the prefix (class and,
    if distilled, distillation) tokens' relevance rows, averaged, over the patch tokens."""
    _check_differentiable(model, "Chefer relevance")
    grid, prefix = token_grid(model), num_prefix_tokens(model)
    with torch.inference_mode(False), torch.enable_grad():
        t = trace(model, _graph_input(x))
        c = _target(t.logits, target)
        grads = torch.autograd.grad(t.logits[0, c], t.maps)
    n = t.maps[0].shape[-1]
    r = torch.eye(n, dtype=torch.float64)
    for a, g in zip(t.maps, grads):
        cam = (g[0] * a[0].detach()).clamp(min=0).mean(0).double()  # (N, N): Eq. 5, heads averaged
        r = r + cam @ r  # Eq. 6
    heat = r[:prefix, prefix:].mean(0).reshape(grid)  # (rows, cols)
    return _heat(heat, c, t.logits)


def lrp(model: nn.Module, x: torch.Tensor, target: int | None = None) -> Heat:
    """LRP in one forward and one backward pass. A ViT: conservative LRP (Ali et al. 2022; AttnLRP's identity
    rule on GELU, Achtibat et al. 2024; vit/explain/lrp.py), the relevance of each patch token entering the
    first block, summed over its channels, on the token grid. A timm CNN: LRP-eps on the classifier and
    LRP-gamma (0.1) on every convolution from stage 5 up, batch norm folded (Montavon et al. 2019;
    vit/explain/lrp_cnn.py), the relevance entering stage 5 summed per cell of the last feature map's grid.
    Signed: negative cells speak against the class."""
    _check_differentiable(model, "LRP")
    if not (hasattr(model, "blocks") and hasattr(model, "patch_embed")):
        r = cnn_relevance(model, x, target)
        return _heat(pool_to_grid(r.spatial, *model_grid(model, x)), r.target, r.logits)
    r = token_relevance(model, x, target)
    heat = r.per_token[num_prefix_tokens(model):].reshape(token_grid(model))  # (rows, cols)
    return _heat(heat, r.target, r.logits)


def grad_cam_heat(model: nn.Module, x: torch.Tensor, target: int | None = None) -> Heat:
    """Grad-CAM (Selvaraju et al. 2017) for any model: a CNN's last feature map, or a ViT's last block's
    normalised patch tokens (the output of `blocks[-1].norm1`, as pytorch-grad-cam's ViT tutorial),
    reshaped to the token grid. Why not the last block's output: the head reads the prefix tokens only,
    so the output patch tokens get no gradient. Why after norm1: LayerNorm is scale-invariant, so the
    gradient w.r.t. its input is orthogonal to the (centred) input and Grad-CAM there is ~0."""
    _check_differentiable(model, "Grad-CAM")
    if not (hasattr(model, "blocks") and hasattr(model, "patch_embed")):
        cam, logits = grad_cam(model, x, target)
        return _heat(cam, _target(logits, target), logits)
    grid, prefix = token_grid(model), num_prefix_tokens(model)
    with torch.inference_mode(False), torch.enable_grad():
        t = trace(model, _graph_input(x))
        c = _target(t.logits, target)
        tokens = t.attn_inputs[-1]  # (1, N, D)
        (grads,) = torch.autograd.grad(t.logits[0, c], tokens)
    feats = tokens.detach()[0, prefix:].T.reshape(-1, *grid)  # (D, rows, cols)
    return _heat(cam_from(feats, grads[0, prefix:].T.reshape(-1, *grid)), c, t.logits)


def grad_cam(model: nn.Module, x: torch.Tensor, class_idx: int | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM (Selvaraju et al. 2017) on a timm CNN's last feature map (`forward_features`).
    x: (1, 3, H, W). Returns the (h, w) map for `class_idx` (default: the top class) and the logits.
    Gradients come from autograd.grad on a graph of this call alone: no hooks, no .grad state."""
    with torch.inference_mode(False), torch.enable_grad():
        feats = model.forward_features(_graph_input(x))  # (1, C, h, w)
        logits = model.forward_head(feats)  # (1, classes)
        c = _target(logits, class_idx)
        (grads,) = torch.autograd.grad(logits[0, c], feats)
    return cam_from(feats.detach()[0], grads[0]), logits.detach()


def cam_from(feats: torch.Tensor, grads: torch.Tensor) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017, Eq. 1-2) from one image's (C, h, w) activations and their
    gradients: ReLU of the activations weighted by the spatially averaged gradients."""
    weights = grads.mean(dim=(1, 2))  # (C,)
    cam = torch.relu((weights[:, None, None] * feats).sum(0))  # (h, w)
    return cam.float().cpu().numpy()


def model_grid(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of the model's own grid: ViT tokens, or a CNN's last feature map."""
    if hasattr(model, "patch_embed"):
        return token_grid(model)
    info = getattr(model, "feature_info", None)
    if info is not None:  # timm: the last stage's stride
        stride = info[-1]["reduction"]
        return math.ceil(x.shape[-2] / stride), math.ceil(x.shape[-1] / stride)
    with torch.inference_mode():
        return tuple(model.forward_features(x).shape[-2:])


def occlusion(model: nn.Module, x: torch.Tensor, target: int | None = None, *,
              forward_batch: ForwardBatch | None = None, max_cells: int = MAX_OCCLUSION_CELLS) -> Heat:
    """Occlusion (Zeiler & Fergus 2014) with a blurred, not grey, patch: each cell of the model's grid
    (blocks of cells when the grid has more than `max_cells` a side) is replaced by a Gaussian blur
    of the image; the map is the drop in the target's probability, one value per block. All
    occluded images go through `forward_batch` (default: `model` in inference mode) in batches."""
    forward_batch = forward_batch or _inference(model)
    rows, cols = model_grid(model, x)
    f = math.ceil(max(rows, cols) / max_cells)  # model cells per block side
    cr, cc = cell_index(x.shape[-2], x.shape[-1], rows, cols)  # (H,), (W,)
    block = (cr[:, None] // f) * math.ceil(cols / f) + (cc[None, :] // f)  # (H, W) block id
    n_blocks = math.ceil(rows / f) * math.ceil(cols / f)
    masks = torch.from_numpy(block[None] == np.arange(-1, n_blocks)[:, None, None])  # (1 + blocks, H, W)
    logits = perturbed_logits(forward_batch, x, blur(x), masks)  # row 0: the intact image
    p = logits.float().softmax(-1)
    c = _target(logits[:1], target)
    drop = (p[0, c] - p[1:, c]).numpy()  # (n_blocks,)
    heat = drop[(np.arange(rows)[:, None] // f) * math.ceil(cols / f) + np.arange(cols)[None, :] // f]
    return _heat(heat, c, logits[:1])


def rise(model: nn.Module, x: torch.Tensor, target: int | None = None, *, forward_batch: ForwardBatch | None = None,
         masks: int = RISE_MASKS, keep: float = RISE_KEEP, seed: int = RISE_SEED) -> Heat:
    """RISE (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation", Sec. 3): masks
    (`rise_masks`) each keep some cells of the model's grid and blur the rest, as the deletion /
    insertion scores do; a cell's importance is the target's mean probability over the masks that keep
    it (Eq. 6, normalised by each cell's own count rather than N * keep). Where occlusion removes one
    cell at a time, which a model that sees its class in many cells barely notices, RISE removes half
    the image at a time. Unlike occlusion it needs no blocks on the ViTs' finer grids: its cost is at
    most `masks` whatever the grid (on the 12 x 12 scratch ViT, 2 x 2 blocks scored worse: deletion
    ratio 0.84 against 0.81 on 30 test photos). Masks come from a fixed seed, so a map is
    deterministic for a fixed image; all images go through `forward_batch` in batches."""
    forward_batch = forward_batch or _inference(model)
    rows, cols = model_grid(model, x)
    cell = cell_ids(x.shape[-2], x.shape[-1], rows, cols)  # (H, W)
    kept = rise_masks(rows * cols, masks, keep, seed)  # (masks, cells)
    blurred = torch.from_numpy(np.concatenate([np.zeros((1, rows * cols), bool), ~kept])[:, cell])  # row 0: intact
    logits = perturbed_logits(forward_batch, x, blur(x), blurred)
    c = _target(logits[:1], target)
    p = logits[1:].float().softmax(-1)[:, c].double().numpy()  # (masks,)
    heat = (p @ kept) / np.maximum(kept.sum(0), 1)  # (cells,): mean probability when the cell is kept
    return _heat(heat.reshape(rows, cols), c, logits[:1])


def rise_masks(cells: int, masks: int = RISE_MASKS, keep: float = RISE_KEEP, seed: int = RISE_SEED) -> np.ndarray:
    """RISE's masks, (M, cells) bool, True where the cell is kept, drawn from `seed`.

    With keep = 1/2 and a grid small enough (the EfficientNet's 7 x 7), an orthogonal two-level design
    of the first power of two M > cells (64 for 49 cells), if M <= `masks`: `cells` of the columns of a
    Sylvester-Hadamard matrix other than its all-ones one, with random signs. Every cell is then kept
    in exactly half the masks and every two cells together in exactly a quarter (a Plackett & Burman
    1946 design), so a cell's mean carries none of another cell's main effect, where independent masks
    mix them by chance. On the EfficientNet's 75 test photos its 64 masks scored deletion / insertion
    0.70 / 1.21 x random (seeds 0, 1, 2 within 0.005), against 0.73 / 1.20 for the 96 independent
    masks it replaced (seed 0) and 0.75-0.77 / 1.18-1.19 for 64 independent ones (seeds 0-2); the 45
    photos no default was chosen on agree (0.69-0.70 / 1.21-1.22 against 0.71 / 1.20). Otherwise:
    `masks` independent masks keeping each cell with probability `keep`, as in the paper."""
    rng = np.random.default_rng(seed)
    order = 1 << int(cells).bit_length()  # the first power of two above `cells`
    if keep != 0.5 or order > masks:
        return rng.random((masks, cells)) < keep
    h = np.ones((1, 1), dtype=np.int8)
    while len(h) < order:
        h = np.block([[h, h], [h, -h]])  # Sylvester: H(2n) = [[H, H], [H, -H]]
    columns = 1 + rng.choice(order - 1, cells, replace=False)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), cells)
    return h[:, columns] * signs > 0


def _inference(model: nn.Module) -> ForwardBatch:
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return forward
