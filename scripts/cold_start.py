"""The app's cold start: seconds from `python app.py` to the server answering and to the first prediction,
against the floor: `python -c "import gradio, torch"`, timed in the same run.

    python scripts/cold_start.py [--model ID] [--checkpoints DIR] [--without-exports] [--timeout 300] [--json]

Times the floor first, then starts app.py as a subprocess on a free port (GRADIO_SERVER_PORT), polls
until the page answers, then calls the `/predict` API with gradio_client on a generated photo, once cold
and once warm, reads the server's peak memory, and stops it. The app serves the page before its models
are built, so the first request may wait for its model: that wait is in "first prediction". A model
with a current ONNX export on disk (committed beside the three checkpoints; for other checkpoints
written by the app's first launch, or `python -m vit.runtime.export`) answers without building its PyTorch
model; --without-exports times the first launch on checkpoints without exports.
Bars: server up <= 1.15 x floor, first prediction <= 1.3 x floor.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # vit, when run as a script

from vit.bench.server import free_port, stop, wait_until_up  # noqa: E402 - after the path is set
from vit.models import families  # noqa: E402

CNN = next(f for f in families.names() if not families.get(f).attention)  # asked for unless --model says


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), if /proc has it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def serving(timeout: float = 300) -> Iterator[str]:
    """app.py on the committed checkpoints, on a free port, its output discarded: yields its URL once
    it answers, and stops it on the way out."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, proc, time.monotonic() + timeout)
        yield url
    finally:
        stop(proc)


def floor_s(modules: str = "gradio, torch") -> float:
    """Seconds of `python -c "import gradio, torch"`: no app can start faster. With timm added: no first
    prediction of a timm model can come faster when no ONNX export of it is on disk yet."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", f"import {modules}"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def engines_on_disk(checkpoints: Path) -> list[str]:
    """The checkpoints in the folder with a current ONNX export beside them."""
    from vit.runtime import export

    return sorted(p.stem for p in checkpoints.glob("*.safetensors") if export.default_path(p).is_file()
                  and export.is_current(export.default_path(p), p))


def cold_start(model: str, checkpoints: str | None, timeout: float, workdir: Path, without_exports: bool) -> dict:
    """Start app.py, wait for it, ask for one prediction cold and one warm; the timings in seconds.
    `without_exports`: serve a copy of the checkpoints without their ONNX exports (a fresh clone's
    first launch, which writes them)."""
    from gradio_client import Client, handle_file  # imported before the clock starts

    folder = Path(checkpoints or ROOT / "checkpoints").resolve()
    if without_exports:
        copy = workdir / "checkpoints"
        copy.mkdir()
        for p in folder.glob("*.safetensors"):
            shutil.copy(p, copy / p.name)
        folder = copy
    exported = engines_on_disk(folder)

    photo = workdir / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photo)
    floor, floor_timm = floor_s(), floor_s("gradio, torch, timm")
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    argv = [sys.executable, "app.py", "--checkpoints", str(folder)]
    url = f"http://127.0.0.1:{port}/"
    log_path = workdir / "app.log"
    with open(log_path, "w") as log:
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(url, proc, start + timeout)
            up = time.monotonic() - start
            client = Client(url, verbose=False)
            asked = time.monotonic()
            probs, info = client.predict(handle_file(str(photo)), model, api_name="/predict")
            first = time.monotonic()
            client.predict(handle_file(str(photo)), model, api_name="/predict")
            warm = time.monotonic() - first
            rss = peak_rss_mb(proc.pid)
        except Exception:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            stop(proc)
    return {"model": model, "checkpoints": str(folder), "onnx_exports_on_disk": exported, "floor_s": floor, "floor_with_timm_s": floor_timm, "server_up_s": up, "first_prediction_s": first - start,
            "server_up_ratio": up / floor, "first_prediction_ratio": (first - start) / floor,
            "first_request_s": first - asked, "warm_request_s": warm, "server_peak_rss_mb": rss,
            "top_class": probs.get("label") if isinstance(probs, dict) else None,
            "model_latency_ms": info.get("latency_ms") if isinstance(info, dict) else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=CNN, help=f"model asked for: one of {', '.join(families.names())} "
                                               f"(default {CNN}, the CNN: a timm model whose first answer "
                                               "without an export needs timm)")
    p.add_argument("--checkpoints", help="checkpoint folder for the app (FOODVISION_CHECKPOINTS)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the server")
    p.add_argument("--without-exports", action="store_true",
                   help="copy the checkpoints without their .onnx exports (your own checkpoints' first launch)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = cold_start(args.model, args.checkpoints, args.timeout, Path(tmp), args.without_exports)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"checkpoints:       {r['checkpoints']} (current ONNX exports on disk: "
              f"{', '.join(r['onnx_exports_on_disk']) or 'none'})")
        print(f"floor:             {r['floor_s']:.1f} s for `python -c \"import gradio, torch\"`")
        print(f"server up:         {r['server_up_s']:.1f} s after `python app.py` "
              f"({r['server_up_ratio']:.2f} x floor; bar 1.15)")
        print(f"                   (`import gradio, torch, timm`: {r['floor_with_timm_s']:.1f} s = "
              f"{r['floor_with_timm_s'] / r['floor_s']:.2f} x floor, the least a timm model's first answer needs without an export)")
        print(f"first prediction:  {r['first_prediction_s']:.1f} s after `python app.py` "
              f"({r['first_prediction_ratio']:.2f} x floor; bar 1.3) (that request: {r['first_request_s']:.2f} s; the next: {r['warm_request_s']:.2f} s; "
              f"{r['model']} forward {r['model_latency_ms']} ms)")
        if r["server_peak_rss_mb"]:
            print(f"server peak RSS:   {r['server_peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
