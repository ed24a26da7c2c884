"""Shared fixtures: a tiny generated ImageFolder and tiny checkpoints of every family."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vit.models import checkpoint
from vit.models.factory import build, preprocessing
from vit.models.zoo import HYBRID

CLASSES = ["pizza", "steak", "sushi"]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_ARCH = {
    "scratch_vit": {"preset": "vit_test_p8_32"},
    "timm_vit": {"model_name": HYBRID, "img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "effnet": {"model_name": "tf_efficientnet_lite0"},
}


def label_probs(label: dict) -> dict[str, float]:
    """A gr.Label value as gradio_client returns it -> {class: probability}."""
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def png_bytes(width: int, height: int, rows: Iterable[bytes]) -> bytes:
    """An 8-bit RGB PNG that claims width x height pixels, with `rows` as its scanlines, compressed as
    they come (a large image never sits in memory whole); fewer rows than `height`: a bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(1)
    idat = b"".join(z.compress(b"\0" + row) for row in rows) + z.flush()  # filter byte 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels with (almost) no data: a decompression bomb's header."""
    return png_bytes(width, height, [bytes(63)])


def markdown_rows(lines: Iterable[str]) -> dict[str, list[str]]:
    """The rows of a Markdown table whose first cell is a `file` name: {file: the other cells}."""
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("| `")]
    return {c[0].strip("`"): c[1:] for c in cells}


def make_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A random-noise RGB photo with a bright square whose place depends on the seed."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    x = rng.integers(0, size[0] // 2)
    a[10:40, x:x + 30] = 255
    return Image.fromarray(a)


@pytest.fixture
def one_thread():
    """Tiny models on a shared machine: one intra-op thread is 10x faster than oversubscribed cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """root/{train,test}/{pizza,steak,sushi}/*.jpg: 4 train and 2 test images per class."""
    root = tmp_path_factory.mktemp("foodfolder")
    seed = 0
    for split, n in (("train", 4), ("test", 2)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                make_image(seed).save(root / split / c / f"{c}_{i}.jpg")
                seed += 1
    return root


def tiny_checkpoint(path: Path, family: str) -> Path:
    """A random-weight checkpoint of `family`, small and quick, with full metadata."""
    torch.manual_seed(0)
    built = build(family, TINY_ARCH[family], num_classes=len(CLASSES))
    meta = {"family": family, "arch": built.arch, "class_names": CLASSES, "init": built.init,
            "preprocessing": preprocessing(built.model, family),
            "metrics": {"test": {"accuracy": 0.5, "n_images": 6}}, "recipe": {"epochs": 0},
            "history": [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.4, "val_loss": 1.1, "val_acc": 0.3,
                         "test_loss": 1.1, "test_acc": 0.3}]}
    return checkpoint.save(path, built.model, meta)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {f: tiny_checkpoint(root / f"{f}.safetensors", f) for f in TINY_ARCH}


ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["scratch_vit", "timm_vit", "effnet"]


@pytest.fixture(scope="session")
def app_checkpoints(tmp_path_factory) -> Path:
    """The committed checkpoints when all three are present, else tiny stand-ins."""
    committed = ROOT / "checkpoints"
    if all((committed / f"{f}.safetensors").is_file() for f in FAMILIES):
        return committed
    root = tmp_path_factory.mktemp("app_ckpts")
    for f in FAMILIES:
        tiny_checkpoint(root / f"{f}.safetensors", f)
    return root


@pytest.fixture(scope="session")
def running_app(app_checkpoints):
    """app.py imported and launched in-process on a free port; yields (module, url)."""
    import importlib
    import os

    os.environ["FOODVISION_CHECKPOINTS"] = str(app_checkpoints)
    app = importlib.import_module("app")
    app.demo.launch(prevent_thread_lock=True, quiet=True, server_port=None, **app.LAUNCH)  # the page's words and style
    yield app, app.demo.local_url
    app.demo.close()


@pytest.fixture(scope="session")
def client(running_app):
    from gradio_client import Client
    return Client(running_app[1], verbose=False)


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    make_image(7, (400, 300)).save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(args: list[str], log_path: Path, env: dict | None = None, timeout_s: float = 240) -> Iterator[str]:
    """`python app.py ARGS` in its own process on a free port; yields its URL once /config answers, and
    stops it afterwards. A server that dies or never answers fails the test with its log."""
    import httpx

    port = free_port()
    env = {**os.environ, **(env or {}), "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert server.poll() is None, log_path.read_text()
            try:
                if httpx.get(url + "config", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not start in {timeout_s:.0f} s:\n" + log_path.read_text())
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(30)
