"""Images in and out of the Gradio app through Gradio's public, documented shapes only.

In: the app's events run with `preprocess=False` and `gr.api` endpoints take the file as sent, so
our code receives Gradio's FileData record (after Gradio has checked that the file was uploaded to it)
or, from API callers, a data URL; `image_source` turns either into what vit.data.images.open_image reads.
Gradio itself then never decodes, converts or re-encodes an upload (a small PNG of 10 000 x 10 000
pixels would otherwise cost seconds and gigabytes before vit.data.images could shrink it).

Out: result images are written here, whole, under a name made from their content, and handed to Gradio
as a path, which Gradio copies into its cache atomically; so two users who get the same overlay at
the same moment each download it whole.

Nothing here imports Gradio; app.py turns ImageError into gr.Error.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal, TypedDict

from PIL import Image

from vit.data.images import ImageError
from vit.files import atomic_path

PHOTO_QUALITY = 90  # JPEG quality of the pictures drawn over a photo (`result_file`)
RESULTS = Path(tempfile.gettempdir()) / "foodvision-results"  # result images; pruned after RESULT_TTL_S
RESULT_TTL_S = 3600
MAX_INLINE_BYTES = 25 * 1024 * 1024  # a data URL may hold at most what an upload may (app.MAX_FILE_SIZE)
_writes = 0
_LOCK = threading.Lock()


class FileMeta(TypedDict):
    _type: Literal["gradio.FileData"]


class ImageFile(TypedDict, total=False):
    """An image file as Gradio's API carries it (gradio_client.handle_file(path) sends one; an MCP client
    sends a URL or base64, which Gradio turns into one)."""
    path: str
    url: str
    orig_name: str
    meta: FileMeta


def image_source(value: object) -> str | bytes | None:
    """What open_image reads, from an event's or endpoint's raw image value: a FileData record ->
    its path (Gradio has checked that it was uploaded); a data URL (alone or in a record) -> its bytes.
    A bare path string is refused: the API must not open files on the server that nobody uploaded."""
    if value is None:
        return None
    if isinstance(value, dict):
        url = value.get("url") or ""
        if url.startswith("data:"):
            return _data_url_bytes(url)
        meta = value.get("meta") or {}
        if isinstance(value.get("path"), str) and meta.get("_type") == "gradio.FileData":
            return value["path"]
    if isinstance(value, str) and value.startswith("data:"):
        return _data_url_bytes(value)
    raise ImageError("Send the image as a file (gradio_client.handle_file(path)), a URL an MCP client "
                     "uploads, or a data URL; a path on the server is not accepted.")


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise ImageError("The image's data URL is not base64-encoded.")
    if len(payload) * 3 // 4 > MAX_INLINE_BYTES:
        raise ImageError(f"The image is larger than {MAX_INLINE_BYTES // 2**20} MB; please send a smaller one.")
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as e:
        raise ImageError(f"The image's data URL is not valid base64 ({e}).") from e


def image_name(value: object) -> str:
    """The file name the user sent, for messages ("the image" when there is none)."""
    return (value.get("orig_name") if isinstance(value, dict) else None) or "the image"


def write_once(data: bytes, folder: str | os.PathLike, name: str) -> str:
    """folder/name holding `data`: written under a temporary name and renamed into place, so that a
    reader never sees it half-written. An existing file is kept (the caller names files by content)
    but touched: a file handed out again is as young as its newest use, so an age-based clean-up
    (`gradio_io.prune`) cannot delete it before Gradio has copied it."""
    path = Path(folder) / name
    try:
        os.utime(path)
        return str(path)
    except FileNotFoundError:
        pass
    with atomic_path(path) as staging:
        staging.write_bytes(data)
    return str(path)


def result_file(image: Image.Image | None, folder: Path | None = None, *, photo: bool = False) -> str | None:
    """`image` written whole under a name from its content; its path (None for None). A PNG, or with `photo`
    (a map over the photo, the layers' mosaic: photo-like, their few scale labels still legible) a JPEG of
    quality 90, which the page's click waits for less: a 336 px overlay is 73 KB instead of 286 KB, encoded
    in 0.7 ms instead of 14 ms and decoded in 1.1 ms instead of 4.5 (Pillow, 6 December 2026)."""
    global _writes
    if image is None:
        return None
    buffer = io.BytesIO()
    if photo:
        image.convert("RGB").save(buffer, "JPEG", quality=PHOTO_QUALITY)
    else:
        image.save(buffer, "PNG", compress_level=1)
    data = buffer.getvalue()
    folder = folder or RESULTS
    with _LOCK:  # a clean-up never runs between another request's touch of a file and its return
        _writes += 1
        if _writes % 200 == 0:
            prune(folder)
        return write_once(data, folder, hashlib.sha256(data).hexdigest()[:32] + (".jpg" if photo else ".png"))


THUMBNAIL_SIDE = 160  # px: a nearest training photo or a mistake, as a thumbnail
_photos: dict[tuple[str, int | None], str] = {}  # (photo, side) -> its file in RESULTS: made once per process


def photo_file(path: str | os.PathLike, side: int | None = THUMBNAIL_SIDE) -> str:
    """A dataset photo as a file Gradio may serve (the results folder: a data folder elsewhere on the server
    is not one): a JPEG thumbnail whose longer side is `side`, or with `side` None a copy of the photo."""
    key = (str(path), side)
    made = _photos.get(key)
    if made is not None and os.path.exists(made):
        os.utime(made)  # as young as its newest use (`prune`)
        return made
    if side is None:
        data, suffix = Path(path).read_bytes(), Path(path).suffix.lower() or ".jpg"
    else:
        with Image.open(path) as im:
            im.draft("RGB", (side, side))  # a JPEG decodes at 1/2, 1/4 or 1/8 scale: a thumbnail costs ~2 ms
            im = im.convert("RGB")
            im.thumbnail((side, side), Image.BICUBIC)
            buffer = io.BytesIO()
            im.save(buffer, "JPEG", quality=85)
        data, suffix = buffer.getvalue(), ".jpg"
    _photos[key] = write_once(data, RESULTS, hashlib.sha256(data).hexdigest()[:32] + suffix)
    return _photos[key]


def prune(folder: Path, ttl_s: float = RESULT_TTL_S) -> None:
    """Delete result files older than `ttl_s` (Gradio keeps its own copies of what it served)."""
    cutoff = time.time() - ttl_s
    for path in Path(folder).glob("*.*"):  # overlays, thumbnails, copied photos
        try:
            if path.stat().st_mtime < cutoff:
                os.remove(path)
        except OSError:
            pass


def file_data(path: str | None) -> dict | None:
    """A path as the FileData record a `gr.api` endpoint returns (Gradio serves the file from its cache)."""
    return None if path is None else {"path": path, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def label_value(probs: dict[str, float]) -> dict:
    """{class: probability} as a gr.Label's value on the wire: {"label": top, "confidences": [...]}."""
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    return {"label": ranked[0][0] if ranked else None,
            "confidences": [{"label": c, "confidence": float(p)} for c, p in ranked]}
