"""Benchmark the checkpoints on this CPU, next to the references that say whether a figure is good.

    python -m vit.bench [--json | --markdown] [--runs 30] [--threads N] [--checkpoints DIR] [--compile]

Per checkpoint: parameters, file MB, GFLOPs per image (FlopCounterMode: FLOPs = 2 x MACs), latency at batch
size 1 (p50/p95 of warm runs), images/s at batch size 32, the explanation's latency (ViTs: every layer's
attention map plus rollout; EfficientNet: Grad-CAM) and the peak RSS of a fresh process serving one image.
References from the same run: the floor (FLOPs at this CPU's best fp32 matmul rate); our ViT against timm's
on the same weights (bar: 1.05x); attention maps against the plain forward (bar: 1.5x); the hybrid ViT
against the EfficientNet-Lite0 it is built on; CPU speed-ups against the plain model, with the test
accuracy re-checked wherever they change the logits. Compared figures are timed interleaved, so that
background load lands on both sides alike. Timings are printed here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import timm
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from vit import explain, report
from vit.checkpoint import Checkpoint, CheckpointError, load, num_params
from vit.data import ImageDataset, eval_transform, list_images
from vit.evaluate import run_eval
from vit.predict import Predictor, optimise, time_forward
from vit.ui import FAMILY_TITLES, checkpoint_paths
from vit.zoo import HYBRID, LITE0, build

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEST_DIR = ROOT.parent / "shared" / "data" / "pizza_steak_sushi" / "test"
BATCH = 32  # default batch size of the throughput figure
BLOCK = 5  # calls of one case per turn when cases are timed interleaved
ATOL = 1e-4  # logits this close to the plain model's count as the same numerics
TIMM_BAR, ATTENTION_BAR = 1.05, 1.5
CONCURRENT = 2  # requests the app computes at once (its queue's default_concurrency_limit)


# ---------------------------------------------------------------- the machine and the floor

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
            "timm": timm.__version__, "python": platform.python_version(), "load_avg_start": os.getloadavg()[0]}


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """This CPU's achieved fp32 FLOP/s on one large matmul (best of `repeats`): the floor's rate."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best_ms = min(time_forward(None, a, runs=repeats, warmup=1, fn=lambda a: torch.mm(a, b)))
    return 2 * n**3 / (best_ms / 1e3)


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


# ---------------------------------------------------------------- FLOPs

def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """The CPU fused-attention kernel, which FlopCounterMode has no formula for: Q K^T and A V."""
    b, h, n, d = q_shape
    m, dv = k_shape[-2], v_shape[-1]
    return 2 * b * h * n * m * d + 2 * b * h * n * m * dv


SDPA_CPU = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 x multiply-accumulates) of `model(x)`: matmuls, convolutions and attention."""
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as counter:
        model(x)
    return counter.get_total_flops()


# ---------------------------------------------------------------- timing

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


# ---------------------------------------------------------------- one checkpoint

def input_px(ckpt: Checkpoint) -> int:
    return ckpt.meta["preprocessing"]["input_size"][-1]


def explain_case(model: nn.Module, family: str, x: torch.Tensor) -> tuple[str, Case]:
    """The app's explanation path for one image, as one timed case."""
    if family == "effnet":  # forward + backward: autograd must be on
        return "Grad-CAM", Case(lambda x: explain.grad_cam(model, x), x, nullcontext)

    def maps_and_rollout(x: torch.Tensor) -> torch.Tensor:
        _, maps = explain.attention_maps(model, x)
        return explain.rollout([m[0] for m in maps])  # (N, N)
    return "attention maps + rollout", Case(maps_and_rollout, x)


def bench_model(ckpt: Checkpoint, runs: int, warmup: int, floor: float, batch: int = BATCH) -> dict:
    """Size, FLOPs, bs=1 latency, throughput at batch size `batch`, the explanation's latency."""
    model, family, size = ckpt.model, ckpt.family, input_px(ckpt)
    x = torch.randn(1, 3, size, size)
    flops = count_flops(model, x)
    what, explain_c = explain_case(model, family, x)
    cases = {"forward": Case(model, x), "explain": explain_c}
    if family != "effnet":
        cases["attention_maps"] = Case(lambda x: explain.attention_maps(model, x), x)
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


def probe_rss(path: Path, threads: int) -> dict:
    """Peak RSS (MB) of a fresh process that loads `path` and classifies and explains one image,
    and of the same process before loading (Python, torch, timm and this package alone)."""
    cmd = [sys.executable, "-m", "vit.bench", "--rss-probe", str(path), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_probe(path: str) -> dict:
    before = own_peak_rss_mb()
    predictor = Predictor.from_checkpoint(path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    predictor.classify(image)
    predictor.explain(image)
    return {"import_mb": before, "serve_mb": own_peak_rss_mb()}


# ---------------------------------------------------------------- references

def timm_reference(model: nn.Module) -> nn.Module:
    """timm's VisionTransformer (VisionTransformerDistilled for a DeiT config) with our model's config
    and weights: our parameter names are timm's, so the state dict loads strictly."""
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    c = model.cfg
    cls = VisionTransformerDistilled if c.distilled else TimmViT
    ref = cls(img_size=c.image_size, patch_size=c.patch_size, in_chans=c.in_chans, num_classes=c.num_classes,
              embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
              qkv_bias=c.qkv_bias, pos_drop_rate=c.dropout, proj_drop_rate=c.dropout,
              attn_drop_rate=c.attn_dropout, drop_path_rate=c.drop_path)
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref.eval()


def scratch_vs_timm(ckpt: Checkpoint, runs: int, warmup: int) -> dict:
    """(a) Our fast path against timm's on the same weights: do the logits match, and at what cost?"""
    model, size = ckpt.model, input_px(ckpt)
    ref = timm_reference(model)
    x = torch.randn(4, 3, size, size)
    with torch.inference_mode():
        ours, theirs = model(x), ref(x)
    t = time_interleaved({"ours": Case(model, x[:1]), "timm": Case(ref, x[:1])}, runs, warmup)
    r = ratio(t["ours"], t["timm"])
    return {"timm_class": f"{type(ref).__module__}.{type(ref).__name__}",
            "logits_allclose": bool(torch.allclose(ours, theirs, atol=1e-5)),
            "max_abs_diff": float((ours - theirs).abs().max()), "ours_ms": t["ours"], "timm_ms": t["timm"],
            "ratio": r, "bar": TIMM_BAR, "within_bar": r["p50"] <= TIMM_BAR}


def hybrid_vs_lite0(ckpt: Checkpoint, runs: int, warmup: int) -> dict:
    """(c) The hybrid ViT against the plain 3-class EfficientNet-Lite0 it borrows its stem from,
    at the hybrid's input size; the stem alone shows what the transformer adds."""
    model, size = ckpt.model, input_px(ckpt)
    if ckpt.meta["arch"].get("model_name") != HYBRID:
        return {"skipped": f"timm_vit is {ckpt.meta['arch'].get('model_name')}, not the hybrid {HYBRID}"}
    lite0 = build("effnet", {"model_name": LITE0}, num_classes=len(ckpt.class_names)).model.eval()
    stem = model.patch_embed.backbone
    x = torch.randn(1, 3, size, size)
    t = time_interleaved({"hybrid": Case(model, x), "lite0": Case(lite0, x), "stem": Case(stem, x)}, runs, warmup)
    return {"reference": f"timm {LITE0}, {len(ckpt.class_names)} classes", "input_px": size,
            "hybrid_ms": t["hybrid"], "lite0_ms": t["lite0"], "stem_ms": t["stem"],
            "hybrid_gflops": count_flops(model, x) / 1e9, "lite0_gflops": count_flops(lite0, x) / 1e9,
            "hybrid_params": num_params(model), "lite0_params": num_params(lite0),
            "ratio": ratio(t["hybrid"], t["lite0"]), "stem_share": ratio(t["stem"], t["hybrid"])}


# ---------------------------------------------------------------- optimisations

def split_accuracy(models: dict[str, nn.Module], ckpt: Checkpoint, test_dir: Path) -> dict[str, dict]:
    """Accuracy and loss of each model on the test split (from the same decoded images), and the share
    of images on which it predicts what the first model does."""
    samples, classes = list_images(test_dir)
    if classes != ckpt.class_names:
        raise ValueError(f"{test_dir} has classes {classes}, the checkpoint {ckpt.class_names}")
    batches = list(DataLoader(ImageDataset(samples, eval_transform(ckpt.meta["preprocessing"])), batch_size=BATCH))
    with torch.inference_mode():
        preds = {name: torch.cat([m(x).argmax(1) for x, _ in batches]) for name, m in models.items()}
    first = next(iter(preds.values()))
    keep = ("accuracy", "loss", "n_images")
    return {name: {**{k: run_eval(m, batches, classes)[k] for k in keep},
                   "agreement": (preds[name] == first).float().mean().item()} for name, m in models.items()}


def concurrently(model: nn.Module, pool: ThreadPoolExecutor, threads: int) -> Callable[[torch.Tensor], list]:
    """CONCURRENT requests for `model(x)` at once, each from its own Python thread as the app's queue
    serves them, each with `threads` intra-op threads (inference_mode and OpenMP settings are per thread)."""
    def one(x: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(x)
    return lambda x: list(pool.map(one, [x] * CONCURRENT))


def bench_optimisations(ckpt: Checkpoint, runs: int, warmup: int, test_dir: Path | None,
                        compile_model: bool = False) -> list[dict]:
    """Each CPU speed-up against the plain model (inference_mode, threads as set), timed interleaved;
    the logits compared, and the test accuracy re-checked for any that change them. The thread
    settings are also timed with CONCURRENT requests at once, against serving them one by one: each on
    its own, after the rest (interleaved, the pool's threads slowed the plain model's next runs ~1.5x)."""
    model, family = ckpt.model, ckpt.family
    x = torch.randn(1, 3, input_px(ckpt), input_px(ckpt))
    modes = (["channels_last"] if family != "scratch_vit" else []) + (["int8"] if family != "effnet" else []) \
        + (["compile"] if compile_model else [])
    variants = {"baseline": model, **{mode: optimise(model, family, mode) for mode in modes}}
    cases = {name: Case(m, x) for name, m in variants.items()}
    cases["no_grad"] = Case(model, x, torch.no_grad)
    now, cores = torch.get_num_threads(), os.cpu_count() or 1
    for n in sorted({1, cores} - {now}):
        cases[f"threads={n}"] = Case(model, x, threads=n)
    t = time_interleaved(cases, runs, warmup)
    with ThreadPoolExecutor(CONCURRENT) as pool:
        for n in sorted({1, now, cores}):
            name = f"{CONCURRENT} at once, threads={n}"
            t |= time_interleaved({name: Case(concurrently(model, pool, n), x, threads=n)}, runs, warmup)
    with torch.inference_mode():
        reference = model(x)
        logits = {name: m(x) for name, m in variants.items()}
    rows = []
    for name, timing in t.items():
        diff = float((logits[name] - reference).abs().max()) if name in logits else 0.0
        one_by_one = CONCURRENT if "at once" in name else 1  # against the baseline serving them in turn
        rows.append({"variant": name, "latency_ms": timing,
                     "speedup": one_by_one * t["baseline"]["p50"] / timing["p50"],
                     "speedup_best": one_by_one * t["baseline"]["min"] / timing["min"], "max_abs_diff": diff,
                     "bit_exact": diff == 0.0, "allclose": diff <= ATOL})
    changed = {r["variant"]: variants[r["variant"]] for r in rows if not r["allclose"]}
    if changed and test_dir is not None:
        try:
            accuracy = split_accuracy({"baseline": model, **changed}, ckpt, test_dir)
        except (FileNotFoundError, ValueError) as e:
            log.warning("test accuracy not re-checked: %s", e)
            accuracy = {}
        for r in rows:
            if r["variant"] in accuracy:
                r["test"], r["baseline_test"] = accuracy[r["variant"]], accuracy["baseline"]
    return rows


# ---------------------------------------------------------------- the whole run

@dataclass
class Settings:
    runs: int = 30  # timed warm runs per figure
    warmup: int = 5  # untimed runs first
    batch_size: int = BATCH  # of the throughput figure
    test_dir: str | None = str(DEFAULT_TEST_DIR)  # re-check accuracy here when a speed-up changes the logits
    compile: bool = False  # also try torch.compile
    rss: bool = True  # probe each checkpoint's serving memory in a fresh process
    matmul_size: int = 2048  # side of the square matmul that sets the floor
    block: int = BLOCK


def run(paths: dict[str, Path], settings: Settings | None = None) -> dict:
    """Benchmark every checkpoint in `paths` (family -> file); a missing one is reported, not fatal."""
    s = settings or Settings()
    runs, warmup, n = s.runs, s.warmup, s.matmul_size
    test_dir = Path(s.test_dir) if s.test_dir else None
    result = {"machine": machine_info(), "settings": asdict(s)}
    floor = matmul_flops_per_s(n)
    result["floor"] = {"matmul_gflops_per_s": floor / 1e9, "how": f"{n}x{n} fp32 torch.mm, best of 5"}
    models, refs, opts = {}, {}, {}
    for family, path in paths.items():
        title = FAMILY_TITLES.get(family, family)
        try:
            ckpt = load(path, expect_family=family)
        except CheckpointError as e:
            log.warning("%s skipped: %s", family, e)
            models[family] = {"status": "missing", "title": title, "path": str(path), "error": str(e)}
            continue
        log.info("%s: size, FLOPs, latency, throughput, explanation (%s)", family, path)
        models[family] = {"title": title, **bench_model(ckpt, runs, warmup, floor, s.batch_size)}
        if s.rss:
            models[family]["rss_mb"] = probe_rss(path, torch.get_num_threads())
        if family == "scratch_vit":
            log.info("%s: against timm on the same weights", family)
            refs["scratch_vs_timm"] = scratch_vs_timm(ckpt, runs, warmup)
        if family == "timm_vit":
            log.info("%s: against the plain EfficientNet-Lite0", family)
            refs["hybrid_vs_lite0"] = hybrid_vs_lite0(ckpt, runs, warmup)
        log.info("%s: optimisations", family)
        opts[family] = bench_optimisations(ckpt, runs, warmup, test_dir, s.compile)
    refs["attention_over_forward"] = {f: {**m["attention_over_forward"], "bar": ATTENTION_BAR,
                                          "within_bar": m["attention_over_forward"]["p50"] <= ATTENTION_BAR}
                                      for f, m in models.items() if "attention_over_forward" in m}
    result.update(models=models, references=refs, optimisations=opts, bench_peak_rss_mb=max_rss_mb())
    result["machine"]["load_avg_end"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--models", default="scratch_vit,timm_vit,effnet", help="comma-separated families")
    p.add_argument("--test-dir", default=str(DEFAULT_TEST_DIR),
                   help="ImageFolder split for re-checking accuracy where an optimisation changes the logits; "
                        "'none' to skip")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul that sets the floor")
    p.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile)")
    p.add_argument("--no-rss", action="store_true", help="skip the memory probe (one subprocess per checkpoint)")
    p.add_argument("--rss-probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_probe:
        print(json.dumps(_rss_probe(args.rss_probe)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    paths = checkpoint_paths(args.checkpoints)
    families = [f.strip() for f in args.models.split(",") if f.strip()]
    unknown = set(families) - set(paths)
    if unknown:
        p.error(f"unknown model families {sorted(unknown)}; choose from {list(paths)}")
    settings = Settings(runs=args.runs, warmup=args.warmup, batch_size=args.batch_size, compile=args.compile,
                        test_dir=None if args.test_dir.lower() == "none" else args.test_dir,
                        rss=not args.no_rss, matmul_size=args.matmul_size)
    result = run({f: paths[f] for f in families}, settings)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(report.performance_markdown(result) if args.markdown else report.performance_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
