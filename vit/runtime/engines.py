"""Where forward passes run: PyTorch eager or ONNX Runtime, behind one small interface.

    engine = current_ort_engine(ckpt) or TorchEngine(ckpt.model)   # vit.runtime.choice.make_engine chooses
    logits = engine.forward(x)              # x: (B, 3, H, W) -> (B, classes), any B
    logits, maps = engine.forward_attention(x)  # ViTs: maps is one (B, heads, N, N) tensor per layer
    logits, features, maps = engine.forward_attention_features(x)  # ... and the penultimate features, same pass

`FOODVISION_ENGINE=torch|onnxruntime|auto` chooses when the caller does not. onnxruntime is imported
only inside this module's functions, so the app starts without it. An engine holds no per-call
state: its sessions are created once and `InferenceSession.run` is thread-safe, so concurrent
requests share one engine.

Gradients (Grad-CAM, gradient-weighted relevance) are not an engine's business: they need the
PyTorch model, which the checkpoint keeps.

This module reads exports and never writes one: vit.runtime.export writes them, vit.runtime.choice decides when.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vit.models import families
from vit.models.attention import attention_features
from vit.models.checkpoint import Checkpoint
from vit.models.features import logits_and_features

log = logging.getLogger(__name__)

# of vit.runtime.export's graphs, bumped when they change: older exports then count as stale (3: the plain graph
# also outputs `features`; 4: the attention graph too, so an explanation's neighbours need no second pass)
FORMAT = "foodvision-onnx/4"
KINDS = ("auto", "onnxruntime", "torch")
ENV = "FOODVISION_ENGINE"
CONCURRENT = 2  # requests the app computes at once (its queue's default_concurrency_limit)
# ORT intra-op threads per session. On the 2-core host, with spinning off, 2 beat 1 both for one request
# alone and for CONCURRENT at once (p50, all three checkpoints); ORT_PARALLEL was ~2x slower.
# torch.onnx.export keeps process-global state (GLOBALS.in_onnx_export): two exports at once in one process
# fail. Every exporter (vit.runtime.choice / vit.runtime.export, the gate's backbone, the trainer's ONNX teacher) holds this.
EXPORT_LOCK = threading.RLock()
THREADS = 2
# A stack of perturbed copies (occlusion, RISE, the score) runs image by image on WORKERS threads, each
# on a one-thread session: on the 2-core host 1.3-1.5x the images per second of batches of 16 on one
# two-thread session (issue 31; per image, ms: EfficientNet 4.4 vs 6.3, hybrid 6.4 vs 8.9, scratch ViT
# 3.2 vs 4.0; scripts/batch_speed.py, 6 December 2026), since ONNX Runtime's intra-op threads synchronise
# after every operator of a small convolution while two whole runs do not.
WORKERS = 2
# PyTorch's intra-op threads in the app (app.py sets them before its worker threads start; vit.bench.speed too).
# Its share of a request is the backward maps and an eager fallback: many small operations, and with its idle
# threads sleeping (OMP_WAIT_POLICY=PASSIVE, app.py) two threads wake for each and lose to one. LRP map, ms,
# 2 -> 1 thread: EfficientNet 128 -> 85, hybrid 89 -> 63, scratch ViT 42 -> 36; Grad-CAM and the eager forward
# too (scripts/torch_threads.py, 6 December 2026, 2 cores). Two requests at once then take a core each.
TORCH_THREADS = 1
_POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ort-batch")


class EngineError(RuntimeError):
    """An engine that was asked for by name and cannot be had."""


class Engine(ABC):
    name: str  # "onnxruntime" or "torch"
    attention: bool  # forward_attention is available (a ViT)

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 -> (B, classes) logits, any batch size B."""

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> logits (B, classes) and penultimate features (B, D) from the same pass
        (vit.models.features: what the classifier reads; an OOD gate on the model's own features scores them)."""
        raise TypeError(f"{self.name} engine: gives no penultimate features")

    def forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, H, W) -> logits and one (B, heads, N, N) attention map per layer (ViTs only)."""
        logits, _, maps = self.forward_attention_features(x)
        return logits, maps

    def forward_attention_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(B, 3, H, W) -> logits, penultimate features (B, D) and one (B, heads, N, N) attention map per
        layer, from one pass (ViTs only)."""
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

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return logits_and_features(self.model, x)

    def forward_attention_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        if not self.attention:
            return super().forward_attention_features(x)
        with torch.inference_mode():
            return attention_features(self.model, x)


def session_options(threads: int = THREADS):
    """One session's options, tuned for the app: CONCURRENT requests on a small CPU. Sequential
    execution with `threads` intra-op threads per run and no spinning (a spinning pool burns the
    core that the other request, or another process, needs); all graph optimisations."""
    import onnxruntime as ort  # lazy: optional: without onnxruntime the app serves on PyTorch

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only
    return so


class OrtEngine(Engine):
    """An exported model (vit.runtime.export) on ONNX Runtime's CPU provider; for a ViT, the attention
    graph beside it serves `forward_attention` (its session opens on first use)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, threads: int = THREADS) -> None:
        import onnxruntime as ort  # lazy: optional: without onnxruntime the app serves on PyTorch

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
        self._single = None  # the one-thread session of forward_batches, opened on first use
        self._lock = threading.Lock()
        # a batched run (occlusion, RISE, the score's perturbed copies) hands the arena's growth back after it:
        # otherwise ONNX Runtime keeps its largest run's buffers for good (vit.serve.heap)
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"image": _numpy(x)}, self._shrink if len(x) > 1 else None)
        return torch.from_numpy(logits)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.session.run(["logits", "features"], {"image": _numpy(x)},
                                            self._shrink if len(x) > 1 else None)
        return torch.from_numpy(logits), torch.from_numpy(features)

    def forward_batches(self, x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """A stack of images (occlusion's, RISE's and the score's perturbed copies), one image a run, spread over
        WORKERS threads on a one-thread session (see WORKERS); `batch_size` is not used."""
        if len(x) == 1:
            return self.forward(x)
        session, images = self._single_session(), _numpy(x)
        run = lambda i: session.run(["logits"], {"image": images[i:i + 1]})[0]  # noqa: E731 - one image a run
        return torch.from_numpy(np.concatenate(list(_POOL.map(run, range(len(images))))))

    def _single_session(self):
        with self._lock:
            if self._single is None:
                import onnxruntime as ort  # lazy: optional: without onnxruntime the app serves on PyTorch

                self._single = ort.InferenceSession(str(self.path), session_options(1),
                                                    providers=["CPUExecutionProvider"])
            return self._single

    def forward_attention_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        if not self.attention:
            return super().forward_attention_features(x)
        session = self._attention_session()
        maps = [o.name for o in session.get_outputs() if o.name.startswith("attn.")]
        logits, features, *weights = session.run(["logits", "features", *maps], {"image": _numpy(x)})
        return torch.from_numpy(logits), torch.from_numpy(features), [torch.from_numpy(m) for m in weights]

    def _attention_session(self):
        with self._lock:  # two first requests at once open it once
            if self._attn_session is None:
                import onnxruntime as ort  # lazy: optional: without onnxruntime the app serves on PyTorch

                self._attn_session = ort.InferenceSession(str(attention_path(self.path)),
                                                          session_options(self.threads),
                                                          providers=["CPUExecutionProvider"])
            return self._attn_session


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().float().numpy())

# ---------------------------------------------------------------- the files vit.runtime.export writes


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_path(ckpt_path: str | os.PathLike, *, int8: bool = False) -> Path:
    """checkpoints/effnet.safetensors -> checkpoints/effnet.onnx (effnet.int8.onnx with `int8`)."""
    return Path(ckpt_path).with_suffix(".int8.onnx" if int8 else ".onnx")


def attention_path(path: str | os.PathLike) -> Path:
    """The attention graph beside a plain one: effnet.onnx -> effnet.attn.onnx."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".onnx") + ".attn.onnx")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """An .onnx file's metadata_props as a dict ({} when unreadable)."""
    import onnx  # lazy: optional: only exports read or write ONNX files

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply not current
        return {}
    return {p.key: p.value for p in proto.metadata_props}


def is_current(onnx_path: str | os.PathLike, ckpt_path: str | os.PathLike, source_sha256: str | None = None) -> bool:
    """Was `onnx_path` (and, for a ViT, its attention graph) exported from this very checkpoint file
    by this exporter version?"""
    onnx_path = Path(onnx_path)
    digest = source_sha256 or sha256(ckpt_path)
    paths = [onnx_path]
    meta = read_metadata(onnx_path)
    if meta and families.get(meta["family"]).attention:
        paths.append(attention_path(onnx_path))
    for p in paths:
        m = meta if p == onnx_path else read_metadata(p)
        if m.get("foodvision_format") != FORMAT or m.get("source_sha256") != digest:
            return False
    return True

# ---------------------------------------------------------------- choosing one


def onnxruntime_available() -> str | None:
    """None when `import onnxruntime` works, else why not."""
    try:
        import onnxruntime  # noqa: F401  # lazy: optional: without onnxruntime the app serves on PyTorch
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    return None


def cache_path(ckpt: Checkpoint, *, int8: bool = False, digest: str | None = None) -> Path:
    """Where this checkpoint's export lives: beside it when that folder is writable, else in
    $XDG_CACHE_HOME/foodvision/onnx (or the temp dir), named by the checkpoint's sha256."""
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
    digest = sha256(ckpt.path)
    for candidate in dict.fromkeys([default_path(ckpt.path, int8=int8),
                                    cache_path(ckpt, int8=int8, digest=digest)]):
        if candidate.is_file() and is_current(candidate, ckpt.path, digest):
            try:
                return OrtEngine(candidate, threads=threads)
            except Exception as e:  # noqa: BLE001 - a damaged export is rewritten, not fatal
                log.warning("%s: the export at %s does not load (%s: %s)", ckpt.path.name, candidate,
                            type(e).__name__, e)
    return None


def resolve_kind(kind: str | None = None) -> str:
    """The engine kind asked for: `kind`, else $FOODVISION_ENGINE, else "auto"; ValueError if unknown."""
    kind = (kind or os.environ.get(ENV) or "auto").strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown engine {kind!r} (from {ENV} or the caller); choose one of {KINDS}")
    return kind
