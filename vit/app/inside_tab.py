"""The "Inside the ViT" tab: Figure 7 of Dosovitskiy et al. 2021 for every ViT served, side by side, one
row per panel (the patch filters, the position-embedding similarity, the mean attention distance per head
and layer), each with one sentence read from the measured numbers (vit.explore.inside_words).

The attention figures come from the record that `python -m vit.explore.inside` saved beside the
checkpoints (never recomputed here); the filters and position similarity from the model's own weights, at
the first look (the tab's first select or an /inside request), then kept per checkpoint file. Nothing is
computed while the page starts: the tab is empty until it is opened.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import gradio as gr
import numpy as np
import torch

from vit.app.gradio_io import result_file
from vit.explain.errors import RequestError
from vit.explore import figure7, inside_plots, inside_words
from vit.explore.inside import InsideRecord, record_for, sha256
from vit.models.attention import patch_size_px, token_grid
from vit.serve.model_set import ModelError, ModelSet

PANELS = ("filters", "position", "distance")  # the rows, top to bottom
# The tab's words: templates under keys, as vit.explore.inside_words' (a page in another language passes its own).
TAB_WORDS: dict[str, str] = {
    "fv.tab.inside": "Inside the ViT",
    "fv.inside.intro": "## Inside the ViT\nThe three views of the ViT paper's Figure 7 (Dosovitskiy et al. 2021) for "
                       "each Vision Transformer served here, side by side: what its first layer looks for in a patch, "
                       "what it learned about where patches sit, and how far its attention reaches in each layer. The "
                       "attention figures are means over the test photos (`python -m vit.explore.inside`); how each "
                       "is computed: docs/inside.md.",
    "fv.inside.panel.filters": "### Patch filters: the first principal components",
    "fv.inside.panel.position": "### Position embeddings: how alike each position is to every other",
    "fv.inside.panel.distance": "### Mean attention distance per head, by layer",
}


@dataclass(frozen=True)
class InsideView:
    """One ViT's Figure 7: its record (None when not measured, and why) and what its weights give."""
    model: str  # the model's id
    record: InsideRecord | None  # the attention figures on the test photos
    note: str  # why there is no record ("" when there is one)
    similarity: torch.Tensor  # (P, P) position-embedding cosine similarity
    tiles: np.ndarray | None  # (28, p, p, 3) filter components, None for a hybrid
    weights: dict  # figure7.weight_facts
    grid: tuple[int, int]  # (rows, cols) of patch tokens
    image_px: int  # the model's input side
    patch_px: int  # one token's side in input pixels


_views: dict[tuple[str, str], InsideView] = {}
_lock = threading.Lock()


def inside_view(models: ModelSet, model_id: str) -> InsideView:
    """A ViT's view, computed once per checkpoint file; RequestError for a model without attention,
    ModelError for one unknown, unavailable or still loading past the wait."""
    if model_id in models.meta and not models.has_attention(model_id):
        vits = [i for i in models.ids if models.has_attention(i)]
        raise RequestError(f"{models.titles[model_id]} has no attention maps: Inside the ViT is for the Vision "
                           f"Transformers ({', '.join(vits) or 'none served'})")
    p = models.get(model_id)
    key = (model_id, sha256(models.paths[model_id]))
    with _lock:
        if key not in _views:
            model = p.model
            grid = token_grid(model)
            record, note = record_for(models.paths[model_id])
            _views[key] = InsideView(
                model_id, record, note, figure7.position_similarity(model),
                figure7.patch_filter_pcs(model)[0] if figure7.reads_pixels(model) else None,
                figure7.weight_facts(model, grid), grid, p.image_size, patch_size_px(model, p.image_size))
        return _views[key]


def panel_pictures(v: InsideView) -> dict[str, str | None]:
    """The three panels as result files (None for a hybrid's filters)."""
    distance = None if v.record is None else inside_plots.distance_panel(
        v.record.attention_distance_px, v.record.uniform_distance_px, v.record.image_px)
    return {"filters": result_file(None if v.tiles is None else inside_plots.filters_panel(v.tiles)),
            "position": result_file(inside_plots.similarity_panel(v.similarity, v.grid)),
            "distance": result_file(distance)}


def panel_texts(v: InsideView) -> dict[str, str]:
    """One sentence under each panel, from the numbers."""
    return {"filters": inside_words.filters_text(v.weights, v.patch_px),
            "position": inside_words.position_text(v.weights),
            "distance": inside_words.distance_text(v.record, v.note)}  # English: inside_words.WORDS


def build(h, endpoint: Callable, concurrency_id: str) -> None:
    """The tab (inside app.py's Blocks): a row per panel, a column per ViT, filled when the tab is first
    opened; and the /inside endpoint (`endpoint`: vit.app.api's)."""
    models: ModelSet = h.models
    vits = [i for i in models.ids if models.has_attention(i)]
    with gr.Tab(TAB_WORDS["fv.tab.inside"], elem_id="inside-tab") as tab:
        gr.Markdown(TAB_WORDS["fv.inside.intro"], elem_id="inside-intro")
        contrast = gr.Markdown(elem_id="inside-contrast")
        pictures, texts = {}, {}
        for panel in PANELS:
            gr.Markdown(TAB_WORDS[f"fv.inside.panel.{panel}"])
            with gr.Row(equal_height=False):
                for i in vits:
                    with gr.Column():
                        pictures[panel, i] = gr.Image(label=models.titles[i], type="filepath", interactive=False,
                                                      elem_id=f"inside-{panel}-{i}", show_label=True)
                        texts[panel, i] = gr.Markdown(elem_id=f"inside-{panel}-{i}-text")

    def fill() -> dict:
        out, records = {}, {}
        for i in vits:
            try:
                v = inside_view(models, i)
            except (ModelError, RequestError, ValueError, OSError) as e:  # said in its column; the others shown
                for panel in PANELS:
                    out[pictures[panel, i]], out[texts[panel, i]] = gr.update(visible=False), f"⚠️ {e}"
                continue
            if v.record is not None:
                records[models.titles[i]] = v.record
            files, words = panel_pictures(v), panel_texts(v)
            for panel in PANELS:
                out[pictures[panel, i]] = gr.update(value=files[panel], visible=files[panel] is not None)
                out[texts[panel, i]] = words[panel]
        out[contrast] = inside_words.contrast_text(records)
        return out

    tab.select(fill, None, [contrast, *pictures.values(), *texts.values()], concurrency_id=concurrency_id,
               api_visibility="private")
    gr.api(endpoint, api_name="inside", concurrency_id=concurrency_id)
