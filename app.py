"""FoodVision ViT: classify a food photo with every model in a checkpoint folder, and see why.

    python app.py                          # checkpoints/ (or $FOODVISION_CHECKPOINTS); open the printed URL
    python app.py --checkpoints DIR        # every *.safetensors in DIR, of any family and class list
    python app.py --mcp                    # also an MCP server (or GRADIO_MCP_SERVER=True)

Widgets are wired to functions in `vit.ui`; the page is served at once and the models load behind it.
"""

import argparse
import hashlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from vit import examples as example_photos
from vit import ui
from vit.gradio_io import ImageFile, file_data, image_name, image_source, label_value, result_file
from vit.images import MIN_SIDE, ImageError, describe_error, open_image

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
ROOT = Path(__file__).resolve().parent


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", help="folder of *.safetensors checkpoints (default: $FOODVISION_CHECKPOINTS "
                                          "or ./checkpoints)")
    p.add_argument("--mcp", action="store_true", help="also serve the API as MCP tools")
    return p.parse_args(argv)


ARGS = _args(sys.argv[1:] if __name__ == "__main__" else [])
PATHS = ui.checkpoint_paths(ARGS.checkpoints)
MODELS = ui.ModelSet(PATHS, ui.optimisations(ids=list(PATHS)))  # $FOODVISION_OPTIMISE: see README
IDS = MODELS.ids
DEFAULT = max((i for i in IDS if i in MODELS.meta), default=IDS[0] if IDS else None,
              key=lambda i: (MODELS.has_attention(i), MODELS.meta[i].get("metrics", {}).get("test", {}).get("accuracy", 0)))
CLASSES = ui.classes_text(MODELS.class_names())
QUEUE = {"default_concurrency_limit": 2, "max_size": 32}  # 2 CPU cores: two requests compute at once
MODEL_RUNS = "model"  # the one concurrency_id of every event that runs a model: the limit is for all together
MAX_FILE_SIZE = "25mb"
EXAMPLES = example_photos.find(ROOT / "examples")
# Examples are cached at first use, on disk; key the cache by the checkpoints and this code, so a new
# checkpoint folder or a new app never shows another's answers.
_code = hashlib.sha256(Path(__file__).read_bytes() + Path(ui.__file__).read_bytes()).hexdigest()[:8]
EXAMPLES_CACHE = (Path(os.environ.get("FOODVISION_EXAMPLES_CACHE") or Path(tempfile.gettempdir()) / "foodvision-examples")
                  / f"{MODELS.fingerprint()}-{_code}")
os.environ["GRADIO_EXAMPLES_CACHE"] = str(EXAMPLES_CACHE)  # read by gr.Examples when it is built


def _model(model_id: str):
    try:
        return MODELS.get(model_id)
    except ui.ModelError as e:
        raise gr.Error(str(e)) from e


def _warn_if_tiny(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        gr.Warning(f"The image is only {width} x {height} pixels; the prediction means little.")


def _image(value):
    """An event's raw image value (see vit.gradio_io) -> an upright RGB PIL image, or a gr.Error."""
    try:
        img = open_image(image_source(value))
    except ImageError as e:
        raise gr.Error(str(e)) from e
    _warn_if_tiny(*img.size)
    return img


def _method(model: str, method: str | None) -> str:
    """`method` if model `model` has it (None: its default); else a gr.Error naming the ones it has."""
    methods = ui.methods_of(MODELS, model)
    if method in (None, ""):
        return methods[0] if methods else method
    if method not in methods:
        raise gr.Error(f"unknown method {method!r} for {model}; choose one of {list(methods)}")
    return method


def _explain(model: str, image, method: str | None, layer: int = -1, head: str = "mean", discard: float = 0.9,
             score: bool = True):
    """(predictor, result): one request's probabilities, map and (by default) its faithfulness."""
    if model not in MODELS.meta:
        _model(model)  # the message: unknown, or why it is unavailable
    method = _method(model, method)
    p, img = _model(model), _image(image)
    try:
        head = ui.parse_head(head, p.num_heads) if p.num_heads else "mean"
    except ValueError as e:
        raise gr.Error(str(e)) from e
    layer = int(layer) - 1 if int(layer) >= 1 else -1  # the page counts layers from 1
    return p, p.explain(img, method, layer=min(layer, p.num_layers - 1) if p.num_layers else -1, head=head,
                        discard=float(discard), score=score)


def _page(p, r, opacity, head):
    """What the page shows for a result: overlay, faithfulness text and curves, every layer, patches."""
    parsed = ui.parse_head(head, p.num_heads) if p.num_heads else "mean"
    return (result_file(ui.render_overlay(r, opacity)), ui.faithfulness_text(r),
            result_file(ui.curves_image(r)), result_file(ui.render_layers(r, parsed, opacity)),
            result_file(ui.render_patches(r)))


def classify(image, model, method, layer, head, opacity, discard):
    """Classify a food photo with one model and explain the prediction: what the page shows.

    Args:
        image: the food photo (JPEG, PNG, WebP, ...).
        model: the model's id (its checkpoint's file stem, e.g. "scratch_vit").
        method: the explanation method (see /methods), e.g. "chefer", "rollout", "grad-cam".
        layer: the attention layer shown by "attention", from 1.
        head: "mean", "max" or "head N" (attention and rollout).
        opacity: the overlay's opacity, 0 to 1.
        discard: rollout's share of the weakest attention dropped, 0 to 0.99.
    Returns:
        Class probabilities, timing text, the overlay, the faithfulness text, the deletion / insertion
        curves, every layer's attention (models with attention) and the patch grid.
    """
    p, r = _explain(model, image, method, layer, head, discard)
    return (r.probs, ui.latency_text(p, r), *_page(p, r, opacity, head), (model, r))


def show_example(image, model):
    """A clicked example, with the model's default method (cached after its first click)."""
    return classify(image, model, None, ui.LAYER_DEFAULT, "mean", 0.5, 0.9)[:7]


def redraw(state, opacity, head):
    """Redraw the overlay and the layer mosaic at a new opacity (no model run)."""
    if not state:
        return gr.skip(), gr.skip()
    model, r = state
    p = _model(model)
    parsed = ui.parse_head(head, p.num_heads) if p.num_heads else "mean"
    return result_file(ui.render_overlay(r, opacity)), result_file(ui.render_layers(r, parsed, opacity))


def predict(image: ImageFile, model: str = DEFAULT) -> tuple[dict, dict]:
    """Classify a food photo: class probabilities and how long the model took.

    Args:
        image: the food photo (JPEG, PNG, WebP, ...).
        model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
    Returns:
        The label ({"label": top class, "confidences": [{"label", "confidence"}, ...]}) and a record of the
        model, its latency in ms, the device, its size in MB and its number of parameters.
    """
    p, img = _model(model), _image(image)
    r = p.classify(img)
    return label_value(r.probs), {"model": model, "latency_ms": round(r.latency_ms, 2), "device": ui.device_text(),
                                  "size_mb": round(p.ckpt.size_mb, 2), "num_params": p.meta.get("num_params")}


def explain(image: ImageFile, model: str = DEFAULT, method: str = "") -> tuple[ImageFile, dict]:
    """Explain a prediction with one method: a heat map over the pixels the model saw, and how faithful it is.

    Args:
        image: the food photo.
        model: the model's id, its checkpoint's file stem (e.g. "scratch_vit", "timm_vit", "effnet").
        method: an explanation method of that model (see /methods); empty for the model's default.
    Returns:
        The overlay image, and a record: model, method, label, probs, deletion_auc, insertion_auc,
        random_deletion_auc, random_insertion_auc (deletion: lower is better; insertion: higher),
        latency_ms (the forward pass) and explain_ms (the map and its score).
    """
    p, r = _explain(model, image, method or None)
    return file_data(result_file(ui.render_overlay(r, 0.5))), ui.explain_record(model, r)


def attention(image: ImageFile, model: str = DEFAULT, view: str = "attention", layer: int = 1, head: str = "mean",
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
    methods = ui.methods_of(MODELS, model)
    method = view if view in methods else (methods[0] if methods else None)
    p, r = _explain(model, image, method, layer, head, discard, score=False)
    overlay_file, _, _, layers_file, _ = _page(p, r, opacity, head)
    return file_data(overlay_file), file_data(layers_file)


def methods() -> dict:
    """Which explanation methods each model offers.

    Returns:
        {model id: [method ids, the model's default first]}.
    """
    return {i: list(ui.methods_of(MODELS, i)) for i in IDS if i in MODELS.meta}


def compare(image, method, discard):
    """Every model on the same image with the same explanation method (a model without it: its default),
    with the map's faithfulness."""
    _image(image)  # the message once, not once per model
    outputs = []
    for i in IDS:
        try:
            MODELS.get(i)
        except ui.ModelError as e:
            outputs += [None, str(e).replace(f"{MODELS.titles[i]} is ", ""), None]
            continue
        own = method if method in ui.methods_of(MODELS, i) else None
        p, r = _explain(i, image, own, discard=discard)
        note = "" if own else f"*{ui.METHOD_TITLES.get(method, method)} does not apply: its default instead.*  \n"
        outputs += [r.probs, note + ui.latency_text(p, r) + "  \n" + ui.faithfulness_text(r),
                    result_file(ui.render_overlay(r, 0.5))]
    return outputs


def on_model_change(model):
    """The chosen model's card and its methods; the controls that apply shown, the others hidden."""
    if model not in MODELS.meta:
        return (f"**{MODELS.titles.get(model, model)} is unavailable:** {MODELS.errors.get(model)}",
                gr.update(), gr.update(), gr.update(choices=[], value=None), gr.update(visible=False))
    card = ui.model_card(MODELS.meta[model], MODELS.titles[model], MODELS.paths[model])
    status = MODELS.status(model)
    if status != "ready":
        card = ("⏳ *Loading this model; a request for it waits until it is ready.*\n\n" if status == "loading"
                else f"⚠️ **Unavailable:** {MODELS.errors[model]}\n\n") + card
    methods_ = ui.methods_of(MODELS, model)
    layers_, heads = ui.geometry(MODELS, model)
    return (card, *_controls(methods_[0], layers_, heads),
            gr.update(choices=ui.method_choices(methods_), value=methods_[0]),
            gr.update(visible=MODELS.has_attention(model)))


def _controls(method, layers_: int, heads: int):
    """Layer slider and head menu: shown for the methods that use them, hidden (not greyed) otherwise."""
    layered = method in ui.LAYERED
    layer = (gr.update(minimum=1, maximum=layers_, value=layers_, visible=layered and method == "attention")
             if layers_ > 1 else gr.update(value=1, visible=False))  # a Slider needs minimum < maximum
    return layer, gr.update(choices=ui.head_choices(heads), value="mean", visible=layered and heads > 0)


def on_method_change(model, method):
    """Fit the controls to the method: layer for one layer's attention, head for attention and rollout,
    the discard ratio for rollout alone."""
    layers_, heads = ui.geometry(MODELS, model)
    layer, head = _controls(method, layers_, heads)
    return gr.update(visible=layer.get("visible", False)), gr.update(visible=head["visible"]), \
        gr.update(visible=method == "rollout")


def on_model_default_method(model):
    """The discard slider for the model's default method (rollout alone uses it)."""
    return gr.update(visible=(ui.methods_of(MODELS, model) or (None,))[0] == "rollout")


def rerun(image, model, method, layer, head, opacity, discard):
    """After the user switches model or method or moves a map control: explain the image shown again, or
    clear the old results."""
    if image is None:
        return None, "", None, "", None, None, None, None
    if method not in ui.methods_of(MODELS, model):  # the menu still shows the last model's method
        method = None
    return classify(image, model, method, layer, head, opacity, discard)


def check_upload(image):
    """On upload: refuse a file that is not an image at once; warn about a tiny one."""
    if image is None:
        return
    try:
        from PIL import Image
        with Image.open(image_source(image)) as im:
            _warn_if_tiny(*im.size)
    except ImageError as e:
        raise gr.Error(str(e)) from e
    except Exception as e:  # noqa: BLE001 - every unreadable upload gets the same treatment
        raise gr.Error(describe_error(e, image_name(image))) from e


def status_text() -> str:
    """The header's line about models still loading or unavailable (re-read on every page load)."""
    lines = [f"> ⏳ **{MODELS.titles[i]} is loading** (requests for it wait)" for i in IDS
             if MODELS.status(i) == "loading"]
    lines += [f"> ⚠️ **{MODELS.titles[i]} unavailable:** {why}" for i, why in MODELS.errors.items()]
    return "\n".join(lines)


def tick(model, settled):
    """While models load: refresh the status line and, as models become ready, the chosen one's card."""
    now = frozenset(i for i in IDS if MODELS.status(i) != "loading")
    done = len(now) == len(IDS)
    if now == settled:
        return gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=not done)
    return status_text(), now, on_model_change(model)[0], gr.Timer(active=not done)


def measure_latency():
    return ui.comparison_rows(MODELS, ui.measure_p50(MODELS))


with gr.Blocks(title="FoodVision ViT", delete_cache=(3600, 3600)) as demo:  # result images: kept for an hour
    gr.Markdown(
        "# 🍕🥩🍣 FoodVision ViT\n"
        f"Classify a food photo as **{CLASSES}** with {len(IDS)} model{'s' * (len(IDS) != 1)} and see *why*: "
        "per-layer, per-head attention for the Vision Transformers, Grad-CAM for the CNN. The ViT trained here "
        "from scratch saw only a few hundred photos; no ViT ImageNet weights were used anywhere (see each "
        "model's card).", elem_id="header")
    status = gr.Markdown(elem_id="model-status")
    with gr.Tab("Classify"):
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Food photo", sources=["upload", "webcam", "clipboard"],
                                 height=320, elem_id="image-input", image_mode=None)
                model = gr.Radio([(MODELS.titles[i], i) for i in IDS], value=DEFAULT, label="Model",
                                 elem_id="model-radio")
                card = gr.Markdown(elem_id="model-card")
                with gr.Row():
                    run = gr.Button("Classify", variant="primary", elem_id="classify-btn")
                    run_all = gr.Button(f"Compare all {len(IDS)}", elem_id="compare-btn")
            with gr.Column(scale=1):
                label = gr.Label(num_top_classes=3, label="Prediction", elem_id="prediction")
                timing = gr.Markdown(elem_id="timing")
                overlay = gr.Image(label="Explanation (on the pixels the model saw)", type="filepath", height=336,
                                   interactive=False, elem_id="overlay")
                faithfulness = gr.Markdown(elem_id="faithfulness")
        with gr.Accordion("Explanation controls", open=True):
            with gr.Row():
                default_methods = ui.methods_of(MODELS, DEFAULT) if DEFAULT else ()
                method = gr.Dropdown(ui.method_choices(default_methods), value=(default_methods or (None,))[0],
                                     label="Explanation method", elem_id="method-dropdown")
                layer = gr.Slider(1, 12, value=ui.LAYER_DEFAULT, step=1, label="Layer", elem_id="layer-slider",
                                  visible=False)
                head = gr.Dropdown(ui.head_choices(ui.max_heads(MODELS)), value="mean", label="Head",
                                   allow_custom_value=True, elem_id="head-dropdown", visible=False)
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity-slider")
                discard = gr.Slider(0.0, 0.99, value=0.9, step=0.01, label="Rollout discard", visible=False,
                                    info="share of the weakest attention dropped", elem_id="discard-slider")
        with gr.Row():
            curves = gr.Image(label="Deletion / insertion curves of this map vs random", type="filepath",
                              interactive=False, elem_id="curves")
            layers = gr.Image(label="Class-token attention, every layer", type="filepath", interactive=False,
                              elem_id="layers")
            patches = gr.Image(label="How the model cuts the image (patches / map cells)", type="filepath",
                               interactive=False)
        page_outputs = [label, timing, overlay, faithfulness, curves, layers, patches]
        example_set = None if not EXAMPLES else gr.Examples(
            [[str(p), DEFAULT] for p in EXAMPLES], inputs=[image, model], outputs=page_outputs,
            fn=show_example, cache_examples=True, cache_mode="lazy", preprocess=False, elem_id="examples",
            label=f"Examples (answered by {MODELS.titles.get(DEFAULT)} with its default method; see examples/README.md)")
        with gr.Row(visible=False, equal_height=True, elem_id="compare-row") as compare_row:
            compare_outputs = []
            for i in IDS:
                with gr.Column():
                    gr.Markdown(f"### {MODELS.titles[i]}")
                    compare_outputs += [gr.Label(num_top_classes=3, label="Prediction"), gr.Markdown(),
                                        gr.Image(type="filepath", interactive=False, height=240, label="Explanation")]
        last = gr.State()
        settled = gr.State(frozenset())
        timer = gr.Timer(1.0)

    with gr.Tab("Compare models"):
        gr.Markdown("From each checkpoint's metadata. Latency: median of 20 warm forward passes at batch size 1 on "
                    "this server; press the button to measure.")
        table = gr.Dataframe(ui.comparison_rows(MODELS), headers=ui.COMPARISON_HEADERS, interactive=False)
        measure = gr.Button("Measure latency on this server")
        with gr.Row():
            for metric, title in (("loss", "Loss per epoch"), ("acc", "Accuracy per epoch")):
                gr.LinePlot(pd.DataFrame(ui.history_rows(MODELS, metric), columns=ui.HISTORY_COLUMNS),
                            x="epoch", y="value", color="curve", title=title, height=360,
                            y_title="accuracy" if metric == "acc" else "cross-entropy", elem_id=f"curves-{metric}")

    explain_inputs = [method, layer, head, opacity, discard]
    page_state = [*page_outputs, last]
    run.click(classify, [image, model, *explain_inputs], page_state, api_name="classify",
              concurrency_id=MODEL_RUNS, preprocess=False)
    run_all.click(lambda: gr.update(visible=True), None, compare_row, api_visibility="private").then(
        compare, [image, method, discard], compare_outputs, api_name="compare", concurrency_id=MODEL_RUNS,
        preprocess=False)
    private = {"api_visibility": "private", "show_progress": "hidden"}
    opacity.release(redraw, [last, opacity, head], [overlay, layers], **private)
    method.input(on_method_change, [model, method], [layer, head, discard], queue=False, **private)
    model.change(on_model_default_method, [model], [discard], queue=False, **private)
    for event in (method.input, layer.release, head.input, discard.release, model.input):
        event(rerun, [image, model, *explain_inputs], page_state, concurrency_id=MODEL_RUNS, preprocess=False,
              api_visibility="private")
    image.upload(check_upload, [image], None, preprocess=False, **private)
    image.change(lambda: None, None, last, queue=False, **private)
    control_outputs = [card, layer, head, method, layers]
    model.change(on_model_change, [model], control_outputs, queue=False, **private)
    timer.tick(tick, [model, settled], [status, settled, card, timer], queue=False, **private)
    measure.click(measure_latency, None, [table], api_name="measure_latency", concurrency_id=MODEL_RUNS)
    gr.api(predict, api_name="predict", concurrency_id=MODEL_RUNS)
    gr.api(explain, api_name="explain", concurrency_id=MODEL_RUNS)
    gr.api(attention, api_name="attention", concurrency_id=MODEL_RUNS)
    gr.api(methods, api_name="methods", queue=False)
    demo.load(on_model_change, [model], control_outputs, queue=False, **private)
    demo.load(status_text, None, status, queue=False, **private)

demo.queue(**QUEUE)
MODELS.start(first=DEFAULT)  # after the page is built: the server answers while the models load

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE, theme=gr.themes.Soft(),
                mcp_server=ARGS.mcp or os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true")
