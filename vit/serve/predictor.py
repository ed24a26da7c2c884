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

from vit import explain
from vit.data.images import open_image
from vit.data.preprocess import split_eval_transform
from vit.explain import lrp_cnn
from vit.explain import methods as registry
from vit.explain.errors import RequestError
from vit.explain.rollout import parse_head
from vit.explore.bank import Bank, Neighbour, load_bank
from vit.messages import Said
from vit.models import attention, families
from vit.models.checkpoint import Checkpoint
from vit.models.factory import load
from vit.runtime import choice, engines
from vit.serve.cache import LRU, content_key
from vit.trust import Gate, GateError, Trust, backbone, load_gate, no_gate
from vit.trust.gate import DAMAGED, NO_GATE, OWN

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


# How a request scores its map: K steps and the random orders of the bar. Coarser than vit.explain.cli's
# table (K = 16, seeds 0-2) so that a full explanation stays fast on 2 cores. A photo's first score runs
# 2 (K - 1) images for the map and about (K - 1) per seed for the random bar, whose masks serve both curves
# (explain.random_curves(shared=True)): 37 images at K = 10, against 58 with separate masks and the intact
# and blurred images run again; the intact image's logits are the answer's pass, the blurred one's run once.
SCORE_STEPS, SCORE_SEEDS = 10, (0, 1)

# Per Predictor, keyed by the decoded photo's content hash (vit.serve.cache): forward passes (logits, attention maps,
# gate features; ~1 MB a ViT image), and maps, scores and random bars (a few kB each) per (photo, method, params).
PASS_CACHE, MAP_CACHE = 8, 256

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
            from torch.ao.quantization import quantize_dynamic  # lazy: int8 only; it warns of its deprecation on import
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
    controls: dict = field(default_factory=dict)  # the map's controls that `method` uses: layer (from 0), head, discard
    heat: np.ndarray | None = None  # (rows, cols) map of `method` for the top class
    faithfulness: object | None = None  # vit.explain's deletion / insertion scores of `heat`
    explain_ms: float = 0.0  # the map and its score, after the timed pass
    map_ms: float = 0.0  # the map alone (0 when it came from the cache)
    map_reused: bool = False  # the map was made earlier for this photo, method and parameters (map_ms ~ 0)
    score_ms: float = 0.0  # its deletion / insertion score (0 when cached or not scored)
    reused: bool = False  # the timed pass was this photo's earlier one (latency_ms is that pass's)
    raw_probs: dict[str, float] = field(default_factory=dict)  # softmax(logits), before temperature scaling
    trust: Trust | None = None  # the gate's verdict, the prediction set, the temperature (vit.trust)
    trust_ms: float = 0.0  # the gate's features (the shared backbone's pass) and verdict, after the timed pass
    gate_features: torch.Tensor | None = None  # (1, D) shared-backbone features: Compare all reuses them
    neighbours: list[Neighbour] = field(default_factory=list)  # the K nearest training photos (vit.explore)
    neighbours_note: Said | None = None  # why there are none: the model has no (usable) bank (English as str())

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
        `engine` (default $FOODVISION_ENGINE, else "auto"): where forward passes run (vit.runtime.engines).
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
        # the shared gate's backbone is prepared as this model is: its input serves both (asked once, not per request)
        self._backbone_input = self.preprocessing.to_dict() == backbone.PREPROCESSING
        self.image_size = self.preprocessing.image_size
        self._model: nn.Module | None = None
        self._model_lock = threading.Lock()
        self._engine_ready = threading.Event()
        self.gate, self.gate_note = _gate(ckpt)
        self.bank: Bank | None
        self.bank, self.bank_note = load_bank(ckpt.path, ckpt.class_names)
        self._passes, self._maps, self._scores = LRU(PASS_CACHE), LRU(MAP_CACHE), LRU(MAP_CACHE)
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
            self.engine = choice.make_engine(ckpt, kind)
            self._engine_ready.set()

    @property
    def model(self) -> nn.Module:
        """The (optimised) PyTorch model: gradients, attention on the torch engine; built on first use."""
        with self._model_lock:
            if self._model is None:
                self._model = optimise(self.ckpt.model.eval(), self.ckpt.family, self.optimisation)
            return self._model

    def warm(self) -> None:
        """Build the PyTorch model now rather than on the first gradient request (a CNN with LRP rules: with its
        folded layers, vit.explain.lrp_cnn.prepare); a failure is logged (ONNX Runtime still serves) and raised
        again by whatever needs the model."""
        try:
            self.model  # noqa: B018 - builds it
            if self.spec.lrp_rules:  # and the LRP's folded layers, which its first map would otherwise form
                lrp_cnn.prepare(self.model)
        except Exception as e:  # noqa: BLE001 - any build failure is the model's, reported on use
            log.warning("%s: the PyTorch model did not build (%s); ONNX Runtime serves, gradient methods fail",
                        self.ckpt.path.name, e)

    @property
    def grid(self) -> tuple[int, int] | None:
        """A ViT's token grid (rows, cols); None for a CNN (its map's size is known after a pass)."""
        return attention.token_grid(self.model) if self.spec.attention else None

    @property
    def prefix(self) -> int:
        return attention.num_prefix_tokens(self.model) if self.spec.attention else 0

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, optimisation: str = "none",
                        engine: str | None = None) -> "Predictor":
        return cls(load(path, lazy=True), optimisation, engine)

    def _upgrade_engine(self) -> None:
        try:
            self.engine = choice.make_engine(self.ckpt, "auto")  # PyTorch again, with the reason logged
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
        """Explanation methods this model supports, its default first (vit.explain.methods)."""
        return registry.of(self.spec)

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
        """The plain forward pass: logits, and the model's own features when its gate or its bank reads them."""
        if self.bank is None and (self.gate is None or self.shared_gate):
            return engine.forward(x), None
        return engine.forward_features(x)

    def neighbours(self, own: torch.Tensor | None) -> tuple[list[Neighbour], Said | None]:
        """The photo's nearest training photos from its own features (`own`, (1, D), from the request's
        one pass), or none and why."""
        if self.bank is None:
            return [], self.bank_note
        return self.bank.query(own)[0], None

    def _gate_features(self, engine: engines.Engine, x: torch.Tensor, photo: Image.Image,
                       own: torch.Tensor | None) -> torch.Tensor | None:
        """What the gate reads: the shared backbone's features of the decoded photo (prepared by its
        own transform, as when the gate was fitted, on the engine kind serving the model), or the
        model's own (`own`, from the request's pass)."""
        if self.gate is None:
            return None
        if self.shared_gate:
            net = backbone.get("torch" if engine.name == "torch" else "auto")
            if self._backbone_input:  # the model's own input will do
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
        return self.answer(image).probs

    def answer(self, image) -> Result:
        """The answer without a map (what /predict returns): calibrated probabilities and the gate's verdict
        (`Result.trust`) from one plain (fast-path) forward pass (plus, for a shared gate, the backbone's),
        and its latency."""
        photo, view, x = self._prepare(image)
        engine = self.engine  # one engine for the whole request, even if it is upgraded meanwhile
        start = time.perf_counter()
        logits, own = self._pass(engine, x)
        latency = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        probs, raw, trust = self.assess(logits, self._gate_features(engine, x, photo, own))
        trust_ms = (time.perf_counter() - start) * 1e3
        neighbours, note = self.neighbours(own)
        return Result(probs, latency, view, (1, 1), engine=engine.name, raw_probs=raw, trust=trust,
                      trust_ms=trust_ms, neighbours=neighbours, neighbours_note=note)  # no map: no grid

    def explain(self, image, method: str | None = None, *, layer: int = -1, head: int | str = "mean",
                discard: float = 0.9, score: bool = False, gate_features: torch.Tensor | None = None) -> Result:
        """Probabilities plus the map of `method` (default: the model's own) for the top class.

        One timed pass gives the probabilities: for a ViT the forward that also returns every layer's
        attention (so attention and rollout need nothing more), for a CNN the plain forward with its
        features; either pass also gives the penultimate features, which the nearest training photos
        (`Result.neighbours`, vit.explore) and a gate on the model's own features read. The gate's verdict
        (vit.trust) needs the shared backbone's pass on the photo (the committed gates). Gradient
        methods then run their own forward + backward on PyTorch; occlusion and the faithfulness score
        (`score=True`) run batched forwards on the engine. `gate_features`: another model's
        `Result.gate_features` for the same photo, reused when this model's gate reads the shared backbone
        too (Compare all: one backbone pass per photo, not one per model).

        Nothing is run twice for one photo (keyed by its content hash, vit.serve.cache; bounded LRUs beside the
        model, never on it): the timed pass is reused by every later method, layer, head and discard; a map
        and its score are kept per (photo, method, the parameters it uses), so going back to a view costs
        no model run, and the score's random bar is shared by every method of the photo.

        The request is checked here, once, before any model runs: an unknown method, a layer or head the
        model lacks raise RequestError; an unreadable image ImageError. `head`: "mean", "max", "head N" (from
        1, as on the page) or an index from 0; `layer`: an index from 0, negative from the last."""
        method, layer, head = self.check(method, layer, head)
        photo, view, x = self._prepare(image)
        key, engine = content_key(photo), self.engine  # one engine for the whole request, even if upgraded meanwhile
        result, logits = self._timed_pass(key, engine, photo, view, x, gate_features)
        result.method = method
        target = self.class_names.index(result.top)
        m = registry.get(method)
        result.controls = {c: v for c, v in zip(registry.CONTROLS, (layer % max(1, self.num_layers), head, discard))
                           if c in m.controls}
        params = (key, engine.name, method, target, *(v for c, v in zip(registry.CONTROLS, (layer, head, discard))
                                                      if c in m.controls))
        heat = self._maps.get(params)
        result.map_reused = heat is not None
        model = self.ckpt.model if heat is None else None  # built on first use (lazy): start-up, not the map's time
        start = time.perf_counter()
        if heat is None:
            heat = self._maps.put(params, registry.compute(
                model, x, method, target=target, layer=layer, head=head, discard=discard,
                forward_batch=engine.forward_batches, maps=result.maps or None, logits=logits).heat)
        result.heat, result.grid = heat, heat.shape
        result.map_ms = (time.perf_counter() - start) * 1e3
        if score:
            start = time.perf_counter()
            result.faithfulness = self._score(params, engine, x, heat, target, logits)
            result.score_ms = (time.perf_counter() - start) * 1e3
        result.explain_ms = result.map_ms + result.score_ms
        return result

    def check(self, method: str | None, layer: int, head: int | str) -> tuple[str, int, int | str]:
        """(method, layer, head) as the maps take them, or RequestError naming what the model has."""
        method = method or self.methods[0]
        if method not in self.methods:
            raise RequestError(f"unknown method {method!r} for {self.id}; choose one of {list(self.methods)}",
                               "request.unknown_method", method=method, model=self.id, methods=list(self.methods))
        if not self.spec.attention:
            return method, layer, "mean"
        if not -self.num_layers <= int(layer) < self.num_layers:
            raise RequestError(f"layer {int(layer) + 1} does not exist: this model has layers 1 .. {self.num_layers}",
                               "request.no_layer", layer=int(layer) + 1, layers=self.num_layers)
        return method, int(layer), parse_head(head, self.num_heads)

    def _timed_pass(self, key: str, engine: engines.Engine, photo: Image.Image, view: Image.Image, x: torch.Tensor,
                gate_features: torch.Tensor | None) -> tuple[Result, torch.Tensor]:
        """Probabilities and verdict from the timed pass (for a ViT with every layer's attention), made once
        per photo and engine: a new method, layer, head or discard on the same photo reuses it."""
        cached = self._passes.get((key, engine.name))
        reused = cached is not None
        if not reused:
            start = time.perf_counter()
            if self.spec.attention:  # the attention graph gives the features too: one pass (export FORMAT 4)
                logits, own, maps = engine.forward_attention_features(x)
                maps, timed = [m[0] for m in maps], "forward pass with attention maps"
            else:
                (logits, own), maps, timed = self._pass(engine, x), [], "forward pass"
            latency, start = (time.perf_counter() - start) * 1e3, time.perf_counter()
            reuse = gate_features is not None and self.shared_gate
            feats = gate_features if reuse else self._gate_features(engine, x, photo, own)
            cached = self._passes.put((key, engine.name), (logits, maps, feats, own, latency, timed,
                                                           (time.perf_counter() - start) * 1e3))
        logits, maps, feats, own, latency, timed, feats_ms = cached
        start = time.perf_counter()
        probs, raw, trust = self.assess(logits, feats)  # the verdict itself is cheap: asked every time
        trust_ms = (time.perf_counter() - start) * 1e3 + (0.0 if reused else feats_ms)
        neighbours, note = self.neighbours(own)
        return Result(probs, latency, view, self.grid or (1, 1), self.prefix, timed, engine.name, list(maps),
                      raw_probs=dict(raw), trust=trust, trust_ms=trust_ms,
                      gate_features=feats if self.shared_gate else None, reused=reused, neighbours=neighbours,
                      neighbours_note=note), logits

    def _score(self, params: tuple, engine: engines.Engine, x: torch.Tensor, heat: np.ndarray, target: int,
               logits: torch.Tensor):
        """The map's deletion / insertion score, once per (photo, engine, method, target, params); the random
        bar and the blurred image's logits once per (photo, engine, grid, target), shared by every method of
        that photo; the intact image's logits are the answer's (`logits`)."""
        f = self._scores.get(params)
        if f is not None:
            return f
        bar_key = (params[0], params[1], "random bar", heat.shape, target)
        found = self._scores.get(bar_key)
        if found is None:
            ends = explain.Ends(logits, explain.blurred_logits(engine.forward_batches, x))
            found = self._scores.put(bar_key, (ends, explain.random_curves(
                engine.forward_batches, x, heat.shape, target, steps=SCORE_STEPS, seeds=SCORE_SEEDS, shared=True,
                ends=ends)))
        ends, bar = found
        return self._scores.put(params, explain.score(engine.forward_batches, x, heat, target, steps=SCORE_STEPS,
                                                      seeds=SCORE_SEEDS, random=bar, ends=ends))


def _gate(ckpt: Checkpoint) -> tuple[Gate | None, str | None]:
    """The checkpoint's gate, or None and why not (logged): none fitted, or a damaged one (the model
    is served all the same, without a verdict)."""
    try:
        gate = load_gate(ckpt)
    except GateError as e:
        log.warning("%s", e)
        return None, f"{DAMAGED} ({e})"
    if gate is None:
        return None, NO_GATE
    return gate, None
