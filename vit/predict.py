"""Predictor: load a checkpoint once, then classify and explain single images.

    p = Predictor.from_checkpoint("checkpoints/effnet.safetensors")
    p.predict(Image.open("pizza.jpg"))          # {"pizza": 0.97, "steak": 0.02, "sushi": 0.01}
    r = p.explain(Image.open("pizza.jpg"))     # probabilities, latency, attention maps or Grad-CAM
    Predictor.from_checkpoint(path, optimisation="channels_last")  # a CPU speed-up; see `optimise`

A Predictor holds no per-request state, so one instance serves concurrent requests.
"""
from __future__ import annotations

import copy
import os
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
from vit.checkpoint import Checkpoint, load
from vit.data import split_eval_transform
from vit.images import open_image


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
        if family == "effnet":
            raise ValueError("int8 dynamic quantisation covers nn.Linear layers: EfficientNet is convolutions")
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic
            return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


@dataclass
class Result:
    probs: dict[str, float]  # class name -> probability, highest first
    latency_ms: float  # the forward pass alone (the attention / Grad-CAM pass when explaining)
    view: Image.Image  # the resized, cropped image the model saw: overlays are drawn on it
    maps: list[torch.Tensor] = field(default_factory=list)  # ViTs: per layer (heads, N, N)
    cam: np.ndarray | None = None  # CNNs: Grad-CAM (h, w) for the top class

    @property
    def top(self) -> str:
        return next(iter(self.probs))


class Predictor:
    def __init__(self, ckpt: Checkpoint, optimisation: str = "none") -> None:
        """`optimisation`: one of OPTIMISATIONS, applied to the model once (see `optimise`)."""
        self.ckpt = ckpt
        self.optimisation = optimisation
        self.model = optimise(ckpt.model.eval(), ckpt.family, optimisation)
        self.meta = ckpt.meta
        self.class_names = ckpt.class_names
        self.view_transform, self.to_tensor = split_eval_transform(ckpt.meta["preprocessing"])
        self.image_size = ckpt.meta["preprocessing"]["input_size"][-1]
        self.is_vit = ckpt.family in ("scratch_vit", "timm_vit")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, optimisation: str = "none") -> "Predictor":
        return cls(load(path), optimisation)

    def prepare(self, image) -> tuple[Image.Image, torch.Tensor]:
        """Any image input -> (the model's view as PIL, its (1, 3, H, W) normalised tensor)."""
        view = self.view_transform(open_image(image))
        return view, self.to_tensor(view).unsqueeze(0)

    def _probs(self, logits: torch.Tensor) -> dict[str, float]:
        p = logits.float().softmax(-1)[0].tolist()
        return dict(sorted(zip(self.class_names, p), key=lambda kv: -kv[1]))

    @torch.inference_mode()
    def predict(self, image) -> dict[str, float]:
        return self.classify(image).probs

    @torch.inference_mode()
    def classify(self, image) -> Result:
        """Probabilities and the latency of the plain (fast-path) forward pass."""
        view, x = self.prepare(image)
        start = time.perf_counter()
        logits = self.model(x)
        latency = (time.perf_counter() - start) * 1e3
        return Result(self._probs(logits), latency, view)

    def explain(self, image) -> Result:
        """Probabilities plus attention maps (ViTs) or Grad-CAM (CNNs), from one forward pass."""
        view, x = self.prepare(image)
        start = time.perf_counter()
        if self.is_vit:
            with torch.inference_mode():
                logits, maps = explain.attention_maps(self.model, x)
            latency = (time.perf_counter() - start) * 1e3
            return Result(self._probs(logits), latency, view, maps=[m[0] for m in maps])
        cam, logits = explain.grad_cam(self.model, x)
        latency = (time.perf_counter() - start) * 1e3
        return Result(self._probs(logits), latency, view, cam=cam)

    # Geometry of the explanation, for the app's overlays.
    @property
    def token_grid(self) -> tuple[int, int]:
        return explain.token_grid(self.model)

    @property
    def prefix_tokens(self) -> int:
        return explain.num_prefix_tokens(self.model)

    @property
    def patch_px(self) -> int:
        return explain.patch_size_px(self.model, self.image_size) if self.is_vit else 0

    @property
    def num_layers(self) -> int:
        return len(self.model.blocks) if self.is_vit else 0

    @property
    def num_heads(self) -> int:
        return self.model.blocks[0].attn.num_heads if self.is_vit else 0
