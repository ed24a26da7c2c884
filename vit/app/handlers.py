"""What each of the app's events does: check the request, run the model, say what to show.

Every event handler returns one typed answer: a `View` (what the page shows for a photo, field by
field), a `Controls` (the controls that follow the model and method) or a `Tick`; app.py binds the
fields to its components by name through `Outputs`, so no handler hands the page a positional tuple. A
field left `KEEP` is not touched on the page.

A request is checked once: the image is decoded once here (`decode`), the method, head and layer once
by the Predictor; whatever cannot be answered (an unknown or unavailable model, an unreadable image, a
method or head the model lacks, an explorer record or photo that is missing) raises a typed error on the
way (ModelError, ImageError, RequestError, RecordError) that `answers` turns into a `gr.Error` for the
person or API client that sent it, in one place, in the page's language. The API's endpoints are
vit.app.api.

A map is shown first and scored next (`show`, then `score_view`); the Handlers remember which map each
page (Gradio's session, from the event's gr.Request) put up last, so that a score finishing after a newer
map went up is dropped rather than written under it.

Every handler that says something takes the page's language last (`lang`, "en" or "ja": app.py's
state, set from the page's language probe, see vit.app.i18n); its default, English, is the API's.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
import numpy as np
from PIL import Image

from vit.app import i18n, ui
from vit.app.gradio_io import image_name, image_source, photo_file, result_file
from vit.app.i18n import DEFAULT, say
from vit.data.course import Library
from vit.data.images import MIN_SIDE, Decoded, ImageError, open_image, unreadable
from vit.explain import methods as registry
from vit.explore.explorer import FILE as EXPLORER_FILE
from vit.explore.explorer import NO_CHECKPOINTS, RecordError, Records
from vit.serve import heap
from vit.serve.cache import LRU
from vit.serve.model_set import ModelError, ModelSet, geometry, methods_of

if TYPE_CHECKING:  # the predictor imports in seconds: the page is served before the models load
    from vit.serve.predictor import Result
from vit.explain.errors import RequestError

ROLLOUT_DISCARD = 0.9  # rollout's default share of the weakest attention dropped
OPACITY = 0.5  # the overlay's default opacity
PAGES = 4096  # pages whose map on screen is remembered (the least recently active forgotten: scored as before)
NEW_PHOTO: tuple = ()  # the key of what a page shows after a new photo: no map (no Shown.key is empty)


class _Keep:
    """The value of an answer's field that leaves its component on the page as it is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


def layer_index(layer: int | float, num_layers: int) -> int:
    """The page's layer (from 1; 0 or less: the last) -> the model's index (from 0; -1: the last)."""
    index = int(layer) - 1 if int(layer) >= 1 else -1
    return min(index, num_layers - 1) if num_layers else -1


def answers(handler: Callable) -> Callable:
    """The one place where a request's typed errors become the `gr.Error` its sender reads, in the language
    of the handler's `lang` argument (English without one: the API); and where its memory is handed back
    when it is the last request in flight (vit.serve.heap)."""
    signature = inspect.signature(handler)

    @functools.wraps(handler)
    def answered(*args, **kwargs):
        try:
            with heap.RELEASED:
                return handler(*args, **kwargs)
        except (ModelError, ImageError, RequestError, RecordError) as e:
            try:
                lang = signature.bind(*args, **kwargs).arguments.get("lang", DEFAULT)
            except TypeError:
                lang = DEFAULT
            raise gr.Error(i18n.said(e, i18n.lang_of(lang))) from e
    return answered


@dataclass(frozen=True)
class Shown:
    """The request on screen (the page's state): what `redraw` and `score_view` read, so a later event
    scores exactly the map shown, on the photo already decoded, whatever the menus say by now."""
    model: str
    result: Result
    photo: Decoded
    method: str | None
    layer: int | float
    head: str
    discard: float

    @functools.cached_property
    def key(self) -> tuple:
        """What makes this map the one on screen: model, method and the map itself (two requests for the same
        view of the same photo give the same map, hence the same key)."""
        heat = self.result.heat
        digest = hashlib.sha1(np.ascontiguousarray(heat).tobytes()).hexdigest() if heat is not None else None
        return self.model, self.result.method, digest


@dataclass(frozen=True)
class View:
    """What the page shows for one request; app.py's `Outputs` binds each field to its component."""
    label: dict | None = KEEP  # class -> calibrated probability (gr.Label)
    timing: str = KEEP  # the unreliable-guess warning, then model time, device and size
    overlay: str | None = KEEP  # the map over the model's view (a result file)
    faithfulness: str = KEEP  # the map's deletion / insertion score, in words
    curves: str | None = KEEP  # the score's curves
    layers: str | None = KEEP  # every layer's class-token attention (ViTs)
    patches: str | None = KEEP  # the model's view cut into its patches or map cells
    verdict: str = KEEP  # in distribution or not, and the prediction set
    shown: Shown | None = KEEP  # the request on screen (gr.State)
    model: str = KEEP  # the model radio (an example click selects the default model)
    neighbours_text: str = KEEP  # the nearest training photos in words (their names when not on disk)
    # their thumbnails with captions (a gr.Gallery), None without the photos; a value, not a visibility update:
    # Gradio 6.31 fails on a Gallery's prop update in a lazily cached example ('Gallery' object has no attribute 'info')
    neighbours: list[tuple[str, str]] | None = KEEP


CLEARED = View(None, "", None, "", None, None, None, "", None, neighbours_text="", neighbours=None)  # no photo


@dataclass(frozen=True)
class Controls:
    """The controls that follow the chosen model and method."""
    card: str = KEEP
    layer: dict = KEEP  # gr.update for the layer slider
    head: dict = KEEP
    method: dict = KEEP
    discard: dict = KEEP
    layers: dict = KEEP  # the all-layer mosaic's visibility


@dataclass(frozen=True)
class Tick:
    """The status line while models load, and the chosen model's card as it becomes ready."""
    status: str = KEEP
    settled: frozenset = KEEP
    card: str = KEEP
    timer: gr.Timer = KEEP


@dataclass(frozen=True)
class ModelAnswer:
    """One model's column under Compare all."""
    label: dict | None
    text: str
    overlay: str | None


class Outputs:
    """Components by field name: binds a handler that returns one of the answers above to the page."""

    def __init__(self, **components: gr.components.Component) -> None:
        self.components = components

    def __iter__(self):
        return iter(self.components.values())

    def of(self, answer) -> dict:
        """{component: value} for every field of `answer` that is not KEEP (Gradio leaves the others)."""
        values = {f.name: getattr(answer, f.name) for f in fields(answer)}
        unknown = [name for name, v in values.items() if v is not KEEP and name not in self.components]
        assert not unknown, f"{type(answer).__name__} sets {unknown}, which have no component here"
        return {self.components[name]: v for name, v in values.items() if v is not KEEP}

    def bind(self, handler: Callable) -> Callable:
        @functools.wraps(handler)
        def bound(*args):  # an answer that changes nothing skips every component: Gradio reads {} as one value
            return self.of(handler(*args)) or {c: gr.skip() for c in self}
        return bound


class Columns:
    """One `Outputs` per model, in the page's order: binds a handler that returns a ModelAnswer per model."""

    def __init__(self) -> None:
        self.columns: list[Outputs] = []

    def add(self, **components: gr.components.Component) -> None:
        self.columns.append(Outputs(**components))

    def __iter__(self):
        return (c for column in self.columns for c in column)

    def bind(self, handler: Callable) -> Callable:
        @functools.wraps(handler)
        def bound(*args):
            return {c: v for column, answer in zip(self.columns, handler(*args)) for c, v in column.of(answer).items()}
        return bound


def thumbnails_key(shown: Shown) -> tuple:
    """What the nearest photos' thumbnails under an answer show: the same photos at the same distances."""
    return tuple((n.photo, round(n.distance, 6)) for n in shown.result.neighbours)


def _page(request: gr.Request | None) -> str | None:
    """The visitor's page (Gradio's session) an event came from; None for the API and for tests."""
    return getattr(request, "session_hash", None)


def decode(value, lang: str = DEFAULT) -> Decoded:
    """An event's or endpoint's raw image value (see vit.app.gradio_io) -> the photo, decoded once for the
    whole request (an already decoded one passes through); a warning when it is tiny."""
    if isinstance(value, Decoded):
        return value
    photo = Decoded(open_image(image_source(value)), image_name(value))
    warn_if_tiny(*photo.image.size, lang=lang)
    return photo


def warn_if_tiny(width: int, height: int, lang: str = DEFAULT) -> None:
    if min(width, height) < MIN_SIDE:
        gr.Warning(say(lang, "fv.warn.tiny", width=width, height=height))


class Handlers:
    """The app's event handlers over one served `ModelSet`; `default` is the model the page opens on."""

    def __init__(self, models: ModelSet, default: str | None, photos: Library | list[Path] | None = None,
                 records: Records | None = None) -> None:
        """`photos`: where the dataset photos are (thumbnails of the nearest training photos and of the mistakes),
        a Library or its folders (then a missing photo's data set is downloaded in the background; None: never,
        their names only); `records`: the explorer records (default: explorer.json beside the checkpoints)."""
        self.models, self.default = models, default
        self._on_screen = LRU(PAGES)  # page (Gradio session) -> the key of the map it shows (NEW_PHOTO: none)
        self._thumbnails = LRU(PAGES)  # page -> the key of the nearest photos' thumbnails it shows (None: none)
        self.library = photos if isinstance(photos, Library) else Library(photos or [], download=photos is not None)
        folder = next(iter(models.paths.values())).parent if models.paths else None
        self.records = records or (Records.read(folder / EXPLORER_FILE) if folder else Records({}, NO_CHECKPOINTS))

    # ------------------------------------------------------------ one request

    def explain(self, model: str, image, method: str | None, layer: int | float = -1, head: str = "mean",
                discard: float = ROLLOUT_DISCARD, score: bool = True, gate_features=None, lang: str = DEFAULT):
        """(predictor, result): one request's probabilities, verdict, map and (by default) its faithfulness;
        `gate_features`: another model's Result.gate_features for this photo (see Predictor.explain)."""
        p = self.models.get(model)
        photo = decode(image, lang)
        return p, p.explain(photo, method or None, layer=layer_index(layer, p.num_layers), head=head,
                            discard=float(discard), score=score, gate_features=gate_features)

    def pictures(self, p, r: Result, opacity: float, head: str, page: bool = False) -> View:
        """The pictures of a result: overlay, curves, every layer, patches (no words: the same in any language);
        for a `page`, those drawn over the photo as JPEGs, which its click waits less for (`result_file`), for
        the API lossless PNGs."""
        return View(overlay=result_file(ui.render_overlay(r, opacity), photo=page),
                    curves=result_file(ui.curves_image(r)),
                    layers=result_file(ui.render_layers(r, head, opacity), photo=page),
                    patches=result_file(ui.render_patches(r), photo=page))

    def words(self, p, r: Result, lang: str = DEFAULT, thumbnails: bool = True) -> View:
        """The texts of a result in `lang`: the label's classes, the answer line, the faithfulness, the verdict,
        and the nearest training photos (their captions are words too; without `thumbnails`, in words only)."""
        near = self.neighbours(p, r, lang, thumbnails)
        return View(label={i18n.class_name(c, lang): v for c, v in r.probs.items()}, timing=ui.answer_text(p, r, lang),
                    faithfulness=ui.faithfulness_text(r, lang=lang), verdict=ui.verdict_text(p, r, lang),
                    neighbours_text=near.neighbours_text, neighbours=near.neighbours)

    def neighbours(self, p, r: Result, lang: str = DEFAULT, thumbnails: bool = True) -> View:
        """The nearest training photos: thumbnails with class and distance when the photos are on this server
        (a missing one starts their download, vit.data.course: this answer does not wait), else their names.
        Without `thumbnails`, the words alone (neighbours KEEP)."""
        found = [self.library.find(n.photo) for n in r.neighbours]
        shown = bool(found) and all(found)
        text = ui.neighbours_text(p, r, shown, lang)
        if not thumbnails:
            return View(neighbours_text=text)
        gallery = [(photo_file(f), ui.neighbour_caption(n, lang)) for f, n in zip(found, r.neighbours)] if shown else None
        return View(neighbours_text=text, neighbours=gallery)

    def view(self, image, model, method, layer, head, opacity, discard, score: bool = True, lang: str = DEFAULT,
             page: str | None = None) -> View:
        """What the page shows for a photo, one model and its explanation (the parameters as /classify's):
        probabilities, timing text, the pictures (curves and score empty when not `score`d), verdict, and
        the request on screen, which `redraw` and `score_view` read."""
        photo = decode(image, lang)
        p, r = self.explain(model, photo, method, layer, head, discard, score)
        shown = Shown(model, r, photo, r.method, layer, head, discard)
        pictures, words = self.pictures(p, r, opacity, head, page is not None), self.words(p, r, lang, page is None)
        neighbours = words.neighbours
        if page is not None:  # the map this page is about to show (`score_view` lands only under it) ...
            self._on_screen.put(page, shown.key)
            if self._thumbnails.get(page) != thumbnails_key(shown):  # ... and its thumbnails, after the score
                neighbours, _ = None, self._thumbnails.put(page, None)  # (`after_score`): the overlay goes alone
        return View(words.label, words.timing, pictures.overlay, words.faithfulness, pictures.curves,
                    pictures.layers, pictures.patches, words.verdict, shown, neighbours_text=words.neighbours_text,
                    neighbours=neighbours)

    # ------------------------------------------------------------ the page's events

    @answers
    def show_example(self, image, model, lang: str = DEFAULT) -> View:
        """A clicked example, with the model's default method (cached after its first click, once per language)."""
        v = self.view(image, model, None, ui.LAYER_DEFAULT, "mean", OPACITY, ROLLOUT_DISCARD, lang=lang)
        return View(v.label, v.timing, v.overlay, v.faithfulness, v.curves, v.layers, v.patches, v.verdict,
                    neighbours_text=v.neighbours_text, neighbours=v.neighbours)

    @answers
    def show_default_example(self, image, lang: str = DEFAULT) -> View:
        """A clicked example thumbnail: the default model's answer, and that model selected on the page."""
        v = self.show_example(image, self.default, lang)
        return View(v.label, v.timing, v.overlay, v.faithfulness, v.curves, v.layers, v.patches, v.verdict,
                    model=self.default, neighbours_text=v.neighbours_text, neighbours=v.neighbours)

    @answers
    def redraw(self, shown: Shown | None, opacity, head) -> View:
        """Redraw the overlay and the layer mosaic at a new opacity (no model run)."""
        if not shown:
            return View()
        return View(overlay=result_file(ui.render_overlay(shown.result, opacity), photo=True),
                    layers=result_file(ui.render_layers(shown.result, head, opacity), photo=True))

    def new_photo(self, request: gr.Request | None = None) -> None:
        """A new photo (an upload, an example) replaces the answer on screen: the request state is cleared,
        and no score still running for the old map may land under the new photo's answer."""
        if _page(request) is not None:
            self._on_screen.put(_page(request), NEW_PHOTO)
            self._thumbnails.put(_page(request), None)
        return None

    def replaced(self, shown: Shown, request: gr.Request | None) -> bool:
        """Has the page that asks to score `shown` put up another map (or a new photo) since? Never for the API
        (no page), nor for a page it no longer remembers."""
        on_screen = self._on_screen.get(_page(request)) if _page(request) is not None else None
        return on_screen is not None and on_screen != shown.key

    def retell(self, shown: Shown | None, lang: str = DEFAULT) -> View:
        """The language changed (Gradio's Settings): the texts of the answer on screen, in the new one."""
        if not shown or shown.model not in self.models.models:
            return View()
        return self.words(self.models.models[shown.model], shown.result, lang)

    @answers
    def show(self, image, model, method, layer, head, opacity, discard, lang: str = DEFAULT,
             request: gr.Request | None = None) -> View:
        """The Classify button and a switch of method: the prediction, the verdict and the map at once,
        unscored; `score_view` scores that map next, so the overlay does not wait for the ~60 passes of
        its deletion / insertion score (/classify and /explain still give both in one call). Without a
        photo: the old results cleared."""
        if image is None:
            return CLEARED
        if method not in methods_of(self.models, model):  # the menu still shows the last model's method
            method = None
        return self.view(image, model, method, layer, head, opacity, discard, score=False, lang=lang,
                         page=_page(request))

    @answers
    def show_default(self, image, model, opacity, lang: str = DEFAULT, request: gr.Request | None = None) -> View:
        """A switch of model: the photo shown, explained by the new model's default method (the menu and the
        controls are reset to it at the same time), unscored as by `show`."""
        return self.show(image, model, None, 0, "mean", opacity, ROLLOUT_DISCARD, lang, request)

    @answers
    def redraw_map(self, image, model, method, layer, head, opacity, discard, lang: str = DEFAULT,
                   request: gr.Request | None = None) -> View:
        """After a new layer, head or discard ratio: the map from the photo's pass already made (no model
        run; Predictor.explain keeps it), unscored; `score_view` scores it next."""
        return self.show(image, model, method, layer, head, opacity, discard, lang, request)

    @answers
    def score_view(self, shown: Shown | None, lang: str = DEFAULT, request: gr.Request | None = None) -> View:
        """The faithfulness text and curves of the map shown: the request on screen (the same photo, already
        decoded, model, method and controls, whatever the menus show by now), scored once per photo, model,
        method and parameters (a view seen before is not scored again). Nothing (every field KEEP) when the
        page has put up another map or photo before or while it is scored: a late score never lands under a
        newer map (`replaced`)."""
        if not shown or self.replaced(shown, request):  # a newer map (or photo) is up: this one's score is moot
            return View()
        _, r = self.explain(shown.model, shown.photo, shown.method, shown.layer, shown.head, shown.discard)
        if self.replaced(shown, request):  # ... since the score started: it would land under the newer map
            return View()
        words = ui.faithfulness_text(r, lang=lang)
        if _page(request) is not None:  # a page: the words now, the curves' picture next (`after_score`)
            return View(faithfulness=words)
        return View(faithfulness=words, curves=result_file(ui.curves_image(r)))

    @answers
    def after_score(self, shown: Shown | None, lang: str = DEFAULT, request: gr.Request | None = None) -> View:
        """On a page, the pictures after the words: the score's curves (a plot, ~80 ms) and the nearest training
        photos' thumbnails, once per photo and model (a redraw keeps them); `view` and `score_view` leave them
        out so that the overlay and the score's text come sooner (docs/performance.md). Nothing when the page
        shows another map or photo by now."""
        page = _page(request)
        if not shown or self.replaced(shown, request):
            return View()
        _, r = self.explain(shown.model, shown.photo, shown.method, shown.layer, shown.head, shown.discard)
        thumbnails = KEEP
        if page is None or self._thumbnails.get(page) != thumbnails_key(shown):
            thumbnails = self.neighbours(self.models.models[shown.model], shown.result, lang).neighbours
            if page is not None:
                self._thumbnails.put(page, thumbnails_key(shown))
        return View(curves=result_file(ui.curves_image(r)), neighbours=thumbnails)

    @answers
    def compare(self, image, method, discard, lang: str = DEFAULT) -> list[ModelAnswer]:
        """Every model on the same image with the same explanation method (a model without it: its default),
        with the map's faithfulness and each model's verdict (the shared gate's backbone runs once per photo)."""
        photo = decode(image, lang)  # decoded once for every model (and the message once, not once per model)
        out, features = [], None
        for i in self.models.ids:
            try:
                self.models.get(i)
            except ModelError as e:
                why = say(lang, "fv.compare.loading") if e.code == "model.loading" else \
                    say(lang, "fv.compare.unavailable", why=e.values.get("detail", str(e)))
                out.append(ModelAnswer(None, why, None))
                continue
            own = method if method in methods_of(self.models, i) else None
            p, r = self.explain(i, photo, own, discard=discard, gate_features=features)
            features = r.gate_features if r.gate_features is not None else features
            out.append(ModelAnswer(self.words(p, r, lang).label, ui.compare_text(p, r, method, own is not None, lang),
                                   result_file(ui.render_overlay(r), photo=True)))
        return out

    @answers
    def check_upload(self, image, lang: str = DEFAULT) -> None:
        """On upload: refuse a file that is not an image at once (its header only); warn about a tiny one."""
        if image is None:
            return
        try:
            with Image.open(image_source(image)) as im:
                warn_if_tiny(*im.size, lang=lang)
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001 - every unreadable upload gets the same treatment
            raise unreadable(e, image_name(image)) from e

    def measure_latency(self, lang: str = DEFAULT):  # no docstring: it would become /measure_latency's description
        # the Compare models table, with each model's latency measured on this server
        from vit.bench.timing import measure_p50  # lazy: imports the predictor (seconds); a click, not start-up

        return ui.comparison_table(self.models, measure_p50(self.models), lang)

    def tables(self, lang: str = DEFAULT) -> tuple:
        """The Compare models tab in `lang`: the table and the loss and accuracy curves (their headers and
        legends are data, which the browser does not translate)."""
        return (ui.comparison_table(self.models, lang=lang), ui.history_frame(self.models, "loss", lang),
                ui.history_frame(self.models, "acc", lang))

    # ------------------------------------------------------------ controls that follow the model and method

    def on_model_change(self, model, lang: str = DEFAULT) -> Controls:
        """The chosen model's card and its methods; the controls that apply shown, the others hidden."""
        if model not in self.models.meta:
            return Controls(card=ui.unavailable_card(self.models, model, lang),
                            method=gr.update(choices=[], value=None), layers=gr.update(visible=False))
        methods = methods_of(self.models, model)
        return Controls(card=ui.status_card(self.models, model, lang), **self.controls(model, methods[0], reset=True),
                        method=gr.update(choices=ui.method_choices(methods), value=methods[0]),
                        layers=gr.update(visible=self.models.has_attention(model)))

    def controls(self, model: str, method: str | None, reset: bool = False) -> dict:
        """The layer slider, head menu and discard slider for `method` of `model`: shown for the methods that
        use them, hidden (not greyed) otherwise; `reset` (a new model) also sets their range and values."""
        layers, heads = geometry(self.models, model)
        uses = {c: registry.uses(method, c) for c in registry.CONTROLS}
        if not reset:
            return {"layer": gr.update(visible=uses[registry.LAYER] and layers > 1),
                    "head": gr.update(visible=uses[registry.HEAD] and heads > 0),
                    "discard": gr.update(visible=uses[registry.DISCARD])}
        layer = (gr.update(minimum=1, maximum=layers, value=layers, visible=uses[registry.LAYER])
                 if layers > 1 else gr.update(value=1, visible=False))  # a Slider needs minimum < maximum
        return {"layer": layer, "head": gr.update(choices=ui.head_menu(heads), value="mean",
                                                  visible=uses[registry.HEAD] and heads > 0),
                "discard": gr.update(visible=uses[registry.DISCARD])}

    def on_method_change(self, model, method) -> Controls:
        """Fit the controls to the method: those its registry entry uses (layer, head, discard) shown."""
        return Controls(**self.controls(model, method))

    def status_text(self, lang: str = DEFAULT) -> str:
        """The line about models still loading or unavailable (re-read on every page load)."""
        return ui.status_text(self.models, lang)

    def tick(self, model, settled, lang: str = DEFAULT) -> Tick:
        """While models load: refresh the status line and, as models become ready, the chosen one's card."""
        now = frozenset(i for i in self.models.ids if self.models.status(i) != "loading")
        timer = gr.Timer(active=len(now) < len(self.models.ids))
        if now == settled:
            return Tick(timer=timer)
        return Tick(self.status_text(lang), now, self.on_model_change(model, lang).card, timer)
