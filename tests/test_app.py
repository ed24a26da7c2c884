"""The app launched in-process and driven through its named API endpoints with gradio_client; and
`python app.py --checkpoints DIR` on a folder holding one two-class model trained here."""
import json
import os
import re
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from conftest import CLASSES, FAMILIES, ROOT, SHARED_DATA, TINY_ARCH, label_probs
from gradio_client import Client, handle_file
from PIL import Image

from vit.explain import methods
from vit.models import checkpoint
from vit.models.attention import NEARLY_UNIFORM
from vit.models.factory import build, preprocessing
from vit.runtime import engines


@pytest.fixture(scope="module")
def app(running_app):
    """The app module, once every model has loaded (they load in a background thread)."""
    assert running_app[0].MODELS.wait(300)
    return running_app[0]


def test_every_model_loaded(app):
    assert app.IDS == FAMILIES and set(app.MODELS.models) == set(FAMILIES) and not app.MODELS.errors


def test_pytorch_runs_on_the_apps_threads_in_a_new_worker_thread(app):
    """app.py sets PyTorch's threads before its workers start; a thread started later (as Gradio's are) has them."""
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    assert seen == [engines.TORCH_THREADS]


def test_named_endpoints_are_published(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/predict", "/explain", "/attention", "/methods", "/classify", "/compare", "/measure_latency",
                     "/inside", "/explorer"}


def test_every_tab_is_in_one_row(app):
    """Classify, Compare models, Explorer and Inside the ViT are one gr.Tabs: a component drawn between two tabs
    (a gr.api's placeholder too) starts a second row of tabs, whose first tab shows at once beside Classify (seen:
    the Explorer filled in English under the Classify tab of a Japanese page)."""
    config = app.demo.get_config_file()
    kinds = {c["id"]: c["type"] for c in config["components"]}
    rows = [node for node in config["layout"]["children"] if kinds[node["id"]] == "tabs"]
    assert len(rows) == 1, f"{len(rows)} rows of tabs"
    tabs = [next(c for c in config["components"] if c["id"] == node["id"]) for node in rows[0]["children"]]
    assert [t["props"].get("elem_id") for t in tabs] == ["classify-tab", None, "explorer-tab", "inside-tab"]


def test_no_invisible_buttons_carry_the_api(app):
    """The API endpoints are gr.api functions, not clicks on hidden buttons."""
    config = app.demo.get_config_file()
    hidden = [c for c in config["components"] if c["type"] == "button" and c["props"].get("visible") is False]
    assert not hidden
    assert not (ROOT / "app.pyi").exists()  # no gr.Image subclass for Gradio to write stubs of


@pytest.mark.parametrize("family", FAMILIES)
def test_predict_endpoint(client, app, photo, family):
    label, info = client.predict(handle_file(str(photo)), family, api_name="/predict")
    probs = label_probs(label)
    assert set(probs) == set(CLASSES) and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert label["label"] == max(probs, key=probs.get)
    assert info["model"] == family and info["latency_ms"] > 0 and info["size_mb"] > 0 and info["num_params"] > 0


def test_predict_and_explain_give_the_nearest_training_photos(client, app, photo):
    """Each model's 5 nearest training photos, nearest first, named relative to the data root; a model served
    without a bank (the tiny stand-ins) says so instead."""
    for family in FAMILIES:
        _, info = client.predict(handle_file(str(photo)), family, api_name="/predict")
        _, record = client.predict(handle_file(str(photo)), family, "", api_name="/explain")
        if app.MODELS.models[family].bank is None:
            assert info["neighbours"] == [] and "no bank" in info["neighbours_note"]
            continue
        assert len(info["neighbours"]) == 5 and info["neighbours_note"] is None
        assert [n["distance"] for n in info["neighbours"]] == sorted(n["distance"] for n in info["neighbours"])
        assert all(n["label"] in CLASSES and "/train/" in n["photo"] for n in info["neighbours"])
        assert [n["photo"] for n in record["neighbours"]] == [n["photo"] for n in info["neighbours"]]  # same features


def test_the_explorer_endpoint(client, app):
    """/explorer: the committed record of each model (or, for a folder without one, a message naming the command)."""
    for family in FAMILIES:
        if app.H.records.models.get(family) is None:
            with pytest.raises(Exception, match="no explorer record"):
                client.predict(family, api_name="/explorer")
            continue
        view = client.predict(family, api_name="/explorer")
        test = app.MODELS.meta[family]["metrics"]["test"]
        assert view["classes"] == CLASSES and sum(map(sum, view["confusion"])) == test["n_images"]
        assert sum(view["confusion"][i][i] for i in range(3)) / test["n_images"] == pytest.approx(test["accuracy"])
        assert {p["split"] for p in view["points"]} == {"train", "val", "test", "nonfood"}


def test_predict_says_a_non_food_picture_is_out_of_distribution(client, app, tmp_path):
    """Stripes through the running app's /predict: flagged by every gated model, a null verdict otherwise."""
    import numpy as np

    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    a = (0.5 + 0.5 * np.sin(2 * np.pi * 12 * (xx + 0.3 * yy)))[..., None] * np.array([0.9, 0.3, 0.6])
    Image.fromarray((a * 255).astype(np.uint8)).save(path := tmp_path / "stripes.png")
    for family in FAMILIES:
        _, info = client.predict(handle_file(str(path)), family, api_name="/predict")
        gated = app.MODELS.models[family].gate is not None
        assert info["in_distribution"] is (False if gated else None), (family, info)
        assert (info["ood_score"] > info["ood_threshold"]) if gated else info["ood_score"] is None
        assert isinstance(info["prediction_set"], list) and info["temperature"] > 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("view, head", [("attention", "head 1"), ("rollout", "mean"), ("grad-cam", "max")])
def test_attention_endpoint(client, photo, family, view, head, app):
    overlay, mosaic = client.predict(handle_file(str(photo)), family, view, 1, head, 0.6, 0.5, api_name="/attention")
    p = app.MODELS.models[family]
    assert Image.open(overlay).size[0] == 336
    if app.MODELS.has_attention(family):
        tiles = (min(p.num_layers, 4), -(-p.num_layers // 4))
        assert Image.open(mosaic).size == (160 * tiles[0], 160 * tiles[1])
    else:
        assert mosaic is None


@pytest.mark.parametrize("family", FAMILIES)
def test_classify_endpoint_returns_everything_the_page_shows(client, app, photo, family):
    method = "rollout" if app.MODELS.has_attention(family) else "grad-cam"
    label, timing, overlay, faithful, curves, layers, patches, verdict = client.predict(
        handle_file(str(photo)), family, method, 2, "mean", 0.5, 0.9, api_name="/classify")
    assert sum(label_probs(label).values()) == pytest.approx(1.0, abs=1e-4)
    assert "ms prediction" in timing and "MB" in timing and "threads" in timing and f"{method} map" in timing
    assert "deletion AUC" in faithful and "insertion AUC" in faithful and Image.open(curves).size[0] > 300
    assert Image.open(overlay).mode in ("RGB", "RGBA") and Image.open(patches).size[0] == 336
    assert (layers is None) == (not app.MODELS.has_attention(family))
    assert verdict.startswith(("✅", "### ⚠️", "ℹ️"))  # the verdict opens the prediction area


@pytest.mark.parametrize("family, method", [("scratch_vit", m) for m in ("chefer", "attention", "rollout", "grad-cam",
                                                                          "occlusion", "rise")]
                         + [("timm_vit", "chefer"), ("effnet", "grad-cam"), ("effnet", "occlusion"), ("effnet", "rise")])
def test_explain_endpoint_gives_the_overlay_and_its_scores(client, app, photo, family, method):
    overlay, record = client.predict(handle_file(str(photo)), family, method, api_name="/explain")
    assert Image.open(overlay).size == (336, 336)
    assert record["model"] == family and record["method"] == method and record["label"] in CLASSES
    assert record["label"] == max(record["probs"], key=record["probs"].get) and record["latency_ms"] > 0
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert 0.0 <= record[key] <= 1.0, (method, key, record)
    if method == app.MODELS.models[family].methods[0]:  # the same numbers as the Python API
        expected = app.MODELS.models[family].explain(str(photo), method, score=True).faithfulness
        assert record["deletion_auc"] == pytest.approx(expected.deletion_auc, abs=1e-3)
    if methods.weights(method):  # attention weights: the drawn row's peak and entropy, on the fixed scale
        heat = app.MODELS.models[family].explain(str(photo), method).heat
        row = heat.ravel() / heat.sum()
        assert record["scale"].startswith("x uniform") and record["patch_keys"] == row.size
        assert record["peak_x_uniform"] == pytest.approx(row.max() * row.size, rel=1e-3)
        kept = row[row > 0]  # rollout's discard leaves zeros: 0 log 0 = 0
        assert record["entropy"] == pytest.approx(-(kept * np.log(kept)).sum() / np.log(row.size), abs=1e-3)
        assert record["nearly_uniform"] == (record["entropy"] >= NEARLY_UNIFORM)
    else:
        assert record["scale"] == "relative" and "peak_x_uniform" not in record


def test_inside_endpoint_gives_figure_7_of_each_vit_and_refuses_a_cnn(client, app):
    from gradio_client.exceptions import AppError

    for family in FAMILIES:
        if not app.MODELS.has_attention(family):
            with pytest.raises(AppError, match="has no attention maps: Inside the ViT is for the Vision Transformers"):
                client.predict(family, api_name="/inside")
            continue
        r, p = client.predict(family, api_name="/inside"), app.MODELS.models[family]
        cells = r["grid"][0] * r["grid"][1]
        assert r["model"] == family and r["input_px"] == p.image_size and r["patch_px"] * r["grid"][1] == p.image_size
        assert np.asarray(r["position_similarity"]).shape == (cells, cells)
        assert np.allclose(np.diag(r["position_similarity"]), 1.0, atol=1e-3)
        if r["note"]:  # tiny stand-ins: no record beside them
            assert r["attention_distance_px"] is None
            continue
        for key in ("attention_distance_px", "attention_entropy", "cls_attention_entropy", "attention_distance_fraction"):
            assert np.asarray(r[key]).shape == (p.num_layers, p.num_heads), key
        assert r["uniform_distance_fraction"] == pytest.approx(r["uniform_distance_px"] / r["input_px"], abs=1e-4)


def independent_figure_7(maps: list[np.ndarray], grid: tuple[int, int], patch_px: float, prefix: int) -> dict:
    """The issue's definitions written again in numpy, for one photo's per-layer (heads, N, N) maps: per (layer,
    head) the mean attention distance, and the normalised entropies of the patch rows and of the class row,
    every row restricted to the patch keys and renormalised."""
    rows, cols = grid
    centres = (np.stack(np.divmod(np.arange(rows * cols), cols), 1) + 0.5) * patch_px  # (P, 2) y, x
    d = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))  # (P, P)
    out = {"attention_distance_px": [], "attention_entropy": [], "cls_attention_entropy": []}
    for m in maps:
        a = m[:, prefix:, prefix:].astype(np.float64)
        a /= a.sum(-1, keepdims=True)  # (heads, P, P)
        c = m[:, 0, prefix:].astype(np.float64)
        c /= c.sum(-1, keepdims=True)  # (heads, P)
        ent = lambda p: -(p * np.log(np.maximum(p, 1e-300))).sum(-1) / np.log(p.shape[-1])  # noqa: E731
        out["attention_distance_px"].append((a * d).sum(-1).mean(-1))
        out["attention_entropy"].append(ent(a).mean(-1))
        out["cls_attention_entropy"].append(ent(c))
    return {k: np.stack(v) for k, v in out.items()}  # each (layers, heads)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "pizza_steak_sushi" / "test").is_dir(), reason="needs ../shared/data")
def test_inside_agrees_with_an_independent_computation_on_the_test_photos(client, app):
    """The issue's bar: every layer's and head's attention distance and both entropies within 5 % of the
    definitions recomputed here, from the served models' own attention maps (the engine serving them: ONNX
    Runtime's attention export) on the 75 test photos."""
    photos = sorted((SHARED_DATA / "pizza_steak_sushi" / "test").glob("*/*.jpg"))
    for family in [f for f in FAMILIES if app.MODELS.has_attention(f)]:
        r, p = client.predict(family, api_name="/inside"), app.MODELS.models[family]
        assert r["photos"] == len(photos) == 75, r["note"]
        sums = None
        for batch in range(0, len(photos), 25):
            x = torch.cat([p.prepare(str(f))[1] for f in photos[batch:batch + 25]])
            _, maps = p.engine.forward_attention(x)  # per layer (B, heads, N, N)
            for b in range(x.shape[0]):
                one = independent_figure_7([m[b].numpy() for m in maps], tuple(r["grid"]), r["patch_px"], p.prefix)
                sums = one if sums is None else {k: sums[k] + v for k, v in one.items()}
        for key, total in sums.items():
            mean = total / len(photos)
            assert np.allclose(r[key], mean, rtol=0.05, atol=0), (family, key, r[key], mean.round(4).tolist())
            print(f"{family} {key}: largest relative gap {np.max(np.abs(np.asarray(r[key]) / mean - 1)):.2e}")


def test_explain_with_no_method_uses_the_models_default(client, app, photo):
    _, record = client.predict(handle_file(str(photo)), "effnet", "", api_name="/explain")
    assert record["method"] == app.MODELS.models["effnet"].methods[0]


@pytest.mark.parametrize("model, method, message", [
    ("effnet", "rollout", "unknown method 'rollout' for effnet; choose one of ['lrp', 'occlusion', 'rise', 'grad-cam']"),
    ("resnet", "grad-cam", "unknown model 'resnet'; choose one of ['scratch_vit', 'timm_vit', 'effnet']"),
])
def test_explain_names_the_valid_ids(client, photo, model, method, message):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(handle_file(str(photo)), model, method, api_name="/explain")


def test_compare_endpoint_puts_one_method_on_every_model(client, app, photo):
    out = client.predict(handle_file(str(photo)), "grad-cam", 0.9, api_name="/compare")
    assert len(out) == 3 * len(FAMILIES)
    for label, text, overlay in zip(out[::3], out[1::3], out[2::3]):
        assert sum(label_probs(label).values()) == pytest.approx(1.0, abs=1e-4)
        assert "grad-cam map" in text and "deletion AUC" in text and Image.open(overlay).size[0] == 336
    out = client.predict(handle_file(str(photo)), "rollout", 0.9, api_name="/compare")  # the CNN lacks it
    default = app.MODELS.models["effnet"].methods[0]
    assert "rollout map" in out[1] and "its default instead" in out[7] and f"{default} map" in out[7]


def test_api_matches_the_python_api(client, photo, app):
    """The server's answer is the Predictor's answer for the same file."""
    for family in FAMILIES:
        label, _ = client.predict(handle_file(str(photo)), family, api_name="/predict")
        expected = app.MODELS.models[family].predict(str(photo))
        assert label_probs(label) == pytest.approx(expected, abs=1e-5)


def test_predict_classify_and_explain_agree(client, photo, app):
    """/predict, /classify (what the page shows) and /explain give one answer for one image and model."""
    for family in FAMILIES:
        label, _ = client.predict(handle_file(str(photo)), family, api_name="/predict")
        method = app.MODELS.models[family].methods[0]
        page = client.predict(handle_file(str(photo)), family, method, 1, "mean", 0.5, 0.9, api_name="/classify")[0]
        _, record = client.predict(handle_file(str(photo)), family, method, api_name="/explain")
        assert label_probs(page) == pytest.approx(label_probs(label), abs=1e-4)
        assert record["probs"] == pytest.approx(label_probs(label), abs=1e-4)


def test_methods_lists_each_models_methods(client, app):
    assert client.predict(api_name="/methods") == {i: list(app.MODELS.models[i].methods) for i in FAMILIES}
    assert client.predict(api_name="/methods")["effnet"] == ["lrp", "occlusion", "rise", "grad-cam"]


def test_measure_latency_fills_the_table(client, app):
    table = client.predict(api_name="/measure_latency")
    assert [row[0] for row in table["data"]] == ["Scratch ViT", "Hybrid ViT (timm)", "EfficientNet-Lite0"]
    assert all(float(row[-1]) > 0 for row in table["data"])


def test_bad_head_is_a_message(client, photo):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="head 99 does not exist"):
        client.predict(handle_file(str(photo)), "scratch_vit", "attention", 1, "head 99", 0.5, 0.9, api_name="/attention")


def test_unknown_model_lists_the_valid_ids(client, photo):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match=re.escape("unknown model 'resnet'; choose one of ['scratch_vit', 'timm_vit', "
                                                 "'effnet']")):
        client.predict(handle_file(str(photo)), "resnet", api_name="/predict")


def test_a_path_on_the_server_is_refused(app):
    """The API opens only files Gradio received: a bare path string (or a record Gradio did not check) is refused."""
    from gradio_client.exceptions import AppError
    client = Client(app.demo.local_url, verbose=False)
    for value in (str(ROOT / "examples" / "pizza-dad.jpeg"), {"path": str(ROOT / "examples" / "pizza-dad.jpeg")}):
        with pytest.raises(AppError, match="a path on the server is not accepted"):
            client.predict(value, "effnet", api_name="/predict")


def test_examples_are_offered_and_cached_lazily(app):
    """At least four examples; cached at first use, in a folder keyed by the checkpoints and the code
    (a cache left by other checkpoints would show their answers)."""
    examples = app.example_set
    assert len(examples.examples) == len(app.EXAMPLES) >= 4 and examples.cache_examples == "lazy"
    assert examples.cached_folder.parent == app.EXAMPLES_CACHE
    assert app.MODELS.fingerprint() in str(app.EXAMPLES_CACHE)


def test_example_shows_a_prediction(app):
    """What a click on an example shows: the default model's prediction for it."""
    photo = {"path": str(app.EXAMPLES[0]), "meta": {"_type": "gradio.FileData"}}
    v = app.H.show_example(photo, app.DEFAULT)
    assert max(v.label, key=v.label.get) in CLASSES and "ms prediction" in v.timing and "deletion AUC" in v.faithfulness
    assert v.verdict.startswith("✅" if app.MODELS.models[app.DEFAULT].gate is not None else "ℹ️")  # examples are food
    assert Image.open(v.overlay).size[0] == 336


# `python app.py --checkpoints DIR`: any folder of checkpoints, any class list.

TWO_CLASSES = ["apple_pie", "waffles"]


@pytest.fixture(scope="module")
def two_class_dir(tmp_path_factory):
    """DIR/desserts.safetensors: a tiny scratch ViT with two classes of its own, as vit.train writes one
    (built with vit.models.factory.build and saved with vit.models.checkpoint.save; random weights)."""
    out = tmp_path_factory.mktemp("my_checkpoints")
    built = build("scratch_vit", TINY_ARCH["scratch_vit"], num_classes=len(TWO_CLASSES))
    meta = {"family": "scratch_vit", "arch": built.arch, "class_names": TWO_CLASSES, "init": built.init,
            "preprocessing": preprocessing(built.model, "scratch_vit"), "recipe": {"epochs": 1},
            "history": [{"epoch": 1, "train_loss": 0.7, "train_acc": 0.5, "val_loss": 0.7, "val_acc": 0.5}]}
    checkpoint.save(out / "desserts.safetensors", built.model, meta)
    return out


@pytest.mark.slow
def test_any_checkpoint_folder_is_served(two_class_dir, photo):
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("FOODVISION_CHECKPOINTS", None)
    url = f"http://127.0.0.1:{port}/"
    log = two_class_dir / "server.log"
    with open(log, "w") as f:
        server = subprocess.Popen([sys.executable, "app.py", "--checkpoints", str(two_class_dir)], cwd=ROOT, env=env,
                                  stdout=f, stderr=subprocess.STDOUT)
    try:
        for _ in range(480):
            assert server.poll() is None, log.read_text()
            try:
                config = httpx.get(url + "config", timeout=2).json()
                break
            except (httpx.TransportError, ValueError):
                time.sleep(0.5)
        else:
            pytest.fail("app.py did not start:\n" + log.read_text())
        marker = next(c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "header")
        header = config["i18n_translations"]["en"][json.loads(marker.removeprefix("__i18n__"))["key"]]  # as shown
        assert "**apple_pie or waffles** with 1 model " in header
        radio = next(c for c in config["components"] if c["props"].get("elem_id") == "model-radio")
        assert [choice[1] for choice in radio["props"]["choices"]] == ["desserts"]
        client = Client(url, verbose=False)
        label, info = client.predict(handle_file(str(photo)), "desserts", api_name="/predict")
        assert set(label_probs(label)) == set(TWO_CLASSES) and info["model"] == "desserts"
    finally:
        server.terminate()
        server.wait(30)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
