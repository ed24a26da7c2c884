"""One plain sentence under each panel of "Inside the ViT", generated from the measured numbers (never
from the paper), for the page and docs/inside.md alike.

Each function takes the figures (an `InsideRecord`, or the weight facts of vit.explore.figure7) and
returns Markdown in English; which sentence is said follows from the numbers (e.g. "nearly uniform" from
a normalised entropy of 0.97 on), so a checkpoint trained differently reads differently.
"""
from __future__ import annotations

import math

import numpy as np

from vit.explore.figure7 import LINES
from vit.explore.inside import InsideRecord

NEARLY_UNIFORM = LINES[0]  # = vit.explain.render.NEARLY_UNIFORM (a test checks): entropy from which a row is "even"
LOCAL = 0.6  # a head is "local" when its mean distance is under this share of uniform attention's
LAYOUT = 0.3  # position embeddings "know the layout" when neighbours are this much more alike than random pairs


def _span(values, fmt: str) -> str:
    """'lo–hi' of the values in `fmt` (one number when they round alike)."""
    lo, hi = format(float(np.min(values)), fmt), format(float(np.max(values)), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def filters_text(weights: dict, patch_px: int) -> str:
    """Under the filters panel: what the tiles are and how much of the filters' variety they carry; for a
    hybrid, why there is nothing to draw."""
    share = weights.get("filters_explained_variance")
    if not share:
        k = weights["patch_embedding_kernel"]
        return (f"No pixel filters to show: this ViT's patch embedding reads the {weights['patch_embedding_channels']} "
                f"feature channels of its CNN stem, one {patch_px} × {patch_px} px cell at a time (a {k} × {k} "
                "projection), not pixels.")
    first = min(8, len(share))
    return (f"The {len(share)} patterns along which this ViT's {weights['embed_dim']} patch filters vary most, as "
            f"colours (grey = 0), first at top left: what it looks for in each {patch_px} × {patch_px} px patch. The "
            f"first {first} carry {sum(share[:first]):.0%} of the filters' variety, all {len(share)} "
            f"{sum(share):.0%}.")


def position_text(weights: dict) -> str:
    """Under the position-similarity panel: whether the embeddings learned the layout, in numbers."""
    s = weights["position_similarity"]
    if s["neighbours"] - s["all_pairs"] >= LAYOUT:
        text = (f"This ViT learned where each patch sits: neighbouring positions have similar embeddings (cosine "
                f"{s['neighbours']:.2f}, against {s['all_pairs']:.2f} for two positions at random)")
        if s["centre_vs_border"] <= -0.2:
            text += f"; centre and border are opposites ({s['centre_vs_border']:.2f})"
        if s["left_right_mirror"] >= 0.5:
            text += (f"; left-right mirror positions are alike ({s['left_right_mirror']:.2f}), so it tells how far "
                     "from the edge a patch is better than which side it is on")
        return text + "."
    random_spread = 1 / math.sqrt(weights["embed_dim"])
    text = (f"Its position embeddings show no layout: neighbouring positions {s['neighbours']:.2f}, two at random "
            f"{s['all_pairs']:.2f}, spread {s['all_pairs_std']:.2f} (random {weights['embed_dim']}-d vectors: "
            f"{random_spread:.2f}).")
    if not weights.get("filters_explained_variance"):
        text += " Presumably its CNN stem's features already say where each cell lies (an inference, not measured)."
    return text


def distance_text(record: InsideRecord | None, note: str = "") -> str:
    """Under the attention-distance panel: how far and how evenly the patches attend, layer 1 first."""
    if record is None:
        return f"Not measured: {note}."
    e, p, d = (np.asarray(x) for x in (record.attention_entropy, record.attention_peak, record.attention_distance_px))
    u = record.uniform_distance_px
    where = f"over the {record.photos} photos of {record.split}"
    if e.min() >= NEARLY_UNIFORM:
        return (f"Every patch attends almost evenly to all {record.patch_keys} patches, in every layer and head "
                f"(normalised entropy {_span(e, '.2f')}, 1 = even; the strongest patch gets {_span(p, '.1f')}× an even "
                f"share), so every dot sits on the dashed line of even attention ({u:.0f} px). Only the class token "
                f"picks patches out (entropy {_span(record.cls_attention_entropy, '.2f')}, strongest "
                f"{_span(record.cls_attention_peak, '.0f')}×); means {where}.")
    local = ("some heads are local, as the lowest heads in the paper" if d[0].min() < LOCAL * u
             else "no head is local like the lowest heads in the paper")
    return (f"In layer 1 each patch attends to a few patches of its choice (normalised entropy {_span(e[0], '.2f')}, "
            f"the strongest getting {_span(p[0], '.0f')}× an even share), {_span(d[0], '.0f')} px away on average "
            f"against {u:.0f} px for even attention: selective, but {local}; means {where}.")


def contrast_text(titled: dict[str, InsideRecord]) -> str:
    """Above the panels: what the most selective ViT's first layer does that the most even one's does not."""
    if len(titled) < 2:
        return ""
    first = {t: float(np.mean(r.attention_entropy[0])) for t, r in titled.items()}
    sharp, flat = min(first, key=first.get), max(first, key=first.get)
    b = titled[flat]
    peak = {t: float(np.mean(r.attention_peak[0])) for t, r in titled.items()}
    if first[flat] < NEARLY_UNIFORM or first[sharp] >= NEARLY_UNIFORM:
        return (f"In layer 1 the patches of {sharp} attend more selectively (normalised entropy {first[sharp]:.2f}, "
                f"1 = even) than those of {flat} ({first[flat]:.2f}).")
    hybrid = not b.weights.get("filters_explained_variance")
    return (f"**What the first layer of {sharp} does that {flat}'s does not:** each patch picks out a few others "
            f"(normalised entropy {first[sharp]:.2f}, the strongest getting {peak[sharp]:.0f}× an even share), where "
            f"the patches of {flat} spread their attention evenly over all {b.patch_keys} ({first[flat]:.2f}, "
            f"{peak[flat]:.1f}×)" + (": its CNN stem has mixed each cell with its neighbours before the first layer, "
                                     "as the paper found attention less local in its hybrids." if hybrid else "."))
