"""Pictures of explanations: heat-map overlays, the patch grid, a mosaic of every layer, and the
deletion / insertion curves of a faithfulness score.

Two scales. Attention weights (class-token attention, rollout: a distribution over the patch keys) are
drawn on one fixed scale shared by every model, layer, head and photo: weight x number of patch keys
(1 = uniform attention), on log2 from 1x to 32x, the blend growing with it, so uniform attention leaves
the photo untouched and a 5x peak looks weaker than a 15x one (`times_uniform`, `scaled_overlay`,
`scale_bar`: its labels are numbers). Every other map has no such reference and is stretched from its own
lowest to its highest cell, a relative scale (`overlay`, `colour_bar`); the page says which in words.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from vit.explain.faithfulness import Faithfulness
from vit.models.attention import NEARLY_UNIFORM, normalised_entropy, peak_ratio


def normalise(heat: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (all zeros stays all zeros)."""
    heat = heat - heat.min()
    top = heat.max()
    return heat / top if top > 0 else heat


CMAP = "inferno"  # perceptually uniform, readable in grey and by colour-blind eyes (jet invents edges)
SCALE = (1.0, 32.0)  # the attention scale: weight x patch keys from uniform to 32x, log2 between (docs/inside.md)
BLEND, BLEND_POWER = 1.7, 0.75  # blend = BLEND * opacity * value ** BLEND_POWER: at opacity 0.5, 0 at 1x, 0.25 at 2x, 0.85 at 32x
COLOUR_FROM = 0.3  # the fixed scale's colours: the colour map from here (magenta) to its top (yellow), not from black


@dataclass(frozen=True)
class Sharpness:
    """How far a map of attention weights is from uniform, read from the map that is drawn."""
    peak: float  # its largest weight x number of cells: 1 = uniform
    entropy: float  # normalised entropy of the map renormalised over its cells: 1 = uniform, 0 = one cell
    cells: int  # how many cells (patch keys) it spreads over

    @property
    def nearly_uniform(self) -> bool:
        return self.entropy >= NEARLY_UNIFORM


def times_uniform(heat: np.ndarray) -> np.ndarray:
    """A map of attention weights (any sum: a class row over the patch keys) -> each cell's weight as a
    multiple of uniform attention's: renormalised over the cells, times their number (uniform = 1)."""
    h = np.clip(np.asarray(heat, dtype=np.float64), 0.0, None)
    total = h.sum()
    return h / total * h.size if total > 0 else np.ones_like(h)


def sharpness(heat: np.ndarray) -> Sharpness:
    """The drawn map's peak (x uniform) and normalised entropy, renormalised over its cells (as defined by
    vit.models.attention for Figure 7's rows)."""
    h = np.clip(np.asarray(heat, dtype=np.float64), 0.0, None).ravel()
    p = torch.as_tensor(h / h.sum() if h.sum() > 0 else np.full(h.size, 1.0 / h.size))  # (cells,)
    entropy = normalised_entropy(p).item() if p.numel() > 1 else 0.0
    return Sharpness(peak_ratio(p).item(), entropy, int(p.numel()))


def on_scale(heat: np.ndarray, lo: float = SCALE[0], hi: float = SCALE[1]) -> np.ndarray:
    """A map of attention weights -> [0, 1] on the fixed scale: log2 of `times_uniform` between `lo`
    (0: uniform, and anything weaker) and `hi` (1), clipped; one octave is 0.2 on 1x-32x."""
    ratio = np.maximum(times_uniform(heat), 1e-12)
    return np.clip((np.log2(ratio) - math.log2(lo)) / (math.log2(hi) - math.log2(lo)), 0.0, 1.0)


def _blend(v: np.ndarray, opacity: float) -> np.ndarray:
    """Per-pixel blend of the colour at scaled value v in [0, 1]: 0 at uniform, growing with v."""
    return np.clip(BLEND * float(np.clip(opacity, 0.0, 1.0)) * v ** BLEND_POWER, 0.0, 1.0)


def _colour(v: np.ndarray, cmap: str) -> np.ndarray:
    """(..., 3) colours of scaled values in [0, 1]: the colour map's upper part, so that a weak concentration
    tints the photo rather than darkening it (inferno's black end would read as a veil)."""
    return colormaps[cmap](COLOUR_FROM + (1 - COLOUR_FROM) * v)[..., :3]


def scaled_overlay(image: Image.Image, heat: np.ndarray, opacity: float = 0.5, cmap: str = CMAP) -> Image.Image:
    """Attention weights (rows, cols) over the image on the fixed scale (`on_scale`), never stretched:
    the colour's blend grows with the value (`_blend`), so uniform attention leaves the photo as it is."""
    v = Image.fromarray(np.uint8(np.round(on_scale(heat) * 255))).resize(image.size, Image.BILINEAR)
    v = np.asarray(v, dtype=np.float64) / 255.0  # (H, W)
    colour = _colour(v, cmap)  # (H, W, 3)
    base = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    a = _blend(v, opacity)[..., None]
    return Image.fromarray(np.uint8(np.round(((1 - a) * base + a * colour) * 255)))


def scale_bar(image: Image.Image, cmap: str = CMAP, width: int = 10, lo: float = SCALE[0],
              hi: float = SCALE[1]) -> Image.Image:
    """The image with the fixed attention scale drawn inside its right edge over its lower half: the colours
    as `scaled_overlay` blends them at the default opacity over mid grey, each octave labelled 1x, 2x, ...
    (the image keeps its size)."""
    out = image.convert("RGB").copy()
    height = max(20, int(out.height * 0.5))
    x0, y0 = out.width - width - 6, out.height - height - 6
    v = np.linspace(1, 0, height)  # top = high
    a = _blend(v, 0.5)[:, None]
    ramp = (1 - a) * 0.5 + a * _colour(v, cmap)  # (height, 3) on grey
    out.paste(Image.fromarray(np.repeat((ramp * 255).astype(np.uint8)[:, None, :], width, axis=1)), (x0, y0))
    draw = ImageDraw.Draw(out)
    draw.rectangle([x0 - 1, y0 - 1, x0 + width, y0 + height], outline=(255, 255, 255))
    octaves = round(math.log2(hi / lo))
    for k in range(octaves + 1):
        y = y0 + (height - 1) * (1 - k / octaves)
        _label(draw, f"{lo * 2 ** k:g}x", x0 - 3, y - 6)
    return out


def _label(draw: ImageDraw.ImageDraw, text: str, right: float, top: float) -> None:
    """White text on a black box whose right edge is at `right`."""
    box = draw.textbbox((0, 0), text)
    tx = right - (box[2] - box[0]) - 1
    draw.rectangle([tx - 2, top - 1, tx + box[2] - box[0] + 1, top + box[3] - box[1] + 2], fill=(0, 0, 0))
    draw.text((tx, top), text, fill=(255, 255, 255))


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
                 tile: int = 160, scaled: bool = False) -> Image.Image:
    """Every layer's overlay at once, in reading order, each labelled with its layer number; `scaled`:
    attention weights on the fixed scale (`scaled_overlay`), each tile also labelled with its peak
    (x uniform), else each map stretched on its own (`overlay`)."""
    cols = cols or min(len(heats), 4)
    rows = math.ceil(len(heats) / cols)
    small = image.convert("RGB").resize((tile, tile), Image.BICUBIC)
    mosaic = Image.new("RGB", (cols * tile, rows * tile), (255, 255, 255))
    draw = ImageDraw.Draw(mosaic)
    for i, heat in enumerate(heats):
        x, y = (i % cols) * tile, (i // cols) * tile
        mosaic.paste(scaled_overlay(small, heat, alpha) if scaled else overlay(small, heat, alpha), (x, y))
        label = f"L{i + 1}" + (f" {sharpness(heat).peak:.1f}x" if scaled else "")
        width = draw.textbbox((0, 0), label)[2] + 5
        draw.rectangle([x, y + tile - 14, x + width, y + tile], fill=(0, 0, 0))  # bottom-left: clear of the bar
        draw.text((x + 2, y + tile - 13), label, fill=(255, 255, 255))
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
