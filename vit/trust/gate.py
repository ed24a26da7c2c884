"""A checkpoint's gate: what it says about each request, fitted once and carried in the checkpoint file.

    gate = load_gate(ckpt)                 # None when the checkpoint has none; GateError when it is corrupt
    probs, trust = gate.assess(logits, features)   # calibrated probabilities and the request's `Trust`

Stored as the safetensors tensors `trust.<name>` (the detector's fitted state) and the metadata record
`trust` (see `Gate.record`): detector and paper, its parameters, threshold and the TPR that set it,
temperature, conformal qhat / alpha / method, feature dimension and the photo counts it was fitted on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from vit.models.checkpoint import Checkpoint, CheckpointError, read_extra
from vit.trust.conformal import METHODS, SplitConformal
from vit.trust.detectors import DETECTORS, Detector, from_state

RECORD = "trust"
VERSION = 1
OWN = "own"  # the gate reads the model's own penultimate features (vit.models.features)
LITE0 = "lite0-imagenet"  # ... or the shared ImageNet EfficientNet-Lite0's (vit.trust.backbone)
FEATURE_SOURCES = (OWN, LITE0)


class GateError(CheckpointError):
    """A checkpoint whose gate is damaged or inconsistent; the model itself is still served."""


@dataclass(frozen=True)
class Trust:
    """What one request says about itself."""
    in_distribution: bool | None  # None: the model has no (usable) gate
    ood_score: float | None  # the detector's score; above ood_threshold = out of distribution
    ood_threshold: float | None
    prediction_set: list[str] = field(default_factory=list)  # the conformal set, most probable first
    temperature: float = 1.0  # the probabilities are softmax(logits / temperature)
    detector: str | None = None  # e.g. "knn"
    note: str | None = None  # why there is no gate, when there is none

    def to_dict(self) -> dict:
        return {"in_distribution": self.in_distribution, "ood_score": self.ood_score,
                "ood_threshold": self.ood_threshold, "prediction_set": list(self.prediction_set),
                "temperature": self.temperature, "detector": self.detector, "note": self.note}


@dataclass
class Gate:
    """An OOD detector with its threshold, a temperature and a conformal predictor, for one model."""
    detector: Detector
    threshold: float  # accept when score <= threshold
    tpr: float  # the share of validation photos the threshold accepts (its target)
    temperature: float
    conformal: SplitConformal
    feature_dim: int
    fitted_on: dict  # {"train": n, "val": n, "data_dirs": [...], "val_fraction": f}
    measured: dict = field(default_factory=dict)  # validation figures (ECE, NLL, accepted share, ...)
    features: str = OWN  # one of FEATURE_SOURCES: which features the detector reads

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities softmax(logits / T), (B, C)."""
        return (logits.float() / self.temperature).softmax(-1)

    def assess(self, logits: torch.Tensor, features: torch.Tensor, class_names: list[str]
               ) -> tuple[torch.Tensor, list[Trust]]:
        """Calibrated probabilities (B, C) and one `Trust` per row of a batch."""
        if features.shape[-1] != self.feature_dim:
            raise GateError(f"the gate expects {self.feature_dim}-dimensional features, the model gives "
                            f"{features.shape[-1]}")
        probs = self.probs(logits)
        score = self.detector.score(features, logits)
        sets = self.conformal.names(probs, class_names)
        return probs, [Trust(bool(s <= self.threshold), float(s), self.threshold, names, self.temperature,
                             self.detector.name) for s, names in zip(score, sets)]

    def record(self) -> dict:
        """The checkpoint's `trust` metadata record."""
        return {"version": VERSION, "features": self.features, "detector": self.detector.name,
                "paper": self.detector.paper,
                "params": self.detector.params(), "threshold": self.threshold, "tpr": self.tpr,
                "temperature": self.temperature, "feature_dim": self.feature_dim,
                "conformal": {"method": self.conformal.method, "alpha": self.conformal.alpha,
                              "qhat": self.conformal.qhat, "n_calibration": self.conformal.n_calibration},
                "fitted_on": self.fitted_on, "measured": self.measured}

    def tensors(self) -> dict[str, torch.Tensor]:
        return self.detector.state()

    @classmethod
    def from_record(cls, record: dict, tensors: dict[str, torch.Tensor]) -> "Gate":
        """Rebuilt and validated; ValueError naming the first bad field."""
        if not isinstance(record, dict):
            raise ValueError("the record is not a JSON object")
        need = ("version", "detector", "params", "threshold", "tpr", "temperature", "feature_dim", "conformal")
        missing = [k for k in need if k not in record]
        if missing:
            raise ValueError(f"fields {missing} are missing")
        if record["version"] != VERSION:
            raise ValueError(f"version = {record['version']!r}: this code reads version {VERSION}")
        if record.get("features", OWN) not in FEATURE_SOURCES:
            raise ValueError(f"features = {record['features']!r}: unknown; choose one of {FEATURE_SOURCES}")
        if record["detector"] not in DETECTORS:
            raise ValueError(f"detector = {record['detector']!r}: unknown; choose one of {sorted(DETECTORS)}")
        _number(record, "threshold")
        _number(record, "temperature", positive=True)
        _number(record, "tpr", positive=True)
        dim = record["feature_dim"]
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"feature_dim = {dim!r}: expected a positive integer")
        c = record["conformal"]
        if not isinstance(c, dict) or c.get("method") not in METHODS or not isinstance(c.get("qhat"), (int, float)) \
                or not 0 < c.get("alpha", -1) < 1:
            raise ValueError(f"conformal = {c!r}: expected method in {METHODS}, a number qhat, alpha in (0, 1)")
        detector = from_state(record["detector"], record["params"] if isinstance(record["params"], dict) else {},
                              tensors)
        for t in tensors.values():
            if t.ndim == 2 and record["detector"] != "energy" and t.shape[-1] != dim:
                raise ValueError(f"a stored tensor is {tuple(t.shape)}, not {dim}-dimensional as feature_dim says")
        return cls(detector, float(record["threshold"]), float(record["tpr"]), float(record["temperature"]),
                   SplitConformal(float(c["qhat"]), float(c["alpha"]), c["method"], int(c.get("n_calibration", 0))),
                   dim, record.get("fitted_on", {}), record.get("measured", {}), record.get("features", OWN))


def _number(record: dict, key: str, positive: bool = False) -> None:
    v = record[key]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{key} = {v!r}: expected a finite{' positive' if positive else ''} number")


def load_gate(ckpt: Checkpoint) -> Gate | None:
    """The checkpoint's gate; None when it has none; GateError (naming the file and the problem) when
    its record or tensors are damaged."""
    record = ckpt.meta.get(RECORD)
    if record is None:
        return None
    try:
        return Gate.from_record(record, read_extra(ckpt.path))
    except ValueError as e:
        raise GateError(f"{ckpt.path}: bad gate (the `{RECORD}` record or its trust.* tensors): {e}") from e


NO_GATE = "this model has no out-of-distribution gate (python -m vit.trust.fit adds one)"  # Trust.note without one
DAMAGED = "this model's gate is damaged and not used"  # Trust.note's start for a gate that would not load


def no_gate(note: str) -> Trust:
    """A request's Trust when the model has no usable gate: no verdict, no calibrated set, T = 1."""
    return Trust(None, None, None, [], 1.0, None, note)
