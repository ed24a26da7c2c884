"""Benchmark the checkpoints on this CPU, next to the references that say whether a figure is good.

    python -m vit.bench [--json | --markdown] [--runs 30] [--threads N] [--checkpoints DIR] [--compile]

Per checkpoint: parameters, file MB, GFLOPs per image (FlopCounterMode: FLOPs = 2 x MACs), latency at batch
size 1 (p50/p95 of warm runs), images/s at batch size 32, the explanation's latency (ViTs: every layer's
attention map plus rollout; EfficientNet: Grad-CAM) and the peak RSS of a fresh process serving one image.
References from the same run: the floor (FLOPs at this CPU's best fp32 matmul rate); our ViT against timm's
on the same weights (bar: 1.05x); attention maps against the plain forward (bar: 1.5x); the hybrid ViT
against the EfficientNet-Lite0 it is built on; CPU speed-ups against the plain model, with the test
accuracy re-checked wherever they change the logits; each engine (PyTorch eager, our ONNX Runtime engine,
a bare ONNX Runtime session) at batch sizes 1 and 16 with its top-1 agreement with eager. Compared figures
are timed interleaved, so that background load lands on both sides alike. Timings are printed here, never
asserted in a test.

The modules, one concern each: machine (where, and the matmul floor), timing (interleaved cases),
flops, memory (serving RSS in a fresh process), models (one checkpoint's own figures), references,
optimisations (PyTorch speed-ups), engines (PyTorch vs ONNX Runtime), cli (`run`, `main`).
"""
from vit.bench.cli import Settings, main, run
from vit.bench.engines import bench_engines
from vit.bench.flops import count_flops
from vit.bench.machine import machine_info, matmul_flops_per_s
from vit.bench.memory import own_peak_rss_mb, probe_rss
from vit.bench.optimisations import ATOL
from vit.bench.references import timm_reference
from vit.bench.timing import Case, time_interleaved

__all__ = ["ATOL", "Case", "Settings", "bench_engines", "count_flops", "machine_info", "matmul_flops_per_s",
           "main", "own_peak_rss_mb", "probe_rss", "run", "time_interleaved", "timm_reference"]
