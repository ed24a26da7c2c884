"""A full explanation as the app's /explain computes it, per model and method: the timed forward pass,
the map, and its faithfulness score (deletion and insertion curves plus the random bar), on the
Predictor the app builds (engine "auto", waited for until final). Bar: p50 at most 2 s for every
method but occlusion and RISE (tens of batched forward passes each), which may take 4 s."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from PIL import Image

from vit.explain import methods as registry
from vit.serve.predictor import Predictor

BAR_S, OCCLUSION_BAR_S = 2.0, 4.0
RUNS = 5


def photo(size: int = 512) -> Image.Image:
    """A fixed, photo-sized test image (the timings do not depend on its content)."""
    return Image.effect_mandelbrot((size, size * 3 // 4), (-2, -1.2, 1, 1.2), 80).convert("RGB")


def bench_explanations(path: Path, runs: int = RUNS, image: Image.Image | None = None) -> list[dict]:
    """One row per method: p50 / max seconds of `Predictor.explain(image, method, score=True)` over `runs`
    calls on photos it has not seen (after one untimed call), the engine that served it, and whether it is
    within its bar; the default method's row also gets `bench_interaction`'s figures."""
    p = Predictor.from_checkpoint(path)
    p.wait_for_engine()
    p.warm()
    image = image or photo()
    rows = []
    for i, method in enumerate(p.methods):
        p.explain(image, method, score=True)  # warm-up: sessions, first-call allocations
        times = []
        for seed in range(1 + i * runs, 1 + (i + 1) * runs):  # a new photo each time: nothing cached
            start = time.perf_counter()
            p.explain(_other(image, seed), method, score=True)
            times.append(time.perf_counter() - start)
        bar = OCCLUSION_BAR_S if registry.PERTURBED in registry.get(method).needs else BAR_S
        p50 = statistics.median(times)
        rows.append({"method": method, "p50_s": p50, "max_s": max(times), "runs": runs, "engine": p.engine.name,
                     "bar_s": bar, "within_bar": p50 <= bar, "default": method == p.methods[0]})
    rows[0].update(bench_interaction(p, runs, image))
    return rows


def _other(image: Image.Image, seed: int) -> Image.Image:
    """`image` with one pixel changed by `seed`: another photo to the caches, the same work to the model."""
    out = image.copy()
    out.putpixel((0, 0), (seed % 256, seed // 256 % 256, 7))
    return out


def bench_interaction(p: Predictor, runs: int = RUNS, image: Image.Image | None = None) -> dict:
    """Server time (p50 ms over `runs` new photos) of what a person does with the default method: a full
    explanation with its score (a new photo), its parts (map_ms, score_ms), a redraw at another layer,
    head and discard (unscored, as the page shows it first; no model run for attention maps), and a switch to the default from the menu's second method on a photo
    already answered (its pass and random bar reused)."""
    default, other = p.methods[0], (p.methods[1:] or p.methods)[0]
    image = image or photo()
    full, maps, scores, redraw, switch = [], [], [], [], []
    for seed in range(100, 100 + runs):
        img = _other(image, seed)
        start = time.perf_counter()
        r = p.explain(img, default, score=True)
        full.append((time.perf_counter() - start) * 1e3)
        maps.append(r.map_ms)
        scores.append(r.score_ms)
        start = time.perf_counter()
        p.explain(img, default, layer=0, head="max", discard=0.5)
        redraw.append((time.perf_counter() - start) * 1e3)
        img = _other(image, seed + 1000)
        p.explain(img, other, score=True)
        start = time.perf_counter()
        p.explain(img, default, score=True)
        switch.append((time.perf_counter() - start) * 1e3)
    med = statistics.median
    return {"full_ms": med(full), "map_ms": med(maps), "score_ms": med(scores), "redraw_ms": med(redraw),
            "switch_ms": med(switch), "switch_from": other}


def main(argv: list[str] | None = None) -> None:
    """python -m vit.bench.explanations CKPT... [--runs N]: bench_interaction per checkpoint, as a markdown
    table (and JSON with --json PATH); the machine's load average is printed: timings on a busy machine lie."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = {}
    for path in args.checkpoints:
        p = Predictor.from_checkpoint(path)
        p.wait_for_engine()
        p.warm()
        p.explain(photo(), score=True)  # warm-up
        out[p.id] = {"default": p.methods[0], "engine": p.engine.name, **bench_interaction(p, args.runs)}
    print("| model | default | engine | full explanation ms (map + score) | redraw ms | method switch ms |")
    print("|---|---|---|---|---|---|")
    for i, e in out.items():
        print(f"| {i} | {e['default']} | {e['engine']} | {e['full_ms']:.0f} ({e['map_ms']:.0f} + {e['score_ms']:.0f}) "
              f"| {e['redraw_ms']:.0f} | {e['switch_ms']:.0f} (from {e['switch_from']}) |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
