"""PyTorch's share of a request on one thread or two: each committed model's default map (LRP), Grad-CAM map
and eager forward pass, in ms (median over photos x repeats), with the app's OMP_WAIT_POLICY=PASSIVE. The figures behind
vit.runtime.engines.TORCH_THREADS; a figure to read, not a test. Run it on an idle machine.

    python scripts/torch_threads.py [--threads 1 2] [--photos 6] [--repeats 3] [--data-dir DIR]

Each thread count runs in its own process (a process's thread count is set once, before its first operation,
as app.py does). Photos: the test split's first ones (../shared/data), else generated noise.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # vit, when run as a script
DATA = ROOT.parent / "shared" / "data" / "pizza_steak_sushi" / "test"

from vit.explain import methods as registry  # noqa: E402 - after the path is set
from vit.models import families  # noqa: E402

MODELS = families.names()  # the committed checkpoints: one per family
GRAD_CAM = next(m for m in registry.ids() if registry.title(m) == "Grad-CAM")


def measure(threads: int, photos: int, repeats: int, data_dir: Path) -> dict:
    """{model: {"default map": ms, Grad-CAM's id: ms, "forward": ms}} in this process, on `threads` threads;
    every family's default map is LRP today."""
    import numpy as np
    import torch
    from PIL import Image

    from vit.serve.predictor import Predictor

    torch.set_num_threads(threads)
    paths = sorted(data_dir.rglob("*.jpg"))[:photos]
    rng = np.random.default_rng(0)
    images = [Image.open(p).convert("RGB") for p in paths] or [
        Image.fromarray(rng.integers(0, 255, (384, 512, 3), dtype=np.uint8)) for _ in range(photos)]
    out = {}
    for name in MODELS:
        p = Predictor.from_checkpoint(ROOT / "checkpoints" / f"{name}.safetensors")
        model = p.model.eval()
        xs = [p.prepare(im)[1] for im in images]
        default = families.get(name).default_method
        jobs = {"default map": lambda x: registry.compute(model, x, default),
                GRAD_CAM: lambda x: registry.compute(model, x, GRAD_CAM), "forward": lambda x: model(x)}
        out[name] = {}
        for job, fn in jobs.items():
            with torch.no_grad() if job == "forward" else torch.enable_grad():
                fn(xs[0])  # warm-up: the first call allocates
                times = []
                for x in xs:
                    for _ in range(repeats):
                        start = time.perf_counter()
                        fn(x)
                        times.append(time.perf_counter() - start)
            out[name][job] = round(statistics.median(times) * 1e3, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: measure and print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.photos, args.repeats, args.data_dir)))
        return 0
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    rows = {}
    for n in args.threads:
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--photos", str(args.photos),
                               "--repeats", str(args.repeats), "--data-dir", str(args.data_dir)],
                              env=env, capture_output=True, text=True, check=True)
        rows[n] = json.loads(done.stdout.strip().splitlines()[-1])
    print("ms (median), OMP_WAIT_POLICY=PASSIVE      " + "   ".join(f"{n} thread{'s' * (n > 1)}" for n in rows))
    for name in MODELS:
        for job in rows[args.threads[0]][name]:
            print(f"{name:12s} {job:12s}" + "".join(f"{rows[n][name][job]:12.1f}" for n in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
