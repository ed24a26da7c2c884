"""The three panels of Figure 7 (Dosovitskiy et al. 2021) for one ViT, as pictures: the patch filters'
principal components as RGB tiles, the position-embedding similarity as a grid of small maps, and the
mean attention distance per head against the layer, with uniform attention's distance dashed.

Language-neutral on purpose: numbers, tick marks and symbols only; the page and docs/inside.md say in
words what each shows (vit.explore.inside_words), so a translated page needs no new picture.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from vit.explore.figure7 import Grid

PANEL_PX = (420, 340)  # each panel's size (width, height): two models side by side fit a 1400 px page
DISTANCE_TOP = 0.75  # the distance panel's y axis, as a fraction of the image side, shared by every model
SIMILARITY_CMAP = "viridis"


def tile_mosaic(tiles: np.ndarray, cols: int, gap: int = 1, fill: float = 1.0) -> np.ndarray:
    """(n, h, w[, 3]) tiles -> one array, `cols` tiles a row in reading order, `gap` cells of `fill` between."""
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap) + tiles.shape[3:], fill, dtype=np.float64)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = t
    return out


def filters_panel(tiles: np.ndarray, cols: int = 7) -> Image.Image:
    """(n, p, p, 3) RGB tiles in [0, 1] (figure7.patch_filter_pcs) -> a mosaic, each pixel of a filter a
    square block, reading order = component order, on white."""
    mosaic = tile_mosaic(tiles, cols, gap=1)  # (H, W, 3)
    scale = max(1, min(PANEL_PX[0] // mosaic.shape[1], PANEL_PX[1] // mosaic.shape[0]))
    image = Image.fromarray(np.uint8(np.round(mosaic * 255)))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def similarity_panel(similarity: torch.Tensor | np.ndarray, grid: Grid) -> Image.Image:
    """(P, P) cosine similarities -> the grid of small maps: tile (i, j), at patch position (i, j), shows that
    position's similarity with every position, on one colour scale from -1 to 1 (its bar on the right)."""
    rows, cols = grid
    sim = np.asarray(similarity, dtype=np.float64).reshape(rows * cols, rows, cols)  # tile i: row i as a grid
    fig, ax = _figure()
    im = ax.imshow(tile_mosaic(sim, cols=cols, gap=1, fill=np.nan), cmap=SIMILARITY_CMAP, vmin=-1, vmax=1,
                   interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, ticks=[-1, 0, 1])
    bar.ax.tick_params(labelsize=8)
    fig.subplots_adjust(left=0.02, right=0.92, bottom=0.03, top=0.97)
    return _image(fig)


def distance_panel(distance_px: np.ndarray | list, uniform_px: float, image_px: int) -> Image.Image:
    """(layers, heads) mean attention distances -> one dot per head at each layer (heads side by side), as a
    fraction of the image side on the left axis (0 to DISTANCE_TOP for every model: two panels compare)
    and in the model's input pixels on the right; uniform attention's distance dashed."""
    d = np.asarray(distance_px, dtype=np.float64) / image_px  # (layers, heads)
    layers = np.arange(1, d.shape[0] + 1)
    offsets = np.linspace(-0.15, 0.15, d.shape[1]) if d.shape[1] > 1 else np.zeros(1)
    fig, ax = _figure()
    colours = colormaps["tab10"].colors
    for h in range(d.shape[1]):
        ax.scatter(layers + offsets[h], d[:, h], s=26, color=colours[h % len(colours)], zorder=3, label=f"h{h + 1}")
    ax.axhline(uniform_px / image_px, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(layers)
    ax.set_xlim(0.5, d.shape[0] + 0.5)
    ax.set_ylim(0, max(DISTANCE_TOP, float(d.max()) * 1.05))
    ax.tick_params(labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=min(d.shape[1], 4), handletextpad=0.1, columnspacing=0.6)
    px = ax.secondary_yaxis("right", functions=(lambda f: f * image_px, lambda v: v / image_px))
    px.tick_params(labelsize=7)
    ax.set_title("d / side", fontsize=8, loc="left")
    ax.set_title("px", fontsize=8, loc="right")
    fig.subplots_adjust(left=0.12, right=0.86, bottom=0.1, top=0.92)
    return _image(fig)


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(PANEL_PX[0] / 100, PANEL_PX[1] / 100), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _image(fig: Figure) -> Image.Image:
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    fig.clear()
    return image
