"""The "Inside the ViT" tab: Figure 7 of Dosovitskiy et al. 2021 for every ViT served, side by side, one
row per panel (the patch filters, the position-embedding similarity, the mean attention distance per head
and layer), each with one sentence read from the measured numbers (vit.explore.inside_words), in the page's
language (its static words are markers of vit.app.i18n, its sentences are said from the tables).

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

from vit.app import i18n
from vit.app.gradio_io import result_file
from vit.app.i18n import DEFAULT, marker
from vit.explain.errors import RequestError
from vit.explore import figure7, inside_plots, inside_words
from vit.explore.inside import InsideRecord, record_for, sha256
from vit.messages import Said
from vit.models.attention import patch_size_px, token_grid
from vit.serve.model_set import ModelError, ModelSet

PANELS = ("filters", "position", "distance")  # the rows, top to bottom


@dataclass(frozen=True)
class InsideView:
    """One ViT's Figure 7: its record (None when not measured, and why) and what its weights give."""
    model: str  # the model's id
    record: InsideRecord | None  # the attention figures on the test photos
    note: Said | None  # why there is no record (None when there is one); English as str(), coded for i18n
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
        named = {"model": models.titles[model_id], "vits": ", ".join(vits) or "—"}
        raise RequestError("{model} has no attention maps: Inside the ViT is for the Vision Transformers ({vits})"
                           .format(**named), "request.no_attention", **named)
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


def panel_texts(v: InsideView, lang: str = DEFAULT) -> dict[str, str]:
    """One sentence under each panel, from the numbers, in `lang` (vit.app.i18n's tables)."""
    words = i18n.words(lang)
    return {"filters": inside_words.filters_text(v.weights, v.patch_px, words),
            "position": inside_words.position_text(v.weights, words),
            "distance": inside_words.distance_text(v.record, i18n.said(v.note, lang) if v.note else "", words)}


Views = dict[str, "InsideView | Exception"]  # each ViT's view, or why it cannot be shown


def views(models: ModelSet, vits: list[str]) -> Views:
    """Each ViT's view; a model that cannot be shown (loading past the wait, unavailable, unreadable) gives its
    error, said in its own column while the others are shown."""
    out: Views = {}
    for i in vits:
        try:
            out[i] = inside_view(models, i)
        except (ModelError, RequestError, ValueError, OSError) as e:
            out[i] = e
    return out


def tab_texts(models: ModelSet, shown: Views, lang: str = DEFAULT) -> dict:
    """The tab's built words in `lang`: {"contrast": the sentence above the panels, (panel, model id): the
    sentence under each panel} (a model that cannot be shown: "⚠️" and why, under each of its panels)."""
    out: dict = {"contrast": inside_words.contrast_text(
        {models.titles[i]: v.record for i, v in shown.items() if isinstance(v, InsideView) and v.record is not None},
        i18n.words(lang))}
    for i, v in shown.items():
        said = panel_texts(v, lang) if isinstance(v, InsideView) else dict.fromkeys(PANELS, f"⚠️ {i18n.said(v, lang)}")
        out.update({(panel, i): said[panel] for panel in PANELS})
    return out


def build(h, endpoint: Callable, concurrency_id: str, lang: gr.State) -> None:
    """The tab (inside app.py's Blocks): a row per panel, a column per ViT, filled when the tab is first
    opened, its words in the page's language (`lang`, app.py's state), said again when that changes; and the
    /inside endpoint (`endpoint`: vit.app.api's)."""
    models: ModelSet = h.models
    vits = [i for i in models.ids if models.has_attention(i)]
    with gr.Tab(marker("fv.tab.inside"), elem_id="inside-tab") as tab:
        gr.Markdown(marker("fv.inside.intro"), elem_id="inside-intro")
        contrast = gr.Markdown(elem_id="inside-contrast")
        pictures, texts = {}, {}
        for panel in PANELS:
            gr.Markdown(marker(f"fv.inside.panel.{panel}"))
            with gr.Row(equal_height=False):
                for i in vits:
                    with gr.Column():
                        pictures[panel, i] = gr.Image(label=models.titles[i], type="filepath", interactive=False,
                                                      elem_id=f"inside-{panel}-{i}", show_label=True)
                        texts[panel, i] = gr.Markdown(elem_id=f"inside-{panel}-{i}-text")
        opened = gr.State(False)  # the tab has been filled: a change of language says its words again

    def words(shown: Views, lang: str) -> dict:
        said = tab_texts(models, shown, lang)
        return {contrast: said.pop("contrast"), **{texts[key]: text for key, text in said.items()}}

    def fill(lang: str = DEFAULT) -> dict:
        shown, out = views(models, vits), {opened: True}
        for i, v in shown.items():
            files = panel_pictures(v) if isinstance(v, InsideView) else dict.fromkeys(PANELS)
            out.update({pictures[panel, i]: gr.update(value=files[panel], visible=files[panel] is not None)
                        for panel in PANELS})
        return {**out, **words(shown, lang)}

    def retell(is_open: bool, lang: str = DEFAULT) -> dict:
        return words(views(models, vits), lang) if is_open else {contrast: gr.skip()}  # not opened: nothing to say

    tab.select(fill, [lang], [opened, contrast, *pictures.values(), *texts.values()], concurrency_id=concurrency_id,
               api_visibility="private")
    lang.change(retell, [opened, lang], [contrast, *texts.values()], queue=False, api_visibility="private",
                show_progress="hidden")  # the views are kept once the tab was opened: words only, no model run
    gr.api(endpoint, api_name="inside", concurrency_id=concurrency_id)
