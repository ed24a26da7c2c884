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
optimisations (PyTorch speed-ups), engines (PyTorch vs ONNX Runtime), cli (this module: the whole
run `run` and its command line `main`), gate (the out-of-distribution gate's added time per /predict).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vit.bench import report
from vit.bench.engine_speed import BATCHES, bench_engines
from vit.bench.explanations import RUNS as EXPLAIN_RUNS
from vit.bench.explanations import bench_explanations
from vit.bench.figures import BATCH, bench_model
from vit.bench.gate_cost import bench_gate
from vit.bench.machine import machine_info, matmul_flops_per_s
from vit.bench.memory import max_rss_mb, probe_rss, rss_probe
from vit.bench.optimisations import bench_optimisations
from vit.bench.references import ATTENTION_BAR, has_timm_twin, hybrid_vs_lite0, is_hybrid, scratch_vs_timm
from vit.bench.timing import BLOCK
from vit.models import families as registry
from vit.models.checkpoint import CheckpointError
from vit.models.factory import load
from vit.serve.model_set import checkpoint_paths

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEST_DIR = ROOT.parent / "shared" / "data" / "pizza_steak_sushi" / "test"


@dataclass
class Settings:
    runs: int = 30  # timed warm runs per figure
    warmup: int = 5  # untimed runs first
    batch_size: int = BATCH  # of the throughput figure
    test_dir: str | None = str(DEFAULT_TEST_DIR)  # re-check accuracy here when a speed-up changes the logits
    compile: bool = False  # also try torch.compile
    rss: bool = True  # probe each checkpoint's serving memory in a fresh process
    matmul_size: int = 2048  # side of the square matmul that sets the floor
    engine_batches: tuple[int, ...] = BATCHES  # batch sizes of the per-engine rows; () skips them
    explain_runs: int = EXPLAIN_RUNS  # timed full explanations (map + faithfulness) per method; 0 skips them


def run(paths: dict[str, Path], settings: Settings | None = None) -> dict:
    """Benchmark every checkpoint in `paths` (model id -> file); a missing one is reported, not fatal."""
    s = settings or Settings()
    runs, warmup, n = s.runs, s.warmup, s.matmul_size
    test_dir = Path(s.test_dir) if s.test_dir else None
    result = {"machine": machine_info(), "settings": asdict(s), "block": BLOCK}
    floor = matmul_flops_per_s(n)
    result["floor"] = {"matmul_gflops_per_s": floor / 1e9, "how": f"{n}x{n} fp32 torch.mm, best of 5"}
    models, refs, opts, engine_rows, explain_rows, gates = {}, {}, {}, {}, {}, {}
    for family, path in paths.items():
        try:
            ckpt = load(path)
        except CheckpointError as e:
            log.warning("%s skipped: %s", family, e)
            models[family] = {"status": "missing", "title": family, "path": str(path), "error": str(e)}
            continue
        title = registry.get(ckpt.family).title
        log.info("%s: size, FLOPs, latency, throughput, explanation (%s)", family, path)
        models[family] = {"title": title, **bench_model(ckpt, runs, warmup, floor, s.batch_size)}
        if s.rss:
            models[family]["rss_mb"] = probe_rss(path, torch.get_num_threads())
        if has_timm_twin(ckpt):
            log.info("%s: against timm on the same weights", family)
            refs["scratch_vs_timm"] = {"model": family, **scratch_vs_timm(ckpt, runs, warmup)}
        if is_hybrid(ckpt):
            log.info("%s: against the plain EfficientNet-Lite0", family)
            refs["hybrid_vs_lite0"] = {"model": family, **hybrid_vs_lite0(ckpt, runs, warmup)}
        log.info("%s: optimisations", family)
        opts[family] = bench_optimisations(ckpt, runs, warmup, test_dir, s.compile)
        if s.engine_batches:
            log.info("%s: engines", family)
            engine_rows[family] = bench_engines(ckpt, runs, warmup, floor, test_dir, s.engine_batches)
        log.info("%s: the out-of-distribution gate's cost per request", family)
        gates[family] = bench_gate(path, runs, warmup)
        if s.explain_runs:
            log.info("%s: full explanations", family)
            explain_rows[family] = bench_explanations(path, s.explain_runs)
    refs["attention_over_forward"] = {f: {**m["attention_over_forward"], "bar": ATTENTION_BAR,
                                          "within_bar": m["attention_over_forward"]["p50"] <= ATTENTION_BAR}
                                      for f, m in models.items() if "attention_over_forward" in m}
    result.update(models=models, references=refs, optimisations=opts, engines=engine_rows, explanations=explain_rows,
                  gate=gates, bench_peak_rss_mb=max_rss_mb())
    result["machine"]["load_avg_end"] = os.getloadavg()[0]
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--markdown", action="store_true", help="print the README's Performance section")
    p.add_argument("--runs", type=int, default=30, help="timed warm runs per figure (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before timing (default 5)")
    p.add_argument("--batch-size", type=int, default=BATCH, help=f"of the throughput figure (default {BATCH})")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--checkpoints", help="folder of <family>.safetensors (default: $FOODVISION_CHECKPOINTS "
                                         "or ./checkpoints)")
    p.add_argument("--models", default=",".join(registry.names()), help="comma-separated model ids (checkpoint file stems)")
    p.add_argument("--test-dir", default=str(DEFAULT_TEST_DIR),
                   help="ImageFolder split for re-checking accuracy where an optimisation changes the logits; "
                        "'none' to skip")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul that sets the floor")
    p.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile)")
    p.add_argument("--no-rss", action="store_true", help="skip the memory probe (one subprocess per checkpoint)")
    p.add_argument("--engine-batches", default=",".join(map(str, BATCHES)),
                   help="batch sizes of the per-engine rows, comma-separated; 'none' to skip them")
    p.add_argument("--explain-runs", type=int, default=EXPLAIN_RUNS,
                   help=f"timed full explanations (map + faithfulness score) per method (default {EXPLAIN_RUNS}; 0 skips)")
    p.add_argument("--rss-probe", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    paths = checkpoint_paths(args.checkpoints)
    families = [f.strip() for f in args.models.split(",") if f.strip()]
    unknown = set(families) - set(paths)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; choose from {list(paths)}")
    engine_batches = () if args.engine_batches.lower() == "none" else \
        tuple(int(b) for b in args.engine_batches.split(",") if b.strip())
    settings = Settings(runs=args.runs, warmup=args.warmup, batch_size=args.batch_size, compile=args.compile,
                        test_dir=None if args.test_dir.lower() == "none" else args.test_dir,
                        rss=not args.no_rss, matmul_size=args.matmul_size, engine_batches=engine_batches,
                        explain_runs=args.explain_runs)
    result = run({f: paths[f] for f in families}, settings)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(report.performance_markdown(result) if args.markdown else report.performance_text(result))
    return 0
