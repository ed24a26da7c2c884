"""Serving memory: the peak RSS of a fresh process that loads one checkpoint and serves one image."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vit.serve.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]


def max_rss_mb() -> float:
    """This process's peak resident set size so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_peak_rss_mb() -> float:
    """Peak RSS of this process's own address space: /proc's VmHWM where there is one. After fork +
    exec, Linux's ru_maxrss still holds the parent's peak, which would swamp a child's figure."""
    try:
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # kB
    except (OSError, StopIteration):
        return max_rss_mb()


def probe_rss(path: Path, threads: int) -> dict:
    """Peak RSS (MB) of a fresh process that loads `path` and classifies and explains one image,
    and of the same process before loading (Python, torch, timm and this package alone)."""
    cmd = [sys.executable, "-m", "vit.bench", "--rss-probe", str(path), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_probe(path: str) -> dict:
    """The child's side of `probe_rss` (`python -m vit.bench --rss-probe PATH`)."""
    before = own_peak_rss_mb()
    predictor = Predictor.from_checkpoint(path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    predictor.answer(image)
    predictor.explain(image)
    return {"import_mb": before, "serve_mb": own_peak_rss_mb()}
