"""The figures of issue 31 ("one pass for every model"), in one run: per model, its default map's time
beside RISE's on the same new photos, the server time of that map's deletion / insertion score, and
/predict's answer path against two bare ONNX Runtime sessions; then the app's cold start, its memory over
two bursts of concurrent clients, and click-to-overlay / click-to-score in Chromium.

    python -m vit.bench.speed [--photos 8] [--data-dir ../shared/data/pizza_steak_sushi] [--out FILE] [--no-browser]

A photo is new to the model each time (a fresh Predictor per photo: nothing is read from a cache); the
map and the score are timed as the page asks for them, the map first (Predictor.explain without a
score), then the score. Run it on an idle machine; docs/performance.md's issue-31 block is written from
its saved output (checkpoints/speed.json), before and after the change, by `python -m vit.bench.readme`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as app.py: idle threads must not spin
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from vit.bench.burst import bench_burst  # noqa: E402
from vit.bench.machine import machine_info  # noqa: E402
from vit.bench.request_cost import bench_request  # noqa: E402
from vit.explain import methods as registry  # noqa: E402
from vit.explain.cli import image_paths  # noqa: E402
from vit.runtime.engines import TORCH_THREADS  # noqa: E402
from vit.serve.model_set import checkpoint_paths  # noqa: E402
from vit.serve.predictor import Predictor  # noqa: E402

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "pizza_steak_sushi"
SKIP = 30  # the first test photos chose the defaults: the figures are taken on the others
RISE = next(m for m in registry.ids() if registry.title(m) == "RISE")  # the map the ratio is against


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def bench_maps(path: Path, photos: list[Path]) -> dict:
    """Per photo, on a fresh Predictor each time: the default map's map_ms, then its score's score_ms (as
    the page: the overlay first, the score next), and RISE's map_ms on the same photo."""
    rows = []
    for photo in photos:
        image = Image.open(photo).convert("RGB")
        p = Predictor.from_checkpoint(path)
        p.wait_for_engine()
        p.warm()  # the PyTorch model a gradient map needs: built at start-up in the app, not per click
        shown = p.explain(image)
        scored = p.explain(image, score=True)
        rise = None if RISE not in p.methods else shown if shown.method == RISE else p.explain(image, RISE)
        rows.append({"photo": photo.name, "default": shown.method, "map_ms": shown.map_ms,  # RISE the default: its
                     "score_ms": scored.score_ms, "rise_map_ms": rise.map_ms if rise else None})  # map, uncached
    out = {"default": rows[0]["default"], "photos": len(rows), "map_ms": median([r["map_ms"] for r in rows]),
           "score_ms": median([r["score_ms"] for r in rows]), "rows": rows}
    if rows[0]["rise_map_ms"] is not None:
        out["rise_map_ms"] = median([r["rise_map_ms"] for r in rows])
        out["map_over_rise"] = round(statistics.median(r["map_ms"] / r["rise_map_ms"] for r in rows), 3)
    return out


def bench_clicks(photos: int, data_dir: Path) -> dict:
    """scripts/click_to_overlay.py's medians in Chromium (click -> overlay, click -> score): {model: row}."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "click_to_overlay.py"), "--json",
                           "--photos", str(photos), "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return {r["model"]: r for r in map(json.loads, done.stdout.strip().splitlines())}  # one line per model


def bench_cold_start(runs: int = 3) -> dict:
    """scripts/cold_start.py (the page's default model asked for), `runs` times: the medians of server up and
    first prediction, in seconds and as multiples of the floor timed in the same run (issue 30's bar: within
    10 % of the code before it)."""
    seen = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "cold_start.py"), "--json"],
                              capture_output=True, text=True, cwd=ROOT, timeout=900)
        if done.returncode != 0:
            return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
        seen.append(json.loads(done.stdout.strip().splitlines()[-1]))
    keys = ("floor_s", "server_up_s", "first_prediction_s", "server_up_ratio", "first_prediction_ratio")
    return {"runs": runs, **{k: round(statistics.median(r[k] for r in seen), 2) for k in keys}}


def run(photos: int = 8, data_dir: Path = DATA, browser: bool = True) -> dict:
    paths = image_paths(data_dir, "test", None)[SKIP:SKIP + photos]
    result = {"command": "python -m vit.bench.speed " + " ".join(sys.argv[1:]), "created": time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": machine_info(), "models": {}}
    for name, path in checkpoint_paths().items():
        log.info("%s: maps and scores on %d new photos", name, len(paths))
        result["models"][name] = {"maps": bench_maps(path, paths)}
        log.info("%s: the answer path against two bare sessions", name)
        result["models"][name]["request"] = bench_request(path)
    log.info("cold start")
    result["cold_start"] = bench_cold_start()
    log.info("memory over two bursts")
    result["memory"] = bench_burst(2)
    if browser:
        log.info("click to overlay and score in Chromium")
        result["clicks"] = bench_clicks(max(2, photos // 2), data_dir)
    result["load_avg_end"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.bench.speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--out", type=Path, help="also write the result here")
    p.add_argument("--no-browser", action="store_true", help="skip the Chromium clicks")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    torch.set_num_threads(TORCH_THREADS)  # as app.py: the maps and scores are timed as the app computes them
    result = run(args.photos, args.data_dir, not args.no_browser)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
