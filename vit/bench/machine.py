"""Where the figures were taken, and this CPU's matmul rate: the floor every latency is held against."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import timm
import torch

from vit.serve.predictor import time_forward


def machine_info() -> dict:
    """Where the figures were taken: CPU model, cores, torch threads and versions, background load."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "timm": timm.__version__, "onnxruntime": _onnxruntime_version(), "python": platform.python_version(),
            "load_avg_start": os.getloadavg()[0]}


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime  # lazy: optional: without onnxruntime the app serves on PyTorch
    except ImportError:
        return None
    return onnxruntime.__version__


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """This CPU's achieved fp32 FLOP/s on one large matmul (best of `repeats`): the floor's rate."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best_ms = min(time_forward(None, a, runs=repeats, warmup=1, fn=lambda a: torch.mm(a, b)))
    return 2 * n**3 / (best_ms / 1e3)
