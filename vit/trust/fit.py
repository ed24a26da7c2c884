"""Fit a checkpoint's gate: the detector on its own TRAINING photos, the threshold, temperature and
conformal quantile on its VALIDATION photos (the trainer's hash split, vit.data.datasets.split_train_val, so
the photos are the ones training held out); the test split chooses nothing.

    gate, report = fit_gate(ckpt, data_dirs)         # vit.trust.fit and vit.train call this
    fit_file("checkpoints/effnet.safetensors", data_dirs)   # ... and write it into the file
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from vit.data.datasets import split_train_val, train_samples
from vit.data.images import open_image
from vit.models import checkpoint, factory
from vit.models.checkpoint import Checkpoint, CheckpointError
from vit.models.features import extract
from vit.trust import backbone, calibration
from vit.trust.conformal import SplitConformal
from vit.trust.detectors import DETECTORS, KNN, Detector, threshold_at_tpr
from vit.trust.gate import FEATURE_SOURCES, LITE0, OWN, RECORD, Gate

log = logging.getLogger(__name__)

DETECTOR = "knn"  # kNN beat Mahalanobis and energy on every committed model (vit.trust.ood; see detectors.py)
K = 10  # on the ImageNet features, k = 5..20 tie (AUROC 0.999-1.000 on the selection half); the middle
FEATURES = LITE0  # the shared ImageNet Lite0 features (vit.trust.backbone says why); OWN: the model's
TPR = 0.975  # of the validation photos accepted: headroom over the 95 % bar on unseen food
ALPHA = 0.1  # 90 % prediction sets
VAL_FRACTION = 0.15  # the trainer's default (vit.train --val-fraction)


@dataclass
class Split:
    """One split's logits (N, C), penultimate features (N, D) and labels (N,)."""
    logits: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(cls, ckpt: Checkpoint, samples: list, features: str = OWN) -> "Split":
        """`samples` through the checkpoint's model; `features` LITE0: the gate's features from the
        shared ImageNet backbone instead of the model's own."""
        split = cls(*extract(ckpt.model, samples, ckpt.meta["preprocessing"]))
        if features == LITE0:
            split.features = backbone_features([s.path for s in samples])
        return split

    @classmethod
    def features_only(cls, samples: list, features: str) -> "Split":
        """The backbone's features and the labels, no model pass (the training photos of a LITE0 gate)."""
        return cls(torch.empty(len(samples), 0), backbone_features([s.path for s in samples]),
                   torch.tensor([s.label for s in samples]))


_BACKBONE_CACHE: dict[str, torch.Tensor] = {}  # photo path -> its features: one pass per photo per process


def backbone_features(images: list, batch_size: int = 32) -> torch.Tensor:
    """(N, 1280) ImageNet Lite0 features of photo paths or PIL images, prepared as a request is."""
    net = backbone.get("torch")
    todo = [im for im in images if not isinstance(im, (str, Path)) or str(im) not in _BACKBONE_CACHE]
    done = [net.images([open_image(im) for im in todo[i:i + batch_size]]) for i in range(0, len(todo), batch_size)]
    fresh = iter(torch.cat(done) if done else [])
    out = []
    for im in images:
        key = str(im) if isinstance(im, (str, Path)) else None
        if key is not None and key in _BACKBONE_CACHE:
            out.append(_BACKBONE_CACHE[key])
        else:
            out.append(next(fresh))
            if key is not None:
                _BACKBONE_CACHE[key] = out[-1]
    return torch.stack(out)


def samples(ckpt: Checkpoint, data_dirs: list[str | os.PathLike] | None = None,
            val_fraction: float | None = None) -> tuple[list, list, dict]:
    """The checkpoint's training and validation photos (vit.data.datasets.Sample): its recipe's data dirs and
    split unless told; and where they came from."""
    recipe = ckpt.meta.get("recipe", {})
    dirs = [Path(d) for d in (data_dirs or recipe.get("data_dirs") or [])]
    if not dirs:
        raise ValueError(f"{ckpt.path.name}: no data dirs given and none in its recipe")
    fraction = val_fraction if val_fraction is not None else recipe.get("val_fraction", VAL_FRACTION)
    pooled, classes = train_samples(dirs)
    if classes != ckpt.class_names:
        raise ValueError(f"{', '.join(map(str, dirs))}: classes {classes}, the checkpoint has {ckpt.class_names}")
    train, val = split_train_val(pooled, fraction)
    if len(val) < len(classes):
        raise ValueError(f"validation split of {len(val)} photos: too small to calibrate (val fraction {fraction})")
    return train, val, {"train": len(train), "val": len(val), "val_fraction": fraction,
                        "data_dirs": [str(d) for d in dirs]}


def splits(ckpt: Checkpoint, data_dirs: list[str | os.PathLike] | None = None,
           val_fraction: float | None = None, features: str = OWN,
           chosen: tuple[list, list, dict] | None = None) -> tuple[Split, Split, dict]:
    """`samples` (or the `chosen` ones: vit.train's own split) run through the model (the gate's
    `features` beside its logits)."""
    train, val, where = chosen or samples(ckpt, data_dirs, val_fraction)
    log.info("%s: features of %d train and %d validation photos", ckpt.path.name, len(train), len(val))
    fitted = Split.features_only(train, features) if features == LITE0 else Split.of(ckpt, train, features)
    return fitted, Split.of(ckpt, val, features), where


def make_detector(name: str = DETECTOR, train: Split | None = None, *, k: int = K) -> Detector:
    """A detector fitted on the training split (k capped at the number of training photos)."""
    det = KNN(k=min(k, len(train.features))) if name == "knn" else DETECTORS[name]()
    return det.fit(train.features, train.labels)


def fit_gate(ckpt: Checkpoint, data_dirs: list | None = None, *, features: str = FEATURES, detector: str = DETECTOR,
             k: int = K, tpr: float = TPR, alpha: float = ALPHA, method: str = "lac",
             val_fraction: float | None = None, chosen: tuple[list, list, dict] | None = None) -> Gate:
    """The gate of `ckpt` (see the module docstring); `chosen`: (train samples, validation samples,
    their record) when the caller has them (vit.train)."""
    train, val, where = splits(ckpt, data_dirs, val_fraction, features, chosen)
    det = make_detector(detector, train, k=k)
    val_scores = det.score(val.features, val.logits)
    threshold = threshold_at_tpr(val_scores, tpr)
    temperature = calibration.fit_temperature(val.logits, val.labels)
    probs = (val.logits / temperature).softmax(-1)
    conformal = SplitConformal.calibrate(probs, val.labels, alpha, method)
    measured = {"val_accepted": float((val_scores <= threshold).float().mean()),
                "val_ece_before": calibration.ece(val.logits.softmax(-1), val.labels),
                "val_ece_after": calibration.ece(probs, val.labels),
                "val_nll_before": calibration.nll(val.logits, val.labels),
                "val_nll_after": calibration.nll(val.logits, val.labels, temperature),
                "ece_bins": calibration.ECE_BINS,  # the reliability diagram's bars (vit.app.ui draws them)
                "val_reliability_before": calibration.reliability(val.logits.softmax(-1), val.labels),
                "val_reliability_after": calibration.reliability(probs, val.labels)}
    gate = Gate(det, threshold, tpr, temperature, conformal, int(train.features.shape[1]), where, measured, features)
    log.info("%s: %s gate on %s features, threshold %.4f (%.1f%% of validation accepted), T = %.3f, qhat = %.3f",
             ckpt.path.name, det.name, features, threshold, 100 * measured["val_accepted"], temperature, conformal.qhat)
    return gate


def write_gate(path: str | os.PathLike, gate: Gate) -> Path:
    """Add or replace the gate in the checkpoint file at `path` (weights kept byte for byte)."""
    meta = {**checkpoint.read_meta(path), RECORD: gate.record()}
    return checkpoint.rewrite(path, meta, gate.tensors())


def fit_file(path: str | os.PathLike, data_dirs: list | None = None, **kwargs) -> Gate:
    """fit_gate on the checkpoint at `path`, written into it."""
    ckpt = factory.load(path)
    gate = fit_gate(ckpt, data_dirs, **kwargs)
    write_gate(path, gate)
    return gate


def fit_after_training(path: str | os.PathLike, train: list, val: list, record: dict) -> Gate | None:
    """vit.train's last step: the new checkpoint's gate from the run's own train / validation samples.
    Never fails the run: without a validation split, or on any error, the checkpoint stays without a
    gate (served all the same) and the log says why."""
    if len(val) < 2:
        log.warning("%s: no gate (a validation split of %d photos is too small to calibrate)", path, len(val))
        return None
    try:
        ckpt = factory.load(path)
        gate = fit_gate(ckpt, chosen=(train, val, {"train": len(train), "val": len(val), **record}))
        write_gate(path, gate)
        return gate
    except Exception as e:  # noqa: BLE001 - the weights are written; the gate is an extra
        log.warning("%s: written without a gate (%s: %s); python -m vit.trust.fit adds one", path,
                    type(e).__name__, e)
        return None

# ---------------------------------------------------------------- python -m vit.trust.fit


CLI_DOC = """Fit a checkpoint's gate (OOD detector, temperature, conformal sets) and write it into the file.

    python -m vit.trust.fit checkpoints/effnet.safetensors [more.safetensors ...] \
        [--data-dir DIR --data-dir DIR] [--features lite0-imagenet|own] [--tpr 0.975] [--alpha 0.1] [--k 10]

The detector is fitted on the checkpoint's TRAINING photos, its threshold, the temperature and the
conformal quantile on its VALIDATION photos: the trainer's 15 % hash split of the pooled train/
folders of --data-dir (default: the data dirs in the checkpoint's recipe). The file is rewritten
through a temporary file and a rename; its weights are kept byte for byte. An ONNX export beside it
is then stale (the checkpoint's sha256 changed): re-export with `python -m vit.runtime.export`.
"""


def summary(path: str, gate) -> str:
    r, m = gate.record(), gate.measured
    return (f"{path}: {r['detector']} {r['params']} on {r['features']} features, threshold {r['threshold']:.4f} "
            f"(TPR {r['tpr']:.3f} on {r['fitted_on']['val']} validation photos, {m['val_accepted']:.1%} accepted); "
            f"T = {r['temperature']:.3f} (val NLL {m['val_nll_before']:.3f} -> {m['val_nll_after']:.3f}, "
            f"ECE {m['val_ece_before']:.3f} -> {m['val_ece_after']:.3f}); "
            f"{r['conformal']['method'].upper()} qhat {r['conformal']['qhat']:.3f} at {1 - r['conformal']['alpha']:.0%}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.trust.fit", description=CLI_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help=".safetensors checkpoints to (re)calibrate in place")
    p.add_argument("--data-dir", action="append", help="ImageFolder root(s) with train/ (default: the recipe's)")
    p.add_argument("--val-fraction", type=float, help="validation share (default: the recipe's, else 0.15)")
    p.add_argument("--features", default=FEATURES, choices=FEATURE_SOURCES,
                   help="what the detector reads: the shared ImageNet Lite0's features or the model's own "
                        "penultimate ones (default: %(default)s)")
    p.add_argument("--detector", default=DETECTOR, choices=sorted(DETECTORS))
    p.add_argument("--k", type=int, default=K, help="kNN's k (default: %(default)s)")
    p.add_argument("--tpr", type=float, default=TPR, help="share of validation photos accepted (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=ALPHA, help="conformal miscoverage (default: %(default)s)")
    p.add_argument("--method", default="lac", choices=("lac", "aps"), help="conformal score (default: lac)")
    p.add_argument("--json", action="store_true", help="print each gate's record as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if not 0 < args.tpr < 1 or not 0 < args.alpha < 1:
        p.error("--tpr and --alpha must lie in (0, 1)")
    status = 0
    for path in args.checkpoints:
        try:
            gate = fit_file(path, args.data_dir, features=args.features, detector=args.detector, k=args.k, tpr=args.tpr,
                                alpha=args.alpha, method=args.method, val_fraction=args.val_fraction)
        except (CheckpointError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        print(json.dumps({"checkpoint": path, **gate.record()}) if args.json else summary(path, gate))
    return status


if __name__ == "__main__":
    sys.exit(main())
