"""How a stack of perturbed copies runs fastest on ONNX Runtime (issue 31): images per second of each committed
checkpoint's plain graph over 36 images, four ways on this CPU:

- seq2: one image a run on a two-thread session (the app's session options, vit.runtime.engines);
- batch16: batches of 16 on that session (vit.runtime.engines before issue 31);
- par1: one image a run on a one-thread session, two runs at once (OrtEngine.forward_batches now);
- par1b: batches of 6 on the one-thread session, two at once.

    python scripts/batch_speed.py        # prints ms per image, median of 5 rounds each

Run it on an idle machine, with OMP_WAIT_POLICY=PASSIVE as the app sets it.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402

from vit.models.checkpoint import read_meta  # noqa: E402
from vit.runtime.engines import session_options  # noqa: E402


def main() -> int:
    pool = ThreadPoolExecutor(2)
    for path in sorted((ROOT / "checkpoints").glob("*.onnx")):
        if path.name.endswith(".attn.onnx"):
            continue
        side = read_meta(path.with_suffix(".safetensors"))["preprocessing"]["input_size"][-1]
        two = ort.InferenceSession(str(path), session_options(2), providers=["CPUExecutionProvider"])
        one = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        images = rng.standard_normal((36, 3, side, side)).astype(np.float32)
        ways = {
            "seq2": lambda: [two.run(["logits"], {"image": images[i:i + 1]}) for i in range(36)],
            "batch16": lambda: [two.run(["logits"], {"image": images[i:i + 16]}) for i in range(0, 36, 16)],
            "par1": lambda: list(pool.map(lambda i: one.run(["logits"], {"image": images[i:i + 1]}), range(36))),
            "par1b": lambda: list(pool.map(lambda i: one.run(["logits"], {"image": images[i:i + 6]}), range(0, 36, 6))),
        }
        out = {}
        for name, way in ways.items():
            way()
            times = []
            for _ in range(5):
                start = time.perf_counter()
                way()
                times.append((time.perf_counter() - start) * 1e3 / 36)
            out[name] = round(float(np.median(times)), 2)
        print(f"{path.stem}: ms per image {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
