"""Score every explanation method of every checkpoint by deletion / insertion (Petsiuk et al. 2018)
against random orders, and optionally run the model-randomisation sanity check (Adebayo et al. 2018) and
ROAD (Rong et al. 2022), a second metric that imputes removed pixels instead of blurring them.

    python -m vit.explain --data-dir ../shared/data/pizza_steak_sushi --limit 30
    python -m vit.explain --data-dir DIR --checkpoints checkpoints/effnet.safetensors --sanity --json
    python -m vit.explain --data-dir DIR --limit 15 --road --json   # + ROAD, its agreement per model
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from vit.data.preprocess import split_eval_transform
from vit.explain import compute, random_curves, score
from vit.explain import methods as registry
from vit.explain.road import road
from vit.models import families
from vit.models.checkpoint import Checkpoint
from vit.models.factory import load
from vit.runtime import choice

log = logging.getLogger(__name__)
BAR_DELETION, BAR_INSERTION = 0.85, 1.15  # map / random: deletion at most, insertion at least


def image_paths(data_dir: Path, split: str, limit: int | None) -> list[Path]:
    """Sorted images of each class, taken round-robin across the classes so a limit stays balanced."""
    per_class = [sorted(p for p in d.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
                 for d in sorted((data_dir / split).iterdir()) if d.is_dir()]
    mixed = [p for group in zip(*per_class) for p in group]
    mixed += [p for group in per_class for p in group[min(map(len, per_class)):]]
    return mixed[:limit] if limit else mixed


def inference(model: nn.Module):
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)
    return forward


def bootstrap_ci(values: list[float], n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), float(v.mean())
    means = v[np.random.default_rng(seed).integers(0, len(v), (n, len(v)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (nan if either map is constant)."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(v))
    ranks[np.argsort(v, kind="stable")] = np.arange(len(v))
    _, group = np.unique(v, return_inverse=True)  # equal values share the mean of their ranks
    return (np.bincount(group, weights=ranks) / np.bincount(group))[group]


def randomised(model: nn.Module, head_prefix: str, seed: int = 0) -> nn.Module:
    """A copy of `model` whose head and top half of blocks have random weights (Adebayo et al. 2018,
    cascading randomisation down to the middle); the original is left untouched. Each weight matrix or
    kernel is redrawn from a Gaussian of its own mean and std, so activations keep their scale (a default
    `reset_parameters` shrinks them layer by layer until a trained BatchNorm above zeroes them all);
    biases and normalisation layers stay as trained."""
    model = copy.deepcopy(model)
    blocks = list(model.blocks)
    modules = [m for b in blocks[len(blocks) // 2:] for m in b.modules()]
    modules += [m for name, m in model.named_modules() if name.startswith(head_prefix)]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters(recurse=False):
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) * p.std() + p.mean())
    return model.eval()


def evaluate_checkpoint(ckpt: Checkpoint, paths: list[Path], methods: list[str] | None, steps: int,
                        seeds: tuple[int, ...], sanity: bool, sanity_limit: int | None = None, *,
                        road_metric: bool = False) -> dict:
    """Per method: deletion / insertion AUCs, their random bars, (with `road_metric`) ROAD's MoRF / LeRF
    (vit.explain.road), and (with `sanity`) Spearman rho, on the first `sanity_limit` images (all if None).
    The perturbed copies run on the app's engine (ONNX Runtime when it is there: the same logits to ~1e-6,
    faster); maps and the randomised model on PyTorch."""
    family = families.get(ckpt.family)
    chosen = [m for m in registry.of(family) if methods is None or m in methods]
    model = ckpt.model.eval()
    view, to_tensor = split_eval_transform(ckpt.meta["preprocessing"])
    forward = choice.make_engine(ckpt).forward
    rand_model = randomised(model, family.head) if sanity else None
    rows = {m: {"deletion": [], "insertion": [], "random_deletion": [], "random_insertion": [], "rho": [],
                "road_morf": [], "road_lerf": []} for m in chosen}
    for n, path in enumerate(tqdm(paths, desc=family.title, unit="img")):
        x = to_tensor(view(Image.open(path).convert("RGB"))).unsqueeze(0)  # (1, 3, H, W)
        bars = {}
        for method in chosen:
            h = compute(model, x, method, forward_batch=forward)
            key = (h.heat.shape, h.target)
            if key not in bars:  # the random bar depends on the image, the grid and the class only
                bars[key] = random_curves(forward, x, h.heat.shape, h.target, steps=steps, seeds=seeds)
            f = score(forward, x, h.heat, h.target, steps=steps, random=bars[key])
            r = rows[method]
            r["deletion"].append(f.deletion_auc)
            r["insertion"].append(f.insertion_auc)
            r["random_deletion"].append(f.random_deletion_auc)
            r["random_insertion"].append(f.random_insertion_auc)
            if road_metric:
                q = road(forward, x, h.heat, h.target)
                r["road_morf"].append(q.morf)
                r["road_lerf"].append(q.lerf)
            if rand_model is not None and (sanity_limit is None or n < sanity_limit):
                hr = compute(rand_model, x, method, target=h.target, forward_batch=inference(rand_model))
                rho = spearman(h.heat, hr.heat)
                r["rho"].append(0.0 if np.isnan(rho) else rho)  # a constant map shares no ranking
    return {m: summarise(r) for m, r in rows.items()}


def summarise(r: dict) -> dict:
    out = {"images": len(r["deletion"])}
    for k in ("deletion", "insertion", "random_deletion", "random_insertion"):
        out[k] = float(np.mean(r[k]))
        out[k + "_ci"] = bootstrap_ci(r[k])
    out["deletion_ratio"] = out["deletion"] / out["random_deletion"]
    out["insertion_ratio"] = out["insertion"] / out["random_insertion"]
    out["meets_bar"] = out["deletion_ratio"] <= BAR_DELETION and out["insertion_ratio"] >= BAR_INSERTION
    if r["rho"]:
        out["spearman_randomised"] = float(np.mean(r["rho"]))
        out["sanity_images"] = len(r["rho"])
    if r.get("road_morf"):
        out["road_morf"], out["road_lerf"] = float(np.mean(r["road_morf"])), float(np.mean(r["road_lerf"]))
        out["road_combined"] = out["road_lerf"] - out["road_morf"]
    return out


def road_agreement(per_method: dict[str, dict]) -> float:
    """Spearman rho, over one model's methods, between ROAD (LeRF - MoRF) and the deletion / insertion
    figure the defaults are chosen by (insertion ratio - deletion ratio): 1 = the same ranking."""
    rows = [r for r in per_method.values() if "road_combined" in r]
    return spearman(np.array([r["road_combined"] for r in rows]),
                    np.array([r["insertion_ratio"] - r["deletion_ratio"] for r in rows]))


def time_methods(ckpt: Checkpoint, path: Path, methods: list[str] | None, steps: int, seeds: tuple[int, ...],
                 runs: int) -> dict[str, float]:
    """p50 seconds of one full explanation per method: the map, both curves and the random bar."""
    family = families.get(ckpt.family)
    model = ckpt.model.eval()
    view, to_tensor = split_eval_transform(ckpt.meta["preprocessing"])
    x = to_tensor(view(Image.open(path).convert("RGB"))).unsqueeze(0)
    forward, out = choice.make_engine(ckpt).forward, {}
    for method in (m for m in registry.of(family) if methods is None or m in methods):
        times = []
        for _ in range(runs + 1):  # the first run warms up
            start = time.perf_counter()
            h = compute(model, x, method, forward_batch=forward)
            score(forward, x, h.heat, h.target, steps=steps, seeds=seeds)
            times.append(time.perf_counter() - start)
        out[method] = statistics.median(times[1:])
        log.info("%s %s: p50 %.2f s", family.title, method, out[method])
    return out


def _ci(r: dict, k: str) -> str:
    lo, hi = r[k + "_ci"]
    return f"{r[k]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(results: dict[str, dict], timings: dict[str, dict] | None = None) -> str:
    head = ["model", "method", "n", "deletion AUC [95% CI] ↓", "random", "del/rand", "insertion AUC [95% CI] ↑",
            "random", "ins/rand", f"bar (≤{BAR_DELETION}, ≥{BAR_INSERTION})"]
    sanity = any("spearman_randomised" in r for per in results.values() for r in per.values())
    head += ["ρ vs randomised ↓"] if sanity else []
    roads = any("road_combined" in r for per in results.values() for r in per.values())
    head += ["ROAD MoRF ↓", "ROAD LeRF ↑"] if roads else []
    head += ["full explain p50 (s)"] if timings else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, per in results.items():
        for method, r in per.items():
            cells = [name, method, str(r["images"]), _ci(r, "deletion"), f"{r['random_deletion']:.3f}",
                     f"{r['deletion_ratio']:.2f}", _ci(r, "insertion"), f"{r['random_insertion']:.3f}",
                     f"{r['insertion_ratio']:.2f}", "yes" if r["meets_bar"] else "no"]
            cells += [f"{r.get('spearman_randomised', float('nan')):.2f}"] if sanity else []
            cells += [f"{r.get(k, float('nan')):.3f}" for k in ("road_morf", "road_lerf")] if roads else []
            cells += [f"{timings.get(name, {}).get(method, float('nan')):.2f}"] if timings else []
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checkpoint_paths(spec: list[str]) -> list[Path]:
    out = []
    for s in map(Path, spec):
        out += sorted(s.glob("*.safetensors")) if s.is_dir() else [s]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m vit.explain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="ImageFolder root with split folders")
    ap.add_argument("--split", default="test")
    ap.add_argument("--checkpoints", nargs="+", default=["checkpoints"], help="folders or .safetensors files")
    ap.add_argument("--methods", nargs="+", choices=registry.ids(), help="default: every method each family lists")
    ap.add_argument("--limit", type=int, help="first N images (balanced across classes)")
    ap.add_argument("--skip", type=int, default=0,
                    help="leave out the first N images (e.g. those a method was chosen on: a held-out check)")
    ap.add_argument("--steps", type=int, default=16, help="K deletion / insertion steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random orders for the bar")
    ap.add_argument("--sanity", action="store_true", help="Spearman rho of each map vs a randomised model's")
    ap.add_argument("--sanity-limit", type=int, help="the sanity check on the first N images only")
    ap.add_argument("--road", action="store_true", help="also ROAD (Rong et al. 2022): MoRF / LeRF, noisy linear "
                    "imputation instead of the blur; and its rank agreement with deletion / insertion per model")
    ap.add_argument("--time", type=int, default=0, metavar="RUNS", help="also time a full explain, p50 of RUNS")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    paths = image_paths(args.data_dir, args.split, args.limit)[args.skip:]
    results, timings = {}, {}
    for ckpt_path in checkpoint_paths(args.checkpoints):
        ckpt = load(ckpt_path)
        log.info("%s: %d images", ckpt_path, len(paths))
        results[ckpt_path.stem] = evaluate_checkpoint(ckpt, paths, args.methods, args.steps, tuple(args.seeds),
                                                      args.sanity, args.sanity_limit, road_metric=args.road)
        if args.time:
            timings[ckpt_path.stem] = time_methods(ckpt, paths[0], args.methods, args.steps, tuple(args.seeds),
                                                   args.time)
        stem_timings = {ckpt_path.stem: timings[ckpt_path.stem]} if ckpt_path.stem in timings else None
        log.info("%s\n%s", ckpt_path.stem, markdown({ckpt_path.stem: results[ckpt_path.stem]}, stem_timings))
    out = {"split": args.split, "skipped": args.skip, "images": len(paths), "steps": args.steps, "seeds": args.seeds,
           "results": results, "timings_s": timings}
    if args.road:
        out["road_agreement"] = {name: road_agreement(per) for name, per in results.items()}
        log.info("ROAD vs deletion / insertion, Spearman rho over methods: %s", out["road_agreement"])
    print(json.dumps(out, indent=2) if args.json else markdown(results, timings or None))
    return out

