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
VIEW_CHOICES = [("Attention: one layer", "attention"), ("Attention rollout", "rollout"), ("Grad-CAM", "grad-cam")]
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


def _render(p, r, view, layer, head, opacity, discard):
    """(overlay, all-layer mosaic) files for a result; a view the model lacks falls back to the one it has."""
    try:
        head = ui.parse_head(head, p.num_heads) if r.maps else "mean"
    except ValueError as e:
        raise gr.Error(str(e)) from e
    view = ("attention" if view == "grad-cam" else view) if r.maps else "grad-cam"
    return (result_file(ui.render_overlay(r, view, layer, head, opacity, discard)),
            result_file(ui.render_layers(r, head, opacity)))


def classify(image, model, view, layer, head, opacity, discard):
    """Classify a food photo with one model and explain the prediction: what the page shows.

    Args:
        image: the food photo (JPEG, PNG, WebP, ...).
        model: the model's id (its checkpoint's file stem, e.g. "scratch_vit").
        view: "attention" (one layer), "rollout" or "grad-cam".
        layer: the attention layer shown, from 1.
        head: "mean", "max" or "head N".
        opacity: the overlay's opacity, 0 to 1.
        discard: rollout's share of the weakest attention dropped, 0 to 0.99.
    Returns:
        Class probabilities, timing text, the explanation overlay, every layer's attention (models with
        attention) and the patch grid.
    """
    p, img = _model(model), _image(image)
    r = p.explain(img, ui.base_method(p))  # one timed pass: probabilities and the maps
    return (r.probs, ui.latency_text(p, r),
            *_render(p, r, view, layer, head, opacity, discard), result_file(ui.render_patches(r)), (model, r))


def show_example(image, model):
    """A clicked example, with the default explanation settings (cached after its first click)."""
    return classify(image, model, "attention", ui.LAYER_DEFAULT, "mean", 0.5, 0.9)[:5]


def rerender(state, view, layer, head, opacity, discard):
    """Redraw the overlays from the last result (no model run) when a control moves."""
    if not state:
        return gr.skip(), gr.skip()
    model, r = state
    return _render(_model(model), r, view, layer, head, opacity, discard)


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


def attention(image: ImageFile, model: str = DEFAULT, view: str = "attention", layer: int = 1, head: str = "mean",
              opacity: float = 0.5, discard: float = 0.9) -> tuple[ImageFile | None, ImageFile | None]:
    """Explain a prediction: a heat map over the pixels the model saw, and every layer's attention.

    Args:
        image: the food photo.
        model: the model's id (its checkpoint's file stem).
        view: "attention" (one layer), "rollout" (all layers) or "grad-cam"; a model without attention
            always gives Grad-CAM.
        layer: the attention layer, from 1.
        head: "mean", "max" or "head N".
        opacity: the overlay's opacity, 0 to 1.
        discard: rollout's share of the weakest attention dropped, 0 to 0.99.
    Returns:
        The overlay image and the per-layer mosaic (None for a model without attention).
    """
    p, img = _model(model), _image(image)
    return tuple(file_data(f) for f in _render(p, p.explain(img, ui.base_method(p)), view, layer, head, opacity, discard))


def compare(image, discard):
    """Every model on the same image: predictions, latency, and rollout (attention) or Grad-CAM."""
    img = _image(image)
    outputs = []
    for i in IDS:
        try:
            p = MODELS.get(i)
        except ui.ModelError as e:
            outputs += [None, str(e).replace(f"{MODELS.titles[i]} is ", ""), None]
            continue
        r = p.explain(img, ui.base_method(p))
        outputs += [r.probs, ui.latency_text(p, r),
                    result_file(ui.render_overlay(r, "rollout" if r.maps else "grad-cam", discard=discard))]
    return outputs


def on_model_change(model):
    """The chosen model's card; the controls that apply to it shown, the others hidden: layer, head,
    view and the per-layer mosaic for a model with attention, none of them for a CNN (Grad-CAM)."""
    if model not in MODELS.meta:
        return (f"**{MODELS.titles.get(model, model)} is unavailable:** {MODELS.errors.get(model)}",
                gr.update(), gr.update(), gr.update(), gr.update())
    card = ui.model_card(MODELS.meta[model], MODELS.titles[model], MODELS.paths[model])
    status = MODELS.status(model)
    if status != "ready":
        card = (f"⏳ *Loading this model; a request for it waits until it is ready.*\n\n" if status == "loading"
                else f"⚠️ **Unavailable:** {MODELS.errors[model]}\n\n") + card
    if not MODELS.has_attention(model):
        return (card, gr.update(visible=False), gr.update(value="mean", visible=False),
                gr.update(choices=VIEW_CHOICES[2:], value="grad-cam", visible=False), gr.update(visible=False))
    layers, heads = ui.geometry(MODELS, model)
    layer = (gr.update(minimum=1, maximum=layers, value=layers, visible=True) if layers > 1
             else gr.update(value=1, visible=False))  # a Slider needs minimum < maximum
    return (card, layer, gr.update(choices=ui.head_choices(heads), value="mean", visible=True),
            gr.update(choices=VIEW_CHOICES[:2], value="attention", visible=True), gr.update(visible=True))


def rerun(image, model, view, layer, head, opacity, discard):
    """After the user switches model: classify the image shown with the new model, or clear the old results."""
    if image is None:
        return None, "", None, None, None, None
    return classify(image, model, view, layer, head, opacity, discard)


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


def on_view_change(view):
    """The discard ratio matters to rollout alone."""
    return gr.update(visible=view == "rollout")


def status_text() -> str:
    """The header's line about models still loading or unavailable (re-read on every page load)."""
    lines = [f"> ⏳ **{MODELS.titles[i]} is loading** (requests for it wait)" for i in IDS
             if MODELS.status(i) == "loading"]
    lines += [f"> ⚠️ **{MODELS.titles[i]} unavailable:** {why}" for i, why in MODELS.errors.items()]
    return "\n".join(lines)


def tick(model, settled):
    """While models load: refresh the status line and, when the chosen model is ready, its card."""
    now = frozenset(i for i in IDS if MODELS.status(i) != "loading")
    done = len(now) == len(IDS)
    if now == settled:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=not done)
    return (status_text(), now, *on_model_change(model), gr.Timer(active=not done))


def measure_latency():
    return ui.comparison_rows(MODELS, ui.measure_p50(MODELS))


def methods() -> dict:
    """Which explanation views each model offers.

    Returns:
        {model id: [view ids, the default first]}.
    """
    return {i: (["attention", "rollout"] if MODELS.has_attention(i) else ["grad-cam"]) for i in IDS if i in MODELS.meta}


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
        with gr.Accordion("Explanation controls", open=True):
            with gr.Row():
                view = gr.Radio(VIEW_CHOICES[:2], value="attention", label="Show", elem_id="view-radio")
                layer = gr.Slider(1, 12, value=ui.LAYER_DEFAULT, step=1, label="Layer", elem_id="layer-slider")
                head = gr.Dropdown(ui.head_choices(ui.max_heads(MODELS)), value="mean", label="Head",
                                   allow_custom_value=True, elem_id="head-dropdown")
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
                discard = gr.Slider(0.0, 0.99, value=0.9, step=0.01, label="Rollout discard", visible=False,
                                    info="share of the weakest attention dropped", elem_id="discard-slider")
        with gr.Row():
            layers = gr.Image(label="Class-token attention, every layer", type="filepath", interactive=False,
                              elem_id="layers")
            patches = gr.Image(label="How the model cuts the image (patches / Grad-CAM cells)", type="filepath",
                               interactive=False)
        example_set = None if not EXAMPLES else gr.Examples(
            [[str(p), DEFAULT] for p in EXAMPLES], inputs=[image, model], outputs=[label, timing, overlay, layers, patches],
            fn=show_example, cache_examples=True, cache_mode="lazy", preprocess=False, elem_id="examples",
            label=f"Examples (answered by {MODELS.titles.get(DEFAULT)}; see examples/README.md)")
        with gr.Row(visible=False, equal_height=True, elem_id="compare-row") as compare_row:
            compare_outputs = []
            for i in IDS:
                with gr.Column():
                    gr.Markdown(f"### {MODELS.titles[i]}")
                    compare_outputs += [gr.Label(num_top_classes=3, label="Prediction"), gr.Markdown(),
                                        gr.Image(type="filepath", interactive=False, height=240,
                                                 label="Attention rollout" if MODELS.has_attention(i) else "Grad-CAM")]
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

    explain_inputs = [view, layer, head, opacity, discard]
    page_outputs = [label, timing, overlay, layers, patches, last]
    run.click(classify, [image, model, *explain_inputs], page_outputs, api_name="classify",
              concurrency_id=MODEL_RUNS, preprocess=False)
    run_all.click(lambda: gr.update(visible=True), None, compare_row, api_visibility="private").then(
        compare, [image, discard], compare_outputs, api_name="compare", concurrency_id=MODEL_RUNS, preprocess=False)
    for control in explain_inputs:
        control.change(rerender, [last, *explain_inputs], [overlay, layers], api_visibility="private",
                       show_progress="hidden")
    view.change(on_view_change, [view], [discard], api_visibility="private", show_progress="hidden", queue=False)
    image.upload(check_upload, [image], None, api_visibility="private", show_progress="hidden", preprocess=False)
    image.change(lambda: None, None, last, api_visibility="private", show_progress="hidden", queue=False)
    control_outputs = [card, layer, head, view, layers]
    model.change(on_model_change, [model], control_outputs, api_visibility="private", queue=False)
    model.input(rerun, [image, model, *explain_inputs], page_outputs, api_visibility="private",
                concurrency_id=MODEL_RUNS, preprocess=False)
    timer.tick(tick, [model, settled], [status, settled, *control_outputs, timer], api_visibility="private",
               show_progress="hidden", queue=False)
    measure.click(measure_latency, None, [table], api_name="measure_latency", concurrency_id=MODEL_RUNS)
    gr.api(predict, api_name="predict", concurrency_id=MODEL_RUNS)
    gr.api(attention, api_name="attention", concurrency_id=MODEL_RUNS)
    gr.api(methods, api_name="methods", queue=False)
    demo.load(on_model_change, [model], control_outputs, api_visibility="private", queue=False)
    demo.load(status_text, None, status, api_visibility="private", queue=False)

demo.queue(**QUEUE)
MODELS.start(first=DEFAULT)  # after the page is built: the server answers while the models load

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE, theme=gr.themes.Soft(),
                mcp_server=ARGS.mcp or os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true")
