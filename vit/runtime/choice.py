"""Which engine serves a checkpoint, exporting it first when that is what it takes.

    engine = make_engine(ckpt)              # ONNX Runtime when it can, else PyTorch (one log line why)
    logits = engine.forward(x)              # (B, 3, H, W) -> (B, classes), any B

The engines (vit.runtime.engines) only read exports; the exporter (vit.runtime.export) writes and checks them; this
module, above both, decides when a missing or stale export is written. The app's models get their
engine here through `vit.serve.predictor.Predictor`, which writes the export in a background thread while
PyTorch answers the first requests.
"""
from __future__ import annotations

import logging

from vit.models import families
from vit.models.checkpoint import Checkpoint
from vit.runtime import export
from vit.runtime.engines import (
    EXPORT_LOCK,
    THREADS,
    Engine,
    EngineError,
    OrtEngine,
    TorchEngine,
    cache_path,
    current_ort_engine,
    onnxruntime_available,
    resolve_kind,
)

log = logging.getLogger(__name__)


def ort_engine(ckpt: Checkpoint, *, int8: bool = False, threads: int = THREADS) -> OrtEngine:
    """An OrtEngine for `ckpt`: its export beside it (or in the cache) when that is current, else a
    fresh export, checked on random input against PyTorch before it is used."""
    with EXPORT_LOCK:  # torch.onnx.export is process-global: one export at a time
        engine = current_ort_engine(ckpt, int8=int8, threads=threads)
        if engine is not None:
            return engine
        path = cache_path(ckpt, int8=int8)
        log.info("%s: %s ONNX export at %s", ckpt.path.name,
                 "re-exporting a stale" if path.is_file() else "writing an", path)
        export.export(ckpt, path, int8=int8)
    engine = OrtEngine(path, threads=threads)
    if not int8:
        result = export.check(ckpt, path, engine=engine)  # random input: a quick guard, not the test split
        if not result["ok"]:
            raise export.ExportCheckError(f"{path}: ONNX logits differ from PyTorch's by "
                                          f"{result['max_abs_logit_diff']:.2e}")
    return engine


def make_engine(ckpt: Checkpoint, kind: str | None = None, *, int8: bool = False,
                threads: int = THREADS) -> Engine:
    """The engine for `ckpt`. `kind` (default: $FOODVISION_ENGINE, else "auto"):

    - "auto": ONNX Runtime when it imports and a current export exists or can be written, else
      PyTorch, with one log line saying why;
    - "onnxruntime": ONNX Runtime or EngineError;
    - "torch": the eager model.
    `int8`: the quantised export (vit.runtime.export --int8) on ONNX Runtime; ignored by PyTorch."""
    kind = resolve_kind(kind)
    attention = families.get(ckpt.family).attention
    if kind == "torch":
        return TorchEngine(ckpt.model, attention=attention)
    why = onnxruntime_available()
    if why is None:
        try:
            return ort_engine(ckpt, int8=int8, threads=threads)
        except Exception as e:  # noqa: BLE001 - any failure to export or load falls back (auto) or is raised
            why = f"ONNX export or session failed: {type(e).__name__}: {e}"
    if kind == "onnxruntime":
        raise EngineError(f"{ckpt.path.name}: ONNX Runtime engine unavailable: {why}")
    log.info("%s: serving with PyTorch eager: %s", ckpt.path.name, why)
    return TorchEngine(ckpt.model, attention=attention)
