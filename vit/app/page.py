"""The page's layout: its components, in the order a visitor meets them, and its style; app.py wires them.

The first screen holds what a visitor does first: the photo, the example photos right under it, the
model and the Classify button (in view at 1400 x 900; on a phone the examples follow the photo). The
answer fills the right-hand column; a box with nothing to show yet (the prediction, the map, its curves,
the layer mosaic, the patch grid) is hidden by CSS until it holds something, so nothing above or beside it
moves when it appears. Every static text is a marker of vit.app.i18n (translated by the browser); the
example galleries are one per language, shown by CSS on `<html lang>` (each caches its own answers).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from vit.app import handlers, i18n, ui
from vit.app.i18n import marker
from vit.serve.model_set import ModelSet, max_heads, max_layers, methods_of

GALLERY = {"en": "examples", "ja": "examples-ja"}  # each language's example gallery (elem_id); #examples: English
_THUMBS = ", ".join(f"#{g}" for g in GALLERY.values())
CSS = f"""
/* one example gallery per language: Gradio sets <html lang> to the language it chose */
html:lang(ja) #{GALLERY['en']}, html:not(:lang(ja)) #{GALLERY['ja']} {{ display: none !important; }}
/* no empty boxes: a result picture or prediction shows once it holds one */
.until-value:not(:has(img)) {{ display: none !important; }}
.until-label:not(:has([data-testid=label-output-value])) {{ display: none !important; }}
/* the examples: one row of small square thumbnails under the photo (they wrap on a phone) */
{", ".join(f"#{g} .gallery" for g in GALLERY.values())} {{ gap: 6px; }}
{", ".join(f"#{g} .gallery-item .container" for g in GALLERY.values())} {{ width: 64px !important; height: 64px !important; }}
{", ".join(f"#{g} .gallery-item img" for g in GALLERY.values())} {{ width: 100% !important; height: 100% !important; object-fit: cover; }}
#header p {{ margin-bottom: 0; }}
#switch {{ text-align: right; }}
details > summary {{ cursor: pointer; }}
@media (max-width: 480px) {{
  .gradio-container {{ padding-left: 8px !important; padding-right: 8px !important; }}
  {_THUMBS} {{ overflow-x: hidden; }}
}}
"""


@dataclass
class Classify:
    """The Classify tab's components that events read or write."""
    image: gr.Image
    examples: gr.Column  # where the galleries go, right under the photo (filled by `examples`)
    model: gr.Radio
    run: gr.Button
    run_all: gr.Button
    card: gr.Markdown
    status: gr.Markdown
    verdict: gr.Markdown
    label: gr.Label
    timing: gr.Markdown
    overlay: gr.Image
    faithfulness: gr.Markdown
    neighbours_text: gr.Markdown  # the nearest training photos (vit.explore), in words
    neighbours: gr.Gallery  # ... and their thumbnails
    compare_row: gr.Row
    columns: handlers.Columns
    method: gr.Dropdown
    layer: gr.Slider
    head: gr.Dropdown
    opacity: gr.Slider
    discard: gr.Slider
    curves: gr.Image
    layers: gr.Image
    patches: gr.Image


def language() -> tuple[gr.Textbox, gr.State]:
    """The language probe (a hidden Textbox whose value Gradio translates to "en" or "ja") and the state that
    keeps the page's language for every event (a gr.State: the API's parameters do not change)."""
    return gr.Textbox(marker("fv.lang"), visible="hidden", elem_id="lang-probe"), gr.State(i18n.DEFAULT)


def header() -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=9):
            gr.Markdown(marker("fv.header"), elem_id="header")
        with gr.Column(scale=1, min_width=100):
            gr.Markdown(marker("fv.switch"), elem_id="switch")  # 🌐: Gradio's Settings, whose menu sets the language


def classify_tab(models: ModelSet, default: str | None) -> Classify:
    """The photo, the examples, the model and the buttons on the left; the answer on the right; then Compare
    all, the explanation's controls and its figures."""
    ids = models.ids
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            image = gr.Image(type="filepath", label=marker("fv.photo"), sources=["upload", "webcam", "clipboard"],
                             height=280, elem_id="image-input", image_mode=None)
            examples = gr.Column(elem_id="example-slot")
            model = gr.Radio([(models.titles[i], i) for i in ids], value=default, label=marker("fv.model"),
                             elem_id="model-radio")
            with gr.Row():
                run = gr.Button(marker("fv.classify"), variant="primary", elem_id="classify-btn")
                run_all = gr.Button(marker("fv.compare_all"), elem_id="compare-btn")
            with gr.Accordion(marker("fv.card"), open=True, elem_id="card-accordion"):  # below the buttons
                card = gr.Markdown(elem_id="model-card")
        with gr.Column(scale=1, min_width=320):
            status = gr.Markdown(elem_id="model-status")  # models still loading: empty once they are ready
            verdict = gr.Markdown(elem_id="verdict")  # in distribution or not, first (vit.trust)
            label = gr.Label(num_top_classes=3, label=marker("fv.prediction"), elem_id="prediction",
                             elem_classes="until-label")
            timing = gr.Markdown(elem_id="timing")
            overlay = gr.Image(label=marker("fv.explanation"), type="filepath", height=300, interactive=False,
                               elem_id="overlay", elem_classes="until-value")
            faithfulness = gr.Markdown(elem_id="faithfulness")
            neighbours_text = gr.Markdown(elem_id="neighbours-text")
            neighbours = gr.Gallery(label=marker("fv.neighbours"), columns=5, height=200, elem_id="neighbours",
                                    elem_classes="until-value")
    with gr.Row(visible=False, equal_height=True, elem_id="compare-row") as compare_row:
        columns = handlers.Columns()  # each model's answer under Compare all
        for i in ids:
            with gr.Column():
                gr.Markdown(f"### {models.titles[i]}")
                columns.add(label=gr.Label(num_top_classes=3, label=marker("fv.prediction")), text=gr.Markdown(),
                            overlay=gr.Image(type="filepath", interactive=False, height=240,
                                             label=marker("fv.explanation.short")))
    with gr.Accordion(marker("fv.controls"), open=True):
        with gr.Row():
            methods = methods_of(models, default) if default else ()
            method = gr.Dropdown(ui.method_choices(methods), value=(methods or (None,))[0], label=marker("fv.method"),
                                 elem_id="method-dropdown")
            layer = gr.Slider(1, max(2, max_layers(models)), value=ui.LAYER_DEFAULT, step=1, label=marker("fv.layer"),
                              elem_id="layer-slider", visible=False)
            head = gr.Dropdown(ui.head_menu(max_heads(models)), value="mean", label=marker("fv.head"),
                               allow_custom_value=True, elem_id="head-dropdown", visible=False)
            opacity = gr.Slider(0.0, 1.0, value=handlers.OPACITY, step=0.05, label=marker("fv.opacity"),
                                elem_id="opacity-slider")
            discard = gr.Slider(0.0, 0.99, value=handlers.ROLLOUT_DISCARD, step=0.01, label=marker("fv.discard"),
                                visible=False, info=marker("fv.discard.info"), elem_id="discard-slider")
    with gr.Row():
        figures = {name: gr.Image(label=marker(f"fv.{name}"), type="filepath", interactive=False, elem_id=name,
                                  elem_classes="until-value") for name in ("curves", "layers", "patches")}
    return Classify(image, examples, model, run, run_all, card, status, verdict, label, timing, overlay, faithfulness,
                    neighbours_text, neighbours, compare_row, columns, method, layer, head, opacity, discard, **figures)


def examples(slot: gr.Column, photos: list[Path], image: gr.Image, outputs: list,
             answer: Callable[[str], Callable]) -> dict[str, gr.Examples]:
    """One gallery of the example photos per language in `slot` (under the photo), each answering with
    `answer(lang)` and caching its own answers lazily: a visitor never gets another language's cached
    texts. A click also selects the default model. {lang: gr.Examples}; none without photos."""
    if not photos:
        return {}
    with slot:
        return {lang: gr.Examples([[str(p)] for p in photos], inputs=[image], outputs=outputs, fn=answer(lang),
                                  cache_examples=True, cache_mode="lazy", preprocess=False, elem_id=GALLERY[lang],
                                  examples_per_page=len(photos), label=marker("fv.examples"),
                                  api_name="load_example" if lang == i18n.DEFAULT else f"load_example_{lang}")
                for lang in i18n.LANGS}


@dataclass
class Compare:
    """The Compare models tab's components that events write."""
    table: gr.Dataframe
    measure: gr.Button
    loss: gr.LinePlot
    acc: gr.LinePlot


def compare_tab(models: ModelSet) -> Compare:
    gr.Markdown(marker("fv.compare.intro"))
    table = gr.Dataframe(ui.comparison_table(models), interactive=False, elem_id="comparison")
    measure = gr.Button(marker("fv.measure"))
    with gr.Row():
        plots = [gr.LinePlot(ui.history_frame(models, metric), x="epoch", y="value", color="curve",
                             title=marker(f"fv.plot.{metric}"), height=360, x_title=marker("fv.plot.epoch"),
                             y_title=marker(f"fv.plot.{metric}_y"), color_title=marker("fv.plot.curve"),
                             elem_id=f"curves-{metric}")
                 for metric in ("loss", "acc")]
    image, _ = ui.reliability(models)  # before / after temperature scaling (vit.trust), drawn without words
    gr.Markdown(marker("fv.reliability.caption"), elem_id="reliability-caption")
    gr.Image(image, label=marker("fv.reliability"), interactive=False, elem_id="reliability")
    return Compare(table, measure, *plots)
