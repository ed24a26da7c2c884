"""A full explanation as the app's /explain computes it, per model and method: the timed forward pass,
the map, and its faithfulness score (deletion and insertion curves plus the random bar), on the
Predictor the app builds (engine "auto", waited for until final). Bar: p50 at most 2 s for every
method but occlusion and RISE (tens of batched forward passes each), which may take 4 s."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from PIL import Image

from vit.explain import methods as registry
from vit.predict import Predictor

BAR_S, OCCLUSION_BAR_S = 2.0, 4.0
RUNS = 5


def photo(size: int = 512) -> Image.Image:
    """A fixed, photo-sized test image (the timings do not depend on its content)."""
    return Image.effect_mandelbrot((size, size * 3 // 4), (-2, -1.2, 1, 1.2), 80).convert("RGB")


def bench_explanations(path: Path, runs: int = RUNS, image: Image.Image | None = None) -> list[dict]:
    """One row per method: p50 / max seconds of `Predictor.explain(image, method, score=True)` over `runs`
    calls after one untimed call, the engine that served it, and whether it is within its bar."""
    p = Predictor.from_checkpoint(path)
    p.wait_for_engine()
    p.warm()
    image = image or photo()
    rows = []
    for method in p.methods:
        p.explain(image, method, score=True)  # warm-up: sessions, first-call allocations
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            p.explain(image, method, score=True)
            times.append(time.perf_counter() - start)
        bar = OCCLUSION_BAR_S if registry.PERTURBED in registry.get(method).needs else BAR_S
        p50 = statistics.median(times)
        rows.append({"method": method, "p50_s": p50, "max_s": max(times), "runs": runs, "engine": p.engine.name,
                     "bar_s": bar, "within_bar": p50 <= bar, "default": method == p.methods[0]})
    return rows
