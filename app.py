"""FoodVision ViT: classify a food photo with every model in a checkpoint folder, and see why.

    python app.py                          # checkpoints/ (or $FOODVISION_CHECKPOINTS); open the printed URL
    python app.py --checkpoints DIR        # every *.safetensors in DIR, of any family and class list
    python app.py --mcp                    # also an MCP server (or GRADIO_MCP_SERVER=True)

Wiring only: each widget event is bound to one method of `vit.app.handlers.Handlers`, whose typed answer
reaches the components by field name (`handlers.Outputs`); the endpoints are vit.app.api's. The page is
served at once and the models load behind it (vit.serve.model_set).
"""

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: its idle threads must not spin (docs/trust.md)
import gradio as gr  # noqa: E402
import pandas as pd

from vit.app import examples as example_photos
from vit.app import api, explorer_tab, handlers, ui
from vit.explain.rollout import head_choices
from vit.serve import model_set

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
ROOT = Path(__file__).resolve().parent
ARGS = model_set.parse_args(sys.argv[1:] if __name__ == "__main__" else [], __doc__)
MODELS = model_set.from_args(ARGS)  # with $FOODVISION_OPTIMISE: see README
IDS = MODELS.ids
DEFAULT = model_set.default_model(MODELS)
H = handlers.Handlers(MODELS, DEFAULT, model_set.data_roots(ARGS))  # + where the photos are (else downloaded)
QUEUE = {"default_concurrency_limit": 2, "max_size": 32}  # 2 CPU cores: two requests compute at once
MODEL_RUNS = "model"  # the one concurrency_id of every event that runs a model: the limit is for all together
MAX_FILE_SIZE = "25mb"
EXAMPLES = example_photos.find(ROOT / "examples")
EXAMPLES_CACHE = model_set.examples_cache(MODELS, [Path(__file__), Path(ui.__file__), Path(handlers.__file__)])
os.environ["GRADIO_EXAMPLES_CACHE"] = str(EXAMPLES_CACHE)  # read by gr.Examples when it is built

with gr.Blocks(title="FoodVision ViT", delete_cache=(3600, 3600)) as demo:  # result images: kept for an hour
    gr.Markdown(ui.header_text(MODELS), elem_id="header")
    status = gr.Markdown(elem_id="model-status")
    with gr.Tab("Classify", elem_id="classify-tab"):
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
                verdict = gr.Markdown(elem_id="verdict")  # in distribution or not, first (vit.trust)
                label = gr.Label(num_top_classes=3, label="Prediction", elem_id="prediction")
                timing = gr.Markdown(elem_id="timing")
                overlay = gr.Image(label="Explanation (on the pixels the model saw)", type="filepath", height=336,
                                   interactive=False, elem_id="overlay")
                faithfulness = gr.Markdown(elem_id="faithfulness")
                neighbours_text = gr.Markdown(elem_id="neighbours-text")  # the nearest training photos (vit.explore)
                neighbours = gr.Gallery(label="Nearest training photos", columns=5, height=200, elem_id="neighbours")
        with gr.Row(visible=False, equal_height=True, elem_id="compare-row") as compare_row:
            columns = handlers.Columns()  # each model's answer under Compare all
            for i in IDS:
                with gr.Column():
                    gr.Markdown(f"### {MODELS.titles[i]}")
                    columns.add(label=gr.Label(num_top_classes=3, label="Prediction"), text=gr.Markdown(),
                                overlay=gr.Image(type="filepath", interactive=False, height=240, label="Explanation"))
        with gr.Accordion("Explanation controls", open=True):
            with gr.Row():
                default_methods = model_set.methods_of(MODELS, DEFAULT) if DEFAULT else ()
                method = gr.Dropdown(ui.method_choices(default_methods), value=(default_methods or (None,))[0],
                                     label="Explanation method", elem_id="method-dropdown")
                layer = gr.Slider(1, max(2, model_set.max_layers(MODELS)), value=ui.LAYER_DEFAULT, step=1, label="Layer",
                                  elem_id="layer-slider", visible=False)
                head = gr.Dropdown(head_choices(model_set.max_heads(MODELS)), value="mean", label="Head",
                                   allow_custom_value=True, elem_id="head-dropdown", visible=False)
                opacity = gr.Slider(0.0, 1.0, value=handlers.OPACITY, step=0.05, label="Overlay opacity",
                                    elem_id="opacity-slider")
                discard = gr.Slider(0.0, 0.99, value=handlers.ROLLOUT_DISCARD, step=0.01, label="Rollout discard",
                                    visible=False, info="share of the weakest attention dropped", elem_id="discard-slider")
        with gr.Row():
            curves = gr.Image(label="Deletion / insertion curves of this map vs random", type="filepath",
                              interactive=False, elem_id="curves")
            layers = gr.Image(label="Class-token attention, every layer", type="filepath", interactive=False,
                              elem_id="layers")
            patches = gr.Image(label="How the model cuts the image (patches / map cells)", type="filepath",
                               interactive=False, elem_id="patches")
        last = gr.State()  # the request on screen (handlers.Shown)
        page = handlers.Outputs(label=label, timing=timing, overlay=overlay, faithfulness=faithfulness, curves=curves,
                                layers=layers, patches=patches, verdict=verdict, shown=last, model=model,
                                neighbours_text=neighbours_text, neighbours=neighbours)
        example_set = None if not EXAMPLES else gr.Examples(  # thumbnails; the click also selects the default model
            [[str(p)] for p in EXAMPLES], inputs=[image], outputs=list(page), fn=page.bind(H.show_default_example),
            cache_examples=True, cache_mode="lazy", preprocess=False, elem_id="examples", examples_per_page=len(EXAMPLES),
            label=f"Examples (answered by {MODELS.titles.get(DEFAULT)} with its default method; see examples/README.md)")
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
        reliability, reliability_caption = ui.reliability(MODELS)  # before / after temperature scaling (vit.trust)
        gr.Markdown(reliability_caption, elem_id="reliability-caption")
        gr.Image(reliability, label="Reliability diagram", interactive=False, elem_id="reliability")

    explain_inputs = [method, layer, head, opacity, discard]
    private = {"api_visibility": "private", "show_progress": "hidden"}
    runs = {"concurrency_id": MODEL_RUNS, "preprocess": False, "api_visibility": "private"}
    score = {"fn": page.bind(H.score_view), "inputs": [last], "outputs": list(page), "concurrency_id": MODEL_RUNS,
             "api_visibility": "private"}  # after the overlay is shown: its deletion / insertion score
    explorer_tab.build(H, image=image, model=model, opacity=opacity, page=page, runs=runs, score=score)
    controls = handlers.Outputs(card=card, layer=layer, head=head, method=method, discard=discard, layers=layers)
    run.click(page.bind(H.show), [image, model, *explain_inputs], list(page), **runs).success(**score)
    run_all.click(lambda: gr.update(visible=True), None, compare_row, api_visibility="private").then(
        columns.bind(H.compare), [image, method, discard], list(columns), api_name="compare", concurrency_id=MODEL_RUNS,
        preprocess=False)
    opacity.release(page.bind(H.redraw), [last, opacity, head], list(page), **private)
    method.input(controls.bind(H.on_method_change), [model, method], list(controls), queue=False, **private).then(
        page.bind(H.show), [image, model, *explain_inputs], list(page), **runs).success(**score)
    model.input(page.bind(H.show_default), [image, model, opacity], list(page), **runs).success(**score)
    for event in (layer.release, head.input, discard.release):  # the map from the photo's pass, then its score
        event(page.bind(H.redraw_map), [image, model, *explain_inputs], list(page), **runs).success(
            **score, show_progress="hidden")
    image.upload(H.check_upload, [image], None, preprocess=False, **private)
    image.change(lambda: None, None, last, queue=False, **private)
    model.change(controls.bind(H.on_model_change), [model], list(controls), queue=False, **private)
    timer.tick(handlers.Outputs(status=status, settled=settled, card=card, timer=timer).bind(H.tick), [model, settled],
               [status, settled, card, timer], queue=False, **private)
    measure.click(H.measure_latency, None, [table], api_name="measure_latency", concurrency_id=MODEL_RUNS)
    for endpoint in api.api(H):  # /predict, /explain, /attention, /classify run a model; /methods, /explorer read
        gr.api(endpoint, api_name=endpoint.__name__, **({"queue": False} if endpoint.__name__ in ("methods", "explorer")
                                                        else {"concurrency_id": MODEL_RUNS}))
    demo.load(controls.bind(H.on_model_change), [model], list(controls), queue=False, **private).then(
        H.status_text, None, status, queue=False, **private)

demo.queue(**QUEUE)
MODELS.start(first=DEFAULT)  # after the page is built: the server answers while the models load

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_FILE_SIZE, theme=gr.themes.Soft(),
                mcp_server=ARGS.mcp or os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true")
