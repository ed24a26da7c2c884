"""One plain sentence under each panel of "Inside the ViT", generated from the measured numbers (never
from the paper), for the page and docs/inside.md alike.

Each function takes the figures (an `InsideRecord`, or the weight facts of vit.explore.figure7) and
returns Markdown; which sentence is said follows from the numbers (e.g. "nearly uniform" from a
normalised entropy of 0.97 on), so a checkpoint trained differently reads differently. The words are
templates under keys (`WORDS`, English: docs/inside.md's, and vit.app.i18n's EN table takes them in; its JA
table holds the same keys in Japanese); the page passes the visitor's table (`words=`), the numbers
formatted here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from vit.explore.inside import InsideRecord
from vit.models.attention import NEARLY_UNIFORM  # the entropy from which a row is "even", as the overlays say it

LOCAL = 0.6  # a head is "local" when its mean distance is under this share of uniform attention's
LAYOUT = 0.3  # position embeddings "know the layout" when neighbours are this much more alike than random pairs

WORDS: dict[str, str] = {
    "fv.inside.filters": "The {n} patterns along which this ViT's {dim} patch filters vary most, as colours (grey = 0), "
                         "first at top left: what it looks for in each {px} × {px} px patch. The first {first} carry "
                         "{share_first} of the filters' variety, all {n} {share_all}.",
    "fv.inside.filters.none": "No pixel filters to show: this ViT's patch embedding reads the {channels} feature channels "
                              "of its CNN stem, one {px} × {px} px cell at a time (a {k} × {k} projection), not pixels.",
    "fv.inside.position": "This ViT learned where each patch sits: neighbouring positions have similar embeddings "
                          "(cosine {neighbours}, against {random} for two positions at random){centre}{mirror}.",
    "fv.inside.position.centre": "; centre and border are opposites ({centre})",
    "fv.inside.position.mirror": "; left-right mirror positions are alike ({mirror}), so it tells how far from the edge "
                                 "a patch is better than which side it is on",
    "fv.inside.position.none": "Its position embeddings show no layout: neighbouring positions {neighbours}, two at "
                               "random {random}, spread {spread} (random {dim}-d vectors: {random_spread}).{cnn}",
    "fv.inside.position.cnn": " Presumably its CNN stem's features already say where each cell lies (an inference, "
                              "not measured).",
    "fv.inside.distance.none": "No attention figures: {note}.",
    "fv.inside.distance.even": "Every patch attends almost evenly to all {patches} patches, in every layer and head "
                               "(normalised entropy {entropy}, 1 = even; the strongest patch gets {peak}× an even share), "
                               "so every dot sits on the dashed line of even attention ({uniform} px). Only the class "
                               "token picks patches out (entropy {cls_entropy}, strongest {cls_peak}×); means over the "
                               "{photos} photos of {split}.",
    "fv.inside.distance": "In layer 1 each patch attends to a few patches of its choice (normalised entropy {entropy}, "
                          "the strongest getting {peak}× an even share), {distance} px away on average against "
                          "{uniform} px for even attention: selective, but {local}; means over the {photos} photos of "
                          "{split}.",
    "fv.inside.local.some": "some heads are local, as the lowest heads in the paper",
    "fv.inside.local.none": "no head is local like the lowest heads in the paper",
    "fv.inside.contrast": "**What the first layer of {sharp} does that {flat}'s does not:** each patch picks out a few "
                          "others (normalised entropy {sharp_entropy}, the strongest getting {sharp_peak}× an even "
                          "share), where the patches of {flat} spread their attention evenly over all {patches} "
                          "({flat_entropy}, {flat_peak}×){cnn}.",
    "fv.inside.contrast.cnn": ": its CNN stem has mixed each cell with its neighbours before the first layer, as the "
                              "paper found attention less local in its hybrids",
    "fv.inside.contrast.plain": "In layer 1 the patches of {sharp} attend more selectively (normalised entropy "
                                "{sharp_entropy}, 1 = even) than those of {flat} ({flat_entropy}).",
}


def _span(values, fmt: str) -> str:
    """'lo–hi' of the values in `fmt` (one number when they round alike)."""
    lo, hi = format(float(np.min(values)), fmt), format(float(np.max(values)), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def filters_text(weights: dict, patch_px: int, words: Mapping[str, str] = WORDS) -> str:
    """Under the filters panel: what the tiles are and how much of the filters' variety they carry; for a
    hybrid, why there is nothing to draw."""
    share = weights.get("filters_explained_variance")
    if not share:
        k = weights["patch_embedding_kernel"]
        return words["fv.inside.filters.none"].format(channels=weights["patch_embedding_channels"], px=patch_px, k=k)
    first = min(8, len(share))
    return words["fv.inside.filters"].format(n=len(share), dim=weights["embed_dim"], px=patch_px, first=first,
                                             share_first=f"{sum(share[:first]):.0%}", share_all=f"{sum(share):.0%}")


def position_text(weights: dict, words: Mapping[str, str] = WORDS) -> str:
    """Under the position-similarity panel: whether the embeddings learned the layout, in numbers."""
    s = weights["position_similarity"]
    if s["neighbours"] - s["all_pairs"] >= LAYOUT:
        centre = s["centre_vs_border"] <= -0.2
        mirror = s["left_right_mirror"] >= 0.5
        return words["fv.inside.position"].format(
            neighbours=f"{s['neighbours']:.2f}", random=f"{s['all_pairs']:.2f}",
            centre=words["fv.inside.position.centre"].format(centre=f"{s['centre_vs_border']:.2f}") if centre else "",
            mirror=words["fv.inside.position.mirror"].format(mirror=f"{s['left_right_mirror']:.2f}") if mirror else "")
    cnn = not weights.get("filters_explained_variance")
    return words["fv.inside.position.none"].format(
        neighbours=f"{s['neighbours']:.2f}", random=f"{s['all_pairs']:.2f}", spread=f"{s['all_pairs_std']:.2f}",
        dim=weights["embed_dim"], random_spread=f"{1 / math.sqrt(weights['embed_dim']):.2f}",
        cnn=words["fv.inside.position.cnn"] if cnn else "")


def distance_text(record: InsideRecord | None, note: str = "", words: Mapping[str, str] = WORDS) -> str:
    """Under the attention-distance panel: how far and how evenly the patches attend, layer 1 first."""
    if record is None:
        return words["fv.inside.distance.none"].format(note=note)
    e, p, d = (np.asarray(x) for x in (record.attention_entropy, record.attention_peak, record.attention_distance_px))
    u = record.uniform_distance_px
    if e.min() >= NEARLY_UNIFORM:
        return words["fv.inside.distance.even"].format(
            patches=record.patch_keys, entropy=_span(e, ".2f"), peak=_span(p, ".1f"), uniform=f"{u:.0f}",
            cls_entropy=_span(record.cls_attention_entropy, ".2f"), cls_peak=_span(record.cls_attention_peak, ".0f"),
            photos=record.photos, split=record.split)
    local = words["fv.inside.local.some" if d[0].min() < LOCAL * u else "fv.inside.local.none"]
    return words["fv.inside.distance"].format(
        entropy=_span(e[0], ".2f"), peak=_span(p[0], ".0f"), distance=_span(d[0], ".0f"), uniform=f"{u:.0f}",
        local=local, photos=record.photos, split=record.split)


def contrast_text(titled: dict[str, InsideRecord], words: Mapping[str, str] = WORDS) -> str:
    """Above the panels: what the most selective ViT's first layer does that the most even one's does not."""
    if len(titled) < 2:
        return ""
    first = {t: float(np.mean(r.attention_entropy[0])) for t, r in titled.items()}
    peak = {t: float(np.mean(r.attention_peak[0])) for t, r in titled.items()}
    sharp, flat = min(first, key=first.get), max(first, key=first.get)
    if first[flat] < NEARLY_UNIFORM or first[sharp] >= NEARLY_UNIFORM:
        return words["fv.inside.contrast.plain"].format(sharp=sharp, flat=flat, sharp_entropy=f"{first[sharp]:.2f}",
                                                        flat_entropy=f"{first[flat]:.2f}")
    cnn = not titled[flat].weights.get("filters_explained_variance")
    return words["fv.inside.contrast"].format(
        sharp=sharp, flat=flat, sharp_entropy=f"{first[sharp]:.2f}", sharp_peak=f"{peak[sharp]:.0f}",
        patches=titled[flat].patch_keys, flat_entropy=f"{first[flat]:.2f}", flat_peak=f"{peak[flat]:.1f}",
        cnn=words["fv.inside.contrast.cnn"] if cnn else "")
