"""Open whatever a user uploads as an upright RGB photo of bounded size, or say clearly why not.

Handled: JPEG/PNG/WebP/BMP/GIF/TIFF and what else Pillow reads; grayscale, RGBA and LA
(composited on white), palette, CMYK, 16-bit and float images; EXIF orientation; animated
images (first frame). Large JPEGs are decoded at reduced scale (`draft`), so a 10 000 x 10 000
photo never occupies 300 MB; other formats are shrunk right after decoding, before any conversion;
anything over MAX_PIXELS is refused from its header alone.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from vit.messages import Said

MAX_PIXELS = 100_000_000  # 10 000 x 10 000; Pillow's decompression-bomb guard is set to the same
MAX_SIDE = 1024  # images are shrunk to fit this before anything else touches them
MIN_SIDE = 16  # smaller than this still works, with a warning that the prediction means little
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(Said, ValueError):
    """An upload that is not a usable image; the message is meant for the user (its code: "image.*")."""


@dataclass(frozen=True)
class Decoded:
    """A photo already opened by `open_image` (upright RGB, within MAX_SIDE), named as its sender named it:
    what one request passes along, so that nothing decodes it twice."""
    image: Image.Image
    name: str = "the image"


def describe_error(exc: BaseException, name: str = "the file") -> str:
    """A sentence for the user about why `name` could not be read as an image."""
    return str(unreadable(exc, name))


def unreadable(exc: BaseException, name: str = "the file") -> ImageError:
    """The ImageError that says why `name` could not be read as an image (with its code and values)."""
    if isinstance(exc, ImageError):
        return exc
    limit = round(MAX_PIXELS / 1e6)
    if isinstance(exc, Image.DecompressionBombError):
        return ImageError(f"{name} is too large to open safely ({exc}). The limit is {limit} megapixels; "
                          "please upload a smaller image.", "image.too_large", name=name, detail=str(exc), limit=limit)
    if isinstance(exc, UnidentifiedImageError):
        return ImageError(f"{name} is not an image this app can read (empty, damaged, or another kind of file). "
                          "Please upload a JPEG, PNG or WebP photo.", "image.not_image", name=name)
    if isinstance(exc, (OSError, SyntaxError, ValueError)):
        return ImageError(f"{name} could not be decoded: it looks truncated or damaged ({exc}).", "image.damaged",
                          name=name, detail=str(exc))
    return ImageError(f"{name} could not be read as an image ({type(exc).__name__}: {exc}).", "image.unreadable",
                      name=name, detail=f"{type(exc).__name__}: {exc}")


def open_image(source: str | os.PathLike | bytes | Image.Image | Decoded) -> Image.Image:
    """Return an upright RGB image no larger than MAX_SIDE; raise ImageError with a clear message. A
    `Decoded` photo is returned as it is."""
    if isinstance(source, Decoded):
        return source.image
    if source is None:
        raise ImageError("No image given: upload a photo, take one with the webcam, or click an example.",
                         "image.none")
    name = os.path.basename(str(source)) if isinstance(source, (str, os.PathLike)) else "the image"
    try:
        if isinstance(source, Image.Image):
            return _normalise(source)
        if isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
            raise ImageError(f"{name} is empty (0 bytes).", "image.empty", name=name)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                return _normalise(im)
    except ImageError:
        raise
    except Image.DecompressionBombWarning as e:
        raise unreadable(Image.DecompressionBombError(str(e)), name) from e
    except Exception as e:  # Pillow raises many kinds; every one becomes a message for the user
        raise unreadable(e, name) from e


def _normalise(im: Image.Image) -> Image.Image:
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"The image is {w} x {h} = {w * h / 1e6:.0f} megapixels; the limit is "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels. Please upload a smaller image.", "image.megapixels",
                         width=w, height=h, megapixels=round(w * h / 1e6), limit=round(MAX_PIXELS / 1e6))
    if w < 1 or h < 1:
        raise ImageError(f"The image has no pixels ({w} x {h}).", "image.no_pixels", width=w, height=h)
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # animated GIF/WebP/APNG: the first frame
    im.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that suffices
    if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        im = ImageOps.exif_transpose(im)  # upright, as the camera held it (copies, so only when needed)
    if im.mode in ("1", "P", "PA"):  # shrinking these would pick pixels, not average them: expand first
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    return _to_rgb(_shrink(im))


def _shrink(im: Image.Image) -> Image.Image:
    """Fit within MAX_SIDE x MAX_SIDE, before any mode conversion, so that the full-size decode is the
    one large allocation: a 10 000 x 10 000 RGB PNG peaks near 400 MB (Pillow keeps RGB at 4 bytes a
    pixel), RGBA near twice that; no longer at 1-3 GB."""
    if max(im.size) <= MAX_SIDE:
        return im
    scale = MAX_SIDE / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    gap = None if im.mode.startswith("I;16") else 2.0  # whole-factor reduce() first, as thumbnail() does,
    return im.resize(size, Image.BICUBIC, reducing_gap=gap)  # except where Pillow cannot reduce (16-bit)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit / 32-bit / float: rescale to 8 bits
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255) else max(a.max(), 1e-12)
        if im.mode == "F":
            a = a - a.min()
            top = max(a.max(), 1e-12)
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")
