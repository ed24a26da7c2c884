"""Soak the app: start `python app.py`, send it N mixed requests, print the server's memory and throughput.

    python scripts/soak.py                          # 300 requests; checkpoints/ or $FOODVISION_CHECKPOINTS
    python scripts/soak.py -n 1000 --workers 4 --checkpoints DIR

The requests mix every loaded model and the /predict, /attention, /classify and /compare endpoints
over photos of several sizes and modes; about one in ten is a bad file (not an image, truncated,
empty, a decompression bomb's header) that must come back as a message. Printed: the server's RSS
when idle, after warm-up, every 50 requests and after the soak; its peak (VmHWM); growth; requests/s;
threads, open files and the size of Gradio's file cache; then the peak RSS over one request with a
10 000 x 10 000 JPEG and PNG. Figures to read, not a test: nothing is asserted. Linux (/proc) only.
"""
from __future__ import annotations

import argparse
import io
import random
import shutil
import struct
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cold_start  # noqa: F401 - a sibling script: puts vit on the path
import numpy as np
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from vit.bench.server import AppProcess
from vit.models import families

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = families.names()  # the committed checkpoints: one per registered family
BAD = ("notes.jpg", "cut.jpg", "empty.png", "bomb.png")


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """Noise with a bright square: a stand-in photo, different for every seed."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    a[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = 255
    return Image.fromarray(a)


def png_rows(path: Path, width: int, height: int, row: bytes, rows: int | None = None) -> Path:
    """An RGB PNG whose header says width x height; `rows` identical rows of data (all when None),
    written without holding the image in memory. Fewer rows than `height`: a bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(1)
    idat = b"".join(z.compress(b"\0" + row) for _ in range(height if rows is None else rows)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def make_inputs(d: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(photos, bad files, two 10 000 x 10 000 images) under d."""
    photos = []
    for seed, (size, mode, ext) in enumerate([((224, 224), "RGB", "jpg"), ((640, 480), "RGB", "jpg"),
                                              ((1600, 1200), "RGB", "jpg"), ((300, 400), "L", "png"),
                                              ((256, 256), "RGBA", "png"), ((320, 240), "P", "png"),
                                              ((500, 375), "CMYK", "jpg"), ((2000, 100), "RGB", "webp")]):
        photos.append(d / f"photo{seed}.{ext}")
        photo(seed, size).convert(mode).save(photos[-1])
    jpeg = io.BytesIO()
    photo(99, (300, 300)).save(jpeg, "JPEG")
    (d / "notes.jpg").write_text("this is not a photo")
    (d / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    png_rows(d / "bomb.png", 30_000, 30_000, bytes(90_000), rows=1)
    Image.new("RGB", (10_000, 10_000), (200, 30, 30)).save(d / "huge.jpg", quality=50)
    png_rows(d / "huge.png", 10_000, 10_000, bytes([200, 30, 30]) * 5_000 + bytes([30, 30, 200]) * 5_000)
    return photos, [d / name for name in BAD], [d / "huge.jpg", d / "huge.png"]


def request(client: Client, kind: str, family: str, image: Path, rng: random.Random):
    """One request of `kind` (an endpoint, "/predict" ...) for `family` on `image`, with one of the methods
    the server's /methods lists for it."""
    file = handle_file(str(image))
    if kind == "/predict":
        return client.predict(file, family, api_name=kind)
    view = rng.choice(client.predict(api_name="/methods")[family])
    if kind == "/attention":
        return client.predict(file, family, view, rng.randint(1, 4), "mean", 0.5, 0.9, api_name=kind)
    if kind == "/classify":
        return client.predict(file, family, view, 1, "max", 0.5, 0.9, api_name=kind)
    return client.predict(file, view, 0.9, "en", api_name=kind)  # /compare: the page's (image, method, discard, lang)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--requests", type=int, default=300)
    ap.add_argument("--workers", type=int, default=4, help="users, one thread each; above the queue's 2 so it queues")
    ap.add_argument("--checkpoints", help="checkpoint folder (default: $FOODVISION_CHECKPOINTS or checkpoints/)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="soak_"))
    photos, bad, huge = make_inputs(workdir)
    try:
        server = AppProcess(workdir, args.checkpoints)
    except (RuntimeError, TimeoutError) as e:
        sys.exit(f"{e}:\n" + (workdir / "server.log").read_text())
    try:
        client = Client(server.url, verbose=False)
        families = []
        for family in FAMILIES:
            try:
                request(client, "/predict", family, photos[0], rng)
                families.append(family)
            except AppError as e:
                print(f"skipping {family}: {e}")
        if not families:
            sys.exit("no model loaded")
        print(f"server: python app.py, pid {server.proc.pid}, started in {server.startup_s:.1f} s; "
              f"models: {', '.join(families)}")
        print(f"RSS idle after start         {server.rss():7.0f} MB")
        for kind in ("/predict", "/attention", "/classify", "/compare"):
            for family in families:
                request(client, kind, family, photos[1], rng)
        before, threads, files = server.rss(), server.status("Threads"), server.open_files()
        print(f"RSS after warm-up            {before:7.0f} MB   ({threads:.0f} threads, {files} open files)")

        plan = []
        for i in range(args.requests):
            kind = rng.choices(["/predict", "/attention", "/classify", "/compare"], weights=[50, 30, 15, 5])[0]
            image = rng.choice(bad) if rng.random() < 0.1 else rng.choice(photos)
            plan.append((kind, rng.choice(families), image, random.Random(args.seed * 100_003 + i)))
        answered, refused, unexpected, marks = 0, 0, [], []
        users = threading.local()  # a client, and so a session, per thread: each thread is one user

        def one(job):
            kind, family, image, job_rng = job
            if not hasattr(users, "client"):
                users.client = Client(server.url, verbose=False)
            try:
                request(users.client, kind, family, image, job_rng)
                return "ok" if image not in bad else f"{image.name}: answered, expected a message"
            except AppError as e:
                return "refused" if image in bad else f"{image.name} {kind} {family}: {e}"
            except Exception as e:  # noqa: BLE001 - anything else is what the soak is looking for
                return f"{image.name} {kind} {family}: {type(e).__name__}: {e}"

        server.reset_peak()
        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            for i, result in enumerate(pool.map(one, plan), 1):
                answered += result == "ok"
                refused += result == "refused"
                if result not in ("ok", "refused"):
                    unexpected.append(result)
                if i % 50 == 0 or i == len(plan):
                    marks.append(f"{i}: {server.rss():.0f}")
        elapsed = time.perf_counter() - start
        after, peak = server.rss(), server.status("VmHWM")
        print(f"soak: {len(plan)} requests ({args.workers} users at once) in {elapsed:.1f} s = "
              f"{len(plan) / elapsed:.2f} requests/s; {answered} answered, {refused} bad files refused with "
              f"a message, {len(unexpected)} unexpected")
        for line in unexpected[:10]:
            print("  unexpected:", line)
        print("RSS (MB) after requests      " + ", ".join(marks))
        print(f"RSS before soak {before:.0f} MB, after {after:.0f} MB, peak {peak:.0f} MB, "
              f"growth {after - before:+.0f} MB")
        print(f"threads {threads:.0f} -> {server.status('Threads'):.0f}, open files {files} -> "
              f"{server.open_files()}, Gradio file cache {server.cache_mb():.1f} MB on disk")

        for path in huge:
            base = server.rss()
            server.reset_peak()
            t = time.perf_counter()
            request(client, "/predict", families[0], path, rng)
            print(f"10000 x 10000 {path.suffix[1:].upper()} ({path.stat().st_size / 1e6:.1f} MB file): "
                  f"{time.perf_counter() - t:.1f} s, peak RSS {server.status('VmHWM') - base:+.0f} MB over "
                  f"{base:.0f} MB")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
