"""Where forward passes run: PyTorch eager or ONNX Runtime, behind one small interface.

    engine = make_engine(ckpt)              # ONNX Runtime when it can, else PyTorch (one log line why)
    logits = engine.forward(x)              # x: (B, 3, H, W) -> (B, classes), any B
    logits, maps = engine.forward_attention(x)  # ViTs: maps is one (B, heads, N, N) tensor per layer

`FOODVISION_ENGINE=torch|onnxruntime|auto` chooses when the caller does not. onnxruntime is imported
only inside this module's functions, so the app starts without it. An engine holds no per-call
state: its sessions are created once and `InferenceSession.run` is thread-safe, so concurrent
requests share one engine.

Gradients (Grad-CAM, gradient-weighted relevance) are not an engine's business: they need the
PyTorch model, which the checkpoint keeps.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vit import families
from vit.checkpoint import Checkpoint

log = logging.getLogger(__name__)
_EXPORT_LOCK = threading.Lock()

KINDS = ("auto", "onnxruntime", "torch")
ENV = "FOODVISION_ENGINE"
CONCURRENT = 2  # requests the app computes at once (its queue's default_concurrency_limit)
# ORT intra-op threads per session. On the 2-core host, with spinning off, 2 beat 1 both for one request
# alone and for CONCURRENT at once (p50, all three checkpoints); ORT_PARALLEL was ~2x slower.
THREADS = 2


class EngineError(RuntimeError):
    """An engine that was asked for by name and cannot be had."""


class Engine(ABC):
    name: str  # "onnxruntime" or "torch"
    attention: bool  # forward_attention is available (a ViT)

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 -> (B, classes) logits, any batch size B."""

    def forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, H, W) -> logits and one (B, heads, N, N) attention map per layer (ViTs only)."""
        raise TypeError(f"{self.name} engine: this model has no attention maps (not a ViT)")

    def forward_batches(self, x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """`forward` over a large stack (occlusion's masked copies) in chunks of `batch_size`."""
        return torch.cat([self.forward(chunk) for chunk in x.split(batch_size)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class TorchEngine(Engine):
    """The eager PyTorch model under inference_mode."""

    name = "torch"

    def __init__(self, model: nn.Module, *, attention: bool | None = None) -> None:
        self.model = model.eval()
        self.attention = hasattr(model, "blocks") if attention is None else attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)

    def forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.attention:
            return super().forward_attention(x)
        from vit.explain import attention_maps

        with torch.inference_mode():
            return attention_maps(self.model, x)


def session_options(threads: int = THREADS):
    """One session's options, tuned for the app: CONCURRENT requests on a small CPU. Sequential
    execution with `threads` intra-op threads per run and no spinning (a spinning pool burns the
    core that the other request, or another process, needs); all graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only
    return so


class OrtEngine(Engine):
    """An exported model (vit.export) on ONNX Runtime's CPU provider; for a ViT, the attention
    graph beside it serves `forward_attention` (its session opens on first use)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, threads: int = THREADS) -> None:
        import onnxruntime as ort

        from vit.export import attention_path

        self.path, self.threads = Path(path), threads
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = json.loads(props["foodvision"]) if "foodvision" in props else {}
        self.source_sha256 = props.get("source_sha256")
        self.int8 = props.get("int8") == "1"
        family = self.meta.get("family")
        self.attention = family in families.names() and families.get(family).attention \
            and attention_path(self.path).is_file()
        self._attn_session = None
        self._lock = threading.Lock()

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"image": _numpy(x)})
        return torch.from_numpy(logits)

    def forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.attention:
            return super().forward_attention(x)
        logits, *maps = self._attention_session().run(None, {"image": _numpy(x)})
        return torch.from_numpy(logits), [torch.from_numpy(m) for m in maps]

    def _attention_session(self):
        with self._lock:  # two first requests at once open it once
            if self._attn_session is None:
                import onnxruntime as ort

                from vit.export import attention_path

                self._attn_session = ort.InferenceSession(str(attention_path(self.path)),
                                                          session_options(self.threads),
                                                          providers=["CPUExecutionProvider"])
            return self._attn_session


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().float().numpy())


# ---------------------------------------------------------------- choosing one

def onnxruntime_available() -> str | None:
    """None when `import onnxruntime` works, else why not."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    return None


def cache_path(ckpt: Checkpoint, *, int8: bool = False, digest: str | None = None) -> Path:
    """Where this checkpoint's export lives: beside it when that folder is writable, else in
    $XDG_CACHE_HOME/foodvision/onnx (or the temp dir), named by the checkpoint's sha256."""
    from vit.export import default_path, sha256

    beside = default_path(ckpt.path, int8=int8)
    if os.access(beside.parent, os.W_OK):
        return beside
    name = f"{ckpt.path.stem}-{(digest or sha256(ckpt.path))[:16]}{'.int8' if int8 else ''}.onnx"
    for root in (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"), Path(tempfile.gettempdir())):
        folder = root / "foodvision" / "onnx"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder / name
    raise OSError(f"no writable folder for {name}: not {beside.parent}, the cache or the temp dir")


def current_ort_engine(ckpt: Checkpoint, *, int8: bool = False, threads: int = THREADS) -> OrtEngine | None:
    """An OrtEngine on an export of `ckpt` already on disk (beside it or in the cache) and current;
    None when there is none or onnxruntime is missing. Exports nothing and never builds the model."""
    if onnxruntime_available() is not None:
        return None
    from vit import export

    digest = export.sha256(ckpt.path)
    for candidate in dict.fromkeys([export.default_path(ckpt.path, int8=int8),
                                    cache_path(ckpt, int8=int8, digest=digest)]):
        if candidate.is_file() and export.is_current(candidate, ckpt.path, digest):
            try:
                return OrtEngine(candidate, threads=threads)
            except Exception as e:  # noqa: BLE001 - a damaged export is rewritten, not fatal
                log.warning("%s: the export at %s does not load (%s: %s)", ckpt.path.name, candidate,
                            type(e).__name__, e)
    return None


def ort_engine(ckpt: Checkpoint, *, int8: bool = False, threads: int = THREADS) -> OrtEngine:
    """An OrtEngine for `ckpt`: its export beside it (or in the cache) when that is current, else a
    fresh export, checked on random input against PyTorch before it is used."""
    from vit import export

    with _EXPORT_LOCK:  # torch.onnx.export is process-global: one export at a time
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


def resolve_kind(kind: str | None = None) -> str:
    """The engine kind asked for: `kind`, else $FOODVISION_ENGINE, else "auto"; ValueError if unknown."""
    kind = (kind or os.environ.get(ENV) or "auto").strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown engine {kind!r} (from {ENV} or the caller); choose one of {KINDS}")
    return kind


def make_engine(ckpt: Checkpoint, kind: str | None = None, *, int8: bool = False,
                threads: int = THREADS) -> Engine:
    """The engine for `ckpt`. `kind` (default: $FOODVISION_ENGINE, else "auto"):

    - "auto": ONNX Runtime when it imports and a current export exists or can be written, else
      PyTorch, with one log line saying why;
    - "onnxruntime": ONNX Runtime or EngineError;
    - "torch": the eager model.
    `int8`: the quantised export (vit.export --int8) on ONNX Runtime; ignored by PyTorch."""
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
