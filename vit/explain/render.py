"""Pictures of explanations: heat-map overlays, the patch grid, a mosaic of every layer, and the
deletion / insertion curves of a faithfulness score."""
from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from vit.explain.faithfulness import Faithfulness


def normalise(heat: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (all zeros stays all zeros)."""
    heat = heat - heat.min()
    top = heat.max()
    return heat / top if top > 0 else heat


CMAP = "inferno"  # perceptually uniform, readable in grey and by colour-blind eyes (jet invents edges)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5, cmap: str = CMAP) -> Image.Image:
    """Blend a (rows, cols) heat map, stretched to the image's size, over the image."""
    h = Image.fromarray(np.uint8(normalise(heat) * 255)).resize(image.size, Image.BILINEAR)
    colour = (colormaps[cmap](np.asarray(h) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(colour), float(np.clip(alpha, 0.0, 1.0)))


def colour_bar(image: Image.Image, cmap: str = CMAP, width: int = 10) -> Image.Image:
    """The image with the map's colour scale drawn inside its right edge, low to high from bottom to
    top over its lower 40 %, marked + at the top and − at the bottom, drawn as lines: no words, so the
    picture reads the same in any language (the image keeps its size)."""
    out = image.convert("RGB").copy()
    height = max(8, int(out.height * 0.4))
    x0, y0 = out.width - width - 6, out.height - height - 6
    ramp = colormaps[cmap](np.linspace(1, 0, height))[:, :3]  # (height, 3): top = high
    strip = np.repeat((ramp * 255).astype(np.uint8)[:, None, :], width, axis=1)  # (height, width, 3)
    out.paste(Image.fromarray(strip), (x0, y0))
    draw = ImageDraw.Draw(out)
    draw.rectangle([x0 - 1, y0 - 1, x0 + width, y0 + height], outline=(255, 255, 255))
    for plus, y in ((True, y0 + 5), (False, y0 + height - 6)):  # a 9 x 9 black square left of the bar's end
        cx = x0 - 9
        draw.rectangle([cx - 5, y - 5, cx + 5, y + 5], fill=(0, 0, 0))
        draw.line([cx - 3, y, cx + 3, y], fill=(255, 255, 255), width=2)
        if plus:
            draw.line([cx, y - 3, cx, y + 3], fill=(255, 255, 255), width=2)
    return out


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


def curves_plot(f: Faithfulness, title: str = "", words: bool = True) -> Image.Image:
    """A small figure of the deletion and insertion curves against random orders, AUCs in the legend
    (matplotlib's Agg backend; the figure is closed before returning). `words=False`: numbers and symbols
    only (↓ over deletion, lower is better; ↑ over insertion), for a caption in any language."""
    fig = Figure(figsize=(4.8, 2.6), dpi=100)
    FigureCanvasAgg(fig)
    xs = np.linspace(0, 1, f.steps + 1)
    for ax, name, curve, rnd, a, ra in (
            (fig.add_subplot(1, 2, 1), "deletion", f.deletion_curve, f.random_deletion_curve,
             f.deletion_auc, f.random_deletion_auc),
            (fig.add_subplot(1, 2, 2), "insertion", f.insertion_curve, f.random_insertion_curve,
             f.insertion_auc, f.random_insertion_auc)):
        ax.plot(xs, curve, color="tab:red" if name == "deletion" else "tab:green",
                label=f"map {a:.3f}" if words else f"{a:.3f}")
        if rnd:
            ax.plot(xs, rnd, color="grey", linestyle="--", label=f"random {ra:.3f}" if words else f"{ra:.3f}")
        ax.set_ylim(0, 1.02)
        if words:
            ax.set_xlabel(f"fraction {'blurred' if name == 'deletion' else 'revealed'}", fontsize=8)
        ax.set_title(name if words else ("↓" if name == "deletion" else "↑"), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, title="AUC" if words else None, title_fontsize=7)
    if words:
        fig.axes[0].set_ylabel("p(target)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.18, top=0.8 if title else 0.88, wspace=0.25)
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    fig.clear()
    return image
