"""FoodVision ViT: classify a food photo with every model in a checkpoint folder, and see why.

    python app.py                          # checkpoints/ (or $FOODVISION_CHECKPOINTS); open the printed URL
    python app.py --checkpoints DIR        # every *.safetensors in DIR, of any family and class list
    python app.py --mcp                    # also an MCP server (or GRADIO_MCP_SERVER=True)

Wiring only: the page is laid out by `vit.app.page`; each widget event is bound to one method of
`vit.app.handlers.Handlers`, whose typed answer reaches the components by field name (`handlers.Outputs`),
in the page's language (`lang`, from the page's language probe; vit.app.i18n); the endpoints are
vit.app.api's, in English. The page is served at once and the models load behind it (vit.serve.model_set).
"""

import functools
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: its idle threads must not spin (docs/trust.md)
import gradio as gr  # noqa: E402
import torch  # noqa: E402

from vit.app import api, explorer_tab, handlers, i18n, inside_tab, page, ui
from vit.app import examples as example_photos
from vit.runtime import engines
from vit.serve import heap, model_set

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
heap.limit_arenas()  # before the worker threads allocate: a burst's heaps are few, and trimmed (vit.serve.heap)
torch.set_num_threads(engines.TORCH_THREADS)  # before the worker threads start: each takes it (engines)
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
EXAMPLES_CACHE = model_set.examples_cache(MODELS, [Path(__file__), *(Path(m.__file__) for m in (ui, handlers, i18n))])
os.environ["GRADIO_EXAMPLES_CACHE"] = str(EXAMPLES_CACHE)  # read by gr.Examples when it is built
# launch()'s arguments, for `python app.py` and the tests alike: the page's words (both languages) and its style
LAUNCH = {"i18n": i18n.translations(ui.page_texts(MODELS, DEFAULT)), "css": page.CSS, "theme": gr.themes.Soft(),
          "max_file_size": MAX_FILE_SIZE}

with gr.Blocks(title="FoodVision ViT", delete_cache=(3600, 3600)) as demo:  # result images: kept for an hour
    probe, lang = page.language()  # the page's language: "en" or "ja", for every event that says something
    page.header()
    with gr.Tab(i18n.marker("fv.tab.classify"), elem_id="classify-tab"):  # its button: the Explorer opens it
        c = page.classify_tab(MODELS, DEFAULT)
        last = gr.State()  # the request on screen (handlers.Shown)
        shown = handlers.Outputs(label=c.label, timing=c.timing, overlay=c.overlay, faithfulness=c.faithfulness,
                                 curves=c.curves, layers=c.layers, patches=c.patches, verdict=c.verdict, shown=last,
                                 model=c.model, neighbours_text=c.neighbours_text, neighbours=c.neighbours)
        example_sets = page.examples(c.examples, EXAMPLES, c.image, list(shown), lambda code: shown.bind(
            functools.partial(H.show_default_example, lang=code)))  # one gallery, and one cache, per language
        example_set = example_sets.get(i18n.DEFAULT)
        settled = gr.State(frozenset())
        timer = gr.Timer(1.0)
    with gr.Tab(i18n.marker("fv.tab.compare")):
        t = page.compare_tab(MODELS)

    explain_inputs = [c.method, c.layer, c.head, c.opacity, c.discard]
    private = {"api_visibility": "private", "show_progress": "hidden"}
    runs = {"concurrency_id": MODEL_RUNS, "preprocess": False, "api_visibility": "private"}
    score = {"fn": shown.bind(H.score_view), "inputs": [last, lang], "outputs": list(shown),  # after the overlay: its
             "concurrency_id": MODEL_RUNS, "api_visibility": "private",  # score, unless a newer map is up by then;
             "trigger_mode": "multiple"}  # a newer map's score starts while an older one's still runs (then dropped)
    pictures = {"fn": shown.bind(H.after_score), "inputs": [last, lang], "outputs": list(shown), **private}

    def scored(event, **kw):  # a map shown, then its score's words, then the pictures: curves, nearest photos
        return event.success(**score, **kw).then(**pictures)
    # The other tabs next, nothing drawn between them (a gr.api's placeholder would start a second row of tabs)
    explorer_tab.build(H, c, shown, lang, runs=runs, scored=scored)  # the test-set explorer; a click opens Classify
    inside_tab.build(H, api.inside(H), MODEL_RUNS, lang)  # Inside the ViT (Fig. 7 of the ViT paper), then /inside
    controls = handlers.Outputs(card=c.card, layer=c.layer, head=c.head, method=c.method, discard=c.discard,
                                layers=c.layers)
    tables = {"fn": H.tables, "inputs": [lang], "outputs": [t.table, t.loss, t.acc], "queue": False, **private}
    scored(c.run.click(shown.bind(H.show), [c.image, c.model, *explain_inputs, lang], list(shown), **runs))
    c.run_all.click(lambda: gr.update(visible=True), None, c.compare_row, api_visibility="private").then(
        c.columns.bind(H.compare), [c.image, c.method, c.discard, lang], list(c.columns), api_name="compare",
        concurrency_id=MODEL_RUNS, preprocess=False)
    c.opacity.release(shown.bind(H.redraw), [last, c.opacity, c.head], list(shown), **private)
    scored(c.method.input(controls.bind(H.on_method_change), [c.model, c.method], list(controls), queue=False,
                          **private).then(shown.bind(H.show), [c.image, c.model, *explain_inputs, lang], list(shown),
                                          **runs))
    scored(c.model.input(shown.bind(H.show_default), [c.image, c.model, c.opacity, lang], list(shown), **runs))
    for event in (c.layer.release, c.head.input, c.discard.release):  # the map from the photo's pass, then its score
        scored(event(shown.bind(H.redraw_map), [c.image, c.model, *explain_inputs, lang], list(shown), **runs),
               show_progress="hidden")
    c.image.upload(H.check_upload, [c.image, lang], None, preprocess=False, **private)
    c.image.change(H.new_photo, None, last, queue=False, **private)  # and no late score lands under its answer
    c.model.change(controls.bind(H.on_model_change), [c.model, lang], list(controls), queue=False, **private)
    timer.tick(handlers.Outputs(status=c.status, settled=settled, card=c.card, timer=timer).bind(H.tick),
               [c.model, settled, lang], [c.status, settled, c.card, timer], queue=False, **private)
    t.measure.click(H.measure_latency, [lang], [t.table], api_name="measure_latency", concurrency_id=MODEL_RUNS)
    for endpoint in api.api(H):  # /predict, /explain, /attention, /classify run a model; /methods, /explorer read
        gr.api(endpoint, api_name=endpoint.__name__, **({"queue": False} if endpoint.__name__ in ("methods", "explorer")
                                                        else {"concurrency_id": MODEL_RUNS}))
    demo.load(i18n.lang_of, [probe], [lang], queue=False, **private).then(
        controls.bind(H.on_model_change), [c.model, lang], list(controls), queue=False, **private).then(
        H.status_text, [lang], c.status, queue=False, **private).then(**tables)
    probe.change(i18n.lang_of, [probe], [lang], queue=False, **private).then(  # Settings -> Language
        shown.bind(H.retell), [last, lang], list(shown), queue=False, **private).then(
        controls.bind(H.on_model_change), [c.model, lang], list(controls), queue=False, **private).then(**tables)

demo.queue(**QUEUE)
MODELS.start(first=DEFAULT)  # after the page is built: the server answers while the models load

if __name__ == "__main__":
    demo.launch(mcp_server=ARGS.mcp or os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true", **LAUNCH)
