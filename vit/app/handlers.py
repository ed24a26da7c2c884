"""What each of the app's events and endpoints does: check the request, run the model, say what to show.

app.py binds every widget event to one method of `Handlers`, and serves `api(handlers)` as the
/predict, /explain, /attention, /methods and /classify endpoints. A request that cannot be answered (unknown or
unavailable model, unreadable image, a head or method the model lacks) ends in a `gr.Error` whose
message is meant for the person or the API client that sent it; the checks themselves raise
`ValueError`s in vit.app.ui / vit.serve.model_set, testable without Gradio.

No `from __future__ import annotations` here: gr.api reads the endpoints' return annotations as
objects (`inspect.signature(fn).return_annotation`), and a string would make one output of two.
"""
from typing import Callable

import gradio as gr
from PIL import Image

from vit.app import ui
from vit.app.gradio_io import ImageFile, file_data, image_name, image_source, label_value, result_file
from vit.data.images import MIN_SIDE, ImageError, describe_error, open_image
from vit.explain import methods as registry
from vit.serve.model_set import ModelError, ModelSet, geometry, methods_of

ROLLOUT_DISCARD = 0.9  # rollout's default share of the weakest attention dropped
OPACITY = 0.5  # the overlay's default opacity


def layer_index(layer: int | float, num_layers: int) -> int:
    """The page's layer (from 1; 0 or less: the last) -> the model's index (from 0; -1: the last)."""
    index = int(layer) - 1 if int(layer) >= 1 else -1
    return min(index, num_layers - 1) if num_layers else -1


def choose_method(methods: tuple[str, ...], model: str, method: str | None) -> str | None:
    """`method` if the model has it (None or "": its default); else ValueError naming the ones it has."""
    if method in (None, ""):
        return methods[0] if methods else method
    if method not in methods:
        raise ValueError(f"unknown method {method!r} for {model}; choose one of {list(methods)}")
    return method


def warn_if_tiny(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        gr.Warning(f"The image is only {width} x {height} pixels; the prediction means little.")


class Handlers:
    """The app's event handlers over one served `ModelSet`; `default` is the model the page opens on."""

    def __init__(self, models: ModelSet, default: str | None) -> None:
        self.models, self.default = models, default

    # ------------------------------------------------------------ checks shared by every request

    def model(self, model_id: str):
        """The loaded model (vit.serve.predictor.Predictor) or a gr.Error: unknown, still loading, unavailable."""
        try:
            return self.models.get(model_id)
        except ModelError as e:
            raise gr.Error(str(e)) from e

    def image(self, value):
        """An event's raw image value (see vit.app.gradio_io) -> an upright RGB PIL image, or a gr.Error; a PIL
        image already decoded by this request is passed through (decoded once per request)."""
        if isinstance(value, Image.Image):
            return value
        try:
            img = open_image(image_source(value))
        except ImageError as e:
            raise gr.Error(str(e)) from e
        warn_if_tiny(*img.size)
        return img

    def head(self, p, head: str | int | None) -> int | str:
        """The head menu's value for model `p`, or a gr.Error; "mean" for a model without heads."""
        try:
            return ui.parse_head(head, p.num_heads) if p.num_heads else "mean"
        except ValueError as e:
            raise gr.Error(str(e)) from e

    def explain_request(self, model: str, image, method: str | None, layer: int = -1, head: str = "mean",
                        discard: float = ROLLOUT_DISCARD, score: bool = True, gate_features=None):
        """(predictor, result): one request's probabilities, verdict, map and (by default) its faithfulness;
        `gate_features`: another model's Result.gate_features for this photo (see Predictor.explain)."""
        if model not in self.models.meta:
            self.model(model)  # the message: unknown, or why it is unavailable
        try:
            method = choose_method(methods_of(self.models, model), model, method)
        except ValueError as e:
            raise gr.Error(str(e)) from e
        p, img = self.model(model), self.image(image)
        return p, p.explain(img, method, layer=layer_index(layer, p.num_layers), head=self.head(p, head),
                            discard=float(discard), score=score, gate_features=gate_features)

    def page(self, p, r, opacity, head) -> tuple:
        """What the page shows for a result: overlay, faithfulness text and curves, every layer, patches."""
        return (result_file(ui.render_overlay(r, opacity)), ui.faithfulness_text(r),
                result_file(ui.curves_image(r)), result_file(ui.render_layers(r, self.head(p, head), opacity)),
                result_file(ui.render_patches(r)))

    # ------------------------------------------------------------ the page's events

    def classify(self, image, model, method, layer, head, opacity, discard, score: bool = True):
        """What the page shows for a photo, one model and its explanation (the parameters as /classify's):
        probabilities, timing text, overlay, faithfulness text and curves (empty when not `score`d),
        every layer, patches, verdict; and the state for the events that follow: (model, result, the
        request: the decoded photo and the controls), which `redraw` and `score_view` read."""
        img = self.image(image)
        p, r = self.explain_request(model, img, method, layer, head, discard, score)
        request = {"image": img, "method": r.method, "layer": layer, "head": head, "discard": discard}
        return (r.probs, ui.answer_text(p, r), *self.page(p, r, opacity, head), ui.verdict_text(p, r),
                (model, r, request))

    def show_example(self, image, model):
        """A clicked example, with the model's default method (cached after its first click)."""
        return self.classify(image, model, None, ui.LAYER_DEFAULT, "mean", OPACITY, ROLLOUT_DISCARD)[:8]

    def show_default_example(self, image):
        """A clicked example thumbnail: the default model's answer, and that model selected on the page."""
        return (*self.show_example(image, self.default), self.default)

    def redraw(self, state, opacity, head):
        """Redraw the overlay and the layer mosaic at a new opacity (no model run)."""
        if not state:
            return gr.skip(), gr.skip()
        model, r, _ = state
        p = self.model(model)
        return result_file(ui.render_overlay(r, opacity)), result_file(ui.render_layers(r, self.head(p, head), opacity))

    def show(self, image, model, method, layer, head, opacity, discard):
        """The Classify button and a switch of method: the prediction, the verdict and the map at once,
        unscored; `score_view` scores that map next, so the overlay does not wait for the ~60 passes of
        its deletion / insertion score (/classify and /explain still give both in one call). Without a
        photo: the old results cleared."""
        if image is None:
            return None, "", None, "", None, None, None, "", None
        if method not in methods_of(self.models, model):  # the menu still shows the last model's method
            method = None
        return self.classify(image, model, method, layer, head, opacity, discard, score=False)

    def show_default(self, image, model, opacity):
        """A switch of model: the photo shown, explained by the new model's default method (the menu and the
        controls are reset to it at the same time), unscored as by `show`."""
        return self.show(image, model, None, 0, "mean", opacity, ROLLOUT_DISCARD)

    def redraw_map(self, image, model, method, layer, head, opacity, discard):
        """After a new layer, head or discard ratio: the map from the photo's pass already made (no model
        run; Predictor.explain keeps it), unscored; `score_view` scores it next."""
        if image is None or method not in methods_of(self.models, model):
            return self.show(image, model, method, layer, head, opacity, discard)
        return self.classify(image, model, method, layer, head, opacity, discard, score=False)

    def score_view(self, state):
        """The faithfulness text and curves of the map shown: the request in the page's state (the same
        photo, already decoded, model, method and controls, whatever the menus show by now), scored once
        per photo, model, method and parameters (a view seen before is not scored again)."""
        if not state:  # a new photo replaced the one shown
            return gr.skip(), gr.skip()
        model, _, q = state
        p, r = self.explain_request(model, q["image"], q["method"], q["layer"], q["head"], q["discard"])
        return ui.faithfulness_text(r), result_file(ui.curves_image(r))

    def compare(self, image, method, discard):
        """Every model on the same image with the same explanation method (a model without it: its default),
        with the map's faithfulness and each model's verdict (the shared gate's backbone runs once per photo)."""
        image = self.image(image)  # decoded once for every model (and the message once, not once per model)
        outputs, features = [], None
        for i in self.models.ids:
            try:
                self.models.get(i)
            except ModelError as e:
                outputs += [None, str(e).replace(f"{self.models.titles[i]} is ", ""), None]
                continue
            own = method if method in methods_of(self.models, i) else None
            p, r = self.explain_request(i, image, own, discard=discard, gate_features=features)
            features = r.gate_features if r.gate_features is not None else features
            outputs += [r.probs, ui.compare_text(p, r, method, own is not None), result_file(ui.render_overlay(r))]
        return outputs

    def check_upload(self, image):
        """On upload: refuse a file that is not an image at once; warn about a tiny one."""
        if image is None:
            return
        try:
            with Image.open(image_source(image)) as im:
                warn_if_tiny(*im.size)
        except ImageError as e:
            raise gr.Error(str(e)) from e
        except Exception as e:  # noqa: BLE001 - every unreadable upload gets the same treatment
            raise gr.Error(describe_error(e, image_name(image))) from e

    def measure_latency(self):
        from vit.bench.timing import measure_p50  # lazy: imports the predictor (seconds); a click, not start-up

        return ui.comparison_rows(self.models, measure_p50(self.models))

    # ------------------------------------------------------------ controls that follow the model and method

    def on_model_change(self, model):
        """The chosen model's card and its methods; the controls that apply shown, the others hidden."""
        if model not in self.models.meta:
            return (ui.unavailable_card(self.models, model), gr.update(), gr.update(),
                    gr.update(choices=[], value=None), gr.update(visible=False))
        methods = methods_of(self.models, model)
        layers, heads = geometry(self.models, model)
        return (ui.status_card(self.models, model), *self.controls(methods[0], layers, heads),
                gr.update(choices=ui.method_choices(methods), value=methods[0]),
                gr.update(visible=self.models.has_attention(model)))

    @staticmethod
    def controls(method, layers: int, heads: int):
        """Layer slider and head menu: shown for the methods that use them, hidden (not greyed) otherwise."""
        uses_layer = registry.uses(method, registry.LAYER)
        layer = (gr.update(minimum=1, maximum=layers, value=layers, visible=uses_layer)
                 if layers > 1 else gr.update(value=1, visible=False))  # a Slider needs minimum < maximum
        return layer, gr.update(choices=ui.head_choices(heads), value="mean",
                                visible=registry.uses(method, registry.HEAD) and heads > 0)

    def on_method_change(self, model, method):
        """Fit the controls to the method: those its registry entry uses (layer, head, discard) shown."""
        layer, head = self.controls(method, *geometry(self.models, model))
        return gr.update(visible=layer.get("visible", False)), gr.update(visible=head["visible"]), \
            gr.update(visible=registry.uses(method, registry.DISCARD))

    def on_model_default_method(self, model):
        """The discard slider for the model's default method (shown if that method uses it)."""
        return gr.update(visible=registry.uses((methods_of(self.models, model) or ("",))[0], registry.DISCARD))

    def status_text(self) -> str:
        """The header's line about models still loading or unavailable (re-read on every page load)."""
        return ui.status_text(self.models)

    def tick(self, model, settled):
        """While models load: refresh the status line and, as models become ready, the chosen one's card."""
        now = frozenset(i for i in self.models.ids if self.models.status(i) != "loading")
        done = len(now) == len(self.models.ids)
        if now == settled:
            return gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=not done)
        return self.status_text(), now, self.on_model_change(model)[0], gr.Timer(active=not done)


def api(h: Handlers) -> list[Callable]:
    """The gr.api endpoints /predict, /explain, /attention, /methods and /classify. Their signatures and docstrings
    are what API and MCP clients read, `model` defaulting to the page's default model: hence functions
    made here, around `h`, each a call to one of its methods."""
    default = h.default

    def predict(image: ImageFile, model: str = default) -> tuple[dict, dict]:
        """Classify a food photo: class probabilities and how long the model took.

        Args:
            image: the food photo (JPEG, PNG, WebP, ...).
            model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
        Returns:
            The label ({"label": top class, "confidences": [{"label", "confidence"}, ...]}, calibrated
            probabilities) and a record of the model, its latency in ms, the device, its size in MB, its number
            of parameters, and its gate's verdict: in_distribution (true / false, null when the model has no
            gate), ood_score, ood_threshold (out of distribution when the score is above it), prediction_set
            (the 90 % conformal set of class names, most probable first) and temperature (probabilities are
            softmax(logits / temperature)).
        """
        p, img = h.model(model), h.image(image)
        r = p.classify(img)
        return label_value(r.probs), ui.predict_record(model, p, r)

    def explain(image: ImageFile, model: str = default, method: str = "") -> tuple[ImageFile, dict]:
        """Explain a prediction with one method: a heat map over the pixels the model saw, and how faithful it is.

        Args:
            image: the food photo.
            model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
            method: an explanation method of that model (see /methods); empty for the model's default.
        Returns:
            The overlay image, and a record: model, method, label, probs, deletion_auc, insertion_auc,
            random_deletion_auc, random_insertion_auc (deletion: lower is better; insertion: higher),
            latency_ms (the forward pass), explain_ms (the map and its score), and the gate's in_distribution,
            ood_score, ood_threshold, prediction_set and temperature (as /predict).
        """
        p, r = h.explain_request(model, image, method or None)
        return file_data(result_file(ui.render_overlay(r, OPACITY))), ui.explain_record(model, r)

    def attention(image: ImageFile, model: str = default, view: str = registry.first_using(registry.LAYER), layer: int = 1, head: str = "mean",
                  opacity: float = 0.5, discard: float = 0.9) -> tuple[ImageFile | None, ImageFile | None]:
        """Attention maps: one layer's class-token attention or the rollout over all layers, and every layer.

        Args:
            image: the food photo.
            model: the model's id (its checkpoint's file stem).
            view: "attention" (one layer), "rollout" (all layers) or "grad-cam"; a model without attention
                always gives its default map.
            layer: the attention layer, from 1.
            head: "mean", "max" or "head N".
            opacity: the overlay's opacity, 0 to 1.
            discard: rollout's share of the weakest attention dropped, 0 to 0.99.
        Returns:
            The overlay image and the per-layer mosaic (None for a model without attention).
        """
        methods_ = methods_of(h.models, model)
        method = view if view in methods_ else (methods_[0] if methods_ else None)
        p, r = h.explain_request(model, image, method, layer, head, discard, score=False)
        overlay_file, _, _, layers_file, _ = h.page(p, r, opacity, head)
        return file_data(overlay_file), file_data(layers_file)

    def methods() -> dict:
        """Which explanation methods each model offers.

        Returns:
            {model id: [method ids, the model's default first]}.
        """
        return {i: list(methods_of(h.models, i)) for i in h.models.ids if i in h.models.meta}

    def classify(image: ImageFile, model: str = default, method: str = "", layer: int = ui.LAYER_DEFAULT,
                 head: str = "mean", opacity: float = OPACITY, discard: float = ROLLOUT_DISCARD
                 ) -> tuple[dict, str, ImageFile, str, ImageFile, ImageFile | None, ImageFile, str]:
        """Everything the page shows for a photo, in one call: the prediction, its explanation and its score.

        Args:
            image: the food photo (JPEG, PNG, WebP, ...).
            model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
            method: an explanation method of that model (see /methods); empty for the model's default.
            layer: the attention layer shown by "attention", from 1 (0 or less: the last).
            head: "mean", "max" or "head N" (attention and rollout).
            opacity: the overlay's opacity, 0 to 1.
            discard: rollout's share of the weakest attention dropped, 0 to 0.99.
        Returns:
            The label (calibrated probabilities, as /predict), the timing text (after a warning when the photo
            is out of distribution), the overlay, the faithfulness text, the deletion / insertion curves, every
            layer's attention (None for a model without attention), the patch grid and the verdict (in
            distribution or not, the 90 % prediction set, or that the model has no gate).
        """
        probs, timing, overlay, faithful, curves, layers, patches, verdict, _ = h.classify(
            image, model, method or None, layer, head, opacity, discard)
        return (label_value(probs), timing, file_data(overlay), faithful, file_data(curves), file_data(layers),
                file_data(patches), verdict)

    return [predict, explain, attention, methods, classify]
