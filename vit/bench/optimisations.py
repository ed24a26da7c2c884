"""CPU speed-ups of the PyTorch model against the plain one, with the test accuracy re-checked
wherever they change the logits."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from vit.bench.figures import BATCH, input_px
from vit.bench.timing import Case, time_interleaved
from vit.data.datasets import ImageDataset, eval_transform, list_images
from vit.models import families
from vit.models.checkpoint import Checkpoint
from vit.serve.predictor import optimise
from vit.train.evaluate import run_eval

log = logging.getLogger(__name__)

ATOL = 1e-4  # logits this close to the plain model's count as the same numerics
CONCURRENT = 2  # requests the app computes at once (its queue's default_concurrency_limit)


def split_batches(ckpt: Checkpoint, test_dir: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test split, decoded once, as the model's input batches with their labels."""
    samples, classes = list_images(test_dir)
    if classes != ckpt.class_names:
        raise ValueError(f"{test_dir} has classes {classes}, the checkpoint {ckpt.class_names}")
    return list(DataLoader(ImageDataset(samples, eval_transform(ckpt.meta["preprocessing"])), batch_size=BATCH))


def split_accuracy(models: dict[str, nn.Module], ckpt: Checkpoint, test_dir: Path) -> dict[str, dict]:
    """Accuracy and loss of each model on the test split (from the same decoded images), and the share
    of images on which it predicts what the first model does."""
    batches = split_batches(ckpt, test_dir)
    with torch.inference_mode():
        preds = {name: torch.cat([m(x).argmax(1) for x, _ in batches]) for name, m in models.items()}
    first = next(iter(preds.values()))
    keep = ("accuracy", "loss", "n_images")
    return {name: {**{k: run_eval(m, batches, ckpt.class_names)[k] for k in keep},
                   "agreement": (preds[name] == first).float().mean().item()} for name, m in models.items()}


def concurrently(model: nn.Module, pool: ThreadPoolExecutor, threads: int) -> Callable[[torch.Tensor], list]:
    """CONCURRENT requests for `model(x)` at once, each from its own Python thread as the app's queue
    serves them, each with `threads` intra-op threads (inference_mode and OpenMP settings are per thread)."""
    def one(x: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(x)
    return lambda x: list(pool.map(one, [x] * CONCURRENT))


def modes(ckpt: Checkpoint, compile_model: bool = False) -> list[str]:
    """The speed-ups that apply to this checkpoint's family (vit.models.families says which pay on CPU)."""
    spec = families.get(ckpt.family)
    return (["channels_last"] if spec.channels_last else []) + (["int8"] if spec.int8 else []) \
        + (["compile"] if compile_model else [])


def bench_optimisations(ckpt: Checkpoint, runs: int, warmup: int, test_dir: Path | None,
                        compile_model: bool = False) -> list[dict]:
    """Each CPU speed-up against the plain model (inference_mode, threads as set), timed interleaved;
    the logits compared, and the test accuracy re-checked for any that change them. The thread
    settings are also timed with CONCURRENT requests at once, against serving them one by one: each on
    its own, after the rest (interleaved, the pool's threads slowed the plain model's next runs ~1.5x)."""
    model = ckpt.model
    x = torch.randn(1, 3, input_px(ckpt), input_px(ckpt))
    variants = {"baseline": model, **{mode: optimise(model, ckpt.family, mode) for mode in modes(ckpt, compile_model)}}
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
