"""Forward passes per engine (vit.runtime.engines) at batch sizes 1 and 16: PyTorch eager, our ONNX Runtime
engine (and its int8 export where the family's int8 pays), and a bare `onnxruntime.InferenceSession`
with default options on a plain `torch.onnx.export` of the same model: the bar our engine is held to."""
from __future__ import annotations

import logging
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch

from vit.bench.figures import input_px
from vit.bench.flops import count_flops
from vit.bench.optimisations import split_batches
from vit.bench.timing import Case, time_interleaved
from vit.models import families
from vit.models.checkpoint import Checkpoint
from vit.runtime import choice, engines, export

log = logging.getLogger(__name__)

BATCHES = (1, 16)
BARE_BAR = 1.1  # our ONNX Runtime engine against the bare session: p50 at most this ratio


class BareSession(engines.Engine):
    """`onnxruntime.InferenceSession(path)` with default options: no tuning of ours."""

    name = "bare onnxruntime"
    attention = False

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort  # lazy: optional: without onnxruntime the app serves on PyTorch

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {export.INPUT: x.numpy()})[0])


def candidates(ckpt: Checkpoint, tmp: Path) -> dict[str, engines.Engine]:
    """torch, ours, ours int8 (where the family's int8 pays), the bare session; missing
    onnxruntime leaves torch alone."""
    out: dict[str, engines.Engine] = {"torch": choice.make_engine(ckpt, "torch")}
    if engines.onnxruntime_available() is not None:
        log.warning("engine rows: onnxruntime is not installed; torch only")
        return out
    out["onnxruntime"] = choice.make_engine(ckpt, "onnxruntime")
    if families.get(ckpt.family).int8:
        out["onnxruntime int8"] = choice.make_engine(ckpt, "onnxruntime", int8=True)
    plain = tmp / "bare.onnx"
    export._torch_export(ckpt.model, torch.randn(2, 3, input_px(ckpt), input_px(ckpt)), plain, [export.LOGITS])
    out["bare onnxruntime"] = BareSession(plain)
    return out


def agreement(engine_set: dict[str, engines.Engine], ckpt: Checkpoint, test_dir: Path) -> dict[str, float]:
    """Share of the test split's photos on which each engine's top-1 equals eager PyTorch's."""
    batches = [x for x, _ in split_batches(ckpt, test_dir)]
    preds = {name: torch.cat([e.forward(x).argmax(1) for x in batches]) for name, e in engine_set.items()}
    return {name: (p == preds["torch"]).float().mean().item() for name, p in preds.items()}


def bench_engines(ckpt: Checkpoint, runs: int, warmup: int, floor: float, test_dir: Path | None,
                  batches: tuple[int, ...] = BATCHES) -> list[dict]:
    """One row per engine and batch size: p50/p95 ms, x the matmul floor, ratio to eager and to the
    bare session, top-1 agreement with eager on the test split."""
    size = input_px(ckpt)
    flops = count_flops(ckpt.model, torch.randn(1, 3, size, size))
    with tempfile.TemporaryDirectory() as tmp:
        engine_set = candidates(ckpt, Path(tmp))
        agree = {}
        if test_dir is not None:
            try:
                agree = agreement(engine_set, ckpt, test_dir)
            except (FileNotFoundError, ValueError) as e:
                log.warning("engine agreement not checked: %s", e)
        rows = []
        for b in batches:
            x = torch.randn(b, 3, size, size)
            t = time_interleaved({name: Case(e.forward, x, nullcontext) for name, e in engine_set.items()},
                                 runs, warmup)
            floor_ms = b * flops / floor * 1e3
            for name, timing in t.items():
                row = {"engine": name, "batch_size": b, "latency_ms": timing, "floor_ms": floor_ms,
                       "over_floor": timing["p50"] / floor_ms, "over_torch": timing["p50"] / t["torch"]["p50"]}
                if "bare onnxruntime" in t:
                    row["over_bare"] = timing["p50"] / t["bare onnxruntime"]["p50"]
                if name in agree:
                    row["top1_agreement"] = agree[name]
                rows.append(row)
    return rows
