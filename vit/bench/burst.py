"""What a burst leaves behind (issue 31): the app's resident memory after start, after warm-up (every model
has answered and explained once) and after each of two bursts of 44 concurrent clients (40 sending five
/predict each, four sending two /explain each, a new photo every request), with how every request ended:
answered, told "Queue is full", failed otherwise, or hung (no answer within the timeout).

    python -m vit.bench.burst [--bursts 2] [--checkpoints DIR] [--json]

Each client is its own gradio_client session, as separate visitors are. The app runs in its own process
(vit.bench.server); its memory is read from /proc a few seconds after each burst ends.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from vit.bench.server import AppProcess

log = logging.getLogger(__name__)

CLIENTS = {"/predict": (40, 5), "/explain": (4, 2)}  # endpoint -> (clients, requests each)
TIMEOUT_S = 300  # a request unanswered after this long has hung
SETTLE_S = 3.0  # after a burst, before memory is read


def photos(folder: Path, count: int, start: int = 0, side: int = 384) -> list[Path]:
    """`count` distinct photo-like JPEGs (smooth noise), so that no request is answered from a cache."""
    out = []
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        small = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        path = folder / f"burst-{i}.jpg"
        Image.fromarray(small).resize((side, side), Image.BICUBIC).save(path, quality=90)
        out.append(path)
    return out


def outcome(error: BaseException | None) -> str:
    if error is None:
        return "answered"
    return "queue_full" if "queue is full" in str(error).lower() else "failed"


def burst(url: str, models: list[str], folder: Path, first_photo: int = 0) -> dict:
    """One burst: every client starts at once; returns the count of each outcome and the wall time."""
    from gradio_client import Client, handle_file  # lazy: a test requirement, needed by the client side only

    jobs, n = [], first_photo
    for endpoint, (clients, each) in CLIENTS.items():
        for c in range(clients):
            jobs.append((endpoint, models[c % len(models)], photos(folder, each, n)))
            n += each
    counts: Counter = Counter()
    errors: Counter = Counter()  # the failures' messages, to read
    lock, start = threading.Lock(), threading.Barrier(len(jobs))

    def visitor(endpoint: str, model: str, files: list[Path]) -> None:
        client = Client(url, verbose=False)
        start.wait()
        for path in files:
            try:
                client.submit(handle_file(str(path)), model, api_name=endpoint).result(timeout=TIMEOUT_S)
                kind = "answered"
            except TimeoutError:
                kind = "hung"
            except Exception as e:  # noqa: BLE001 - every way a request can end is counted
                kind = outcome(e)
                if kind == "failed":
                    with lock:
                        errors[f"{type(e).__name__}: {str(e)[:160]}"] += 1
            with lock:
                counts[kind] += 1

    threads = [threading.Thread(target=visitor, args=job) for job in jobs]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": sum(counts.values()), **{k: counts.get(k, 0) for k in ("answered", "queue_full", "failed",
                                                                            "hung")},
            "seconds": round(time.monotonic() - began, 1), "errors": dict(errors.most_common(5))}


def bench_burst(bursts: int = 2, checkpoints: str | None = None) -> dict:
    """{rss_mb: {start, warm, burst 1, ...}, growth_mb: {...}, bursts: [...]} of one app process."""
    from gradio_client import Client, handle_file  # lazy: a test requirement, needed by the client side only

    with tempfile.TemporaryDirectory() as tmp, AppProcess(Path(tmp), checkpoints) as app:
        folder = Path(tmp)
        client = Client(app.url, verbose=False)
        models = list(client.predict(api_name="/methods"))
        rss = {"start": app.rss()}
        for i, model in enumerate(models):  # warm-up: every model answers and explains once
            photo = handle_file(str(photos(folder, 1, 10_000 + i)[0]))
            client.predict(photo, model, api_name="/predict")
            client.predict(photo, model, "", api_name="/explain")
        time.sleep(SETTLE_S)
        rss["warm"] = app.rss()
        runs = []
        for b in range(bursts):
            runs.append(burst(app.url, models, folder, first_photo=1000 * (b + 1)))
            time.sleep(SETTLE_S)
            rss[f"burst {b + 1}"] = app.rss()
            log.info("burst %d: %s; RSS %.0f MB", b + 1, runs[-1], rss[f"burst {b + 1}"])
        keys = list(rss)
        growth = {f"{a} -> {b}": round(rss[b] - rss[a], 1) for a, b in zip(keys[1:], keys[2:])}
        return {"rss_mb": {k: round(v, 1) for k, v in rss.items()}, "growth_mb": growth, "bursts": runs,
                "clients": {k: {"clients": c, "requests_each": r} for k, (c, r) in CLIENTS.items()},
                "threads": app.status("Threads")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.bench.burst", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bursts", type=int, default=2)
    p.add_argument("--checkpoints", help="folder of checkpoints to serve (default: the app's)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    result = bench_burst(args.bursts, args.checkpoints)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("RSS MB:", result["rss_mb"], "\ngrowth MB:", result["growth_mb"])
        for i, b in enumerate(result["bursts"], 1):
            print(f"burst {i}: {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
