"""Benchmark the checkpoints on this CPU: `python -m vit.bench --help`; what is measured, and
how, is the docstring of vit/bench/cli.py (the command's help)."""
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
