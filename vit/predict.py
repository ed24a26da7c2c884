"""Predictor: load a checkpoint once, then classify and explain single images.

    p = Predictor.from_checkpoint("checkpoints/effnet.safetensors")
    p.predict(Image.open("pizza.jpg"))          # {"pizza": 0.97, "steak": 0.02, "sushi": 0.01}
    r = p.explain(Image.open("pizza.jpg"))     # probabilities, latency, attention maps or Grad-CAM

A Predictor holds no per-request state, so one instance serves concurrent requests.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from vit import explain
from vit.checkpoint import Checkpoint, load
from vit.data import split_eval_transform
from vit.images import open_image


@torch.inference_mode()
def time_forward(model: torch.nn.Module, x: torch.Tensor, runs: int = 30, warmup: int = 5, fn=None) -> list[float]:
    """Wall-clock milliseconds of `fn(x)` (default: `model(x)`) over `runs` calls after `warmup` calls."""
    fn = fn or model
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - start) * 1e3)
    return times


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
    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt = ckpt
        self.model = ckpt.model.eval()
        self.meta = ckpt.meta
        self.class_names = ckpt.class_names
        self.view_transform, self.to_tensor = split_eval_transform(ckpt.meta["preprocessing"])
        self.image_size = ckpt.meta["preprocessing"]["input_size"][-1]
        self.is_vit = ckpt.family in ("scratch_vit", "timm_vit")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "Predictor":
        return cls(load(path))

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
