"""FoodVision ViT: classify a food photo as pizza, steak or sushi with three models, and see why.

    python app.py            # then open the printed URL

Widgets are wired to functions in `vit.ui`; the models load once, when this module is imported.
"""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from vit import ui
from vit.images import MIN_SIDE, ImageError, describe_error, open_image

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
MODELS = ui.load_models(ui.checkpoint_paths())
FAMILIES = list(ui.FAMILY_TITLES)
DEFAULT = next((f for f in ("timm_vit", "scratch_vit", "effnet") if f in MODELS.models), FAMILIES[0])
HEADS = max((ui.head_choices(p) for p in MODELS.models.values()), key=len, default=["mean", "max"])
VIEW_CHOICES = [("Attention: one layer", "attention"), ("Attention rollout", "rollout"), ("Grad-CAM", "grad-cam")]
QUEUE = {"default_concurrency_limit": 2, "max_size": 32}  # 2 CPU cores: two requests compute at once
MAX_FILE_SIZE = "25mb"


class ImageInput(gr.Image):
    """gr.Image that turns a file Pillow cannot open into a message instead of a server error."""

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception as e:  # noqa: BLE001 - every unreadable upload gets the same treatment
            raise gr.Error(describe_error(e, getattr(payload, "orig_name", None) or "the file")) from e


def _model(family: str):
    try:
        return MODELS.get(family)
    except LookupError as e:
        raise gr.Error(str(e)) from e


def _image(image):
    try:
        img = open_image(image)
    except ImageError as e:
        raise gr.Error(str(e)) from e
    if min(img.size) < MIN_SIDE:
        gr.Warning(f"The image is only {img.width} x {img.height} pixels; the prediction means little.")
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
    """Show the chosen model's card and fit the layer / head / view controls to it."""
    if family not in MODELS.models:
        return (f"**{ui.FAMILY_TITLES[family]} is unavailable:** {MODELS.errors.get(family)}",
                gr.update(), gr.update(), gr.update())
    p = MODELS.models[family]
    views = VIEW_CHOICES[:2] if p.is_vit else VIEW_CHOICES[2:]
    return (ui.model_card(p),
            gr.update(maximum=max(p.num_layers, 1), value=max(p.num_layers, 1), interactive=p.is_vit),
            gr.update(choices=ui.head_choices(p) if p.is_vit else ["mean"], value="mean", interactive=p.is_vit),
            gr.update(choices=views, value=views[0][1]))


def measure_latency():
    return ui.comparison_rows(MODELS, ui.measure_p50(MODELS))


def curve(family: str):
    png = ui.checkpoint_paths()[family].with_suffix(".png")
    return str(png) if png.is_file() else None


status = "" if not MODELS.errors else "\n".join(
    f"> ⚠️ **{ui.FAMILY_TITLES[f]} unavailable:** {why}" for f, why in MODELS.errors.items())

with gr.Blocks(title="FoodVision ViT") as demo:
    gr.Markdown(
        "# 🍕🥩🍣 FoodVision ViT\n"
        "Classify a food photo as **pizza, steak or sushi** with three models and see *why*: per-layer, per-head "
        "attention for the Vision Transformers, Grad-CAM for the CNN. The ViT trained here from scratch saw only "
        "a few hundred photos; no ViT ImageNet weights were used anywhere (see each model's card)." + "\n\n" + status)
    with gr.Tab("Classify"):
        with gr.Row():
            with gr.Column(scale=1):
                image = ImageInput(type="filepath", label="Food photo", sources=["upload", "webcam", "clipboard"],
                                   height=320)
                model = gr.Radio([(ui.FAMILY_TITLES[f], f) for f in FAMILIES], value=DEFAULT, label="Model")
                card = gr.Markdown(on_model_change(DEFAULT)[0])
                with gr.Row():
                    run = gr.Button("Classify", variant="primary")
                    run_all = gr.Button("Compare all three")
                if EXAMPLES:
                    gr.Examples([[str(p)] for p in EXAMPLES], inputs=[image], label="Examples")
                else:
                    gr.Markdown("*No example photos are shipped (Food-101 images may not be redistributed); "
                                "`python -m vit.examples --data-dir DIR` copies some from your own copy.*")
            with gr.Column(scale=1):
                label = gr.Label(num_top_classes=3, label="Prediction")
                timing = gr.Markdown()
                overlay = gr.Image(label="Explanation (on the pixels the model saw)", type="pil", height=336,
                                   interactive=False)
        with gr.Accordion("Explanation controls", open=True):
            with gr.Row():
                view = gr.Radio(VIEW_CHOICES, value="attention", label="Show")
                layer = gr.Slider(1, 12, value=4, step=1, label="Layer")
                head = gr.Dropdown(HEADS, value="mean", label="Head", allow_custom_value=True)
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
                discard = gr.Slider(0.0, 0.99, value=0.9, step=0.01, label="Rollout: discard lowest")
        with gr.Row():
            layers = gr.Image(label="Class-token attention, every layer", type="pil", interactive=False)
            patches = gr.Image(label="How the model cuts the image (patches / Grad-CAM cells)", type="pil",
                               interactive=False)
        with gr.Row(visible=True) as compare_row:
            compare_outputs = []
            for f in FAMILIES:
                with gr.Column():
                    gr.Markdown(f"### {ui.FAMILY_TITLES[f]}")
                    compare_outputs += [gr.Label(num_top_classes=3, label="Prediction"), gr.Markdown(),
                                        gr.Image(type="pil", label="Rollout / Grad-CAM", interactive=False, height=240)]
        last = gr.State()
        with gr.Row(visible=False):  # API-only endpoints: outputs that the page does not show
            api_label, api_info = gr.Label(), gr.JSON()
            api_overlay, api_layers = gr.Image(type="pil"), gr.Image(type="pil")
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
              api_name="classify")
    run_all.click(compare, [image, discard], compare_outputs, api_name="compare")
    for control in explain_inputs:
        control.change(rerender, [last, *explain_inputs], [overlay, layers], api_visibility="private",
                       show_progress="hidden")
    model.change(on_model_change, [model], [card, layer, head, view], api_visibility="private")
    measure.click(measure_latency, None, [table], api_name="measure_latency")
    api_predict.click(predict_api, [image, model], [api_label, api_info], api_name="predict")
    api_attention.click(attention_api, [image, model, *explain_inputs], [api_overlay, api_layers],
                        api_name="attention")
    demo.load(on_model_change, [model], [card, layer, head, view], api_visibility="private")

demo.queue(**QUEUE)

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE, theme=gr.themes.Soft())
