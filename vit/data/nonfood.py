"""An offline, reproducible set of photos that are not food, for measuring the gate (vit.trust.ood, tests).

Built from scikit-image's bundled sample photos (`skimage.data`), scikit-learn's two sample images
and seeded generated textures; test requirements only (requirements-test.txt), nothing committed.
Each photo also gives two crops (its left and right halves), which go with it into the same half.

`half`: the images alternate between "select" (the half a detector, k or threshold may be chosen on)
and "report" (the half whose figures are reported), by source photo, so a crop never straddles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

SKIMAGE = ("astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
           "colorwheel", "grass", "gravel", "horse", "logo", "moon", "page", "retina", "rocket", "text")
TEXTURES = 12  # generated images, seeded


@dataclass(frozen=True)
class NonFood:
    name: str
    image: Image.Image
    half: str  # "select" or "report"


def _rgb(a: np.ndarray) -> Image.Image:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = (255 * (a - a.min()) / max(float(a.max() - a.min()), 1e-9)).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    return Image.fromarray(a).convert("RGB")


def photos() -> list[tuple[str, Image.Image]]:
    """The package photos: skimage.data's and scikit-learn's sample images."""
    import skimage.data  # lazy: test requirements only (requirements-test.txt)
    from sklearn.datasets import load_sample_images

    out = [(f"skimage.{n}", _rgb(getattr(skimage.data, n)())) for n in SKIMAGE]
    sk = load_sample_images()
    out += [(f"sklearn.{name.rsplit('/', 1)[-1].split('.')[0]}", _rgb(im)) for name, im in zip(sk.filenames, sk.images)]
    return out


def textures(n: int = TEXTURES, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Seeded generated images: noise, blurred noise, stripes, gradients, blobs, flat colour."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    for i in range(n):
        kind = ("noise", "blur", "stripes", "gradient", "blobs", "flat")[i % 6]
        colour = rng.uniform(0, 1, 3)
        if kind == "noise":
            a = rng.uniform(0, 1, (256, 256, 3))
        elif kind == "blur":
            a = np.asarray(_rgb(rng.uniform(0, 1, (256, 256, 3))).filter(ImageFilter.GaussianBlur(6))) / 255.0
        elif kind == "stripes":
            f, angle = rng.uniform(4, 30), rng.uniform(0, np.pi)
            a = (0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(angle) + yy * np.sin(angle))))[..., None] * colour
        elif kind == "gradient":
            a = xx[..., None] * colour + (1 - xx[..., None]) * rng.uniform(0, 1, 3)
        elif kind == "blobs":
            a = np.zeros((256, 256, 3))
            for _ in range(8):
                cx, cy, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.2)]
                a[((xx - cx) ** 2 + (yy - cy) ** 2) < r ** 2] = rng.uniform(0, 1, 3)
        else:
            a = np.ones((256, 256, 3)) * colour
        out.append((f"texture.{i:02d}.{kind}", _rgb((np.clip(a, 0, 1) * 255).astype(np.uint8))))
    return out


def nonfood_set(crops: bool = True) -> list[NonFood]:
    """Every non-food image, with its half; photos give their two halves as crops too."""
    items = []
    for i, (name, im) in enumerate(photos() + textures()):
        half = "select" if i % 2 == 0 else "report"
        items.append(NonFood(name, im, half))
        if crops and not name.startswith("texture"):
            w, h = im.size
            items.append(NonFood(f"{name}.left", im.crop((0, 0, w // 2, h)), half))
            items.append(NonFood(f"{name}.right", im.crop((w // 2, 0, w, h)), half))
    return items
