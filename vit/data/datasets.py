"""Data: ImageFolder listings, a train/validation split, transforms per model, the course's zips,
datasets held in memory or streamed from disk, and named torchvision sources (Food-101, CIFAR-10).

Layout: `<root>/{train,test}/<class>/<image>`, torchvision's ImageFolder layout. Preprocessing
is a timm data-config dict (input_size, interpolation, mean, std, crop_pct, crop_mode) that each
checkpoint carries; `eval_transform` (vit.data.preprocess: timm's eval transform without importing timm)
builds it for every family.
"""
from __future__ import annotations

import hashlib
import logging
import math
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm.data
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from vit.data import course
from vit.data.preprocess import eval_transform, split_eval_transform  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
COURSE_URL, VARIANTS = course.COURSE_URL, course.VARIANTS


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int

    @property
    def key(self) -> str:
        """class/filename: the same photo in two variants of the data set has the same key."""
        return f"{self.path.parent.name}/{self.path.name}"


def train_transform(size: int, augment: str = "trivial") -> T.Compose:
    """PIL -> unnormalised (3, size, size) float tensor in [0, 1]; the training loop normalises
    per model, so a student and its teacher can each see the same crop their own way."""
    policy = {"trivial": [T.TrivialAugmentWide(interpolation=T.InterpolationMode.BILINEAR)],
              "randaug": [T.RandAugment(num_ops=2, magnitude=9, interpolation=T.InterpolationMode.BILINEAR)],
              "light": []}
    if augment not in policy:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {sorted(policy)}")
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.RandomHorizontalFlip(),
        *policy[augment],
        T.ToTensor(),
    ])


def mix_transform(num_classes: int, mixup: float, cutmix: float, label_smoothing: float = 0.0):
    """timm's batch-level MixUp/CutMix (one of the two per batch, chosen at random; draws from numpy's
    RNG) -> (mixed x, label-smoothed soft (B, C) targets); None if both are off. The batch must be even."""
    if mixup <= 0 and cutmix <= 0:
        return None
    return timm.data.Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing,
                           num_classes=num_classes, mode="batch")


def list_images(root: str | Path) -> tuple[list[Sample], list[str]]:
    """ImageFolder listing of `root/<class>/*`: samples sorted by path, and the sorted class names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such image folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    samples = [Sample(p, i) for i, c in enumerate(classes) for p in sorted((root / c).iterdir())
               if p.suffix.lower() in IMAGE_SUFFIXES]
    if not samples:
        raise FileNotFoundError(f"{root}: no images in <class>/ subfolders")
    return samples, classes


def train_samples(data_dirs: list[str | Path]) -> tuple[list[Sample], list[str]]:
    """The union of every data dir's train/ split, each photo once (by class/filename)."""
    merged: dict[str, Sample] = {}
    classes = None
    for d in data_dirs:
        samples, names = list_images(Path(d) / "train")
        if classes is not None and names != classes:
            raise ValueError(f"{d}/train has classes {names}, earlier data dirs have {classes}")
        classes = names
        for s in samples:
            merged.setdefault(s.key, s)
    return sorted(merged.values(), key=lambda s: s.key), classes


def split_train_val(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Hold out `fraction` of each class for validation, chosen by a hash of the file name:
    stable across runs, machines and data-set variants."""
    if fraction <= 0:
        return samples, []
    train, val = [], []
    for label in sorted({s.label for s in samples}):
        group = sorted((s for s in samples if s.label == label), key=lambda s: hashlib.sha1(s.key.encode()).hexdigest())
        n_val = max(1, round(len(group) * fraction))
        val += group[:n_val]
        train += group[n_val:]
    return train, val


STREAM_ABOVE = 5000  # --data-cache auto: keep smaller sets decoded in memory, stream larger ones


def make_dataset(samples: list[Sample], transform, cache: str = "auto", cache_side: int | None = None,
                 repeats: int = 1) -> Dataset:
    """An in-memory (`ImageDataset`) or streaming (`StreamingImageDataset`) dataset; the two give the
    same images. cache="auto": memory below STREAM_ABOVE images."""
    if cache == "auto":
        cache = "memory" if len(samples) < STREAM_ABOVE else "stream"
    if cache not in ("memory", "stream"):
        raise ValueError(f"unknown data cache {cache!r}; choose memory, stream or auto")
    kind = ImageDataset if cache == "memory" else StreamingImageDataset
    return kind(samples, transform, cache_side=cache_side, repeats=repeats)


class StreamingImageDataset(Dataset):
    """Images decoded per item, in the DataLoader's workers: memory stays flat however large the folder."""

    def __init__(self, samples: list[Sample], transform, cache_side: int | None = None, repeats: int = 1) -> None:
        self.samples = samples
        self.transform = transform
        self.cache_side = cache_side  # shrink as ImageDataset does, so both give the same pixels
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.samples) * self.repeats

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i % len(self.samples)]
        return self.transform(_load_rgb(s.path, self.cache_side)), s.label


class ImageDataset(Dataset):
    """Images decoded once and kept in memory, shrunk so the shorter side is `cache_side`
    (a few hundred photos fit in a few hundred MB; each epoch then costs no JPEG decoding)."""

    def __init__(self, samples: list[Sample], transform, cache_side: int | None = None, repeats: int = 1) -> None:
        self.samples = samples
        self.transform = transform
        self.repeats = repeats  # each image appears this many times per pass (repeated augmentation)
        self.images = [_load_rgb(s.path, cache_side) for s in samples]

    def __len__(self) -> int:
        return len(self.samples) * self.repeats

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i %= len(self.samples)
        return self.transform(self.images[i]), self.samples[i].label


def _load_rgb(path: Path, short_side: int | None) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert("RGB")
    if short_side and min(im.size) > short_side:
        scale = short_side / min(im.size)
        im = im.resize((max(1, math.ceil(im.width * scale)), max(1, math.ceil(im.height * scale))), Image.BICUBIC)
    return im


def download(variant: str, dest: str | Path) -> Path:
    """Fetch and unzip the course's `<variant>.zip` into `dest/<variant>` (needs internet; vit.data.course)."""
    return course.download(variant, dest)


NAMED = ("food101", "cifar10")


def named_source(name: str, root: str | Path) -> tuple[list[Sample], list[Sample], list[str]]:
    """(train samples, test samples, class names) of a torchvision data set kept under `root`:
    read if present, downloaded when online, and offline a RuntimeError at once (no network timeouts)."""
    from torchvision import datasets  # lazy: torchvision takes seconds to import; the served models never need it

    root = Path(root)
    if name == "food101":
        try:
            parts = [datasets.Food101(root, split=s, download=False) for s in ("train", "test")]
        except RuntimeError:
            _require_host(datasets.Food101._URL, name)
            parts = [datasets.Food101(root, split=s, download=True) for s in ("train", "test")]
        return (*[[Sample(Path(f), int(c)) for f, c in zip(p._image_files, p._labels)] for p in parts],
                list(parts[0].classes))
    if name == "cifar10":
        folder = root / "cifar10_imagefolder"
        if not (folder / "complete").is_file():
            try:
                parts = [datasets.CIFAR10(root, train=t, download=False) for t in (True, False)]
            except RuntimeError:
                _require_host(datasets.CIFAR10.url, name)
                parts = [datasets.CIFAR10(root, train=t, download=True) for t in (True, False)]
            _write_imagefolder(folder, parts)
        (train, classes), (test, _) = list_images(folder / "train"), list_images(folder / "test")
        return train, test, classes
    raise ValueError(f"unknown data set {name!r}; choose imagefolder or one of {NAMED}")


def _write_imagefolder(folder: Path, parts) -> None:
    """CIFAR-10's arrays as PNGs in ImageFolder layout (once; 32 px images, ~150 MB)."""
    for split, ds in zip(("train", "test"), parts):
        for i, (array, label) in enumerate(zip(ds.data, ds.targets)):
            path = folder / split / ds.classes[label] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    (folder / "complete").touch()


def _require_host(url: str, name: str) -> None:
    """Fail in seconds when the data set's server is out of reach."""
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=3).close()
    except OSError as e:
        raise RuntimeError(f"cannot download {name}: {u.hostname} is unreachable ({e}). Offline, pass --data-dir "
                           "with the data set already downloaded there, or --dataset imagefolder --data-dir "
                           "pointing at an ImageFolder directory with train/ and test/") from e
