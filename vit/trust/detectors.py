"""Out-of-distribution detectors: `fit` on a model's training features, then `score` (higher = more
unlike the training photos), with a fitted state of plain tensors that a checkpoint can carry.

- `KNN`: distance to the k-th nearest L2-normalised training feature (Sun et al. 2022, "Out-of-
  distribution detection with deep nearest neighbors", Eq. 2-3). The chosen detector: on the
  committed checkpoints it beats the other two against the non-food set (vit.trust.ood, checkpoints/ood.json).
- `Mahalanobis`: the smallest class-conditional Mahalanobis distance under one shared covariance
  (Lee et al. 2018, Eq. 2), shrunk towards the identity because there are fewer photos than dimensions.
- `Energy`: -T logsumexp(logits / T) (Liu et al. 2020, Eq. 7), the baseline that needs no fitting.

pytorch-ood (0.4.0) implements all three, but its KNN keeps a scikit-learn NearestNeighbors object
(not a tensor a safetensors file can hold) and the package needs scipy at run time; the kNN below is a
single matmul over a few hundred stored features.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F


class Detector:
    """fit(features, labels, logits) once; score(features, logits) -> (B,) per request."""
    name: ClassVar[str]
    paper: ClassVar[str]
    needs: ClassVar[str]  # "features" or "logits"

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> "Detector":
        return self

    def score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        """The fitted tensors (saved with the `trust.` prefix in the checkpoint)."""
        return {}

    def params(self) -> dict:
        """The fitted hyper-parameters (saved in the checkpoint's `trust` record)."""
        return {}


@dataclass
class KNN(Detector):
    """Sun et al. 2022: the score is the Euclidean distance from the normalised feature z to its k-th
    nearest normalised training feature, sqrt(2 - 2 cos) with the k-th largest cosine similarity."""
    k: int = 1
    bank: torch.Tensor | None = field(default=None, repr=False)  # (N, D) unit rows
    name: ClassVar[str] = "knn"
    paper: ClassVar[str] = "Sun et al. 2022, Out-of-distribution detection with deep nearest neighbors (ICML)"
    needs: ClassVar[str] = "features"

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> "KNN":
        if not 1 <= self.k <= len(features):
            raise ValueError(f"k = {self.k}: needs 1 <= k <= {len(features)} training features")
        self.bank = F.normalize(features.float(), dim=1)
        return self

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        sims = F.normalize(features.float(), dim=1) @ self.bank.float().T  # (B, N) cosine similarities
        kth = sims.topk(self.k, dim=1).values[:, -1]  # (B,)
        return (2 - 2 * kth).clamp(min=0).sqrt()

    def state(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank.half()}  # unit vectors: fp16 keeps 3 decimals of every cosine

    def params(self) -> dict:
        return {"k": self.k}


@dataclass
class Mahalanobis(Detector):
    """Lee et al. 2018: min over classes c of (f - mu_c)^T S^-1 (f - mu_c), S the shared covariance
    of the training features about their class means, shrunk: (1 - s) S + s (tr S / D) I."""
    shrinkage: float = 0.1
    means: torch.Tensor | None = field(default=None, repr=False)  # (C, D)
    precision: torch.Tensor | None = field(default=None, repr=False)  # (D, D)
    name: ClassVar[str] = "mahalanobis"
    paper: ClassVar[str] = ("Lee et al. 2018, A simple unified framework for detecting out-of-distribution "
                            "samples and adversarial attacks (NeurIPS)")
    needs: ClassVar[str] = "features"

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> "Mahalanobis":
        f = features.double()
        classes = labels.unique()
        self.means = torch.stack([f[labels == c].mean(0) for c in classes])  # (C, D)
        centred = f - self.means[torch.searchsorted(classes, labels)]  # (N, D)
        cov = centred.T @ centred / len(f)  # (D, D)
        eye = torch.eye(len(cov), dtype=cov.dtype)
        cov = (1 - self.shrinkage) * cov + self.shrinkage * cov.trace() / len(cov) * eye
        self.precision = torch.linalg.inv(cov)
        return self

    def score(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        d = features.double()[:, None, :] - self.means.double()[None]  # (B, C, D)
        dist = torch.einsum("bcd,de,bce->bc", d, self.precision.double(), d)  # (B, C)
        return dist.min(1).values.float()

    def state(self) -> dict[str, torch.Tensor]:
        return {"means": self.means.float(), "precision": self.precision.float()}

    def params(self) -> dict:
        return {"shrinkage": self.shrinkage}


@dataclass
class Energy(Detector):
    """Liu et al. 2020: the free energy -T logsumexp(logits / T); low on training-like inputs."""
    temperature: float = 1.0
    name: ClassVar[str] = "energy"
    paper: ClassVar[str] = "Liu et al. 2020, Energy-based out-of-distribution detection (NeurIPS)"
    needs: ClassVar[str] = "logits"

    def score(self, features: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        return -self.temperature * torch.logsumexp(logits.float() / self.temperature, dim=1)

    def params(self) -> dict:
        return {"temperature": self.temperature}


DETECTORS: dict[str, type[Detector]] = {d.name: d for d in (KNN, Mahalanobis, Energy)}


def from_state(name: str, params: dict, state: dict[str, torch.Tensor]) -> Detector:
    """A fitted detector rebuilt from its checkpoint record; ValueError naming what is wrong."""
    if name not in DETECTORS:
        raise ValueError(f"detector = {name!r}: unknown; choose one of {sorted(DETECTORS)}")
    cls = DETECTORS[name]
    try:
        det = cls(**params)
    except TypeError as e:
        raise ValueError(f"detector parameters {params!r} do not fit {name}: {e}") from e
    for key in _STATE_KEYS[name]:
        if key not in state:
            raise ValueError(f"the {name} detector's tensor trust.{key} is missing")
        t = state[key]
        if not torch.isfinite(t.float()).all():
            raise ValueError(f"the {name} detector's tensor trust.{key} holds NaN or infinite values")
        setattr(det, key, t.float())
    if isinstance(det, KNN) and not 1 <= det.k <= len(det.bank):
        raise ValueError(f"k = {det.k} but the feature bank holds {len(det.bank)} features")
    return det


_STATE_KEYS = {"knn": ("bank",), "mahalanobis": ("means", "precision"), "energy": ()}


# ---------------------------------------------------------------- how well a score separates

def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """P(an out-of-distribution score > an in-distribution one), ties counting half (the Mann-Whitney U)."""
    diff = out_scores.double()[:, None] - in_scores.double()[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def threshold_at_tpr(in_scores: torch.Tensor, tpr: float) -> float:
    """The smallest threshold that accepts (score <= threshold) at least `tpr` of `in_scores`."""
    s = in_scores.double().sort().values
    index = min(len(s) - 1, max(0, int(torch.ceil(torch.tensor(tpr * len(s))).item()) - 1))
    return float(s[index])


def fpr_at_tpr(in_scores: torch.Tensor, out_scores: torch.Tensor, tpr: float = 0.95) -> float:
    """Share of out-of-distribution inputs accepted at the threshold that accepts `tpr` of the in-distribution."""
    return float((out_scores <= threshold_at_tpr(in_scores, tpr)).double().mean())
