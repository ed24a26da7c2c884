"""The out-of-distribution gate's cost per request (issue 20): what `/predict` spends on the verdict.

A served request is `Predictor.answer`: decode and prepare the photo, the model's timed forward
pass, then the gate (the shared ImageNet Lite0 backbone's pass, the kNN distance, the tempered
softmax and the conformal set: `Result.trust_ms`). Per checkpoint, on the engine the app serves it
with: the median of the whole call and of the gate's part, and the gate's share of the call.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from vit.models.factory import read_meta
from vit.serve.predictor import Predictor
from vit.trust import backbone


def photo(side: int = 512, seed: int = 0) -> Image.Image:
    """A fixed RGB photo-sized input (the gate's cost does not depend on what the photo shows)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def bench_gate(path: str | Path, runs: int = 30, warmup: int = 5, engine: str | None = None) -> dict:
    """{engine, request_ms, forward_ms, gate_ms (medians), gate_share (median of per-call shares)} of
    `Predictor.answer` on one checkpoint; {"gate": None} when the checkpoint has none."""
    if "trust" not in read_meta(path):
        return {"gate": None, "note": "this checkpoint has no out-of-distribution gate"}
    p = Predictor.from_checkpoint(path, engine=engine)
    p.wait_for_engine()
    if p.gate is None:
        return {"gate": None, "note": p.gate_note}
    image = photo()
    for _ in range(warmup):
        p.answer(image)
    total, forward, gate = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        r = p.answer(image)
        total.append((time.perf_counter() - start) * 1e3)
        forward.append(r.latency_ms)
        gate.append(r.trust_ms)
    shares = [g / t for g, t in zip(gate, total)]
    return {"gate": p.gate.detector.name, "features": p.gate.features, "engine": p.engine.name,
            "backbone_engine": backbone.get("torch" if p.engine.name == "torch" else "auto").name,
            "request_ms": float(np.median(total)), "forward_ms": float(np.median(forward)),
            "gate_ms": float(np.median(gate)), "gate_share": float(np.median(shares)), "runs": runs}
