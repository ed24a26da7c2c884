"""Fit a checkpoint's gate (OOD detector, temperature, conformal sets) and write it into the file.

    python -m vit.calibrate checkpoints/effnet.safetensors [more.safetensors ...] \
        [--data-dir DIR --data-dir DIR] [--features lite0-imagenet|own] [--tpr 0.975] [--alpha 0.1] [--k 10]

The detector is fitted on the checkpoint's TRAINING photos, its threshold, the temperature and the
conformal quantile on its VALIDATION photos: the trainer's 15 % hash split of the pooled train/
folders of --data-dir (default: the data dirs in the checkpoint's recipe). The file is rewritten
through a temporary file and a rename; its weights are kept byte for byte. An ONNX export beside it
is then stale (the checkpoint's sha256 changed): re-export with `python -m vit.export`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from vit.checkpoint import CheckpointError
from vit.trust import fit
from vit.trust.detectors import DETECTORS
from vit.trust.gate import FEATURE_SOURCES


def summary(path: str, gate) -> str:
    r, m = gate.record(), gate.measured
    return (f"{path}: {r['detector']} {r['params']} on {r['features']} features, threshold {r['threshold']:.4f} "
            f"(TPR {r['tpr']:.3f} on {r['fitted_on']['val']} validation photos, {m['val_accepted']:.1%} accepted); "
            f"T = {r['temperature']:.3f} (val NLL {m['val_nll_before']:.3f} -> {m['val_nll_after']:.3f}, "
            f"ECE {m['val_ece_before']:.3f} -> {m['val_ece_after']:.3f}); "
            f"{r['conformal']['method'].upper()} qhat {r['conformal']['qhat']:.3f} at {1 - r['conformal']['alpha']:.0%}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help=".safetensors checkpoints to (re)calibrate in place")
    p.add_argument("--data-dir", action="append", help="ImageFolder root(s) with train/ (default: the recipe's)")
    p.add_argument("--val-fraction", type=float, help="validation share (default: the recipe's, else 0.15)")
    p.add_argument("--features", default=fit.FEATURES, choices=FEATURE_SOURCES,
                   help="what the detector reads: the shared ImageNet Lite0's features or the model's own "
                        "penultimate ones (default: %(default)s)")
    p.add_argument("--detector", default=fit.DETECTOR, choices=sorted(DETECTORS))
    p.add_argument("--k", type=int, default=fit.K, help="kNN's k (default: %(default)s)")
    p.add_argument("--tpr", type=float, default=fit.TPR, help="share of validation photos accepted (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=fit.ALPHA, help="conformal miscoverage (default: %(default)s)")
    p.add_argument("--method", default="lac", choices=("lac", "aps"), help="conformal score (default: lac)")
    p.add_argument("--json", action="store_true", help="print each gate's record as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if not 0 < args.tpr < 1 or not 0 < args.alpha < 1:
        p.error("--tpr and --alpha must lie in (0, 1)")
    status = 0
    for path in args.checkpoints:
        try:
            gate = fit.fit_file(path, args.data_dir, features=args.features, detector=args.detector, k=args.k, tpr=args.tpr,
                                alpha=args.alpha, method=args.method, val_fraction=args.val_fraction)
        except (CheckpointError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        print(json.dumps({"checkpoint": path, **gate.record()}) if args.json else summary(path, gate))
    return status


if __name__ == "__main__":
    sys.exit(main())
