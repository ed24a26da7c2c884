"""The course's photos on this machine: found in the folders that hold them, or downloaded once from the
course's public zips, in a background thread, so that no request ever waits for a download.

    library = Library([Path("../shared/data")])           # + a cache folder that downloads go to
    library.find("pizza_steak_sushi/train/pizza/12345.jpg")  # its Path, or None (and its zip starts to download)
    download("pizza_steak_sushi", dest)                    # dest/pizza_steak_sushi/{train,test}/<class>/*.jpg

A photo is named by its path relative to the data root, whose first folder is the data set's variant
(vit.explore names the nearest training photos and the explorer's points that way). Nothing here imports
torch or timm: the app builds a Library at start.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger(__name__)

COURSE_URL = "https://github.com/mrdbourke/pytorch-deep-learning/raw/main/data/{variant}.zip"
VARIANTS = ("pizza_steak_sushi", "pizza_steak_sushi_20_percent")
TIMEOUT_S = 60  # per network read: a dead connection fails the download instead of hanging its thread
CACHE_ENV = "FOODVISION_DATA_CACHE"


def cache_dir() -> Path:
    """Where downloads go: $FOODVISION_DATA_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/foodvision/data."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foodvision" / "data"


def download(variant: str, dest: str | os.PathLike, *, url: str = COURSE_URL,
             opener: Callable | None = None) -> Path:
    """Fetch the course's `<variant>.zip` and unpack it into `dest/<variant>` (kept when already there):
    streamed to a temporary file, unpacked into a temporary folder, then renamed into place, so that a
    reader never sees half a data set. RuntimeError saying what to do when it cannot be had.
    `url`: a template with {variant} (a file:// URL works too); `opener`: urllib.request.urlopen's stand-in."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown data set {variant!r}; choose one of {VARIANTS}")
    dest = Path(dest)
    target = dest / variant
    if (target / "train").is_dir():
        return target
    source = url.format(variant=variant)
    dest.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", source)
    with tempfile.TemporaryDirectory(dir=dest, prefix=f".{variant}.") as tmp:
        archive, unpacked = Path(tmp) / "data.zip", Path(tmp) / variant
        try:
            with (opener or urllib.request.urlopen)(source, timeout=TIMEOUT_S) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
            with zipfile.ZipFile(archive) as z:
                z.extractall(unpacked)  # zipfile drops absolute and ".." parts of member names
        except (urllib.error.URLError, OSError, zipfile.BadZipFile, ValueError) as e:
            raise RuntimeError(f"could not download {source} ({e}). Offline, pass --data-dir pointing at an "
                               "ImageFolder directory with train/ and test/ (e.g. ../shared/data/pizza_steak_sushi)") from e
        if not (unpacked / "train").is_dir():
            raise RuntimeError(f"{source} holds no train/ folder: not the course's data set")
        try:
            os.replace(unpacked, target)
        except OSError:  # another process put it there meanwhile
            if not (target / "train").is_dir():
                raise
    return target


class Library:
    """The course's photos by name, from `roots` (the first that holds a photo wins) and a cache folder
    that a missing variant is downloaded into, once, in the background (`download=False`: never)."""

    def __init__(self, roots: Sequence[str | os.PathLike], cache: str | os.PathLike | None = None, *,
                 download: bool = True, url: str = COURSE_URL, opener: Callable | None = None) -> None:
        self.cache = Path(cache) if cache is not None else cache_dir()
        self.roots = [Path(r) for r in roots if r] + [self.cache]
        self.allow_download, self.url, self.opener = download, url, opener
        self.fetching: dict[str, threading.Thread] = {}
        self.failed: dict[str, str] = {}
        self._lock = threading.Lock()

    def find(self, name: str) -> Path | None:
        """The photo's file, or None: then its variant's zip starts downloading (once) unless it failed."""
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            return None
        for root in self.roots:
            path = root / name
            if path.is_file():
                return path
        self.fetch(parts[0])
        return None

    def fetch(self, variant: str) -> None:
        """Download `variant` into the cache in a background thread, unless it is under way, failed or unknown."""
        if not self.allow_download or variant not in VARIANTS:
            return
        with self._lock:
            if variant in self.fetching or variant in self.failed:
                return
            thread = threading.Thread(target=self._fetch, args=(variant,), name=f"download-{variant}", daemon=True)
            self.fetching[variant] = thread
        thread.start()

    def _fetch(self, variant: str) -> None:
        try:
            download(variant, self.cache, url=self.url, opener=self.opener)
            log.info("%s: downloaded into %s", variant, self.cache)
        except (RuntimeError, OSError) as e:
            log.warning("%s: %s", variant, e)
            self.failed[variant] = str(e)

    def downloading(self) -> list[str]:
        """The variants being downloaded now."""
        return [v for v, t in self.fetching.items() if t.is_alive()]

    def wait(self, timeout: float | None = None) -> None:
        """Block until every download started has ended (tests)."""
        for thread in list(self.fetching.values()):
            thread.join(timeout)
