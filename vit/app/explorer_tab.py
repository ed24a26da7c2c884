"""The Explorer tab: per model, the test split's confusion matrix, every mistake of the test and validation
splits and the 2-D map of every photo, from the precomputed explorer record (vit.explore.explorer; the app
reads it at start and never recomputes it). A click on a mistake or on a point opens that photo in the
Classify tab with the model's answer and its default map, computed then.

`build` makes the tab's components inside the Blocks being built and binds their events; `Explorer` holds
what each event does, answering with typed dataclasses bound by field name (vit.app.handlers.Outputs). Its
static words are markers of vit.app.i18n; every event that says something takes the page's language
(`lang`) last, and a change of language says the tab again once it has been opened.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr

from vit.app import explorer_view as view
from vit.app import i18n, ui
from vit.app.gradio_io import photo_file
from vit.app.handlers import KEEP, Handlers, Outputs, answers
from vit.app.i18n import DEFAULT, marker
from vit.app.page import Classify
from vit.data.images import Decoded, open_image
from vit.explore.explorer import NONFOOD, RecordError, no_point, not_a_photo, not_here, points

if TYPE_CHECKING:
    from gradio.events import Dependency

TAB_ID = "explorer-tab"
CLASSIFY_TAB_BUTTON = "classify-tab-button"  # Gradio names a tab's button after the tab's elem_id ("classify-tab")
# Runs in the browser before the event's Python function: shows the Classify tab, passes the inputs on.
TO_CLASSIFY = "(...inputs) => {{ document.getElementById('{}')?.click(); return inputs; }}".format(CLASSIFY_TAB_BUTTON)


@dataclass(frozen=True)
class Explored:
    """What the tab shows for one model."""
    summary: str = KEEP
    confusion: str = KEEP
    map: str = KEEP  # the map's SVG (gr.HTML)
    mistakes: dict = KEEP  # gr.update of the mistakes' thumbnails (gr.Gallery), hidden without the photos
    mistakes_text: str = KEEP  # the mistakes in words
    shown: list = KEEP  # the photos in the gallery's order (gr.State): what a click on one opens
    opened: bool = KEEP  # the tab has been shown (gr.State): a change of language says it again


@dataclass(frozen=True)
class Opened:
    """A photo opened in the Classify tab: the model that answers for it, its answer and verdict at once (from
    the fast pass, milliseconds); the map, its score and the nearest training photos follow (Handlers.show_default)."""
    image: str = KEEP
    model: str = KEEP
    label: dict = KEEP
    verdict: str = KEEP


class Explorer:
    """The tab's events over the app's Handlers (its models, explorer records and dataset photos)."""

    def __init__(self, h: Handlers) -> None:
        self.h = h

    def show(self, model: str, lang: str = DEFAULT) -> Explored:
        """The model's views from its record; without one, a sentence saying why (the model is served all the same)."""
        try:
            record = self.h.records.get(model)
        except RecordError as e:
            return Explored(f"ℹ️ {i18n.said(e, lang)}", "", "", gr.update(value=None, visible=False), "", [], True)
        mistakes = view.all_mistakes(record)
        found = [(m, self.h.library.find(m["photo"])) for m in mistakes]
        on_disk = [(m, path) for m, path in found if path is not None]
        gallery = gr.update(value=[(photo_file(path), view.mistake_caption(m, lang)) for m, path in on_disk],
                            visible=bool(on_disk))
        return Explored(view.summary_text(record, self.h.models.titles.get(model, model), lang),
                        view.confusion_markdown(record, lang=lang), view.map_svg(record, lang), gallery,
                        view.mistakes_markdown(mistakes, len(on_disk) == len(mistakes), lang),
                        [m["photo"] for m, _ in on_disk], True)

    def retell(self, opened: bool, model: str, lang: str = DEFAULT) -> Explored:
        """The language changed: the tab said again in it once it has been opened (else nothing: no photo looked up)."""
        return self.show(model, lang) if opened else Explored()

    def open_photo(self, model: str, photo: str, lang: str = DEFAULT) -> Opened:
        """The dataset photo as the Classify tab's image, `model` chosen there, and its answer."""
        path = self.h.library.find(photo)
        if path is None:
            raise not_here(photo)
        p = self.h.models.get(model)
        r = p.answer(Decoded(open_image(path), path.name))  # a dataset photo on this server, not an upload
        return Opened(photo_file(path, side=None), model, {i18n.class_name(c, lang): v for c, v in r.probs.items()},
                      ui.verdict_text(p, r, lang))

    @answers
    def open_mistake(self, model: str, shown: list, evt: gr.SelectData, lang: str = DEFAULT) -> Opened:
        """A click on a mistake's thumbnail."""
        return self.open_photo(model, shown[evt.index], lang)

    @answers
    def open_point(self, model: str, evt: gr.SelectData, lang: str = DEFAULT) -> Opened:
        """A click on a point of the map (its index in the record's points)."""
        every = points(self.h.records.get(model))
        index = int(evt.index)
        if not 0 <= index < len(every):
            raise no_point(index)
        p = every[index]
        if p["split"] == NONFOOD:
            raise not_a_photo(p["photo"])
        return self.open_photo(model, p["photo"], lang)


def build(h: Handlers, c: Classify, page: Outputs, lang: gr.State, *, runs: dict,
          scored: Callable[[Dependency], Dependency]) -> gr.Tab:
    """The Explorer tab, made inside the Blocks being built, its events bound, its words in the page's language
    (`lang`, app.py's state); a click on a mistake or a point sets the photo and the model of the Classify tab
    (`c`), shows that tab and answers as a model switch does (`page`: the answer's components)."""
    ex = Explorer(h)
    with gr.Tab(marker("fv.tab.explorer"), elem_id=TAB_ID) as tab:
        gr.Markdown(marker("fv.explorer.intro"), elem_id="explorer-intro")
        choice = gr.Radio([(h.models.titles[i], i) for i in h.models.ids], value=h.default, label=marker("fv.model"),
                          elem_id="explorer-model")
        summary = gr.Markdown(elem_id="explorer-summary")
        with gr.Row():
            with gr.Column(scale=3):
                svg = gr.HTML(elem_id="explorer-map", js_on_load=view.MAP_CLICK_JS, css_template=view.MAP_CSS)
            with gr.Column(scale=2):
                confusion = gr.Markdown(elem_id="explorer-confusion")
        gallery = gr.Gallery(label=marker("fv.explorer.mistakes"), columns=8, height="auto", allow_preview=False,
                             visible=False, elem_id="explorer-mistakes")
        mistakes_text = gr.Markdown(elem_id="explorer-mistakes-text")
        shown = gr.State([])
        opened = gr.State(False)  # the tab has been shown: a change of language says it again
    shows = Outputs(summary=summary, confusion=confusion, map=svg, mistakes=gallery, mistakes_text=mistakes_text,
                    shown=shown, opened=opened)
    private = {"api_visibility": "private", "show_progress": "hidden"}
    for event in (tab.select, choice.change):
        event(shows.bind(ex.show), [choice, lang], list(shows), queue=False, **private)
    lang.change(shows.bind(ex.retell), [opened, choice, lang], list(shows), queue=False, **private)
    to = Outputs(image=c.image, model=c.model, label=page.components["label"], verdict=page.components["verdict"])
    answer = {"fn": page.bind(h.show_default), "inputs": [c.image, c.model, c.opacity, lang], "outputs": list(page),
              "js": TO_CLASSIFY, **runs}
    scored(gallery.select(to.bind(ex.open_mistake), [choice, shown, lang], list(to), show_progress="hidden",
                          **runs).success(**answer))  # then its score and pictures (app.py's `scored`)
    scored(svg.select(to.bind(ex.open_point), [choice, lang], list(to), show_progress="hidden", **runs).success(
        **answer))
    return tab
