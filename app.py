"""FoodVision ViT: classify a food photo as pizza, steak or sushi with three models, and see why.

    python app.py            # then open the printed URL

Widgets are wired to functions in `vit.ui`; the models load once, when this module is imported.
"""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
from gradio import processing_utils
from PIL import Image

from vit import ui
from vit.images import MIN_SIDE, ImageError, describe_error, open_image

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
MODELS = ui.load_models(ui.checkpoint_paths(), ui.optimisations())  # $FOODVISION_OPTIMISE: see README
FAMILIES = list(ui.FAMILY_TITLES)
DEFAULT = next((f for f in ("timm_vit", "scratch_vit", "effnet") if f in MODELS.models), FAMILIES[0])
HEADS = max((ui.head_choices(p) for p in MODELS.models.values()), key=len, default=["mean", "max"])
VIEW_CHOICES = [("Attention: one layer", "attention"), ("Attention rollout", "rollout"), ("Grad-CAM", "grad-cam")]
QUEUE = {"default_concurrency_limit": 2, "max_size": 32}  # 2 CPU cores: two requests compute at once
MODEL_RUNS = "model"  # the one concurrency_id of every event that runs a model: the limit is for all together
MAX_FILE_SIZE = "25mb"


class ImageInput(gr.Image):
    """gr.Image that hands vit.images the file as sent, and turns one Pillow cannot open into a message
    instead of a server error.

    Use it with image_mode=None: Gradio then passes an upload's path on after reading only its header.
    With a mode set, or for a data URL, Gradio would itself decode, convert and re-save the image at full
    size (seconds and gigabytes for a small PNG of 10 000 x 10 000 pixels), before vit.images could
    shrink it, composite alpha on white or rescale 16 bits."""

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload):
        try:
            if payload is not None and (payload.url or "").startswith("data:"):  # API callers: the bytes as sent
                return processing_utils.save_base64_to_cache(payload.url, self.GRADIO_CACHE)
            return super().preprocess(payload)
        except Exception as e:  # noqa: BLE001 - every unreadable upload gets the same treatment
            raise gr.Error(describe_error(e, getattr(payload, "orig_name", None) or "the file")) from e


class ImageOutput(gr.Image):
    """gr.Image for results, whose files are written whole. Gradio itself rewrites a cached image in
    place every time a request produces it: when two requests produce the same image, a download of it
    in between comes back truncated (a broken overlay in the page, a failed request in gradio_client)."""

    def get_block_name(self) -> str:
        return "image"

    def postprocess(self, value):
        if isinstance(value, Image.Image):  # encoded and named as Gradio would, then written once, atomically
            data = processing_utils.encode_pil_to_bytes(value, self.format)
            value = ui.write_once(data, Path(self.GRADIO_CACHE) / processing_utils.hash_bytes(data),
                                  f"image.{self.format}")
        return super().postprocess(value)


def _model(family: str):
    try:
        return MODELS.get(family)
    except LookupError as e:
        raise gr.Error(str(e)) from e


def _warn_if_tiny(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        gr.Warning(f"The image is only {width} x {height} pixels; the prediction means little.")


def _image(image):
    try:
        img = open_image(image)
    except ImageError as e:
        raise gr.Error(str(e)) from e
    _warn_if_tiny(*img.size)
    return img


def classify(image, family, view, layer, head, opacity, discard):
    """The main event: predictions, latency and size, overlay, every layer, patch grid."""
    p, img = _model(family), _image(image)
    fast = p.classify(img)
    r = p.explain(img)
    return (fast.probs, ui.latency_text(p, fast.latency_ms, r.latency_ms),
            *_render(p, r, view, layer, head, opacity, discard), ui.render_patches(p, r), (family, r))


def rerender(state, view, layer, head, opacity, discard):
    """Redraw the overlays from the last result (no model run) when a control moves."""
    if not state:
        return gr.skip(), gr.skip()
    family, r = state
    return _render(_model(family), r, view, layer, head, opacity, discard)


def _render(p, r, view, layer, head, opacity, discard):
    """(overlay, all-layer mosaic) for a result; a view the model lacks falls back to the one it has."""
    try:
        head = ui.parse_head(head, p.num_heads) if p.is_vit else "mean"
    except ValueError as e:
        raise gr.Error(str(e)) from e
    view = view if p.is_vit and view != "grad-cam" else ("grad-cam" if not p.is_vit else "attention")
    return ui.render_overlay(p, r, view, layer, head, opacity, discard), ui.render_layers(p, r, head, opacity)


def predict_api(image, family):
    """API: top-k probabilities and timing for one image."""
    p, img = _model(family), _image(image)
    r = p.classify(img)
    return r.probs, {"model": family, "latency_ms": round(r.latency_ms, 2), "device": ui.device_text(),
                     "size_mb": round(p.ckpt.size_mb, 2), "num_params": p.meta.get("num_params")}


def attention_api(image, family, view, layer, head, opacity, discard):
    """API: the overlay for one image (attention layer/head, rollout, or Grad-CAM) and the all-layer mosaic."""
    p, img = _model(family), _image(image)
    return _render(p, p.explain(img), view, layer, head, opacity, discard)


def compare(image, discard):
    """Every loaded model on the same image: predictions, latency, and rollout / Grad-CAM."""
    img = _image(image)
    outputs = []
    for family in FAMILIES:
        if family not in MODELS.models:
            outputs += [None, f"unavailable: {MODELS.errors[family]}", None]
            continue
        p = MODELS.models[family]
        fast, r = p.classify(img), p.explain(img)
        outputs += [fast.probs, ui.latency_text(p, fast.latency_ms, r.latency_ms),
                    ui.render_overlay(p, r, "rollout" if p.is_vit else "grad-cam", discard=discard)]
    return outputs


def on_model_change(family):
    """Show the chosen model's card and fit the controls to it: layer / head / view for a ViT; for
    the CNN, Grad-CAM alone (no layers to pick, no per-layer mosaic)."""
    if family not in MODELS.models:
        return (f"**{ui.FAMILY_TITLES[family]} is unavailable:** {MODELS.errors.get(family)}",
                gr.update(), gr.update(), gr.update(), gr.update())
    p = MODELS.models[family]
    if not p.is_vit:
        return (ui.model_card(p), gr.update(interactive=False), gr.update(value="mean", interactive=False),
                gr.update(choices=VIEW_CHOICES[2:], value="grad-cam"), gr.update(visible=False))
    layer = (gr.update(minimum=1, maximum=p.num_layers, value=p.num_layers, interactive=True) if p.num_layers > 1
             else gr.update(value=1, interactive=False))  # a Slider needs minimum < maximum
    return (ui.model_card(p), layer, gr.update(choices=ui.head_choices(p), value="mean", interactive=True),
            gr.update(choices=VIEW_CHOICES[:2], value="attention"), gr.update(visible=True))


def rerun(image, family, view, layer, head, opacity, discard):
    """After a model switch: classify the image shown with the new model, or clear the old results."""
    if image is None:
        return None, "", None, None, None, None
    return classify(image, family, view, layer, head, opacity, discard)


def check_upload(image):
    """On upload: an unreadable file has already been refused by ImageInput; warn about a tiny one."""
    if image is not None:
        with Image.open(image) as im:
            _warn_if_tiny(*im.size)


def on_view_change(view):
    """The discard ratio matters to rollout alone."""
    return gr.update(interactive=view == "rollout")


def measure_latency():
    return ui.comparison_rows(MODELS, ui.measure_p50(MODELS))


def curve(family: str):
    png = ui.checkpoint_paths()[family].with_suffix(".png")
    return str(png) if png.is_file() else None


status = "" if not MODELS.errors else "\n".join(
    f"> ⚠️ **{ui.FAMILY_TITLES[f]} unavailable:** {why}" for f, why in MODELS.errors.items())

with gr.Blocks(title="FoodVision ViT", delete_cache=(3600, 3600)) as demo:  # result images: kept for an hour
    gr.Markdown(
        "# 🍕🥩🍣 FoodVision ViT\n"
        "Classify a food photo as **pizza, steak or sushi** with three models and see *why*: per-layer, per-head "
        "attention for the Vision Transformers, Grad-CAM for the CNN. The ViT trained here from scratch saw only "
        "a few hundred photos; no ViT ImageNet weights were used anywhere (see each model's card)." + "\n\n" + status)
    with gr.Tab("Classify"):
        with gr.Row():
            with gr.Column(scale=1):
                image = ImageInput(type="filepath", label="Food photo", sources=["upload", "webcam", "clipboard"],
                                   height=320, elem_id="image-input", image_mode=None)  # file untouched: see class
                model = gr.Radio([(ui.FAMILY_TITLES[f], f) for f in FAMILIES], value=DEFAULT, label="Model",
                                 elem_id="model-radio")
                card = gr.Markdown(on_model_change(DEFAULT)[0], elem_id="model-card")
                with gr.Row():
                    run = gr.Button("Classify", variant="primary", elem_id="classify-btn")
                    run_all = gr.Button("Compare all three", elem_id="compare-btn")
                if EXAMPLES:
                    gr.Examples([[str(p)] for p in EXAMPLES], inputs=[image], label="Examples")
                else:
                    gr.Markdown("*No example photos ship with the app: Food-101's photos may not be "
                                "redistributed (see `examples/README.md`). Use your own.*")
            with gr.Column(scale=1):
                label = gr.Label(num_top_classes=3, label="Prediction", elem_id="prediction")
                timing = gr.Markdown(elem_id="timing")
                overlay = ImageOutput(label="Explanation (on the pixels the model saw)", type="pil", height=336,
                                      interactive=False, elem_id="overlay")
        with gr.Accordion("Explanation controls", open=True):
            with gr.Row():
                view = gr.Radio(VIEW_CHOICES, value="attention", label="Show", elem_id="view-radio")
                layer = gr.Slider(1, 12, value=4, step=1, label="Layer", elem_id="layer-slider")
                head = gr.Dropdown(HEADS, value="mean", label="Head", allow_custom_value=True,
                                   elem_id="head-dropdown")
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
                discard = gr.Slider(0.0, 0.99, value=0.9, step=0.01, label="Rollout discard",
                                    info="share of the weakest attention dropped", interactive=False)
        with gr.Row():
            layers = ImageOutput(label="Class-token attention, every layer", type="pil", interactive=False,
                                 elem_id="layers")
            patches = ImageOutput(label="How the model cuts the image (patches / Grad-CAM cells)", type="pil",
                                  interactive=False)
        with gr.Row(visible=False, equal_height=True, elem_id="compare-row") as compare_row:
            compare_outputs = []
            for f in FAMILIES:
                with gr.Column():
                    gr.Markdown(f"### {ui.FAMILY_TITLES[f]}")
                    explanation = "Attention rollout" if f != "effnet" else "Grad-CAM"
                    compare_outputs += [gr.Label(num_top_classes=3, label="Prediction"), gr.Markdown(),
                                        ImageOutput(type="pil", label=explanation, interactive=False, height=240)]
        last = gr.State()
        with gr.Row(visible=False):  # API-only endpoints: outputs that the page does not show
            api_label, api_info = gr.Label(), gr.JSON()
            api_overlay, api_layers = ImageOutput(type="pil"), ImageOutput(type="pil")
            api_predict, api_attention = gr.Button(), gr.Button()

    with gr.Tab("Compare models"):
        gr.Markdown("From each checkpoint's metadata. Latency: median of 20 warm forward passes at batch size 1 on "
                    "this server; press the button to measure.")
        table = gr.Dataframe(ui.comparison_rows(MODELS), headers=ui.COMPARISON_HEADERS, interactive=False)
        measure = gr.Button("Measure latency on this server")
        with gr.Row():
            for f in FAMILIES:
                gr.Image(curve(f), label=f"{ui.FAMILY_TITLES[f]}: training curves", interactive=False)

    explain_inputs = [view, layer, head, opacity, discard]
    run.click(classify, [image, model, *explain_inputs], [label, timing, overlay, layers, patches, last],
              api_name="classify", concurrency_id=MODEL_RUNS)
    run_all.click(lambda: gr.update(visible=True), None, compare_row, api_visibility="private").then(
        compare, [image, discard], compare_outputs, api_name="compare", concurrency_id=MODEL_RUNS)
    for control in explain_inputs:
        control.change(rerender, [last, *explain_inputs], [overlay, layers], api_visibility="private",
                       show_progress="hidden")
    view.change(on_view_change, [view], [discard], api_visibility="private", show_progress="hidden")
    image.upload(check_upload, [image], None, api_visibility="private", show_progress="hidden")
    model.change(on_model_change, [model], [card, layer, head, view, layers], api_visibility="private").then(
        rerun, [image, model, *explain_inputs], [label, timing, overlay, layers, patches, last],
        api_visibility="private", concurrency_id=MODEL_RUNS)
    measure.click(measure_latency, None, [table], api_name="measure_latency", concurrency_id=MODEL_RUNS)
    api_predict.click(predict_api, [image, model], [api_label, api_info], api_name="predict",
                      concurrency_id=MODEL_RUNS)
    api_attention.click(attention_api, [image, model, *explain_inputs], [api_overlay, api_layers],
                        api_name="attention", concurrency_id=MODEL_RUNS)
    demo.load(on_model_change, [model], [card, layer, head, view, layers], api_visibility="private")

demo.queue(**QUEUE)

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE, theme=gr.themes.Soft())
