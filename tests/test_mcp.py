"""The app as an MCP server (`python app.py --mcp`), driven by the `mcp` package's client over the
streamable HTTP transport Gradio serves at /gradio_api/mcp/: the tools are listed with their typed
docstrings, and classifying a photo gives its label back."""
from __future__ import annotations

import ast
import asyncio
import base64

import httpx
import pytest
from conftest import CLASSES, app_server, make_image

mcp = pytest.importorskip("mcp", reason="pip install 'gradio[mcp]'")
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402

pytestmark = pytest.mark.slow  # the app in its own process


@pytest.fixture(scope="module")
def mcp_url(tmp_path_factory, app_checkpoints):
    d = tmp_path_factory.mktemp("mcp")
    with app_server(["--mcp", "--checkpoints", str(app_checkpoints)], d / "server.log") as url:
        yield url + "gradio_api/mcp/"


def photo_data_url() -> str:
    import io
    buffer = io.BytesIO()
    make_image(7, (200, 150)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def _session(url: str, work):
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def run(url: str, work):
    return asyncio.run(asyncio.wait_for(_session(url, work), timeout=300))


def test_tools_are_listed_with_typed_docstrings(mcp_url):
    tools = {t.name: t for t in run(mcp_url, lambda s: s.list_tools()).tools}
    assert {"predict", "explain", "attention", "methods", "explorer"} <= set(tools)
    predict = tools["predict"]
    assert predict.description.startswith("Classify a food photo")
    props = predict.inputSchema["properties"]
    assert props["image"]["type"] == "string" and "url" in props["image"]["format"]  # a file: a URL or base64
    assert props["model"]["type"] == "string" and "checkpoint's file stem" in props["model"]["description"]


def test_classify_tool_gives_the_label(mcp_url):
    async def work(session):
        return await session.call_tool("predict", {"image": photo_data_url(), "model": "effnet"})
    result = run(mcp_url, work)
    assert not result.isError, result.content
    texts = [c.text for c in result.content if c.type == "text"]
    label, info = ast.literal_eval(texts[0])  # Gradio's MCP server sends the outputs as their Python repr
    assert label["label"] in CLASSES and {c["label"] for c in label["confidences"]} == set(CLASSES), texts
    assert label["label"] == max(label["confidences"], key=lambda c: c["confidence"])["label"]
    assert info["model"] == "effnet" and info["latency_ms"] > 0
    assert isinstance(info["neighbours"], list) and "neighbours_note" in info  # the nearest training photos (or why none)
    assert all({"photo", "label", "distance"} <= set(n) for n in info["neighbours"])


def test_explain_tool_gives_the_overlay_and_the_maps_own_score(mcp_url, app_checkpoints):
    """The README's `explain` tool, end to end: the model's default map as a PNG the app serves, and the
    record /explain gives, whose label and deletion / insertion scores are this photo's (the same
    Predictor run here, from scratch, agrees)."""
    from vit.data.images import open_image
    from vit.serve.predictor import Predictor

    async def work(session):
        return await session.call_tool("explain", {"image": photo_data_url(), "model": "scratch_vit", "method": ""})
    result = run(mcp_url, work)
    assert not result.isError, result.content
    overlay, record = ast.literal_eval(next(c.text for c in result.content if c.type == "text"))
    png = httpx.get(overlay["url"], timeout=30)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    p = Predictor.from_checkpoint(app_checkpoints / "scratch_vit.safetensors", engine="torch")
    local = p.explain(open_image(base64.b64decode(photo_data_url().split(",", 1)[1])), score=True)
    assert record["model"] == "scratch_vit" and record["method"] == p.methods[0] and record["label"] == local.top
    assert (record["steps"], record["random_seeds"]) == (local.faithfulness.steps, list(local.faithfulness.random_seeds))
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert record[key] == pytest.approx(getattr(local.faithfulness, key), abs=1e-3), key
    assert set(record["probs"]) == set(CLASSES) and "in_distribution" in record


def test_attention_tool_gives_an_overlay_image(mcp_url):
    """Gradio 6.31's MCP server returns a tool with several outputs as one text (gradio/mcp.py,
    `_execute_tool_without_progress` returns `[result]`), so the overlay comes as a URL the app serves."""
    async def work(session):
        return await session.call_tool("attention", {"image": photo_data_url(), "model": "scratch_vit",
                                                     "view": "rollout"})
    result = run(mcp_url, work)
    assert not result.isError, result.content
    overlay, mosaic = ast.literal_eval(next(c.text for c in result.content if c.type == "text"))
    png = httpx.get(overlay["url"], timeout=30)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert mosaic["url"].endswith(".png")
