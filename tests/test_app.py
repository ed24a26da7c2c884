"""The app launched in-process and driven through its named API endpoints with gradio_client."""
import pytest
from gradio_client import handle_file
from PIL import Image

from conftest import CLASSES, FAMILIES, label_probs


def test_every_model_loaded(running_app):
    app, _ = running_app
    assert set(app.MODELS.models) == set(FAMILIES) and not app.MODELS.errors


def test_named_endpoints_are_published(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/predict", "/attention", "/classify", "/compare", "/measure_latency"} <= names


@pytest.mark.parametrize("family", FAMILIES)
def test_predict_endpoint(client, photo, family):
    label, info = client.predict(handle_file(str(photo)), family, api_name="/predict")
    probs = label_probs(label)
    assert set(probs) == set(CLASSES) and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert label["label"] == max(probs, key=probs.get)
    assert info["model"] == family and info["latency_ms"] > 0 and info["size_mb"] > 0 and info["num_params"] > 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("view, head", [("attention", "head 1"), ("rollout", "mean"), ("grad-cam", "max")])
def test_attention_endpoint(client, photo, family, view, head, running_app):
    overlay, mosaic = client.predict(handle_file(str(photo)), family, view, 1, head, 0.6, 0.5, api_name="/attention")
    p = running_app[0].MODELS.models[family]
    assert Image.open(overlay).size[0] == 336
    if p.is_vit:
        tiles = (min(p.num_layers, 4), -(-p.num_layers // 4))
        assert Image.open(mosaic).size == (160 * tiles[0], 160 * tiles[1])
    else:
        assert mosaic is None


@pytest.mark.parametrize("family", FAMILIES)
def test_classify_endpoint_returns_everything_the_page_shows(client, photo, family):
    label, timing, overlay, layers, patches = client.predict(
        handle_file(str(photo)), family, "attention", 2, "mean", 0.5, 0.9, api_name="/classify")
    assert sum(label_probs(label).values()) == pytest.approx(1.0, abs=1e-4)
    assert "ms prediction" in timing and "MB" in timing and "threads" in timing
    assert Image.open(overlay).mode in ("RGB", "RGBA") and Image.open(patches).size[0] == 336
    assert (layers is None) == (family == "effnet")


def test_compare_endpoint_runs_every_model(client, photo):
    out = client.predict(handle_file(str(photo)), 0.9, api_name="/compare")
    assert len(out) == 3 * len(FAMILIES)
    for label, timing, overlay in zip(out[::3], out[1::3], out[2::3]):
        assert sum(label_probs(label).values()) == pytest.approx(1.0, abs=1e-4)
        assert "ms prediction" in timing and Image.open(overlay).size[0] == 336


def test_api_matches_the_python_api(client, photo, running_app):
    """The server's answer is the Predictor's answer for the same file."""
    app, _ = running_app
    for family in FAMILIES:
        label, _ = client.predict(handle_file(str(photo)), family, api_name="/predict")
        expected = app.MODELS.models[family].predict(str(photo))
        assert label_probs(label) == pytest.approx(expected, abs=1e-5)


def test_measure_latency_fills_the_table(client):
    table = client.predict(api_name="/measure_latency")
    assert [row[0] for row in table["data"]] == ["Scratch ViT (ours)", "Hybrid ViT (timm)", "EfficientNet-Lite0"]
    assert all(float(row[-1]) > 0 for row in table["data"])


def test_bad_head_is_a_message(client, photo):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="head 99 does not exist"):
        client.predict(handle_file(str(photo)), "scratch_vit", "attention", 1, "head 99", 0.5, 0.9, api_name="/attention")
