"""A checkpoint's eval preprocessing on Pillow and torch alone: no timm, no torchvision.

    view, to_tensor = split_eval_transform(pp)   # pp: the checkpoint's preprocessing record
    x = to_tensor(view(image))                   # (3, H, W), normalised; `view(image)` is what the model sees

The same steps, in the same arithmetic, as timm's eval transform (`timm.data.create_transform(...,
is_training=False)`: torchvision's Resize of the shorter side to floor(size / crop_pct), CenterCrop,
ToTensor, Normalize), so the outputs are equal to the bit (tests/test_preprocess.py checks it on real
photos). Why not call timm: importing timm imports torchvision.ops and with it torch._dynamo, about 3 s
on two cores, and the app's first prediction should not wait for it. Crop modes other than "center"
and "squash" fall back to timm.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from PIL import Image

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


def resize_shorter(image: Image.Image, size: int, resample: int) -> Image.Image:
    """torchvision's Resize(size) on a PIL image: the shorter side to `size`, the longer in proportion
    (int-truncated)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return image.resize((new_w, new_h), resample)


def center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """torchvision's CenterCrop on an image at least (height, width) large."""
    w, h = image.size
    if width > w or height > h:
        raise ValueError(f"cannot crop {width}x{height} from a {w}x{h} image")
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


class View:
    """PIL -> PIL: the resize and crop of the eval transform (the pixels the model sees)."""

    def __init__(self, pp: dict) -> None:
        _, self.height, self.width = pp["input_size"]
        self.resample = _RESAMPLE[pp["interpolation"]]
        self.mode = pp.get("crop_mode", "center")
        self.scale = (math.floor(self.height / pp["crop_pct"]), math.floor(self.width / pp["crop_pct"]))
        if self.mode not in ("center", "squash") or (self.mode == "center" and self.height != self.width):
            raise ValueError(f"crop_mode {self.mode!r} on a {self.height}x{self.width} input: use timm's transform")

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.mode == "squash":
            image = image.resize(self.scale[::-1], self.resample)  # PIL takes (w, h)
        else:
            image = resize_shorter(image, self.scale[0], self.resample)
        return center_crop(image, self.height, self.width)


class ToTensor:
    """PIL -> normalised (3, H, W) float32: torchvision's ToTensor, then Normalize."""

    def __init__(self, pp: dict) -> None:
        self.mean = torch.tensor(pp["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(pp["std"], dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        x = torch.from_numpy(np.array(image, np.uint8, copy=True))  # (H, W, 3)
        x = x.permute(2, 0, 1).contiguous().to(torch.float32).div(255)  # (3, H, W) in [0, 1]
        return x.sub_(self.mean).div_(self.std)


def _timm_split(pp: dict) -> tuple[Callable, Callable]:
    import timm.data  # lazy: timm and torchvision take seconds to import; only training transforms need them
    from torchvision import transforms as T

    steps = timm.data.create_transform(
        input_size=tuple(pp["input_size"]), interpolation=pp["interpolation"], mean=tuple(pp["mean"]),
        std=tuple(pp["std"]), crop_pct=pp["crop_pct"], crop_mode=pp["crop_mode"], is_training=False).transforms
    cut = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
    return T.Compose(steps[:cut]), T.Compose(steps[cut:])


def split_eval_transform(pp: dict) -> tuple[Callable[[Image.Image], Image.Image], Callable[[Image.Image], torch.Tensor]]:
    """The eval transform cut in two: the geometry (PIL -> PIL: resize, crop; overlays are drawn on
    its output) and the tensor part (PIL -> normalised tensor)."""
    _, h, w = pp["input_size"]
    if pp.get("crop_mode", "center") in ("center", "squash") and (pp["crop_mode"] == "squash" or h == w):
        return View(pp), ToTensor(pp)
    return _timm_split(pp)


class EvalTransform:
    """PIL image -> normalised (3, H, W) tensor, exactly as the model was evaluated (picklable, for
    DataLoader workers)."""

    def __init__(self, pp: dict) -> None:
        self.view, self.to_tensor = split_eval_transform(pp)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.to_tensor(self.view(image))


eval_transform = EvalTransform
