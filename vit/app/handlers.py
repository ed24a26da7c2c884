"""What each of the app's events does: check the request, run the model, say what to show.

Every event handler returns one typed answer: a `View` (what the page shows for a photo, field by
field), a `Controls` (the controls that follow the model and method) or a `Tick`; app.py binds the
fields to its components by name through `Outputs`, so no handler hands the page a positional tuple. A
field left `KEEP` is not touched on the page.

A request is checked once: the image is decoded once here (`decode`), the method, head and layer once
by the Predictor; whatever cannot be answered (an unknown or unavailable model, an unreadable image, a
method or head the model lacks) raises a typed error on the way (ModelError, ImageError, RequestError)
that `answers` turns into a `gr.Error` for the person or API client that sent it, in one place. The
API's endpoints are vit.app.api.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
from PIL import Image

from vit.app import ui
from vit.app.gradio_io import image_name, image_source, photo_file, result_file
from vit.data.course import Library
from vit.explore.explorer import FILE as EXPLORER_FILE
from vit.explore.explorer import RecordError, Records
from vit.data.images import MIN_SIDE, Decoded, ImageError, describe_error, open_image
from vit.explain import methods as registry
from vit.explain.rollout import head_choices
from vit.serve.model_set import ModelError, ModelSet, geometry, methods_of

if TYPE_CHECKING:  # the predictor imports in seconds: the page is served before the models load
    from vit.serve.predictor import Result
from vit.explain.errors import RequestError

ROLLOUT_DISCARD = 0.9  # rollout's default share of the weakest attention dropped
OPACITY = 0.5  # the overlay's default opacity


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
    """The one place where a request's typed errors become the `gr.Error` its sender reads."""
    @functools.wraps(handler)
    def answered(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except (ModelError, ImageError, RequestError, RecordError) as e:
            raise gr.Error(str(e)) from e
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
        def bound(*args):
            return self.of(handler(*args))
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


def decode(value) -> Decoded:
    """An event's or endpoint's raw image value (see vit.app.gradio_io) -> the photo, decoded once for the
    whole request (an already decoded one passes through); a warning when it is tiny."""
    if isinstance(value, Decoded):
        return value
    photo = Decoded(open_image(image_source(value)), image_name(value))
    warn_if_tiny(*photo.image.size)
    return photo


def warn_if_tiny(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        gr.Warning(f"The image is only {width} x {height} pixels; the prediction means little.")


class Handlers:
    """The app's event handlers over one served `ModelSet`; `default` is the model the page opens on."""

    def __init__(self, models: ModelSet, default: str | None, photos: Library | list[Path] | None = None,
                 records: Records | None = None) -> None:
        """`photos`: where the dataset photos are (thumbnails of the nearest training photos and of the mistakes),
        a Library or its folders (then a missing photo's data set is downloaded in the background; None: never,
        their names only); `records`: the explorer records (default: explorer.json beside the checkpoints)."""
        self.models, self.default = models, default
        self.library = photos if isinstance(photos, Library) else Library(photos or [], download=photos is not None)
        folder = next(iter(models.paths.values())).parent if models.paths else None
        self.records = records or (Records.read(folder / EXPLORER_FILE) if folder else Records({}, "no checkpoints"))

    # ------------------------------------------------------------ one request

    def explain(self, model: str, image, method: str | None, layer: int | float = -1, head: str = "mean",
                discard: float = ROLLOUT_DISCARD, score: bool = True, gate_features=None):
        """(predictor, result): one request's probabilities, verdict, map and (by default) its faithfulness;
        `gate_features`: another model's Result.gate_features for this photo (see Predictor.explain)."""
        p = self.models.get(model)
        photo = decode(image)
        return p, p.explain(photo, method or None, layer=layer_index(layer, p.num_layers), head=head,
                            discard=float(discard), score=score, gate_features=gate_features)

    def pictures(self, p, r: Result, opacity: float, head: str) -> View:
        """The pictures of a result: overlay, faithfulness text and curves, every layer, patches."""
        return View(overlay=result_file(ui.render_overlay(r, opacity)), faithfulness=ui.faithfulness_text(r),
                    curves=result_file(ui.curves_image(r)), layers=result_file(ui.render_layers(r, head, opacity)),
                    patches=result_file(ui.render_patches(r)))

    def neighbours(self, p, r: Result) -> View:
        """The nearest training photos: thumbnails with class and distance when the photos are on this server
        (a missing one starts their download, vit.data.course: this answer does not wait), else their names."""
        found = [self.library.find(n.photo) for n in r.neighbours]
        shown = bool(found) and all(found)
        gallery = [(photo_file(f), ui.neighbour_caption(n)) for f, n in zip(found, r.neighbours)] if shown else None
        return View(neighbours_text=ui.neighbours_text(p, r, shown), neighbours=gallery)

    def view(self, image, model, method, layer, head, opacity, discard, score: bool = True) -> View:
        """What the page shows for a photo, one model and its explanation (the parameters as /classify's):
        probabilities, timing text, the pictures (curves and score empty when not `score`d), verdict, and
        the request on screen, which `redraw` and `score_view` read."""
        photo = decode(image)
        p, r = self.explain(model, photo, method, layer, head, discard, score)
        shown = Shown(model, r, photo, r.method, layer, head, discard)
        pictures, near = self.pictures(p, r, opacity, head), self.neighbours(p, r)
        return View(r.probs, ui.answer_text(p, r), pictures.overlay, pictures.faithfulness, pictures.curves,
                    pictures.layers, pictures.patches, ui.verdict_text(p, r), shown,
                    neighbours_text=near.neighbours_text, neighbours=near.neighbours)

    # ------------------------------------------------------------ the page's events

    @answers
    def show_example(self, image, model) -> View:
        """A clicked example, with the model's default method (cached after its first click)."""
        v = self.view(image, model, None, ui.LAYER_DEFAULT, "mean", OPACITY, ROLLOUT_DISCARD)
        return View(v.label, v.timing, v.overlay, v.faithfulness, v.curves, v.layers, v.patches, v.verdict,
                    neighbours_text=v.neighbours_text, neighbours=v.neighbours)

    @answers
    def show_default_example(self, image) -> View:
        """A clicked example thumbnail: the default model's answer, and that model selected on the page."""
        v = self.show_example(image, self.default)
        return View(v.label, v.timing, v.overlay, v.faithfulness, v.curves, v.layers, v.patches, v.verdict,
                    model=self.default, neighbours_text=v.neighbours_text, neighbours=v.neighbours)

    @answers
    def redraw(self, shown: Shown | None, opacity, head) -> View:
        """Redraw the overlay and the layer mosaic at a new opacity (no model run)."""
        if not shown:
            return View()
        return View(overlay=result_file(ui.render_overlay(shown.result, opacity)),
                    layers=result_file(ui.render_layers(shown.result, head, opacity)))

    @answers
    def show(self, image, model, method, layer, head, opacity, discard) -> View:
        """The Classify button and a switch of method: the prediction, the verdict and the map at once,
        unscored; `score_view` scores that map next, so the overlay does not wait for the ~60 passes of
        its deletion / insertion score (/classify and /explain still give both in one call). Without a
        photo: the old results cleared."""
        if image is None:
            return CLEARED
        if method not in methods_of(self.models, model):  # the menu still shows the last model's method
            method = None
        return self.view(image, model, method, layer, head, opacity, discard, score=False)

    @answers
    def show_default(self, image, model, opacity) -> View:
        """A switch of model: the photo shown, explained by the new model's default method (the menu and the
        controls are reset to it at the same time), unscored as by `show`."""
        return self.show(image, model, None, 0, "mean", opacity, ROLLOUT_DISCARD)

    @answers
    def redraw_map(self, image, model, method, layer, head, opacity, discard) -> View:
        """After a new layer, head or discard ratio: the map from the photo's pass already made (no model
        run; Predictor.explain keeps it), unscored; `score_view` scores it next."""
        return self.show(image, model, method, layer, head, opacity, discard)

    @answers
    def score_view(self, shown: Shown | None) -> View:
        """The faithfulness text and curves of the map shown: the request on screen (the same photo, already
        decoded, model, method and controls, whatever the menus show by now), scored once per photo, model,
        method and parameters (a view seen before is not scored again)."""
        if not shown:  # a new photo replaced the one shown
            return View()
        _, r = self.explain(shown.model, shown.photo, shown.method, shown.layer, shown.head, shown.discard)
        return View(faithfulness=ui.faithfulness_text(r), curves=result_file(ui.curves_image(r)))

    @answers
    def compare(self, image, method, discard) -> list[ModelAnswer]:
        """Every model on the same image with the same explanation method (a model without it: its default),
        with the map's faithfulness and each model's verdict (the shared gate's backbone runs once per photo)."""
        photo = decode(image)  # decoded once for every model (and the message once, not once per model)
        out, features = [], None
        for i in self.models.ids:
            try:
                self.models.get(i)
            except ModelError as e:
                out.append(ModelAnswer(None, str(e).replace(f"{self.models.titles[i]} is ", ""), None))
                continue
            own = method if method in methods_of(self.models, i) else None
            p, r = self.explain(i, photo, own, discard=discard, gate_features=features)
            features = r.gate_features if r.gate_features is not None else features
            out.append(ModelAnswer(r.probs, ui.compare_text(p, r, method, own is not None),
                                   result_file(ui.render_overlay(r))))
        return out

    @answers
    def check_upload(self, image) -> None:
        """On upload: refuse a file that is not an image at once (its header only); warn about a tiny one."""
        if image is None:
            return
        try:
            with Image.open(image_source(image)) as im:
                warn_if_tiny(*im.size)
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001 - every unreadable upload gets the same treatment
            raise ImageError(describe_error(e, image_name(image))) from e

    def measure_latency(self) -> list[list]:
        from vit.bench.timing import measure_p50  # lazy: imports the predictor (seconds); a click, not start-up

        return ui.comparison_rows(self.models, measure_p50(self.models))

    # ------------------------------------------------------------ controls that follow the model and method

    def on_model_change(self, model) -> Controls:
        """The chosen model's card and its methods; the controls that apply shown, the others hidden."""
        if model not in self.models.meta:
            return Controls(card=ui.unavailable_card(self.models, model), method=gr.update(choices=[], value=None),
                            layers=gr.update(visible=False))
        methods = methods_of(self.models, model)
        return Controls(card=ui.status_card(self.models, model), **self.controls(model, methods[0], reset=True),
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
        return {"layer": layer, "head": gr.update(choices=head_choices(heads), value="mean",
                                                  visible=uses[registry.HEAD] and heads > 0),
                "discard": gr.update(visible=uses[registry.DISCARD])}

    def on_method_change(self, model, method) -> Controls:
        """Fit the controls to the method: those its registry entry uses (layer, head, discard) shown."""
        return Controls(**self.controls(model, method))

    def status_text(self) -> str:
        """The header's line about models still loading or unavailable (re-read on every page load)."""
        return ui.status_text(self.models)

    def tick(self, model, settled) -> Tick:
        """While models load: refresh the status line and, as models become ready, the chosen one's card."""
        now = frozenset(i for i in self.models.ids if self.models.status(i) != "loading")
        timer = gr.Timer(active=len(now) < len(self.models.ids))
        if now == settled:
            return Tick(timer=timer)
        return Tick(self.status_text(), now, self.on_model_change(model).card, timer)
