"""Timing that background load cannot bias: compared cases run interleaved, in rotating turns."""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from vit.serve.predictor import time_forward

if TYPE_CHECKING:
    from vit.serve.model_set import ModelSet

BLOCK = 5  # calls of one case per turn when cases are timed interleaved


@dataclass
class Case:
    """One thing to time: `fn(x)` inside `context()`, with `threads` intra-op threads (None: as set)."""
    fn: Callable[[torch.Tensor], object]
    x: torch.Tensor
    context: Callable[[], AbstractContextManager] = torch.inference_mode
    threads: int | None = None


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def summary(times: list[float]) -> dict:
    t = np.asarray(times)
    return {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95)), "min": float(t.min()),
            "runs": len(t)}


def time_interleaved(cases: dict[str, Case], runs: int, warmup: int) -> dict[str, dict]:
    """p50/p95/min ms of each case, timed in turns of BLOCK calls until each has `runs`; the order of
    the turns rotates every round, so no case always follows the same neighbour."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for c in cases.values():
        with num_threads(c.threads):
            time_forward(None, c.x, runs=0, warmup=warmup, fn=c.fn, context=c.context)
    names, turn = list(cases), 0
    while any(len(t) < runs for t in times.values()):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            c, n = cases[name], min(BLOCK, runs - len(times[name]))
            with num_threads(c.threads):  # a changed thread count gets one untimed call to settle
                times[name] += time_forward(None, c.x, runs=n, warmup=1 if c.threads else 0, fn=c.fn,
                                            context=c.context)
        turn += 1
    return {name: summary(t) for name, t in times.items()}


def ratio(a: dict, b: dict) -> dict:
    """a / b by median and by best run (the best is the least disturbed by other processes)."""
    return {"p50": a["p50"] / b["p50"], "best": a["min"] / b["min"]}


def measure_p50(models: "ModelSet", runs: int = 20) -> dict[str, float]:
    """Median warm latency (ms) of each loaded model's plain forward pass at batch size 1, on this server."""
    out = {}
    for i, p in list(models.models.items()):
        x = torch.zeros(1, 3, p.image_size, p.image_size)
        out[i] = float(np.median(time_forward(p.model, x, runs=runs, warmup=3)))
    return out
