"""Nearest training photos: each model's own penultimate features of its training photos (the bank), and
the k photos closest to a request by cosine distance, with their labels and what each distance means.

    bank = Bank.build(features, names, labels, class_names, weights_sha256=...)   # (N, D) raw features
    bank.with_reference(val_features).save(bank_path(ckpt.path))   # checkpoints/banks/NAME.safetensors
    bank, why_not = load_bank(ckpt.path)                 # None and the reason when it has none
    (hits,) = bank.query(request_features)               # [Neighbour(photo, label, distance, percentile)] * K

An example-based explanation of an answer: which training photos does this model think the photo
resembles? The features are the model's own (vit.models.features: what its classifier reads), the
photos exactly the gate's training photos (vit.trust.fit.samples: the trainer's hash split), named by
their path relative to the data root ("pizza_steak_sushi/train/pizza/12345.jpg": file names repeat
across the two data folders), labelled with their true class. Rows are L2-normalised and stored in
fp16 (409 x 1280 for EfficientNet-Lite0: 1.07 MB), so a cosine distance 1 - <a, b> / (|a| |b|) is one
product. A distance alone means little (the median held-out photo's nearest training photo lies
0.0017 away for the hybrid ViT, 0.45 for EfficientNet: docs/explore.md), so the bank keeps the
validation photos' nearest-neighbour distances and reads a distance as a percentile among them.

The bank lives in a file of its own in `banks/` beside the checkpoint (not `NAME.bank.safetensors`:
every `*.safetensors` of a checkpoint folder is served as a model), so adding one leaves the checkpoint
and its ONNX exports as they were; it records the digest of the weights it was computed from and is
refused when they differ. Written at the end of `vit.train` and by `python -m vit.explore`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from vit.data.images import open_image
from vit.data.preprocess import eval_transform
from vit.files import atomic_path
from vit.messages import Said
from vit.models.checkpoint import CheckpointError, read_meta, weights_sha256
from vit.runtime.engines import TorchEngine

log = logging.getLogger(__name__)

FORMAT = "foodvision-bank/1"
FOLDER = "banks"  # beside the checkpoints: not a *.safetensors of the checkpoint folder itself
K = 5  # neighbours shown; k = 5 cosine majority agrees with the answer on >= 95.8 % of held-out photos
FAR = 95.0  # a nearest distance above this percentile of the validation photos' is "farther than usual"
# |cosine distance of a photo to its own fp16 row| <= 2**-11 (fp16's unit roundoff: 1 - sum u_i^2 (1 + d_i),
# |d_i| <= 2**-11). Not an identity test: two different training photos of the hybrid ViT lie 3.5e-4 apart.
SELF_TOLERANCE = 2.0 ** -11


class BankError(ValueError):
    """A bank file that is unreadable, of another format, or made from other weights."""


@dataclass(frozen=True)
class Neighbour:
    """One training photo near a request."""
    photo: str  # relative to the data root, e.g. "pizza_steak_sushi/train/pizza/12345.jpg"
    label: str  # its true class
    distance: float  # cosine distance to the request, 0 (same direction) to 2
    percentile: float | None = None  # share (0-100) of validation photos whose nearest training photo is nearer

    def to_dict(self) -> dict:
        return {"photo": self.photo, "label": self.label, "distance": round(self.distance, 4),
                "percentile": None if self.percentile is None else round(self.percentile, 1)}


def bank_path(ckpt_path: str | os.PathLike) -> Path:
    """checkpoints/effnet.safetensors -> checkpoints/banks/effnet.safetensors."""
    ckpt_path = Path(ckpt_path)
    return ckpt_path.parent / FOLDER / ckpt_path.name


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (cosine geometry), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def percentile_of(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each value, the share (0-100) of `reference` values at or below it."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    return 100.0 * np.searchsorted(ref, np.asarray(values, dtype=np.float64), side="right") / len(ref)


def vote(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(Q, k) neighbour labels, nearest first -> (Q,) the majority label; a tie goes to the tied class
    whose neighbour is nearest."""
    labels = np.atleast_2d(labels)
    out = np.empty(len(labels), dtype=np.int64)
    for q, row in enumerate(labels):
        counts = np.bincount(row, minlength=num_classes)
        tied = set(np.flatnonzero(counts == counts.max()).tolist())
        out[q] = next(int(label) for label in row if label in tied)
    return out


@dataclass
class Bank:
    """Unit-norm penultimate features of a model's training photos, with their names and true labels."""
    features: np.ndarray  # (N, D) float32 in memory (fp16 on disk), unit rows
    labels: np.ndarray  # (N,) class indices
    photos: list[str]  # relative to the data root
    class_names: list[str]
    meta: dict  # weights_sha256, split, val_fraction, data_dirs, reference (validation nearest distances)

    @classmethod
    def build(cls, features: np.ndarray, photos: Sequence[str], labels: Sequence[int], class_names: list[str],
              **meta) -> "Bank":
        """From raw (N, D) features; rounded to fp16 here as on disk, so a fresh bank and a loaded one answer alike."""
        if not len(features) == len(photos) == len(labels):
            raise ValueError(f"{len(features)} feature rows for {len(photos)} photos and {len(labels)} labels")
        unit = normalise(features).astype(np.float16).astype(np.float32)
        return cls(unit, np.asarray(labels, dtype=np.int64), list(photos), list(class_names), {"split": "train", **meta})

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        """fp16 safetensors: `features` (N, D) and `labels` (N,); photos, class names and the record in its header."""
        header = {"format": FORMAT, "photos": json.dumps(self.photos, separators=(",", ":")),
                  "class_names": json.dumps(self.class_names), "meta": json.dumps(self.meta)}
        with atomic_path(path) as tmp:
            save_file({"features": self.features.astype(np.float16), "labels": self.labels.astype(np.uint8)},
                      str(tmp), metadata=header)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Bank":
        """BankError naming the file when it is unreadable or not a bank of this format."""
        try:
            with safe_open(str(path), framework="np") as f:
                header = f.metadata() or {}
                if header.get("format") != FORMAT:
                    raise BankError(f"{path}: format {header.get('format')!r}, this code reads {FORMAT}")
                features, labels = f.get_tensor("features").astype(np.float32), f.get_tensor("labels").astype(np.int64)
            photos, classes, meta = (json.loads(header[k]) for k in ("photos", "class_names", "meta"))
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
            raise BankError(f"{path}: not a readable bank ({type(e).__name__}: {e})") from e
        if not len(photos) == len(labels) == len(features) or (len(labels) and labels.max() >= len(classes)):
            raise BankError(f"{path}: {len(features)} rows, {len(labels)} labels, {len(photos)} photos, "
                            f"{len(classes)} classes")
        return cls(features, labels, photos, classes, meta)

    def with_reference(self, val_features: np.ndarray) -> "Bank":
        """Keep the validation photos' nearest-training-photo distances (sorted), so that a request's
        distance reads as a percentile among held-back food photos (`percentiles`)."""
        _, d = self.nearest(val_features, 1)
        self.meta["reference"] = {"split": "val", "nearest": sorted(round(float(v), 6) for v in d[:, 0])}
        return self

    def percentiles(self, distances: np.ndarray) -> np.ndarray | None:
        """Each distance's percentile among the validation photos' nearest distances; None without them."""
        ref = self.meta.get("reference", {}).get("nearest")
        return percentile_of(distances, np.array(ref)) if ref else None

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(Q, D) raw features -> (Q, N) cosine distances to every bank photo."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[-1] != self.dim:
            raise ValueError(f"the bank holds {self.dim}-dimensional features, the model gives {queries.shape[-1]}")
        q = normalise(queries)
        if len(q) == 1:  # a request: einsum stays on this thread; BLAS's gemv wakes its pool, which on the loaded
            return 1.0 - np.einsum("nd,d->n", self.features, q[0])[None]  # 2-core host took a p90 from 0.3 to 13 ms
        return 1.0 - q @ self.features.T  # a batch (offline): BLAS

    def nearest(self, queries: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
        """Indices (Q, k) and distances (Q, k) of the k nearest bank photos, nearest first."""
        d = self.distances(queries)
        k = min(k, d.shape[1])
        idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(d, idx, 1)
        order = np.argsort(part, axis=1, kind="stable")
        return np.take_along_axis(idx, order, 1), np.maximum(np.take_along_axis(part, order, 1), 0.0)

    def query(self, queries: np.ndarray | torch.Tensor, k: int = K) -> list[list[Neighbour]]:
        """Each query's k nearest training photos, nearest first, each distance with its percentile."""
        if isinstance(queries, torch.Tensor):
            queries = queries.detach().float().cpu().numpy()
        idx, dist = self.nearest(queries, k)
        pct = self.percentiles(dist)
        return [[Neighbour(self.photos[i], self.class_names[self.labels[i]], float(d),
                           None if pct is None else float(pct[q, j]))
                 for j, (i, d) in enumerate(zip(row_i, row_d, strict=True))]
                for q, (row_i, row_d) in enumerate(zip(idx, dist, strict=True))]


def load_bank(ckpt_path: str | os.PathLike, class_names: list[str] | None = None) -> tuple[Bank | None, Said | None]:
    """The checkpoint's bank and None, or None and why there is none (a note for the page: English as str(),
    coded for its language, vit.messages): no file, a damaged one, or one made from other weights or classes
    (logged too: the model is served all the same)."""
    path, how = bank_path(ckpt_path), "python -m vit.explore"
    if not path.is_file():
        return None, Said(f"this model has no bank of training photos ({how} adds one)", "bank.none", how=how)
    try:
        bank = Bank.load(path)
        digest = weights_sha256(ckpt_path)
    except (BankError, CheckpointError) as e:
        log.warning("%s", e)
        return None, Said(f"this model's bank of training photos is damaged and not used ({e})", "bank.damaged",
                          detail=str(e))
    if bank.meta.get("weights_sha256") != digest or (class_names is not None and bank.class_names != class_names):
        why = f"{path} was made from other weights or classes than {Path(ckpt_path).name}; {how} makes it anew"
        log.warning("%s", why)
        return None, Said(f"this model's bank of training photos is stale and not used ({why})", "bank.stale",
                          bank=str(path), checkpoint=Path(ckpt_path).name, how=how)
    return bank, None


def photo_name(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """A photo's name: its path relative to the data root, with forward slashes."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError as e:
        raise ValueError(f"{path} is not under the data root {root}; pass the folder holding the data dirs") from e


def data_root(data_dirs: Sequence[str | os.PathLike]) -> Path:
    """The folder the photos are named from: the one holding the data dirs (../shared/data)."""
    parents = {Path(d).resolve().parent for d in data_dirs}
    if len(parents) != 1:
        raise ValueError(f"the data dirs {list(map(str, data_dirs))} lie in different folders; name one root")
    return parents.pop()


@torch.inference_mode()
def features_of(engine, images: Sequence, preprocessing: dict, *, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and features (N, D) of photo paths or PIL images through `engine.forward_features`
    (vit.runtime.engines: ONNX Runtime's plain graph gives both in one run), each prepared as a request is."""
    transform = eval_transform(preprocessing)
    logits, features = [], []
    for i in range(0, len(images), batch_size):
        x = torch.stack([transform(open_image(im)) for im in images[i:i + batch_size]])
        lo, fe = engine.forward_features(x)
        logits.append(lo.float().numpy())
        features.append(fe.float().numpy())
    return np.concatenate(logits), np.concatenate(features)


def build_bank(engine, train: Sequence, val: Sequence, root: str | os.PathLike, ckpt_path: str | os.PathLike,
               class_names: list[str], preprocessing: dict, where: dict | None = None,
               features: tuple[np.ndarray, np.ndarray] | None = None) -> Bank:
    """The bank of `train` (vit.data.datasets.Sample) with the `val` photos' reference distances, from
    `engine`'s features (or the (train, val) `features` already computed)."""
    train_f, val_f = features or (features_of(engine, [s.path for s in train], preprocessing)[1],
                                  features_of(engine, [s.path for s in val], preprocessing)[1])
    return Bank.build(train_f, [photo_name(s.path, root) for s in train], [s.label for s in train], class_names,
                      weights_sha256=weights_sha256(ckpt_path), model=Path(ckpt_path).stem,
                      **(where or {})).with_reference(val_f)


def write_after_training(ckpt_path: str | os.PathLike, model: torch.nn.Module, train: list, val: list,
                         data_dirs: list[str], val_fraction: float) -> Path | None:
    """vit.train's last step: the new checkpoint's bank from the run's own train / validation photos, on
    PyTorch. Never fails the run: on any error the checkpoint stays without one (served all the same)
    and the log says why."""
    try:
        meta = read_meta(ckpt_path)
        bank = build_bank(TorchEngine(model.eval()), train, val, data_root(data_dirs), ckpt_path, meta["class_names"],
                          meta["preprocessing"], {"data_dirs": list(data_dirs), "val_fraction": val_fraction})
        path = bank.save(bank_path(ckpt_path))
        log.info("wrote %s: %d training photos x %d features", path, len(bank.photos), bank.dim)
        return path
    except Exception as e:  # noqa: BLE001 - the weights are written; the bank is an extra
        log.warning("%s: written without a bank of training photos (%s: %s); python -m vit.explore adds one",
                    ckpt_path, type(e).__name__, e)
        return None
