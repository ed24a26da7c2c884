"""One checkpoint's own figures: size, FLOPs, latency against the floor, throughput, explanation cost."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from vit import explain
from vit.bench.flops import count_flops
from vit.bench.timing import Case, ratio, time_interleaved
from vit.models import attention, families
from vit.models.checkpoint import Checkpoint, num_params
from vit.serve.predictor import time_forward

BATCH = 32  # default batch size of the throughput figure


def input_px(ckpt: Checkpoint) -> int:
    return ckpt.preprocessing.image_size


def explain_case(model: nn.Module, family: str, x: torch.Tensor) -> tuple[str, Case]:
    """The app's explanation path for one image, as one timed case."""
    if not families.get(family).attention:  # Grad-CAM: forward + backward, autograd must be on
        return "Grad-CAM", Case(lambda x: explain.grad_cam(model, x), x, nullcontext)

    def maps_and_rollout(x: torch.Tensor) -> torch.Tensor:
        _, maps = attention.attention_maps(model, x)
        return explain.rollout([m[0] for m in maps])  # (N, N)
    return "attention maps + rollout", Case(maps_and_rollout, x)


def bench_model(ckpt: Checkpoint, runs: int, warmup: int, floor: float, batch: int = BATCH) -> dict:
    """Size, FLOPs, bs=1 latency, throughput at batch size `batch`, the explanation's latency."""
    model, family, size = ckpt.model, ckpt.family, input_px(ckpt)
    x = torch.randn(1, 3, size, size)
    flops = count_flops(model, x)
    what, explain_c = explain_case(model, family, x)
    cases = {"forward": Case(model, x), "explain": explain_c}
    if families.get(family).attention:
        cases["attention_maps"] = Case(lambda x: attention.attention_maps(model, x), x)
    t = time_interleaved(cases, runs, warmup)
    batch_ms = time_forward(model, torch.randn(batch, 3, size, size), runs=max(2, runs // 5), warmup=1)
    images_per_s = batch / (float(np.median(batch_ms)) / 1e3)
    floor_ms = flops / floor * 1e3
    out = {"status": "ok", "path": str(ckpt.path), "params": num_params(model), "file_mb": ckpt.size_mb,
           "input_px": size, "gflops": flops / 1e9, "latency_ms": t["forward"], "floor_ms": floor_ms,
           "latency_over_floor": t["forward"]["p50"] / floor_ms, "batch_size": batch,
           "throughput_images_per_s": images_per_s, "batch_fraction_of_floor_rate": images_per_s * flops / floor,
           "explain": {"what": what, "latency_ms": t["explain"]}}
    if "attention_maps" in t:
        out["attention_maps_ms"] = t["attention_maps"]
        out["attention_over_forward"] = ratio(t["attention_maps"], t["forward"])
    return out
