"""Bad input, faults and load, through the real app (launched in-process, driven with gradio_client):
every upload gives a prediction or a clear message and the next request is still served; a damaged
checkpoint takes out its model, not the app; concurrent requests get the answers they get alone."""
from __future__ import annotations

import base64
import io
import itertools
import json
import pickle
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import FAMILIES, ROOT, app_server, label_probs, make_image, png_bytes, png_header_only, tiny_checkpoint
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors.torch import load_file, save_file

from vit.app import handlers
from vit.data.images import open_image
from vit.models import checkpoint
from vit.serve import model_set

TOO_LARGE = r"is too large to open safely .*The limit is 100 megapixels; please upload a smaller image\."
UNREADABLE = {  # upload -> the message the user gets
    "notes.jpg": re.escape("notes.jpg is not an image this app can read (empty, damaged, or another kind of file)."),
    "empty.jpg": re.escape("empty.jpg is empty (0 bytes)."),
    "cut.jpg": re.escape("cut.jpg could not be decoded: it looks truncated or damaged (image file is truncated"),
    "bomb.png": "bomb.png " + TOO_LARGE,  # header claims 30 000 x 30 000: over twice Pillow's limit, an error
    "bomb12k.png": "bomb12k.png " + TOO_LARGE,  # 12 000 x 12 000: Pillow only warns; vit.data.images refuses
}
READABLE = {  # upload -> the model that classifies it
    "one.png": "scratch_vit", "gray.png": "timm_vit", "clear.png": "effnet", "half-clear.png": "scratch_vit",
    "palette.png": "timm_vit", "cmyk.jpg": "effnet", "deep.png": "scratch_vit", "anim.gif": "timm_vit",
    "huge.jpg": "effnet", "huge.png": "scratch_vit",
}


def red_left_blue_right(size: tuple[int, int] = (120, 80)) -> Image.Image:
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return im


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, Path]:
    """Every kind of upload, bad and odd, generated here."""
    d = tmp_path_factory.mktemp("uploads")
    jpeg = io.BytesIO()
    make_image(1, (300, 300)).save(jpeg, "JPEG")
    (d / "notes.jpg").write_text("this is not a photo")
    (d / "empty.jpg").write_bytes(b"")
    (d / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (d / "bomb.png").write_bytes(png_header_only(30_000, 30_000))
    (d / "bomb12k.png").write_bytes(png_header_only(12_000, 12_000))
    photo = make_image(2, (120, 90))
    Image.new("RGB", (1, 1), "red").save(d / "one.png")
    photo.convert("L").save(d / "gray.png")
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(d / "clear.png")  # fully transparent red: white to us
    half = photo.convert("RGBA")
    half.putalpha(128)
    half.save(d / "half-clear.png")
    photo.convert("P").save(d / "palette.png")
    photo.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(np.full((90, 120), 64000, dtype=np.uint16)).save(d / "deep.png")
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(d / "first-frame.png")
    Image.new("RGB", (64, 64), "white").save(d / "white.png")
    Image.new("RGB", (10_000, 10_000), (200, 30, 30)).save(d / "huge.jpg", quality=50)
    row = bytes([200, 30, 30]) * 5_000 + bytes([30, 30, 200]) * 5_000
    (d / "huge.png").write_bytes(png_bytes(10_000, 10_000, itertools.repeat(row, 10_000)))
    for orientation in (1, 6):  # 6: the camera was turned; rotate 90 degrees clockwise to view
        exif = Image.Exif()
        exif[0x0112] = orientation
        red_left_blue_right().save(d / f"exif{orientation}.jpg", exif=exif, quality=95)
    return {p.name: p for p in d.iterdir()}


@pytest.fixture(scope="module", autouse=True)
def loaded(running_app):
    """Every model of the in-process app loaded (they load in a background thread)."""
    assert running_app[0].MODELS.wait(300)


@pytest.fixture(scope="module")
def good(running_app, photo) -> tuple[Path, dict[str, float]]:
    """A photo and the probabilities the scratch ViT gives it through the Python API."""
    return photo, running_app[0].MODELS.models["scratch_vit"].predict(str(photo))


def assert_serves(client: Client, good) -> None:
    photo, expected = good
    label, _ = client.predict(handle_file(str(photo)), "scratch_vit", api_name="/predict")
    assert label_probs(label) == pytest.approx(expected, abs=1e-5)


def warnings_of(job) -> list[str]:
    """The gr.Warning messages a finished gradio_client job received."""
    updates, logs = job.communicator.updates, []
    while not updates.empty():
        log = getattr(updates.get_nowait(), "log", None)
        if log and log[1] == "warning":
            logs.append(log[0])
    return logs


# 1. Images: a prediction or a clear message, and the server keeps serving.

@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Gradio's header read, in-process
@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_upload_is_a_message(client, uploads, good, name):
    with pytest.raises(AppError, match=UNREADABLE[name]) as e:
        client.predict(handle_file(str(uploads[name])), "scratch_vit", api_name="/predict")
    assert "Traceback" not in str(e.value)
    assert_serves(client, good)


@pytest.mark.parametrize("endpoint, args", [("/classify", ("grad-cam", 1, "mean", 0.5, 0.9)),
                                            ("/compare", ("grad-cam", 0.9)), ("/explain", ("occlusion",)),
                                            ("/attention", ("rollout", 1, "mean", 0.5, 0.9))])
def test_every_endpoint_gives_the_message(client, uploads, good, endpoint, args):
    family = () if endpoint == "/compare" else ("effnet",)
    with pytest.raises(AppError, match=UNREADABLE["notes.jpg"]):
        client.predict(handle_file(str(uploads["notes.jpg"])), *family, *args, api_name=endpoint)
    with pytest.raises(AppError, match="No image given: upload a photo"):
        client.predict(None, *family, *args, api_name=endpoint)
    assert_serves(client, good)


def test_no_image_is_a_message(client, good):
    with pytest.raises(AppError, match=re.escape("No image given: upload a photo, take one with the webcam, "
                                                 "or click an example.")):
        client.predict(None, "scratch_vit", api_name="/predict")
    assert_serves(client, good)


@pytest.mark.parametrize("name", READABLE)
def test_odd_image_is_classified_as_the_python_api_does(client, running_app, uploads, name):
    """The app hands our code the file as uploaded: Gradio converts nothing on the way (alpha, 16 bit)."""
    family = READABLE[name]
    p = running_app[0].MODELS.models[family]
    label, info = client.predict(handle_file(str(uploads[name])), family, api_name="/predict")
    assert info["model"] == family
    assert label_probs(label) == pytest.approx(p.predict(str(uploads[name])), abs=1e-5)
    same_as = {"clear.png": "white.png", "anim.gif": "first-frame.png"}.get(name)
    if same_as:  # transparent pixels are white; an animation is its first frame
        assert label_probs(label) == pytest.approx(p.predict(str(uploads[same_as])), abs=1e-5)


def test_tiny_image_warns(client, uploads):
    job = client.submit(handle_file(str(uploads["one.png"])), "scratch_vit", api_name="/predict")
    label, _ = job.result()
    assert sum(label_probs(label).values()) == pytest.approx(1.0, abs=1e-4)
    assert warnings_of(job) == ["The image is only 1 x 1 pixels; the prediction means little."]


@pytest.mark.parametrize("family", FAMILIES)
def test_exif_rotation_reaches_the_overlay(client, running_app, uploads, family):
    """Stored: red left half, blue right half, EXIF orientation 6. Seen upright: red on top. The overlay
    (opacity 0: the model's view alone) and the per-layer mosaic show it upright."""
    def colours(im: Image.Image):  # (top, bottom, left, right): the middle of each side
        a = np.asarray(im.convert("RGB")).astype(int)
        h, w = a.shape[:2]
        return a[h // 8, w // 2], a[-h // 8, w // 2], a[h // 2, w // 8], a[h // 2, -w // 8]

    def red(c):
        return c[0] > 180 and c[2] < 80

    def blue(c):
        return c[2] > 180 and c[0] < 80

    args = ("attention", 1, "mean", 0.0, 0.9)
    overlay, mosaic = client.predict(handle_file(str(uploads["exif6.jpg"])), family, *args, api_name="/attention")
    top, bottom, _, _ = colours(Image.open(overlay))
    assert red(top) and blue(bottom), (top, bottom)
    if running_app[0].MODELS.has_attention(family):  # layer 1's tile
        top, bottom, _, _ = colours(Image.open(mosaic).crop((0, 0, 160, 160)))
        assert red(top) and blue(bottom), (top, bottom)
    overlay, _ = client.predict(handle_file(str(uploads["exif1.jpg"])), family, *args, api_name="/attention")
    _, _, left, right = colours(Image.open(overlay))
    assert red(left) and blue(right), (left, right)


def call_rest(url: str, endpoint: str, data: list) -> tuple[str, object]:
    """POST /gradio_api/call/<endpoint> (the plain-HTTP API) and return its final (event, data)."""
    r = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, timeout=30)
    r.raise_for_status()
    stream = httpx.get(f"{url}gradio_api/call/{endpoint}/{r.json()['event_id']}", timeout=120).text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, flags=re.M)
    event, payload = events[-1]
    return event, json.loads(payload)


def data_url(data: bytes, mime: str = "image/png") -> dict:
    return {"url": f"data:{mime};base64," + base64.b64encode(data).decode(), "path": None,
            "meta": {"_type": "gradio.FileData"}}


def test_data_urls_like_webcam_and_clipboard(running_app, uploads, good, client, monkeypatch):
    """API callers may send the image inline as a data URL: the same outcomes, and our code gets the
    bytes as sent (Gradio would otherwise decode a small 10 000 x 10 000 PNG and re-encode it as WebP at
    full size first: 25 s and 1.5 GB)."""
    app, url = running_app
    received = []
    monkeypatch.setattr(handlers, "open_image", lambda image: received.append(image) or open_image(image))
    p = app.MODELS.models["scratch_vit"]
    for name in ("gray.png", "huge.png"):
        event, out = call_rest(url, "predict", [data_url(uploads[name].read_bytes()), "scratch_vit"])
        assert event == "complete" and label_probs(out[0]) == pytest.approx(p.predict(str(uploads[name])), abs=1e-5)
        assert received[-1] == uploads[name].read_bytes()  # the bytes as sent, decoded by vit.data.images alone
    for name, message in [("notes.jpg", "is not an image this app can read"), ("bomb.png", TOO_LARGE)]:
        event, out = call_rest(url, "predict", [data_url(uploads[name].read_bytes()), "scratch_vit"])
        assert event == "error" and re.search(message, out["error"]), out
    assert_serves(client, good)


def test_upload_over_max_file_size_is_refused_with_a_message(running_app, client, good, tmp_path):
    app, url = running_app
    limit = 25 * 1024 * 1024
    assert app.MAX_FILE_SIZE == "25mb" and httpx.get(url + "config").json()["max_file_size"] == limit  # the page
    big = tmp_path / "big.jpg"  # checks before uploading, with this limit
    with open(big, "wb") as f:
        f.truncate(limit + 1)
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {limit} bytes"):
        client.predict(handle_file(str(big)), "scratch_vit", api_name="/predict")  # gradio_client checks too
    r = httpx.post(url + "gradio_api/upload", files={"files": ("big.jpg", big.read_bytes())}, timeout=60)
    assert r.status_code == 413 and f"File size exceeded maximum allowed size of {limit} bytes" in r.text
    assert_serves(client, good)


# 2. Checkpoints: one that is missing, damaged or of another family takes out its model, not the app.

@pytest.fixture(scope="module")
def broken_app(tmp_path_factory):
    """`python app.py` in its own process, on checkpoints of which only scratch_vit is sound: timm_vit is
    truncated and effnet.safetensors is a text file. Yields (url, client)."""
    d = tmp_path_factory.mktemp("broken_checkpoints")
    tiny_checkpoint(d / "scratch_vit.safetensors", "scratch_vit")
    timm = tiny_checkpoint(d / "timm_vit.safetensors", "timm_vit")
    timm.write_bytes(timm.read_bytes()[: timm.stat().st_size // 2])
    (d / "effnet.safetensors").write_text("weights to follow")
    with app_server([], d / "server.log", {"FOODVISION_CHECKPOINTS": str(d)}, timeout_s=120) as url:
        yield url, Client(url, verbose=False)


@pytest.mark.slow
def test_app_starts_with_the_models_that_load(broken_app, photo):
    url, client = broken_app
    radio = next(c for c in httpx.get(url + "config").json()["components"]
                 if c["props"].get("elem_id") == "model-radio")  # every file is offered, by its title
    assert radio["props"]["choices"] == [["Scratch ViT", "scratch_vit"], ["Hybrid ViT (timm)", "timm_vit"],
                                         ["effnet", "effnet"]]
    label, info = client.predict(handle_file(str(photo)), "scratch_vit", api_name="/predict")
    assert info["model"] == "scratch_vit" and sum(label_probs(label).values()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(AppError, match=r"^Hybrid ViT \(timm\) is unavailable: \S+timm_vit.safetensors: weights "
                                       r"unreadable, the file is truncated or corrupt"):
        client.predict(handle_file(str(photo)), "timm_vit", api_name="/predict")
    with pytest.raises(AppError, match=r"^effnet is unavailable: \S+effnet.safetensors: not a safetensors file"):
        client.predict(handle_file(str(photo)), "effnet", "grad-cam", 1, "mean", 0.5, 0.9, api_name="/attention")
    out = client.predict(handle_file(str(photo)), "grad-cam", 0.9, api_name="/compare")
    assert not out[3] and out[4].startswith("unavailable: ") and "truncated" in out[4]
    assert not out[6] and "not a safetensors file" in out[7] and "ms prediction" in out[1]
    rows = client.predict(api_name="/measure_latency")["data"]
    assert float(rows[0][-1]) > 0 and rows[1][1].startswith("unavailable: ") and rows[2][1].startswith("unavailable")


class _Touch:
    """Unpickling this creates a file: the proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_checkpoints_are_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    (tmp_path / "scratch_vit.safetensors").write_bytes(pickle.dumps({"weights": _Touch(marker)}))
    torch.save({"weights": _Touch(marker)}, tmp_path / "timm_vit.safetensors")
    models = model_set.ModelSet(model_set.checkpoint_paths(tmp_path)).load()
    assert not models.models and not marker.exists()
    assert all("not a safetensors file" in models.errors[f] for f in ("scratch_vit", "timm_vit"))
    for path in [ROOT / "app.py", *sorted((ROOT / "vit").rglob("*.py"))]:  # and no code path could
        source = path.read_text()
        assert not re.search(r"\bimport pickle|pickle\.loads?\(|\bdill\b|joblib", source), path
        assert all("weights_only=True" in call for call in re.findall(r"torch\.load\([^)]*\)", source)), path


@pytest.mark.parametrize("edit, message", [
    ({"arch": {"preset": "vit_test_p8_32", "bogus": 1}}, r"cannot be loaded \(TypeError: .*bogus"),
    ({"class_names": 3}, r"bad metadata: class_names = 3: expected a list"),  # vit.models.checkpoint validates
    ({"preprocessing": {}}, r"bad metadata: preprocessing.input_size is missing"),
    ({"class_names": ["pizza", "steak"]}, "weights do not fit the scratch_vit architecture"),
])
def test_checkpoint_metadata_that_builds_no_model_is_reported(tiny_checkpoints, tmp_path, edit, message):
    src = tiny_checkpoints["scratch_vit"]
    meta = {**checkpoint.read_meta(src), **edit}
    path = tmp_path / "scratch_vit.safetensors"
    save_file(load_file(str(src)), str(path), metadata={checkpoint.META_KEY: json.dumps(meta)})
    models = model_set.ModelSet({"scratch_vit": path}).load()
    assert not models.models and re.search(message, models.errors["scratch_vit"])
    assert str(path) in models.errors["scratch_vit"]


# 3. Concurrency: the queue runs two requests at once; each gets the answer it gets alone.

@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("photos_concurrent")
    paths = []
    for seed, size in enumerate([(96, 80), (200, 150), (80, 120), (300, 300), (640, 480), (150, 250)]):
        paths.append(d / f"p{seed}.{'jpg' if seed % 2 else 'png'}")
        make_image(100 + seed, size).save(paths[-1])
    return paths


def job_args(i: int, photos: list[Path]) -> tuple[str, tuple]:
    """Request i of 12: /predict and /attention alternately, each model, six different photos."""
    family, image = FAMILIES[i % 3], handle_file(str(photos[i % 6]))
    if i % 2 == 0:
        return "/predict", (image, family)
    return "/attention", (image, family, ("attention", "rollout")[i // 6 % 2], 1 + i % 2, "mean", 0.6, 0.5)


def outcome(endpoint: str, result) -> tuple:
    if endpoint == "/predict":
        return (label_probs(result[0]),)
    return tuple(None if r is None else np.asarray(Image.open(r).convert("RGB")).astype(int) for r in result)


def test_concurrent_requests_get_their_own_answers(client, running_app, photos):
    """Twelve users (a client, and so a session, each) send different photos to different models and
    endpoints at once; each gets what it gets alone. (One client shared by threads can lose a job to a
    race of its own SSE reader: gradio_client's CancelledError, seen once in a 1000-request soak.)"""
    jobs = [job_args(i, photos) for i in range(12)]
    alone = [outcome(e, client.predict(*args, api_name=e)) for e, args in jobs]
    users = [Client(running_app[1], verbose=False) for _ in jobs]
    submitted = [(e, user.submit(*args, api_name=e)) for user, (e, args) in zip(users, jobs)]  # all at once
    together = [outcome(e, job.result(timeout=120)) for e, job in submitted]
    for (endpoint, _), a, b in zip(jobs, alone, together):
        if endpoint == "/predict":
            assert b[0] == pytest.approx(a[0], abs=1e-5)
        else:
            for x, y in zip(a, b):
                assert (x is None) == (y is None) and (x is None or np.abs(x - y).max() <= 2)
    for p in running_app[0].MODELS.models.values():  # nothing left behind on the shared models
        assert not p.model.training and all(t.grad is None for t in p.model.parameters())
        assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in p.model.modules())


def test_at_most_two_model_runs_at_once_across_endpoints(client, running_app, photo, monkeypatch):
    """default_concurrency_limit is per event unless events share a concurrency_id: /predict, /attention,
    /classify and /compare share one, so two CPU cores never run more than two requests."""
    app = running_app[0]
    active, peak, lock = 0, 0, threading.Lock()

    def counted(method):
        def run(*args, **kwargs):
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            try:
                time.sleep(0.2)
                return method(*args, **kwargs)
            finally:
                with lock:
                    active -= 1
        return run

    for p in app.MODELS.models.values():
        monkeypatch.setattr(p, "answer", counted(p.answer))
        monkeypatch.setattr(p, "explain", counted(p.explain))
    image = handle_file(str(photo))
    jobs = [client.submit(image, "effnet", api_name="/predict") for _ in range(4)]
    jobs += [client.submit(image, "scratch_vit", "rollout", 1, "mean", 0.5, 0.9, api_name="/attention")
             for _ in range(4)]
    for job in jobs:
        job.result(timeout=60)
    assert peak == app.QUEUE["default_concurrency_limit"] == 2


def test_a_full_queue_refuses_with_a_message(client, running_app, photo, good, monkeypatch):
    """Two requests run and QUEUE["max_size"] (32, over all events) wait; the next are refused, with a
    message, and once the queue drains the server answers as before."""
    app = running_app[0]
    p = app.MODELS.models["effnet"]
    running, release, answer = threading.Semaphore(0), threading.Event(), p.answer

    def held(image):
        running.release()
        release.wait(60)
        return answer(image)

    monkeypatch.setattr(p, "answer", held)
    submit = lambda: client.submit(handle_file(str(photo)), "effnet", api_name="/predict")  # noqa: E731
    try:
        jobs = [submit(), submit()]
        assert running.acquire(timeout=30) and running.acquire(timeout=30)  # both computing, none waiting
        jobs += [submit() for _ in range(app.QUEUE["max_size"] + 6)]
        deadline = time.monotonic() + 60
        while sum(job.done() for job in jobs) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        r = httpx.post(running_app[1] + "gradio_api/call/predict", timeout=30,
                       json={"data": [data_url(photo.read_bytes(), "image/jpeg"), "effnet"]})
        assert r.status_code == 503 and r.json()["detail"] == "Queue is full. Max size is 32 and size is 32."
    finally:
        release.set()
    refused = []
    for job in jobs:
        try:
            job.result(timeout=120)
        except Exception as e:  # noqa: BLE001 - what the client raises is part of what is checked
            refused.append(f"{type(e).__name__}: {e}")
    assert refused == ["QueueError: Queue is full! Please try again."] * 6, refused
    monkeypatch.undo()
    assert_serves(client, good)


def test_identical_results_at_once_arrive_whole(running_app, photo):
    """Users who send the same photo at the same moment get the same overlay file; each download of it
    is whole (Gradio alone rewrites it in place for every request, and a download in between breaks)."""
    # one engine for every round: on a fresh clone the ONNX export is still being written behind the app
    assert running_app[0].MODELS.get("scratch_vit").wait_for_engine(300) in ("onnxruntime", "torch")
    users = [Client(running_app[1], verbose=False) for _ in range(4)]
    for round_ in range(8):
        jobs = [user.submit(handle_file(str(photo)), "scratch_vit", "rollout", 1, "mean", 0.5, 0.5 + round_ / 100,
                            api_name="/attention") for user in users]
        files = [path for job in jobs for path in job.result(timeout=60)]
        assert len(set(files)) == 2  # the overlay and the mosaic, the same for every user
        for path in files:
            Image.open(path).load()
