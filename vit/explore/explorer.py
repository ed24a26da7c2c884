"""The test-set explorer's record: per model, the confusion matrix and every mistake on the test and
validation splits, and a 2-D map of the model's own features of every photo it has seen or been
measured on; precomputed once (`python -m vit.explore`) into checkpoints/explorer.json, beside ood.json.

    records = Records.read(Path("checkpoints/explorer.json"))  # the app reads it at start, never recomputes it
    records.view("effnet")       # /explorer's answer: classes, confusion, mistakes, points (or RecordError)

A record holds names, figures and coordinates, never a photo. The map: the L2-normalised penultimate
features of the training, validation and test photos and of the non-food images the gate is measured
against (vit.data.nonfood, named by their source), embedded in 2-D by t-SNE (scikit-learn, cosine,
perplexity 30, PCA start, seed 0): on all three models it keeps the most of each photo's neighbourhood
(trustworthiness 0.94-1.00 against PCA's 0.84-0.99) at no new dependency, paid once offline (12-51 s a
model); UMAP kept no more and costs 210 MB of packages and a JIT pause (docs/explore.md has the
measurements). PCA (numpy alone) is the fallback. Coordinates are scaled into [0, 1] and rounded to
3 decimals; points are stored column by column (148 KB for three models instead of 250 KB).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from vit.files import atomic_path
from vit.messages import Said

FORMAT = "foodvision-explorer/1"
FILE = "explorer.json"  # beside the checkpoints and ood.json
METHODS = ("tsne", "pca")
DEFAULT_METHOD = "tsne"
TSNE = {"perplexity": 30.0, "init": "pca", "metric": "cosine", "seed": 0}
DECIMALS = 3
SPLITS = ("train", "val", "test", "nonfood")  # the map's point sets; mistakes come from test and val
NONFOOD = "nonfood"


class RecordError(Said, LookupError):
    """A model without an explorer record (or an unreadable file), or a photo the explorer cannot open; the
    message is meant for the user, its code lets the app say it in the page's language (vit.messages)."""


NO_CHECKPOINTS = Said("no checkpoints", "explorer.no_checkpoints")  # why a served set without a folder has no records


def not_here(photo: str) -> RecordError:
    """A photo of the record that this server does not have (yet): the explorer cannot open it."""
    return RecordError(f"{photo} is not on this server (yet): nothing to open", "explorer.not_here", photo=photo)


def not_a_photo(photo: str) -> RecordError:
    """A point of the map that is one of the non-food images (vit.data.nonfood), not a photo of the data set."""
    return RecordError(f"{photo} is one of the non-food images the gate is measured against, not a photo of the "
                       "data set: nothing to open", "explorer.nonfood", photo=photo)


def no_point(index: int) -> RecordError:
    return RecordError(f"the map has no point {index}", "explorer.no_point", index=index)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities softmax(logits / T), as the app shows them (vit.trust)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def confusion(truth: Sequence[int], answer: Sequence[int], num_classes: int) -> list[list[int]]:
    """Rows: the true class; columns: the model's answer."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(truth, dtype=np.int64), np.asarray(answer, dtype=np.int64)), 1)
    return m.tolist()


def mistakes(photos: Sequence[str], split: str, truth: Sequence[int], probs: np.ndarray,
             class_names: list[str]) -> list[dict]:
    """Every photo whose answer is not its truth, the most confident mistake first, with the calibrated
    probability of the answer (and of the truth)."""
    answer = probs.argmax(1)
    rows = [{"photo": n, "split": split, "truth": class_names[t], "answer": class_names[a],
             "probability": round(float(p[a]), 4), "truth_probability": round(float(p[t]), 4)}
            for n, t, a, p in zip(photos, truth, answer, probs, strict=True) if a != t]
    return sorted(rows, key=lambda r: (-r["probability"], r["photo"]))


def scale(y: np.ndarray) -> np.ndarray:
    """Into [0, 1] on both axes with one scale factor (the aspect ratio kept)."""
    y = np.asarray(y, dtype=np.float64)
    lo, span = y.min(0), float((y.max(0) - y.min(0)).max()) or 1.0
    return (y - lo) / span


def embed(x: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """(N, D) unit-norm features -> (N, 2) in [0, 1]: t-SNE (scikit-learn) or PCA (numpy, deterministic,
    with a fixed sign per axis)."""
    x = np.asarray(x, dtype=np.float32)
    if method == "pca":
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        axes = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(1)])[:, None]
        return scale(centred @ axes.T)
    if method == "tsne":
        from sklearn.manifold import TSNE  # lazy: scikit-learn is for this offline step only, never the app

        p = tsne_params(len(x))
        return scale(TSNE(2, perplexity=p["perplexity"], init=p["init"], metric=p["metric"],
                          random_state=p["seed"]).fit_transform(x))
    raise ValueError(f"unknown map method {method!r}; choose one of {METHODS}")


def tsne_params(n: int) -> dict:
    """t-SNE's parameters for n points (perplexity must stay below n)."""
    return {**TSNE, "perplexity": min(TSNE["perplexity"], (n - 1) / 3)}


def trustworthiness(x: np.ndarray, xy: np.ndarray, k: int = 10) -> float:
    """How well the map keeps each photo's neighbourhood: scikit-learn's trustworthiness (Venna & Kaski 2001;
    1: every photo's k nearest on the map are among its k nearest in feature space), cosine in feature space."""
    from sklearn.manifold import trustworthiness as score  # lazy: scikit-learn is for this offline step only

    return round(float(score(x, xy, n_neighbors=max(1, min(k, len(x) // 2 - 1)), metric="cosine")), 4)


def map_record(method: str, n: int) -> dict:
    """What reproduces a map: the method, its parameters and the library version that drew it."""
    if method == "tsne":
        import sklearn  # lazy: scikit-learn is for this offline step only, never the app

        return {"method": "tsne", **tsne_params(n), "sklearn": sklearn.__version__}
    return {"method": "pca", "centred": True}


@dataclass
class Split:
    """One split's photos (names), true labels (class indices; -1 for non-food) and logits, features."""
    name: str
    photos: list[str]
    labels: np.ndarray
    logits: np.ndarray
    features: np.ndarray


def build(model: str, class_names: list[str], splits: Sequence[Split], temperature: float, *,
          method: str = DEFAULT_METHOD, extra: dict | None = None) -> dict:
    """One model's record from its splits ("train", "val", "test", "nonfood"): the test and validation
    confusion and mistakes (probabilities calibrated by `temperature`) and the 2-D map of every point."""
    x = np.concatenate([_unit(s.features) for s in splits])
    xy = embed(x, method)
    record = {"model": model, "classes": list(class_names), "temperature": temperature, **(extra or {})}
    points = {"photo": [], "split": [], "label": [], "answer": [], "x": [], "y": []}
    start = 0
    for s in splits:
        probs = softmax(s.logits, temperature)
        answer = probs.argmax(1)
        if s.name in ("test", "val"):
            record[s.name] = {"n": len(s.photos), "accuracy": round(float((answer == s.labels).mean()), 6),
                              "confusion": confusion(s.labels, answer, len(class_names)),
                              "mistakes": mistakes(s.photos, s.name, s.labels, probs, class_names)}
        points["photo"] += list(s.photos)
        points["split"] += [s.name] * len(s.photos)
        points["label"] += [int(v) for v in s.labels]
        points["answer"] += [int(v) for v in answer]
        points["x"] += [round(float(v), DECIMALS) for v in xy[start:start + len(s.photos), 0]]
        points["y"] += [round(float(v), DECIMALS) for v in xy[start:start + len(s.photos), 1]]
        start += len(s.photos)
    kept = {method: trustworthiness(x, xy)} | ({"pca": trustworthiness(x, embed(x, "pca"))} if method != "pca" else {})
    record["map"] = {**map_record(method, len(xy)), "features": "own penultimate, L2-normalised",
                     "trustworthiness": kept, "trustworthiness_k": 10}
    record["points"] = points  # column by column; labels and answers as class indices, -1: no class (non-food)
    return record


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def write(records: dict[str, dict], path: str | os.PathLike) -> Path:
    """Every model's record in one file: {"format", "models": {id: record}}, compact, keys sorted."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "models": dict(sorted(records.items()))},
                                  separators=(",", ":"), sort_keys=True) + "\n")
    return path


class Records:
    """The explorer file of a checkpoint folder, read once; what each model's views and /explorer show."""

    def __init__(self, models: dict[str, dict], note: Said | None = None) -> None:
        self.models, self.note = models, note  # `note`: why there are none (English as str(), coded for i18n)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Records":
        """The records in `path`; none (and why, for the page) when it is missing or unreadable."""
        path = Path(path)
        if not path.is_file():
            folder = f"{path.parent.name}/"
            return cls({}, Said(f"no explorer records in {folder} ({FILE}; python -m vit.explore writes it)",
                                "explorer.no_file", folder=folder, file=FILE, how="python -m vit.explore"))
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            return cls({}, Said(f"{path} is unreadable ({e})", "explorer.unreadable", path=str(path), detail=str(e)))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = repr(data.get("format") if isinstance(data, dict) else None)
            return cls({}, Said(f"{path}: format {found}, this app reads {FORMAT}", "explorer.format", path=str(path),
                                found=found, format=FORMAT))
        return cls(data.get("models", {}))

    def get(self, model: str) -> dict:
        """The model's record, or RecordError saying why there is none."""
        if model not in self.models:
            why = self.note or Said(f"python -m vit.explore checkpoints/{model}.safetensors adds one",
                                    "explorer.adds_one", how=f"python -m vit.explore checkpoints/{model}.safetensors")
            raise RecordError(f"no explorer record for {model!r}: {why}", "explorer.no_record", model=model, why=why)
        return self.models[model]

    def view(self, model: str) -> dict:
        """/explorer's answer: classes, the test split's confusion matrix (rows: truth, columns: answer), the
        mistakes of the test and validation splits, and one object per point of the map; then the rest."""
        r = self.get(model)
        return {"classes": r["classes"], "confusion": r["test"]["confusion"],
                "mistakes": r["test"]["mistakes"] + r["val"]["mistakes"], "points": points(r),
                "map": r["map"], "test": {k: r["test"][k] for k in ("n", "accuracy")},
                "val": {k: r["val"][k] for k in ("n", "accuracy", "confusion")}}


def points(record: dict) -> list[dict]:
    """A record's points, one object each: photo, split, label, answer (class names; None for no class), x, y."""
    classes, p = record["classes"], record["points"]

    def name(i: int) -> str | None:
        return classes[i] if i >= 0 else None

    return [{"photo": photo, "split": split, "label": name(label), "answer": name(answer), "x": x, "y": y}
            for photo, split, label, answer, x, y in zip(p["photo"], p["split"], p["label"], p["answer"], p["x"],
                                                          p["y"], strict=True)]
