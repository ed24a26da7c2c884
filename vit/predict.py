"""Predictor: load a checkpoint once, then classify and explain single images.

    p = Predictor.from_checkpoint("checkpoints/effnet.safetensors")
    p.predict(Image.open("pizza.jpg"))          # {"pizza": 0.97, "steak": 0.02, "sushi": 0.01}
    r = p.explain(Image.open("pizza.jpg"), "grad-cam")  # probabilities, latency, the map and its score
    Predictor.from_checkpoint(path, optimisation="channels_last")  # a CPU speed-up; see `optimise`

One request path: the image is decoded and prepared once, one timed forward pass gives the
probabilities (and, for a ViT, every layer's attention), and the `Result` carries its own geometry,
so a renderer needs nothing else. A Predictor holds no per-request state, so one instance serves
concurrent requests.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
import time
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from vit import engines, explain, families, runtime
from vit.checkpoint import Checkpoint
from vit.trust import Gate, GateError, Trust, backbone, load_gate, no_gate
from vit.trust.gate import OWN
from vit.factory import load
from vit.preprocess import split_eval_transform
from vit.images import open_image

log = logging.getLogger(__name__)


def time_forward(model: torch.nn.Module | None, x: torch.Tensor, runs: int = 30, warmup: int = 5, fn=None, *,
                 context: Callable[[], AbstractContextManager] = torch.inference_mode) -> list[float]:
    """Wall-clock milliseconds of `fn(x)` (default: `model(x)`) over `runs` calls after `warmup` calls,
    all inside `context()` (default inference_mode; `contextlib.nullcontext` for Grad-CAM's backward)."""
    fn = model if fn is None else fn
    with context():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - start) * 1e3)
    return times


# How a request scores its map: K steps and the random orders of the bar. Coarser than vit.faithfulness's
# table (K = 16, seeds 0-2) so that a full explanation stays within 2 s on 2 cores for the slowest model
# (2 + 2 (K - 1) (1 + seeds) forward passes: 56 here, 122 there); vit.bench times it. K = 12 (68 passes) took
# the hybrid ViT's chefer to 1.85-2.01 s: too close to the bar on a machine whose speed drifts by 15 %.
SCORE_STEPS, SCORE_SEEDS = 10, (0, 1)

# CPU speed-ups a Predictor can apply; vit.bench measures each against the plain model.
OPTIMISATIONS = ("none", "channels_last", "int8", "compile")


def optimise(model: nn.Module, family: str, mode: str = "none") -> nn.Module:
    """A faster CPU copy of an eval-mode `model` (the original is left untouched):

    - "channels_last": NHWC weights for every convolution (EfficientNet, the hybrid's stem); the same
      math in another order, so logits agree to float rounding (~1e-5), not bit for bit.
    - "int8": dynamic int8 quantisation of every nn.Linear (ViTs); changes the numerics, so its
      accuracy must be re-checked (vit.bench does, on the test split).
    - "compile": torch.compile (inductor); the first calls compile for tens of seconds.
    - "none": the model itself.
    """
    if mode not in OPTIMISATIONS:
        raise ValueError(f"unknown optimisation {mode!r}; choose one of {OPTIMISATIONS}")
    if mode == "none":
        return model
    if mode == "compile":
        return torch.compile(model)
    if mode == "int8":
        if not families.get(family).int8:
            raise ValueError(f"int8 dynamic quantisation covers nn.Linear layers: {family} is convolutions")
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic
            return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


@dataclass
class Result:
    """One request's answer, with the geometry of its maps: renderers need nothing else."""
    probs: dict[str, float]  # class name -> calibrated probability softmax(logits / T), highest first
    latency_ms: float  # the timed forward pass that gave `probs` (see `timed`)
    view: Image.Image  # the resized, cropped image the model saw: overlays are drawn on it
    grid: tuple[int, int]  # (rows, cols) of the model's map: token grid (ViTs) or last feature map (CNNs)
    prefix: int = 0  # class / distillation tokens ahead of the patch tokens (ViTs)
    timed: str = "forward pass"  # what latency_ms measures
    engine: str = "torch"  # which engine ran the timed pass
    maps: list[torch.Tensor] = field(default_factory=list)  # ViTs: per layer (heads, N, N)
    method: str | None = None  # the explanation method of `heat`
    heat: np.ndarray | None = None  # (rows, cols) map of `method` for the top class
    faithfulness: object | None = None  # vit.explain's deletion / insertion scores of `heat`
    explain_ms: float = 0.0  # the map and its score, after the timed pass
    raw_probs: dict[str, float] = field(default_factory=dict)  # softmax(logits), before temperature scaling
    trust: Trust | None = None  # the gate's verdict, the prediction set, the temperature (vit.trust)
    trust_ms: float = 0.0  # the gate's features (the shared backbone's pass) and verdict, after the timed pass

    @property
    def top(self) -> str:
        return next(iter(self.probs))

    @property
    def cell_px(self) -> float:
        """Pixels of `view` per map cell (a ViT's patch side)."""
        return self.view.width / self.grid[1]


class Predictor:
    def __init__(self, ckpt: Checkpoint, optimisation: str = "none", engine: str | None = None) -> None:
        """`optimisation`: one of OPTIMISATIONS, applied to the PyTorch model once (see `optimise`).
        `engine` (default $FOODVISION_ENGINE, else "auto"): where forward passes run (vit.engines).
        "auto" answers on ONNX Runtime at once when a current export of the checkpoint is on disk,
        without building the PyTorch model (nor importing timm): gradient methods build it on first
        use, or `warm()` does ahead; otherwise on PyTorch at once, moving to ONNX Runtime as soon as
        an export is written in a background thread. "onnxruntime" and "torch" decide here and now."""
        self.ckpt = ckpt
        self.spec = families.get(ckpt.family)
        self.optimisation = optimisation
        self.meta = ckpt.meta
        self.class_names = ckpt.class_names
        self.preprocessing = ckpt.preprocessing
        self.view_transform, self.to_tensor = split_eval_transform(self.preprocessing.to_dict())
        self.image_size = self.preprocessing.image_size
        self._model: nn.Module | None = None
        self._model_lock = threading.Lock()
        self._engine_ready = threading.Event()
        self.gate, self.gate_note = _gate(ckpt)
        kind = engines.resolve_kind(engine)
        if self.shared_gate:  # open (or export) the shared backbone now, not in the first request
            threading.Thread(target=backbone.get, args=("torch" if kind == "torch" else "auto",), daemon=True,
                             name="gate-backbone").start()
        current = engines.current_ort_engine(ckpt) if kind == "auto" and optimisation == "none" else None
        if current is not None:
            self.engine: engines.Engine = current
            self._engine_ready.set()
        elif kind in ("auto", "torch") or optimisation != "none":
            self.engine = engines.TorchEngine(self.model, attention=self.spec.attention)
            if kind == "auto" and optimisation == "none":
                threading.Thread(target=self._upgrade_engine, name=f"engine-{ckpt.path.stem}").start()
            else:
                self._engine_ready.set()
        else:
            self.engine = runtime.make_engine(ckpt, kind)
            self._engine_ready.set()

    @property
    def model(self) -> nn.Module:
        """The (optimised) PyTorch model: gradients, attention on the torch engine; built on first use."""
        with self._model_lock:
            if self._model is None:
                self._model = optimise(self.ckpt.model.eval(), self.ckpt.family, self.optimisation)
            return self._model

    def warm(self) -> None:
        """Build the PyTorch model now rather than on the first gradient request; a failure is
        logged (ONNX Runtime still serves) and raised again by whatever needs the model."""
        try:
            self.model  # noqa: B018 - builds it
        except Exception as e:  # noqa: BLE001 - any build failure is the model's, reported on use
            log.warning("%s: the PyTorch model did not build (%s); ONNX Runtime serves, gradient methods fail",
                        self.ckpt.path.name, e)

    @property
    def grid(self) -> tuple[int, int] | None:
        """A ViT's token grid (rows, cols); None for a CNN (its map's size is known after a pass)."""
        return explain.token_grid(self.model) if self.spec.attention else None

    @property
    def prefix(self) -> int:
        return explain.num_prefix_tokens(self.model) if self.spec.attention else 0

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, optimisation: str = "none",
                        engine: str | None = None) -> "Predictor":
        return cls(load(path, lazy=True), optimisation, engine)

    def _upgrade_engine(self) -> None:
        try:
            self.engine = runtime.make_engine(self.ckpt, "auto")  # PyTorch again, with the reason logged
        finally:
            self._engine_ready.set()

    def wait_for_engine(self, timeout: float | None = None) -> str:
        """Block until the engine choice is final (see __init__); returns its name."""
        self._engine_ready.wait(timeout)
        return self.engine.name

    @property
    def id(self) -> str:
        """The model's id in the app and its API: the checkpoint's file name without the extension."""
        return self.ckpt.path.stem

    @property
    def methods(self) -> tuple[str, ...]:
        """Explanation methods this model supports, its default first."""
        return self.spec.methods

    @property
    def num_layers(self) -> int:
        return len(self.model.blocks) if self.spec.attention else 0

    @property
    def num_heads(self) -> int:
        return self.model.blocks[0].attn.num_heads if self.spec.attention else 0

    def prepare(self, image) -> tuple[Image.Image, torch.Tensor]:
        """Any image input -> (the model's view as PIL, its (1, 3, H, W) normalised tensor)."""
        return self._prepare(image)[1:]

    def _prepare(self, image) -> tuple[Image.Image, Image.Image, torch.Tensor]:
        """(the decoded photo, the model's view, its (1, 3, H, W) tensor): decoded once per request."""
        photo = open_image(image)
        view = self.view_transform(photo)
        return photo, view, self.to_tensor(view).unsqueeze(0)

    @property
    def shared_gate(self) -> bool:
        """The gate reads the shared ImageNet backbone's features, not the model's own (vit.trust.backbone)."""
        return self.gate is not None and self.gate.features != OWN

    def _pass(self, engine: engines.Engine, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The plain forward pass: logits, and the model's own features when its gate reads them."""
        if self.gate is None or self.shared_gate:
            return engine.forward(x), None
        return engine.forward_features(x)

    def _gate_features(self, engine: engines.Engine, x: torch.Tensor, photo: Image.Image,
                       own: torch.Tensor | None) -> torch.Tensor | None:
        """What the gate reads: the shared backbone's features of the decoded photo (prepared by its
        own transform, as when the gate was fitted, on the engine kind serving the model), or the
        model's own (`own`, else one more plain pass: a ViT's attention graph has no `features`)."""
        if self.gate is None:
            return None
        if self.shared_gate:
            net = backbone.get("torch" if engine.name == "torch" else "auto")
            if self.preprocessing.to_dict() == backbone.PREPROCESSING:  # the model's own input will do
                return net.features(x)
            return net.images([photo])
        return own if own is not None else engine.forward_features(x)[1]

    def _probs(self, p: torch.Tensor) -> dict[str, float]:
        """(1, C) probabilities -> {class: probability}, highest first."""
        return dict(sorted(zip(self.class_names, p[0].tolist()), key=lambda kv: -kv[1]))

    def assess(self, logits: torch.Tensor, features: torch.Tensor) -> tuple[dict, dict, Trust]:
        """One photo's (calibrated probabilities, raw probabilities, Trust): the gate's verdict on its
        penultimate features, softmax(logits / T) and the conformal set; without a gate, the raw
        probabilities twice and a Trust that says why there is no verdict."""
        raw = logits.float().softmax(-1)
        if self.gate is None:
            return self._probs(raw), self._probs(raw), no_gate(self.gate_note)
        probs, (trust,) = self.gate.assess(logits, features, self.class_names)
        return self._probs(probs), self._probs(raw), trust

    def predict(self, image) -> dict[str, float]:
        return self.classify(image).probs

    def classify(self, image) -> Result:
        """Calibrated probabilities and the gate's verdict (`Result.trust`) from one plain (fast-path)
        forward pass (plus, for a shared gate, the backbone's), and its latency."""
        photo, view, x = self._prepare(image)
        engine = self.engine  # one engine for the whole request, even if it is upgraded meanwhile
        start = time.perf_counter()
        logits, own = self._pass(engine, x)
        latency = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        probs, raw, trust = self.assess(logits, self._gate_features(engine, x, photo, own))
        trust_ms = (time.perf_counter() - start) * 1e3
        return Result(probs, latency, view, (1, 1), engine=engine.name, raw_probs=raw, trust=trust,
                      trust_ms=trust_ms)  # no map: no grid

    def explain(self, image, method: str | None = None, *, layer: int = -1, head: int | str = "mean",
                discard: float = 0.9, score: bool = False) -> Result:
        """Probabilities plus the map of `method` (default: the model's own) for the top class.

        One timed pass gives the probabilities: for a ViT the forward that also returns every layer's
        attention (so attention and rollout need nothing more), for a CNN the plain forward with its
        features. The gate's verdict (vit.trust) needs the shared backbone's pass on the photo (the committed
        gates), or for a ViT gated on its own features one more plain pass (the attention graph has no
        `features` output). Gradient
        methods then run their own forward + backward on PyTorch; occlusion and the faithfulness score
        (`score=True`) run batched forwards on the engine."""
        method = method or self.methods[0]
        if method not in self.methods:
            raise ValueError(f"unknown method {method!r} for {self.id}; choose one of {list(self.methods)}")
        photo, view, x = self._prepare(image)
        engine = self.engine  # one engine for the whole request, even if it is upgraded meanwhile
        start = time.perf_counter()
        own = None
        if self.spec.attention:
            logits, maps = engine.forward_attention(x)
            maps, timed = [m[0] for m in maps], "forward pass with attention maps"
        else:
            (logits, own), maps, timed = self._pass(engine, x), [], "forward pass"
        latency = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        probs, raw, trust = self.assess(logits, self._gate_features(engine, x, photo, own))
        trust_ms = (time.perf_counter() - start) * 1e3
        result = Result(probs, latency, view, self.grid or (1, 1), self.prefix, timed, engine.name, maps, method,
                        raw_probs=raw, trust=trust, trust_ms=trust_ms)
        start = time.perf_counter()
        target = self.class_names.index(result.top)
        result.heat = self._heat(engine, x, method, maps, target, layer, head, discard)
        result.grid = result.heat.shape
        if score:
            result.faithfulness = explain.score(engine.forward_batches, x, result.heat, target,
                                                steps=SCORE_STEPS, seeds=SCORE_SEEDS)
        result.explain_ms = (time.perf_counter() - start) * 1e3
        return result

    def _heat(self, engine: engines.Engine, x: torch.Tensor, method: str, maps: list[torch.Tensor], target: int,
              layer: int, head: int | str, discard: float) -> np.ndarray:
        """The map: attention and rollout from the timed pass's maps; gradient methods on the fp32
        PyTorch model (whatever engine serves the forward passes); occlusion batched on the engine."""
        if method == "attention":
            return explain.cls_attention(maps[layer], self.grid, self.prefix, head)
        if method == "rollout":
            return explain.rollout_map(maps, self.grid, self.prefix, discard, head)
        return explain.compute(self.ckpt.model, x, method, target=target, forward_batch=engine.forward_batches).heat


def _gate(ckpt: Checkpoint) -> tuple[Gate | None, str | None]:
    """The checkpoint's gate, or None and why not (logged): none fitted, or a damaged one (the model
    is served all the same, without a verdict)."""
    try:
        gate = load_gate(ckpt)
    except GateError as e:
        log.warning("%s", e)
        return None, f"this model's gate is damaged and not used ({e})"
    if gate is None:
        return None, "this model has no out-of-distribution gate (python -m vit.calibrate adds one)"
    return gate, None
